"""Starting runners in the background (`run --detach`, `resume`, workers).

A detached runner is a new process in its own session (so closing the terminal does not
hang it up), with stdin from /dev/null and stdout/stderr appended to the session's log file.
The launcher waits until the child has claimed the session (or died, whose reason it then
reports), so a command that returns has a runner that really runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from typing import Any

CLAIM_TIMEOUT = 20.0


class LaunchError(Exception):
    pass


def spawn_runner(ctx: Any, session_id: str, *, only_stage: str | None = None) -> int:
    """Start `python -m app.runner SESSION_ID` detached; return its pid once it owns the
    session."""
    from store.identity import local_host
    from store.queries import get_session_view, runner_claimed

    log_path = ctx.logging.files.session_path(session_id) if ctx.logging else os.devnull
    if ctx.logging:
        ctx.logging.files.root.mkdir(mode=0o700, parents=True, exist_ok=True)
    args = [sys.executable, "-m", "app.runner", session_id]
    if only_stage:
        args += ["--stage", only_stage]
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        child = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=fd,
            start_new_session=True,
            cwd=str(ctx.settings.workspace),
            env={
                **os.environ,
                "VC_HOME": str(ctx.settings.workspace),
                "VC_DATABASE_URL": ctx.settings.database_url,
                "VC_LOG_DIR": str(ctx.settings.log_dir),
                "VC_WORKFLOWS_DIR": str(ctx.settings.workflows_dir),
            },
        )
    finally:
        os.close(fd)
    deadline = time.monotonic() + CLAIM_TIMEOUT
    with ctx.factory() as db:
        while time.monotonic() < deadline:
            code = child.poll()
            db.commit()
            view = get_session_view(db, session_id)
            if view is not None and view.runner_pid == child.pid:
                return child.pid
            if runner_claimed(db, session_id, local_host(), child.pid):
                return child.pid  # it claimed the session and is done already
            if code is not None:
                raise LaunchError(_child_error(log_path, code))
            time.sleep(0.05)
    child.terminate()
    raise LaunchError(f"the runner did not start within {CLAIM_TIMEOUT:g}s")


def _child_error(log_path: Any, code: int) -> str:
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 4096))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
        for line in reversed(tail):
            if line.startswith("vc: error: "):
                return line[len("vc: error: "):]
    except OSError:
        pass
    return f"the runner exited with code {code} before it started"


def ensure_runner(ctx: Any, session_id: str) -> str:
    """After resume: start a runner when the session has work and nobody runs it.
    Returns a note for the user ('' when its own runner picks the change up)."""
    from store.queries import get_session_view

    with ctx.factory() as db:
        view = get_session_view(db, session_id)
    if view is None or view.status not in ("ACTIVE", "PENDING"):
        return ""
    if view.runner_pid is not None and not view.orphaned:
        return ""
    if not view.stages or all(s.status == "COMPLETED" for s in view.stages):
        return ""
    try:
        pid = spawn_runner(ctx, session_id)
    except LaunchError as exc:
        from app.cli.common import error_line

        error_line(f"could not start a runner: {exc}")
        return " (no runner: see the error above)"
    return f" (runner started: pid {pid})"
