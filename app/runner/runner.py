"""The runner: executes one session's stages and enforces the state written in the store
onto real processes (docs/ARCHITECTURE.md §2).

The front ends never signal processes; they write the desired state, and this loop notices
it (a cheap status poll, at most :data:`POLL_INTERVAL` apart while a stage runs and
:data:`IDLE_POLL_INTERVAL` apart otherwise, both under the design's 250 ms) and acts:

* PAUSED  -> SIGSTOP to the stage's process group (the stage holds no CPU); between stages
  the next stage simply does not start;
* ACTIVE  -> SIGCONT;
* FAILED (abort) or the session deleted -> SIGTERM, then SIGKILL after ``kill_timeout``.

Crash safety: the stage's pid and process start time are recorded right after the spawn, so
a later runner can remove what is left (never a reused pid), and finds by its environment
what was never recorded (:meth:`Runner._remove_unrecorded`). A stage is marked COMPLETED
only after its process exited 0 and its output is in the store
(:meth:`Supervision._try_complete`). A COMPLETED stage is skipped by every later runner,
whatever crashed when; an interrupted one runs again as a new attempt, never beside a copy
of itself (or stays cancelled: a fail_fast session's failure stands,
:meth:`Recovery._cleanup_leftovers`). A full store disk stops the session before its next
stage (:meth:`Runner._stop_on_full_disk`).

Ctrl-C (or SIGTERM) on a runner pauses the session instead of leaving an orphan: the running
stage is terminated (its output pipes end with this process: it could not go on unsupervised),
reset to PENDING, and the session is PAUSED with reason ``interrupted``; a resume reruns it.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from app.logging import Logging
from app.runner.attempt import (
    AttemptResult,
    Leftovers,
    RunningAttempt,
    StageOutput,
    kill_timeout_of,
)
from app.runner.attempt import config_seconds as _seconds
from app.runner.live_view import LiveView
from app.runner.manual_gates import ManualGates, checklist_suffix
from app.runner.notifications import SessionAnnouncer
from app.runner.outputs import OutputRecorder, stage_environment
from app.runner.process import StageProcess, StageStartError, wait_any
from app.runner.recovery import failure_before
from app.runner.schedule import FAILED, RUNNING, TODO, Schedule
from app.runner.stage_guard import GUARD
from app.runner.store_link import (
    LISTEN_AFTER,
    STORE_RETRY,
    Interrupted,
    Outcome,
    _permanent,
    _Persistent,
    _TakenOver,
)
from store import FlowSessionManager, StageManager
from store.changes import Lease, StageMove
from store.errors import (
    ConcurrentModification,
    InvalidTransition,
    LeaseLost,
    SessionNotFound,
    StoreError,
)
from store.failures import PermanentStoreError, StoreFailure
from store.graph import cancellation, fail_fast, instance_waits, max_parallel, stage_of
from store.identity import local_host
from store.names import matrix_variable
from store.queries import SessionView, StageView, get_session_view
from store.space import StoreSpace
from store.status import SessionStatus, StageStatus
from store.text import command_line

#: Control-loop period while a stage runs: how fast pause/resume/abort are enforced (one
#: indexed status read per poll, about 0.3% of a core).
POLL_INTERVAL = 0.05
#: Why a task stage without a command (made through the API) fails: not run as "None".
NO_COMMAND = (
    "no command to run: a task stage needs 'run' in its config "
    "(a stage without one is a manual gate: stage_type='manual')"
)

__all__ = ["NO_COMMAND", "POLL_INTERVAL", "Interrupted", "Outcome", "Runner", "checklist_suffix"]


class Runner(ManualGates, LiveView):
    """Runs one session: claims it, beats, runs its remaining stages in order, completes it.

    One instance per process and session. ``on_update`` (the foreground display) is called
    from the runner's thread after every visible change."""

    def __init__(
        self,
        factory: Callable[[], Any],
        logging: Logging,
        session_id: str,
        *,
        workspace: Path,
        only_stage: str | None = None,
        on_update: Callable[[Any], None] | None = None,
        flush_at_end: bool = True,
        hand_back_when_idle: bool = False,
    ) -> None:
        """``flush_at_end``: the run waits, at its end, until the log lines so far are in the
        store. A worker's runner does not: its worker goes on with the next session and
        its mirror stores the last lines (the session's end, the runner's notes) with its
        next batch, within ``app.log_mirror.MIRROR_INTERVAL``, where a write of their own
        would cost each session one more transaction. The lines of the stages are stored
        before the session ends either way (:meth:`_flush_logs`).

        ``hand_back_when_idle``: a worker's runner ends as soon as its session is PAUSED
        with no stage process left to hold (waiting at a manual gate, or paused between
        stages), so that the worker's slot goes to the next queued session; see
        :meth:`_hand_back`."""
        self.flush_at_end = flush_at_end
        self.hand_back_when_idle = hand_back_when_idle
        self.factory = factory
        self.log = logging
        self.session_id = session_id
        self.workspace = workspace
        self.only_stage = only_stage
        self.on_update = on_update
        self.host = local_host()
        self.pid = os.getpid()
        self._db = factory()
        #: Hears the changes this runner commits and tells people of those its workflow's
        #: ``notify`` asks for, in the background (app.runner.notifications).
        self._announcer = SessionAnnouncer(factory, session_id, self.host)
        self._raw_sessions = FlowSessionManager(
            self._db, actor="runner", integration=self._announcer
        )
        #: The SQLite store's reserve (None on a server): released when a state write
        #: finds the disk full, see :meth:`_disk_full`.
        self._space = StoreSpace.of(self._db.get_bind())
        #: Set once a write of ours found the store's disk full.
        self._store_full = False
        #: Every write through these is retried until the store takes it (see _persist).
        self.sessions: Any = _Persistent(self._raw_sessions, self)
        self.stages: Any = _Persistent(
            StageManager(self._db, actor="runner", integration=self._announcer), self
        )
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._interrupted = threading.Event()
        #: How many interrupts came: a second one cuts short what the first still waits
        #: for (:meth:`~app.runner.supervision.Supervision._settle_exited`).
        self.interrupts = 0
        self._hurry = threading.Event()
        self._interrupt_lock = threading.Lock()
        self._wake = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self._claimed = False
        #: Set once the session's completion forgot this runner (nothing left to release).
        self._released = False
        #: The claim this runner holds, once made: every write of its managers is
        #: conditioned on it (:meth:`_hold`).
        self._lease: Lease | None = None
        self._claim_view: SessionView | None = None
        #: Whether a runner may have run this session before ours (then stage processes it
        #: left may still live): unknown counts as yes. See :meth:`_remove_unrecorded`.
        self._started_before = True
        #: Per stage, the highest attempt a leftover process carried: the next attempt is
        #: numbered above it, so a stage never sees the same ``VC_ATTEMPT`` twice.
        self._attempt_floor: dict[str, int] = {}
        #: Per stage id, what its last move returned: the next move of that stage starts
        #: from it instead of reading the stage (StageManager.move_stage ``known``).
        self._moves: dict[int, StageMove] = {}
        #: The scheduler's state of this run (set when the stages start), the stage rows
        #: by name, and the attempts running now by instance name.
        self._schedule = Schedule([], {}, frozenset(), 1)
        self._rows: dict[str, StageView] = {}
        self._running: dict[str, RunningAttempt] = {}
        #: Per instance, the last attempt number used and the failed attempts of this run.
        self._attempts: dict[str, int] = {}
        self._tries: dict[str, int] = {}
        self._retrying: set[str] = set()  # retries not started yet: their rows say ACTIVE
        self._settling: dict[str, Leftovers] = {}
        self._fail_fast = True
        #: The reason of the first stage that failed for good (the session's, in the end).
        self._first_failure: str | None = None
        #: Set when a failure ended the session (``fail_fast``): what run() returns.
        self._ended: Outcome | None = None
        #: The gate the session was paused at by this runner: its resume passes it.
        self._gate_pause: str | None = None
        self._gates_read_at = 0.0
        self._gates_announced: set[str] = set()
        #: Set by each read of the session's state (:meth:`_desired`), taken by
        #: :meth:`_check_gates`: a state read means something may have changed.
        self._state_read = False
        #: What the foreground display shows.
        self.waiting_at: str | None = None
        self.waiting_checklist: list[str] = []
        self._notifier: Any = None
        #: Set when a write saw a session state the loop has not read yet: the next state
        #: check reads, whatever the notifier says.
        self._read_next = False
        self._listen_at = time.monotonic() + LISTEN_AFTER
        #: The last state read (the claim made it ACTIVE); what the loop acts on while the
        #: store is unreachable or (on PostgreSQL) nothing was notified.
        self._last_desired: tuple[str, str | None] | None = (SessionStatus.ACTIVE, None)
        self._down_since: float | None = None
        #: Stages stopped because no heartbeat landed for too long (:meth:`_maybe_hold`),
        #: when the last one did, and the lock of that hold (the heartbeat thread takes it).
        self._holding = False
        self._beat_ok_at = time.monotonic()
        self._hold_lock = threading.Lock()
        #: A store error that waiting will not cure, seen by the heartbeat thread or the
        #: log mirror: the loop stops on it (:meth:`_check_flags`).
        self._failure: StoreFailure | None = None
        self._store_errors = 0
        self._retry_at = 0.0
        self._backoff = STORE_RETRY[0]
        #: The session's status as read by the last stage write (same transaction): when
        #: it says ACTIVE, the next stage starts without another read.
        self._known_status: str | None = None
        #: How each stage (or a retried attempt) ended, in order, as (stage, text): what
        #: the foreground display prints, one line each, when it is not on a terminal.
        self.stage_results: list[tuple[str, str]] = []
        #: The session's parameters and the outputs of its COMPLETED stages (read from the
        #: store when the run starts, then kept up to date by the stages it completes):
        #: what each stage gets as VC_PARAM_* and VC_OUTPUT_* (app.runner.outputs).
        self._params: dict[str, Any] = {}
        self._stage_outputs: dict[str, dict[str, str]] = {}
        #: Changes of the session made by someone else, in order ("paused by ana on
        #: build-02"): what the foreground display prints. Only kept with a display.
        self.control_notes: list[str] = []
        #: Who paused the session, while it is PAUSED by someone else (not at a gate).
        self.paused_by: str | None = None

    # -- lifecycle -----------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Signal-handler safe: stop at the next poll, pausing the session."""
        self.interrupts += 1
        self._interrupted.set()
        self._wake.set()

    def hurry(self) -> None:
        """A second Ctrl-C (signal-handler safe): the stages being stopped get SIGKILL now
        instead of the rest of their ``kill_timeout``. Only the user's own repeated
        Ctrl-C: a closed terminal's SIGHUPs, often two, must not kill what a pause stops."""
        self._hurry.set()
        self.interrupt()

    def interrupt_once(self) -> None:
        """A worker's stop: one interrupt however often it is asked (never the second one
        that kills the stages at once). Not for signal handlers (it takes a lock)."""
        with self._interrupt_lock:
            if not self.interrupts:
                self.interrupt()

    def claim(self) -> None:
        """Become the session's runner (PENDING -> ACTIVE, or take over an orphan).

        Done before anything else so a refusal is the only thing the user sees: another
        live runner raises :class:`RunnerConflict` naming its host and pid; a PAUSED,
        COMPLETED or FAILED session raises :class:`InvalidTransition`. A claim a worker made
        on our behalf (same host and pid) is kept as is. The claim's token becomes the
        runner's lease (:meth:`_hold`).
        """
        if self._claimed:
            return
        self._db.commit()
        view = get_session_view(self._db, self.session_id)
        if view is None:
            raise SessionNotFound(f"session {self.session_id[:12]} was deleted")
        if (
            view.runner_pid != self.pid
            or view.runner_host != self.host
            or view.runner_lease is None
        ):
            # Read before the claim: a session that never started had no runner, so no
            # stage process of it can exist (the first runner spares itself the search).
            self._started_before = view.started_at is not None
            change = self._raw_sessions.start_session(
                self.session_id, runner_host=self.host, runner_pid=self.pid
            )
            self._hold(self._raw_sessions.lease_of(change, self.host, self.pid))
        else:
            # Claimed for us (a worker, or `vc flow run` creating the session claimed) and
            # read just now: run() starts from this view instead of reading the session
            # again (one query set less per queued session). No runner ran it before when
            # it was created claimed (started_at == created_at) or when the claim just made
            # was its first start: a claim writes started_at only if it is unset, with the
            # heartbeat's own clock (store.leases), and no beat has followed yet. Otherwise
            # (or if a beat did follow) the takeover's search for leftovers runs.
            self._claim_view = view
            self._started_before = view.started_at not in (view.created_at, view.heartbeat_at)
            self._hold(Lease(self.session_id, self.host, self.pid, view.runner_lease))
        self._claimed = True

    def run(self) -> Outcome:
        """Claim (if not done yet), then run the remaining stages; always releases the
        session (so it is never shown orphaned after a clean exit)."""
        self.claim()
        GUARD.prepare()
        self._beat_ok_at = time.monotonic()  # the claim wrote the first heartbeat
        self._beat_thread = threading.Thread(target=self._beat, name="vc-heartbeat", daemon=True)
        self._beat_thread.start()
        self._say(f"runner started (pid {self.pid} on {self.host})")
        try:
            try:
                claimed, self._claim_view = self._claim_view, None
                view = claimed or self._view()
                if self._started_before:
                    self._count_retries_used()
                if self._cleanup_leftovers(view):
                    view = self._view()
                elif claimed is not None and not self._started_before:
                    # Read moments ago, nothing done since: the first stage starts on
                    # it, as later ones start on the status their last write read.
                    self._known_status = view.status
                return self._run_stages(view)
            except Interrupted:
                return self._pause_on_interrupt()
        except (_TakenOver, LeaseLost) as exc:  # LeaseLost: a write not through _persist
            self._lost.set()
            self._say(str(exc), "WARNING")
            return Outcome(1, str(exc), None)
        except Exception as exc:
            failure = _permanent(exc)
            if failure is None:
                raise
            self._failure = self._failure or failure
            return self._stop_for_good(self._failure)
        finally:
            self._stop.set()
            self._beat_thread.join(5)
            if self.flush_at_end and self._down_since is None and self._failure is None:
                self.log.flush()  # else the mirror keeps trying until it closes
            if self._notifier is not None:
                self._notifier.close()
            try:
                if not self._released:
                    self._raw_sessions.release_runner(
                        self.session_id, runner_host=self.host, runner_pid=self.pid
                    )
            except Exception:
                with contextlib.suppress(Exception):
                    self._db.rollback()
            self._db.close()

    # -- the scheduler -------------------------------------------------------------------------

    def _run_stages(self, view: SessionView) -> Outcome:
        """Run what is left: every instance whose needs are COMPLETED, up to the session's
        ``max_parallel`` at once (app.runner.schedule), in one loop that reads the desired
        state, enforces it on every running process group, looks at each attempt and
        starts what became free (nothing in a ``fail_fast`` session that has a failure). The
        stage states read once here stay true while we go: only this runner moves a stage
        forward; what others do (abort, approve, delete) is read by the loop."""
        self._params = dict(view.params)
        self._announcer.configure(view)
        # A matrix instance's outputs stay in the store (JSON, API): one VC_OUTPUT_* per
        # stage and key cannot tell its instances apart.
        done = [
            s
            for s in view.stages
            if s.status == StageStatus.COMPLETED and s.outputs and not s.config.get("instance")
        ]
        done.sort(key=lambda s: s.finished_at or 0.0)  # the last to complete wins a variable
        self._stage_outputs = {s.name: dict(s.outputs) for s in done}
        self._rows = {s.name: s for s in view.stages}
        snapshot = view.definition or {}
        self._fail_fast = fail_fast(snapshot)
        self._first_failure = self._first_failure or failure_before(view.stages)
        only = self._selected(view.stages)
        if only is not None:
            for stage in view.stages:
                if stage.name in only and stage.status == StageStatus.COMPLETED:
                    self._say("already COMPLETED: not run again", stage=stage.name)
        self._schedule = Schedule.start(
            [s.name for s in view.stages],
            instance_waits([(s.name, s.config) for s in view.stages], snapshot),
            completed=[s.name for s in view.stages if s.status == StageStatus.COMPLETED],
            failed=[s.name for s in view.stages if s.status == StageStatus.FAILED],
            gates=[s.name for s in view.stages if s.stage_type == "manual"],
            waiting=[
                s.name
                for s in view.stages
                if s.stage_type == "manual" and s.status == StageStatus.PAUSED
            ],
            max_parallel=max_parallel(snapshot),
            only=only,
        )
        if self._first_failure is not None and self._fail_fast:
            return self._fail_session(self._first_failure)
        if self._first_failure is not None:  # gates a runner before left waiting in vain
            self._close_futile_gates()
        try:
            return self._drive()
        except Interrupted:
            with contextlib.suppress(StoreError):  # not recorded: it runs again, as before
                self._settle_exited()
            raise
        except LeaseLost as exc:  # a write not through _persist: forgotten first if deleted
            raise self._taken_over(exc) from None
        finally:
            self._stop_running()

    def _selected(self, stages: Sequence[StageView]) -> set[str] | None:
        """The instances ``WORKFLOW:STAGE`` names: that instance, or every instance of that
        stage; None: all of them."""
        if self.only_stage is None:
            return None
        return {
            s.name
            for s in stages
            if s.name == self.only_stage or stage_of(s.name, s.config) == self.only_stage
        }

    def _drive(self) -> Outcome:
        schedule = self._schedule
        announced_pause = False
        while True:
            status, outcome = self._enforce()
            if outcome is not None:
                return outcome
            self._supervise()
            if self._ended is not None:
                return self._ended
            if status == SessionStatus.ACTIVE and self._down_since is None and not self._read_next:
                announced_pause = False
                outcome = self._start_free()
                if outcome is not None:
                    return outcome
                if self._ended is not None:
                    return self._ended
                if schedule.stuck_at_gates() and not self._gate_pause:
                    self._pause_at_gate(schedule.useful_gates()[0])
                    continue
            elif status == SessionStatus.PAUSED and self._idle_for_the_queue():
                return self._hand_back()
            elif status == SessionStatus.PAUSED and not announced_pause:
                announced_pause = True
                if not self._running and not self._gate_pause and not schedule.finished():
                    self._say("paused: the next stage waits for resume")
                    self._notify()
            if not self._running and schedule.finished():
                return self._finish()
            self._await_change()

    def _enforce(self) -> tuple[str, Outcome | None]:
        """Read the state the front ends want and make every running stage follow it:
        SIGSTOP on a pause, SIGCONT on a resume, TERM/KILL on an abort or a delete."""
        known, self._known_status = self._known_status, None
        if known == SessionStatus.ACTIVE and self._down_since is None and not self._read_next:
            self._check_flags()
            return SessionStatus.ACTIVE, None
        if known is not None and known != SessionStatus.ACTIVE:
            self._read_next = True
        desired = self._desired()
        if desired is None:
            self._stop_running()
            return "", Outcome(1, "session deleted", None)
        status, reason = desired
        if status == SessionStatus.FAILED:
            self._stop_running(f"session {reason or 'aborted'}")
            return status, Outcome(1, f"session {reason or 'aborted'}", status)
        if status == SessionStatus.COMPLETED:
            return status, Outcome(0, "completed", status)
        if status == SessionStatus.PENDING:  # resumed before it ever started
            self.sessions.start_session(self.session_id, runner_host=self.host, runner_pid=self.pid)
            status = SessionStatus.ACTIVE
        if status == SessionStatus.PAUSED:
            self._pause_stages()
        elif status == SessionStatus.ACTIVE:
            self._resume_stages()
            if self._gate_pause is not None:
                self._resumed_from_gate()
        self._check_gates()
        return status, None

    def _await_change(self) -> None:
        """Sleep until a running stage exits or one poll has passed (Ctrl-C or a lost
        heartbeat wake it at once when nothing runs)."""
        procs = [a.proc for a in self._running.values() if a.finished is None]
        for proc in procs:
            if proc.exited:  # reaped, its last output still being read: that comes first
                proc.wait(POLL_INTERVAL)
                return
        if procs:
            wait_any(procs, POLL_INTERVAL)
            return
        finishing = [a.finished for a in self._running.values() if a.finished is not None]
        mirror = self.log.mirror
        if finishing and mirror is not None:
            # exited 0, its output on the way to the store: wait for that, not a fixed nap
            mirror.wait_stored(max(f.output_mark for f in finishing), POLL_INTERVAL)
        elif finishing:
            time.sleep(POLL_INTERVAL / 5)
        else:
            self._idle()

    # -- starting ------------------------------------------------------------------------------

    def _start_free(self) -> Outcome | None:
        """Start what the graph lets start now: gates open (waiting), task instances spawn."""
        free = self._schedule.startable()
        if not free:
            return None
        tasks = [n for n in free if n not in self._schedule.gates]
        if tasks:
            outcome = self._stop_on_full_disk()
            if outcome is not None:
                return outcome
        for name in free:
            if self._read_next or self._ended is not None:
                break  # a write saw the session change: the loop reads it before more start
            if name in self._schedule.gates:
                self._open_gate(self._rows[name])
            else:
                self._start_attempt(self._rows[name])
        return None

    def _next_attempt(self, stage: StageView) -> int:
        last = max(
            self._attempts.get(stage.name, stage.attempt), self._attempt_floor.get(stage.name, 0)
        )
        self._attempts[stage.name] = last + 1
        return last + 1

    def _start_attempt(self, stage: StageView) -> None:
        """Spawn, then record, one attempt of a task instance.

        The process is spawned before the stage is marked ACTIVE so the write overlaps with
        its start-up (:meth:`StageManager.start_attempt`); a crash between the two leaves
        the stage PENDING with its process running on, unrecorded: the next runner finds
        that process by its environment and removes it before the stage runs again
        (:meth:`_remove_unrecorded`). The recorded pid stays after the exit (one write less
        per stage): recovery only looks at ACTIVE or PAUSED stages and checks the process
        start time, and a new attempt overwrites it."""
        attempt = self._next_attempt(stage)
        self._retrying.discard(stage.name)
        self._schedule.mark(stage.name, RUNNING)
        run = stage.config.get("run")
        command = run if isinstance(run, str) else "(no command)"
        timeout = _seconds(stage.config.get("timeout"))
        kill_timeout = kill_timeout_of(stage.config)
        recorder = OutputRecorder(lambda text: self._say(text, "WARNING", stage.name))
        output = StageOutput(self.log, self.session_id, stage.name, recorder, self._lease)
        proc = StageProcess(
            command,
            env=self._stage_env(stage, attempt),
            cwd=self._stage_cwd(stage),
            on_lines=output,
            kill_timeout=kill_timeout,
            merge_stderr=stage.config.get("stderr") == "merged",
        )
        running = RunningAttempt(
            stage, attempt, proc, output, recorder, timeout=timeout, kill_timeout=kill_timeout
        )
        self._running[stage.name] = running
        self._notify()  # before any outcome of it, so "started" comes first
        try:
            if not isinstance(run, str) or not run.strip():
                raise StageStartError(NO_COMMAND)
            proc.start()
        except StageStartError as exc:
            try:
                errors = self._store_errors
                self._moves[stage.id] = self.stages.move_stage(
                    stage.id,
                    StageStatus.ACTIVE,
                    new_attempt=True,
                    attempt=attempt,
                    known=self._as_known(stage),
                )
            except (InvalidTransition, ConcurrentModification):
                if not self._landed(errors, stage, StageStatus.ACTIVE, attempt):
                    self._running.pop(stage.name, None)
                    self._schedule.mark(stage.name, TODO)
                    self._read_next = True  # aborted meanwhile: the loop reads it
                    return
            self._say(f"attempt {attempt}: {command_line(command)}", stage=stage.name)
            self._say(str(exc), "ERROR", stage.name)
            self._attempt_ended(running, AttemptResult("failed", str(exc)))
            return
        assert proc.pid is not None
        try:
            errors = self._store_errors
            move: StageMove | None = self.stages.start_attempt(
                stage.id,
                attempt,
                pid=proc.pid,
                pid_start=proc.start_time,
                host=self.host,
                known=self._as_known(stage),
            )
            if move is not None:
                self._moves[stage.id] = move
        except (InvalidTransition, ConcurrentModification) as exc:
            if not self._landed(errors, stage, StageStatus.ACTIVE, attempt):
                self._drop(running)
                if isinstance(exc, InvalidTransition) and exc.current == StageStatus.FAILED:
                    # failed for good already: never started again (it would loop)
                    self._schedule.mark(stage.name, FAILED)
                self._read_next = True
                return
            move = None  # recorded before the connection broke
        session_status = move.session_status if move is not None else None
        if move is None:
            desired = self._desired(fresh=True)
            session_status = desired[0] if desired is not None else None
        elif session_status != SessionStatus.ACTIVE:
            self._read_next = True  # e.g. paused meanwhile: the next look acts on it
        else:
            # Read in the start's own transaction: the next look needs no read of its own
            # (the one after it reads again, a poll later).
            self._known_status = session_status
        self._say(f"attempt {attempt} (pid {proc.pid}): {command_line(command)}", stage=stage.name)
        output.release()
        self._notify()
        if session_status in (None, SessionStatus.FAILED):
            # Aborted (or deleted) between the check before the stage and its start: the
            # abort did not see this stage running, so it is failed here.
            self._drop(running)
            with contextlib.suppress(StoreError):
                self.stages.move_stage(stage.id, StageStatus.FAILED, error="aborted")
            self._read_next = True

    def _finish(self) -> Outcome:
        """Nothing more can run: fail with the first failure (``fail_fast: false``), or
        pause after ``WORKFLOW:STAGE`` when other stages are left, or complete."""
        if self._first_failure is not None:
            schedule = self._schedule
            self._close_waiting_gates(
                lambda gate: cancellation(schedule.failure_blocking(gate) or "a stage")
            )
            return self._fail_session(self._first_failure)
        if self.only_stage is not None and any(
            s.status != StageStatus.COMPLETED for s in self._view().stages
        ):
            # Not left ACTIVE without a runner (it would look alive forever): PAUSED, and a
            # resume runs the rest under a new runner.
            reason = f"ran {self.only_stage} only: resume to run the rest"
            try:
                self.sessions.pause(self.session_id, reason=reason)
            except PermanentStoreError:
                raise
            except StoreError:
                pass  # aborted or paused meanwhile: that state stands
            self._say(f"stage {self.only_stage} done; session paused ({reason})")
            return Outcome(0, f"stage {self.only_stage} completed; {reason}", "PAUSED")
        return self._complete()

    def _complete(self) -> Outcome:
        """Every stage is COMPLETED: complete the session, once it is ACTIVE (a pause that
        arrived after the last stage is honoured like any pause between stages)."""
        while True:
            outcome = self._wait_until_runnable()
            if outcome is not None:
                return outcome
            try:
                self._flush_logs()
                losses = self._log_losses()
                self.sessions.complete(self.session_id, reason=losses)
                self._released = True  # the completion forgot the runner in its write
            except InvalidTransition:
                state = self._desired(fresh=True)
                if state is not None and state[0] == SessionStatus.ACTIVE:
                    raise  # stages not completed: a bug, not a race
                continue
            self._say(f"session completed{f' ({losses})' if losses else ''}")
            self._notify()
            message = f"completed; {losses}" if losses else "completed"
            return Outcome(0, message, SessionStatus.COMPLETED)

    def _wait_until_runnable(self) -> Outcome | None:
        """Before the completion, every stage done: None when the session is ACTIVE; wait
        while it is PAUSED (a pause that came as the last stage ended is honoured: only
        ACTIVE completes, and the resume does); an Outcome when it was aborted, completed
        or deleted meanwhile."""
        announced = False
        known, self._known_status = self._known_status, None
        if known is not None and known != SessionStatus.ACTIVE:
            self._read_next = True
        if known == SessionStatus.ACTIVE and self._down_since is None:
            self._check_flags()
            return None
        while True:
            desired = self._desired()
            if self._down_since is not None:
                self._idle()  # no stage starts while it could not be recorded
                continue
            if desired is None:
                return Outcome(1, "session deleted", None)
            status, reason = desired
            if status == SessionStatus.ACTIVE:
                if announced:
                    self._say("resumed")
                return None
            if status == SessionStatus.PENDING:  # resumed before it ever started
                self.sessions.start_session(
                    self.session_id, runner_host=self.host, runner_pid=self.pid
                )
                return None
            if status == SessionStatus.FAILED:
                return Outcome(1, f"session {reason or 'aborted'}", status)
            if status == SessionStatus.COMPLETED:
                return Outcome(0, "completed", status)
            if self._idle_for_the_queue():
                return self._hand_back()
            if not announced:
                announced = True
                self._say("paused after its last stage: resume completes the session")
                self._notify()
            self._idle()

    def _idle_for_the_queue(self) -> bool:
        """A worker's session is PAUSED and no stage process of it is left to hold: its
        runner need not stay (see :meth:`_hand_back`)."""
        return self.hand_back_when_idle and not self._running and self._down_since is None

    def _hand_back(self) -> Outcome:
        """End this worker's runner while its session waits, PAUSED, with nothing running:
        run() then forgets the runner in the session's row (``release_runner``), so the
        session stays PAUSED and queued with no runner, and the worker's slot goes to the
        next queued session instead of waiting hours for an approval. Its resume (or the
        gate's approval, which passes the gate in the store) makes it ACTIVE, queued work
        that the next worker claims (store.liveness.awaits_worker); a PAUSED stage that
        still has a process is never handed back (that process is this worker's child)."""
        if self.waiting_at is not None:
            what = f"waits at manual gate {self.waiting_at}"
            then = "its approval (or a resume)"
        else:
            what = "is paused with no stage running"
            then = "its resume"
        self._say(f"handed back to the queue: it {what}; after {then} the next worker goes on")
        return Outcome(0, f"{what}: handed back to the queue", SessionStatus.PAUSED)

    def _stage_env(self, stage: StageView, attempt: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (stage.config.get("env") or {}).items()})
        env = stage_environment(env, self._params, self._stage_outputs.items())
        env.update(VC_SESSION_ID=self.session_id, VC_STAGE=stage.name, VC_ATTEMPT=str(attempt))
        instance = stage.config.get("instance") or {}
        return env | {matrix_variable(str(k)): str(v) for k, v in instance.items()}

    def _stage_cwd(self, stage: StageView) -> str:
        """The stage's ``cwd`` (``~`` and ``$VARS`` expanded; relative to the workspace), or
        the workspace itself."""
        cwd = stage.config.get("cwd")
        if not cwd:
            return str(self.workspace)
        path = Path(os.path.expandvars(os.path.expanduser(str(cwd))))
        return str(path if path.is_absolute() else self.workspace / path)

    def _pause_on_interrupt(self) -> Outcome:
        """Ctrl-C: the stages' processes are gone; each goes back to PENDING for a new
        attempt, the session is PAUSED (``interrupted``); one waiting at a gate stays as it
        is. An attempt that had exited 0 is COMPLETED already (``_settle_exited``)."""
        view = self._view()
        for stage in view.stages:
            if stage.stage_type != "manual" and stage.status in (
                StageStatus.ACTIVE,
                StageStatus.PAUSED,
            ):
                self.stages.move_stage(stage.id, StageStatus.PENDING)
        short = self.session_id[:12]
        if view.status == SessionStatus.ACTIVE:
            with contextlib.suppress(InvalidTransition):
                self.sessions.pause(self.session_id, reason="interrupted")
        elif view.status != SessionStatus.PAUSED:
            return Outcome(130, f"interrupted: session {short} is {view.status}", view.status)
        self._say("interrupted: session paused", "WARNING")
        gate = self.waiting_at
        hint = f"; resuming passes the manual gate {gate}" if gate else ""
        resume = f"'vc flow session resume {short}'"
        how = f"resume it with {resume} (it goes on in the background)"
        # A resume runs every stage left: a run of one stage says how not to, unless a gate
        # waits (`run --session` is refused then: passing the gate resumes the session).
        if self.only_stage is not None and gate is not None:
            how = f"{resume} runs every stage left, in the background"
        elif self.only_stage is not None:
            target = f"{view.workflow_id}:{self.only_stage}"
            target = f'"{target}"' if "[" in target else target  # an instance: not a glob
            how = (
                f"to finish {self.only_stage} only, run 'vc flow run {target} --session "
                f"{short}' here; {resume} runs every stage left, in the background"
            )
        return Outcome(
            130, f"interrupted: session {short} paused; {how}{hint}", SessionStatus.PAUSED
        )

    # -- what the foreground display reads (the rest: app.runner.live_view) -------------------

    @property
    def current_stage(self) -> str | None:
        """The first running instance, else the gate the session waits at."""
        running = self.running_stages
        return running[0] if running else self.waiting_at
