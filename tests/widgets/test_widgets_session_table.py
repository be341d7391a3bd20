"""SessionTable: windowed rendering over 100,000 sessions, cursor, literal text, narrow widths."""

from __future__ import annotations

from dataclasses import replace

from textual.app import App, ComposeResult
from textual.geometry import Region

from tests.widgets.widgets_testkit import NOW, clock, screen_lines, session_row, widget_lines
from widgets.messages import SessionHighlighted, WindowRequested
from widgets.session_table import SessionTable, layout_columns

TOTAL = 100_000


class TableApp(App[None]):
    """Hosts a table and plays the owner: answers window requests from a fake store."""

    def __init__(self, total: int = TOTAL, *, auto_answer: bool = True) -> None:
        super().__init__()
        self.total = total
        self.auto_answer = auto_answer
        self.inserted = 0  # sessions inserted above session 0 since the start
        self.overrides: dict[int, dict[str, object]] = {}
        self.requests: list[tuple[int, int]] = []
        self.highlights: list[str | None] = []
        self.selected: list[str] = []

    def compose(self) -> ComposeResult:
        yield SessionTable(clock=clock, empty_text="No sessions yet: press n to start one.")

    def rows(self, offset: int, limit: int):
        end = min(self.total, offset + limit)
        return [
            session_row(i - self.inserted, **self.overrides.get(i - self.inserted, {}))
            for i in range(offset, end)
        ]

    def answer(self, offset: int, limit: int) -> None:
        self.query_one(SessionTable).set_window(offset, self.rows(offset, limit), self.total)

    def on_session_table_window_requested(self, message: WindowRequested) -> None:
        self.requests.append((message.offset, message.limit))
        if self.auto_answer:
            self.answer(message.offset, message.limit)

    def on_session_table_session_highlighted(self, message: SessionHighlighted) -> None:
        self.highlights.append(message.session_id)

    def on_session_table_session_selected(self, message: SessionTable.SessionSelected) -> None:
        self.selected.append(message.session_id)


def max_limit(table: SessionTable) -> int:
    return 2 * table.visible_rows + 2


async def test_renders_first_window_only() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        assert table.total == TOTAL
        assert table.virtual_size.height == TOTAL + 1
        assert app.requests, "the table asked for its first window"
        assert all(limit <= max_limit(table) for _, limit in app.requests)
        assert len(table.rows) <= max_limit(table)
        lines = widget_lines(table)
        assert lines[0].split() == [
            "ID",
            "NAME",
            "WORKFLOW",
            "STATUS",
            "PROGRESS",
            "STAGE",
            "HOST",
            "TIME",
        ]
        assert lines[1].startswith("00000000 session 0 ")
        assert "PENDING" in lines[1]
        assert "ACTIVE" in lines[2]
        # progress bar and percentage, human durations
        assert "░░░░░░   0%" in lines[1]
        assert "█░░░░░  21%" in lines[4]
        assert lines[2].rstrip().endswith("2m")  # ACTIVE: running for 125 s
        assert lines[4].rstrip().endswith("1m")  # COMPLETED: ran 65 s
        assert table.cursor_index == 0
        assert table.selected_id == session_row(0).id
        assert app.highlights == [session_row(0).id]


async def test_end_and_pagedown_request_windows_not_everything() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        table.focus()
        await pilot.press("end")
        await pilot.pause()
        assert table.cursor_index == TOTAL - 1
        assert table.selected_id == session_row(TOTAL - 1).id
        assert table.scroll_offset.y == table.max_scroll_y
        lines = widget_lines(table)
        assert lines[-1].startswith(f"{TOTAL - 1:08d} session {TOTAL - 1} ")

        await pilot.press("home")
        await pilot.pause()
        assert table.cursor_index == 0
        assert table.scroll_offset.y == 0
        for expected in range(1, 4):
            await pilot.press("pagedown")
            await pilot.pause()
            assert table.cursor_index == expected * table.visible_rows
        assert widget_lines(table)[1].startswith(f"{int(table.scroll_offset.y):08d} ")
        await pilot.press("pageup", "up", "down", "down")
        await pilot.pause()
        assert table.cursor_index == 2 * table.visible_rows + 1
        assert table.selected_id == session_row(table.cursor_index).id

        assert all(limit <= max_limit(table) for _, limit in app.requests), app.requests
        assert len(table.rows) <= max_limit(table)
        # every request was for rows near the view, never from 0 to the cursor
        assert len(app.requests) < 20


async def test_placeholders_until_the_window_arrives() -> None:
    app = TableApp(auto_answer=False)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        assert not table.loaded
        assert app.requests == [(0, 2 * table.visible_rows)]
        app.answer(*app.requests[-1])
        await pilot.pause()
        first = table.selected_id
        assert first == session_row(0).id

        table.focus()
        await pilot.press("end")
        await pilot.pause()
        lines = widget_lines(table)
        assert lines[-1].startswith("…"), lines[-1]
        assert table.cursor_index == TOTAL - 1
        assert table.selected_id is None  # not known yet
        assert app.highlights == [first]  # the previous highlight stands meanwhile
        offset, limit = app.requests[-1]
        assert offset <= TOTAL - table.visible_rows and offset + limit >= TOTAL
        app.answer(offset, limit)
        await pilot.pause()
        assert widget_lines(table)[-1].startswith(f"{TOTAL - 1:08d}")
        assert table.selected_id == session_row(TOTAL - 1).id
        assert app.highlights[-1] == session_row(TOTAL - 1).id


async def test_window_requests_coalesce() -> None:
    table = SessionTable()
    first = WindowRequested(table, 0, 10)
    assert first.can_replace(WindowRequested(table, 50, 10))
    assert not first.can_replace(WindowRequested(SessionTable(), 50, 10))
    assert not first.can_replace(SessionHighlighted(table, "x"))


async def test_cursor_stays_on_session_after_refresh() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        table.focus()
        await pilot.press("pagedown", "down", "down")
        await pilot.pause()
        index = table.cursor_index
        session_id = table.selected_id
        scroll = table.scroll_offset.y
        highlights = len(app.highlights)

        # Two sessions are created (they sort first), and the owner's live refresh comes in.
        app.inserted = 2
        app.total += 2
        app.answer(*table.wanted_window)
        await pilot.pause()
        assert table.selected_id == session_id
        assert table.cursor_index == index + 2
        assert table.scroll_offset.y == scroll
        assert len(app.highlights) == highlights  # same session: no new highlight

        # Data changes for the same ids: nothing moves.
        app.overrides[index] = {"status": "FAILED", "progress": 100.0}
        app.answer(*table.wanted_window)
        await pilot.pause()
        assert table.selected_id == session_id
        assert "FAILED" in widget_lines(table)[table.cursor_index - int(scroll) + 1]

        # The session under the cursor disappears: the cursor keeps its index.
        app.inserted = 1
        app.total -= 1
        before = table.cursor_index
        offset, limit = table.wanted_window
        rows = [r for r in app.rows(offset, limit + 1) if r.id != session_id][:limit]
        table.set_window(offset, rows, app.total)
        await pilot.pause()
        assert table.cursor_index == before
        assert table.selected_id not in (None, session_id)
        assert app.highlights[-1] == table.selected_id


def cursor_in_view(table: SessionTable) -> bool:
    top = int(table.scroll_offset.y)
    return top <= table.cursor_index < top + table.visible_rows


async def test_sessions_inserted_above_never_push_the_cursor_out_of_view() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        table.focus()
        for _ in range(table.visible_rows - 2):
            await pilot.press("down")
        await pilot.pause()
        session_id = table.selected_id
        app.inserted = 30
        app.total += 30
        app.answer(*table.wanted_window)
        await pilot.pause()
        assert table.selected_id == session_id
        assert cursor_in_view(table)


async def test_a_table_made_smaller_keeps_its_cursor_in_view() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        table.focus()
        for _ in range(table.visible_rows - 1):
            await pilot.press("down")
        await pilot.pause()
        session_id = table.selected_id
        await pilot.resize_terminal(120, 10)
        await pilot.pause()
        assert table.selected_id == session_id
        assert cursor_in_view(table)


async def test_mouse_scroll_away_keeps_selection_and_click_moves_cursor() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        selected = table.selected_id
        table.scroll_to(y=5_000, animate=False)
        await pilot.pause()
        assert table.selected_id == selected  # the cursor row is off screen, not forgotten
        assert widget_lines(table)[1].startswith("00005000 ")
        await pilot.click(SessionTable, offset=(3, 4))
        await pilot.pause()
        assert table.cursor_index == 5_003
        assert table.selected_id == session_row(5_003).id
        assert app.highlights[-1] == session_row(5_003).id
        await pilot.click(SessionTable, offset=(3, 4), times=2)
        await pilot.pause()
        assert app.selected[-1] == session_row(5_003).id
        table.focus()
        await pilot.press("enter")
        await pilot.pause()
        assert app.selected[-1] == session_row(5_003).id


async def test_user_text_is_literal_and_truncated() -> None:
    app = TableApp(total=3)
    app.overrides[0] = {"name": "[bold red]x[/] ok"}
    app.overrides[1] = {"name": "y" * 500, "current_stage": "[b]st[/b]"}
    app.overrides[2] = {"name": "tab\there\nnewline\x1b[31m", "orphaned": True, "status": "ACTIVE"}
    async with app.run_test(size=(120, 10)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        lines = widget_lines(table)
        assert "[bold red]x[/] ok" in lines[1]
        assert " [b]st[/b] " in lines[2]
        name_width = next(c.width for c in layout_columns(table.size.width) if c.key == "name")
        assert "y" * (name_width - 1) + "…" in lines[2]
        assert "y" * name_width not in lines[2]
        assert all(len(line) == table.size.width for line in lines)
        assert "tab here↵newline\ufffd[31m" in lines[3]
        assert "ACTIVE ⚠orphaned" in lines[3]
        # the styles of the name cell are the row's, not bold red from the markup
        strip = table.render_line(1)
        for segment in strip:
            if "[bold red]" in segment.text:
                assert not (segment.style and segment.style.bold)


async def test_narrow_terminal_drops_low_priority_columns() -> None:
    wide = [c.key for c in layout_columns(118)]
    assert wide == ["id", "name", "workflow", "status", "progress", "stage", "host", "time"]
    narrow = [c.key for c in layout_columns(78)]
    assert "host" not in narrow and "workflow" not in narrow
    assert narrow == ["id", "name", "status", "progress", "stage", "time"]
    tiny = [c.key for c in layout_columns(58)]
    assert tiny == ["id", "name", "status", "progress", "time"]
    app = TableApp(total=50)
    app.overrides[7] = {"orphaned": True, "status": "PAUSED"}
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        lines = widget_lines(table)
        assert lines[0].split() == ["ID", "NAME", "STATUS", "PROGRESS", "STAGE", "TIME"]
        assert "host-a" not in lines[1] and "nightly-etl" not in lines[1]
        assert "PAUSED ⚠" in lines[8]
        assert all(len(line) == table.size.width for line in lines)


async def test_the_stage_column_says_how_many_more_run_and_grows_on_a_wide_terminal() -> None:
    instance = "resize[size=small,format=png]"
    app = TableApp(total=2)
    app.overrides[0] = {"current_stage": instance, "also_running": 2, "status": "ACTIVE"}
    app.overrides[1] = {"current_stage": "x" * 80, "also_running": 11, "status": "ACTIVE"}
    async with app.run_test(size=(200, 10)) as pilot:
        await pilot.pause()
        lines = widget_lines(app.query_one(SessionTable))
        assert f" {instance} +2 " in lines[1]  # whole, as `session list` shows it
        stage = next(c for c in layout_columns(200) if c.key == "stage")
        cut = lines[2][lines[2].index("x") :][: stage.width]
        assert cut.endswith("… +11") and len(cut) == stage.width  # the count is never cut
    narrow = next(c for c in layout_columns(120) if c.key == "stage")
    assert narrow.width == 16  # what a 120-column terminal had: its name column keeps it


async def test_queued_sessions_no_runner_holds_are_marked_queued() -> None:
    app = TableApp(total=3)
    app.overrides[1] = {"queued": True, "status": "ACTIVE", "host": None}
    app.overrides[2] = {"queued": True, "status": "PENDING", "host": None}
    async with app.run_test(size=(120, 10)) as pilot:
        await pilot.pause()
        lines = widget_lines(app.query_one(SessionTable))
        assert "ACTIVE (queued)" in lines[2] and "PENDING (queued)" in lines[3]
        assert "queued" not in lines[1]


async def test_empty_state_shows_owner_text() -> None:
    app = TableApp(total=0)
    async with app.run_test(size=(100, 20)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)
        assert table.loaded and table.total == 0
        lines = widget_lines(table)
        text_lines = [i for i, line in enumerate(lines) if "No sessions yet" in line]
        assert len(text_lines) == 1
        row = text_lines[0]
        assert 5 <= row <= 14  # vertically centred
        line = lines[row]
        left = len(line) - len(line.lstrip())
        right = len(line) - len(line.rstrip())
        assert abs(left - right) <= 2  # horizontally centred
        assert table.selected_id is None
        assert app.highlights == [None]
        table.empty_text = "[b]nothing[/b] here"
        await pilot.pause()
        assert any("[b]nothing[/b] here" in line for line in widget_lines(table))

        # Sessions appear: the cursor lands on the first one.
        app.total = 5
        app.answer(*table.wanted_window)
        await pilot.pause()
        assert table.selected_id == session_row(0).id
        assert app.highlights[-1] == session_row(0).id


async def test_status_colours_and_highlight_burst() -> None:
    app = TableApp()
    async with app.run_test(size=(120, 30)) as pilot:
        await pilot.pause()
        table = app.query_one(SessionTable)

        def style_of(y: int, needle: str):
            for segment in table.render_line(y):
                if needle in segment.text:
                    return segment.style
            raise AssertionError(needle)

        assert style_of(2, "ACTIVE").color.name == "green"
        assert style_of(5, "FAILED").color.name == "red"
        assert style_of(3, "PAUSED").color.name == "yellow"
        table.focus()
        await pilot.press(*["down"] * 40)
        await pilot.pause()
        assert table.cursor_index == 40
        assert app.highlights[-1] == session_row(40).id
        assert len(app.highlights) <= 41


async def test_running_clocks_tick_repainting_only_their_time_cells() -> None:
    """Live durations move on by themselves, once a second, and an idle table costs little:
    only the TIME cells whose text changed are repainted, not the rows, not the table."""
    now = [NOW]

    class ClockApp(App[None]):
        def compose(self) -> ComposeResult:
            yield SessionTable(clock=lambda: now[0])

    rows = [
        session_row(1, status="ACTIVE", started_at=NOW - 5),  # seconds: ticks every second
        session_row(2, status="ACTIVE", started_at=NOW - 125),  # minutes: not this second
        session_row(4, status="FAILED", started_at=NOW - 125, finished_at=NOW - 60),
    ]
    app = ClockApp()
    async with app.run_test(size=(120, 10)) as pilot:
        table = app.query_one(SessionTable)
        table.set_window(0, rows, len(rows))
        await pilot.pause()
        before = widget_lines(table)
        assert before[1].endswith(" 5s") and before[2].endswith(" 2m")
        assert before[3].endswith(" 1m")

        repainted: list[tuple[Region, ...]] = []
        repaint = table.refresh

        def spy(*regions: Region, **kwargs: object) -> object:
            repainted.append(regions)
            return repaint(*regions, **kwargs)  # type: ignore[arg-type]

        table.refresh = spy  # type: ignore[method-assign]
        now[0] += 1
        await pilot.pause(1.2)  # the table's own one-second timer, no owner involved
        after = widget_lines(table)
        assert after[1].endswith(" 6s")
        assert after[1:] != before[1:] and after[2:] == before[2:]
        columns = layout_columns(table.scrollable_content_region.width)
        time_cell = Region(sum(c.width + 1 for c in columns[:-1]), 1, columns[-1].width, 1)
        assert repainted, "the clock moved on screen without a repaint?"
        assert set(repainted) == {(time_cell,)}, "only the running row's TIME cell"


async def test_running_clocks_keep_ticking_after_a_resize() -> None:
    """A resize forgets which TIME text each row shows; the next second's tick repaints the
    running rows' cells all the same (the screen, not a re-render by the test, is read)."""
    now = [NOW]

    class ClockApp(App[None]):
        def compose(self) -> ComposeResult:
            yield SessionTable(clock=lambda: now[0])

    rows = [session_row(1, status="ACTIVE", started_at=NOW - 5)]
    app = ClockApp()
    async with app.run_test(size=(120, 10)) as pilot:
        table = app.query_one(SessionTable)
        table.set_window(0, rows, len(rows))
        await pilot.pause()
        await pilot.resize_terminal(110, 10)
        await pilot.pause()
        now[0] += 3
        for _ in range(50):  # the table's own one-second timer, however loaded the machine
            await pilot.pause(0.1)
            if "8s" in "\n".join(screen_lines(app)):
                break
        assert "8s" in "\n".join(screen_lines(app))


async def test_a_paused_sessions_time_is_how_long_it_has_been_paused() -> None:
    """Its run is stopped, so its clock is too: TIME shows the pause, marked ‖, not a run
    that seems to go on."""
    now = [NOW]

    class ClockApp(App[None]):
        def compose(self) -> ComposeResult:
            yield SessionTable(clock=lambda: now[0])

    rows = [
        session_row(1, status="PAUSED", started_at=NOW - 3600, updated_at=NOW - 180),
        session_row(2, status="ACTIVE", started_at=NOW - 3600, updated_at=NOW - 1),
    ]
    app = ClockApp()
    async with app.run_test(size=(120, 10)) as pilot:
        table = app.query_one(SessionTable)
        table.set_window(0, rows, len(rows))
        await pilot.pause()
        lines = widget_lines(table)
        assert lines[1].endswith(" ‖3m") and lines[2].endswith(" 1h")
        now[0] += 60
        await pilot.pause(1.2)  # the table's own one-second timer
        assert widget_lines(table)[1].endswith(" ‖4m")


async def test_a_paused_sessions_time_counts_from_its_pause_not_its_last_change() -> None:
    """An approval while it is paused changes the row (``updated_at``), not the pause."""

    class ClockApp(App[None]):
        def compose(self) -> ComposeResult:
            yield SessionTable(clock=lambda: NOW)

    row = session_row(1, status="PAUSED", started_at=NOW - 3600, updated_at=NOW - 5)
    app = ClockApp()
    async with app.run_test(size=(120, 10)) as pilot:
        table = app.query_one(SessionTable)
        table.set_window(0, [replace(row, paused_at=NOW - 600)], 1)
        await pilot.pause()
        assert widget_lines(table)[1].endswith(" ‖10m")


def test_widgets_import_nothing_of_ours() -> None:
    """Widgets depend on nothing but plain data (no store, no app)."""
    import ast
    from pathlib import Path

    import widgets

    package = Path(widgets.__file__).parent
    for path in package.glob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in ("store", "app"), (path.name, name)
