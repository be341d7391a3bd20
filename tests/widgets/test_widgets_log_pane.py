"""LogPane: bounded memory, follow mode, older history, wrapping, huge lines, literal text."""

from __future__ import annotations

import re
import time

from textual.app import App, ComposeResult

from tests.widgets.widgets_testkit import log_line, screen_lines, widget_lines
from widgets.log_pane import MAX_LINE_CHARS, LogPane, format_line, line_width
from widgets.messages import FollowChanged, OlderLogsRequested

LINE_RE = re.compile(r"^\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR)\s+(\[\S+\] )?")


class LogApp(App[None]):
    def __init__(self, max_lines: int = 5_000) -> None:
        super().__init__()
        self.max_lines = max_lines
        self.older_requests: list[int] = []
        self.follow_changes: list[bool] = []

    def compose(self) -> ComposeResult:
        yield LogPane(max_lines=self.max_lines)

    def on_log_pane_older_logs_requested(self, message: OlderLogsRequested) -> None:
        self.older_requests.append(message.before_id)

    def on_log_pane_follow_changed(self, message: FollowChanged) -> None:
        self.follow_changes.append(message.follow)


async def test_format_and_literal_text() -> None:
    app = LogApp()
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(LogPane)
        pane.append(
            [
                log_line(1, "[bold red]boom[/] and [link=x]y[/link]", level="ERROR"),
                log_line(2, "plain", level="DEBUG", stage=None),
                log_line(3, "careful", level="WARNING", stage="load"),
            ]
        )
        await pilot.pause()
        lines = widget_lines(pane)
        assert LINE_RE.match(lines[0]) and lines[0].rstrip().endswith(
            "ERROR   [build] [bold red]boom[/] and [link=x]y[/link]"
        )
        assert LINE_RE.match(lines[1]) and "DEBUG   plain" in lines[1] and "[" not in lines[1]
        assert "WARNING [load] careful" in lines[2]
        stamp = time.strftime("%H:%M:%S", time.localtime(log_line(1).at))
        assert lines[0].startswith(stamp)

        # level colours: ERROR text red, WARNING yellow, DEBUG dim
        def style_of(y: int, needle: str):
            for segment in pane.render_line(y):
                if needle in segment.text:
                    return segment.style
            raise AssertionError(needle)

        assert style_of(0, "boom").color.name == "red"
        assert not style_of(0, "boom").bold
        assert style_of(2, "careful").color.name == "yellow"
        assert style_of(1, "plain").dim


async def test_drops_oldest_beyond_max_lines() -> None:
    app = LogApp(max_lines=100)
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(LogPane)
        pane.append([log_line(i) for i in range(1, 251)])
        pane.append([log_line(i) for i in range(240, 260)])  # overlap: ignored ids
        await pilot.pause()
        assert pane.line_count == 100
        assert pane.first_id == 160 and pane.last_id == 259
        assert pane.virtual_size.height == 100
        assert widget_lines(pane)[-1].rstrip().endswith("line 259")


async def test_follows_at_bottom_then_stops_and_resumes() -> None:
    app = LogApp()
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(LogPane)
        pane.focus()
        pane.append([log_line(i) for i in range(1, 101)])
        await pilot.pause()
        assert pane.follow
        assert pane.scroll_offset.y == pane.max_scroll_y > 0
        pane.append([log_line(i) for i in range(101, 121)])
        await pilot.pause()
        assert pane.scroll_offset.y == pane.max_scroll_y
        assert widget_lines(pane)[-1].rstrip().endswith("line 120")

        await pilot.press("pageup")
        await pilot.wait_for_animation()
        await pilot.pause()
        assert not pane.follow
        assert app.follow_changes == [False]
        reading = pane.scroll_offset.y
        pane.append([log_line(i) for i in range(121, 141)])
        await pilot.pause()
        assert pane.scroll_offset.y == reading  # the user keeps reading
        assert pane.scroll_offset.y < pane.max_scroll_y

        await pilot.press("end")
        await pilot.wait_for_animation()
        await pilot.pause()
        assert pane.follow
        assert app.follow_changes == [False, True]
        pane.append([log_line(i) for i in range(141, 151)])
        await pilot.pause()
        assert pane.scroll_offset.y == pane.max_scroll_y
        assert widget_lines(pane)[-1].rstrip().endswith("line 150")

        # The app toggles follow off (key f): new lines no longer move the view.
        pane.follow = False
        await pilot.pause()
        at = pane.scroll_offset.y
        pane.append([log_line(i) for i in range(151, 161)])
        await pilot.pause()
        assert pane.scroll_offset.y == at
        pane.action_toggle_follow()
        await pilot.pause()
        assert pane.follow and pane.scroll_offset.y == pane.max_scroll_y


async def test_drop_while_reading_keeps_the_view_on_the_same_lines() -> None:
    app = LogApp(max_lines=200)
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(LogPane)
        pane.append([log_line(i) for i in range(1, 201)])
        await pilot.pause()
        pane.scroll_to(y=100, animate=False)
        await pilot.pause()
        assert not pane.follow
        top = widget_lines(pane)[0]
        pane.append([log_line(i) for i in range(201, 231)])
        await pilot.pause()
        assert pane.line_count == 200
        assert widget_lines(pane)[0] == top


async def test_older_history_on_demand() -> None:
    app = LogApp(max_lines=1_000)
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(LogPane)
        pane.focus()
        pane.append([log_line(i) for i in range(500, 600)])
        pane.more_older = True
        await pilot.pause()
        await pilot.press("home")
        await pilot.wait_for_animation()
        await pilot.pause()
        assert app.older_requests == [500]
        await pilot.press("up", "up")  # already asked: no duplicate
        await pilot.pause()
        assert app.older_requests == [500]
        assert widget_lines(pane)[0].rstrip().endswith("line 500")

        pane.prepend_older([log_line(i) for i in range(400, 500)], more=False)
        await pilot.pause()
        assert pane.first_id == 400 and pane.line_count == 200
        # the view stays on what the user was reading
        assert widget_lines(pane)[0].rstrip().endswith("line 500")
        assert not pane.follow
        await pilot.press("home")
        await pilot.wait_for_animation()
        await pilot.pause()
        assert widget_lines(pane)[0].rstrip().endswith("line 400")
        assert app.older_requests == [500]  # more=False: nothing more to ask for

        pane.clear()
        await pilot.pause()
        assert pane.line_count == 0 and pane.follow and pane.last_id is None


async def test_wrap_and_a_one_megabyte_line() -> None:
    app = LogApp()
    async with app.run_test(size=(100, 20)) as pilot:
        pane = app.query_one(LogPane)
        huge = "x" * 1_000_000
        started = time.perf_counter()
        pane.append([log_line(1, "short"), log_line(2, huge, level="WARNING"), log_line(3)])
        await pilot.pause()
        lines = widget_lines(pane)
        elapsed = time.perf_counter() - started
        assert elapsed < 2.0, elapsed  # generous: truncation keeps this in milliseconds
        assert pane.line_count == 3
        assert pane.virtual_size.width < MAX_LINE_CHARS + 100
        assert lines[2].rstrip().endswith("line 3")
        assert line_width(log_line(2, huge)) == format_line(log_line(2, huge)).cell_len
        assert format_line(log_line(2, huge)).plain.endswith("… (990000 more chars)")

        pane.wrap = True
        await pilot.pause()
        width = pane.scrollable_content_region.width
        expected = 1 + -(-line_width(log_line(2, huge)) // width) + 1
        assert pane.visual_line_count == expected
        assert pane.virtual_size.width == width
        assert pane.follow and pane.scroll_offset.y == pane.max_scroll_y
        lines = widget_lines(pane)
        assert lines[-1].rstrip().endswith("line 3")
        assert lines[-2].rstrip().endswith("more chars)")
        assert set(lines[-3].rstrip()) == {"x"}
        # scroll through the whole wrapped line: each screen renders fast
        started = time.perf_counter()
        for y in range(0, expected, 10):
            pane.scroll_to(y=y, animate=False)
            widget_lines(pane)
        assert time.perf_counter() - started < 2.0

        pane.wrap = False
        await pilot.pause()
        assert pane.visual_line_count == 3
        pane.scroll_to(y=0, animate=False)
        await pilot.pause()
        first = widget_lines(pane)[0]
        assert first.rstrip().endswith("short")


async def test_wrap_toggle_keeps_the_record_being_read() -> None:
    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        pane = app.query_one(LogPane)
        pane.append([log_line(i, f"record {i} " + "w" * (i % 3) * 40) for i in range(1, 61)])
        await pilot.pause()
        pane.scroll_to(y=20, animate=False)
        await pilot.pause()
        assert not pane.follow
        assert "record 21 " in widget_lines(pane)[0]
        pane.wrap = True
        await pilot.pause()
        assert pane.visual_line_count > pane.line_count
        assert "record 21 " in widget_lines(pane)[0]
        assert not pane.follow
        pane.wrap = False
        await pilot.pause()
        assert "record 21 " in widget_lines(pane)[0]


async def test_text_selection_copies_records_as_displayed() -> None:
    from textual.selection import Selection

    app = LogApp()
    async with app.run_test(size=(80, 10)) as pilot:
        pane = app.query_one(LogPane)
        pane.append([log_line(1, "[b]first[/b]"), log_line(2, "second", level="ERROR")])
        await pilot.pause()
        app.screen.selections = {pane: Selection(None, None)}
        await pilot.pause()
        selected, ending = pane.get_selection(Selection(None, None))
        assert ending == "\n"
        assert selected.splitlines()[0].endswith("INFO    [build] [b]first[/b]")
        assert selected.splitlines()[1].endswith("ERROR   [build] second")
        assert widget_lines(pane)[1].rstrip().endswith("second")


async def test_following_keeps_the_newest_line_above_a_horizontal_scrollbar() -> None:
    """The scrollbar that lines wider than the pane bring takes a row: the newest line must
    stay in view (a finished session gets no later line to scroll it)."""
    app = LogApp()
    async with app.run_test(size=(60, 12)) as pilot:
        pane = app.query_one(LogPane)
        pane.append([log_line(i, "x" * 200) for i in range(1, 40)] + [log_line(40, "the end")])
        await pilot.pause()
        await pilot.pause()
        assert pane.follow
        assert pane.scroll_offset.y == pane.max_scroll_y
        assert any(line.rstrip().endswith("the end") for line in screen_lines(app))


def test_a_long_instance_name_keeps_its_values_so_the_line_itself_shows() -> None:
    """Its keys go first, then letters of the stage's name: the values are what tell the
    lines of one stage's instances apart."""
    stage = "build-artifacts-for-platform[os=linux,arch=amd64,python=3.11]"
    shown = format_line(log_line(1, "compiling", stage=stage)).plain
    assert shown.endswith("[build-artifac…[linux,amd64,3.11]] compiling")
    assert len(shown) == len("22:13:21 INFO    ") + len("[") + 32 + len("] ") + len("compiling")
    assert line_width(log_line(1, "compiling", stage=stage)) == len(shown)
    keyless = format_line(log_line(1, "x", stage="build[os=linux-x86_64,python=3.10,lang=c]"))
    assert keyless.plain.endswith("[build[linux-x86_64,3.10,c]] x")
    short = format_line(log_line(1, "x", stage="resize[size=small]")).plain
    assert short.endswith("[resize[size=small]] x")  # a name that fits stays whole


def test_a_long_instance_name_in_wide_characters_is_cut_by_its_cells() -> None:
    from rich.cells import cell_len

    stage = "resize[city=東京都渋谷区神南一丁目東京都渋谷区神南一丁目]"
    shown = format_line(log_line(1, "x", stage=stage)).plain
    tag = shown[shown.index("[") :]
    assert tag.startswith("[resize[東京都") and tag.endswith("] x")
    assert cell_len(tag) <= len("[") + 32 + len("] x")
