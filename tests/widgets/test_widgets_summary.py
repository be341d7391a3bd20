"""SessionSummary: the selected session's state line, literal, classed by its status."""

from __future__ import annotations

from textual.app import App, ComposeResult

from widgets.summary import SessionSummary


class SummaryApp(App[None]):
    def compose(self) -> ComposeResult:
        yield SessionSummary(id="summary")


async def test_the_line_is_literal_and_classed_by_the_sessions_status() -> None:
    app = SummaryApp()
    async with app.run_test(size=(80, 5)) as pilot:
        summary = app.query_one(SessionSummary)
        summary.show("PAUSED — waiting: [b]approve[/b]", "PAUSED", orphaned=True)
        await pilot.pause()
        assert str(summary.render()) == "PAUSED — waiting: [b]approve[/b]"
        assert summary.has_class("-paused") and summary.has_class("-orphaned")
        assert not summary.has_class("-none") and not summary.has_class("-active")
        summary.show("ACTIVE", "ACTIVE")
        assert summary.has_class("-active") and not summary.has_class("-paused")
        assert not summary.has_class("-orphaned")


async def test_no_session_hides_it() -> None:
    app = SummaryApp()
    async with app.run_test(size=(80, 5)) as pilot:
        summary = app.query_one(SessionSummary)
        summary.show("FAILED — boom", "FAILED")
        summary.show(None)
        await pilot.pause()
        assert summary.has_class("-none") and not summary.has_class("-failed")
        assert str(summary.render()) == ""
