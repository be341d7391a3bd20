"""The runners the dashboard starts (`n`, and `r` on an orphan) run vc's code, not the
packages of a workspace that has its own `app`, `store` and `widgets` (the dashboard runs
in the workspace, and so do its runners)."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from tests.conftest import hijacked
from tests.tui.tui_testkit import (
    loaded,
    make_session,
    manager,
    pick_workflow,
    status,
    view,
    wait_for,
)

SIZE = (120, 36)


async def test_n_starts_vcs_runner_in_a_workspace_with_an_app_package(
    hostile_packages: Path, ctx: Any, make_app: Any
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pick_workflow(pilot, "hello")
        await pilot.press("enter", "enter")
        await wait_for(
            pilot, lambda: app.dashboard.table.total == 1, timeout=10, what="the new row"
        )
        sid = app.dashboard.table.rows[0].id
        await wait_for(pilot, lambda: status(ctx, sid) == "COMPLETED", timeout=20, what="COMPLETED")
    assert hijacked(hostile_packages) == []


async def test_r_on_an_orphan_starts_vcs_runner_in_a_workspace_with_an_app_package(
    hostile_packages: Path, ctx: Any, make_app: Any
) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    sid = make_session(ctx, "hello")
    with ctx.factory() as db:
        manager(db).start_session(sid, runner_pid=gone.pid)
    assert view(ctx, sid).orphaned
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: status(ctx, sid) == "COMPLETED", timeout=20, what="COMPLETED")
    assert hijacked(hostile_packages) == []
