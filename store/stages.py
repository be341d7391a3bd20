"""Stage operations: creation, moves between the stage states of :mod:`store.status`,
progress, outputs and process bookkeeping.

A move is one short transaction: read the stage, plan the move
(:func:`store.stage_moves.plan_stage_move`, pure), write the plan conditioned on the
version read, then the event. The runner's two moves per stage take the raw-driver path of
:mod:`store._driver` and may start from the state their previous move left.

The runner's manager holds its lease (:class:`store.changes.Lease`): a move then starts with
the touch of the session's row conditioned on the lease (which locks that row until the
commit), and the single-statement writes (progress, outputs, exit codes, the process) are
conditioned on it through :data:`store.changes.STAGE_FENCE`. Refused: LeaseLost, nothing
written.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Row, bindparam, func, select, update
from sqlalchemy.engine import Connection

from store._driver import execute_on_driver, rows_changed
from store.changes import HOLDS, MAX_RETRIES, STAGE_FENCE, ManagerBase, SessionChange, StageMove
from store.errors import ConcurrentModification, InvalidTransition, SessionNotFound, StageNotFound
from store.models import FlowEvent, FlowSession, StageInstance
from store.records import SESSION_CATEGORY, STAGE_CATEGORY
from store.stage_moves import (
    RETRY_OP,
    MovePlan,
    MoveRefusal,
    MoveRequest,
    StageState,
    plan_stage_move,
)
from store.status import TERMINAL, SessionOp, SessionStatus, StageStatus, allowed_session_ops

_T = FlowSession.__table__  # type: ignore[attr-defined]
_ST = StageInstance.__table__  # type: ignore[attr-defined]

# Statements built once: SQLAlchemy memoizes their cache keys and compiled forms, which is
# most of what keeps a move cheap (building a new expression per call costs ~3x).
_STAGE_UPDATES: dict[tuple[str, ...], Any] = {}
#: The stage states whose failed attempt may run again (:meth:`StageManager.note_retry`).
_RETRIABLE = frozenset({StageStatus.ACTIVE, StageStatus.PAUSED})


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
#: The same touch, only while the session's row records the lease (store.changes.HOLDS).
_TOUCH_HELD_SESSION = (
    update(_T)
    .where(_T.c.id == bindparam("sid"), *HOLDS)
    .values(updated_at=bindparam("now"))
    .returning(_T.c.status)
)
_SESSION_OF_STAGE = select(_ST.c.session_id).where(_ST.c.id == bindparam("id"))
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
#: Since the session's last ``retry`` (which resets its failed stages), per stage: how
#: many failed attempts were run again (distinct reasons, which name the attempt: a write
#: repeated after a lost answer counts once).
_RETRIES_USED = (
    select(_EV.c.stage, func.count(func.distinct(_EV.c.reason)))
    .where(
        _EV.c.session_id == bindparam("sid"),
        _EV.c.op == RETRY_OP,
        _EV.c.id
        > func.coalesce(
            select(func.max(_EV.c.id))
            .where(_EV.c.session_id == bindparam("sid"), _EV.c.op == SessionOp.RETRY.value)
            .scalar_subquery(),
            0,
        ),
    )
    .group_by(_EV.c.stage)
)
_STAGE_STATUS = select(_ST.c.status).where(_ST.c.id == bindparam("id"))


class StageManager(ManagerBase):
    """Stage instances of a session: creation, status, progress, process bookkeeping."""

    CATEGORY = STAGE_CATEGORY

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
        if self.lease is not None:
            if sid != self.lease.session_id:
                raise self._lease_lost(sid, None)
            self._touch_held(conn, time.time())
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
        self._commit_logged(
            [
                (
                    SessionChange(
                        sid, "stage.create", None, StageStatus.PENDING, 0, stage=stage_name
                    ),
                    self.CATEGORY,
                )
            ]
        )
        return stage

    def get_stage(self, stage_id: int) -> StageInstance:
        stage = self.session.get(StageInstance, stage_id, populate_existing=True)
        self.session.commit()
        if stage is None:
            raise StageNotFound(f"no stage with id {stage_id} (its session was deleted?)")
        return stage

    def stage_status(self, stage_id: int) -> str | None:
        """A stage's status as stored (None: gone), read on the driver: what a runner
        waiting at a gate polls, without loading the stage."""
        row, _ = self._on_driver(_STAGE_STATUS, {"id": stage_id})
        return None if row is None else str(row[0])

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

    def note_retry(self, stage_id: int, error: str) -> None:
        """A failed attempt of the stage runs again (its ``retries`` allow it): the event
        ``stage.retry``, the failure as its reason; nothing else changes. The retries used
        so outlive the runner: one that takes the session over (after a crash, a worker's
        hand-back, a resume) counts them (:meth:`retries_used`) instead of granting the
        stage its whole budget again. A PAUSED stage may be retried too: its process ended
        while it was stopped (killed, or exiting as the pause came), and the next attempt
        starts once the session is resumed."""
        try:
            conn = self._conn()
            now = time.time()
            held = self._touch_held(conn, now) if self.lease is not None else None
            current = self._read_stage(conn, stage_id)
            if self.lease is not None and current.session_id != self.lease.session_id:
                self.session.rollback()
                raise self._lease_lost(current.session_id, None)
            if current.status not in _RETRIABLE or held in TERMINAL:
                # aborted (or ended) meanwhile: nothing runs again
                self.session.rollback()
                state = held if held in TERMINAL else current.status
                raise InvalidTransition(
                    f"stage {current.name!r} is {current.status}: it does not run again",
                    str(state),
                    [],
                )
            self._event(
                conn,
                current.session_id,
                RETRY_OP,
                current.status,
                current.status,
                now,
                error,
                stage=current.name,
            )
            self.session.commit()
        except BaseException:
            with contextlib.suppress(Exception):
                self.session.rollback()
            raise

    def retries_used(self, session_id: str) -> dict[str, int]:
        """Per stage, the failed attempts run again since the session's last ``retry``
        (:meth:`note_retry`); stages with none are absent."""
        rows = self._conn().execute(_RETRIES_USED, {"sid": session_id}).all()
        self.session.commit()
        return {str(stage): int(count) for stage, count in rows if stage is not None}

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
            request = MoveRequest.of(
                status,
                metadata,
                error=error,
                exit_code=exit_code,
                expected_version=expected_version,
                new_attempt=new_attempt,
                attempt=attempt,
                process=process,
                finished_at=finished_at,
            )
            remembered = _remembered(stage_id, request, known)
            for _ in range(MAX_RETRIES):
                moved = self._move_once(stage_id, request, remembered)
                if moved is not None:
                    return moved
                remembered = None  # start over from the stage as stored
            raise ConcurrentModification(f"stage {stage_id} is changing too fast; try again")
        except BaseException:
            # Nothing half-done stays in the transaction for a later commit to pick up.
            with contextlib.suppress(Exception):
                self.session.rollback()
            raise

    def _move_once(
        self, stage_id: int, request: MoveRequest, remembered: StageState | None
    ) -> StageMove | None:
        """One read -> plan -> conditional update -> event transaction. None when the move
        must start over on the stage as stored: the remembered state refused it, or the
        stage changed between the read and the update."""
        conn = self._conn()
        now = time.time()
        lease = self.lease
        held_status: str | None = None
        if lease is not None:  # the lease first: nothing is decided on a session not ours
            held_status = self._touch_held(conn, now)
        current = remembered if remembered is not None else self._read_stage(conn, stage_id)
        if lease is not None and current.session_id != lease.session_id:
            self.session.rollback()
            raise self._lease_lost(current.session_id, None)
        plan = plan_stage_move(current, request, now)
        if isinstance(plan, MoveRefusal):
            self.session.rollback()
            if remembered is not None:
                return None  # decided on what the caller remembered: decide on the stored
            raise plan.error()
        if lease is None:
            session_status, started = self._touch_session(conn, current, request.target, now)
        else:
            session_status, started = self._start_if_pending(
                conn, current, request.target, now, held_status
            )
        if not self._write_plan(conn, stage_id, current.version, plan):
            self.session.rollback()
            if request.expected_version is not None:
                raise ConcurrentModification(
                    f"stage {current.name!r} changed meanwhile; reload and try again"
                )
            return None
        if plan.event is not None:
            self._event(
                conn,
                current.session_id,
                plan.event,
                current.status,
                request.target,
                now,
                request.error,
                stage=current.name,
            )
        logged = [(started, SESSION_CATEGORY)] if started is not None else []
        if plan.event is not None:
            change = SessionChange(
                current.session_id,
                plan.event,
                current.status,
                request.target,
                current.version + 1,
                request.error,
                stage=current.name,
            )
            logged.append((change, self.CATEGORY))
        self._commit_logged(logged)
        return StageMove(
            stage_id,
            current.session_id,
            request.target,
            current.version + 1,
            plan.attempt,
            session_status,
            current.name,
        )

    def _read_stage(self, conn: Connection, stage_id: int) -> StageState:
        row = conn.execute(_SELECT_STAGE_FOR_MOVE, {"id": stage_id}).first()
        if row is None:
            self.session.rollback()
            raise StageNotFound(f"no stage with id {stage_id}")
        return StageState(*row)

    def _touch_session(
        self, conn: Connection, current: StageState, target: StageStatus, now: float
    ) -> tuple[str | None, SessionChange | None]:
        """Lock the stage's session row (first, as in every session transition: one lock
        order, no deadlock between a stage update and an abort on PostgreSQL) and read its
        status; a PENDING session starts with its first ACTIVE stage. Returns the session's
        status (None if it is gone) and its start, if this move made it."""
        cursor = execute_on_driver(conn, _TOUCH_SESSION, {"sid": current.session_id, "now": now})
        touched = cursor.fetchone()
        cursor.close()
        session_status: str | None = None if touched is None else touched[0]
        return self._start_if_pending(conn, current, target, now, session_status)

    def _start_if_pending(
        self,
        conn: Connection,
        current: StageState,
        target: StageStatus,
        now: float,
        session_status: str | None,
    ) -> tuple[str | None, SessionChange | None]:
        if target == StageStatus.ACTIVE and session_status == SessionStatus.PENDING:
            started = self._start_session_for(conn, current.session_id, current.name, now)
            return SessionStatus.ACTIVE, started
        return session_status, None

    def _touch_held(self, conn: Connection, now: float) -> str:
        """The first statement of a leased manager's transaction: touch its session's row,
        only while that row records the lease. It locks the row (PostgreSQL) or takes the
        database's write lock (SQLite) until the commit, so no takeover can come between
        this check and the writes after it. Returns the session's status; raises
        :class:`~store.errors.LeaseLost` (nothing written) when the lease does not hold."""
        lease = self.lease
        assert lease is not None
        params = {"sid": lease.session_id, "now": now, **lease.params()}
        cursor = execute_on_driver(conn, _TOUCH_HELD_SESSION, params)
        touched = cursor.fetchone()
        cursor.close()
        if touched is None:
            self._check_lease()  # raises: the claim is not the lease's, or the session is gone
            raise ConcurrentModification(f"session {lease.session_id[:12]} changed; try again")
        return str(touched[0])

    def _write_refused(self, stage_id: int) -> None:
        """A fenced single-statement write changed no row: raise
        :class:`~store.errors.LeaseLost` when the lease is why (the claim changed, or the
        stage is of another session), else return (no such row, or nothing to change)."""
        self._check_lease()
        sid = self._conn().execute(_SESSION_OF_STAGE, {"id": stage_id}).scalar()
        self.session.rollback()
        assert self.lease is not None
        if sid is not None and sid != self.lease.session_id:
            raise self._lease_lost(sid, None)

    def _fenced(self, statement: Any) -> tuple[Any, dict[str, Any]]:
        """A stage row's UPDATE, conditioned on the lease when there is one, with the
        lease's parameters."""
        if self.lease is None:
            return statement, {}
        return statement.where(STAGE_FENCE), self.lease.params()

    @staticmethod
    def _write_plan(conn: Connection, stage_id: int, version: int, plan: MovePlan) -> bool:
        """The plan's UPDATE, conditioned on the version it was planned on: False when the
        stage changed since."""
        params = {f"v_{k}": v for k, v in plan.values.items()}
        params.update(stage_id=stage_id, expected=version)
        statement = _stage_update_statement(tuple(plan.values))
        on_driver = "metadata" not in plan.values  # JSON needs SQLAlchemy's processing
        return rows_changed(conn, statement, params, on_driver=on_driver) == 1

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
        statement, params = self._fenced(
            update(_ST)
            .where(_ST.c.id == stage_id)
            .values(progress=max(0.0, min(100.0, float(progress))), updated_at=now)
        )
        result = conn.execute(statement, params)
        if result.rowcount != 1 and self.lease is not None:
            self._write_refused(stage_id)
        self.session.commit()

    def record_outputs(self, stage_id: int, attempt: int, outputs: Mapping[str, str]) -> bool:
        """Store the outputs (``::output KEY=VALUE``) the stage's attempt ``attempt`` has
        reported so far, replacing what was stored: the runner writes them as they come
        and once more before the stage completes, so a later stage (or a runner taking
        over) reads them from here. No event, no version bump. False when the stage is at
        another attempt now (nothing written)."""
        statement, params = self._fenced(
            update(_ST)
            .where(_ST.c.id == stage_id, _ST.c.attempt == attempt)
            .values(outputs=dict(outputs))
        )
        result = self._conn().execute(statement, params)
        if result.rowcount != 1 and self.lease is not None:
            self._write_refused(stage_id)
            return False
        self.session.commit()
        return result.rowcount == 1

    def record_process(
        self, stage_id: int, *, pid: int | None, pid_start: int | None, host: str | None = None
    ) -> None:
        """Remember the stage's process so a later runner can clean up after a crash."""
        statement, params = self._fenced(
            update(_ST)
            .where(_ST.c.id == stage_id)
            .values(pid=pid, pid_start=pid_start, host=host or self.host)
        )
        result = self._conn().execute(statement, params)
        if result.rowcount != 1 and self.lease is not None:
            self._write_refused(stage_id)
        self.session.commit()

    def record_exit_code(self, stage_id: int, exit_code: int) -> None:
        """The exit code of a process that ended after its stage was already decided
        (aborted): kept for the record, no state change."""
        statement, params = self._fenced(
            update(_ST)
            .where(_ST.c.id == stage_id, _ST.c.exit_code.is_(None))
            .values(exit_code=exit_code)
        )
        result = self._conn().execute(statement, params)
        if result.rowcount != 1 and self.lease is not None:
            self._write_refused(stage_id)
        self.session.commit()


def _remembered(stage_id: int, request: MoveRequest, known: StageMove | None) -> StageState | None:
    """The state the caller's previous move left, when this move may start from it: that
    move was of this stage, and there is no metadata to merge (that needs the stored
    metadata) nor a version to check."""
    if (
        known is None
        or known.stage_id != stage_id
        or not known.name
        or request.metadata
        or request.expected_version is not None
    ):
        return None
    return StageState(known.session_id, known.name, known.status, known.version, known.attempt)
