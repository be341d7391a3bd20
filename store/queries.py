"""Read models for the front ends: the session list, details, events and logs.

Everything here is plain data (the frozen dataclasses of :mod:`store.views`, re-exported
here) so the CLI prints it, the dashboard feeds it to widgets, and nobody outside ``store``
writes SQL. List queries are windowed (limit and
offset plus a separate count) so 100,000 sessions cost what the visible rows cost.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, bindparam, func, or_, select
from sqlmodel import Session

from store._driver import rows_on_driver
from store.gates import waiting_reason
from store.liveness import awaits_worker, is_orphaned, stale_after_of
from store.models import FlowEvent, FlowSession, LogRecord, StageInstance
from store.status import SessionStatus
from store.views import (
    LEVELS,
    EventView,
    LogView,
    SessionView,
    StageView,
    compute_progress,
    iso,
)

_T = FlowSession.__table__  # type: ignore[attr-defined]
_ST = StageInstance.__table__  # type: ignore[attr-defined]
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
_LOG = LogRecord.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class SessionFilter:
    """What the list shows: by status, workflow and a free-text match on id/name/workflow."""

    status: str | None = None
    workflow_id: str | None = None
    text: str | None = None
    #: Several statuses, any of them (`session list -s paused -s failed`).
    statuses: tuple[str, ...] = ()

    def where(self) -> ColumnElement[bool]:
        clauses: list[ColumnElement[bool]] = []
        if self.status:
            clauses.append(_T.c.status == self.status)
        if self.statuses:
            clauses.append(_T.c.status.in_(self.statuses))
        if self.workflow_id:
            clauses.append(_T.c.workflow_id == self.workflow_id)
        if self.text:
            # autoescape: the user's text is matched literally (a '_' or '%' in it is not a
            # LIKE wildcard)
            text = self.text.lower()
            clauses.append(
                or_(
                    func.lower(_T.c.name).contains(text, autoescape=True),
                    func.lower(_T.c.workflow_id).contains(text, autoescape=True),
                    _T.c.id.startswith(text, autoescape=True),
                )
            )
        return and_(True, *clauses)


_SESSION_COLUMNS = (
    _T.c.id,
    _T.c.name,
    _T.c.workflow_id,
    _T.c.status,
    _T.c.reason,
    _T.c.version,
    _T.c.created_at,
    _T.c.updated_at,
    _T.c.started_at,
    _T.c.finished_at,
    _T.c.runner_host,
    _T.c.runner_pid,
    _T.c.heartbeat_at,
    _T.c.queued,
    _T.c.metadata,
    _T.c.params,
    _T.c.runner_lease,
)


#: Built once: constructing an expression and its cache key costs more Python than running
#: it (every runner reads its session's view when it starts).
_STAGES_OF = (
    select(
        _ST.c.session_id,
        _ST.c.id,
        _ST.c.name,
        _ST.c.stage_type,
        _ST.c.status,
        _ST.c.progress,
        _ST.c.attempt,
        _ST.c.exit_code,
        _ST.c.error,
        _ST.c.started_at,
        _ST.c.finished_at,
        _ST.c.config,
        _ST.c.pid,
        _ST.c.pid_start,
        _ST.c.host,
        _ST.c.version,
        _ST.c.outputs,
        _ST.c.updated_at,
    )
    .where(_ST.c.session_id.in_(bindparam("ids", expanding=True)))
    .order_by(_ST.c.session_id, _ST.c.position)
)
_ONE_SESSION = select(*_SESSION_COLUMNS, _T.c.definition).where(_T.c.id == bindparam("sid"))


#: One session's stages (the runner's start, `session show`): no list parameter, so it runs
#: on the driver (store._driver).
_STAGES_OF_ONE = (
    select(*_STAGES_OF.selected_columns)
    .where(_ST.c.session_id == bindparam("sid"))
    .order_by(_ST.c.position)
)


def paused_since(session: Session, ids: Sequence[str]) -> dict[str, float]:
    """When each of these sessions was last paused (its last move into PAUSED from another
    state), by id: a PAUSED session's ``updated_at`` also moves when a gate is approved or
    a runner re-pauses it at another gate, which a clock of the pause must not restart."""
    if not ids:
        return {}
    query = (
        select(_EV.c.session_id, func.max(_EV.c.at))
        .where(
            _EV.c.session_id.in_(list(ids)),
            _EV.c.to_status == SessionStatus.PAUSED.value,
            or_(_EV.c.from_status.is_(None), _EV.c.from_status != SessionStatus.PAUSED.value),
            ~_EV.c.op.startswith("stage."),  # the session's moves, not its stages
        )
        .group_by(_EV.c.session_id)
    )
    return {sid: at for sid, at in session.connection().execute(query)}


def _stage_view(r: Any) -> StageView:
    return StageView(
        id=r.id,
        name=r.name,
        stage_type=r.stage_type,
        status=r.status,
        progress=r.progress,
        attempt=r.attempt,
        exit_code=r.exit_code,
        error=r.error,
        started_at=r.started_at,
        finished_at=r.finished_at,
        config=r.config or {},
        pid=r.pid,
        pid_start=r.pid_start,
        host=r.host,
        version=r.version,
        outputs=r.outputs or {},
        updated_at=r.updated_at,
    )


def _stages_for(session: Session, ids: Sequence[str]) -> dict[str, list[StageView]]:
    by_session: dict[str, list[StageView]] = defaultdict(list)
    if not ids:
        return by_session
    rows = session.connection().execute(_STAGES_OF, {"ids": list(ids)})
    for r in rows:
        by_session[r[0]].append(_stage_view(r))
    return by_session


def _views(
    session: Session,
    rows: Sequence[Any],
    with_definition: bool = False,
    stages: dict[str, list[StageView]] | None = None,
) -> list[SessionView]:
    if stages is None:
        stages = _stages_for(session, [r.id for r in rows])
    now = time.time()
    stale_after = stale_after_of(session)
    return [
        SessionView(
            id=r.id,
            name=r.name,
            workflow_id=r.workflow_id,
            status=r.status,
            reason=r.reason,
            version=r.version,
            created_at=r.created_at,
            updated_at=r.updated_at,
            started_at=r.started_at,
            finished_at=r.finished_at,
            runner_host=r.runner_host,
            runner_pid=r.runner_pid,
            heartbeat_at=r.heartbeat_at,
            queued=bool(r.queued),
            metadata=r.metadata or {},
            stages=tuple(stages.get(r.id, ())),
            orphaned=is_orphaned(
                r.status, r.runner_host, r.runner_pid, r.heartbeat_at, now, stale_after
            ),
            definition=getattr(r, "definition", None) if with_definition else None,
            params=r.params or {},
            runner_lease=r.runner_lease,
        )
        for r in rows
    ]


def list_sessions(
    session: Session,
    filt: SessionFilter | None = None,
    *,
    limit: int = 50,
    offset: int = 0,
) -> list[SessionView]:
    """Newest first, one window of ``limit`` rows from ``offset``."""
    filt = filt or SessionFilter()
    rows = (
        session.connection()
        .execute(
            select(*_SESSION_COLUMNS)
            .where(filt.where())
            .order_by(_T.c.created_at.desc(), _T.c.id.desc())
            .limit(limit)
            .offset(offset)
        )
        .all()
    )
    return _views(session, rows)


def count_sessions(session: Session, filt: SessionFilter | None = None) -> int:
    filt = filt or SessionFilter()
    return int(
        session.connection()
        .execute(select(func.count()).select_from(_T).where(filt.where()))
        .scalar_one()
    )


def status_counts(session: Session) -> dict[str, int]:
    counts = {s.value: 0 for s in SessionStatus}
    for status, n in session.connection().execute(
        select(_T.c.status, func.count()).group_by(_T.c.status)
    ):
        counts[status] = int(n)
    return counts


def get_session_view(session: Session, session_id: str) -> SessionView | None:
    """Details of one session by full id (resolve prefixes with the manager first)."""
    conn = session.connection()
    rows = rows_on_driver(conn, _ONE_SESSION, {"sid": session_id})
    if not rows:
        return None
    stages = [_stage_view(r) for r in rows_on_driver(conn, _STAGES_OF_ONE, {"sid": session_id})]
    return _views(session, rows, with_definition=True, stages={session_id: stages})[0]


def last_session_change(session: Session, session_id: str, to_status: str) -> EventView | None:
    """The newest event that brought the session itself (not one of its stages) to
    ``to_status``: who paused, resumed or aborted it, from where."""
    row = (
        session.connection()
        .execute(
            select(
                _EV.c.at,
                _EV.c.op,
                _EV.c.from_status,
                _EV.c.to_status,
                _EV.c.actor,
                _EV.c.host,
                _EV.c.pid,
                _EV.c.reason,
                _EV.c.stage,
            )
            .where(
                _EV.c.session_id == session_id,
                _EV.c.to_status == to_status,
                _EV.c.stage.is_(None),
            )
            .order_by(_EV.c.id.desc())
            .limit(1)
        )
        .first()
    )
    return None if row is None else EventView(*row)


def list_events(session: Session, session_id: str, limit: int | None = None) -> list[EventView]:
    """A session's history, oldest first (newest last, as the JSON contract says)."""
    query = (
        select(
            _EV.c.at,
            _EV.c.op,
            _EV.c.from_status,
            _EV.c.to_status,
            _EV.c.actor,
            _EV.c.host,
            _EV.c.pid,
            _EV.c.reason,
            _EV.c.stage,
        )
        .where(_EV.c.session_id == session_id)
        .order_by(_EV.c.id.desc())
    )
    if limit:
        query = query.limit(limit)
    rows = session.connection().execute(query).all()
    return [EventView(*r) for r in reversed(rows)]


def read_logs(
    session: Session,
    session_id: str,
    *,
    after_id: int | None = None,
    before_id: int | None = None,
    min_level: str | None = None,
    stages: Sequence[str] | None = None,
    limit: int = 1000,
    newest: bool = False,
) -> list[LogView]:
    """Log records in id order. ``newest`` takes the last ``limit`` matching rows (the tail);
    otherwise the first ``limit`` after ``after_id``. ``min_level`` keeps that level and up."""
    clauses: list[ColumnElement[bool]] = [_LOG.c.session_id == session_id]
    if after_id is not None:
        clauses.append(_LOG.c.id > after_id)
    if before_id is not None:
        clauses.append(_LOG.c.id < before_id)
    if min_level:
        clauses.append(_LOG.c.level.in_(LEVELS[LEVELS.index(min_level.upper()) :]))
    if stages:
        clauses.append(_LOG.c.stage.in_(list(stages)))
    query = select(
        _LOG.c.id, _LOG.c.at, _LOG.c.level, _LOG.c.category, _LOG.c.stage, _LOG.c.text
    ).where(*clauses)
    if newest:
        tail = session.connection().execute(query.order_by(_LOG.c.id.desc()).limit(limit))
        rows = list(tail)[::-1]
    else:
        rows = list(session.connection().execute(query.order_by(_LOG.c.id).limit(limit)))
    return [LogView(*r) for r in rows]


# -- what `vc flow session wait` and the dashboard's alerts read --------------------------------


@dataclass(frozen=True)
class SessionState:
    """A session's state without its stages: what waiting for its end needs."""

    id: str
    name: str
    workflow_id: str
    status: str
    reason: str | None
    version: int
    orphaned: bool
    #: The manual gate it waits at (PAUSED, its gate stage PAUSED), else None.
    gate: str | None = None
    #: Queued work no runner holds (store.liveness.awaits_worker): a worker runs it.
    awaits_worker: bool = False
    #: PENDING, not queued, with no runner: nothing will start it unless asked
    #: (`vc flow run WORKFLOW --session ID`).
    never_started: bool = False

    @property
    def ended(self) -> bool:
        return self.status in (SessionStatus.COMPLETED, SessionStatus.FAILED)


#: Ids per ``IN (...)`` list: far below every database's limit on bound parameters.
_IDS_PER_QUERY = 500


_FINGERPRINT = select(func.count(), func.coalesce(func.sum(_T.c.version), 0)).where(
    _T.c.id.in_(bindparam("ids", expanding=True))
)
_STATES = select(
    _T.c.id,
    _T.c.name,
    _T.c.workflow_id,
    _T.c.status,
    _T.c.reason,
    _T.c.version,
    _T.c.runner_host,
    _T.c.runner_pid,
    _T.c.heartbeat_at,
    _T.c.queued,
).where(_T.c.id.in_(bindparam("ids", expanding=True)))
_GATES = (
    select(_ST.c.session_id, _ST.c.name)
    .where(
        _ST.c.session_id.in_(bindparam("ids", expanding=True)),
        _ST.c.stage_type == "manual",
        _ST.c.status == SessionStatus.PAUSED,
    )
    .order_by(_ST.c.position)
)


def _chunks(ids: Sequence[str]) -> list[list[str]]:
    return [list(ids[i : i + _IDS_PER_QUERY]) for i in range(0, len(ids), _IDS_PER_QUERY)]


def sessions_fingerprint(session: Session, ids: Sequence[str]) -> tuple[int, int]:
    """(how many of these sessions exist, the sum of their versions): changes with every
    state change, deletion and gate of any of them, and with nothing else (heartbeats,
    progress and log lines leave it alone). One aggregate row per 500 ids: the cheap probe
    before a full :func:`session_states` read. The statements are built once (a waiter
    runs them again and again)."""
    count = total = 0
    for chunk in _chunks(ids):
        row = session.connection().execute(_FINGERPRINT, {"ids": chunk}).one()
        count, total = count + int(row[0]), total + int(row[1])
    return count, total


def session_states(
    session: Session, ids: Sequence[str], *, check_pids: bool = True
) -> dict[str, SessionState]:
    """The states of the sessions with these full ids (a deleted one is missing), read in
    one query per 500 ids, plus one for the gates of those that are PAUSED. Without
    ``check_pids`` a session is orphaned only once its heartbeat is stale (the dead-pid
    test of a runner on this host reads /proc once per session)."""
    rows: list[Any] = []
    for chunk in _chunks(ids):
        rows += session.connection().execute(_STATES, {"ids": chunk})
    gates: dict[str, str] = {}
    for chunk in _chunks([r.id for r in rows if r.status == SessionStatus.PAUSED]):
        for sid, name in session.connection().execute(_GATES, {"ids": chunk}):
            gates.setdefault(sid, name)
    now = time.time()
    stale_after = stale_after_of(session)
    return {
        r.id: SessionState(
            id=r.id,
            name=r.name,
            workflow_id=r.workflow_id,
            status=r.status,
            reason=r.reason,
            version=r.version,
            orphaned=is_orphaned(
                r.status,
                r.runner_host if check_pids else None,
                r.runner_pid,
                r.heartbeat_at,
                now,
                stale_after,
            ),
            gate=gates.get(r.id),
            awaits_worker=awaits_worker(r.status, bool(r.queued), r.runner_pid),
            never_started=(
                r.status == SessionStatus.PENDING and not r.queued and r.runner_pid is None
            ),
        )
        for r in rows
    }


@dataclass(frozen=True)
class AlertView:
    """A session that failed, or a manual gate it reached: what the dashboard announces."""

    event_id: int
    session_id: str
    name: str
    workflow_id: str
    kind: str  # "failure" | "gate"
    at: float
    reason: str | None
    stage: str | None = None
    checklist: tuple[str, ...] = ()


def alerts_after(
    session: Session, after_id: int | None, limit: int = 100
) -> tuple[int, list[AlertView]]:
    """Failures and gates reached since the event ``after_id``, oldest first (at most
    ``limit``), and the id to pass next time. ``after_id`` None starts from now: the
    newest event id, no alerts (what happened before is not news).

    A failure is a session's ``fail`` event (a stage failed, timed out, a runner crashed;
    an abort is somebody's decision, not news to them); a gate is a manual stage moving
    to PAUSED. Both are read by event id through the primary key, so a call costs what
    the new events cost, however long the history. On SQLite event ids are given in
    commit order; on PostgreSQL a transition whose id was drawn just before the newest one
    but committed just after this read (a window of milliseconds) is not announced."""
    newest = session.connection().execute(select(func.max(_EV.c.id))).scalar() or 0
    if after_id is None or newest <= after_id:
        return max(newest, after_id or 0), []
    window = and_(_EV.c.id > after_id, _EV.c.id <= newest)
    failures = session.connection().execute(
        select(_EV.c.id, _EV.c.session_id, _T.c.name, _T.c.workflow_id, _EV.c.at, _EV.c.reason)
        .join(_T, _T.c.id == _EV.c.session_id)
        .where(window, _EV.c.op == "fail")
        .order_by(_EV.c.id)
        .limit(limit)
    )
    alerts = [AlertView(r[0], r[1], r[2], r[3], "failure", r[4], r[5]) for r in failures]
    gates = session.connection().execute(
        select(
            _EV.c.id,
            _EV.c.session_id,
            _T.c.name,
            _T.c.workflow_id,
            _EV.c.at,
            _EV.c.stage,
            _ST.c.config,
        )
        .join(_T, _T.c.id == _EV.c.session_id)
        .join(_ST, and_(_ST.c.session_id == _EV.c.session_id, _ST.c.name == _EV.c.stage))
        .where(window, _EV.c.op == "stage.pause", _ST.c.stage_type == "manual")
        .order_by(_EV.c.id)
        .limit(limit)
    )
    for r in gates:
        checklist = tuple(str(item) for item in (r[6] or {}).get("checklist") or ())
        reason = waiting_reason(r[5])
        alerts.append(AlertView(r[0], r[1], r[2], r[3], "gate", r[4], reason, r[5], checklist))
    alerts.sort(key=lambda a: a.event_id)
    return newest, alerts[:limit]


__all__ = [
    "LEVELS",
    "AlertView",
    "EventView",
    "LogView",
    "SessionFilter",
    "SessionState",
    "SessionView",
    "StageView",
    "alerts_after",
    "compute_progress",
    "count_sessions",
    "get_session_view",
    "iso",
    "last_session_change",
    "list_events",
    "list_sessions",
    "read_logs",
    "session_states",
    "sessions_fingerprint",
    "status_counts",
]
