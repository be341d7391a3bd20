"""Supervising a session's running attempts: progress, outputs, exits, timeouts, retries,
and how each attempt's end is recorded (docs/ARCHITECTURE.md, "The runner").

:class:`Supervision` is a base of :class:`app.runner.runner.Runner`, whose ``__init__``
sets what is declared here; the loop that calls it stays in the runner.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from app.runner.attempt import (
    AttemptResult,
    Leftovers,
    RunningAttempt,
    StageOutput,
    hold_all,
    pause_all,
    pause_leftovers,
    release_all,
    resume_all,
    resume_leftovers,
    terminate_all,
)
from app.runner.outputs import OutputRecorder
from app.runner.process import StageProcess
from app.runner.recovery import Recovery, failure_reason
from app.runner.schedule import DONE, FAILED, RUNNING, TODO, Schedule
from app.runner.store_link import _STORE_ERRORS, Outcome
from store.changes import StageMove
from store.errors import InvalidTransition, SessionNotFound, StageNotFound, StoreError
from store.graph import cancellation
from store.queries import StageView
from store.space import is_disk_full
from store.status import SessionStatus, StageStatus

#: Seconds an interrupt waits, at most, for the output of the attempts that had exited 0
#: to be read and stored before it records them COMPLETED (the process ends only once its
#: log is flushed anyway, so in the usual case this costs a Ctrl-C nothing more).
EXITED_OUTPUT_WAIT = 10.0

#: Seconds between two reads of the session while a timed-out stage is being stopped.
STOP_LOOK_INTERVAL = 0.2

#: Seconds a ``fail_fast`` failure waits, at most, for the attempts that had exited 0 and
#: whose output is read already (their lines on the way to the store), before it stops
#: the running siblings.
READY_OUTPUT_WAIT = 0.5


class Supervision(Recovery):
    """Watches the running attempts and records how they end (see the module doc)."""

    _schedule: Schedule
    _rows: dict[str, StageView]
    _running: dict[str, RunningAttempt]
    interrupts: int
    _hurry: threading.Event
    _moves: dict[int, StageMove]
    _tries: dict[str, int]
    _retrying: set[str]
    #: Per instance, what a failed attempt left, being removed before its retry.
    _settling: dict[str, Leftovers]
    _fail_fast: bool
    _first_failure: str | None
    _ended: Outcome | None
    _known_status: str | None
    _stage_outputs: dict[str, dict[str, str]]
    stage_results: list[tuple[str, str]]

    def _stage_result(self, stage: str, text: str, level: str = "INFO") -> None:
        """Log how a stage (or an attempt of it) ended, and tell the display."""
        self._say(text, level, stage)
        self.stage_results.append((stage, text))
        self._notify()

    def _as_known(self, stage: StageView) -> StageMove | None:
        """Where the stage's next move can start from without reading it: the last move of
        this stage in this run, or else the stage as this run's view read it. If someone
        else wrote the stage since, the move notices (its update is conditional on the
        version) and reads it."""
        last = self._moves.get(stage.id)
        if last is not None:
            return last  # a retry: what the previous attempt's moves left
        if stage.version is None:
            return None
        return StageMove(
            stage.id, self.session_id, stage.status, stage.version, stage.attempt, None, stage.name
        )

    def _drop(self, running: RunningAttempt) -> None:
        """Stop an attempt that must not go on, without recording an end for it."""
        self._running.pop(running.name, None)
        self._schedule.mark(running.name, TODO)
        with contextlib.suppress(Exception):
            running.terminate()
        running.output.release()

    def _supervise(self) -> None:
        """Look at every running attempt once: progress, outputs, exit, timeout."""
        if self._settling:
            self._check_settling()
        now = time.monotonic()
        for running in list(self._running.values()):
            if running.finished is not None:
                self._try_complete(running)
                continue
            code = running.proc.wait(0)
            running.tick(now)
            value = running.progress_due(now, code is not None)
            if value is not None:
                try:
                    self.stages.raw.set_progress(running.stage.id, value)
                except _STORE_ERRORS as exc:  # written again at the next change or exit
                    if is_disk_full(exc):
                        with contextlib.suppress(Exception):
                            self._db.rollback()
                    else:
                        self._store_lost(exc)
                else:
                    running.progress_written = value
                self._notify()
            stage = running.stage
            if code is not None:
                self._exit_seen(running, code)
            else:
                self._save_outputs(stage, running.attempt, running.recorder, final=False)
                # Once the main process exited, the wait is for output a child it left
                # holds open (READER_GRACE at most): not running time, so no timeout.
                if running.timed_out() and not running.proc.exited:
                    self._say(
                        f"timed out after {running.timeout:g}s: SIGTERM sent, SIGKILL after "
                        f"{running.kill_timeout:g}s unless it exits",
                        "WARNING",
                        stage.name,
                    )
                    code = running.terminate(self._hurry, self._pause_while_stopping)
                    self._stop_look = (False, 0.0)
                    self._say(
                        f"stopped after its timeout (exit {code})",
                        "WARNING",
                        stage.name,
                    )
                    self._attempt_ended(running, AttemptResult("failed", "timeout", code))
            if self._ended is not None:
                return

    def _exit_seen(self, running: RunningAttempt, code: int) -> None:
        """The attempt's process exited with ``code`` and its output was read: its outputs
        are saved for good, then its end is recorded."""
        stage = running.stage
        self._save_outputs(stage, running.attempt, running.recorder, final=True)
        result = self._exited(stage, running.proc, running.output, code)
        result.outputs = running.recorder.outputs()
        self._attempt_ended(running, result)

    def _attempt_ended(self, running: RunningAttempt, result: AttemptResult) -> None:
        stage = running.stage
        if result.kind == "completed":
            running.finished = result
            self._running[stage.name] = running
            self._try_complete(running)
            return
        self._running.pop(stage.name, None)
        running.output.release()
        error = result.error or "failed"
        retries = int(stage.config.get("retries") or 0)
        tries = self._tries[stage.name] = self._tries.get(stage.name, 0) + 1
        retry = tries <= retries and not self._store_is_full()
        paused = running.paused
        settling = self._settle_leftovers(running, remove=retry)
        if retry:
            try:
                self.stages.note_retry(stage.id, f"attempt {running.attempt} failed: {error}")
            except (StageNotFound, SessionNotFound, InvalidTransition):
                self._read_next = True  # aborted or deleted meanwhile: the loop reads it
                return
            self._stage_result(
                stage.name,
                f"attempt {running.attempt} failed: {error}; "
                f"retrying ({tries} of {retries} retries)",
                "WARNING",
            )
            # Its slot stays taken until what the attempt left is gone (_check_settling).
            self._schedule.mark(stage.name, RUNNING if settling else TODO)
            if not paused:  # one that ended paused is recorded PAUSED already
                self._retrying.add(stage.name)
            return
        try:
            errors = self._store_errors
            self.stages.move_stage(
                stage.id,
                StageStatus.FAILED,
                error=error,
                exit_code=result.exit_code,
                known=self._moves.get(stage.id),
            )
        except InvalidTransition:
            if not self._landed(errors, stage, StageStatus.FAILED, running.attempt):
                self._read_next = True  # aborted meanwhile: the loop reads it
                return
        self._schedule.mark(stage.name, FAILED)
        # said before the session fails, so the log tells it in the order it happened
        self._stage_result(stage.name, f"stage failed: {error}", "ERROR")
        reason = failure_reason(stage.name, error)
        if self._store_is_full():
            reason = f"{reason}; {self._full_disk_reason()}"
        self._first_failure = self._first_failure or reason
        if self._fail_fast:
            self._cancel_running(cancellation(stage.name))
            self._ended = self._fail_session(self._first_failure)
        else:
            self._close_futile_gates()

    def _settle_leftovers(self, running: RunningAttempt, *, remove: bool) -> bool:
        """What a failed attempt left in its group is removed before its retry (TERM now,
        KILL after ``kill_timeout``, :meth:`_check_settling`): an attempt never runs beside
        the one before it, holding its locks and files. True while that is under way: the
        loop goes on meanwhile (a pause, an abort, the other stages). One that ended while
        paused has what it left continued first: nothing stays stopped for ever."""
        with contextlib.suppress(Exception):  # gone meanwhile: nothing left to settle
            if running.paused:
                running.continue_leftovers()
            if remove and running.proc.drop_leftovers(signal.SIGTERM):
                deadline = time.monotonic() + running.kill_timeout
                self._settling[running.name] = Leftovers(running, deadline)
                return True
        return False

    def _check_settling(self) -> None:
        """The leftovers of failed attempts on their way out: once gone, the retry may
        start; past ``kill_timeout`` they get SIGKILL (a moment more, and the retry starts
        whatever is left, said). Stopped by a pause, they wait for the resume."""
        now = time.monotonic()
        for name, left in list(self._settling.items()):
            gone = True
            with contextlib.suppress(Exception):
                gone = left.attempt.proc.leftovers_gone()
                if not gone and now >= left.deadline and left.stopped_at is None:
                    left.attempt.proc.drop_leftovers(signal.SIGKILL)
            if not gone and (now < left.deadline + 2.0 or left.stopped_at is not None):
                continue
            if not gone:
                self._say("processes its failed attempt left could not be removed", "ERROR", name)
            del self._settling[name]
            if self._schedule.state.get(name) == RUNNING and name not in self._running:
                self._schedule.mark(name, TODO)

    def _try_complete(self, running: RunningAttempt) -> None:
        """Record an attempt that exited 0 as COMPLETED, once its output is in the store:
        whoever sees it COMPLETED (`session logs`, the dashboard, another host) sees all of
        its lines, even if this runner dies the next moment. Lines the mirror had to let
        go count as stored (a note stands in their place)."""
        result = running.finished
        assert result is not None
        mirror = self.log.mirror
        if (
            mirror is not None
            and result.output_mark
            and not mirror.wait_stored(result.output_mark, 0)
        ):
            return  # looked at again next time round
        stage = running.stage
        try:
            errors = self._store_errors
            move = self.stages.move_stage(
                stage.id,
                StageStatus.COMPLETED,
                exit_code=0,
                known=self._moves.get(stage.id),
                finished_at=result.ended_at,
            )
            self._known_status = move.session_status
        except InvalidTransition:
            if not self._landed(errors, stage, StageStatus.COMPLETED, running.attempt):
                self._running.pop(stage.name, None)
                self._schedule.mark(stage.name, TODO)
                self._read_next = True  # aborted as the stage exited
                return
        self._running.pop(stage.name, None)
        self._schedule.mark(stage.name, DONE)
        self._stage_outputs.pop(stage.name, None)
        if result.outputs and not stage.config.get("instance"):
            self._stage_outputs[stage.name] = result.outputs
        self._stage_result(stage.name, f"stage completed (attempt {running.attempt})")

    def _say_stopping(self, alive: list[RunningAttempt]) -> None:
        """Ctrl-C: what the wait is for, at once (a stage that ignores SIGTERM holds the
        exit for its whole ``kill_timeout``), and how to cut it short."""
        longest = max(a.kill_timeout for a in alive)
        if longest < 1 or self._hurry.is_set():
            return
        names = ", ".join(a.name for a in alive[:3]) + (" …" if len(alive) > 3 else "")
        self.control_notes.append(
            f"stopping {names}: SIGTERM sent, SIGKILL in {longest:g} s at most "
            "(Ctrl-C again to kill now)"
        )
        self._notify()

    def _settle_exited(self) -> None:
        """On an interrupt: an attempt whose process had already exited 0 is seen through
        to COMPLETED (its output read and stored first), not thrown away and run again by
        the resume: a deploy that succeeded is not deployed twice. The other attempts are
        stopped first, so they never wait on this. One whose output is not stored in time
        (:meth:`_complete_exited`) stays unrecorded and runs again, as a stage is never
        COMPLETED with a truncated log."""
        exited = self._take_exited()
        self._stop_running()  # the rest: terminated as on any interrupt
        for running in self._complete_exited(exited, EXITED_OUTPUT_WAIT):
            self._running[running.name] = running  # dropped unrecorded by the run's end

    def _take_exited(self) -> list[RunningAttempt]:
        """The attempts whose process has exited 0, taken out of the running ones. Reading
        ``running`` reaps one that exited since the loop last looked: a success a moment
        before an interrupt or a failure is not taken for a stage to stop."""
        exited = [
            a
            for a in self._running.values()
            if a.finished is not None or (not a.proc.running and a.proc.returncode == 0)
        ]
        for running in exited:
            del self._running[running.name]
        return exited

    def _complete_exited(self, exited: list[RunningAttempt], wait: float) -> list[RunningAttempt]:
        """Record ``exited`` (from :meth:`_take_exited`) COMPLETED once each one's output
        is read and stored, waiting ``wait`` seconds at most for them all (a second
        interrupt cuts it short). Returns those not recorded, out of the running ones."""
        deadline = time.monotonic() + wait
        mirror = self.log.mirror
        left = []
        for running in exited:
            self._running[running.name] = running  # where the recording looks for it
            if running.finished is None:
                proc = running.proc
                if not self._patiently(_all_read(proc), deadline):
                    left.append(running)
                    continue
                self._exit_seen(running, 0)
            finished = running.finished
            if finished is None or running.name not in self._running:
                continue  # recorded already
            if mirror is not None and finished.output_mark:
                mark = finished.output_mark
                self._patiently(_stored(mirror, mark), deadline)
            self._try_complete(running)
            if running.name in self._running:
                left.append(running)
        for running in left:
            self._running.pop(running.name, None)
        return left

    def _patiently(self, wait: Callable[[float], bool], deadline: float) -> bool:
        """``wait(seconds)`` in short steps until it is true, ``deadline`` passes or a
        second interrupt comes; then one last look without waiting (an attempt that exited
        0 with its output in is recorded, not run again by the resume)."""
        while self.interrupts < 2:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            if wait(min(0.1, remaining)):
                return True
        return wait(0)

    def _hold_stages(self) -> None:
        hold_all(list(self._running.values()))

    def _release_stages(self, paused: bool = False) -> None:
        if not paused:
            release_all(list(self._running.values()))
            return
        for attempt in self._running.values():
            if attempt.held:
                attempt.held = False  # stopped for the outage, now for the pause: no SIGCONT
                self._mark(attempt.stage, StageStatus.PAUSED, "paused (SIGSTOP)")

    def _mark(self, stage: StageView, status: StageStatus, note: str) -> None:
        """Record a pause or resume that was just enforced. Refused only when an abort
        landed in between (the stage is FAILED already): the next poll sees it."""
        try:
            self._moves[stage.id] = self.stages.move_stage(
                stage.id, status, known=self._moves.get(stage.id)
            )
        except InvalidTransition:
            return
        self._say(note, stage=stage.name)
        self._notify()

    #: What the last look during a timed-out stage's stop saw (paused?), and when.
    _stop_look: tuple[bool, float] = (False, 0.0)

    def _pause_while_stopping(self) -> bool:
        """Between the waits of a timed-out or cancelled stage's stop (kill_timeout at
        most, the loop waiting on it; the store read five times a second at most): a
        pause meanwhile stops it and every other running stage, and the stop's SIGKILL
        waits (True) for what comes next. A resume continues them; an abort or Ctrl-C
        too, for the stop's clean-up, the loop seeing to the rest after the stop, as
        before. The store out of reach keeps the last answer. Anything seen has the loop
        read the session again before it starts anything."""
        was, at = self._stop_look
        now = time.monotonic()
        if now - at < STOP_LOOK_INTERVAL and not self.interrupts:
            return was
        status: str | None = None
        if not self.interrupts:
            try:
                state = self._raw_sessions.state(self.session_id)
            except Exception:  # the store away: the loop sees to it after the stop
                return was
            status = None if state is None else str(state[0])
        paused = status == SessionStatus.PAUSED
        self._stop_look = (paused, now)
        if paused:
            self._pause_stages()
        elif was:  # aborted, deleted, Ctrl-C: running again too, the stop's clean-up among them
            self._resume_stages(recorded=status == SessionStatus.ACTIVE)
        if paused != was or status != SessionStatus.ACTIVE:
            self._read_next = True
        return paused

    def _pause_stages(self) -> None:
        """The session is PAUSED: every running attempt's processes are stopped, and so
        is what failed attempts left on its way out (a paused session holds no CPU)."""
        for attempt in pause_all(list(self._running.values())):
            self._mark(attempt.stage, StageStatus.PAUSED, "paused (SIGSTOP)")
        self._pause_retrying()
        pause_leftovers(self._settling.values())

    def _resume_stages(self, recorded: bool = True) -> None:
        """Continue what a pause stopped; ``recorded``: a resume, each stage recorded
        ACTIVE (not so when an abort or Ctrl-C continues them, whose end the loop records)."""
        resume_leftovers(self._settling.values())
        for attempt in resume_all(list(self._running.values())):
            if recorded:
                self._mark(attempt.stage, StageStatus.ACTIVE, "resumed (SIGCONT)")

    def _pause_retrying(self) -> None:
        """A pause between a failed attempt and the next: the stage's row, still ACTIVE
        with no process, says PAUSED until its next attempt starts (after the resume, once
        a slot is free)."""
        for name in sorted(self._retrying):
            self._mark(self._rows[name], StageStatus.PAUSED, "paused before its next attempt")
        self._retrying.clear()

    def _cancel_running(self, why: str) -> None:
        """``fail_fast``: the other running instances are stopped and the gates waiting
        closed, each recorded FAILED with ``why`` (``cancelled: <stage> failed``): a failed
        session shows nothing still running or waiting. ``retry`` runs them again. One
        that had exited 0 is recorded COMPLETED (not cancelled, nor left ACTIVE to run a
        second time after the retry), unless its output cannot be read and stored in time
        (:data:`EXITED_OUTPUT_WAIT`) or the runner dies before it is: one whose output a
        child of it still holds open is cancelled then."""
        exited = self._take_exited()
        # Those whose output is in already are recorded before any sibling's kill_timeout
        # is waited out (a crash meanwhile would leave them ACTIVE, for the takeover to
        # cancel and the retry to run again); the others get their wait after.
        late = self._complete_exited(exited, READY_OUTPUT_WAIT)
        self._cancel(list(self._running.values()), why)
        self._cancel(self._complete_exited(late, EXITED_OUTPUT_WAIT), why)
        self._close_waiting_gates(why)

    def _cancel(self, running: list[RunningAttempt], why: str) -> None:
        """Stop ``running`` and record each one FAILED with ``why``. A pause meanwhile
        stops them (and the rest) until the resume, as during a timed-out stage's stop."""
        codes = terminate_all(running, self._hurry, self._pause_while_stopping)
        self._stop_look = (False, 0.0)
        for attempt, code in zip(running, codes, strict=True):
            self._running.pop(attempt.name, None)
            attempt.output.release()
            self._schedule.mark(attempt.name, FAILED)
            with contextlib.suppress(InvalidTransition):
                self.stages.move_stage(
                    attempt.stage.id,
                    StageStatus.FAILED,
                    error=why,
                    exit_code=code,
                    known=self._moves.get(attempt.stage.id),
                )
            self._stage_result(attempt.name, f"stage {why}", "WARNING")

    def _close_futile_gates(self, gates: list[str] | None = None) -> None:
        """``fail_fast: false``: a gate waiting (or one of ``gates``, about to open) whose
        approval can start nothing any more (:meth:`Schedule.futile`) is closed as soon as
        it is, naming the failure that blocks it, rather than when the run ends: until
        then a person or a script asked to approve "the gate" (``approve`` with no gate
        named) would find it beside the one that can still start something."""
        schedule = self._schedule
        candidates = schedule.waiting_gates() if gates is None else gates
        futile = [gate for gate in candidates if schedule.futile(gate)]
        if futile:
            self._close_waiting_gates(
                lambda gate: cancellation(schedule.failure_blocking(gate) or "a stage"), futile
            )

    def _close_waiting_gates(
        self, why: str | Callable[[str], str], gates: list[str] | None = None
    ) -> None:
        """The gates waiting beside a failure (or ``gates``) are closed FAILED with ``why``
        (or with what ``why`` says for each gate)."""
        gates = self._schedule.waiting_gates() if gates is None else gates
        # Each reason read before any gate closes: a closed gate is not a failure to name.
        reasons = {gate: why if isinstance(why, str) else why(gate) for gate in gates}
        for gate in gates:
            reason = reasons[gate]
            try:
                self.stages.move_stage(self._rows[gate].id, StageStatus.FAILED, error=reason)
            except InvalidTransition:
                self._schedule.mark(gate, DONE)  # approved meanwhile: passed, not cancelled
                continue
            self._schedule.mark(gate, FAILED)
            self._stage_result(gate, f"stage {reason}", "WARNING")

    def _stop_running(self, why: str | None = None) -> None:
        """Stop every running attempt (an abort, a delete, Ctrl-C, a lost claim, an error):
        each group gets TERM, then KILL after its ``kill_timeout``, all at once. With
        ``why`` (the session was aborted) each one's exit code is recorded."""
        running = list(self._running.values())
        leftovers = [left.attempt for left in self._settling.values()]  # of failed attempts
        self._settling.clear()
        for attempt in leftovers:
            self._schedule.mark(attempt.name, TODO)
        if not running and not leftovers:
            return
        self._running.clear()
        alive = [a for a in running if a.finished is None]
        if alive and why is None and self.interrupts:
            self._say_stopping(alive)
        stopped = terminate_all(alive + leftovers, self._hurry)
        codes = dict(zip((a.name for a in alive), stopped[: len(alive)], strict=True))
        for attempt in running:
            attempt.output.release()  # whatever path this was, no line stays held back
            self._schedule.mark(attempt.name, TODO)
            if why is None:
                continue
            code = codes.get(attempt.name, 0)  # one that had exited 0 is not in codes
            if attempt.finished is None:
                self._say(f"terminated: {why} (exit {code})", "WARNING", attempt.name)
            if code is not None:
                with contextlib.suppress(StoreError):
                    self.stages.record_exit_code(attempt.stage.id, code)

    def _save_outputs(
        self, stage: StageView, attempt: int, recorder: OutputRecorder, *, final: bool
    ) -> None:
        """Store the outputs reported since the last save: as they come (a store away for
        now is retried at the next change), and for good once the attempt has exited,
        before its end is recorded, so a stage is never COMPLETED without its outputs."""
        changes = recorder.take_changes()
        if changes is None:
            return
        if final:
            self.stages.record_outputs(stage.id, attempt, changes)
            return
        try:
            self.stages.raw.record_outputs(stage.id, attempt, changes)
        except _STORE_ERRORS as exc:
            recorder.mark_unsaved()
            self._store_lost(exc)

    def _exited(
        self, stage: StageView, proc: StageProcess, output: StageOutput, code: int
    ) -> AttemptResult:
        lost = proc.output_error or output.error
        if lost is not None:
            self._say(f"some output was lost: {lost}", "ERROR", stage.name)
        if proc.readers_abandoned:
            self._say(
                "processes the stage left behind still hold its output: they go on "
                "running, and what they write from now on is not recorded (redirect "
                "it to a file to keep it)",
                "WARNING",
                stage.name,
            )
        if code == 0:
            return AttemptResult(
                "completed", exit_code=0, ended_at=proc.ended_at, output_mark=output.mirror_mark
            )
        error = _describe_exit(code)
        # The shell's own complaint (`sh: 1: foo: not found`) ends the output it gave.
        said = output.last_line if proc.merge_stderr else output.last_stderr
        if code in (126, 127) and said:
            error = f"{error}: {said.strip()[:200]}"
        return AttemptResult("failed", error, code)


def _all_read(proc: StageProcess) -> Callable[[float], bool]:
    """A wait (seconds) for an exited process's output to be read to its end."""
    return lambda seconds: proc.wait(seconds) is not None


def _stored(mirror: Any, mark: int) -> Callable[[float], bool]:
    """A wait (seconds) for the mirror to have stored the lines up to ``mark``."""
    return lambda seconds: bool(mirror.wait_stored(mark, seconds))


def _describe_exit(code: int) -> str:
    if code == 127:
        return "command not found (exit 127)"
    if code == 126:
        return "command not executable (exit 126)"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
