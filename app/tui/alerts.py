"""Pop-ups for the sessions that failed or reached a manual gate, anywhere in the store.

Textual stacks notifications upwards from the screen's bottom right corner, and those that
do not fit are drawn above its top, where nobody sees them: a burst of failures (a broken
shared dependency fails ten sessions within seconds) lost most of its alerts that way. So
the alert pop-ups on screen at once are bounded by what the screen holds (about
:data:`TOAST_ROWS` rows each, :data:`MOST_SHOWN` at most). An alert that finds no room
waits until the oldest pop-up's time is up; when more wait than there is room for, the last
place says how many more there are. Every alert is seen, by itself or counted.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from app.tui.data import Alert

#: Rows one pop-up takes (its margin, padding, title and two lines of text).
TOAST_ROWS = 6
#: Most alert pop-ups on screen at once, however tall the screen.
MOST_SHOWN = 5
#: Seconds a failure's and a gate's pop-up stay.
FAILURE_SECONDS = 15.0
GATE_SECONDS = 10.0


class AlertPopups:
    """The alerts of one dashboard screen: shown as room allows, in the order they came."""

    def __init__(self, screen: Any) -> None:
        self._screen = screen
        self._waiting: list[Alert] = []
        #: When each pop-up on screen goes (monotonic seconds).
        self._leaving: list[float] = []
        self._timer: Any = None

    def add(self, alerts: Sequence[Alert]) -> None:
        self._waiting.extend(alerts)
        self._pop()

    def room(self) -> int:
        """Pop-ups the screen holds at once (one at least)."""
        height: int = self._screen.size.height
        return max(1, min(MOST_SHOWN, height // TOAST_ROWS))

    def _pop(self) -> None:
        now = time.monotonic()
        self._leaving = [at for at in self._leaving if at > now]
        free = self.room() - len(self._leaving)
        if self._waiting and free > 0:
            if len(self._waiting) <= free:
                shown, counted = self._waiting, []
            else:
                shown, counted = self._waiting[: free - 1], self._waiting[free - 1 :]
            self._waiting = []
            for alert in shown:
                failed = alert.kind == "failure"
                self._notify(
                    alert.text,
                    alert.title,
                    "error" if failed else "warning",
                    FAILURE_SECONDS if failed else GATE_SECONDS,
                )
            if counted:
                self._notify(
                    f"and {len(counted)} more sessions failed or reached a gate (filter with "
                    "5 or 3)",
                    "more alerts",
                    "warning",
                    FAILURE_SECONDS,
                )
        if self._waiting and self._timer is None:  # room comes when the oldest one goes
            self._timer = self._screen.set_timer(min(self._leaving) - now + 0.05, self._room_made)

    def _room_made(self) -> None:
        self._timer = None
        self._pop()

    def _notify(self, text: str, title: str, severity: str, seconds: float) -> None:
        self._screen.notify(text, title=title, severity=severity, timeout=seconds, markup=False)
        self._leaving.append(time.monotonic() + seconds)


__all__ = ["AlertPopups"]
