"""SessionWindow: the rows a virtual table holds, its cursor and its pending request."""

from __future__ import annotations

from tests.widgets.widgets_testkit import session_row
from widgets.session_window import PENDING_TIMEOUT, SessionWindow


def window_of(first: int, count: int, total: int) -> SessionWindow:
    window = SessionWindow()
    window.load(first, [session_row(i) for i in range(first, first + count)], total)
    return window


def test_rows_outside_the_window_are_not_known() -> None:
    window = window_of(10, 5, 100)
    assert window.row_at(10) == session_row(10)
    assert window.row_at(14) == session_row(14)
    assert window.row_at(9) is None and window.row_at(15) is None


def test_the_same_answer_again_is_no_change() -> None:
    window = window_of(0, 5, 100)
    assert not window.load(0, [session_row(i) for i in range(5)], 100)
    assert window.load(0, [session_row(i) for i in range(5)], 101)
    assert window.load(0, [session_row(i, status="FAILED") for i in range(5)], 101)


def test_the_cursor_follows_its_session_when_rows_arrive_above_it() -> None:
    window = window_of(0, 5, 5)
    window.move_cursor(2)
    assert window.cursor_id == session_row(2).id
    window.load(0, [session_row(-1), *(session_row(i) for i in range(5))], 6)
    assert window.cursor == 3 and window.cursor_id == session_row(2).id


def test_the_cursor_keeps_its_index_when_its_session_is_gone() -> None:
    window = window_of(0, 5, 5)
    window.move_cursor(4)
    window.load(0, [session_row(i) for i in range(3)], 3)
    assert window.cursor == 2 and window.cursor_id == session_row(2).id
    window.load(0, [], 0)
    assert window.cursor == 0 and window.cursor_id is None


def test_a_cursor_moved_outside_the_window_has_no_session_until_its_rows_come() -> None:
    window = window_of(0, 10, 1000)
    window.move_cursor(500)
    assert window.cursor == 500 and window.cursor_id is None
    window.load(490, [session_row(i) for i in range(490, 510)], 1000)
    assert window.cursor_id == session_row(500).id
    assert window.move_cursor(5000) == 500 and window.cursor == 999


def test_rows_asked_for_are_not_asked_again_until_answered_or_stale() -> None:
    window = window_of(0, 20, 1000)
    assert not window.needs((0, 10), (0, 20), now=0.0), "loaded already"
    assert window.needs((100, 110), (95, 20), now=0.0)
    assert not window.needs((102, 112), (97, 20), now=0.5), "the pending request covers it"
    assert window.needs((102, 112), (97, 20), now=0.5 + PENDING_TIMEOUT), "no answer came"
    window.load(97, [session_row(i) for i in range(97, 117)], 1000)
    window.settle(97, (102, 112))
    assert not window.needs((102, 112), (97, 20), now=10.0)
    assert window.needs((300, 310), (295, 20), now=10.0)
