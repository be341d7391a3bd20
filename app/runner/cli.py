"""`vc flow run` and the detached runner's entry: thin glue between the CLI, the managers
and :class:`app.runner.runner.Runner`."""

from __future__ import annotations

import shutil
import signal
import sys
import threading
import time
from typing import Any

from app.cli.common import error_line, fail, open_store, progress_text


def run_command(
    target: str,
    *,
    session_id: str | None,
    detach: bool,
    queue: bool,
    name: str | None,
) -> int:
    from store import FlowSessionManager
    from store.queries import get_session_view
    from store.workflows import find_workflow

    if detach and queue:
        raise fail("--detach and --queue exclude each other", 2)
    workflow_id, _, stage = target.partition(":")
    if not workflow_id or (":" in target and not stage):
        raise fail(f"invalid target {target!r}: use WORKFLOW or WORKFLOW:STAGE", 2)
    with open_store() as ctx:
        with ctx.session() as db:
            manager = FlowSessionManager(db)
            if session_id is not None:
                sid = manager.resolve_session_id(session_id)
                view = get_session_view(db, sid)
                assert view is not None
                if view.workflow_id != workflow_id:
                    raise fail(
                        f"session {sid[:12]} belongs to workflow {view.workflow_id!r}, "
                        f"not {workflow_id!r}", 2)
                if view.status in ("COMPLETED", "FAILED"):
                    raise fail(
                        f"session {sid[:12]} is {view.status}: nothing to run; "
                        f"'vc flow session retry {sid[:12]}' resets its failed stages")
                if view.status == "PAUSED":
                    raise fail(
                        f"session {sid[:12]} is PAUSED: resume it with "
                        f"'vc flow session resume {sid[:12]}'")
                names = {s.name for s in view.stages}
            else:
                definition = find_workflow(ctx.settings.workflows_dir, workflow_id)
                names = {s.name for s in definition.stages}
                if stage and stage not in names:
                    raise fail(f"workflow {workflow_id!r} has no stage {stage!r}; "
                               f"stages: {', '.join(sorted(names))}", 2)
                sid = manager.create_session(
                    definition.id, name=name, definition=definition, queued=queue
                ).id
            if stage and stage not in names:
                raise fail(f"session {sid[:12]} has no stage {stage!r}", 2)
        if queue:
            print(sid)
            return 0
        if detach:
            from app.runner.launch import LaunchError, spawn_runner

            try:
                spawn_runner(ctx, sid, only_stage=stage or None)
            except LaunchError as exc:
                raise fail(f"could not start a runner for {sid[:12]}: {exc}") from None
            print(sid)
            return 0
        return _foreground(ctx, sid, stage or None)


def _foreground(ctx: Any, sid: str, stage: str | None) -> int:
    from app.runner.runner import Runner

    assert ctx.logging is not None
    display = _Display(sid)
    runner = Runner(ctx.factory, ctx.logging, sid, workspace=ctx.settings.workspace,
                    only_stage=stage, on_update=display.update)
    previous = signal.signal(signal.SIGINT, lambda *_: runner.interrupt())
    signal.signal(signal.SIGTERM, lambda *_: runner.interrupt())
    display.start(runner)
    try:
        outcome = runner.run()
    finally:
        display.stop()
        signal.signal(signal.SIGINT, previous)
    if outcome.code == 0:
        print(f"{outcome.status or 'done'}: {sid[:12]} ({outcome.message})")
    elif outcome.code == 130:
        error_line(outcome.message)
    else:
        error_line(f"session {sid[:12]}: {outcome.message}")
    return outcome.code


class _Display:
    """The foreground progress display: one refreshed status line on a terminal (stage,
    bar, last log line), or one line per stage change when stderr is not a terminal."""

    def __init__(self, sid: str) -> None:
        self.sid = sid
        self.tty = sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._last_plain = ""

    def start(self, runner: Any) -> None:
        self._runner = runner
        print(f"session {self.sid} (Ctrl-C pauses it)", file=sys.stderr, flush=True)
        if self.tty:
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()

    def _line(self) -> str:
        from store.text import clean_text

        runner = self._runner
        stage = getattr(runner, "current_stage", None)
        if stage is None:
            return ""
        progress = getattr(runner, "current_progress", None) or 0.0
        last = clean_text(runner.last_line or "")
        return f"{clean_text(stage)} {progress_text(progress)}  {last}"

    def _loop(self) -> None:
        while not self._stop.wait(0.2):
            width = shutil.get_terminal_size((100, 24)).columns
            line = self._line()[: width - 1]
            sys.stderr.write(f"\r\x1b[2K{line}")
            sys.stderr.flush()

    def update(self, runner: Any) -> None:
        if self.tty:
            return
        line = self._line()
        stage_part = line.split("  ")[0]
        if stage_part and stage_part != self._last_plain:
            self._last_plain = stage_part
            print(f"{time.strftime('%H:%M:%S')} {stage_part}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(1)
            sys.stderr.write("\r\x1b[2K")
            sys.stderr.flush()


def detached_main(argv: list[str]) -> int:
    """Entry of a background runner: stdio is the session's log file."""
    import argparse

    from app.cli.common import translate_errors
    from app.runner.runner import Runner

    parser = argparse.ArgumentParser(prog="python -m app.runner")
    parser.add_argument("session_id")
    parser.add_argument("--stage")
    args = parser.parse_args(argv)
    try:
        with open_store() as ctx, translate_errors():
            assert ctx.logging is not None
            runner = Runner(ctx.factory, ctx.logging, args.session_id,
                            workspace=ctx.settings.workspace, only_stage=args.stage)
            signal.signal(signal.SIGTERM, lambda *_: runner.interrupt())
            signal.signal(signal.SIGHUP, signal.SIG_IGN)
            outcome = runner.run()
            return 0 if outcome.code in (0, 130) else outcome.code
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # a detached runner's last word goes to the session log
        error_line(f"runner crashed: {type(exc).__name__}: {exc}")
        return 1
