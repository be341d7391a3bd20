"""The runner: executes one session's stages and enforces the state written in the store
onto real processes (DESIGN §6). The front ends never signal processes; they write the
desired state, and this loop notices it within a poll interval and acts:

* PAUSED  -> SIGSTOP to the stage's process group (the stage holds no CPU);
* ACTIVE  -> SIGCONT;
* FAILED (abort) or the session deleted -> SIGTERM, then SIGKILL after ``kill_timeout``.

Crash safety: the stage's pid and process start time are recorded before anything else
happens, so a later runner can remove a leftover process (never a reused pid), and a stage
is marked COMPLETED only after its process exited 0 — a COMPLETED stage never runs twice,
whatever crashes when; an interrupted one is run again as a new attempt.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.logging import Logging
from app.runner.process import StageProcess, StageStartError, kill_leftover_group, parse_progress
from store import FlowSessionManager, StageManager
from store.errors import SessionNotFound
from store.managers import HEARTBEAT_INTERVAL
from store.queries import StageView, get_session_view
from store.status import SessionStatus, StageStatus

POLL_INTERVAL = 0.1
PROGRESS_INTERVAL = 0.3
DEFAULT_KILL_TIMEOUT = 10.0
STAGE_CATEGORY = "workflow.stage.operations"
SESSION_CATEGORY = "workflow.session.operations"


class Interrupted(Exception):
    """Ctrl-C in the foreground: pause the session and let the user resume it later."""


@dataclass
class Outcome:
    """How a run ended: the exit code of `vc flow run` and a line for the user."""

    code: int
    message: str
    status: str | None = None


class Runner:
    def __init__(
        self,
        factory: Callable[[], Any],
        logging: Logging,
        session_id: str,
        *,
        workspace: Path,
        only_stage: str | None = None,
        on_update: Callable[[Any], None] | None = None,
    ) -> None:
        self.factory = factory
        self.log = logging
        self.session_id = session_id
        self.workspace = workspace
        self.only_stage = only_stage
        self.on_update = on_update
        self.host = _host()
        self.pid = os.getpid()
        self._db = factory()
        self.sessions = FlowSessionManager(self._db, actor="runner")
        self.stages = StageManager(self._db, actor="runner")
        self._stop = threading.Event()
        self._lost = threading.Event()
        self._interrupted = threading.Event()
        self._beat_thread: threading.Thread | None = None
        self.current_stage: str | None = None

    # -- logging -------------------------------------------------------------------------------

    def _say(self, text: str, level: str = "INFO", stage: str | None = None) -> None:
        from loguru import logger

        category = STAGE_CATEGORY if stage else SESSION_CATEGORY
        logger.bind(category=category, session_id=self.session_id, stage=stage).log(level, text)

    # -- lifecycle -----------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Called from a SIGINT handler: stop at the next poll, pausing the session."""
        self._interrupted.set()

    def claim(self) -> None:
        """Become the session's runner (refused while another live runner owns it)."""
        state = self.sessions.state(self.session_id)
        if state is None:
            raise SessionNotFound(f"no session matches {self.session_id!r}")
        self.sessions.start_session(
            self.session_id, runner_host=self.host, runner_pid=self.pid
        )

    def adopt(self) -> None:
        """Start a heartbeat for a claim made on our behalf, or claim now."""
        view = self._view()
        if view.runner_pid != self.pid or view.runner_host != self.host:
            self.claim()

    def run(self) -> Outcome:
        self.adopt()
        self._beat_thread = threading.Thread(target=self._beat, name="vc-heartbeat", daemon=True)
        self._beat_thread.start()
        self._say(f"runner started (pid {self.pid} on {self.host})")
        try:
            self._cleanup_leftovers()
            return self._run_stages()
        except Interrupted:
            return self._pause_on_interrupt()
        finally:
            self._stop.set()
            self.log.flush()
            try:
                self.sessions.release_runner(
                    self.session_id, runner_host=self.host, runner_pid=self.pid
                )
            except Exception:
                pass
            self._db.close()

    def _beat(self) -> None:
        with self.factory() as db:
            manager = FlowSessionManager(db, actor="runner")
            while not self._stop.wait(HEARTBEAT_INTERVAL):
                try:
                    if not manager.heartbeat(
                        self.session_id, runner_host=self.host, runner_pid=self.pid
                    ):
                        self._lost.set()
                        return
                except Exception:
                    db.rollback()  # database away for a moment: try again next beat

    # -- stages --------------------------------------------------------------------------------

    def _view(self) -> Any:
        self._db.commit()
        view = get_session_view(self._db, self.session_id)
        if view is None:
            raise SessionNotFound(f"session {self.session_id[:12]} was deleted")
        return view

    def _order(self, view: Any) -> list[StageView]:
        by_name = {s.name: s for s in view.stages}
        definition = view.definition or {}
        names = [s.name for s in view.stages]
        if definition.get("stages"):
            from store.workflows import WorkflowDefinition

            try:
                names = WorkflowDefinition.from_dict(definition).execution_order()
            except Exception:
                names = [s.name for s in view.stages]
        if self.only_stage is not None:
            names = [self.only_stage]
        return [by_name[n] for n in names if n in by_name]

    def _cleanup_leftovers(self) -> None:
        """After a crash: remove what is left of an interrupted stage's processes, then
        mark it for a new attempt."""
        view = self._view()
        for stage in view.stages:
            if stage.status not in (StageStatus.ACTIVE, StageStatus.PAUSED):
                continue
            row = self.stages.get_stage(stage.id)
            if row.pid and row.host == self.host:
                timeout = float(stage.config.get("kill_timeout") or DEFAULT_KILL_TIMEOUT)
                if kill_leftover_group(row.pid, row.pid_start, timeout):
                    self._say(f"removed leftover process group {row.pid}", "WARNING",
                              stage.name)
            elif row.pid and row.host and row.host != self.host:
                self._say(
                    f"stage was running on host {row.host} (pid {row.pid}); not signalled "
                    "from here", "WARNING", stage.name)
            if stage.stage_type != "manual":
                self.stages.update_stage_status(stage.id, StageStatus.PENDING)

    def _run_stages(self) -> Outcome:
        view = self._view()
        for stage in self._order(view):
            if stage.status == StageStatus.COMPLETED:
                continue
            outcome = self._wait_until_runnable()
            if outcome is not None:
                return outcome
            if stage.stage_type == "manual":
                outcome = self._manual_gate(stage)
            else:
                outcome = self._run_task(stage)
            if outcome is not None:
                return outcome
        if self.only_stage is not None:
            view = self._view()
            if any(s.status != StageStatus.COMPLETED for s in view.stages):
                self._say(f"stage {self.only_stage} completed; session stays ACTIVE")
                return Outcome(0, f"stage {self.only_stage} completed", view.status)
        self.sessions.complete(self.session_id)
        self._say("session completed")
        return Outcome(0, "completed", SessionStatus.COMPLETED)

    def _desired(self) -> tuple[str, str | None] | None:
        if self._interrupted.is_set():
            raise Interrupted
        state = self.sessions.state(self.session_id)
        if state is None:
            return None
        return state[0], state[2]

    def _wait_until_runnable(self) -> Outcome | None:
        """Between stages: wait while PAUSED; stop if aborted or deleted. A session paused
        before it ever started (PENDING) is claimed again once resumed."""
        announced = False
        while True:
            desired = self._desired()
            if desired is None:
                return Outcome(1, "session deleted", None)
            status, reason = desired
            if status == SessionStatus.FAILED:
                return Outcome(1, f"session failed: {reason or 'aborted'}", status)
            if status == SessionStatus.ACTIVE:
                return None
            if status == SessionStatus.PENDING:
                self.sessions.start_session(
                    self.session_id, runner_host=self.host, runner_pid=self.pid
                )
                return None
            if status == SessionStatus.COMPLETED:
                return Outcome(0, "completed", status)
            if not announced:
                self._notify()
                announced = True
            self._check_lost()
            time.sleep(POLL_INTERVAL * 2)

    def _check_lost(self) -> None:
        if self._lost.is_set():
            raise SessionNotFound("another runner took over this session")

    def _manual_gate(self, stage: StageView) -> Outcome | None:
        """A stage without `run`: pause the session with reason `waiting: <stage>`; the
        resume that follows completes the stage."""
        self.stages.update_stage_status(stage.id, StageStatus.PAUSED)
        try:
            self.sessions.pause(self.session_id, reason=f"waiting: {stage.name}")
        except Exception:
            pass  # paused or aborted meanwhile: the wait below sorts it out
        self._say(f"manual gate {stage.name}: waiting for resume", stage=stage.name)
        self._notify()
        while True:
            desired = self._desired()
            if desired is None:
                return Outcome(1, "session deleted", None)
            status, reason = desired
            if status == SessionStatus.FAILED:
                return Outcome(1, f"session failed: {reason or 'aborted'}", status)
            if status in (SessionStatus.ACTIVE, SessionStatus.PENDING):
                if status == SessionStatus.PENDING:
                    self.sessions.start_session(
                        self.session_id, runner_host=self.host, runner_pid=self.pid
                    )
                self.stages.update_stage_status(stage.id, StageStatus.COMPLETED)
                self._say(f"manual gate {stage.name} passed", stage=stage.name)
                self._notify()
                return None
            self._check_lost()
            time.sleep(POLL_INTERVAL * 2)

    def _stage_env(self, stage: StageView, attempt: int) -> dict[str, str]:
        env = dict(os.environ)
        env.update({str(k): str(v) for k, v in (stage.config.get("env") or {}).items()})
        env.update(
            VC_SESSION_ID=self.session_id, VC_STAGE=stage.name, VC_ATTEMPT=str(attempt)
        )
        return env

    def _stage_cwd(self, stage: StageView) -> str:
        cwd = stage.config.get("cwd")
        if not cwd:
            return str(self.workspace)
        path = Path(os.path.expandvars(os.path.expanduser(str(cwd))))
        return str(path if path.is_absolute() else self.workspace / path)

    def _run_task(self, stage: StageView) -> Outcome | None:
        retries = int(stage.config.get("retries") or 0)
        timeout = stage.config.get("timeout")
        kill_timeout = float(stage.config.get("kill_timeout") or DEFAULT_KILL_TIMEOUT)
        self.current_stage = stage.name
        while True:
            row = self.stages.update_stage_status(stage.id, StageStatus.ACTIVE,
                                                  new_attempt=True)
            attempt = row.attempt
            self._notify()
            result, detail = self._attempt(stage, attempt, timeout, kill_timeout)
            if result == "completed":
                self.stages.update_stage_status(stage.id, StageStatus.COMPLETED, exit_code=0)
                self._say(f"stage completed (attempt {attempt})", stage=stage.name)
                self._notify()
                return None
            if result == "stopped":
                return detail  # type: ignore[return-value]
            error, exit_code = detail  # type: ignore[misc]
            if attempt <= retries:
                self._say(f"attempt {attempt} failed: {error}; retrying "
                          f"({attempt}/{retries} retries used)", "WARNING", stage.name)
                continue
            self.stages.update_stage_status(
                stage.id, StageStatus.FAILED, error=error, exit_code=exit_code
            )
            reason = "timeout" if error == "timeout" else f"stage {stage.name} failed: {error}"
            self.sessions.fail(self.session_id, reason)
            self._say(f"stage failed: {error}", "ERROR", stage.name)
            self._notify()
            return Outcome(1, reason, SessionStatus.FAILED)

    def _attempt(
        self, stage: StageView, attempt: int, timeout: Any, kill_timeout: float
    ) -> tuple[str, Any]:
        """Run one attempt. Returns ("completed", None), ("failed", (error, exit_code)) or
        ("stopped", Outcome) when the session was aborted, deleted or interrupted."""
        progress = _ProgressSink()

        def on_lines(lines: list[tuple[float, str, str]]) -> None:
            batch = []
            for at, stream, text in lines:
                if text.startswith("::progress"):
                    value = parse_progress(text)
                    if value is not None:
                        progress.value = value
                        continue
                batch.append((at, "WARNING" if stream == "stderr" else "INFO", text))
            self.log.stage_lines(self.session_id, stage.name, batch)
            if batch:
                progress.last_line = batch[-1][2]

        proc = StageProcess(
            str(stage.config.get("run")),
            env=self._stage_env(stage, attempt),
            cwd=self._stage_cwd(stage),
            on_lines=on_lines,
        )
        try:
            proc.start()
        except StageStartError as exc:
            return "failed", (str(exc), None)
        self.stages.record_process(stage.id, pid=proc.pid, pid_start=proc.start_time,
                                   host=self.host)
        self._say(f"attempt {attempt} started: pid {proc.pid}", stage=stage.name)
        paused = False
        active_time = 0.0
        last_tick = time.monotonic()
        last_progress_write = 0.0
        written_progress: float | None = None
        self._progress = progress
        try:
            while True:
                code = proc.wait(POLL_INTERVAL)
                now = time.monotonic()
                if not paused:
                    active_time += now - last_tick
                last_tick = now
                if progress.value is not None and progress.value != written_progress and (
                    code is not None or now - last_progress_write >= PROGRESS_INTERVAL
                ):
                    self.stages.set_progress(stage.id, progress.value)
                    written_progress = progress.value
                    last_progress_write = now
                    self._notify()
                if code is not None:
                    self.stages.record_process(stage.id, pid=None, pid_start=None)
                    if code == 0:
                        return "completed", None
                    return "failed", (_describe_exit(code), code)
                try:
                    desired = self._desired()
                except Interrupted:
                    proc.terminate(kill_timeout)
                    raise
                if desired is None or self._lost.is_set():
                    code = proc.terminate(kill_timeout)
                    return "stopped", Outcome(1, "session deleted or taken over", None)
                status, reason = desired
                if status == SessionStatus.FAILED:
                    code = proc.terminate(kill_timeout)
                    self._say(f"terminated on {reason or 'abort'} (exit {code})", "WARNING",
                              stage.name)
                    self.stages.record_process(stage.id, pid=None, pid_start=None)
                    self._record_exit(stage.id, code)
                    return "stopped", Outcome(1, f"session {reason or 'aborted'}", status)
                if status == SessionStatus.PAUSED and not paused:
                    proc.pause()
                    paused = True
                    self.stages.update_stage_status(stage.id, StageStatus.PAUSED)
                    self._say("paused (SIGSTOP)", stage=stage.name)
                    self._notify()
                elif status == SessionStatus.ACTIVE and paused:
                    proc.resume()
                    paused = False
                    self.stages.update_stage_status(stage.id, StageStatus.ACTIVE)
                    self._say("resumed (SIGCONT)", stage=stage.name)
                    self._notify()
                if timeout and not paused and active_time > float(timeout):
                    code = proc.terminate(kill_timeout)
                    self._say(f"timed out after {float(timeout):g}s (exit {code})", "WARNING",
                              stage.name)
                    return "failed", ("timeout", code)
        finally:
            if proc.running:
                proc.terminate(kill_timeout)

    def _record_exit(self, stage_id: int, code: int | None) -> None:
        if code is not None:
            self.stages.record_exit_code(stage_id, code)

    def _pause_on_interrupt(self) -> Outcome:
        """Ctrl-C: the stage's processes are gone (terminated above); the stage goes back
        to PENDING for a new attempt and the session is PAUSED, resumable."""
        view = self._view()
        for stage in view.stages:
            if stage.status in (StageStatus.ACTIVE,):
                self.stages.update_stage_status(stage.id, StageStatus.PENDING)
        try:
            self.sessions.pause(self.session_id, reason="interrupted")
        except Exception:
            pass
        self._say("interrupted: session paused", "WARNING")
        return Outcome(
            130,
            f"interrupted: session {self.session_id[:12]} paused; resume it with "
            f"'vc flow session resume {self.session_id[:12]}'",
            SessionStatus.PAUSED,
        )

    def _notify(self) -> None:
        if self.on_update is not None:
            try:
                self.on_update(self)
            except Exception:
                pass

    @property
    def current_progress(self) -> float | None:
        progress = getattr(self, "_progress", None)
        return progress.value if progress else None

    @property
    def last_line(self) -> str | None:
        progress = getattr(self, "_progress", None)
        return progress.last_line if progress else None


class _ProgressSink:
    def __init__(self) -> None:
        self.value: float | None = None
        self.last_line: str | None = None


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


def _host() -> str:
    from store.identity import local_host

    return local_host()
