"""The stage list's matrix groups: the instances of one matrix stage under one row that
sums them up, closed at first (nothing mounted for its instances), opened and closed from
the list's cursor, updated in place, and drawn in the header's columns."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.app import App, ComposeResult
from textual.pilot import Pilot
from textual.widget import Widget

from tests.waiting import wait_until_async
from tests.widgets.widgets_testkit import NOW, clock, screen_lines, stage_row
from widgets.data import StageRow
from widgets.instance_lines import InstanceLines
from widgets.stage_groups import blocks, group_row, group_status, instance_label, keys_fit
from widgets.stage_list import StageList
from widgets.timing import stage_time

SIZES = ("small", "medium", "large")
FORMATS = ("png", "webp")


def instance(size: str, fmt: str = "png", **changes: object) -> StageRow:
    return stage_row(f"resize[size={size},format={fmt}]", group="resize", **changes)


def done(size: str, fmt: str = "png") -> StageRow:
    return instance(
        size, fmt, status="COMPLETED", progress=100, started_at=NOW - 90, finished_at=NOW - 30
    )


def session(*resize: StageRow) -> list[StageRow]:
    """fetch, the given instances of resize, publish."""
    fetch = stage_row(
        "fetch", status="COMPLETED", progress=100, started_at=NOW - 300, finished_at=NOW - 200
    )
    return [fetch, *resize, stage_row("publish")]


def six(**last: object) -> list[StageRow]:
    """resize with 4 of 6 instances COMPLETED, one running at 50 %, one as ``last`` says."""
    rows = [done(size, fmt) for size in SIZES for fmt in FORMATS][:4]
    rows.append(instance("large", "png", status="ACTIVE", progress=50, started_at=NOW - 60))
    rows.append(instance("large", "webp", **last))
    return session(*rows)


class StagesApp(App[None]):
    def compose(self) -> ComposeResult:
        yield StageList(clock=clock)


def line_with(app: App[None], text: str) -> str:
    return next(line for line in screen_lines(app) if text in line)


def instance_line(app: App[None], values: str) -> str:
    """The line of the instance with these matrix values (``size=large,format=webp``)."""
    return next(line for line in screen_lines(app) if line.startswith(f"  {values} "))


# -- the summing up (plain functions) --------------------------------------------------------


def test_consecutive_instances_of_one_matrix_stage_make_one_block() -> None:
    found = blocks(six())
    assert [(b.group, len(b.rows)) for b in found] == [(None, 1), ("resize", 6), (None, 1)]


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        (("COMPLETED", "FAILED", "ACTIVE"), "FAILED"),
        (("COMPLETED", "ACTIVE", "PAUSED"), "ACTIVE"),
        (("COMPLETED", "PAUSED", "PENDING"), "PAUSED"),
        (("COMPLETED", "COMPLETED"), "COMPLETED"),
        (("COMPLETED", "PENDING"), "PENDING"),
        (("PENDING", "PENDING"), "PENDING"),
    ],
)
def test_a_groups_status_sums_up_its_instances(statuses: tuple[str, ...], expected: str) -> None:
    assert group_status([instance(str(i), status=s) for i, s in enumerate(statuses)]) == expected


def test_a_groups_row_counts_completed_instances_and_averages_their_progress() -> None:
    rows = six(
        status="FAILED",
        progress=30,
        started_at=NOW - 80,
        finished_at=NOW - 20,
        error="exit code 2",
        exit_code=2,
    )[1:-1]
    row = group_row("resize", rows, opened=False)
    assert row.name == "▸ resize 4/6"
    assert group_row("resize", rows, opened=True).name == "▾ resize 4/6"
    assert row.status == "FAILED"
    assert row.progress == pytest.approx((4 * 100 + 50 + 30) / 6)
    assert row.started_at == NOW - 90 and row.finished_at is None  # one still runs
    assert row.error == "resize[size=large,format=webp]: exit code 2"


def test_a_group_with_nothing_running_stops_its_clock_when_its_last_instance_stopped() -> None:
    rows = [
        instance("small", status="FAILED", started_at=NOW - 50, updated_at=NOW - 48),  # aborted
        instance("medium", status="PENDING"),  # never started
        instance("large", status="PENDING", started_at=NOW - 40, updated_at=NOW - 35),  # Ctrl-C
    ]
    row = group_row("resize", rows, opened=False)
    assert (row.started_at, row.finished_at) == (NOW - 50, NOW - 35)
    assert stage_time(row, NOW + 600) == "15s"


def test_a_pending_group_with_instances_done_keeps_their_time() -> None:
    """Some instances ran, the others wait (one instance run on its own, or retried): the
    group's row is PENDING, and its TIME is the span of those that ran, not blank."""
    rows = [
        instance("small", status="COMPLETED", started_at=NOW - 50, finished_at=NOW - 40),
        instance("large", status="PENDING"),
    ]
    row = group_row("resize", rows, opened=False)
    assert row.status == "PENDING" and stage_time(row, NOW + 600) == "10s"
    assert stage_time(rows[1], NOW + 600) == ""


def test_a_group_with_an_instance_running_keeps_its_clock_running() -> None:
    rows = [
        instance("small", status="FAILED", started_at=NOW - 50, finished_at=NOW - 45),
        instance("large", status="ACTIVE", started_at=NOW - 40),
    ]
    row = group_row("resize", rows, opened=False)
    assert row.finished_at is None and stage_time(row, NOW) == "50s"


def test_an_instance_is_shown_by_its_matrix_values_under_its_group() -> None:
    row = instance("small", "png")
    assert instance_label(row) == "  size=small,format=png"
    assert instance_label(row, width=23) == "  size=small,format=png"
    assert instance_label(row, width=22) == "  small,png", "the keys give way first"
    assert instance_label(stage_row("odd", group="resize")) == "  odd"


def test_instances_whose_values_do_not_fit_are_cut_so_they_still_differ() -> None:
    small_png = stage_row("resize[size=small,format=png]", group="resize")
    small_webp = stage_row("resize[size=small,format=webp]", group="resize")
    assert instance_label(small_png, width=8) == "  sm,png"
    assert instance_label(small_webp, width=8) == "  sm,w…p", "the longest value gives first"
    assert instance_label(small_png, width=4) == "  s,p", "one character each at least"
    assert instance_label(small_png, width=11) == "  small,png"


def test_values_that_differ_at_the_end_only_keep_their_ends_when_cut() -> None:
    labels = {
        instance_label(
            stage_row(f"train[fold=verylongvalue-aaaaaaaaaaaaaa-{i}]", group="train"), 14
        )
        for i in range(1, 5)
    }
    assert labels == {"  verylo…aaa-1", "  verylo…aaa-2", "  verylo…aaa-3", "  verylo…aaa-4"}


def test_wide_characters_are_cut_by_the_cells_they_take() -> None:
    """A CJK character takes two cells: a label cut by characters overflowed its column."""
    from rich.cells import cell_len

    row = stage_row("train[city=東京都渋谷区神南一丁目,fold=1]", group="train")
    for width in (8, 12, 16):
        label = instance_label(row, width)
        assert cell_len(label) <= width, (width, label)
    assert instance_label(row, 14) == "  東京…丁目,1"  # 11 cells: no half character


def test_a_group_shows_every_instance_in_one_form() -> None:
    short, long = instance("small", "png"), instance("medium", "webp")
    width = len(instance_label(short))  # the short one fits with its keys, the long not
    assert keys_fit([short], width) and not keys_fit([short, long], width)
    labels = [instance_label(r, width, keyed=keys_fit([short, long], width)) for r in (short, long)]
    assert labels == ["  small,png", "  medium,webp"]


# -- the widget ------------------------------------------------------------------------------


async def test_a_matrix_stage_shows_as_one_row_with_its_count_and_status() -> None:
    app = StagesApp()
    async with app.run_test(size=(100, 12)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six())
        await pilot.pause()
        assert len(stages.row_views) == 3
        group = line_with(app, "resize 4/6")
        assert group.split()[:4] == ["▸", "resize", "4/6", "ACTIVE"]
        assert "size=small" not in "\n".join(screen_lines(app))
        assert not stages.query(InstanceLines), "a closed group mounts nothing for its instances"


async def test_a_closed_group_of_256_instances_mounts_what_a_plain_stage_does() -> None:
    many = [instance(f"s{i}", status="ACTIVE", progress=i % 100) for i in range(256)]
    app = StagesApp()
    async with app.run_test(size=(100, 12)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(session(stage_row("resize")))
        await pilot.pause()
        plain = len(stages.query(Widget))
        stages.set_stages(session(*many))
        await pilot.pause()
        assert len(stages.query(Widget)) == plain
        stages.toggle_group("resize")
        await pilot.pause()
        assert len(stages.query(Widget)) == plain + 1, "one widget for all 256 instances"
        assert "s255" not in "\n".join(screen_lines(app))  # below the fold: not even drawn


async def test_enter_and_space_on_a_groups_row_open_and_close_it() -> None:
    app = StagesApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six())
        stages.focus()
        await pilot.press("down")
        assert stages.cursor_row is not None and stages.cursor_row.group == "resize"
        await pilot.press("enter")
        assert stages.open_groups == ("resize",)
        text = "\n".join(screen_lines(app))
        assert "▾ resize 4/6" in text
        for size in SIZES:
            for fmt in FORMATS:
                assert f"  size={size},format={fmt}" in text
        await pilot.press("space")
        assert stages.open_groups == ()
        assert not stages.query(InstanceLines)
        assert "size=small" not in "\n".join(screen_lines(app))


async def test_the_cursor_walks_through_an_open_groups_instances() -> None:
    app = StagesApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six())
        stages.focus()
        await pilot.press("down", "enter", "down", "down")
        assert stages.cursor_row is not None
        assert stages.cursor_row.name == "resize[size=small,format=webp]"
        assert stages.instance_lines[0].cursor == 1
        await pilot.press("end")
        assert stages.cursor_row.name == "publish"
        assert stages.instance_lines[0].cursor is None
        await pilot.press("up", "enter")  # on an instance: closes its group
        assert stages.open_groups == ()
        assert stages.cursor_row.group == "resize"


async def test_enter_on_a_stage_of_its_own_is_left_to_the_screen() -> None:
    seen: list[str] = []

    class Screened(StagesApp):
        BINDINGS = [("enter", "details", "Details")]

        def action_details(self) -> None:
            seen.append("details")

    app = Screened()
    async with app.run_test(size=(100, 12)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six())
        stages.focus()
        await pilot.press("enter")  # the cursor is on fetch
        assert seen == ["details"] and stages.open_groups == ()
        await pilot.press("down", "enter")
        assert seen == ["details"] and stages.open_groups == ("resize",)


async def test_an_open_group_updates_in_place() -> None:
    app = StagesApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six())
        stages.toggle_group("resize")
        await pilot.pause()
        views, lines = stages.row_views, stages.instance_lines
        stages.set_stages(
            six(
                status="FAILED",
                progress=70,
                started_at=NOW - 50,
                finished_at=NOW - 5,
                exit_code=2,
                error="[red]no space[/red]",
            )
        )
        await pilot.pause()
        assert stages.row_views == views and stages.instance_lines == lines
        assert stages.open_groups == ("resize",)
        text = "\n".join(screen_lines(app))
        assert "▾ resize 4/6" in text
        row = instance_line(app, "size=large,format=webp")
        assert row.split()[1:3] == ["FAILED", "(2)"] and row.split()[-3:] == ["70%", "1", "45s"]
        assert "    ↳ [red]no space[/red]" in text  # literal, under its instance
        assert line_with(app, "resize 4/6").split()[3] == "FAILED"


async def test_another_session_closes_the_groups() -> None:
    app = StagesApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six())
        stages.toggle_group("resize")
        await pilot.pause()
        stages.set_stages(session(done("small"), done("large")))
        await pilot.pause()
        assert stages.open_groups == () and not stages.query(InstanceLines)
        assert "▸ resize 2/2" in "\n".join(screen_lines(app))


async def test_an_instance_line_is_drawn_in_the_columns_of_the_stage_rows() -> None:
    rows = six(status="ACTIVE", progress=42, started_at=NOW - 58, attempt=3)
    rows[-1] = stage_row("publish", status="ACTIVE", progress=42, started_at=NOW - 58, attempt=3)
    app = StagesApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(rows)
        stages.toggle_group("resize")
        await pilot.pause()
        header = line_with(app, "STATUS")
        plain = line_with(app, "publish")
        inside = instance_line(app, "size=large,format=webp")
        start = header.index("STATUS")
        assert inside[start:] == plain[start:], "status, bar, percentage, attempt, time alike"
        assert inside.split()[-3:] == ["42%", "3", "58s"]


async def test_an_open_group_shows_its_instances_all_with_keys_or_all_without() -> None:
    rows = session(instance("s"), instance("x" * 60, "webp"))  # the long one cannot have keys
    app = StagesApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(rows)
        stages.toggle_group("resize")
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        assert "  s,png " in text
        assert "size=" not in text


async def test_an_instances_time_ticks() -> None:
    now = [NOW]

    class TickingApp(App[None]):
        def compose(self) -> ComposeResult:
            yield StageList(clock=lambda: now[0])

    app = TickingApp()
    async with app.run_test(size=(100, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(six(status="ACTIVE", progress=10, started_at=NOW - 58))
        stages.toggle_group("resize")
        await pilot.pause()
        assert instance_line(app, "size=large,format=webp").split()[-1] == "58s"
        now[0] += 1
        await pilot.pause(1.2)  # the list's own one-second timer
        assert instance_line(app, "size=large,format=webp").split()[-1] == "59s"


async def test_a_groups_name_is_shown_literally() -> None:
    app = StagesApp()
    async with app.run_test(size=(100, 12)) as pilot:
        stages = app.query_one(StageList)
        rows = [stage_row("[b]x[/b][k=v]", group="[b]x[/b]", status="PENDING")]
        stages.set_stages(rows)
        stages.toggle_group("[b]x[/b]")
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        assert "▾ [b]x[/b] 0/1" in text and "  k=v" in text


async def drawn(pilot: Pilot[None], predicate: Callable[[], bool]) -> None:
    await wait_until_async(predicate, pilot.pause, what="the screen drawn", timeout=2)


def highlighted(view: Widget) -> bool:
    """Does the row wear the cursor's background?"""
    return view.styles.inline.has_rule("background")


def backgrounds(app: App[None], y: int) -> set[str]:
    """The background colours of screen line ``y`` as drawn (the scrollbar's gutter, the
    last cell, left out)."""
    strip = app.screen._compositor.render_strips()[y]
    strip = strip.crop(0, strip.cell_length - 1)
    return {
        str(seg.style.bgcolor.triplet.hex)
        for seg in strip
        if seg.style and seg.style.bgcolor and seg.style.bgcolor.triplet
    }


async def test_the_cursor_shows_only_while_the_list_has_the_focus() -> None:
    class TwoApp(App[None]):
        def compose(self) -> ComposeResult:
            yield StageList(clock=clock)
            yield StageList(clock=clock, id="other")

    app = TwoApp()
    async with app.run_test(size=(100, 20)) as pilot:
        stages = app.query(StageList).first()
        stages.set_stages(six())
        stages.toggle_group("resize")
        app.query_one("#other").focus()
        await pilot.pause()
        assert not any(highlighted(v) for v in stages.row_views)
        plain = backgrounds(app, 1)  # the fetch row
        stages.focus()
        await pilot.press("down")
        assert [highlighted(v) for v in stages.row_views] == [False, True, False]
        # The row's cells repaint with the next frame.
        await drawn(pilot, lambda: len(backgrounds(app, 2)) == 1 and backgrounds(app, 2) != plain)
        cursor = backgrounds(app, 2)
        await pilot.press("down")
        assert not any(highlighted(v) for v in stages.row_views)
        assert stages.instance_lines[0].cursor == 0
        await drawn(pilot, lambda: backgrounds(app, 2) == plain)
        await drawn(pilot, lambda: backgrounds(app, 3) == cursor)  # the first instance
        app.query_one("#other").focus()
        await pilot.pause()
        assert stages.instance_lines[0].cursor is None
        stages.focus()
        await pilot.pause()
        assert stages.instance_lines[0].cursor == 0, "where it was"


async def test_a_group_opened_before_the_list_is_mounted_shows_open() -> None:
    class EarlyApp(App[None]):
        def compose(self) -> ComposeResult:
            stages = StageList(clock=clock)
            stages.set_stages(six())
            stages.toggle_group("resize")
            yield stages

    app = EarlyApp()
    async with app.run_test(size=(100, 14)) as pilot:
        await pilot.pause()
        text = "\n".join(screen_lines(app))
        assert "▾ resize 4/6" in text and "  size=large,format=webp " in text


async def test_a_stage_name_too_long_for_its_column_ends_in_an_ellipsis() -> None:
    app = StagesApp()
    async with app.run_test(size=(60, 6)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages([stage_row("a-really-long-stage-name-that-exceeds-the-column")])
        await pilot.pause()
        line = line_with(app, "a-really")
        assert line.split()[0].endswith("…"), line


async def test_a_reason_too_long_for_a_narrow_list_is_cut_with_an_ellipsis() -> None:
    failed = instance("large", "webp", status="FAILED", exit_code=3, error="exit code 3")
    rows = session(done("small"), failed)
    rows[-1] = stage_row("publish", status="FAILED", error=f"cancelled: {failed.name} failed")
    app = StagesApp()
    async with app.run_test(size=(40, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(rows)
        await pilot.pause()
        lines = screen_lines(app)
        group_reason = lines[lines.index(line_with(app, " 1/2 ")) + 1].rstrip()
        assert group_reason == "  ↳ resize[size=large,format=webp]: ex…"  # not wrapped away
        assert line_with(app, "↳ cancelled").rstrip() == "  ↳ cancelled: resize[size=large,forma…"


async def test_a_narrow_groups_row_keeps_its_count_and_cuts_its_name() -> None:
    app = StagesApp()
    async with app.run_test(size=(40, 14)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(session(done("small"), instance("large", status="ACTIVE")))
        await pilot.pause()
        row = line_with(app, "ACTIVE")  # the group's row: its name column is 6 cells here
        assert row.startswith("▸… 1/2 ")


def test_a_failed_group_names_the_instance_that_failed_first_not_one_cancelled_after() -> None:
    rows = [
        instance("small", status="FAILED", finished_at=NOW - 5, error="cancelled: x failed"),
        instance("medium", status="FAILED", finished_at=NOW - 9, error="exit code 7"),
        instance("large", status="FAILED", finished_at=NOW - 5, error="cancelled: x failed"),
    ]
    row = group_row("resize", rows, opened=False)
    assert row.error == "resize[size=medium,format=png]: exit code 7 (and 2 more failed)"
