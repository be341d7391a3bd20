"""`vc flow run`: a session's stages run in this terminal with a live display, in the
background (``--detach``) or queued for a worker (``--queue``); the runner itself is
:class:`app.runner.runner.Runner`.

Refusals happen before anything runs, each as one line naming what to do instead:

* `run --session` of a COMPLETED or FAILED session: nothing to run (`retry` first);
* of a PAUSED one whose runner is alive, or that waits at a manual gate: `resume` it, or
  `approve` the gate (a run is not a way to pass a gate unseen);
* of an ACTIVE one that a live runner owns: refused, naming that runner's host and pid
  (the store's claim checks the same thing again, so a race cannot start two runners).

A PAUSED session that no live runner holds (it ran one stage, ``ran a only``, or its
runner is gone) is resumed by the run, then run here: `run W:b --session ID` after
`run W:a --session ID` steps through a session a stage at a time, in the foreground.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time
from typing import Any

from app.cli.common import error_line, fail, open_store, progress_text, translate_errors
from app.console import result_line, to_stderr


def run_command(
    target: str,
    *,
    session_id: str | None,
    detach: bool,
    queue: bool,
    name: str | None,
    params: dict[str, str] | None = None,
    max_parallel: int | None = None,
) -> int:
    """``target`` is ``WORKFLOW``, ``WORKFLOW:STAGE`` (every instance of a matrix stage) or
    ``WORKFLOW:STAGE[key=value,…]`` (one instance, keys in any order): what is run is
    checked against the workflow (or the session's stages) before anything is created.

    ``max_parallel`` (``--max-parallel N``) is written into a new session's definition
    snapshot, so every runner of it obeys it (detached, a worker's, a takeover's). With
    ``--session`` it is refused: a session keeps what it was created with, like its
    parameters."""
    from store.definitions import MAX_PARALLEL
    from store.stage_select import parse_stage

    if detach and queue:
        raise fail("--detach and --queue exclude each other", 2)
    if queue and session_id is not None:
        raise fail(
            "--queue queues a new session for a worker; to run an existing one use "
            "--session without --queue (or 'vc flow session resume')",
            2,
        )
    if queue and ":" in target:
        raise fail(
            "--queue queues a whole session (a worker runs every stage): leave out :STAGE, "
            "or run the stage with --detach",
            2,
        )
    if params and session_id is not None:
        raise fail(
            "--param gives values to a new session; a session keeps the parameters it was "
            "created with (see 'vc flow session show')",
            2,
        )
    if name is not None and session_id is not None:
        raise fail(
            "--name names a new session; a session keeps the name it was created with "
            "(see 'vc flow session show')",
            2,
        )
    if max_parallel is not None and not 1 <= max_parallel <= MAX_PARALLEL:
        raise fail(
            f"--max-parallel {max_parallel}: expected a number of stages from 1 to {MAX_PARALLEL}",
            2,
        )
    if max_parallel is not None and session_id is not None:
        raise fail(
            "--max-parallel is set for a new session; a session keeps the value it was "
            "created with (run the workflow without --session for a new one)",
            2,
        )
    workflow_id, _, stage = target.partition(":")
    if not workflow_id or (":" in target and not stage):
        raise fail(f"invalid target {target!r}: use WORKFLOW or WORKFLOW:STAGE", 2)
    from app.cli.session import check_workflow_id

    check_workflow_id(workflow_id)  # a path or a control character: usage, nothing opened
    if stage:
        with translate_errors():
            parse_stage(stage)  # a malformed STAGE[…] is a usage error: nothing opened
    if session_id is None:
        return _run_new(workflow_id, stage, detach, queue, name, params, max_parallel)
    from app.cli.direct import refuse_without_store

    with translate_errors():
        refuse_without_store([session_id], postgresql=True)  # no store: no session, none made
    from store import FlowSessionManager
    from store.queries import get_session_view
    from store.stage_select import select_stage

    with open_store() as ctx:
        with ctx.session() as db:
            manager = FlowSessionManager(db)
            sid = manager.resolve_session_id(session_id)
            view = get_session_view(db, sid)
            if view is None:
                raise fail(f"no session matches {session_id!r}")
            paused = _check_runnable(view, workflow_id)
            only = None
            if stage:
                rows = [(s.name, s.config) for s in view.stages]
                only = select_stage(stage, rows, f"session {sid[:12]}")
                _refuse_completed(view, only)
            resumed = None
            if paused:  # nothing refused it: the run resumes it (a `resume` event)
                resumed = manager.resume(sid, expected_version=view.version).version
        if detach:
            from app.runner.launch import pause_without_runner, start_runner

            started = start_runner(ctx, sid, only_stage=only)
            if not started.started:
                if resumed is not None:  # not left ACTIVE with nothing to run it
                    pause_without_runner(ctx, sid, started.message, resumed)
                raise fail(f"could not start a runner for {sid[:12]}: {started.message}")
            print(sid)
            return 0
        with _Interrupts() as interrupts:
            return _foreground(ctx, sid, only, view.name, interrupts)


def _run_new(
    workflow_id: str,
    stage: str,
    detach: bool,
    queue: bool,
    name: str | None,
    params: dict[str, str] | None,
    max_parallel: int | None,
) -> int:
    """A new session of the workflow: for `--queue` and `--detach` written on the driver
    path when the store allows it (no ORM imported), else, and in the foreground, through
    the managers; the same rows either way."""
    from app.cli import direct
    from app.settings import Settings
    from store.graph import expand
    from store.identity import local_host
    from store.new_session import new_session
    from store.stage_select import select_stage
    from store.workflows import find_workflow

    settings = Settings.from_env()
    only: str | None = None
    with translate_errors():
        definition = find_workflow(settings.workflows_dir, workflow_id)
        if stage:
            rows = [(r["name"], r["config"]) for r in expand(definition.to_dict())]
            only = select_stage(stage, rows, f"workflow {workflow_id!r}")
        # In the foreground this process is the runner: the session is created claimed
        # by it, one transaction for the session, its stages and the claim.
        claim = None if queue or detach else (local_host(), os.getpid())
        new = new_session(
            definition.id,
            name=name,
            definition=definition,
            queued=queue,
            params=params,
            runner=claim,
            max_parallel=max_parallel,
        )
    if not (queue or detach):
        # This process is the runner, which needs the ORM anyway: the session is written
        # on its connection (the driver path would add a connection and a log write of
        # its own, for a first stage that starts no sooner). A signal from here on pauses
        # the session it writes, rather than leave it claimed by a process that is gone.
        with _Interrupts() as interrupts, open_store() as ctx:
            if interrupts.received:  # nothing written yet: nothing to pause
                error_line("interrupted")
                return 128 + interrupts.received[0]
            with ctx.session() as db:
                ctx.sessions(db).insert_session(new)
            return _foreground(ctx, new.id, only, new.name, interrupts)
    with translate_errors():
        written = direct.create(settings, new)
    if not written:
        with open_store() as ctx, ctx.session() as db:
            ctx.sessions(db).insert_session(new)
            settings = ctx.settings
    if queue:
        print(new.id)
        return 0
    from app.logging import LogFiles
    from app.runner.launch import start_detached

    log_path = LogFiles(settings.log_dir).session_path(new.id)
    started = start_detached(settings, new.id, log_path, only_stage=only)
    if not started.started:
        raise fail(f"could not start a runner for {new.id[:12]}: {started.message}")
    print(new.id)
    return 0


def _check_runnable(view: Any, workflow_id: str) -> bool:
    """Refuse `run --session` on a session that has nothing to run, a live runner or a
    gate waiting for its approval; True when it is PAUSED and the run must resume it."""
    short = view.id[:12]
    if view.workflow_id != workflow_id:
        raise fail(f"session {short} belongs to workflow {view.workflow_id!r}, not {workflow_id!r}")
    if view.status == "PAUSED":
        gate = view.waiting_gate
        if gate is not None:
            from store.text import clean_text

            name = clean_text(gate.name)
            raise fail(
                f"session {short} is PAUSED waiting at gate {name}: pass it with "
                f"'vc flow session approve {short} {name}'"
            )
        if view.runner_pid is None or view.orphaned:
            return True
    from app.runner.launch import run_refusal

    why = run_refusal(view)
    if why is not None:
        raise fail(why)
    return False


def _refuse_completed(view: Any, only: str) -> None:
    """`run W:STAGE --session ID` of a stage with nothing left to run, said before the
    session is touched: every instance COMPLETED (a stage never runs twice), or those
    not completed FAILED (a session's retry resets them; a run would only fail it)."""
    from store.graph import stage_of
    from store.text import clean_text

    chosen = [s for s in view.stages if only in (s.name, stage_of(s.name, s.config))]
    what = f"stage {clean_text(only)} of session {view.id[:12]}"
    if chosen and all(s.status == "COMPLETED" for s in chosen):
        raise fail(
            f"{what} is COMPLETED: a stage never runs twice (start a new session to run it again)"
        )
    if chosen and all(s.status in ("COMPLETED", "FAILED") for s in chosen):
        raise fail(
            f"{what} has FAILED: it runs again after the session's retry, once the session "
            f"has failed ('vc flow session retry {view.id[:12]}')"
        )


def _foreground(ctx: Any, sid: str, stage: str | None, name: str, interrupts: _Interrupts) -> int:
    """Run in this process with a live display; Ctrl-C (SIGINT), SIGTERM and a closed
    terminal (SIGHUP) pause the session and exit 128 + the signal (130, 143, 129: what a
    shell reports for a command the signal ended) with how to resume it. The last line
    names the session by id and name: ``COMPLETED: 3f2a1b2c3d4e (nightly run)``."""
    from app.runner.entry import keep_start_up_out_of_the_collector
    from app.runner.notifications import drain as drain_notifications
    from app.runner.runner import Runner
    from store.text import clean_text

    assert ctx.logging is not None
    display = _Display(sid)
    runner = Runner(
        ctx.factory,
        ctx.logging,
        sid,
        workspace=ctx.settings.workspace,
        only_stage=stage,
        on_update=display.update,
    )
    interrupts.attach(runner)
    runner.claim()  # a refusal (live runner elsewhere) is all the user sees
    keep_start_up_out_of_the_collector()
    display.start(runner)
    try:
        outcome = runner.run()
    finally:
        display.stop()
        interrupts.restore()  # a Ctrl-C from here (notifications still sending) ends vc
    label = f"{sid[:12]} ({clean_text(name)})"
    if outcome.code == 0:
        detail = "" if outcome.message == "completed" else f": {outcome.message}"
        result_line(f"{outcome.status or 'done'}: {label}{detail}")
    elif outcome.code == 130:  # not an error: what the user asked for, and how to go on
        message = outcome.message.replace(f"session {sid[:12]}", f"session {label}", 1)
        to_stderr(f"vc: {message}\n")
    else:
        error_line(f"session {label}: {outcome.message}")
    drain_notifications()
    if outcome.code == 130 and interrupts.received:
        return 128 + interrupts.received[0]
    return outcome.code


def _fit(line: str, width: int) -> str:
    """``line`` in at most ``width`` terminal cells (a wide character takes two), "…"
    where it is cut."""
    from rich.cells import cell_len, set_cell_size

    if cell_len(line) <= width:
        return line
    return set_cell_size(line, max(width - 1, 0)) + "…" if width > 0 else ""


class _Interrupts:
    """SIGINT, SIGTERM and SIGHUP of a foreground run, caught from before its session is
    written until the run ends: one that comes before the runner exists is kept and given
    to it as soon as it does (the run then pauses before its first stage), so no signal
    leaves a session claimed by a process that is gone. A second Ctrl-C hurries the stop
    (SIGKILL at once instead of after ``kill_timeout``). Once the run is over, the
    signals are given back (:meth:`restore`): a Ctrl-C then ends vc at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.received: list[int] = []
        self._runner: Any = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> _Interrupts:
        self._previous = {sig: signal.signal(sig, self._on_signal) for sig in self.SIGNALS}
        return self

    def __exit__(self, *_exc: object) -> None:
        self.restore()

    def restore(self) -> None:
        """Give the signals back to the handlers they had (once the run is over)."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def attach(self, runner: Any) -> None:
        self._runner = runner
        if self.received:
            runner.interrupt()

    def _on_signal(self, signum: int, _frame: object) -> None:
        again = signum == signal.SIGINT and signal.SIGINT in self.received
        self.received.append(signum)
        runner = self._runner
        if runner is None:
            return  # given to the runner by attach
        if again:
            runner.hurry()  # a second Ctrl-C: no waiting out kill_timeout
        else:
            runner.interrupt()


class _Display:
    """The foreground progress display, on stderr (stdout keeps the final result line).

    On a terminal: one status line refreshed five times a second (stage, bar, last output
    line), cleaned of control sequences and cut to the width. Otherwise (a pipe, CI): one
    line per stage change and per gate, so logs stay readable. Writing to a terminal that
    went away must not kill the run, so write errors are ignored.

    Control from elsewhere shows too: a pause, resume or abort typed on another terminal
    or host prints one line saying who did it (``14:02:11 session paused by ana on
    build-02``), and while paused the live line starts with ``PAUSED by …`` instead of
    looking frozen.
    """

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._last_plain = ""
        self._results_shown = 0
        self._notes_shown = 0
        #: Lines the live display drew last time (it redraws them in place).
        self._drawn = 0
        #: Off a terminal: the stages whose start was printed (each is printed once).
        self._started: set[str] = set()

    def _write(self, text: str) -> None:
        to_stderr(text)

    def start(self, runner: Any) -> None:
        self._runner = runner
        how = "Ctrl-C" if self.tty else "SIGINT, SIGTERM or SIGHUP"
        self._write(f"session {self.sid} ({how} pauses it)\n")
        if self.tty:
            self._thread = threading.Thread(target=self._loop, name="vc-display", daemon=True)
            self._thread.start()

    def _gate_part(self) -> str:
        from app.runner.notifications import action
        from app.runner.runner import checklist_suffix
        from store.text import clean_text

        runner = self._runner
        _, command = action("gate", self.sid, gate=runner.waiting_at)
        return clean_text(
            f"{runner.waiting_at}: manual gate, waiting for '{command}'"
            + checklist_suffix(runner.waiting_checklist)
        )

    def _stage_part(self) -> str:
        from store.text import clean_text

        runner = self._runner
        if runner.waiting_at:
            return self._gate_part()
        stage = runner.current_stage
        if stage is None:
            return ""
        return f"{clean_text(stage)} {progress_text(runner.current_progress or 0.0)}"

    def _live_line(self) -> str:
        from store.text import clean_text

        runner = self._runner
        line = self._stage_part()
        if runner.waiting_at:
            return line
        if runner.paused_by:
            resume = f"(vc flow session resume {self.sid[:12]})"
            return clean_text(f"PAUSED by {runner.paused_by}  ") + f"{line}  {resume}"
        if line:
            line = f"{line}  {clean_text(runner.last_line or '')}"
        return line

    def _notes(self) -> str:
        """The control notes not shown yet, one stamped line each."""
        from store.text import clean_text

        notes = self._runner.control_notes
        new, self._notes_shown = notes[self._notes_shown :], len(notes)
        stamp = time.strftime("%H:%M:%S")
        return "".join(f"{stamp} {clean_text(note)}\n" for note in new)

    def _live_lines(self, height: int, width: int = 100) -> list[str]:
        """One line per running stage while several run (each with its bar and last
        output line), else the single status line; a gate's waiting line is wrapped to
        the width, so its command and checklist can be read whole."""
        from store.text import clean_text

        runner = self._runner
        if runner.waiting_at:
            import textwrap

            lines = textwrap.wrap(self._live_line(), max(width - 1, 20)) or [""]
            return lines[: max(height - 2, 1)]
        running = runner.running_view()
        if len(running) <= 1 or runner.paused_by:
            return [self._live_line()]
        room = max(height - 2, 1)
        shown = running if len(running) <= room else running[: room - 1]
        lines = [
            f"{clean_text(name)} {progress_text(progress or 0.0)}  {clean_text(last or '')}"
            for name, progress, last in shown
        ]
        if len(shown) < len(running):
            lines.append(f"… and {len(running) - len(shown)} more running")
        return lines

    def _top(self) -> str:
        """The control sequence back to the first line of what was drawn last."""
        return f"\x1b[{self._drawn - 1}F" if self._drawn > 1 else "\r"

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            width, height = shutil.get_terminal_size((100, 24))
            lines = [_fit(line, width - 1) for line in self._live_lines(height, width)]
            self._write(self._top() + "\x1b[J" + self._notes() + "\n".join(lines))
            self._drawn = len(lines)

    def update(self, runner: Any) -> None:
        """Off a terminal: how each stage ended, then a stage starting or a gate waiting,
        each once, and what others did to the session, as plain lines."""
        if self.tty:
            return
        from store.text import clean_text

        self._write(self._notes())
        stamp = time.strftime("%H:%M:%S")
        for stage, text in runner.stage_results[self._results_shown :]:
            self._write(f"{stamp} {clean_text(f'{stage}: {text}')}\n")
            self._started.add(stage)  # an ended stage is not "started" after
        self._results_shown = len(runner.stage_results)
        for stage in runner.running_stages:
            if stage not in self._started:
                self._started.add(stage)
                self._write(f"{stamp} {clean_text(stage)}: started\n")
        if runner.waiting_at:
            key = f"gate {runner.waiting_at}"
            if key != self._last_plain:
                self._last_plain = key
                self._write(f"{stamp} {self._gate_part()}\n")

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
            self._write(self._top() + "\x1b[J")
        if self._runner is not None:
            self._write(self._notes())  # e.g. an abort seen just before the end
