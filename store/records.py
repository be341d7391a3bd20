"""What a change is and how it is worded, free of the database layer: shared by the managers
(SQLAlchemy) and the driver path (:mod:`store.direct`), so that both refuse, record and log
with the same words (docs/ARCHITECTURE.md §2, "Two ways in").

Nothing here touches a database: an id's shape is checked before any query, a refusal is
built from what was read, and the log lines of a committed change are composed from it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

from store.errors import AmbiguousId, InvalidId, InvalidTransition, SessionNotFound
from store.gates import gate_of_reason
from store.status import SessionOp, SessionStatus, allowed_session_ops

if TYPE_CHECKING:
    from store.changes import Lease

#: The shortest session id prefix a command accepts.
MIN_PREFIX = 4
#: Session ids are generated as 32 hex digits (uuid4): nothing else can be one or a prefix.
_ID_CHARS = re.compile(r"^[0-9a-f]+$")
#: How often an operation that lost a race reads again and retries before giving up.
MAX_RETRIES = 20

#: The log category of session operations.
SESSION_CATEGORY = "workflow.session.operations"
#: The log category of stage operations (a gate passed by approve or resume).
STAGE_CATEGORY = "workflow.stage.operations"
#: The log category of what the integration was told (integration.log).
INTEGRATION_CATEGORY = "workflow.session.integration"

#: The columns of an event row, in the order the inserts bind them.
EVENT_COLUMNS = (
    "session_id", "stage", "op", "from_status", "to_status", "actor", "host", "pid", "at", "reason"
)  # fmt: skip


class LogLines(NamedTuple):
    """Lines that share everything but their text: what a stage printed in one read (one
    time, stream, session and stage), or a single record. The unit the log writers batch."""

    session_id: str
    at: float
    level: str
    category: str
    stage: str | None
    texts: Sequence[str]
    #: The claim (``store.changes.Lease``) of the runner that logged them, if a runner
    #: did: they are stored only while it holds (``store.log_ingest.append_log_lines``).
    lease: Lease | None = None


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


def checked_id(session_id: str) -> str:
    """The id or prefix as given, stripped and in lower case (as ids are written);
    :class:`InvalidId` when it cannot name a session (too short, or characters no id has).
    ``len >= 32``: a full id."""
    typed = session_id.strip()
    if len(typed) < MIN_PREFIX:
        raise InvalidId(f"session id {typed!r} is too short: give at least {MIN_PREFIX} characters")
    given = typed.lower()
    if not _ID_CHARS.match(given):
        raise InvalidId(f"invalid session id {typed!r}: ids are hexadecimal (0-9, a-f)")
    return given


def prefix_result(given: str, rows: Sequence[tuple[str, str]]) -> str:
    """The one session whose id starts with ``given``, from up to 11 (id, name) rows in id
    order; :class:`SessionNotFound` or :class:`AmbiguousId` otherwise."""
    if not rows:
        raise SessionNotFound(f"no session matches {given!r}")
    if len(rows) > 1:
        listed = ", ".join(f"{sid[:12]} ({name})" for sid, name in rows[:10])
        more = " …" if len(rows) > 10 else ""
        raise AmbiguousId(
            f"session id {given!r} is ambiguous: {listed}{more}", [sid for sid, _ in rows]
        )
    return str(rows[0][0])


def refusal(
    sid: str, op: SessionOp, status: str, why: str = "", *, reason: str | None = None
) -> InvalidTransition:
    """The refusal of ``op`` on a session in ``status``, naming what is allowed. ``reason``:
    the session's; a session PAUSED at a manual gate says so, and that ``approve`` passes
    it, the one thing its user most likely wants next."""
    allowed = allowed_session_ops(status)
    gate = gate_of_reason(reason) if status == SessionStatus.PAUSED else None
    if gate is not None:
        allowed = ["approve", *allowed]
        why = why or f"waiting at gate {gate}"
    listed = ", ".join(allowed) if allowed else "none"
    detail = f" ({why})" if why else ""
    return InvalidTransition(
        f"cannot {op.value} session {sid[:12]}: it is {status}{detail}; allowed: {listed}",
        status,
        allowed,
    )


def operation_text(change: SessionChange, actor: str, host: str, pid: int) -> str:
    """The operations-log line of a committed change."""
    arrow = f"{change.from_status or '∅'} -> {change.to_status or '∅'}"
    reason = f" ({change.reason})" if change.reason else ""
    return f"{change.op} {arrow}{reason} by {actor}@{host}:{pid}"


def integration_text(change: SessionChange) -> str:
    """The integration-log line of a committed change (the format readers of
    integration.log know: this integration hands changes to no one)."""
    return (
        f"notify 0 subscriber(s): {change.op} "
        f"{change.from_status or '∅'} -> {change.to_status or '∅'}"
    )


#: The insert of log rows on the driver path (qmark style), as :mod:`store.log_ingest`
#: makes them.
INSERT_LOGS = (
    "INSERT INTO log_records (session_id, at, level, category, stage, text) "
    "VALUES (?, ?, ?, ?, ?, ?)"
)

#: One log record of a change: level, category, session id, stage, text.
LogLine = tuple[str, str, str, "str | None", str]


def change_lines(
    logged: Sequence[tuple[SessionChange, str]], actor: str, host: str, pid: int
) -> list[LogLine]:
    """The log records of committed changes (each with its category), in order: per change,
    what the integration was told (DEBUG), then the operation (INFO). What the managers log
    through loguru when logging is on (``ManagerBase._committed``)."""
    lines: list[LogLine] = []
    for change, category in logged:
        sid, stage = change.session_id, change.stage
        lines.append(("DEBUG", INTEGRATION_CATEGORY, sid, stage, integration_text(change)))
        lines.append(("INFO", category, sid, stage, operation_text(change, actor, host, pid)))
    return lines
