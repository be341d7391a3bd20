"""What every manager shares: who acts, the event each change writes, and what a change
did once committed (logged, and handed to the integration).

Each change is one transaction that writes its event row and bumps ``version``; the
managers of :mod:`store.sessions`, :mod:`store.leases`, :mod:`store.announcements` and
:mod:`store.stages` build on :class:`ManagerBase`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from sqlalchemy import bindparam, insert, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from store._driver import execute_on_driver
from store.errors import AmbiguousId, InvalidId, SessionNotFound
from store.identity import local_host, local_user
from store.liveness import stale_after_of
from store.models import FlowEvent, FlowSession

MIN_PREFIX = 4
_ID_CHARS = re.compile(r"^[A-Za-z0-9_-]+$")
#: How often an operation that lost a race reads again and retries before giving up.
MAX_RETRIES = 20

_T = FlowSession.__table__  # type: ignore[attr-defined]
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
_EXACT_ID = select(_T.c.id).where(_T.c.id == bindparam("sid"))

EVENT_COLUMNS = (
    "session_id", "stage", "op", "from_status", "to_status", "actor", "host", "pid", "at", "reason"
)  # fmt: skip
#: The event insert with every column bound by name, for :func:`execute_on_driver`.
_INSERT_EVENT_ROW = insert(_EV).values({col: bindparam(col) for col in EVENT_COLUMNS}).inline()


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


_logging_enabled = False


def enable_logging(enabled: bool = True) -> None:
    """Log every operation through loguru (categories of docs/ARCHITECTURE.md §7); off for
    library use."""
    global _logging_enabled
    _logging_enabled = enabled


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
    ) -> None:
        self.session = session
        self.actor = actor or local_user()
        self.host = local_host()
        self.pid = os.getpid()
        self.integration = integration
        self.stale_after = stale_after_of(session) if stale_after is None else stale_after

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
