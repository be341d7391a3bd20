"""What every manager shares: who acts, the event each change writes, what a change did
once committed (logged, and handed to the integration), and the runner's lease.

Each change is one transaction that writes its event row and bumps ``version``; the
managers of :mod:`store.sessions`, :mod:`store.leases`, :mod:`store.announcements` and
:mod:`store.stages` build on :class:`ManagerBase`.

**The lease** (docs/ARCHITECTURE.md §2, "Ownership"): a manager given a :class:`Lease`
writes only while the session's row records that claim. Every write it makes carries the
condition in the statement itself: the session's own row is updated ``WHERE … AND
runner_host = :h AND runner_pid = :p AND runner_lease = :token``; a stage row is written
``WHERE … AND EXISTS (the session row with that claim, locked FOR SHARE)``; a transaction
of several statements checks it in its first one, which locks the session row (PostgreSQL)
or takes the database's write lock (SQLite), so a takeover commits either before it (and
the write is refused) or after its commit. A refused write raises :class:`LeaseLost` and
changes nothing, whatever the timing: a runner that lost its session cannot write to it.
The claims themselves (``start_session``, ``claim_queued``, ``create_session(runner=…)``)
are what give a lease, and are not conditioned on one.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement
from sqlmodel import Session

from store._driver import execute_on_driver
from store.errors import LeaseLost
from store.identity import local_host, local_user
from store.liveness import stale_after_of
from store.models import FlowEvent, FlowSession, StageInstance
from store.records import (
    EVENT_COLUMNS,
    INTEGRATION_CATEGORY,
    MAX_RETRIES,
    MIN_PREFIX,
    LogLines,
    SessionChange,
    change_lines,
    checked_id,
    integration_text,
    operation_text,
    prefix_result,
)

_T = FlowSession.__table__  # type: ignore[attr-defined]
_ST = StageInstance.__table__  # type: ignore[attr-defined]
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
_EXACT_ID = select(_T.c.id).where(_T.c.id == bindparam("sid"))


@dataclass(frozen=True)
class Lease:
    """A runner's hold on one session: the session, the runner's host and pid, and the
    token its claim wrote (``flow_sessions.runner_lease``: the session's version right
    after the claim). Every claim writes a new token, so a runner that was taken over holds
    a lease no row matches any more, even when the new claim was made under the same host
    and pid (a worker claiming again a session its own stalled runner still runs)."""

    session_id: str
    host: str
    pid: int
    token: int

    def params(self) -> dict[str, Any]:
        """The values of :data:`HOLDS`' parameters."""
        return {
            "lease_sid": self.session_id,
            "lease_host": self.host,
            "lease_pid": self.pid,
            "lease_token": self.token,
        }

    def held_by(self, session_id: str, host: Any, pid: Any, token: Any) -> bool:
        """Does a session row with this id and claim record this lease?"""
        return (session_id, host, pid, token) == (self.session_id, self.host, self.pid, self.token)


#: The session row records the lease bound as ``lease_sid``, ``lease_host``, ``lease_pid``
#: and ``lease_token`` (:meth:`Lease.params`): the condition of every fenced write of a
#: session row, in prebuilt statements.
HOLDS = (
    _T.c.id == bindparam("lease_sid"),
    _T.c.runner_host == bindparam("lease_host"),
    _T.c.runner_pid == bindparam("lease_pid"),
    _T.c.runner_lease == bindparam("lease_token"),
)

#: The session of the stage row being written records the lease (bound as for
#: :data:`HOLDS`). The session row is locked FOR SHARE on PostgreSQL: a takeover that has
#: not committed yet is waited for (and then seen), and one that comes later waits for this
#: write's commit; SQLite's writes hold the database's write lock from their statement's
#: start. (SQLite has no FOR SHARE; SQLAlchemy leaves it out there.)
STAGE_FENCE = (
    select(_T.c.id).where(_T.c.id == _ST.c.session_id, *HOLDS).with_for_update(read=True).exists()
)


def holds(lease: Lease) -> ColumnElement[bool]:
    """:data:`HOLDS` with the lease's values in place, for statements built per call."""
    return and_(
        _T.c.id == lease.session_id,
        _T.c.runner_host == lease.host,
        _T.c.runner_pid == lease.pid,
        _T.c.runner_lease == lease.token,
    )


_CLAIM_OF = select(_T.c.runner_host, _T.c.runner_pid, _T.c.runner_lease).where(
    _T.c.id == bindparam("sid")
)

#: The event insert with every column bound by name, for :func:`execute_on_driver`.
_INSERT_EVENT_ROW = insert(_EV).values({col: bindparam(col) for col in EVENT_COLUMNS}).inline()


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


_logging_enabled = False
_lines_in_store = False


def enable_logging(enabled: bool = True, *, in_store: bool = False) -> None:
    """Log every operation through loguru (categories of docs/ARCHITECTURE.md §7); off for
    library use. ``in_store``: the application also keeps the records in the store's log
    table; a manager made with ``log_in_transaction`` then writes its changes' records
    itself, in their transaction (:meth:`ManagerBase._commit_logged`)."""
    global _logging_enabled, _lines_in_store
    _logging_enabled = enabled
    _lines_in_store = enabled and in_store


def logging_enabled() -> bool:
    return _logging_enabled


def _op_logger() -> Any:
    from loguru import logger

    return logger


class ManagerBase:
    """Shared plumbing: the SQLModel session, who acts, and event writing. ``stale_after``:
    seconds after which a runner's heartbeat counts as stale; by default the limit the
    session's factory was given (see :mod:`store.liveness`)."""

    def __init__(
        self,
        session: Session,
        *,
        actor: str | None = None,
        integration: Any | None = None,
        stale_after: float | None = None,
        lease: Lease | None = None,
        log_in_transaction: bool = False,
    ) -> None:
        self.session = session
        #: A person's command: its changes' log records are committed with them (see
        #: :meth:`_commit_logged`).
        self.log_in_transaction = log_in_transaction
        #: With a lease, every write of this manager is conditioned on it (the module doc)
        #: and is for that session only; set once the runner's claim gave it.
        self.lease = lease
        self.actor = actor or local_user()
        self.host = local_host()
        self.pid = os.getpid()
        self.integration = integration
        self.stale_after = stale_after_of(session) if stale_after is None else stale_after

    def _conn(self) -> Connection:
        return self.session.connection()

    def _on_driver(self, statement: Any, params: dict[str, Any]) -> tuple[Any, int]:
        """Run one prebuilt statement on the driver and commit: (its first row or None, the
        rows it changed). For the runner's frequent one-statement reads and writes, which
        need none of the ORM's work (:mod:`store._driver`)."""
        cursor = execute_on_driver(self._conn(), statement, params)
        try:
            row = cursor.fetchone() if cursor.description else None
            changed = int(cursor.rowcount)
        finally:
            cursor.close()
        self.session.commit()
        return row, changed

    # -- the lease --------------------------------------------------------------------------

    def _lease_params(self) -> dict[str, Any]:
        assert self.lease is not None
        return self.lease.params()

    def _lease_lost(
        self, session_id: str, claim: tuple[Any, Any, Any] | None, *, gone: bool = False
    ) -> LeaseLost:
        """The refusal of a write this manager's lease does not allow, given the session's
        claim as read (``runner_host``, ``runner_pid``, ``runner_lease``; None or ``gone``:
        the session is deleted)."""
        assert self.lease is not None
        short = session_id[:12]
        if session_id != self.lease.session_id:
            return LeaseLost(
                f"session {short} is not the session this runner holds "
                f"({self.lease.session_id[:12]}): nothing was written"
            )
        if claim is None or gone:
            return LeaseLost(f"session {short} was deleted", deleted=True)
        host, pid, token = claim
        if pid is None:
            return LeaseLost(
                f"session {short} is no longer held by this runner (pid {self.lease.pid} on "
                f"{self.lease.host}): no runner holds it now; nothing was written"
            )
        return LeaseLost(
            f"another runner took over session {short} (pid {pid} on {host}, claim "
            f"{token}); this runner (pid {self.lease.pid} on {self.lease.host}, claim "
            f"{self.lease.token}) wrote nothing more",
            holder=(host, pid),
        )

    def _check_lease(self, session_id: str | None = None) -> None:
        """After a write of a leased manager changed no row: raise :class:`LeaseLost` when
        the lease is why (the session's claim is not the lease's any more), else return
        (the row was simply not there or not in that state). The transaction is rolled back
        first: this reads the claim as committed now."""
        assert self.lease is not None
        self.session.rollback()
        sid = self.lease.session_id
        row = self._conn().execute(_CLAIM_OF, {"sid": sid}).first()
        self.session.rollback()
        if row is None or not self.lease.held_by(sid, *row):
            raise self._lease_lost(sid, None if row is None else tuple(row))
        if session_id is not None and session_id != sid:
            raise self._lease_lost(session_id, None)

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
        cursor = execute_on_driver(
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

    def _stores_lines(self) -> bool:
        return self.log_in_transaction and _lines_in_store and self.lease is None

    def _log_rows(self, logged: Sequence[tuple[SessionChange, str]]) -> list[LogLines]:
        """The store's log records of ``logged`` (each change with its category): what the
        loguru sink would mirror for them."""
        with_integration = bool(getattr(self.integration, "logs_changes", False))
        now = time.time()
        return [
            LogLines(sid, now, level, category, stage, (text,))
            for level, category, sid, stage, text in change_lines(
                logged, self.actor, self.host, self.pid
            )
            if with_integration or category != INTEGRATION_CATEGORY
        ]

    def _rows_stored(self, rows: Sequence[LogLines]) -> bool:
        """Write ``rows`` in the open transaction, under a savepoint: on a full disk they
        give way to the change (False: the log mirror then stores them, or notes them as
        missing), as the mirror's own lines do (:mod:`store.space`)."""
        from store.log_ingest import insert_log_lines
        from store.space import is_disk_full

        try:
            with self.session.begin_nested():
                insert_log_lines(self._conn(), rows)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            return False
        return True

    def _commit_logged(self, logged: Sequence[tuple[SessionChange, str]]) -> None:
        """Commit, then log ``logged`` (:meth:`_committed`). A person's change
        (``log_in_transaction``) writes its store records in its own transaction: a runner
        it wakes (an approval, a resume) then logs what it does next after them, however
        the two processes' log writers are scheduled. A runner's changes (leased) keep the
        log mirror's batches: its records are ordered by its own single writer."""
        stored = bool(logged) and self._stores_lines() and self._rows_stored(self._log_rows(logged))
        self.session.commit()
        for change, category in logged:
            self._committed(change, category, stored=stored)

    def _committed(
        self, change: SessionChange, category: str, *, stored: bool = False
    ) -> SessionChange:
        """After commit: log the operation and tell subscribers. ``stored``: its store
        records were written with it, so the loguru sink writes the files only."""
        if self.integration is not None:
            if stored and getattr(self.integration, "logs_changes", False):
                with _op_logger().contextualize(stored=True):
                    self.integration.publish(change)
            else:
                self.integration.publish(change)
        if not _logging_enabled:
            return change
        _op_logger().bind(
            category=category,
            session_id=change.session_id,
            stage=change.stage,
            stored=stored,
            lease=self.lease,  # a runner's: none stored once the session is deleted
        ).info(operation_text(change, self.actor, self.host, self.pid))
        return change

    def resolve_session_id(self, session_id: str) -> str:
        """A full id or a unique prefix of at least MIN_PREFIX characters -> the full id."""
        given = checked_id(session_id)
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
        return prefix_result(given, [(r.id, r.name) for r in rows])


__all__ = [
    "EVENT_COLUMNS",
    "HOLDS",
    "MAX_RETRIES",
    "MIN_PREFIX",
    "STAGE_FENCE",
    "Lease",
    "ManagerBase",
    "SessionChange",
    "StageMove",
    "enable_logging",
    "holds",
    "integration_text",
    "logging_enabled",
]
