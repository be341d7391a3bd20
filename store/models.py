"""SQLModel tables. Times are unix seconds (float): portable across SQLite and PostgreSQL,
cheap to compare, and free of time-zone surprises; the front ends format them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer
from sqlmodel import Field, SQLModel

#: An auto-increment key that is a rowid alias on SQLite and a 64-bit identity elsewhere.
_BigId = BigInteger().with_variant(Integer(), "sqlite")
#: Table options of every table keyed by :data:`_BigId`: on SQLite, ``AUTOINCREMENT``, so an
#: id is never given twice (plain rowids reuse the ids of deleted rows, and a runner still
#: holding a stage id of a deleted session would then change another session's stage);
#: PostgreSQL's sequences never go back anyway. flow_sessions is keyed by a random string.
_NEVER_REUSE_IDS: dict[str, Any] = {"sqlite_autoincrement": True}


class FlowSession(SQLModel, table=True):
    __tablename__ = "flow_sessions"
    __table_args__ = (
        Index("ix_flow_sessions_status_created", "status", "created_at"),
        Index("ix_flow_sessions_workflow_created", "workflow_id", "created_at"),
    )

    id: str = Field(primary_key=True, max_length=64)
    name: str
    workflow_id: str = Field(max_length=128)
    status: str = Field(max_length=16)
    reason: str | None = None
    definition: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON))
    #: The parameter values the session was created with (NULL on older rows: none).
    params: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    version: int = 1
    created_at: float = Field(index=True)
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None
    queued: bool = False
    runner_host: str | None = None
    runner_pid: int | None = None
    #: The token of the runner's claim (the session's version the claim wrote): every
    #: write of that runner is conditioned on it (store.changes.Lease). NULL: no claim, or
    #: one an older vc made.
    runner_lease: int | None = None
    heartbeat_at: float | None = None

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__("meta" if name == "metadata" else name, value)  # _UserMetadata


class StageInstance(SQLModel, table=True):
    __tablename__ = "stage_instances"
    __table_args__ = _NEVER_REUSE_IDS

    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True))
    session_id: str = Field(foreign_key="flow_sessions.id", index=True, ondelete="CASCADE")
    position: int = 0
    name: str
    stage_type: str = "task"
    config: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON))
    status: str = "PENDING"
    progress: float = 0.0
    attempt: int = 0
    exit_code: int | None = None
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_at: float = 0.0
    host: str | None = None
    pid: int | None = None
    pid_start: int | None = Field(default=None, sa_column=Column(BigInteger))
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON))
    #: ``::output KEY=VALUE`` lines of the current attempt (NULL: none).
    outputs: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    version: int = 1

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__("meta" if name == "metadata" else name, value)  # _UserMetadata


class FlowEvent(SQLModel, table=True):
    """One row of a session's history: every state change and operation."""

    __tablename__ = "flow_events"
    __table_args__ = _NEVER_REUSE_IDS

    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True))
    session_id: str = Field(foreign_key="flow_sessions.id", index=True, ondelete="CASCADE")
    stage: str | None = None
    op: str
    from_status: str | None = None
    to_status: str | None = None
    actor: str
    host: str
    pid: int
    at: float
    reason: str | None = None


class LogRecord(SQLModel, table=True):
    """One line of a session's log (docs/ARCHITECTURE.md §7), what `session logs` and the dashboard
    read."""

    __tablename__ = "log_records"
    # No AUTOINCREMENT here: nothing holds a log id across a delete (readers follow one
    # session's rows by id), and it would cost a third of the insert rate of stage output.
    __table_args__ = (Index("ix_log_records_session_id_id", "session_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(_BigId, primary_key=True))
    session_id: str = Field(max_length=64)
    at: float
    level: str = Field(max_length=8)
    category: str = Field(max_length=64)
    stage: str | None = None
    text: str


class _UserMetadata:
    """``metadata`` of a session or stage object: the user's own dict on an instance (its
    ``meta`` attribute, kept in the ``metadata`` column: what ``create_session(metadata=
    {...})`` stored), SQLAlchemy's ``MetaData`` on the class, as SQLAlchemy and Alembic
    expect. Without it ``session.metadata`` quietly gave the ``MetaData`` of every table;
    assigning ``obj.metadata = {...}`` sets ``meta`` (each class's ``__setattr__``)."""

    def __init__(self, tables: Any) -> None:
        self.tables = tables

    def __get__(self, obj: Any, owner: type | None = None) -> Any:
        return self.tables if obj is None else obj.meta


for _model in (FlowSession, StageInstance):
    _model.metadata = _UserMetadata(_model.metadata)  # type: ignore[assignment]
