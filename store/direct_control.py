"""pause, resume, abort and approve on the driver path (:mod:`store.direct`).

The same operations as :class:`store.sessions.SessionOperations`, for a user's command (no
lease, no pinned version): read the session, check the state table of :mod:`store.status`,
write conditioned on the version read, then the stages and the event rows, in one
transaction. The refusals and log lines come from :mod:`store.records`, the gate's move
from :func:`store.stage_moves.plan_stage_move`; ``tests/store/test_direct_parity.py``
runs every operation from every state both ways and compares the rows, events and
refusals.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from store.direct import DirectStore
from store.direct_reads import resolve_session_id
from store.errors import (
    ConcurrentModification,
    GateRefused,
    SessionNotFound,
    StoreUnavailable,
)
from store.gates import approval_resumes, gate_of_reason, pick_gate
from store.identity import local_host, local_user
from store.liveness import STALE_AFTER, awaits_worker, is_orphaned, runner_lost
from store.records import (
    EVENT_COLUMNS,
    INSERT_LOGS,
    MAX_RETRIES,
    SESSION_CATEGORY,
    STAGE_CATEGORY,
    SessionChange,
    change_lines,
    refusal,
)
from store.stage_moves import MovePlan, MoveRequest, StageState, plan_stage_move
from store.status import (
    GATE_PASS,
    SESSION_TRANSITIONS,
    SessionOp,
    SessionStatus,
    StageStatus,
    allowed_session_ops,
    session_target,
)

_READ_STATE = (
    "SELECT status, reason, version, started_at, runner_host, runner_pid, heartbeat_at, "
    "name, workflow_id, queued FROM flow_sessions WHERE id = ?"
)
_WAITING_GATES = (
    "SELECT id, name, status, version, attempt FROM stage_instances "
    "WHERE session_id = ? AND stage_type = 'manual' AND status = ? ORDER BY position"
)
_INSERT_EVENT = (
    f"INSERT INTO flow_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)
_OPEN_STAGES = (str(StageStatus.ACTIVE), str(StageStatus.PAUSED))
_FAIL_OPEN_STAGES = (
    "UPDATE stage_instances SET status = ?, error = ?, finished_at = ?, updated_at = ?, "
    "version = version + 1 WHERE session_id = ? AND status IN (?, ?)"
)


class CommitUnconfirmed(StoreUnavailable):
    """The commit of an operation failed in a way that does not say whether it landed."""


def commit_once(db: DirectStore, what: str, sid: str) -> None:
    """Commit ``what``; a commit whose answer never came may have landed (PostgreSQL), so it
    is reported as such and never tried again (a retry could apply it twice)."""
    try:
        db.commit()
    except db.errors as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise CommitUnconfirmed(
            f"the store did not confirm {what} ({first}); "
            f"'vc flow session show {sid[:12]}' says whether it was recorded"
        ) from exc


@dataclass(frozen=True)
class _State:
    status: str
    reason: str | None
    version: int
    started_at: float | None
    runner_host: str | None
    runner_pid: int | None
    heartbeat_at: float | None
    name: str
    workflow_id: str
    queued: bool


@dataclass
class Outcome:
    """What an operation did, once committed: the change it answers with, every change to
    log (with its log category) in the order they happened, and the session as it is now
    (its name, workflow, and whether a live runner holds it)."""

    change: SessionChange
    logged: list[tuple[SessionChange, str]] = field(default_factory=list)
    name: str = ""
    workflow_id: str = ""
    needs_runner: bool = False
    #: A runner held the session and none is alive: nobody enforces the change, so the
    #: caller does (app.runner.orphans).
    runner_gone: bool = False
    #: Queued work no runner holds (store.liveness.awaits_worker): the next worker runs
    #: it, so no runner is needed here.
    for_workers: bool = False
    #: The runner the session recorded when the change was made (host, pid, heartbeat):
    #: whether it answers is the caller's to tell.
    runner: tuple[str | None, int | None, float | None] = (None, None, None)
    #: The log records of ``logged`` were committed with them (``log_in_transaction``).
    stored: bool = False


class DirectControl:
    """The user's state changes over one :class:`DirectStore`. ``stale_after``: seconds
    after which a runner's heartbeat counts as stale (``VC_STALE_AFTER``)."""

    def __init__(
        self, db: DirectStore, *, stale_after: float = STALE_AFTER, log_in_transaction: bool = False
    ) -> None:
        self.db = db
        self.stale_after = stale_after
        #: Write the changes' log records in their transaction, as a command's manager
        #: does on the full path (``store.changes.ManagerBase._commit_logged``, which says
        #: why); ``Outcome.stored`` then says they are in the store.
        self.log_in_transaction = log_in_transaction
        self.actor = local_user()
        self.host = local_host()
        self.pid = os.getpid()

    # -- reads ----------------------------------------------------------------------------

    def resolve_session_id(self, session_id: str) -> str:
        """A full id or a unique prefix of at least 4 characters -> the full id."""
        return resolve_session_id(self.db, session_id)

    def _read_state(self, sid: str) -> _State:
        row = self.db.one(_READ_STATE, (sid,))
        if row is None:
            raise SessionNotFound(f"no session matches {sid!r}")
        return _State(*row)

    def _orphaned(self, cur: _State) -> bool:
        return is_orphaned(
            cur.status,
            cur.runner_host,
            cur.runner_pid,
            cur.heartbeat_at,
            stale_after=self.stale_after,
        )

    # -- operations -----------------------------------------------------------------------

    def pause(self, session_id: str) -> Outcome:
        return self._transition(session_id, SessionOp.PAUSE)

    def resume(self, session_id: str) -> Outcome:
        return self._transition(session_id, SessionOp.RESUME)

    def abort(self, session_id: str) -> Outcome:
        return self._transition(session_id, SessionOp.ABORT, reason="aborted")

    def _transition(self, session_id: str, op: SessionOp, reason: str | None = None) -> Outcome:
        return self._retrying(session_id, op, lambda sid: self._transition_once(sid, op, reason))

    def approve(self, session_id: str, gate: str | None = None) -> Outcome:
        """:meth:`store.sessions.SessionOperations.approve`, on the driver."""
        return self._retrying(
            session_id, SessionOp.APPROVE, lambda sid: self._approve_once(sid, gate)
        )

    def _retrying(
        self, session_id: str, op: SessionOp, attempt: Callable[[str], Outcome | None]
    ) -> Outcome:
        """Run ``attempt`` on the resolved id in a write transaction, and commit what it
        did. None from it: the session changed between its read and its write (nothing
        kept), so it decides again on the session as it is now."""
        db = self.db
        sid = session_id
        for _ in range(MAX_RETRIES):
            db.write()
            try:
                sid = self.resolve_session_id(session_id)
                outcome = attempt(sid)
                if outcome is None:
                    db.rollback()
                    continue
                if self.log_in_transaction:
                    self._insert_lines(outcome)
                self._commit(sid, op)
            except BaseException:
                db.rollback()
                raise
            return outcome
        raise ConcurrentModification(f"session {sid[:12]} is changing too fast; try again")

    def _transition_once(self, sid: str, op: SessionOp, reason: str | None) -> Outcome | None:
        db = self.db
        cur = self._read_state(sid)
        if cur.status not in SESSION_TRANSITIONS[op].sources:
            raise refusal(sid, op, cur.status, reason=cur.reason)
        if (
            op == SessionOp.RESUME
            and cur.status == SessionStatus.ACTIVE
            and not self._orphaned(cur)
            and cur.runner_pid is not None
        ):
            raise refusal(sid, op, cur.status, "its runner is alive")
        target = session_target(op, cur.status, cur.started_at is not None)
        now = time.time()
        columns = ["status", "version", "updated_at", "reason"]
        values: list[Any] = [str(target), cur.version + 1, now, reason]
        if op == SessionOp.ABORT:
            columns.append("finished_at")
            values.append(now)
        assignments = ", ".join(f"{c} = ?" for c in columns)
        updated = db.changed(
            f"UPDATE flow_sessions SET {assignments} WHERE id = ? AND version = ?",
            (*values, sid, cur.version),
        )
        if updated != 1:
            return None
        logged: list[tuple[SessionChange, str]] = []
        if op == SessionOp.ABORT:
            failed, open_states = str(StageStatus.FAILED), _OPEN_STAGES
            db.changed(_FAIL_OPEN_STAGES, (failed, reason, now, now, sid, *open_states))
        gate = gate_of_reason(cur.reason) if cur.status == SessionStatus.PAUSED else None
        if op == SessionOp.RESUME and gate is not None:
            row = next((g for g in self._waiting_gates(sid) if g[1] == gate), None)
            passed = None if row is None else self._pass_gate(sid, row, now)
            if passed is not None:
                logged.append((passed, STAGE_CATEGORY))
        self._event(sid, op, cur.status, target, now, reason)
        change = SessionChange(sid, op, cur.status, target, cur.version + 1, reason)
        logged.append((change, SESSION_CATEGORY))
        gone = runner_lost(cur.runner_host, cur.runner_pid, cur.heartbeat_at, now, self.stale_after)
        needs_runner = self._needs_runner(target, cur)
        for_workers = self._for_workers(target, cur)
        runner = (cur.runner_host, cur.runner_pid, cur.heartbeat_at)
        return Outcome(
            change, logged, cur.name, cur.workflow_id, needs_runner, gone, for_workers, runner
        )

    def _approve_once(self, sid: str, gate: str | None) -> Outcome | None:
        db = self.db
        op = SessionOp.APPROVE
        cur = self._read_state(sid)
        if cur.status not in SESSION_TRANSITIONS[op].sources:
            raise refusal(sid, op, cur.status, reason=cur.reason)
        waiting = self._waiting_gates(sid)
        names = [str(g[1]) for g in waiting]
        picked = pick_gate(sid[:12], names, gate)
        if isinstance(picked, str):
            raise GateRefused(picked, cur.status, allowed_session_ops(cur.status), names)
        row = waiting[picked]
        name = str(row[1])
        resumes = approval_resumes(cur.status, cur.reason)
        target: str = cur.status
        now = time.time()
        if resumes:
            target = session_target(SessionOp.RESUME, cur.status, cur.started_at is not None)
            updated = db.changed(
                "UPDATE flow_sessions SET status = ?, reason = NULL, version = ?, "
                "updated_at = ? WHERE id = ? AND version = ?",
                (str(target), cur.version + 1, now, sid, cur.version),
            )
        else:
            updated = db.changed(
                "UPDATE flow_sessions SET version = ?, updated_at = ? WHERE id = ? AND version = ?",
                (cur.version + 1, now, sid, cur.version),
            )
        if updated != 1:
            return None
        passed = self._pass_gate(sid, row, now)
        if passed is None:  # moved since it was read: decide again
            return None
        if resumes:
            self._event(sid, SessionOp.RESUME, cur.status, target, now)
        change = SessionChange(sid, op, cur.status, target, cur.version + 1, stage=name)
        logged = [(passed, STAGE_CATEGORY)]  # as SessionOperations.approve logs it
        if resumes:
            resumed = SessionChange(sid, SessionOp.RESUME, cur.status, target, change.version)
            logged.append((resumed, SESSION_CATEGORY))
        return Outcome(
            change,
            logged,
            cur.name,
            cur.workflow_id,
            self._needs_runner(target, cur),
            for_workers=self._for_workers(target, cur),
        )

    # -- parts ----------------------------------------------------------------------------

    def _insert_lines(self, outcome: Outcome) -> None:
        """The log records of the outcome's changes, in its transaction, under a savepoint:
        on a full disk they give way to the change (``outcome.stored`` stays False, and
        the caller's log mirror stores them or notes them as missing)."""
        from store.space import is_disk_full

        now = time.time()
        rows = [
            (sid, now, level, category, stage, text.replace("\x00", "\\x00"))
            for level, category, sid, stage, text in change_lines(
                outcome.logged, self.actor, self.host, self.pid
            )
        ]
        self.db.changed("SAVEPOINT change_lines")
        try:
            self.db.insert_many(INSERT_LOGS, rows)
        except Exception as exc:
            if not is_disk_full(exc):
                raise
            self.db.changed("ROLLBACK TO SAVEPOINT change_lines")
            return
        self.db.changed("RELEASE SAVEPOINT change_lines")
        outcome.stored = True

    def _commit(self, sid: str, op: SessionOp) -> None:
        commit_once(self.db, f"the {op.value} of session {sid[:12]}", sid)

    def _needs_runner(self, target: str, cur: _State) -> bool:
        """Does the session, ACTIVE after the change, lack a live runner? (The claim
        columns were read in the change's transaction, and the change left them as they
        were.) The caller then starts one, as :func:`app.runner.launch.ensure_runner`."""
        if target != SessionStatus.ACTIVE or self._for_workers(target, cur):
            return False
        live = SessionStatus.ACTIVE  # the runner's liveness does not depend on the state
        return cur.runner_pid is None or is_orphaned(
            live, cur.runner_host, cur.runner_pid, cur.heartbeat_at, stale_after=self.stale_after
        )

    @staticmethod
    def _for_workers(target: str, cur: _State) -> bool:
        return awaits_worker(target, bool(cur.queued), cur.runner_pid)

    def _waiting_gates(self, sid: str) -> list[tuple[Any, ...]]:
        return self.db.rows(_WAITING_GATES, (sid, str(GATE_PASS[0])))

    def _pass_gate(self, sid: str, row: tuple[Any, ...], now: float) -> SessionChange | None:
        stage_id, name, status, version, attempt = row
        state = StageState(sid, name, status, version, attempt)
        plan = plan_stage_move(state, MoveRequest(GATE_PASS[1]), now)
        if not isinstance(plan, MovePlan):
            raise plan.error()
        columns = sorted(plan.values)
        assignments = ", ".join(f"{c} = ?" for c in columns)
        values = tuple(_plain(plan.values[c]) for c in columns)
        moved = self.db.changed(
            f"UPDATE stage_instances SET {assignments} WHERE id = ? AND version = ?",
            (*values, stage_id, version),
        )
        if moved != 1:
            return None
        op = SessionOp.APPROVE
        self._event(sid, op, status, GATE_PASS[1], now, stage=name)
        return SessionChange(sid, op, status, GATE_PASS[1], version + 1, stage=name)

    def _event(
        self,
        sid: str,
        op: str,
        from_status: str | None,
        to_status: str | None,
        at: float,
        reason: str | None = None,
        stage: str | None = None,
    ) -> None:
        self.db.changed(
            _INSERT_EVENT,
            (
                sid,
                stage,
                str(op),
                None if from_status is None else str(from_status),
                None if to_status is None else str(to_status),
                self.actor,
                self.host,
                self.pid,
                at,
                reason,
            ),
        )


def _plain(value: Any) -> Any:
    """A value the drivers bind as the column's own type (an enum member as its text)."""
    return str(value) if isinstance(value, str) else value
