"""The public API: every operation on sessions and stages (DESIGN §4-6).

The CLI, the dashboard and the runner all call these methods, so the two front ends cannot
drift apart. Each change is one transaction that writes its event row and bumps ``version``.
Hot paths use SQLAlchemy Core statements on the session's connection rather than ORM
objects: a transition is one read, one conditional UPDATE and one INSERT, which keeps a
single process well above 5,000 transitions per second on SQLite.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Row, String, bindparam, delete, func, insert, literal, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session

from store.errors import (
    AmbiguousId,
    ConcurrentModification,
    InvalidId,
    InvalidTransition,
    RunnerConflict,
    SessionNotFound,
    StageNotFound,
)
from store.identity import local_host, local_user, pid_alive
from store.models import FlowEvent, FlowSession, LogRecord, StageInstance
from store.status import (
    SESSION_TRANSITIONS,
    TERMINAL,
    SessionOp,
    SessionStatus,
    StageStatus,
    allowed_session_ops,
    session_target,
    stage_move_allowed,
)

if TYPE_CHECKING:
    from store.definitions import WorkflowDefinition

#: A runner beats every HEARTBEAT_INTERVAL seconds; a heartbeat older than STALE_AFTER marks
#: its session orphaned. On the runner's own host a dead pid is noticed at once.
HEARTBEAT_INTERVAL = 2.0
STALE_AFTER = float(os.environ.get("VC_STALE_AFTER", "15"))
MIN_PREFIX = 4
_ID_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
_MAX_RETRIES = 20
#: The event op of a notification sent (see :meth:`FlowSessionManager.record_notified`).
NOTIFY_OP = "notify"

_T = FlowSession.__table__  # type: ignore[attr-defined]
_ST = StageInstance.__table__  # type: ignore[attr-defined]
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
_LOG = LogRecord.__table__  # type: ignore[attr-defined]

Subscriber = Callable[["SessionChange"], None]

# Statements built once: SQLAlchemy memoizes their cache keys and compiled forms, which is
# most of what keeps a transition cheap (building a new expression per call costs ~3x).
_READ_STATE = select(
    _T.c.status,
    _T.c.version,
    _T.c.started_at,
    _T.c.runner_host,
    _T.c.runner_pid,
    _T.c.heartbeat_at,
).where(_T.c.id == bindparam("sid"))
_EXACT_ID = select(_T.c.id).where(_T.c.id == bindparam("sid"))
_UPDATES: dict[tuple[str, ...], Any] = {}


def _update_statement(columns: tuple[str, ...]) -> Any:
    """``UPDATE flow_sessions SET <columns> WHERE id = :sid AND version = :expected``,
    cached per column set. ``started_at`` keeps an earlier value (first start wins)."""
    stmt = _UPDATES.get(columns)
    if stmt is None:
        values: dict[str, Any] = {}
        for col in columns:
            if col == "started_at":
                values[col] = func.coalesce(_T.c.started_at, bindparam("v_started_at"))
            else:
                values[col] = bindparam(f"v_{col}")
        stmt = (
            update(_T)
            .where(_T.c.id == bindparam("sid"), _T.c.version == bindparam("expected"))
            .values(values)
        )
        _UPDATES[columns] = stmt
    return stmt


_STAGE_UPDATES: dict[tuple[str, ...], Any] = {}


def _stage_update_statement(columns: tuple[str, ...]) -> Any:
    """``UPDATE stage_instances SET <columns> WHERE id = :stage_id AND version =
    :expected``, cached per column set like :func:`_update_statement`."""
    stmt = _STAGE_UPDATES.get(columns)
    if stmt is None:
        stmt = (
            update(_ST)
            .where(_ST.c.id == bindparam("stage_id"), _ST.c.version == bindparam("expected"))
            .values({col: bindparam(f"v_{col}") for col in columns})
        )
        _STAGE_UPDATES[columns] = stmt
    return stmt


@dataclass(frozen=True)
class SessionChange:
    """What one successful operation did; handed to subscribers and returned to callers."""

    session_id: str
    op: str
    from_status: str | None
    to_status: str | None
    version: int
    reason: str | None = None
    stage: str | None = None


@dataclass(frozen=True)
class StageMove:
    """What :meth:`StageManager.move_stage` did: the stage's new state and, read in the
    same transaction, its session's status (None if the session row is gone)."""

    stage_id: int
    session_id: str
    status: str
    version: int
    attempt: int
    session_status: str | None
    name: str = ""


class _KnownStage(NamedTuple):
    """The fields of ``_SELECT_STAGE_FOR_MOVE`` a move needs, from a previous move."""

    session_id: str
    name: str
    status: str
    version: int
    attempt: int
    metadata: dict[str, Any] | None = None


_SELECT_STAGE_FOR_MOVE = select(
    _ST.c.session_id,
    _ST.c.name,
    _ST.c.status,
    _ST.c.version,
    _ST.c.attempt,
    _ST.c.metadata,
).where(_ST.c.id == bindparam("id"))

_TOUCH_SESSION = (
    update(_T)
    .where(_T.c.id == bindparam("sid"))
    .values(updated_at=bindparam("now"))
    .returning(_T.c.status)
)

_EVENT_COLUMNS = (
    "session_id", "stage", "op", "from_status", "to_status", "actor", "host", "pid", "at", "reason"
)  # fmt: skip
#: The event insert with every column bound by name, for :func:`_execute_on_driver`.
_INSERT_EVENT_ROW = insert(_EV).values({col: bindparam(col) for col in _EVENT_COLUMNS}).inline()
_DRIVER_SQL: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None]] = {}


def _execute_on_driver(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run a prebuilt statement on the driver's cursor, inside the session's transaction,
    and return the cursor (the caller closes it).

    For the runner's stage moves (two per stage, each a few statements): SQLAlchemy's
    execution path costs about 0.1 ms per statement on top of SQLite's own work, as much
    as the statement. The statement is compiled once per dialect; parameters must be
    plain values (str, int, float, None: no type processing happens here). Driver errors
    are raised as SQLAlchemy's (``OperationalError`` …), as ``conn.execute`` would, and a
    lost connection is invalidated, so callers handle them exactly as before."""
    dialect = conn.dialect
    key = (statement, dialect.name, dialect.driver, dialect.paramstyle)
    entry = _DRIVER_SQL.get(key)
    if entry is None:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ()) if compiled.positional else None
        entry = _DRIVER_SQL[key] = (compiled.string, names)
    sql, names = entry
    args = params if names is None else tuple(params[n] for n in names)
    dbapi_error = dialect.loaded_dbapi.Error
    cursor = None
    try:
        cursor = conn.connection.cursor()
        cursor.execute(sql, args)
    except dbapi_error as exc:
        lost = False
        with contextlib.suppress(Exception):
            lost = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor))
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()
        if lost:
            with contextlib.suppress(Exception):
                conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, args, exc, dbapi_error, connection_invalidated=lost, dialect=dialect
        ) from exc
    return cursor


def new_session_id() -> str:
    return uuid.uuid4().hex


def is_orphaned(
    status: str,
    runner_host: str | None,
    runner_pid: int | None,
    heartbeat_at: float | None,
    now: float | None = None,
) -> bool:
    """A session ACTIVE or PAUSED whose runner is gone: heartbeat stale, or (on the
    runner's own host) its pid dead. A session no runner ever claimed is not orphaned."""
    if status not in (SessionStatus.ACTIVE, SessionStatus.PAUSED) or runner_pid is None:
        return False
    now = time.time() if now is None else now
    if heartbeat_at is None or now - heartbeat_at > STALE_AFTER:
        return True
    return runner_host == local_host() and not pid_alive(runner_pid)


def compute_progress(status: str, stages: Iterable[tuple[str, float]]) -> float:
    """Session progress, the one formula (DESIGN §5): mean of the stages' progress with
    COMPLETED counting 100. A session without stages is 100 once COMPLETED, else 0."""
    values = [100.0 if st == StageStatus.COMPLETED else float(p or 0.0) for st, p in stages]
    if not values:
        return 100.0 if status == SessionStatus.COMPLETED else 0.0
    return round(sum(values) / len(values), 1)


_logging_enabled = False


def enable_logging(enabled: bool = True) -> None:
    """Log every operation through loguru (categories of DESIGN §7); off for library use."""
    global _logging_enabled
    _logging_enabled = enabled


def logging_enabled() -> bool:
    return _logging_enabled


def _op_logger() -> Any:
    from loguru import logger

    return logger


class _Base:
    """Shared plumbing: the SQLModel session, who acts, and event writing."""

    def __init__(
        self,
        session: Session,
        *,
        actor: str | None = None,
        integration: Any | None = None,
    ) -> None:
        self.session = session
        self.actor = actor or local_user()
        self.host = local_host()
        self.pid = os.getpid()
        self.integration = integration

    def _conn(self) -> Connection:
        return self.session.connection()

    def _event(
        self,
        conn: Connection,
        session_id: str,
        op: str,
        from_status: str | None,
        to_status: str | None,
        at: float,
        reason: str | None = None,
        stage: str | None = None,
    ) -> None:
        cursor = _execute_on_driver(
            conn,
            _INSERT_EVENT_ROW,
            {
                "session_id": session_id,
                "stage": stage,
                "op": op,
                "from_status": from_status,
                "to_status": to_status,
                "actor": self.actor,
                "host": self.host,
                "pid": self.pid,
                "at": at,
                "reason": reason,
            },
        )
        cursor.close()

    def _committed(self, change: SessionChange, category: str) -> SessionChange:
        """After commit: log the operation and tell subscribers."""
        if self.integration is not None:
            self.integration.publish(change)
        if not _logging_enabled:
            return change
        arrow = f"{change.from_status or '∅'} -> {change.to_status or '∅'}"
        what = ""
        reason = f" ({change.reason})" if change.reason else ""
        _op_logger().bind(category=category, session_id=change.session_id, stage=change.stage).info(
            f"{change.op} {what}{arrow}{reason} by {self.actor}@{self.host}:{self.pid}"
        )
        return change

    def resolve_session_id(self, session_id: str) -> str:
        """A full id or a unique prefix of at least MIN_PREFIX characters -> the full id."""
        given = session_id.strip()
        if len(given) < MIN_PREFIX:
            raise InvalidId(
                f"session id {given!r} is too short: give at least {MIN_PREFIX} characters"
            )
        if not _ID_CHARS.match(given):
            raise InvalidId(f"invalid session id {given!r}")
        conn = self._conn()
        if len(given) >= 32:  # a full id: generated ids are 32 hex digits, never a prefix
            return given
        if conn.execute(_EXACT_ID, {"sid": given}).first() is not None:
            return given
        rows = conn.execute(
            select(_T.c.id, _T.c.name)
            .where(_T.c.id.startswith(given, autoescape=True))
            .order_by(_T.c.id)
            .limit(11)
        ).all()
        if not rows:
            raise SessionNotFound(f"no session matches {given!r}")
        if len(rows) > 1:
            listed = ", ".join(f"{r.id[:12]} ({r.name})" for r in rows[:10])
            more = " …" if len(rows) > 10 else ""
            raise AmbiguousId(
                f"session id {given!r} is ambiguous: {listed}{more}", [r.id for r in rows]
            )
        return str(rows[0].id)


class FlowSessionManager(_Base):
    """Sessions: creation, every state change of DESIGN §5, runner claims and heartbeats."""

    CATEGORY = "workflow.session.operations"

    # -- creation ---------------------------------------------------------------------------

    def create_session(
        self,
        workflow_id: str,
        name: str | None = None,
        metadata: Mapping[str, Any] | None = None,
        definition: WorkflowDefinition | Mapping[str, Any] | None = None,
        *,
        queued: bool = False,
        params: Mapping[str, object] | None = None,
        runner: tuple[str, int] | None = None,
    ) -> FlowSession:
        """A PENDING session with a snapshot of ``definition`` and one PENDING stage
        instance per stage of it (none when no definition is given: add them with
        :meth:`StageManager.create_stage`).

        ``params`` are the values of the workflow's parameters, as text (a command line)
        or typed (``{"shards": 8}``); declared defaults fill the rest. A value the workflow
        does not accept raises :class:`~store.errors.ParamError` and nothing is created.

        ``runner`` (host, pid): the session is claimed by that runner in the same
        transaction (`vc flow run` of a new session): ACTIVE, with the ``create`` and the
        runner's ``start`` event, as :meth:`start_session` right after would leave it, in
        one commit. Its ``started_at`` then equals its ``created_at``: no runner ran it
        before."""
        from store.names import validate_identifier

        validate_identifier(workflow_id, "workflow id")
        if definition is None or isinstance(definition, Mapping):
            snapshot: dict[str, Any] = dict(definition or {})
            values: dict[str, Any] = {}
            if params or snapshot.get("params"):
                from store.definitions import params_of, resolve_params

                values = resolve_params(params_of(snapshot), params, workflow_id)
        else:
            snapshot = definition.to_dict()
            values = definition.resolve_params(params)
        now = time.time()
        sid = new_session_id()
        obj = FlowSession(
            id=sid,
            name=name if name is not None else f"{workflow_id} {time.strftime('%Y-%m-%d %H:%M')}",
            workflow_id=workflow_id,
            status=SessionStatus.PENDING,
            definition=snapshot,
            meta=dict(metadata or {}),
            params=values,
            created_at=now,
            updated_at=now,
            queued=queued,
        )
        conn = self._conn()
        row = obj.model_dump()
        row["metadata"] = row.pop("meta")
        conn.execute(insert(_T), row)
        stages = snapshot.get("stages") or []
        if stages:
            conn.execute(
                insert(_ST),
                [
                    {
                        "session_id": sid,
                        "position": i,
                        "name": st["name"],
                        "stage_type": "manual" if st.get("run") is None else "task",
                        "config": st,
                        "status": StageStatus.PENDING,
                        "updated_at": now,
                    }
                    for i, st in enumerate(stages)
                ],
            )
        self._event(conn, sid, SessionOp.CREATE, None, SessionStatus.PENDING, now)
        claimer = None
        if runner is not None:
            claimer = FlowSessionManager(self.session, actor="runner", integration=self.integration)
            claim = {
                "status": SessionStatus.ACTIVE,
                "version": 2,
                "updated_at": now,
                "reason": None,
                "runner_host": runner[0],
                "runner_pid": runner[1],
                "heartbeat_at": now,
                "queued": False,
                "started_at": now,
            }
            conn.execute(update(_T).where(_T.c.id == sid).values(**claim))
            claimer._event(
                conn, sid, SessionOp.START, SessionStatus.PENDING, SessionStatus.ACTIVE, now
            )
        self.session.commit()
        self._committed(
            SessionChange(sid, SessionOp.CREATE, None, SessionStatus.PENDING, 1),
            self.CATEGORY,
        )
        if claimer is not None:
            claimer._committed(
                SessionChange(sid, SessionOp.START, SessionStatus.PENDING, SessionStatus.ACTIVE, 2),
                self.CATEGORY,
            )
            for key, value in claim.items():
                setattr(obj, key, value)
        return obj

    # -- reads ------------------------------------------------------------------------------

    def get_session(self, session_id: str) -> FlowSession:
        obj = self.session.get(
            FlowSession, self.resolve_session_id(session_id), populate_existing=True
        )
        self.session.commit()
        if obj is None:
            raise SessionNotFound(f"no session matches {session_id!r}")
        return obj

    def get_session_progress(self, session_id: str) -> float:
        sid = self.resolve_session_id(session_id)
        conn = self._conn()
        status = conn.execute(select(_T.c.status).where(_T.c.id == sid)).scalar_one()
        rows = conn.execute(
            select(_ST.c.status, _ST.c.progress).where(_ST.c.session_id == sid)
        ).all()
        return compute_progress(status, [(r[0], r[1]) for r in rows])

    # -- state changes ------------------------------------------------------------------------

    def _read_state(self, conn: Connection, sid: str) -> Any:
        row = conn.execute(_READ_STATE, {"sid": sid}).first()
        if row is None:
            raise SessionNotFound(f"no session matches {sid!r}")
        return row

    def _refuse(self, sid: str, op: SessionOp, status: str, why: str = "") -> InvalidTransition:
        allowed = allowed_session_ops(status)
        listed = ", ".join(allowed) if allowed else "none"
        detail = f" ({why})" if why else ""
        return InvalidTransition(
            f"cannot {op.value} session {sid[:12]}: it is {status}{detail}; allowed: {listed}",
            status,
            allowed,
        )

    def _transition(
        self,
        session_id: str,
        op: SessionOp,
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        values: Mapping[str, Any] | None = None,
        check: Callable[[Connection, str, Row[Any]], str | None] | None = None,
        after: Callable[[Connection, str, float], None] | None = None,
    ) -> SessionChange:
        """Apply ``op`` atomically: read, check the state machine (and ``check``), write
        conditioned on the version read, then the event. A lost race re-reads and re-checks,
        unless the caller pinned ``expected_version``, which then raises."""
        sid = self.resolve_session_id(session_id)
        row_def = SESSION_TRANSITIONS[op]
        for _ in range(_MAX_RETRIES):
            conn = self._conn()
            cur = self._read_state(conn, sid)
            if expected_version is not None and cur.version != expected_version:
                self.session.rollback()
                raise ConcurrentModification(
                    f"session {sid[:12]} changed meanwhile (version {cur.version}, "
                    f"expected {expected_version}); reload and try again"
                )
            if cur.status not in row_def.sources:
                self.session.rollback()
                raise self._refuse(sid, op, cur.status)
            if check is not None:
                why = check(conn, sid, cur)
                if why:
                    self.session.rollback()
                    raise self._refuse(sid, op, cur.status, why)
            target = session_target(op, cur.status, cur.started_at is not None)
            now = time.time()
            new_values: dict[str, Any] = {
                "status": target,
                "version": cur.version + 1,
                "updated_at": now,
                "reason": reason,
            }
            if values:
                new_values.update(values)
            params = {f"v_{k}": v for k, v in new_values.items()}
            params.update(sid=sid, expected=cur.version)
            result = conn.execute(_update_statement(tuple(sorted(new_values))), params)
            if result.rowcount != 1:
                self.session.rollback()
                if expected_version is not None:
                    raise ConcurrentModification(
                        f"session {sid[:12]} changed meanwhile; reload and try again"
                    )
                continue
            if after is not None:
                after(conn, sid, now)
            self._event(conn, sid, op, cur.status, target, now, reason)
            self.session.commit()
            change = SessionChange(sid, op, cur.status, target, cur.version + 1, reason)
            return self._committed(change, self.CATEGORY)
        raise ConcurrentModification(f"session {sid[:12]} is changing too fast; try again")

    def start_session(
        self,
        session_id: str,
        *,
        runner_host: str | None = None,
        runner_pid: int | None = None,
        expected_version: int | None = None,
    ) -> SessionChange:
        """A runner claims the session: PENDING -> ACTIVE, or takes over an ACTIVE one whose
        runner is gone. Refused with :class:`RunnerConflict` while another runner lives."""
        host = runner_host or self.host
        pid = runner_pid or self.pid

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            live = cur.runner_pid is not None and not is_orphaned(
                cur.status, cur.runner_host, cur.runner_pid, cur.heartbeat_at
            )
            if cur.status == SessionStatus.PENDING and cur.runner_pid is not None:
                live = cur.heartbeat_at is not None and (
                    time.time() - cur.heartbeat_at <= STALE_AFTER
                    and not (cur.runner_host == local_host() and not pid_alive(cur.runner_pid))
                )
            if live and (cur.runner_host, cur.runner_pid) != (host, pid):
                raise RunnerConflict(
                    f"session {sid[:12]} already has a live runner: "
                    f"pid {cur.runner_pid} on {cur.runner_host}"
                )
            return None

        now = time.time()
        return self._transition(
            session_id,
            SessionOp.START,
            expected_version=expected_version,
            values={
                "runner_host": host,
                "runner_pid": pid,
                "heartbeat_at": now,
                "queued": False,
                "started_at": now,
            },
            check=check,
        )

    def pause(
        self, session_id: str, *, reason: str | None = None, expected_version: int | None = None
    ) -> SessionChange:
        return self._transition(
            session_id, SessionOp.PAUSE, reason=reason, expected_version=expected_version
        )

    def resume(self, session_id: str, *, expected_version: int | None = None) -> SessionChange:
        """PAUSED -> ACTIVE (PENDING if it never started). An ACTIVE session may also be
        "resumed" when it is orphaned: the state stays, and the caller starts a runner."""

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            if (
                cur.status == SessionStatus.ACTIVE
                and not is_orphaned(cur.status, cur.runner_host, cur.runner_pid, cur.heartbeat_at)
                and cur.runner_pid is not None
            ):
                return "its runner is alive"
            return None

        return self._transition(
            session_id, SessionOp.RESUME, expected_version=expected_version, check=check
        )

    def abort(
        self, session_id: str, *, reason: str = "aborted", expected_version: int | None = None
    ) -> SessionChange:
        """FAILED with reason ``aborted``; its running or paused stages fail with it (the
        runner, which sees the change, kills their processes)."""

        def after(conn: Connection, sid: str, now: float) -> None:
            conn.execute(
                update(_ST)
                .where(
                    _ST.c.session_id == sid,
                    _ST.c.status.in_([StageStatus.ACTIVE, StageStatus.PAUSED]),
                )
                .values(
                    status=StageStatus.FAILED,
                    error=reason,
                    finished_at=now,
                    updated_at=now,
                    version=_ST.c.version + 1,
                )
            )

        return self._transition(
            session_id,
            SessionOp.ABORT,
            reason=reason,
            expected_version=expected_version,
            values={"finished_at": time.time()},
            after=after,
        )

    def fail(
        self, session_id: str, reason: str, *, expected_version: int | None = None
    ) -> SessionChange:
        return self._transition(
            session_id,
            SessionOp.FAIL,
            reason=reason,
            expected_version=expected_version,
            values={"finished_at": time.time()},
        )

    def complete(
        self, session_id: str, *, reason: str | None = None, expected_version: int | None = None
    ) -> SessionChange:
        """ACTIVE -> COMPLETED once every stage is. ``reason``: what the user should know
        all the same (e.g. log lines that could not be written)."""

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            open_stages = conn.execute(
                select(_ST.c.name).where(
                    _ST.c.session_id == sid, _ST.c.status != StageStatus.COMPLETED
                )
            ).all()
            if open_stages:
                names = ", ".join(r.name for r in open_stages[:5])
                return f"stages not completed: {names}"
            return None

        return self._transition(
            session_id,
            SessionOp.COMPLETE,
            reason=reason,
            expected_version=expected_version,
            values={"finished_at": time.time(), "runner_pid": None, "runner_host": None},
            check=check,
        )

    def retry(self, session_id: str, *, expected_version: int | None = None) -> SessionChange:
        """FAILED -> PENDING; failed and aborted stages reset to PENDING (attempt kept),
        COMPLETED stages kept."""

        def after(conn: Connection, sid: str, now: float) -> None:
            conn.execute(
                update(_ST)
                .where(_ST.c.session_id == sid, _ST.c.status != StageStatus.COMPLETED)
                .values(
                    status=StageStatus.PENDING,
                    progress=0.0,
                    error=None,
                    finished_at=None,
                    updated_at=now,
                    version=_ST.c.version + 1,
                )
            )

        return self._transition(
            session_id,
            SessionOp.RETRY,
            expected_version=expected_version,
            values={
                "finished_at": None,
                "runner_pid": None,
                "runner_host": None,
                "heartbeat_at": None,
            },
            after=after,
        )

    def delete(self, session_id: str, *, force: bool = False) -> SessionChange:
        """Remove the session with its stages, events and logs. Refused while a live runner
        owns an ACTIVE session, unless ``force``, which aborts it first (the runner sees
        the session gone and kills its stage). The history goes with the session, so this
        operation's trace is the operations log."""
        sid = self.resolve_session_id(session_id)
        for _ in range(_MAX_RETRIES):
            change = self._delete_once(sid, force)
            if change is not None:
                return change
        raise ConcurrentModification(f"session {sid[:12]} is changing too fast; try again")

    def _delete_once(self, sid: str, force: bool) -> SessionChange | None:
        """One attempt: None when the session changed between the read and the delete (a
        runner claimed it meanwhile), so the caller decides again on fresh state."""
        conn = self._conn()
        cur = self._read_state(conn, sid)
        live = cur.runner_pid is not None and not is_orphaned(
            cur.status, cur.runner_host, cur.runner_pid, cur.heartbeat_at
        )
        if cur.status == SessionStatus.ACTIVE and live:
            if not force:
                self.session.rollback()
                raise InvalidTransition(
                    f"cannot delete session {sid[:12]}: it is ACTIVE with a live runner "
                    f"(pid {cur.runner_pid} on {cur.runner_host}); pause or abort it first, "
                    "or use --force",
                    cur.status,
                    allowed_session_ops(cur.status),
                )
            self.session.rollback()
            self.abort(sid, reason="aborted")
            conn = self._conn()
            cur = self._read_state(conn, sid)  # the delete starts from FAILED now
        # Take the session row first, conditioned on the version the checks above saw: the
        # same lock order as every transition (session, then its stages), and a runner that
        # claimed the session meanwhile makes this attempt start over instead of losing it.
        claimed = conn.execute(
            update(_T)
            .where(_T.c.id == sid, _T.c.version == cur.version)
            .values(version=cur.version + 1)
        )
        if claimed.rowcount != 1:
            self.session.rollback()
            return None
        conn.execute(delete(_LOG).where(_LOG.c.session_id == sid))
        conn.execute(delete(_EV).where(_EV.c.session_id == sid))
        conn.execute(delete(_ST).where(_ST.c.session_id == sid))
        result = conn.execute(delete(_T).where(_T.c.id == sid))
        if result.rowcount != 1:
            self.session.rollback()
            raise SessionNotFound(f"no session matches {sid!r}")
        self.session.commit()
        return self._committed(
            SessionChange(sid, SessionOp.DELETE, cur.status, None, cur.version + 1),
            self.CATEGORY,
        )

    # -- runner bookkeeping (no events: these are not user operations) ------------------------

    def heartbeat(self, session_id: str, *, runner_host: str, runner_pid: int) -> bool:
        """Refresh the runner's heartbeat; False if the session is gone or another runner
        owns it now (the caller must then stop)."""
        result = self._conn().execute(
            update(_T)
            .where(
                _T.c.id == session_id,
                _T.c.runner_pid == runner_pid,
                _T.c.runner_host == runner_host,
            )
            .values(heartbeat_at=time.time())
        )
        self.session.commit()
        return result.rowcount == 1

    def release_runner(self, session_id: str, *, runner_host: str, runner_pid: int) -> None:
        """The runner is exiting: forget it, so the session is not shown orphaned."""
        self._conn().execute(
            update(_T)
            .where(
                _T.c.id == session_id,
                _T.c.runner_pid == runner_pid,
                _T.c.runner_host == runner_host,
            )
            .values(runner_pid=None, runner_host=None, heartbeat_at=None)
        )
        self.session.commit()

    def state(self, session_id: str) -> tuple[str, int, str | None] | None:
        """(status, version, reason) of a full id, or None if it is gone: the runner's
        cheap poll."""
        row = (
            self._conn()
            .execute(select(_T.c.status, _T.c.version, _T.c.reason).where(_T.c.id == session_id))
            .first()
        )
        self.session.commit()
        return None if row is None else (row[0], row[1], row[2])

    # -- notifications -----------------------------------------------------------------------

    def notified(self, session_id: str, key: str) -> bool:
        """Has the session's event ``key`` (``"failure #9"``: the kind and the session
        version the event made) been announced already, by any runner?"""
        found = (
            self._conn()
            .execute(
                select(_EV.c.id)
                .where(
                    _EV.c.session_id == session_id,
                    _EV.c.op == NOTIFY_OP,
                    _EV.c.reason.startswith(f"{key}:", autoescape=True),
                )
                .limit(1)
            )
            .first()
        )
        self.session.commit()
        return found is not None

    def record_notified(
        self, session_id: str, key: str, summary: str, *, stage: str | None = None
    ) -> bool:
        """Record that the event ``key`` was announced: a ``notify`` event in the session's
        history whose reason is ``"KEY: summary"``. Written only if no such record exists
        (one statement on SQLite; the session row locked first on PostgreSQL, so two
        writers cannot both insert); False when it was there already or the session is
        gone. Not a state change: no version bump, no from/to state."""
        conn = self._conn()
        if conn.dialect.name == "postgresql":
            conn.execute(select(_T.c.id).where(_T.c.id == session_id).with_for_update())
        already = (
            select(_EV.c.id)
            .where(
                _EV.c.session_id == session_id,
                _EV.c.op == NOTIFY_OP,
                _EV.c.reason.startswith(f"{key}:", autoescape=True),
            )
            .exists()
        )
        row = select(
            _T.c.id,
            literal(stage, String()),
            literal(NOTIFY_OP),
            literal(None, String()),
            literal(None, String()),
            literal(self.actor),
            literal(self.host),
            literal(self.pid),
            literal(time.time()),
            literal(f"{key}: {summary}"),
        ).where(_T.c.id == session_id, ~already)
        written = conn.execute(
            insert(_EV)
            .from_select([_EV.c[name] for name in _EVENT_COLUMNS], row)
            .returning(_EV.c.id)  # INSERT … SELECT reports no row count on psycopg
        ).all()
        self.session.commit()
        return len(written) == 1

    # -- queued work (`vc flow worker`, DESIGN §12) -------------------------------------------

    def claim_queued(
        self,
        *,
        runner_host: str | None = None,
        runner_pid: int | None = None,
        workflow_id: str | None = None,
        batch: int = 8,
    ) -> SessionChange | None:
        """Claim the oldest queued session that no live runner owns, for a worker: a queued
        PENDING session, or a queued ACTIVE one whose runner is gone (its worker died) or
        that a stopping worker handed back (:meth:`requeue`). None when there is none.

        Atomic across processes and hosts: on PostgreSQL the candidates are locked
        ``FOR UPDATE SKIP LOCKED`` (concurrent workers look at different rows); everywhere
        the claim is the ``start`` UPDATE conditioned on the version read, which exactly
        one claimer can win (a loser moves on to the next candidate). The claim writes the
        ``start`` event, records the runner and keeps ``queued`` set: the session stays
        queue work, so if its worker dies another worker takes it over."""
        from sqlalchemy import or_

        host = runner_host or self.host
        pid = runner_pid or self.pid
        skip: set[str] = set()
        for _ in range(_MAX_RETRIES):
            now = time.time()
            query = (
                select(_T.c.id, _T.c.version, _T.c.runner_host, _T.c.runner_pid, _T.c.heartbeat_at)
                .where(
                    _T.c.queued,
                    _T.c.finished_at.is_(None),  # with queued: the partial index (0002)
                    _T.c.status.in_([SessionStatus.PENDING, SessionStatus.ACTIVE]),
                    or_(
                        _T.c.runner_pid.is_(None),
                        _T.c.heartbeat_at.is_(None),
                        _T.c.heartbeat_at < now - STALE_AFTER,
                        _T.c.runner_host == local_host(),
                    ),
                )
                .order_by(_T.c.created_at, _T.c.id)
                .limit(batch)
            )
            if workflow_id is not None:
                query = query.where(_T.c.workflow_id == workflow_id)
            if skip:
                query = query.where(_T.c.id.not_in(sorted(skip)))
            conn = self._conn()
            if conn.dialect.name == "postgresql":
                query = query.with_for_update(skip_locked=True)
            rows = conn.execute(query).all()
            if not rows:
                self.session.rollback()
                return None
            claimable = [
                r
                for r in rows
                if self._runner_gone(r.runner_host, r.runner_pid, r.heartbeat_at, now)
            ]
            if not claimable:  # live runners of this host: look past them
                self.session.rollback()
                skip.update(r.id for r in rows)
                continue
            row = claimable[0]

            def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
                if not self._runner_gone(
                    cur.runner_host, cur.runner_pid, cur.heartbeat_at, time.time()
                ):
                    return f"pid {cur.runner_pid} on {cur.runner_host} runs it"
                return None

            try:
                return self._transition(
                    row.id,
                    SessionOp.START,
                    expected_version=row.version,
                    values={
                        "runner_host": host,
                        "runner_pid": pid,
                        "heartbeat_at": now,
                        "started_at": now,
                        "queued": True,
                    },
                    check=check,
                )
            except (ConcurrentModification, InvalidTransition, SessionNotFound):
                self.session.rollback()
                skip.add(row.id)  # another claimer won (or it changed): next candidate
        return None

    def requeue(
        self,
        session_id: str,
        *,
        reason: str = "requeued",
        runner_host: str | None = None,
        runner_pid: int | None = None,
    ) -> SessionChange:
        """Hand a session back to the queue: what a worker that stops does with the
        sessions it interrupted (PAUSED, their stage processes gone). A ``resume`` that
        also sets ``queued`` and forgets the runner: the session is ACTIVE again (PENDING
        if it never started) and the next worker to look claims it. Refused while a live
        runner other than ``runner_host``/``runner_pid`` (default: this process) owns it."""
        host = runner_host or self.host
        pid = runner_pid or self.pid

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            ours = (cur.runner_host, cur.runner_pid) == (host, pid)
            if not ours and not self._runner_gone(
                cur.runner_host, cur.runner_pid, cur.heartbeat_at, time.time()
            ):
                return f"pid {cur.runner_pid} on {cur.runner_host} runs it"
            return None

        return self._transition(
            session_id,
            SessionOp.RESUME,
            reason=reason,
            values={"queued": True, "runner_host": None, "runner_pid": None, "heartbeat_at": None},
            check=check,
        )

    @staticmethod
    def _runner_gone(
        runner_host: str | None,
        runner_pid: int | None,
        heartbeat_at: float | None,
        now: float,
    ) -> bool:
        """No live runner: none recorded, its heartbeat stale, or (on its own host) its pid
        dead. Unlike :func:`is_orphaned`, whatever the session's status."""
        if runner_pid is None:
            return True
        if heartbeat_at is None or now - heartbeat_at > STALE_AFTER:
            return True
        return runner_host == local_host() and not pid_alive(runner_pid)


class StageManager(_Base):
    """Stage instances of a session: creation, status, progress, process bookkeeping."""

    CATEGORY = "workflow.stage.operations"

    def create_stage(
        self,
        session_id: str,
        stage_type: str = "task",
        config: Mapping[str, Any] | None = None,
        *,
        name: str | None = None,
    ) -> StageInstance:
        """A PENDING stage at the end of the session. A ``task`` runs ``config["run"]``, a
        shell command; a ``manual`` stage is a gate. A task without ``run`` is accepted
        (its state can be driven through :meth:`update_stage_status`, for work done
        elsewhere), but a runner fails it with the reason "no command to run …" instead of
        running anything."""
        sid = self.resolve_session_id(session_id)
        conn = self._conn()
        status = conn.execute(select(_T.c.status).where(_T.c.id == sid)).scalar()
        if status is None:
            raise SessionNotFound(f"no session matches {sid!r}")
        if status in TERMINAL:
            self.session.rollback()
            raise InvalidTransition(
                f"cannot add a stage to session {sid[:12]}: it is {status}",
                status,
                allowed_session_ops(status),
            )
        position = conn.execute(
            select(func.count()).select_from(_ST).where(_ST.c.session_id == sid)
        ).scalar_one()
        cfg = dict(config or {})
        stage_name = name or str(cfg.get("name") or f"stage-{position + 1}")
        from store.names import validate_identifier

        validate_identifier(stage_name, "stage name")
        if conn.execute(
            select(_ST.c.id).where(_ST.c.session_id == sid, _ST.c.name == stage_name)
        ).first():
            self.session.rollback()
            raise InvalidTransition(
                f"session {sid[:12]} already has a stage named {stage_name!r}", "", []
            )
        now = time.time()
        stage = StageInstance(
            session_id=sid,
            position=position,
            name=stage_name,
            stage_type=stage_type,
            config=cfg,
            status=StageStatus.PENDING,
            updated_at=now,
        )
        self.session.add(stage)
        self.session.flush()
        self._event(conn, sid, "stage.create", None, StageStatus.PENDING, now, stage=stage_name)
        self.session.commit()
        self._committed(
            SessionChange(sid, "stage.create", None, StageStatus.PENDING, 0, stage=stage_name),
            self.CATEGORY,
        )
        return stage

    def get_stage(self, stage_id: int) -> StageInstance:
        stage = self.session.get(StageInstance, stage_id, populate_existing=True)
        self.session.commit()
        if stage is None:
            raise StageNotFound(f"no stage with id {stage_id} (its session was deleted?)")
        return stage

    def list_stages(self, session_id: str) -> list[StageInstance]:
        sid = self.resolve_session_id(session_id)
        rows = self.session.exec(  # type: ignore[call-overload]
            select(StageInstance)
            .where(StageInstance.session_id == sid)  # type: ignore[arg-type]
            .order_by(StageInstance.position)  # type: ignore[arg-type]
            .execution_options(populate_existing=True)
        ).all()
        return [r[0] if isinstance(r, Row) else r for r in rows]

    def update_stage_status(
        self,
        stage_id: int,
        status: StageStatus | str,
        metadata: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        expected_version: int | None = None,
        new_attempt: bool = False,
    ) -> StageInstance:
        """Move a stage to ``status`` (checked against the stage table of store.status).
        ``metadata["progress"]`` sets progress; other metadata keys are merged into the
        stage's metadata. A move to the same state is a progress update without an event.
        Entering ACTIVE from PENDING starts attempt 1 (or the next one); ``new_attempt``
        starts a fresh attempt of a stage that is ACTIVE or PAUSED already (a timeout retry,
        or a new runner taking over an orphan). Returns the stage as stored; the runner,
        which needs no reload, calls :meth:`move_stage`."""
        self.move_stage(
            stage_id,
            status,
            metadata,
            error=error,
            exit_code=exit_code,
            expected_version=expected_version,
            new_attempt=new_attempt,
        )
        return self.get_stage(stage_id)

    def start_attempt(
        self,
        stage_id: int,
        attempt: int,
        *,
        pid: int,
        pid_start: int | None,
        host: str | None,
        known: StageMove | None = None,
    ) -> StageMove:
        """The runner started attempt ``attempt`` of a stage as process ``pid``: ACTIVE, the
        attempt and the process recorded in one transaction (a later runner finds the
        process to remove after a crash). The process is spawned first so that this write
        overlaps with its start-up: a 50-stage workflow of quick commands pays one spawn and
        two short transactions per stage, not four."""
        return self.move_stage(
            stage_id,
            StageStatus.ACTIVE,
            new_attempt=True,
            attempt=attempt,
            process=(pid, pid_start, host or self.host),
            known=known,
        )

    def move_stage(
        self,
        stage_id: int,
        status: StageStatus | str,
        metadata: Mapping[str, Any] | None = None,
        *,
        error: str | None = None,
        exit_code: int | None = None,
        expected_version: int | None = None,
        new_attempt: bool = False,
        attempt: int | None = None,
        process: tuple[int, int | None, str] | None = None,
        known: StageMove | None = None,
        finished_at: float | None = None,
    ) -> StageMove:
        """:meth:`update_stage_status` without reloading the stage: one transaction that
        also reads the session's status, so the runner needs no extra query to know
        whether to go on. ``attempt`` (with a new attempt) is the number the caller already
        gave the process (``VC_ATTEMPT``); it must be above the stored one. ``process`` is
        (pid, start time, host) of the attempt's process. ``known`` is what the caller's
        previous move of this stage returned: the move then starts from it instead of
        reading the stage (the update is conditional on its version, so if anything
        changed the stage since, the move reads it and starts over). ``finished_at``: when
        the attempt ended, for a move to a final state recorded later than that (the
        runner first waits for the stage's output to be stored); default now."""
        try:
            target = StageStatus(status)
            meta = dict(metadata or {})
            progress = meta.pop("progress", None)
            if known is not None and (
                known.stage_id != stage_id or not known.name or meta or expected_version is not None
            ):
                known = None  # not this stage's, metadata to merge, or a version to check
            for _ in range(_MAX_RETRIES):
                conn = self._conn()
                if known is not None:
                    cur: Any = _KnownStage(
                        known.session_id, known.name, known.status, known.version, known.attempt
                    )
                else:
                    cur = conn.execute(_SELECT_STAGE_FOR_MOVE, {"id": stage_id}).first()
                if cur is None:
                    self.session.rollback()
                    raise StageNotFound(f"no stage with id {stage_id}")
                if known is not None and not stage_move_allowed(cur.status, target):
                    known = None  # the known state refuses it: decide on the stored one
                    continue
                if expected_version is not None and cur.version != expected_version:
                    self.session.rollback()
                    raise ConcurrentModification(
                        f"stage {cur.name!r} changed meanwhile; reload and try again"
                    )
                if not stage_move_allowed(cur.status, target):
                    self.session.rollback()
                    allowed = sorted(
                        s.value for s in StageStatus if stage_move_allowed(cur.status, s)
                    )
                    raise InvalidTransition(
                        f"cannot move stage {cur.name!r} from {cur.status} to {target}; "
                        f"allowed: {', '.join(allowed) or 'none'}",
                        cur.status,
                        allowed,
                    )
                now = time.time()
                # Session row first, as in every session transition: one lock order, no deadlock
                # between a stage update and an abort on PostgreSQL.
                cursor = _execute_on_driver(
                    conn, _TOUCH_SESSION, {"sid": cur.session_id, "now": now}
                )
                touched = cursor.fetchone()
                cursor.close()
                session_status = None if touched is None else touched[0]
                started: SessionChange | None = None
                if target == StageStatus.ACTIVE and session_status == SessionStatus.PENDING:
                    started = self._start_session_for(conn, cur.session_id, cur.name, now)
                    session_status = SessionStatus.ACTIVE
                values: dict[str, Any] = {
                    "status": target,
                    "version": cur.version + 1,
                    "updated_at": now,
                }
                if progress is not None:
                    values["progress"] = max(0.0, min(100.0, float(progress)))
                if meta:
                    values["metadata"] = {**(cur.metadata or {}), **meta}
                if error is not None:
                    values["error"] = error
                if exit_code is not None:
                    values["exit_code"] = exit_code
                new_number = cur.attempt
                if target == StageStatus.ACTIVE and (
                    cur.status == StageStatus.PENDING or new_attempt
                ):
                    new_number = cur.attempt + 1 if attempt is None else attempt
                    if new_number <= cur.attempt:
                        self.session.rollback()
                        if known is not None:
                            known = None  # decide on the stored attempt
                            continue
                        raise ConcurrentModification(
                            f"stage {cur.name!r} is at attempt {cur.attempt} already"
                        )
                    # A new attempt reports its own outputs: the last attempt's are gone.
                    values.update(
                        attempt=new_number, started_at=now, finished_at=None, outputs=None
                    )
                    values.setdefault("progress", 0.0)
                    values.setdefault("exit_code", None)
                    values.setdefault("error", None)
                if process is not None:
                    values.update(pid=process[0], pid_start=process[1], host=process[2])
                if target in TERMINAL:
                    values["finished_at"] = now if finished_at is None else finished_at
                    if target == StageStatus.COMPLETED:
                        values["progress"] = 100.0
                if target == StageStatus.PENDING:
                    values.update(progress=0.0, finished_at=None, pid=None, pid_start=None)
                params = {f"v_{k}": v for k, v in values.items()}
                params.update(stage_id=stage_id, expected=cur.version)
                statement = _stage_update_statement(tuple(values))
                if "metadata" in values:  # JSON: SQLAlchemy's type processing is needed
                    updated = conn.execute(statement, params).rowcount
                else:
                    cursor = _execute_on_driver(conn, statement, params)
                    updated = cursor.rowcount
                    cursor.close()
                if updated != 1:
                    self.session.rollback()
                    if known is not None:  # changed since the caller's last move: read it
                        known = None
                        continue
                    if expected_version is not None:
                        raise ConcurrentModification(
                            f"stage {cur.name!r} changed meanwhile; reload and try again"
                        )
                    continue
                moved = cur.status != target or "attempt" in values
                op = _STAGE_OPS[target]
                if moved:
                    self._event(
                        conn, cur.session_id, op, cur.status, target, now, error, stage=cur.name
                    )
                self.session.commit()
                if started is not None:
                    self._committed(started, FlowSessionManager.CATEGORY)
                if moved:
                    self._committed(
                        SessionChange(
                            cur.session_id,
                            op,
                            cur.status,
                            target,
                            cur.version + 1,
                            error,
                            stage=cur.name,
                        ),
                        self.CATEGORY,
                    )
                return StageMove(
                    stage_id,
                    cur.session_id,
                    target,
                    cur.version + 1,
                    new_number,
                    session_status,
                    cur.name,
                )
            raise ConcurrentModification(f"stage {stage_id} is changing too fast; try again")
        except BaseException:
            # Nothing half-done stays in the transaction for a later commit to pick up.
            with contextlib.suppress(Exception):
                self.session.rollback()
            raise

    def _start_session_for(
        self, conn: Connection, session_id: str, stage: str, now: float
    ) -> SessionChange:
        """Inside a stage's move to ACTIVE: its PENDING session starts too (PENDING ->
        ACTIVE, with its ``start`` event), so a session with an ACTIVE stage is ACTIVE.
        What an API user driving stages by hand meets; a runner claims the session first.
        The session row is already locked by this transaction (its touch)."""
        reason = f"stage {stage} started"
        version = conn.execute(
            update(_T)
            .where(_T.c.id == session_id, _T.c.status == SessionStatus.PENDING)
            .values(
                status=SessionStatus.ACTIVE,
                version=_T.c.version + 1,
                started_at=func.coalesce(_T.c.started_at, now),
                updated_at=now,
                reason=None,
            )
            .returning(_T.c.version)
        ).scalar_one()
        self._event(
            conn,
            session_id,
            SessionOp.START,
            SessionStatus.PENDING,
            SessionStatus.ACTIVE,
            now,
            reason,
        )
        return SessionChange(
            session_id,
            SessionOp.START,
            SessionStatus.PENDING,
            SessionStatus.ACTIVE,
            version,
            reason,
        )

    def set_progress(self, stage_id: int, progress: float) -> None:
        """Progress only: no event, no version bump (the runner coalesces these)."""
        now = time.time()
        conn = self._conn()
        conn.execute(
            update(_ST)
            .where(_ST.c.id == stage_id)
            .values(progress=max(0.0, min(100.0, float(progress))), updated_at=now)
        )
        self.session.commit()

    def record_outputs(self, stage_id: int, attempt: int, outputs: Mapping[str, str]) -> bool:
        """Store the outputs (``::output KEY=VALUE``) the stage's attempt ``attempt`` has
        reported so far, replacing what was stored: the runner writes them as they come
        and once more before the stage completes, so a later stage (or a runner taking
        over) reads them from here. No event, no version bump. False when the stage is at
        another attempt now (nothing written)."""
        result = self._conn().execute(
            update(_ST)
            .where(_ST.c.id == stage_id, _ST.c.attempt == attempt)
            .values(outputs=dict(outputs))
        )
        self.session.commit()
        return result.rowcount == 1

    def record_process(
        self, stage_id: int, *, pid: int | None, pid_start: int | None, host: str | None = None
    ) -> None:
        """Remember the stage's process so a later runner can clean up after a crash."""
        self._conn().execute(
            update(_ST)
            .where(_ST.c.id == stage_id)
            .values(pid=pid, pid_start=pid_start, host=host or self.host)
        )
        self.session.commit()

    def record_exit_code(self, stage_id: int, exit_code: int) -> None:
        """The exit code of a process that ended after its stage was already decided
        (aborted): kept for the record, no state change."""
        self._conn().execute(
            update(_ST)
            .where(_ST.c.id == stage_id, _ST.c.exit_code.is_(None))
            .values(exit_code=exit_code)
        )
        self.session.commit()


_STAGE_OPS: dict[str, str] = {
    StageStatus.ACTIVE: "stage.start",
    StageStatus.PAUSED: "stage.pause",
    StageStatus.COMPLETED: "stage.complete",
    StageStatus.FAILED: "stage.fail",
    StageStatus.PENDING: "stage.reset",
}

#: The seed's name for the same object.
StageInstanceManager = StageManager


_LOG_COLUMNS = ("session_id", "at", "level", "category", "stage", "text")


_COPY_LOGS = f"COPY {_LOG.name} ({', '.join(_LOG_COLUMNS)}) FROM STDIN"


class LogLines(NamedTuple):
    """Lines that share everything but their text: what a stage printed in one read (one
    time, stream, session and stage), or a single record. The unit the log writers batch."""

    session_id: str
    at: float
    level: str
    category: str
    stage: str | None
    texts: Sequence[str]


#: Below this many lines a group goes through executemany with the others; from it on, one
#: statement that expands a JSON array inside SQLite (no per-line binding from Python).
_JSON_GROUP_MIN = 8
#: SQLite's JSON1 ``json_each``: built in since 3.38, probed once per process before that.
_sqlite_json_each: bool | None = None


def _has_json_each(conn: Connection) -> bool:
    global _sqlite_json_each
    if _sqlite_json_each is None:
        try:
            conn.exec_driver_sql("SELECT count(*) FROM json_each('[1]')").scalar()
            _sqlite_json_each = True
        except Exception:
            _sqlite_json_each = False
    return _sqlite_json_each


def append_log_lines(session: Session, groups: Sequence[LogLines]) -> None:
    """Insert log records, one per text, in order, in one transaction; the batching writers
    (the log mirror) call this with what a stage printed.

    The hot path of stage output (hundreds of thousands of lines per second). On SQLite a
    group of lines becomes one ``INSERT … SELECT … FROM json_each(?)``: the texts cross
    into SQLite as one JSON string and are expanded there, in array order, which is about
    2.5x the rate of ``executemany`` (whose per-row binding and statement reset from Python
    cost more than the insert itself). Small groups go through ``executemany`` as tuples.
    On PostgreSQL all rows go through one COPY, about three times the rate of executemany
    there.

    A NUL character is stored as the four characters ``\\x00``, on both stores: PostgreSQL
    text cannot hold it (and SQLite's JSON strings end at it); the stage output layer
    writes NUL bytes the same way, so a log reads the same from either store.
    """
    if not groups:
        return
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(_COPY_LOGS) as copy:
            for sid, at, level, category, stage, texts in groups:
                copy.write(_copy_block(sid, at, level, category, stage, _without_nul(texts)))
        session.commit()
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    placeholders = ", ".join([marker] * (len(_LOG_COLUMNS) - 1))
    single: list[tuple[Any, ...]] = []
    use_json = conn.dialect.name == "sqlite" and _has_json_each(conn)
    for group in groups:
        sid, at, level, category, stage, texts = group
        if use_json and len(texts) >= _JSON_GROUP_MIN:
            # ensure_ascii=False: a lone surrogate then fails to encode, as it does with
            # executemany, instead of being stored as bytes SQLite cannot give back.
            payload = json.dumps(
                texts if isinstance(texts, (list, tuple)) else list(texts), ensure_ascii=False
            )
            if "\\u0000" in payload:  # a NUL (or a text spelling one out: harmless)
                payload = json.dumps(_without_nul(texts), ensure_ascii=False)
            if single:  # keep the rows in the order they were given
                _insert_rows(conn, single, marker)
                single = []
            conn.exec_driver_sql(
                f"INSERT INTO {_LOG.name} ({', '.join(_LOG_COLUMNS)}) "
                f"SELECT {placeholders}, value FROM json_each({marker}) ORDER BY key",
                (sid, at, level, category, stage, payload),
            )
            continue
        single.extend((sid, at, level, category, stage, text) for text in _without_nul(texts))
    if single:
        _insert_rows(conn, single, marker)
    session.commit()


def _copy_escape(value: str) -> str:
    """A value for COPY's text format: backslash, tab, newline and CR escaped."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _copy_block(
    sid: str, at: float, level: str, category: str, stage: str | None, texts: Sequence[str]
) -> str:
    """One group's rows as COPY text data, built with whole-block string operations: the
    texts (NUL-free) are joined with NUL, escaped at once, and every NUL becomes the end of
    a row plus the next row's shared columns. Writing row by row (``write_row``) cost about
    a microsecond of Python per line, which held the GIL against the stage's output reader."""
    if not texts:
        return ""
    head = "\t".join(
        (
            _copy_escape(sid),
            repr(float(at)),
            _copy_escape(level),
            _copy_escape(category),
            "\\N" if stage is None else _copy_escape(stage),
        )
    )
    head += "\t"
    body = _copy_escape("\x00".join(texts))
    return head + body.replace("\x00", "\n" + head) + "\n"


def _without_nul(texts: Sequence[str]) -> Sequence[str]:
    """``texts`` with each NUL character spelled ``\\x00`` (the same sequence when none)."""
    if any("\x00" in text for text in texts):
        return [text.replace("\x00", "\\x00") for text in texts]
    return texts


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]], marker: str) -> None:
    conn.exec_driver_sql(
        f"INSERT INTO {_LOG.name} ({', '.join(_LOG_COLUMNS)}) "
        f"VALUES ({', '.join([marker] * len(_LOG_COLUMNS))})",
        rows,
    )


def append_logs(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert log records given as mappings (``session_id``, ``at``, ``level``,
    ``category``, ``stage``, ``text``), in order, in one transaction."""
    append_log_lines(
        session,
        [
            LogLines(r["session_id"], r["at"], r["level"], r["category"], r["stage"], (r["text"],))
            for r in rows
        ],
    )


__all__ = [
    "HEARTBEAT_INTERVAL",
    "STALE_AFTER",
    "FlowSessionManager",
    "LogLines",
    "SessionChange",
    "StageInstanceManager",
    "StageManager",
    "append_log_lines",
    "append_logs",
    "compute_progress",
    "is_orphaned",
]
