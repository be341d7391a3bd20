"""StageList, StatusCountsBar, ConfirmScreen, HelpScreen, and the pure formatting helpers."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult
from textual.widgets import ProgressBar, Static

from tests.widgets.widgets_testkit import NOW, clock, screen_lines, stage_row, widget_lines
from widgets.confirm import ConfirmScreen
from widgets.counts import StatusCountsBar
from widgets.data import StatusCounts
from widgets.formatting import clean, human_duration, progress_bar
from widgets.help import HelpScreen
from widgets.stage_list import StageList, StageRowView
from widgets.styles import STATUS_STYLES, status_style
from widgets.timing import stage_time, ticking


def test_formatting_helpers() -> None:
    assert [human_duration(s) for s in (0, 5, 59, 60, 180, 3599, 7200, 86400 * 4)] == [
        "0s",
        "5s",
        "59s",
        "1m",
        "3m",
        "59m",
        "2h",
        "4d",
    ]
    assert human_duration(None) == "" and human_duration(-3) == "0s"
    assert progress_bar(52) == ("███░░░", " 52%")
    assert progress_bar(99.9) == ("█████░", " 99%")
    assert progress_bar(100) == ("██████", "100%")
    assert progress_bar(-5) == ("░░░░░░", "  0%")
    assert progress_bar(float("nan"))[1] == "  0%"
    assert clean("a\tb\nc\x1bd\x07") == "a   b↵c\ufffdd\ufffd"
    assert set(STATUS_STYLES) == {"PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED"}
    assert status_style("FAILED").color.name == "red"
    assert status_style("nonsense") == status_style("other")


class StagesApp(App[None]):
    def compose(self) -> ComposeResult:
        yield StageList(clock=clock, empty_text="Select a session.")


def bar_progress(view: StageRowView) -> float:
    return view.query_one(ProgressBar).progress


async def test_stage_list_updates_in_place() -> None:
    app = StagesApp()
    async with app.run_test(size=(80, 20)) as pilot:
        stages = app.query_one(StageList)
        assert any("Select a session." in line for line in screen_lines(app))
        stages.set_stages(
            [
                stage_row(
                    "extract",
                    status="COMPLETED",
                    progress=100,
                    started_at=NOW - 300,
                    finished_at=NOW - 240,
                ),
                stage_row(
                    "[bold]transform[/]",
                    status="ACTIVE",
                    progress=40.0,
                    started_at=NOW - 90,
                    attempt=2,
                ),
                stage_row("load"),
            ]
        )
        await pilot.pause()
        views = stages.row_views
        assert len(views) == 3 and all(v.is_mounted for v in views)
        text = "\n".join(screen_lines(app))
        assert "Select a session." not in text
        assert "[bold]transform[/]" in text  # literal
        assert "COMPLETED" in text and "ACTIVE" in text and "PENDING" in text
        assert "1m" in text  # extract ran 60 s
        assert "40%" in text
        assert bar_progress(views[1]) == 40.0

        # Same names: the same widgets are updated, nothing is remounted.
        stages.set_stages(
            [
                stage_row(
                    "extract",
                    status="COMPLETED",
                    progress=100,
                    started_at=NOW - 300,
                    finished_at=NOW - 240,
                ),
                stage_row(
                    "[bold]transform[/]",
                    status="FAILED",
                    progress=70.0,
                    started_at=NOW - 90,
                    finished_at=NOW - 10,
                    attempt=3,
                    exit_code=2,
                    error="[red]disk full[/red]",
                ),
                stage_row("load"),
            ]
        )
        await pilot.pause()
        assert stages.row_views == views
        assert bar_progress(views[1]) == 70.0
        assert views[1].has_class("status-failed") and not views[1].has_class("status-active")
        text = "\n".join(screen_lines(app))
        assert "FAILED (2)" in text
        assert "[red]disk full[/red]" in text
        row_line = next(line for line in screen_lines(app) if "FAILED (2)" in line)
        assert row_line.split()[-3:] == ["70%", "3", "1m"]  # progress, attempt, 80 s

        # Another session (other names): rebuilt.
        stages.set_stages([stage_row("only")])
        await pilot.pause()
        assert len(stages.row_views) == 1 and stages.row_views[0] not in views
        assert list(stages.query(StageRowView)) == list(stages.row_views)

        stages.set_stages([])
        await pilot.pause()
        assert any("Select a session." in line for line in screen_lines(app))


async def test_a_stage_killed_by_a_signal_keeps_a_space_before_its_bar() -> None:
    app = StagesApp()
    async with app.run_test(size=(80, 8)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(
            [stage_row("train", status="FAILED", progress=30, exit_code=-15, started_at=NOW - 9)]
        )
        await pilot.pause()
        line = next(line for line in screen_lines(app) if "FAILED" in line)
        status_cell = line[line.index("FAILED") :]
        assert status_cell.startswith("FAILED (-15) "), line  # not run into the bar
        assert "(-15)" in line and "30%" in line


async def test_a_paused_stage_shows_how_long_it_has_been_paused() -> None:
    app = StagesApp()
    async with app.run_test(size=(80, 8)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(
            [
                stage_row("train", status="PAUSED", started_at=NOW - 3600, updated_at=NOW - 120),
                stage_row("approve", status="PAUSED", updated_at=NOW - 30),  # a gate waiting
            ]
        )
        await pilot.pause()
        train, approve = (line for line in screen_lines(app) if "PAUSED" in line)
        assert train.split()[-1] == "‖2m" and approve.split()[-1] == "‖30s"


def test_a_stage_sent_back_to_pending_shows_no_time_and_does_not_tick() -> None:
    # an interrupt or a retry: the earlier attempt's time would read as this one's
    interrupted = stage_row("count", status="PENDING", started_at=NOW - 30, updated_at=NOW - 24)
    assert stage_time(interrupted, NOW + 600) == "" and not ticking(interrupted)
    retried = stage_row("count", status="PENDING", started_at=NOW - 30, finished_at=NOW - 23)
    assert stage_time(retried, NOW + 600) == "" and not ticking(retried)
    running = stage_row("count", status="ACTIVE", started_at=NOW - 30, updated_at=NOW - 24)
    assert stage_time(running, NOW) == "30s" and ticking(running)


def test_a_stage_active_under_a_runner_gone_stops_its_clock_at_the_runners_last_beat() -> None:
    # the store still says ACTIVE: nobody has run it since its runner's last heartbeat
    lost = stage_row("tick", status="ACTIVE", started_at=NOW - 59, known_until=NOW)
    assert stage_time(lost, NOW + 600) == "59s" and not ticking(lost)


async def test_running_stage_duration_ticks_and_repaints_only_when_it_changes() -> None:
    now = [NOW]

    class TickingApp(App[None]):
        def compose(self) -> ComposeResult:
            yield StageList(clock=lambda: now[0])

    app = TickingApp()
    async with app.run_test(size=(80, 12)) as pilot:
        stages = app.query_one(StageList)
        stages.set_stages(
            [
                stage_row("build", status="COMPLETED", started_at=NOW - 300, finished_at=NOW - 240),
                stage_row("test", status="ACTIVE", progress=10, started_at=NOW - 58),
            ]
        )
        await pilot.pause()
        done, running = stages.row_views
        assert screen_lines(app)[2].split()[-1] == "58s"
        updates: list[str] = []

        def spy(cell: Static) -> None:
            real = cell.update

            def update(content: object = "", *, layout: bool = True) -> None:
                updates.append(str(content))
                real(content, layout=layout)  # type: ignore[arg-type]

            cell.update = update  # type: ignore[method-assign]

        for view in (done, running):
            spy(view.query_one(".stage-time", Static))
        now[0] += 1
        await pilot.pause(1.2)  # the list's own one-second timer
        assert screen_lines(app)[2].split()[-1] == "59s"
        now[0] += 0.5
        await pilot.pause(1.1)  # still 59 s: nothing repainted
        assert updates == ["59s"], "only the running stage, once per change"


class CountsApp(App[None]):
    def compose(self) -> ComposeResult:
        yield StatusCountsBar()


async def test_status_counts_bar() -> None:
    app = CountsApp()
    async with app.run_test(size=(120, 5)) as pilot:
        bar = app.query_one(StatusCountsBar)
        bar.set_counts(StatusCounts({"ACTIVE": 2, "FAILED": 1, "COMPLETED": 10}, 13))
        await pilot.pause()
        line = widget_lines(bar)[0]
        assert "PENDING 0  ACTIVE 2  PAUSED 0  COMPLETED 10  FAILED 1  total 13" in line
        text = bar.build_text()
        spans = {text.plain[s.start : s.end]: s.style for s in text.spans}
        assert spans["ACTIVE"] == STATUS_STYLES["ACTIVE"]
        assert spans["FAILED"] == STATUS_STYLES["FAILED"]
    app = CountsApp()
    async with app.run_test(size=(50, 5)) as pilot:
        bar = app.query_one(StatusCountsBar)
        bar.set_counts(StatusCounts({"ACTIVE": 2, "PENDING": 12345}, 12347))
        await pilot.pause()
        line = widget_lines(bar)[0]
        assert line.rstrip() == "PEND 12345  ACT 2  total 12347"


@pytest.mark.parametrize(
    ("width", "expected"),
    [
        (40, "PEND 25  ACT 4  PAUS 2  DONE 2  FAIL 2"),  # the total goes first
        (22, "FAIL 2  PAUS 2  ACT 4…"),  # then what is over: a failure is never cut
        (8, "FAIL 2…"),
        (5, "2"),  # the failures' number alone, in their colour: never a number cut short
    ],
)
async def test_a_narrow_status_counts_bar_keeps_failures_in_view(width: int, expected: str) -> None:
    app = CountsApp()
    async with app.run_test(size=(width, 5)) as pilot:
        bar = app.query_one(StatusCountsBar)
        counts = {"PENDING": 25, "ACTIVE": 4, "PAUSED": 2, "COMPLETED": 2, "FAILED": 2}
        bar.set_counts(StatusCounts(counts, 35))
        await pilot.pause()
        assert widget_lines(bar)[0].rstrip() == expected


async def test_a_count_too_wide_for_the_bar_is_never_cut_short() -> None:
    app = CountsApp()
    async with app.run_test(size=(8, 5)) as pilot:
        bar = app.query_one(StatusCountsBar)
        bar.set_counts(StatusCounts({"FAILED": 12345, "ACTIVE": 3}, 12348))
        await pilot.pause()
        assert widget_lines(bar)[0].rstrip() == "12345"
        bar.set_counts(StatusCounts({"FAILED": 123456789}, 123456789))
        await pilot.pause()
        assert widget_lines(bar)[0].rstrip() == "…"


async def test_an_empty_store_says_total_0_without_a_leading_gap() -> None:
    app = CountsApp()
    async with app.run_test(size=(12, 5)) as pilot:
        bar = app.query_one(StatusCountsBar)
        bar.set_counts(StatusCounts({}, 0))
        await pilot.pause()
        assert widget_lines(bar)[0].rstrip() == "total 0"


class ModalApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.results: list[object] = []

    def ask(self, message: str) -> None:
        self.push_screen(ConfirmScreen(message, title="Abort session?"), self.results.append)

    def show_help(self) -> None:
        self.push_screen(
            HelpScreen([("p", "pause"), ("a", "abort (asks first)"), ("?", "[b]this[/b] help")]),
            self.results.append,
        )


async def test_confirm_screen_answers() -> None:
    app = ModalApp()
    async with app.run_test(size=(100, 30)) as pilot:
        for key, expected in (("y", True), ("n", False), ("escape", False), ("q", False)):
            app.ask("Abort [bold red]run 42[/]?")
            await pilot.pause()
            assert isinstance(app.screen, ConfirmScreen)
            assert any("Abort [bold red]run 42[/]?" in line for line in screen_lines(app))
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, ConfirmScreen)
            assert app.results[-1] is expected
        # enter on the initially focused button is the safe answer
        app.ask("Delete?")
        await pilot.pause()
        await pilot.press("enter")
        await pilot.pause()
        assert app.results[-1] is False
        app.ask("Delete?")
        await pilot.pause()
        await pilot.click("#confirm-yes")
        await pilot.pause()
        assert app.results[-1] is True
        assert app.results == [True, False, False, False, False, True]


async def test_help_screen_lists_keys_and_closes() -> None:
    app = ModalApp()
    async with app.run_test(size=(100, 30)) as pilot:
        for key in ("escape", "q", "question_mark"):
            app.show_help()
            await pilot.pause()
            assert isinstance(app.screen, HelpScreen)
            text = "\n".join(screen_lines(app))
            assert "p  pause" in text and "a  abort (asks first)" in text
            assert "?  [b]this[/b] help" in text
            await pilot.press(key)
            await pilot.pause()
            assert not isinstance(app.screen, HelpScreen), key
        assert app.results == [None, None, None]
