"""LogLines: the records a log pane holds, bounded, and where each one is on screen."""

from __future__ import annotations

from tests.widgets.widgets_testkit import log_line
from widgets.log_lines import LogLines, line_width


def test_ids_already_held_are_ignored() -> None:
    lines = LogLines(100)
    assert lines.append([log_line(1), log_line(2)]).added == 2
    assert lines.append([log_line(2), log_line(3)]).added == 1
    assert [r.id for r in lines.records] == [1, 2, 3] and lines.max_id == 3


def test_the_oldest_go_beyond_max_lines_and_say_what_they_took_on_screen() -> None:
    lines = LogLines(3)
    lines.append([log_line(i) for i in range(1, 4)])
    appended = lines.append([log_line(4), log_line(5)])
    assert [r.id for r in appended.dropped] == [1, 2] and appended.dropped_visual == 2
    assert [r.id for r in lines.records] == [3, 4, 5]


def test_wrapped_records_take_as_many_screen_lines_as_their_width_needs() -> None:
    short, long = log_line(1, "x"), log_line(2, "y" * 100)
    lines = LogLines(10)
    lines.append([short, long])
    width = line_width(short) + 1
    lines.rewrap(width)
    pieces = -(-line_width(long) // width)
    assert lines.visual_count == 1 + pieces
    assert lines.visual_start(1) == 1 and lines.locate(pieces) == (1, pieces - 1)
    lines.append([log_line(3, "z")])
    assert lines.visual_count == 2 + pieces and lines.locate(1 + pieces) == (2, 0)
    lines.rewrap(0)
    assert lines.visual_count == 3 and lines.locate(2) == (2, 0)


def test_dropping_a_wrapped_record_reports_all_its_screen_lines() -> None:
    lines = LogLines(2, wrap_width=20)
    lines.append([log_line(1, "y" * 100), log_line(2, "x")])
    appended = lines.append([log_line(3, "x")])
    assert appended.dropped_visual == lines.rows_of(line_width(log_line(1, "y" * 100))) > 1


def test_older_records_fill_only_the_room_left_keeping_the_newest_of_them() -> None:
    lines = LogLines(5)
    lines.append([log_line(i) for i in range(10, 13)])
    assert lines.prepend([log_line(i) for i in range(5, 10)]) == 2
    assert [r.id for r in lines.records] == [8, 9, 10, 11, 12]
    assert lines.prepend([log_line(1)]) == 0
