"""A matrix stage in the dashboard, on a real store: its instances under one row of the
stage list (``resize 4/6``, one status), opened and closed from the keyboard, following the
store in place; a session of 256 instances mounts no more widgets than a plain one; and
the log pane names the instance each line came from."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import pytest
from textual.widget import Widget

from app.tui.screens import DetailsScreen
from tests.tui.tui_testkit import loaded, make_session, other_engine, screen_text, wait_for
from widgets.instance_lines import InstanceLines

SIZE = (130, 36)

THUMBS = """\
stages:
  - name: fetch
    run: echo fetched
  - name: resize
    matrix: {size: [small, medium, large], format: [png, webp]}
    run: echo "resized $VC_MATRIX_SIZE $VC_MATRIX_FORMAT"
  - name: publish
    run: echo published
"""

#: 16 x 16: the most instances a matrix may make.
MANY = (
    "stages:\n"
    "  - name: prepare\n    run: 'true'\n"
    "  - name: shard\n"
    f"    matrix: {{a: [{', '.join(f'a{i}' for i in range(16))}],"
    f" b: [{', '.join(f'b{i}' for i in range(16))}]}}\n"
    "    run: 'true'\n"
)


@pytest.fixture
def matrix_workflows(workspace: Path) -> Path:
    (workspace / "workflows" / "thumbs.yaml").write_text(THUMBS)
    (workspace / "workflows" / "many.yaml").write_text(MANY)
    return workspace


def move(url: str, sid: str, moves: dict[str, list[str]]) -> None:
    """Move stage rows (by name) through the given states, as a runner would, on an engine
    of its own."""
    from store import StageManager

    with other_engine(url) as factory, factory() as db:
        stages = StageManager(db)
        by_name = {s.name: s for s in stages.list_stages(sid)}
        for name, states in moves.items():
            for state in states:
                stages.move_stage(by_name[name].id, state)


def four_of_six(url: str, sid: str) -> None:
    """fetch done; four instances of resize done, one running, one waiting."""
    done = ["ACTIVE", "COMPLETED"]
    move(
        url,
        sid,
        {
            "fetch": done,
            "resize[size=small,format=png]": done,
            "resize[size=small,format=webp]": done,
            "resize[size=medium,format=png]": done,
            "resize[size=medium,format=webp]": done,
            "resize[size=large,format=png]": ["ACTIVE"],
        },
    )


def stage_lines(app: Any) -> list[str]:
    """The stage list as shown now (the log pane beside it cut off)."""
    box = app.dashboard.stages.region
    rows = screen_text(app).splitlines()[box.y : box.bottom]
    return [row[box.x : box.right] for row in rows]


def stage_line(app: Any, text: str) -> str:
    return next(line for line in stage_lines(app) if text in line)


async def focus_stages(pilot: Any) -> Any:
    """Tab from the table to the stage list."""
    app = pilot.app
    await pilot.press("tab")
    await wait_for(pilot, lambda: app.focused is app.dashboard.stages, what="the stages focused")
    return app.dashboard.stages


async def test_a_matrix_stage_is_one_row_with_its_count_and_status(
    ctx: Any, make_app: Any, store_url: str, matrix_workflows: Path
) -> None:
    sid = make_session(ctx, "thumbs", state="ACTIVE")
    four_of_six(store_url, sid)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        stages = app.dashboard.stages
        await wait_for(pilot, lambda: "resize 4/6" in screen_text(app), what="the group's row")
        assert len(stages.stages) == 8 and len(stages.row_views) == 3
        assert stage_line(app, "resize 4/6").split()[:4] == ["▸", "resize", "4/6", "ACTIVE"]
        assert "small" not in "".join(stage_lines(app))  # the log pane may name instances
        assert not stages.query(InstanceLines)


async def test_enter_on_a_matrix_stage_opens_it_to_its_instances_and_closes_it(
    ctx: Any, make_app: Any, store_url: str, matrix_workflows: Path
) -> None:
    sid = make_session(ctx, "thumbs", state="ACTIVE")
    four_of_six(store_url, sid)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        stages = await focus_stages(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: "▾ resize 4/6" in screen_text(app), what="it open")
        # At 130 columns the name column is narrow: an instance shows its values alone.
        assert stage_line(app, "large,png").split()[1] == "ACTIVE"
        assert stage_line(app, "large,webp").split()[1] == "PENDING"
        assert stage_line(app, "small,png").split()[1] == "COMPLETED"
        assert len(stages.query(InstanceLines)) == 1
        await pilot.press("enter")
        await wait_for(pilot, lambda: "▸ resize 4/6" in screen_text(app), what="it closed")
        assert "small,png" not in "".join(stage_lines(app))
        assert not stages.query(InstanceLines)


async def test_enter_on_a_stage_of_its_own_in_the_stages_shows_the_details(
    ctx: Any, make_app: Any, matrix_workflows: Path
) -> None:
    make_session(ctx, "thumbs")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await focus_stages(pilot)
        await pilot.press("enter")  # the cursor is on fetch
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), what="details")


async def test_an_open_matrix_stage_follows_the_store_in_place(
    ctx: Any, make_app: Any, store_url: str, matrix_workflows: Path
) -> None:
    sid = make_session(ctx, "thumbs", state="ACTIVE")
    four_of_six(store_url, sid)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        stages = await focus_stages(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: stages.instance_lines, what="it open")
        views, lines = stages.row_views, stages.instance_lines
        move(store_url, sid, {"resize[size=large,format=png]": ["COMPLETED"]})
        await wait_for(pilot, lambda: "▾ resize 5/6" in screen_text(app), what="5 of 6 done")
        assert stage_line(app, "large,png").split()[1] == "COMPLETED"
        assert stages.row_views == views and stages.instance_lines == lines


async def test_a_session_of_256_instances_mounts_a_handful_of_widgets_and_answers_keys(
    ctx: Any, make_app: Any, store_url: str, matrix_workflows: Path
) -> None:
    plain = make_session(ctx, "hello", name="plain")
    sid = make_session(ctx, "many", name="many", state="ACTIVE")  # the newest: selected
    move(store_url, sid, {"prepare": ["ACTIVE", "COMPLETED"], "shard[a=a0,b=b0]": ["ACTIVE"]})
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        stages = app.dashboard.stages
        await wait_for(pilot, lambda: "shard 0/256" in screen_text(app), what="the group")
        assert len(stages.stages) == 257 and len(stages.row_views) == 2
        many_widgets = len(stages.query(Widget))
        await focus_stages(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: "▾ shard 0/256" in screen_text(app), what="it open")
        assert len(stages.query(Widget)) == many_widgets + 1
        await pilot.press("end")
        assert stages.cursor_row is not None and stages.cursor_row.name == "shard[a=a15,b=b15]"
        await wait_for(pilot, lambda: "a=a15,b=b15" in screen_text(app), what="the last shown")
        await pilot.press("shift+tab")  # back to the table, onto the plain session
        await pilot.press("down")
        await wait_for(pilot, lambda: app.dashboard.selected_id == plain, what="plain selected")
        await wait_for(pilot, lambda: len(stages.stages) == 3, what="its stages")
        assert len(stages.row_views) == 3 and not stages.query(InstanceLines)


async def test_the_dashboard_keeps_what_it_holds_at_its_first_frame_out_of_full_collections(
    ctx: Any, make_app: Any, matrix_workflows: Path
) -> None:
    """A full pass of Python's collector over everything the dashboard had loaded held a
    key on a 256-instance stage list for 100-170 ms; frozen at the first frame, and given
    back to the collector when the app ends."""
    make_session(ctx, "many", name="many")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert all(held is not app.dashboard for held in gc.get_objects(generation=2))
        assert gc.get_freeze_count() > 10_000
    assert gc.get_freeze_count() == 0


async def test_each_log_line_names_the_instance_it_came_from(
    ctx: Any, make_app: Any, matrix_workflows: Path, vc: Any
) -> None:
    result = vc("flow", "run", "thumbs")
    assert result.returncode == 0, result.stderr
    app = make_app()
    async with app.run_test(size=(170, 120)) as pilot:  # room for the whole log
        await loaded(pilot)
        await wait_for(pilot, lambda: "published" in screen_text(app), what="the log")
        text = screen_text(app)
        for size in ("small", "medium", "large"):
            for fmt in ("png", "webp"):
                assert f"[resize[size={size},format={fmt}]] resized {size} {fmt}" in text
        assert "[fetch] fetched" in text and "[publish] published" in text


@pytest.mark.parametrize("narrow", [100, 80])
async def test_an_open_matrix_stage_keeps_its_columns_after_the_terminal_narrows_and_widens(
    ctx: Any, make_app: Any, store_url: str, matrix_workflows: Path, narrow: int
) -> None:
    """Its instance lines are drawn in the header's columns: once the terminal is as wide
    as before, they line up with the header and the group's row as before."""
    sid = make_session(ctx, "thumbs", state="ACTIVE")
    four_of_six(store_url, sid)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await focus_stages(pilot)
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: "▾ resize 4/6" in screen_text(app), what="it open")
        before = stage_line(app, "small,png")
        await pilot.resize_terminal(narrow, SIZE[1])
        await pilot.pause()
        await pilot.resize_terminal(*SIZE)
        await pilot.pause()
        await wait_for(pilot, lambda: "▾ resize 4/6" in screen_text(app), what="it shown")
        assert stage_line(app, "small,png") == before
