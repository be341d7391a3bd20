"""SVG snapshots of the dashboard's main states: empty, running, paused, failed, help.

What varies between runs is frozen: the rows are written with fixed ids, times and hosts
(``seed_frozen_store``), the widgets get a fixed clock, and the log pane's local time is
UTC. Regenerate after a deliberate change with ``pytest tests/tui --snapshot-update`` and
look at the SVGs before committing them.

(These tests are synchronous: ``snap_compare`` runs the app in an event loop of its own.)
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.tui.tui_testkit import (
    FROZEN_IDS,
    FROZEN_MATRIX_ID,
    frozen_clock,
    loaded,
    seed_frozen_matrix,
    seed_frozen_store,
    select,
    wait_for,
)
from widgets.help import HelpScreen

SIZE = (130, 36)


@pytest.fixture
def frozen_app(ctx: Any, frozen_tz: None) -> Any:
    from app.tui.app import FlowApp

    def make(seed: bool = True, matrix: bool = False) -> Any:
        if seed:
            seed_frozen_store(ctx.factory)
        if matrix:
            seed_frozen_matrix(ctx.factory)
        return FlowApp(ctx, poll_interval=0.1, clock=frozen_clock)

    return make


def _on(key: str | None, then: tuple[str, ...] = ()) -> Any:
    """A ``run_before``: wait for the data, put the cursor on session ``key``, press
    ``then``, and wait until everything the screen shows has arrived."""

    async def run_before(pilot: Any) -> None:
        app = pilot.app
        await loaded(pilot, selected=key is not None)
        if key is not None:
            await select(pilot, FROZEN_IDS.get(key, key))
            await wait_for(pilot, lambda: app.dashboard.log_pane.line_count > 0, what="its log")
            await wait_for(
                pilot,
                lambda: all(v.is_mounted for v in app.dashboard.stages.row_views),
                what="its stage rows",
            )
        await pilot.press(*then)
        if "question_mark" in then:
            await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        await pilot.pause(0.2)

    return run_before


def test_snapshot_empty(snap_compare: Any, frozen_app: Any) -> None:
    assert snap_compare(frozen_app(seed=False), terminal_size=SIZE, run_before=_on(None))


def test_snapshot_running(snap_compare: Any, frozen_app: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=_on("train"))


def test_snapshot_paused(snap_compare: Any, frozen_app: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=_on("release"))


def test_snapshot_failed(snap_compare: Any, frozen_app: Any) -> None:
    assert snap_compare(frozen_app(), terminal_size=SIZE, run_before=_on("backup"))


def test_snapshot_help(snap_compare: Any, frozen_app: Any) -> None:
    assert snap_compare(
        frozen_app(), terminal_size=SIZE, run_before=_on("train", ("question_mark",))
    )


def test_snapshot_matrix(snap_compare: Any, frozen_app: Any) -> None:
    """A matrix stage opened from the stage list (tab, down, enter), the cursor on one of
    its instances, and the log naming the instance of each line."""
    assert snap_compare(
        frozen_app(matrix=True),
        terminal_size=SIZE,
        run_before=_on(FROZEN_MATRIX_ID, ("tab", "down", "enter", "down", "down")),
    )
