"""Session operations: creation, reads and every user-facing state change (the state table:
docs/ARCHITECTURE.md §2).

Each change is :meth:`SessionOperations._transition`: read the session, check the state
machine of :mod:`store.status`, write conditioned on the version read, then the event, in
one transaction. Runner claims, heartbeats and the queue build on this in
:mod:`store.leases`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import JSON, Row, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from store._driver import first_row_on_driver, rows_changed
from store.changes import HOLDS, MAX_RETRIES, ManagerBase, SessionChange, holds
from store.errors import (
    ConcurrentModification,
    GateRefused,
    InvalidTransition,
    SessionNotFound,
)
from store.gates import approval_resumes, gate_of_reason, pick_gate
from store.liveness import is_orphaned
from store.models import FlowEvent, FlowSession, LogRecord, StageInstance
from store.new_session import NewSession, new_session
from store.records import SESSION_CATEGORY, STAGE_CATEGORY, refusal
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
from store.views import compute_progress

if TYPE_CHECKING:
    from store.definitions import WorkflowDefinition


_T = FlowSession.__table__  # type: ignore[attr-defined]
_ST = StageInstance.__table__  # type: ignore[attr-defined]
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
_LOG = LogRecord.__table__  # type: ignore[attr-defined]

#: What the ``check`` of a transition sees; returns why the operation is refused, or None.
Check = Callable[[Connection, str, Row[Any]], str | None]
#: What a transition does besides the session row, after it (its session row is locked);
#: returns a change of its own to publish once committed (a gate it passed), or None.
After = Callable[[Connection, str, float], "SessionChange | None"]

# Statements built once: SQLAlchemy memoizes their cache keys and compiled forms, which is
# most of what keeps a transition cheap (building a new expression per call costs ~3x).
_READ_STATUS = select(_T.c.status, _T.c.version, _T.c.reason).where(_T.c.id == bindparam("sid"))
#: What a transition decides on (``known`` rows passed to it have these columns).
STATE_COLUMNS = (
    _T.c.status,
    _T.c.reason,
    _T.c.version,
    _T.c.started_at,
    _T.c.runner_host,
    _T.c.runner_pid,
    _T.c.heartbeat_at,
    _T.c.runner_lease,
)
_READ_STATE = select(*STATE_COLUMNS).where(_T.c.id == bindparam("sid"))
_READ_STATE_AND_OPEN_STAGES = select(
    *STATE_COLUMNS,
    select(func.count())
    .where(_ST.c.session_id == _T.c.id, _ST.c.status != StageStatus.COMPLETED)
    .scalar_subquery()
    .label("open_stages"),
).where(_T.c.id == bindparam("sid"))
_UPDATES: dict[tuple[tuple[str, ...], bool], Any] = {}
#: Session columns whose values need SQLAlchemy's type processing (the rest go straight to
#: the driver: store._driver).
_JSON_COLUMNS = frozenset(c.name for c in _T.c if isinstance(c.type, JSON))
#: The session's waiting gates (manual stages PAUSED), in position order.
_WAITING_GATES = (
    select(_ST.c.id, _ST.c.name, _ST.c.status, _ST.c.version, _ST.c.attempt)
    .where(
        _ST.c.session_id == bindparam("sid"),
        _ST.c.stage_type == "manual",
        _ST.c.status == GATE_PASS[0],
    )
    .order_by(_ST.c.position)
)


def _update_statement(columns: tuple[str, ...], fenced: bool = False) -> Any:
    """``UPDATE flow_sessions SET <columns> WHERE id = :sid AND version = :expected``,
    cached per column set; ``fenced``: also ``AND`` the lease's claim (store.changes.HOLDS).
    ``started_at`` keeps an earlier value (first start wins)."""
    stmt = _UPDATES.get((columns, fenced))
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
        if fenced:
            stmt = stmt.where(*HOLDS)
        _UPDATES[(columns, fenced)] = stmt
    return stmt


def move_stages_of(
    conn: Connection, sid: str, now: float, where: ColumnElement[bool], **values: Any
) -> None:
    """Set ``values`` on the session's stages that match ``where``, each stage's version
    bumped: what abort (open stages fail) and retry (unfinished stages back to PENDING) do
    to a session's stages, inside the session's transition."""
    conn.execute(
        update(_ST)
        .where(_ST.c.session_id == sid, where)
        .values(updated_at=now, version=_ST.c.version + 1, **values)
    )


class SessionOperations(ManagerBase):
    """Sessions: creation, reads and the state changes a user asks for."""

    CATEGORY = SESSION_CATEGORY

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
        max_parallel: int | None = None,
    ) -> FlowSession:
        """A PENDING session with a snapshot of ``definition`` and one PENDING stage
        instance per stage of it (none when no definition is given: add them with
        :meth:`StageManager.create_stage`).

        ``params`` are the values of the workflow's parameters, as text (a command line)
        or typed (``{"shards": 8}``); declared defaults fill the rest. A value the workflow
        does not accept raises :class:`~store.errors.ParamError` and nothing is created.

        ``runner`` (host, pid): the session is claimed by that runner in the same
        transaction (`vc flow run` of a new session): ACTIVE, with the ``create`` and the
        runner's ``start`` event, as ``start_session`` right after would leave it, in
        one commit. Its ``started_at`` then equals its ``created_at``: no runner ran it
        before.

        ``max_parallel``: how many of its stages may run at once, in place of the
        workflow's ``max_parallel`` (`vc flow run --max-parallel N`). It is written into the
        session's definition snapshot, where every runner of the session reads it
        (:func:`store.graph.max_parallel`): a detached runner, a worker, a takeover. A value
        a workflow file could not hold (below 1, above
        :data:`store.definitions.MAX_PARALLEL`) raises ValueError and nothing is created.
        (A ``definition`` mapping without ``fail_fast`` is a snapshot from before stages
        ran in parallel: its sessions run one stage at a time whatever this says.)"""
        return self.insert_session(
            new_session(
                workflow_id,
                name=name,
                metadata=metadata,
                definition=definition,
                queued=queued,
                params=params,
                runner=runner,
                max_parallel=max_parallel,
            )
        )

    def insert_session(self, new: NewSession) -> FlowSession:
        """Write the rows of :func:`store.new_session.new_session` in one transaction (what
        the driver path's :class:`store.direct_create.DirectCreate` writes too)."""
        conn = self._conn()
        conn.execute(insert(_T), new.session)
        if new.stages:
            conn.execute(insert(_ST), new.stages)
        makers: dict[str | None, SessionOperations] = {None: self}
        for change, actor in new.changes:
            if actor not in makers:
                makers[actor] = type(self)(
                    self.session,
                    actor=actor,
                    integration=self.integration,
                    stale_after=self.stale_after,
                    log_in_transaction=self.log_in_transaction,
                )
            at = new.session["created_at"]
            makers[actor]._event(
                conn, change.session_id, change.op, change.from_status, change.to_status, at
            )
        stored = self._stores_lines() and self._rows_stored(
            [
                row
                for change, actor in new.changes
                for row in makers[actor]._log_rows([(change, self.CATEGORY)])
            ]
        )
        self.session.commit()
        for change, actor in new.changes:
            makers[actor]._committed(change, self.CATEGORY, stored=stored)
        row = dict(new.session)
        row["meta"] = row.pop("metadata")
        return FlowSession(**row)

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

    def _read_state(self, conn: Connection, sid: str, read: Any = _READ_STATE) -> Any:
        row = first_row_on_driver(conn, read, {"sid": sid})  # plain columns only
        if row is None:
            if self.lease is not None:  # deleted under its runner: its lease went with it
                self.session.rollback()
                raise self._lease_lost(sid, None)
            raise SessionNotFound(f"no session matches {sid!r}")
        return row

    def _orphaned(self, cur: Row[Any]) -> bool:
        """Is the session of state row ``cur`` (see :meth:`_read_state`) orphaned?"""
        return is_orphaned(
            cur.status,
            cur.runner_host,
            cur.runner_pid,
            cur.heartbeat_at,
            stale_after=self.stale_after,
        )

    def _refuse(self, sid: str, op: SessionOp, cur: Any, why: str = "") -> InvalidTransition:
        """The refusal of ``op`` on the session of state row ``cur``."""
        return refusal(sid, op, cur.status, why, reason=cur.reason)

    def _transition(
        self,
        session_id: str,
        op: SessionOp,
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        values: Mapping[str, Any] | None = None,
        check: Check | None = None,
        after: After | None = None,
        claim: bool = False,
        known: Any = None,
        read: Any = _READ_STATE,
    ) -> SessionChange:
        """Apply ``op`` atomically: read, check the state machine (and ``check``), write
        conditioned on the version read, then ``after`` and the event. A lost race re-reads
        and re-checks, unless the caller pinned ``expected_version``, which then raises.

        With a lease (store.changes) the write is also conditioned on it, in the same
        UPDATE, and a session whose claim is not the lease's any more raises
        :class:`~store.errors.LeaseLost` before anything else is looked at. ``claim``: the
        operation is a runner's claim, whose token (``runner_lease``) is the version it
        writes. ``known``: the session's state row (the columns of ``_READ_STATE``) as the
        caller read it in this transaction; the first try decides on it instead of reading
        again (the write is conditioned on its version all the same). ``read``: the query of
        that row, when ``check`` needs more columns than ``_READ_STATE``'s."""
        sid = self.resolve_session_id(session_id)
        row_def = SESSION_TRANSITIONS[op]
        lease = None if claim else self.lease  # a claim is what gives a lease
        for _ in range(MAX_RETRIES):
            conn = self._conn()
            cur = known if known is not None else self._read_state(conn, sid, read)
            known = None
            if lease is not None and not lease.held_by(
                sid, cur.runner_host, cur.runner_pid, cur.runner_lease
            ):
                self.session.rollback()
                raise self._lease_lost(sid, (cur.runner_host, cur.runner_pid, cur.runner_lease))
            if expected_version is not None and cur.version != expected_version:
                self.session.rollback()
                raise ConcurrentModification(
                    f"session {sid[:12]} changed meanwhile (version {cur.version}, "
                    f"expected {expected_version}); reload and try again"
                )
            if cur.status not in row_def.sources:
                self.session.rollback()
                raise self._refuse(sid, op, cur)
            if check is not None:
                why = check(conn, sid, cur)
                if why:
                    self.session.rollback()
                    raise self._refuse(sid, op, cur, why)
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
            if claim:
                new_values["runner_lease"] = cur.version + 1
            params = {f"v_{k}": v for k, v in new_values.items()}
            params.update(sid=sid, expected=cur.version)
            if lease is not None:
                params.update(lease.params())
            statement = _update_statement(tuple(sorted(new_values)), lease is not None)
            on_driver = _JSON_COLUMNS.isdisjoint(new_values)
            if rows_changed(conn, statement, params, on_driver=on_driver) != 1:
                self.session.rollback()
                if lease is not None:
                    self._check_lease()  # raises LeaseLost if the claim changed meanwhile
                if expected_version is not None:
                    raise ConcurrentModification(
                        f"session {sid[:12]} changed meanwhile; reload and try again"
                    )
                continue
            side = None if after is None else after(conn, sid, now)
            self._event(conn, sid, op, cur.status, target, now, reason)
            change = SessionChange(sid, op, cur.status, target, cur.version + 1, reason)
            logged = [(side, STAGE_CATEGORY)] if side is not None else []
            self._commit_logged([*logged, (change, self.CATEGORY)])
            return change
        raise ConcurrentModification(f"session {sid[:12]} is changing too fast; try again")

    def pause(
        self,
        session_id: str,
        *,
        reason: str | None = None,
        expected_version: int | None = None,
        at_gate: str | None = None,
    ) -> SessionChange:
        """ACTIVE (or PENDING) -> PAUSED. ``at_gate``: the runner's pause at a gate (reason
        ``waiting: <gate>``), refused (:class:`InvalidTransition`) unless that gate still
        waits, read in the same transaction: an approval that lands first bumps the
        session's version, so the conditional write reads again and refuses, rather than
        leave the session paused at a gate already passed."""

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            if at_gate is None or any(g.name == at_gate for g in self._waiting_gates(conn, sid)):
                return None
            return f"gate {at_gate} no longer waits"

        return self._transition(
            session_id,
            SessionOp.PAUSE,
            reason=reason,
            expected_version=expected_version,
            check=check,
        )

    def resume(self, session_id: str, *, expected_version: int | None = None) -> SessionChange:
        """PAUSED -> ACTIVE (PENDING if it never started). An ACTIVE session may also be
        "resumed" when it is orphaned: the state stays, and the caller starts a runner.

        A session PAUSED at a manual gate (reason ``waiting: <gate>``, the gate PAUSED) has
        that gate passed in the same transaction, as :meth:`approve` passes it (event
        ``approve`` before the ``resume``): the resume holds whether a runner waits at the
        gate or has crashed meanwhile."""

        read: list[Row[Any]] = []

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            read[:] = [cur]
            if (
                cur.status == SessionStatus.ACTIVE
                and not self._orphaned(cur)
                and cur.runner_pid is not None
            ):
                return "its runner is alive"
            return None

        def after(conn: Connection, sid: str, now: float) -> SessionChange | None:
            cur = read[0]
            gate = gate_of_reason(cur.reason) if cur.status == SessionStatus.PAUSED else None
            if gate is None:
                return None
            # Read with the session row locked: no stage move of this session comes between.
            row = next((g for g in self._waiting_gates(conn, sid) if g.name == gate), None)
            return None if row is None else self._pass_gate(conn, sid, row, now)

        return self._transition(
            session_id,
            SessionOp.RESUME,
            expected_version=expected_version,
            check=check,
            after=after,
        )

    def approve(self, session_id: str, gate: str | None = None) -> SessionChange:
        """Pass a waiting manual gate of the session (a ``manual`` stage PAUSED): ``gate``,
        or the only one waiting. In one transaction: the gate goes PAUSED -> COMPLETED
        (event ``approve``, with who did it); a session PAUSED at a gate (reason
        ``waiting: <gate>``, whichever gate: :func:`store.gates.approval_resumes`) resumes,
        with its ``resume`` event; any other session keeps its state, its row's version
        bumped so that its runner hears of the change.

        Refused (:class:`InvalidTransition`, nothing changed) when the session has ended,
        when no gate waits, when ``gate`` is not one of those waiting (the message names
        them), and when ``gate`` is None while several wait. Returns the change of the
        session: op ``approve``, its state before and after, ``stage`` the gate passed."""
        sid = self.resolve_session_id(session_id)
        op = SessionOp.APPROVE
        for _ in range(MAX_RETRIES):
            conn = self._conn()
            cur = self._read_state(conn, sid)
            if cur.status not in SESSION_TRANSITIONS[op].sources:
                self.session.rollback()
                raise self._refuse(sid, op, cur)
            waiting = self._waiting_gates(conn, sid)
            names = [g.name for g in waiting]
            picked = pick_gate(sid[:12], names, gate)
            if isinstance(picked, str):
                self.session.rollback()
                raise GateRefused(picked, cur.status, allowed_session_ops(cur.status), names)
            row = waiting[picked]
            name = row.name
            resumes = approval_resumes(cur.status, cur.reason)
            target = cur.status
            now = time.time()
            values: dict[str, Any] = {"version": cur.version + 1, "updated_at": now}
            if resumes:
                target = session_target(SessionOp.RESUME, cur.status, cur.started_at is not None)
                values.update(status=target, reason=None)
            params = {f"v_{k}": v for k, v in values.items()}
            params.update(sid=sid, expected=cur.version)
            if conn.execute(_update_statement(tuple(sorted(values))), params).rowcount != 1:
                self.session.rollback()
                continue
            passed = self._pass_gate(conn, sid, row, now)
            if passed is None:  # moved since it was read: decide again
                self.session.rollback()
                continue
            if resumes:
                self._event(conn, sid, SessionOp.RESUME, cur.status, target, now)
            change = SessionChange(sid, op, cur.status, target, cur.version + 1, stage=name)
            # The gate's line says who approved it; the session gets a line of its own only
            # when the approval resumes it (an unchanged status tagged with the gate read
            # as if the gate went back).
            logged = [(passed, STAGE_CATEGORY)]
            if resumes:
                told = SessionChange(sid, SessionOp.RESUME, cur.status, target, change.version)
                logged.append((told, self.CATEGORY))
            self._commit_logged(logged)
            return change
        raise ConcurrentModification(f"session {sid[:12]} is changing too fast; try again")

    def _waiting_gates(self, conn: Connection, sid: str) -> list[Any]:
        """The session's manual stages that are PAUSED (waiting), in position order: rows
        of id, name, status, version and attempt."""
        return list(conn.execute(_WAITING_GATES, {"sid": sid}).all())

    def _pass_gate(
        self, conn: Connection, sid: str, row: Row[Any], now: float
    ) -> SessionChange | None:
        """Move the gate ``row`` (read by :meth:`_waiting_gates`) PAUSED -> COMPLETED by
        the stage table, with its ``approve`` event, in the caller's transaction. None
        when the stage changed since it was read (nothing written)."""
        state = StageState(sid, row.name, row.status, row.version, row.attempt)
        plan = plan_stage_move(state, MoveRequest(GATE_PASS[1]), now)
        if not isinstance(plan, MovePlan):
            raise plan.error()
        moved = conn.execute(
            update(_ST)
            .where(_ST.c.id == row.id, _ST.c.version == row.version)
            .values(**plan.values)
        )
        if moved.rowcount != 1:
            return None
        op = SessionOp.APPROVE
        self._event(conn, sid, op, row.status, GATE_PASS[1], now, stage=row.name)
        return SessionChange(sid, op, row.status, GATE_PASS[1], row.version + 1, stage=row.name)

    def abort(
        self, session_id: str, *, reason: str = "aborted", expected_version: int | None = None
    ) -> SessionChange:
        """FAILED with reason ``aborted``; its running or paused stages fail with it (the
        runner, which sees the change, kills their processes)."""

        def after(conn: Connection, sid: str, now: float) -> None:
            open_stage = _ST.c.status.in_([StageStatus.ACTIVE, StageStatus.PAUSED])
            move_stages_of(
                conn, sid, now, open_stage, status=StageStatus.FAILED, error=reason, finished_at=now
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
        """ACTIVE -> COMPLETED once every stage is, its runner forgotten in the same write
        (the runner that completes it has nothing left to release). ``reason``: what the
        user should know all the same (e.g. log lines that could not be written)."""

        def check(conn: Connection, sid: str, cur: Row[Any]) -> str | None:
            if cur.open_stages == 0:
                return None  # counted in the read the decision is made on
            names = conn.execute(
                select(_ST.c.name).where(
                    _ST.c.session_id == sid, _ST.c.status != StageStatus.COMPLETED
                )
            ).all()
            return "stages not completed: " + ", ".join(r.name for r in names[:5])

        # One statement reads the state and counts the stages not completed: the common
        # case (nothing open) needs no second look; a refusal reads their names.
        return self._transition(
            session_id,
            SessionOp.COMPLETE,
            reason=reason,
            expected_version=expected_version,
            values={
                "finished_at": time.time(),
                "runner_pid": None,
                "runner_host": None,
                "runner_lease": None,
                "heartbeat_at": None,
            },
            check=check,
            read=_READ_STATE_AND_OPEN_STAGES,
        )

    def retry(self, session_id: str, *, expected_version: int | None = None) -> SessionChange:
        """FAILED -> PENDING; failed and aborted stages reset to PENDING (attempt kept; their
        error, exit code and end forgotten: the events keep them), COMPLETED stages kept."""

        def after(conn: Connection, sid: str, now: float) -> None:
            unfinished = _ST.c.status != StageStatus.COMPLETED
            move_stages_of(
                conn,
                sid,
                now,
                unfinished,
                status=StageStatus.PENDING,
                progress=0.0,
                error=None,
                exit_code=None,
                finished_at=None,
            )

        return self._transition(
            session_id,
            SessionOp.RETRY,
            expected_version=expected_version,
            values={
                "finished_at": None,
                "runner_pid": None,
                "runner_host": None,
                "runner_lease": None,
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
        for _ in range(MAX_RETRIES):
            change = self._delete_once(sid, force)
            if change is not None:
                return change
        raise ConcurrentModification(f"session {sid[:12]} is changing too fast; try again")

    def _delete_once(self, sid: str, force: bool) -> SessionChange | None:
        """One attempt: None when the session changed between the read and the delete (a
        runner claimed it meanwhile), so the caller decides again on fresh state."""
        conn = self._conn()
        cur = self._read_state(conn, sid)
        lease = self.lease
        if lease is not None and not lease.held_by(
            sid, cur.runner_host, cur.runner_pid, cur.runner_lease
        ):
            self.session.rollback()
            raise self._lease_lost(sid, (cur.runner_host, cur.runner_pid, cur.runner_lease))
        live = cur.runner_pid is not None and not self._orphaned(cur)
        if cur.status == SessionStatus.ACTIVE and live:
            if not force:
                self.session.rollback()
                raise InvalidTransition(
                    f"cannot delete session {sid[:12]}: it is ACTIVE with a live runner "
                    f"(pid {cur.runner_pid} on {cur.runner_host}); pause or abort it first",
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
            .where(*([holds(lease)] if lease is not None else []))
            .values(version=cur.version + 1)
        )
        if claimed.rowcount != 1:
            self.session.rollback()
            if lease is not None:
                self._check_lease()
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

    # -- the runner's poll ----------------------------------------------------------------------

    def state(self, session_id: str) -> tuple[str, int, str | None] | None:
        """(status, version, reason) of a full id, or None if it is gone: the runner's
        cheap poll."""
        row, _ = self._on_driver(_READ_STATUS, {"sid": session_id})
        return None if row is None else (row[0], row[1], row[2])
