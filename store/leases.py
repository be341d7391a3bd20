"""Runner leases: which runner owns a session, its heartbeats, and the queue of sessions
workers claim (docs/ARCHITECTURE.md §2, §9).

A runner owns a session by recording its host and pid on the session row (the ``start``
transition) and keeps it by beating; once the heartbeat is stale, or its pid is dead on its
own host (:mod:`store.liveness`), another runner may take the session over. Every claim also
writes a new token (``runner_lease``: the version the claim wrote); the runner's managers
carry host, pid and token as their :class:`~store.changes.Lease`, and each of their writes
is conditioned on it (see :mod:`store.changes`). Ownership bookkeeping writes no event: it
is not a user operation.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Row, bindparam, or_, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from store._driver import rows_on_driver
from store.changes import MAX_RETRIES, Lease, SessionChange
from store.errors import ConcurrentModification, InvalidTransition, RunnerConflict, SessionNotFound
from store.identity import local_host
from store.liveness import runner_gone
from store.models import FlowSession
from store.sessions import STATE_COLUMNS, SessionOperations
from store.status import SessionOp, SessionStatus

_T = FlowSession.__table__  # type: ignore[attr-defined]


#: The heartbeat's write, without and with a lease (see ``_claim_is``): built once, run on
#: the driver, since every live runner makes it every HEARTBEAT_INTERVAL.
_BEAT = (
    update(_T)
    .where(
        _T.c.id == bindparam("sid"),
        _T.c.runner_pid == bindparam("pid"),
        _T.c.runner_host == bindparam("host"),
    )
    .values(heartbeat_at=bindparam("now"))
)
_BEATS = {
    False: _BEAT,
    True: _BEAT.where(_T.c.id == bindparam("lease_sid"), _T.c.runner_lease == bindparam("token")),
}

_QUEUE_QUERIES: dict[tuple[str, bool], Any] = {}


def _queue_query(dialect: str, by_workflow: bool) -> Any:
    """The candidates of a claim, oldest first: queued, unfinished, PENDING or ACTIVE, and
    no runner, a stale one or one of this host (whose liveness the caller checks by pid).
    Built once per dialect and filter (see ``store.sessions``: a statement built anew per
    call costs most of a claim's time in Python); the values are bound parameters."""
    key = (dialect, by_workflow)
    query = _QUEUE_QUERIES.get(key)
    if query is None:
        query = (
            select(_T.c.id, *STATE_COLUMNS)
            .where(
                _T.c.queued,
                _T.c.finished_at.is_(None),  # with queued: the partial index (0002)
                # bound one by one (not a list parameter): the claim runs on the driver
                _T.c.status.in_([bindparam("pending"), bindparam("active")]),
                or_(
                    _T.c.runner_pid.is_(None),
                    _T.c.heartbeat_at.is_(None),
                    _T.c.heartbeat_at < bindparam("stale_before"),
                    _T.c.runner_host == bindparam("this_host"),
                ),
            )
            .order_by(_T.c.created_at, _T.c.id)
            .limit(bindparam("batch"))
        )
        if by_workflow:
            query = query.where(_T.c.workflow_id == bindparam("workflow_id"))
        if dialect == "postgresql":
            # concurrent workers look at different rows
            query = query.with_for_update(skip_locked=True)
        query = _QUEUE_QUERIES[key] = query
    return query


class RunnerLeases(SessionOperations):
    """Session operations plus the runner's claim, heartbeat and release, and the queue."""

    def start_session(
        self,
        session_id: str,
        *,
        runner_host: str | None = None,
        runner_pid: int | None = None,
        expected_version: int | None = None,
    ) -> SessionChange:
        """A runner claims the session: PENDING -> ACTIVE, or takes over an ACTIVE one whose
        runner is gone. Refused with :class:`RunnerConflict` while another runner lives.
        The claim writes a new token: the returned version is it (see :meth:`lease_of`).

        A manager with a lease does not claim: its runner goes on with the claim it holds
        (a session of its resumed before it ever started), the token kept, and a session
        no longer held by that lease raises :class:`~store.errors.LeaseLost`."""
        lease = self.lease
        if lease is not None:
            runner_host, runner_pid = lease.host, lease.pid
        host = runner_host or self.host
        pid = runner_pid or self.pid

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            live = cur.runner_pid is not None and not self._orphaned(cur)
            if cur.status == SessionStatus.PENDING and cur.runner_pid is not None:
                live = not self._runner_gone(
                    cur.runner_host, cur.runner_pid, cur.heartbeat_at, time.time()
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
            claim=lease is None,
        )

    @staticmethod
    def lease_of(change: SessionChange, runner_host: str, runner_pid: int) -> Lease:
        """The lease a claim (:meth:`start_session`, :meth:`claim_queued`) gave the runner
        ``runner_host``/``runner_pid``: its token is the version the claim wrote."""
        return Lease(change.session_id, runner_host, runner_pid, change.version)

    # -- runner bookkeeping (no events: these are not user operations) ------------------------

    def heartbeat(self, session_id: str, *, runner_host: str, runner_pid: int) -> bool:
        """Refresh the runner's heartbeat; False if the session is gone or another runner
        owns it now (the caller must then stop). With a lease, also False once the claim
        is not the lease's (the session was claimed again, even under this host and pid)."""
        lease = self.lease
        params: dict[str, Any] = {
            "sid": session_id,
            "pid": runner_pid,
            "host": runner_host,
            "now": time.time(),
        }
        if lease is not None:
            params.update(lease_sid=lease.session_id, token=lease.token)
        _, changed = self._on_driver(_BEATS[lease is not None], params)
        return changed == 1

    def release_runner(self, session_id: str, *, runner_host: str, runner_pid: int) -> bool:
        """The runner is exiting: forget it, so the session is not shown orphaned. False
        (nothing written) when it is not that runner's any more (with a lease: not the
        lease's claim)."""
        result = self._conn().execute(
            update(_T)
            .where(*self._claim_is(session_id, runner_host, runner_pid))
            .values(runner_pid=None, runner_host=None, runner_lease=None, heartbeat_at=None)
        )
        self.session.commit()
        return result.rowcount == 1

    def _claim_is(self, session_id: str, host: str, pid: int) -> list[ColumnElement[bool]]:
        """The session's row records the claim of ``host``/``pid`` (and, with a lease, the
        lease's token: a runner's own host and pid are not enough once the session was
        claimed again)."""
        clauses = [_T.c.id == session_id, _T.c.runner_pid == pid, _T.c.runner_host == host]
        lease = self.lease
        if lease is not None:
            clauses += [_T.c.id == lease.session_id, _T.c.runner_lease == lease.token]
        return clauses

    # -- queued work (`vc flow worker`, docs/ARCHITECTURE.md §9) -----------------------------------

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
        host = runner_host or self.host
        pid = runner_pid or self.pid
        skip: set[str] = set()
        for _ in range(MAX_RETRIES):
            now = time.time()
            conn = self._conn()
            query = _queue_query(conn.dialect.name, workflow_id is not None)
            params: dict[str, Any] = {
                "stale_before": now - self.stale_after,
                "this_host": local_host(),
                "batch": batch,
                "pending": SessionStatus.PENDING.value,
                "active": SessionStatus.ACTIVE.value,
            }
            if workflow_id is not None:
                params["workflow_id"] = workflow_id
            if skip:  # rare (lost races, live runners): a list parameter, SQLAlchemy's way
                rows = conn.execute(query.where(_T.c.id.not_in(sorted(skip))), params).all()
            else:
                rows = rows_on_driver(conn, query, params)
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
                    claim=True,
                    known=row,  # read (on PostgreSQL: locked) by the query above
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
            values={
                "queued": True,
                "runner_host": None,
                "runner_pid": None,
                "runner_lease": None,
                "heartbeat_at": None,
            },
            check=check,
        )

    def _runner_gone(
        self,
        runner_host: str | None,
        runner_pid: int | None,
        heartbeat_at: float | None,
        now: float,
    ) -> bool:
        """:func:`store.liveness.runner_gone` with this manager's stale limit."""
        return runner_gone(runner_host, runner_pid, heartbeat_at, now, self.stale_after)
