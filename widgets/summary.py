"""One line above the selected session's stages: its state and why (a manual gate waiting,
the error that failed it, a runner gone), which the sessions table has no room for.

The owner hands down the line and the facts it is coloured by; the colours themselves are
the app's stylesheet's (classes ``-pending`` … ``-failed``, ``-orphaned``, and ``-none``
when no session is selected).
"""

from __future__ import annotations

from rich.text import Text
from textual.app import RenderResult
from textual.widgets import Static

from widgets.data import STATUSES

#: Most lines the summary takes from the stage list; what does not fit ends in "…".
MAX_LINES = 3


class SessionSummary(Static):
    """The summary line; feed it with :meth:`show`. A long one (a gate's checklist, a
    runner gone, several gates) wraps onto at most :data:`MAX_LINES` lines, and a cut is
    marked with "…" rather than lost silently."""

    def __init__(self, *, id: str | None = None, classes: str | None = None) -> None:
        super().__init__("", id=id, classes=classes, markup=False)
        self._shown = ""

    def show(self, text: str | None, status: str | None = None, orphaned: bool = False) -> None:
        """Show ``text`` (literally) for a session in ``status``; None: no session."""
        if (text or "") != self._shown:  # an update lays the screen out again
            self._shown = text or ""
            self.update(Text(self._shown))
        self.set_class(text is None, "-none")
        for name in STATUSES:
            self.set_class(status == name, f"-{name.lower()}")
        self.set_class(orphaned, "-orphaned")

    def render(self) -> RenderResult:
        text = Text(self._shown)
        width = self.content_region.width
        if width <= 1:
            return text
        lines = text.wrap(self.app.console, width)
        if len(lines) <= MAX_LINES:
            return text
        kept = list(lines)[:MAX_LINES]
        last = kept[-1]
        last.truncate(width - 1)  # pads when a wide character straddles the cut
        last.rstrip()
        last.append("…")
        return Text("\n").join(kept)


__all__ = ["MAX_LINES", "SessionSummary"]
