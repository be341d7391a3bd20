"""The reads of `session list|show|logs` and `flow status` on the driver path
(:mod:`store.direct`): the same views as :mod:`store.queries` (the dataclasses of
:mod:`store.views`), read with plain statements. A parity test compares both ways on the
same stores.

Each read ends its transaction (PostgreSQL opens one on the first statement), so a reader
that polls, as `logs --follow` does, sees what was committed since.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from store.direct import DirectStore
from store.liveness import STALE_AFTER, is_orphaned
from store.records import checked_id, prefix_result
from store.views import LEVELS, EventView, LogView, SessionView, StageView

_SESSION_COLUMNS = (
    "id, name, workflow_id, status, reason, version, created_at, updated_at, started_at, "
    "finished_at, runner_host, runner_pid, heartbeat_at, queued, metadata, params, runner_lease"
)
_STAGE_COLUMNS = (
    "session_id, id, name, stage_type, status, progress, attempt, exit_code, error, "
    "started_at, finished_at, config, pid, pid_start, host, version, outputs, updated_at"
)
_EVENT_COLUMNS = "at, op, from_status, to_status, actor, host, pid, reason, stage"
_LOG_COLUMNS = "id, at, level, category, stage, text"
#: Session ids per stage query (a bound parameter each).
_IDS_PER_QUERY = 500


def resolve_session_id(db: DirectStore, session_id: str) -> str:
    """A full id or a unique prefix of at least 4 characters -> the full id, as
    :meth:`store.changes.ManagerBase.resolve_session_id` (SQLAlchemy's ``startswith``
    with ``autoescape``: ``LIKE … ESCAPE '/'``)."""
    given = checked_id(session_id)
    if len(given) >= 32:
        return given
    if db.one("SELECT id FROM flow_sessions WHERE id = ?", (given,)) is not None:
        return given
    escaped = given.replace("/", "//").replace("%", "/%").replace("_", "/_")
    rows = db.rows(
        "SELECT id, name FROM flow_sessions WHERE id LIKE ? ESCAPE '/' ORDER BY id LIMIT 11",
        (escaped + "%",),
    )
    return prefix_result(given, [(str(r[0]), str(r[1])) for r in rows])


class DirectReads:
    """The reads of one command over one :class:`DirectStore`. ``stale_after``: seconds
    after which a runner's heartbeat counts as stale (``VC_STALE_AFTER``)."""

    def __init__(self, db: DirectStore, *, stale_after: float = STALE_AFTER) -> None:
        self.db = db
        self.stale_after = stale_after

    @property
    def snapshot(self) -> bool:
        """Read as it was when opened (see :attr:`DirectStore.snapshot`)."""
        return self.db.snapshot

    def resolve_session_id(self, session_id: str) -> str:
        try:
            return resolve_session_id(self.db, session_id)
        finally:
            self.db.end_read()

    def list_sessions(
        self,
        *,
        status: str | tuple[str, ...] | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
    ) -> list[SessionView]:
        """Newest first, at most ``limit``, with their stages; ``status`` may be several
        (any of them)."""
        where, params = _where(status, workflow_id)
        rows = self.db.rows(
            f"SELECT {_SESSION_COLUMNS} FROM flow_sessions{where} "
            "ORDER BY created_at DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return self._views(rows)

    def count_sessions(
        self, *, status: str | tuple[str, ...] | None = None, workflow_id: str | None = None
    ) -> int:
        where, params = _where(status, workflow_id)
        row = self.db.one(f"SELECT count(*) FROM flow_sessions{where}", params)
        self.db.end_read()
        return int(row[0]) if row else 0

    def session_view(self, session_id: str) -> SessionView | None:
        """One session by full id, with its definition snapshot."""
        rows = self.db.rows(
            f"SELECT {_SESSION_COLUMNS}, definition FROM flow_sessions WHERE id = ?",
            (session_id,),
        )
        views = self._views(rows, with_definition=True)
        return views[0] if views else None

    def events(self, session_id: str) -> list[EventView]:
        """A session's history, oldest first."""
        rows = self.db.rows(
            f"SELECT {_EVENT_COLUMNS} FROM flow_events WHERE session_id = ? ORDER BY id",
            (session_id,),
        )
        self.db.end_read()
        return [EventView(*r) for r in rows]

    def logs(
        self,
        session_id: str,
        *,
        after_id: int | None = None,
        min_level: str | None = None,
        stages: Sequence[str] | None = None,
        limit: int = 1000,
        newest: bool = False,
    ) -> list[LogView]:
        """:func:`store.queries.read_logs`: log records in id order, the last ``limit``
        (``newest``) or the first ``limit`` after ``after_id``; ``stages``: of those only."""
        clauses = ["session_id = ?"]
        params: list[Any] = [session_id]
        if after_id is not None:
            clauses.append("id > ?")
            params.append(after_id)
        if min_level:
            levels = LEVELS[LEVELS.index(min_level.upper()) :]
            clauses.append(f"level IN ({', '.join('?' for _ in levels)})")
            params.extend(levels)
        if stages:
            clauses.append(f"stage IN ({', '.join('?' for _ in stages)})")
            params.extend(stages)
        order = "DESC" if newest else "ASC"
        rows = self.db.rows(
            f"SELECT {_LOG_COLUMNS} FROM log_records WHERE {' AND '.join(clauses)} "
            f"ORDER BY id {order} LIMIT ?",
            (*params, limit),
        )
        self.db.end_read()
        if newest:
            rows.reverse()
        return [LogView(*r) for r in rows]

    def _views(
        self, rows: Sequence[tuple[Any, ...]], with_definition: bool = False
    ) -> list[SessionView]:
        db = self.db
        stages = _stages_for(db, [r[0] for r in rows])
        db.end_read()
        now = time.time()
        views = []
        for r in rows:
            (sid, name, workflow, state, reason, version, created, updated, started) = r[:9]
            finished, host, pid, heartbeat, queued, metadata, params, lease = r[9:17]
            views.append(
                SessionView(
                    id=sid,
                    name=name,
                    workflow_id=workflow,
                    status=state,
                    reason=reason,
                    version=version,
                    created_at=created,
                    updated_at=updated,
                    started_at=started,
                    finished_at=finished,
                    runner_host=host,
                    runner_pid=pid,
                    heartbeat_at=heartbeat,
                    queued=bool(queued),
                    metadata=db.json(metadata) or {},
                    stages=tuple(stages.get(sid, ())),
                    orphaned=is_orphaned(state, host, pid, heartbeat, now, self.stale_after),
                    definition=db.json(r[17]) if with_definition else None,
                    params=db.json(params) or {},
                    runner_lease=lease,
                )
            )
        return views


def _where(
    status: str | tuple[str, ...] | None, workflow_id: str | None
) -> tuple[str, tuple[Any, ...]]:
    clauses: list[str] = []
    params: list[Any] = []
    if isinstance(status, tuple):
        if status:  # none given: no filter, as SessionFilter(statuses=()) on the ORM path
            clauses.append(f"status IN ({', '.join('?' for _ in status)})")
            params.extend(status)
    elif status:
        clauses.append("status = ?")
        params.append(status)
    if workflow_id:
        clauses.append("workflow_id = ?")
        params.append(workflow_id)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), tuple(params)


def _stages_for(db: DirectStore, ids: Sequence[str]) -> dict[str, list[StageView]]:
    by_session: dict[str, list[StageView]] = defaultdict(list)
    for start in range(0, len(ids), _IDS_PER_QUERY):
        chunk = ids[start : start + _IDS_PER_QUERY]
        marks = ", ".join("?" for _ in chunk)
        for r in db.rows(
            f"SELECT {_STAGE_COLUMNS} FROM stage_instances WHERE session_id IN ({marks}) "
            "ORDER BY session_id, position",
            tuple(chunk),
        ):
            by_session[r[0]].append(
                StageView(
                    id=r[1],
                    name=r[2],
                    stage_type=r[3],
                    status=r[4],
                    progress=r[5],
                    attempt=r[6],
                    exit_code=r[7],
                    error=r[8],
                    started_at=r[9],
                    finished_at=r[10],
                    config=db.json(r[11]) or {},
                    pid=r[12],
                    pid_start=r[13],
                    host=r[14],
                    version=r[15],
                    outputs=db.json(r[16]) or {},
                    updated_at=r[17],
                )
            )
    return by_session
