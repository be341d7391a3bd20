"""A workspace's own Python packages never replace vc's: every way a runner or a worker
starts (`run --detach`, `resume` of an orphan, `worker`, and `vc` itself) works from a
workspace, or with a `PYTHONPATH`, that holds packages named `app`, `store` and `widgets`.

These tests start `vc` as a user does, through the console script (the dashboard's `n`
and `r` are in tests/tui/test_tui_workspace_packages.py)."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import VC_SCRIPT, hijacked, run_vc_script, vc_env


def stored(workspace: Path, sid: str) -> Any:
    from store import get_session_factory, init_db
    from store.queries import get_session_view

    engine = init_db(f"sqlite:///{workspace / '.vc' / 'flow.db'}")
    try:
        with get_session_factory(engine)() as db:
            return get_session_view(db, sid)
    finally:
        engine.dispose()


def wait_status(workspace: Path, sid: str, status: str, timeout: float = 20) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        view = stored(workspace, sid)
        if view is not None and view.status == status:
            return view
        if time.monotonic() > deadline:
            raise AssertionError(f"session {sid[:8]} is {view and view.status}, not {status}")
        time.sleep(0.1)


#: Where the user types `vc`: in the workspace itself, or anywhere with the workspace on
#: PYTHONPATH (a common setting in a web project's shell).
PLACES = ["cwd", "pythonpath"]


def user_shell(workspace: Path, place: str) -> dict[str, Any]:
    if place == "cwd":
        return {"cwd": workspace, "env": {}}
    return {"cwd": workspace.parent, "env": {"PYTHONPATH": str(workspace)}}


@pytest.mark.parametrize("place", PLACES)
def test_run_detach_uses_vc_not_the_workspace_packages(hostile_packages: Path, place: str) -> None:
    ws = hostile_packages
    result = run_vc_script("flow", "run", "hello", "--detach", **user_shell(ws, place))
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    wait_status(ws, sid, "COMPLETED")
    assert hijacked(ws) == []


@pytest.mark.parametrize("place", PLACES)
def test_resume_of_an_orphan_starts_vcs_runner(hostile_packages: Path, place: str) -> None:
    from store import FlowSessionManager, get_session_factory, init_db
    from store.workflows import find_workflow

    ws = hostile_packages
    gone = subprocess.Popen(["true"])
    gone.wait()
    engine = init_db(f"sqlite:///{ws / '.vc' / 'flow.db'}")
    try:
        with get_session_factory(engine)() as db:
            manager = FlowSessionManager(db)
            definition = find_workflow(ws / "workflows", "hello")
            sid = manager.create_session("hello", definition=definition).id
            manager.start_session(sid, runner_pid=gone.pid)  # its runner is gone: orphaned
    finally:
        engine.dispose()
    result = run_vc_script("flow", "session", "resume", sid[:8], **user_shell(ws, place))
    assert result.returncode == 0, result.stderr
    assert "runner started" in result.stdout, result.stdout
    wait_status(ws, sid, "COMPLETED")
    assert hijacked(ws) == []


@pytest.mark.parametrize("place", PLACES)
def test_worker_runs_queued_sessions_with_vcs_code(hostile_packages: Path, place: str) -> None:
    ws = hostile_packages
    shell = user_shell(ws, place)
    queued = run_vc_script("flow", "run", "hello", "--queue", **shell)
    assert queued.returncode == 0, queued.stderr
    sid = queued.stdout.strip()
    log = open(ws.parent / "worker.err", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        [str(VC_SCRIPT), "flow", "worker"],
        cwd=shell["cwd"],
        env=vc_env(shell["env"]),
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    log.close()
    try:
        wait_status(ws, sid, "COMPLETED")
    finally:
        worker.send_signal(signal.SIGTERM)
        code = worker.wait(20)
    assert code == 0, (ws.parent / "worker.err").read_text()
    assert hijacked(ws) == []


def test_vc_list_with_the_workspace_on_pythonpath(hostile_packages: Path) -> None:
    """`vc` itself: a workspace package on PYTHONPATH must not replace vc's own."""
    ws = hostile_packages
    result = run_vc_script("flow", "list", **user_shell(ws, "pythonpath"))
    assert result.returncode == 0, result.stderr
    assert "hello" in result.stdout
    assert hijacked(ws) == []


def test_stages_still_get_pythonpath(hostile_packages: Path) -> None:
    """The runner ignores PYTHONPATH for itself only: a stage sees the user's setting."""
    ws = hostile_packages
    (ws / "workflows" / "env.yaml").write_text(
        'name: Env\nstages:\n  - name: show\n    run: echo "path=$PYTHONPATH"\n'
    )
    shell = user_shell(ws, "pythonpath")
    result = run_vc_script("flow", "run", "env", "--detach", **shell)
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    wait_status(ws, sid, "COMPLETED")
    logs = run_vc_script("flow", "session", "logs", sid, **shell)
    assert f"path={ws}" in logs.stdout, logs.stdout
