"""Sessions per status, for the dashboard header.

A one-line widget rather than a ``Header`` title string, so that each count keeps its status
colour (the same ``STATUS_STYLES`` as the table) and so that no count is ever parsed as markup.
"""

from __future__ import annotations

from collections.abc import Sequence

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
#: The order of the counts when even the shortest line does not fit: what needs someone
#: first, what is over last.
URGENCY = ("FAILED", "PAUSED", "ACTIVE", "PENDING", "COMPLETED")


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

    def build_text(
        self,
        short: bool = False,
        hide_zero: bool = False,
        total: bool = True,
        order: Sequence[str] | None = None,
        keep: int | None = None,
    ) -> Text:
        """The line as literal ``Text``; zero counts are dimmed so the live ones stand out.

        Statuses the widget does not know (a newer store) are shown after the known ones.
        ``short`` uses 4-letter labels, ``hide_zero`` leaves out empty statuses, ``total``
        keeps the total, ``order`` puts the statuses in that order and ``keep`` shows only
        the first ``keep`` of them, then "…": the fallbacks ``render`` uses when the line
        does not fit.
        """
        counts = self._counts.counts
        statuses = list(order or STATUSES) + sorted(
            k for k in counts if k not in (order or STATUSES)
        )
        if hide_zero:
            statuses = [status for status in statuses if counts.get(status, 0)]
        cut = keep is not None and keep < len(statuses)
        statuses = statuses[:keep]
        text = Text(no_wrap=True, end="")
        for status in statuses:
            n = counts.get(status, 0)
            label = SHORT_LABELS.get(status, status) if short else status
            if text:
                text.append("  ")
            text.append(clean(label), status_style(status) if n else _DIM)
            text.append(f" {n}", Style(bold=True) if n else _DIM)
        if cut:
            text.append("…", _DIM)
        if total:
            text.append("  total " if text else "total ", _DIM)
            text.append(str(self._counts.total), Style(bold=True))
        return text

    def render(self) -> Text:
        """The longest form that fits; when none does, the counts that matter most
        (:data:`URGENCY`: failures first) come first and the line ends in "…" where it is
        cut, so a narrow terminal never hides a failure behind the finished sessions."""
        width = self.size.width
        for short, hide_zero, total in (
            (False, False, True),
            (True, False, True),
            (True, True, True),
            (True, True, False),
        ):
            text = self.build_text(short=short, hide_zero=hide_zero, total=total)
            if not width or text.cell_len <= width:
                return text
        shown = len([n for n in self._counts.counts.values() if n])
        for keep in range(shown - 1, 0, -1):
            text = self.build_text(
                short=True, hide_zero=True, total=False, order=URGENCY, keep=keep
            )
            if text.cell_len <= width:
                return text
        # Not even the most urgent count fits with its label: its number alone, in its
        # status's colour, and never a number cut short (12345 read as 1234…).
        urgent = next((s for s in URGENCY if self._counts.counts.get(s)), None)
        if urgent is None:
            return Text("")
        number = Text(str(self._counts.counts[urgent]), status_style(urgent), end="")
        return number if number.cell_len <= width else Text("…", _DIM)


__all__ = ["SHORT_LABELS", "URGENCY", "StatusCountsBar"]
