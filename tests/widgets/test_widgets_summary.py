"""SessionSummary: the selected session's state line, literal, classed by its status."""

from __future__ import annotations

from textual.app import App, ComposeResult

from widgets.summary import MAX_LINES, SessionSummary


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


async def test_a_long_line_takes_three_lines_and_marks_the_cut() -> None:
    app = SummaryApp()
    async with app.run_test(size=(40, 10)) as pilot:
        summary = app.query_one(SessionSummary)
        checklist = "; ".join(f"item {i} checked" for i in range(1, 13))
        summary.show(f"PAUSED — waiting: signoff (r resumes it) — check: {checklist}", "PAUSED")
        await pilot.pause()
        lines = summary.render().plain.split("\n")  # type: ignore[union-attr]
        assert len(lines) == MAX_LINES == 3
        assert lines[-1].endswith("…") and len(lines[-1]) <= summary.content_region.width
        assert lines[0].startswith("PAUSED — waiting: signoff")


async def test_a_line_that_fits_is_shown_whole() -> None:
    app = SummaryApp()
    async with app.run_test(size=(40, 10)) as pilot:
        summary = app.query_one(SessionSummary)
        text = "PAUSED — waiting: signoff (r resumes it) — check: backups verified; rollback [link]"
        summary.show(text, "PAUSED")
        await pilot.pause()
        rendered = summary.render().plain  # type: ignore[union-attr]
        assert rendered == text and "…" not in rendered


async def test_a_cut_between_wide_characters_ends_in_the_ellipsis_without_a_gap() -> None:
    app = SummaryApp()
    async with app.run_test(size=(38, 10)) as pilot:
        summary = app.query_one(SessionSummary)
        summary.show("PAUSED — waiting: " + "漢字" * 60, "PAUSED")
        await pilot.pause()
        last = summary.render().plain.split("\n")[-1]  # type: ignore[union-attr]
        assert last.endswith("字…") or last.endswith("漢…"), repr(last)
