"""Stops and removes a served throw-away demo once its server is gone, however it ended.

`vc flow tui --demo --serve` makes a demo workspace in the temp directory whose sessions run
under detached runners. The server cannot promise to clean up after itself (a SIGKILL gives
it no chance), so it starts this small process first (``python -I -m app.tui.demo_reaper``,
in a session of its own so that a Ctrl-C in the server's terminal does not reach it),
holding the write end of its stdin. The end of that pipe, whether the server closed it on
its way out or the kernel did when the server died, is the signal: every session of the
demo workspace that is still live is aborted (its runner then stops its stage and exits),
the runners are given a moment to let go, and the workspace is removed. A SIGTERM sent to
it does the same at once.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

RUNNERS_GRACE = 15.0
"""Seconds the demo's runners get to exit after the abort, before the folder goes anyway."""

LIVE = ("PENDING", "ACTIVE", "PAUSED")


def start_reaper(workspace: Path) -> subprocess.Popen[bytes]:
    """Start the reaper of ``workspace``; its stdin is the pipe whose end it waits for."""
    return subprocess.Popen(
        [sys.executable, "-I", "-m", "app.tui.demo_reaper", str(workspace)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
        env={**os.environ, "VC_HOME": str(workspace)},
    )


def stop_workspace(workspace: Path) -> None:
    """Abort every live session of the demo, wait for its runners, remove the folder."""
    from app.console import error_line, failure, warning_line
    from app.context import open_context
    from store import FlowSessionManager
    from store.errors import StoreError
    from store.identity import pid_alive
    from store.queries import SessionFilter, get_session_view, list_sessions

    try:
        with open_context(warn=warning_line) as ctx:
            with ctx.factory() as db:
                live = [
                    view.id
                    for status in LIVE
                    for view in list_sessions(db, SessionFilter(status=status), limit=100_000)
                ]
                db.commit()
                manager = FlowSessionManager(db, actor="demo")
                for sid in live:
                    try:
                        manager.abort(sid, reason="aborted")
                    except StoreError:
                        pass
            deadline = time.monotonic() + RUNNERS_GRACE
            for sid in live:
                while time.monotonic() < deadline:
                    with ctx.factory() as db:
                        view = get_session_view(db, sid)
                    if view is None or view.runner_pid is None or not pid_alive(view.runner_pid):
                        break
                    time.sleep(0.1)
    except Exception as exc:  # the store refused or is gone: one line, then the folder
        known = failure(exc)
        if known is None:
            raise
        error_line(known[0])
    finally:
        shutil.rmtree(workspace, ignore_errors=True)


class _Now(Exception):
    pass


def _now(signum: int, frame: object) -> None:
    raise _Now


def main(argv: list[str]) -> int:
    # A Ctrl-C or hang-up of the server's terminal is the server's business; SIGTERM sent
    # to this process itself means "clean up now".
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _now)
    workspace = Path(argv[0])
    try:
        while sys.stdin.buffer.read(4096):
            pass
    except _Now:
        pass
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    stop_workspace(workspace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
