"""Pop-ups for the sessions that failed or reached a manual gate, anywhere in the store.

Textual stacks notifications upwards from the screen's bottom right corner, and those that
do not fit are drawn above its top, where nobody sees them: a burst of failures (a broken
shared dependency fails ten sessions within seconds) lost most of its alerts that way. So
the alert pop-ups on screen at once must fit its height, each measured as Textual draws it
(its text wrapped to the pop-up's width), :data:`MOST_SHOWN` at most. An alert that finds
no room waits until the oldest pop-up's time is up; when more wait than there is room for,
the last place says how many more there are. Every alert is seen, by itself or counted.
(Other notifications, an operation's result, are short-lived and not counted: the rows
left for the header and the footer absorb one.)
"""

from __future__ import annotations

import io
import time
from collections.abc import Sequence
from typing import Any

from app.tui.data import Alert

#: Most alert pop-ups on screen at once, however tall the screen.
MOST_SHOWN = 5
#: Seconds a failure's and a gate's pop-up stay.
FAILURE_SECONDS = 15.0
GATE_SECONDS = 10.0
#: A pop-up's width (Textual's Toast: 60 columns, half the screen at most), the columns of
#: its border and padding, and the rows around its text (margin, padding).
TOAST_WIDTH, TOAST_SIDES, TOAST_ROWS_AROUND = 60, 3, 3
#: Rows of the screen no pop-up should cover (the header's counts, the footer's keys).
KEPT_ROWS = 2


def toast_rows(screen_width: int, title: str, text: str) -> int:
    """Rows a pop-up of ``title`` and ``text`` takes on a screen ``screen_width`` wide."""
    from rich.console import Console
    from rich.text import Text

    width = max(1, min(TOAST_WIDTH, screen_width // 2) - TOAST_SIDES)
    console = Console(width=width, file=io.StringIO(), color_system=None)
    lines = len(Text(title).wrap(console, width)) + len(Text(text).wrap(console, width))
    return TOAST_ROWS_AROUND + lines


def more_text(count: int) -> str:
    return f"and {count} more sessions failed or reached a gate (filter with 5 or 3)"


class AlertPopups:
    """The alerts of one dashboard screen: shown as room allows, in the order they came."""

    def __init__(self, screen: Any) -> None:
        self._screen = screen
        self._waiting: list[Alert] = []
        #: Each alert pop-up on screen: when it goes (monotonic seconds), and its rows.
        self._shown: list[tuple[float, int]] = []
        self._timer: Any = None

    def add(self, alerts: Sequence[Alert]) -> None:
        self._waiting.extend(alerts)
        self._pop()

    def _rows(self, title: str, text: str) -> int:
        return toast_rows(self._screen.size.width, title, text)

    def _pop(self) -> None:
        now = time.monotonic()
        self._shown = [(at, rows) for at, rows in self._shown if at > now]
        room = self._screen.size.height - KEPT_ROWS - sum(rows for _, rows in self._shown)
        places = MOST_SHOWN - len(self._shown)
        waiting, self._waiting = self._waiting, []
        while waiting and places > 0:
            alert = waiting[0]
            rows = self._rows(alert.title, alert.text)
            summary = self._rows("more alerts", more_text(len(waiting) - 1))
            last = len(waiting) == 1
            # The first pop-up on an empty screen is shown even if it is taller than it;
            # any other leaves the room and the place for the count of those after it.
            fits = rows <= room or not self._shown
            if fits and (last or (rows + summary <= room and places > 1)):
                self._alert(alert, rows)
                waiting.pop(0)
                room, places = room - rows, places - 1
                continue
            if summary <= room or not self._shown:  # the last place counts the rest
                self._notify(more_text(len(waiting)), "more alerts", "warning", FAILURE_SECONDS)
                self._shown.append((time.monotonic() + FAILURE_SECONDS, summary))
                waiting = []
            break
        self._waiting = waiting
        if self._waiting and self._timer is None:  # room comes when the oldest one goes
            soonest = min(at for at, _ in self._shown)
            self._timer = self._screen.set_timer(soonest - now + 0.05, self._room_made)

    def _room_made(self) -> None:
        self._timer = None
        self._pop()

    def _alert(self, alert: Alert, rows: int) -> None:
        seconds = FAILURE_SECONDS if alert.kind == "failure" else GATE_SECONDS
        severity = "error" if alert.kind == "failure" else "warning"
        self._notify(alert.text, alert.title, severity, seconds)
        self._shown.append((time.monotonic() + seconds, rows))

    def _notify(self, text: str, title: str, severity: str, seconds: float) -> None:
        self._screen.notify(text, title=title, severity=severity, timeout=seconds, markup=False)


__all__ = ["AlertPopups", "toast_rows"]
