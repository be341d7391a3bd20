"""Under NO_COLOR Textual renders through its monochrome filter, which requires a style on
every segment: the widgets must render there too (the dashboard crashed before)."""

from __future__ import annotations

import pytest
from textual.app import App, ComposeResult

from tests.widgets.widgets_testkit import log_line, session_row
from widgets.log_pane import LogPane
from widgets.session_table import SessionTable


class _Both(App[None]):
    def compose(self) -> ComposeResult:
        yield SessionTable()
        yield LogPane()


async def test_table_and_log_render_under_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_COLOR", "1")
    app = _Both()
    async with app.run_test(size=(100, 30)) as pilot:
        app.query_one(SessionTable).set_window(0, [session_row(i) for i in range(5)], 5)
        app.query_one(LogPane).append([log_line(i) for i in range(5)])
        await pilot.pause()
        screen = app.export_screenshot()
    assert "session" in screen or "build" in screen
