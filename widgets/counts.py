"""Sessions per status, for the dashboard header.

A one-line widget rather than a ``Header`` title string, so that each count keeps its status
colour (the same ``STATUS_STYLES`` as the table) and so that no count is ever parsed as markup.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.widget import Widget

from widgets.data import STATUSES, StatusCounts
from widgets.formatting import clean
from widgets.styles import status_style

SHORT_LABELS = {
    "PENDING": "PEND",
    "ACTIVE": "ACT",
    "PAUSED": "PAUS",
    "COMPLETED": "DONE",
    "FAILED": "FAIL",
}
"""Labels used when the full ones do not fit the width (narrow terminals)."""

_DIM = Style(dim=True)


class StatusCountsBar(Widget):
    """``PENDING 3  ACTIVE 2  PAUSED 0  COMPLETED 10  FAILED 1  total 16``, coloured."""

    DEFAULT_CSS = """
    StatusCountsBar {
        height: 1;
        width: 1fr;
    }
    """

    def __init__(
        self,
        counts: StatusCounts | None = None,
        *,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._counts = counts or StatusCounts({}, 0)

    @property
    def counts(self) -> StatusCounts:
        """The counts shown."""
        return self._counts

    def set_counts(self, counts: StatusCounts) -> None:
        """Show new counts (repaints only if they changed)."""
        if counts != self._counts:
            self._counts = counts
            self.refresh()

    def build_text(self, short: bool = False, hide_zero: bool = False) -> Text:
        """The line as literal ``Text``; zero counts are dimmed so the live ones stand out.

        Statuses the widget does not know (a newer store) are shown after the known ones.
        ``short`` uses 4-letter labels and ``hide_zero`` leaves out empty statuses: the
        fallbacks ``render`` uses when the line does not fit.
        """
        counts = self._counts.counts
        statuses = list(STATUSES) + sorted(k for k in counts if k not in STATUSES)
        text = Text(no_wrap=True, end="")
        for status in statuses:
            n = counts.get(status, 0)
            if hide_zero and not n:
                continue
            label = SHORT_LABELS.get(status, status) if short else status
            if text:
                text.append("  ")
            text.append(clean(label), status_style(status) if n else _DIM)
            text.append(f" {n}", Style(bold=True) if n else _DIM)
        text.append("  total ", _DIM)
        text.append(str(self._counts.total), Style(bold=True))
        return text

    def render(self) -> Text:
        width = self.size.width
        text = self.build_text()
        if width and text.cell_len > width:
            text = self.build_text(short=True)
        if width and text.cell_len > width:
            text = self.build_text(short=True, hide_zero=True)
        return text


__all__ = ["SHORT_LABELS", "StatusCountsBar"]
