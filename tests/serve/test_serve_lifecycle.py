"""Nothing is left behind by a served dashboard: a tab closed, `q` typed in a tab, a server
stopped (SIGTERM, within 5 s with a tab open) or killed (SIGKILL) leave no dashboard
process, and a served throw-away demo leaves no runner and no folder. Real processes and a
WebSocket client speaking textual-serve's page protocol."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.processes import alive, processes_of
from tests.serve.conftest import Served, client_session, open_tab
from tests.waiting import wait_until


async def _open_dashboard(served: Served, session: Any) -> Any:
    tab = await open_tab(session, served)
    await tab.read_until("vc flow")
    wait_until(lambda: len(served.tabs()) == 1, "the tab's dashboard process", 20)
    return tab


async def test_a_closed_tab_leaves_no_dashboard_process(serve: Callable[..., Served]) -> None:
    served = serve()
    async with client_session() as session:
        tab = await _open_dashboard(served, session)
        (pid,) = served.tabs()
        await tab.ws.close()
        wait_until(lambda: not alive(pid), "the tab's dashboard to exit", timeout=10)
    assert served.process.poll() is None  # the server serves on


async def test_q_in_a_tab_ends_its_dashboard_and_closes_the_tab(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    async with client_session() as session:
        tab = await _open_dashboard(served, session)
        (pid,) = served.tabs()
        await tab.keys("q")
        assert await tab.closed_by_server()
        wait_until(lambda: not alive(pid), "the tab's dashboard to exit", timeout=10)


async def test_a_stopped_server_with_a_tab_open_exits_within_5_seconds(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    async with client_session() as session:
        await _open_dashboard(served, session)
        (pid,) = served.tabs()
        took = served.stop(signal.SIGTERM)
        assert took < 5.0, f"the server took {took:.1f}s to stop"
        assert served.process.returncode == 0
        wait_until(lambda: not alive(pid), "the tab's dashboard to exit", timeout=5)


async def test_a_killed_server_leaves_no_dashboard_process(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    async with client_session() as session:
        await _open_dashboard(served, session)
        (pid,) = served.tabs()
        served.stop(signal.SIGKILL)
        wait_until(lambda: not alive(pid), "the orphaned dashboard to exit", timeout=10)


def _served_demo(serve: Callable[..., Served], tmp_path: Path) -> tuple[Served, Path, Path]:
    temp = tmp_path / "tmp"
    temp.mkdir()
    served = serve("--demo", env={"TMPDIR": str(temp)}, unset=("VC_HOME",))
    (workspace,) = temp.glob("vc-demo-*")
    assert any(f"demo workspace: {workspace}" in line for line in served.printed)
    return served, temp, workspace


def _run_detached_in(workspace: Path, vc: Any) -> None:
    """A session started in the demo after the server started it (as `n` in a tab does)."""
    run = vc("flow", "run", "demo-train", "--detach", env={"VC_HOME": str(workspace)})
    assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
async def test_a_served_demo_leaves_no_runner_and_no_folder(
    serve: Callable[..., Served], tmp_path: Path, vc: Any, signum: int
) -> None:
    served, temp, workspace = _served_demo(serve, tmp_path)
    _run_detached_in(workspace, vc)
    async with client_session() as session:
        await _open_dashboard(served, session)
        runners = [pid for pid in processes_of(str(workspace)) if pid not in served.tabs()]
        assert len(runners) >= 3  # two demo runners, the one started here, the reaper
        served.stop(signum)
    try:
        wait_until(lambda: not processes_of(str(temp)), "every demo process to exit", 30)
        wait_until(lambda: not workspace.exists(), "the demo folder to be removed", 10)
    finally:
        for pid in processes_of(str(temp)):
            os.kill(pid, signal.SIGKILL)
