"""The instances of an open matrix stage, one screen line each, under its group's row.

Why not a ``StageRowView`` per instance: a row is a dozen widgets, and 256 of them took
seconds to mount and over half a second per key press afterwards. This is one widget
whatever the number of instances (the Line API: only the lines on screen are rendered,
each cached until its row, the cursor, the time shown or the columns change), drawn in the
columns of the list's header, so an instance reads like any stage row: its name (the
matrix values), status, bar and percentage, attempt, time; a failed instance's error on the
line below it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

from rich.style import Style
from rich.text import Text
from textual.cache import LRUCache
from textual.geometry import Region
from textual.renderables.bar import Bar as BarRenderable
from textual.strip import Strip
from textual.widget import Widget

from widgets.data import FAILED, StageRow
from widgets.formatting import clamp_progress, clean, fit, render_segments
from widgets.stage_groups import instance_label, keys_fit
from widgets.styles import status_style
from widgets.timing import stage_time, ticking


class Column(NamedTuple):
    """Where a column's content is on a line: first cell and width (0: not shown)."""

    x: int
    width: int


class Columns(NamedTuple):
    """The stage list's columns, as its header lays them out."""

    name: Column
    status: Column
    bar: Column
    attempt: Column
    time: Column


NO_COLUMNS = Columns(*(Column(0, 0),) * 5)

PERCENT_WIDTH = 5
"""Cells of the percentage after a bar (as Textual's ``ProgressBar`` shows it)."""


class InstanceLines(Widget):
    """One line per instance of a matrix stage (plus one under each that failed with an
    error); ``columns`` says where the header put each column."""

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "instance-lines--bar",
        "instance-lines--bar-complete",
        "instance-lines--cursor",
    }

    # The bar's colours are those of Textual's ``Bar``: an instance's bar looks like the
    # bar of any stage row above or below it.
    DEFAULT_CSS = """
    InstanceLines {
        height: auto;
        & > .instance-lines--bar { color: $primary; background: $surface; }
        & > .instance-lines--bar-complete { color: $success; background: $surface; }
        & > .instance-lines--cursor { background: $block-cursor-background; }
    }
    """

    def __init__(
        self,
        rows: Sequence[StageRow],
        clock: Callable[[], float],
        columns: Callable[[], Columns],
    ) -> None:
        super().__init__(classes="stage-instances")
        self._clock = clock
        self._columns = columns
        self._rows: tuple[StageRow, ...] = ()
        #: (name column width, whether every instance's label fits with its keys there)
        self._keyed: tuple[int, bool] | None = None
        self._lines: list[tuple[int, bool]] = []  # (row index, is its error line)
        self._first_line: list[int] = []  # per row: its first line
        self._cursor: int | None = None
        self._shown_times: dict[int, str] = {}  # row index -> time text last rendered
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(1024)
        self._layout_rows(tuple(rows))

    # -- what is shown ---------------------------------------------------------------------

    @property
    def rows(self) -> tuple[StageRow, ...]:
        """The instances, in order."""
        return self._rows

    @property
    def cursor(self) -> int | None:
        """The instance highlighted as the list's cursor (None: none)."""
        return self._cursor

    @cursor.setter
    def cursor(self, index: int | None) -> None:
        if index == self._cursor:
            return
        old, self._cursor = self._cursor, index
        for row in (old, index):
            if row is not None:
                self._refresh_row(row)

    def line_of(self, index: int) -> int:
        """The line instance ``index`` starts on."""
        return self._first_line[index] if 0 <= index < len(self._first_line) else 0

    def row_at(self, y: int) -> int | None:
        """The instance shown on line ``y`` (None: below the last)."""
        return self._lines[y][0] if 0 <= y < len(self._lines) else None

    def set_rows(self, rows: Sequence[StageRow]) -> None:
        """Show new values of the same instances: the lines of those that changed are
        rendered again, the others are not touched."""
        rows = tuple(rows)
        old = self._rows
        if rows == old:
            return
        count = len(self._lines)
        self._layout_rows(rows)
        if len(self._lines) != count or len(rows) != len(old):
            self.refresh(layout=True)
            return
        for i, (new, was) in enumerate(zip(rows, old, strict=True)):
            if new != was:
                self._refresh_row(i)

    def tick(self) -> None:
        """Repaint the TIME of the instances whose clock moved on since last shown."""
        if not self.is_mounted:
            return
        now = self._clock()
        for i, row in enumerate(self._rows):
            if ticking(row) and self._shown_times.get(i) != stage_time(row, now):
                self._refresh_row(i)

    # -- geometry --------------------------------------------------------------------------

    def _layout_rows(self, rows: tuple[StageRow, ...]) -> None:
        self._rows = rows
        self._keyed = None
        self._lines = []
        self._first_line = []
        for i, row in enumerate(rows):
            self._first_line.append(len(self._lines))
            self._lines.append((i, False))
            if row.error:
                self._lines.append((i, True))

    def _refresh_row(self, index: int) -> None:
        if not self.is_mounted or not 0 <= index < len(self._rows):
            return
        y = self._first_line[index]
        height = 2 if self._rows[index].error else 1
        self.refresh(Region(0, y, self.size.width, height))

    def get_content_height(self, container: object, viewport: object, width: int) -> int:
        return len(self._lines)

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    # -- rendering -------------------------------------------------------------------------

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        base = self.rich_style
        if not 0 <= y < len(self._lines):
            return Strip.blank(width, base)
        index, is_error = self._lines[y]
        row = self._rows[index]
        columns = self._columns() if width else NO_COLUMNS
        cursor = index == self._cursor
        time_text = "" if is_error else stage_time(row, self._clock())
        if not is_error:
            self._shown_times[index] = time_text
        key = (row, is_error, cursor, time_text, columns, width, base)
        strip = self._strips.get(key)
        if strip is None:
            text = Text(style=base, no_wrap=True, end="")
            text.append_text(
                self._error_text(row, width) if is_error else self._row_text(row, columns)
            )
            style = base
            if cursor:
                highlight = Style(
                    bgcolor=self.get_component_rich_style("instance-lines--cursor").bgcolor
                )
                style = base + highlight
                text.stylize(highlight)
            strip = Strip(render_segments(text, self.app.console)).crop_extend(0, width, style)
            self._strips[key] = strip
        return strip

    def _row_text(self, row: StageRow, columns: Columns) -> Text:
        line = Text(no_wrap=True, end="")

        def place(column: Column, piece: Text, justify: str = "left") -> None:
            if column.width <= 0:
                return
            gap = column.x - line.cell_len
            if gap > 0:
                line.append(" " * gap)
            line.append_text(fit(piece, column.width, justify))

        width = columns.name.width
        if self._keyed is None or self._keyed[0] != width:
            self._keyed = (width, keys_fit(self._rows, width))
        place(columns.name, Text(clean(instance_label(row, width, keyed=self._keyed[1]))))
        status = Text(clean(row.status), style=status_style(row.status))
        if row.status == FAILED and row.exit_code is not None:
            status.append(f" ({row.exit_code})")
        place(columns.status, status)
        place(columns.bar, self._bar_text(row.progress, columns.bar.width))
        place(columns.attempt, Text(str(row.attempt)), "right")
        place(columns.time, Text(stage_time(row, self._clock())), "right")
        return line

    def _error_text(self, row: StageRow, width: int) -> Text:
        text = Text("    ↳ " + clean(row.error or ""), style=status_style("FAILED"))
        return fit(text, width)

    def _bar_text(self, progress: float, width: int) -> Text:
        """The bar and its percentage, drawn as Textual's ``ProgressBar`` draws them."""
        bar_width = max(0, width - PERCENT_WIDTH)
        fraction = clamp_progress(progress) / 100
        if bar_width:  # as ``Bar`` does: moves of less than half a cell are not drawn
            fraction = int(fraction * bar_width * 2) / (bar_width * 2)
        style = self.get_component_rich_style(
            "instance-lines--bar-complete" if fraction >= 1 else "instance-lines--bar"
        )
        text = Text(no_wrap=True, end="")
        if bar_width:
            bar = BarRenderable(
                highlight_range=(0, bar_width * fraction),
                highlight_style=Style.from_color(style.color),
                background_style=Style.from_color(style.bgcolor),
                width=bar_width,
            )
            console = self.app.console
            for part in bar.__rich_console__(console, console.options):
                if isinstance(part, Text):
                    text.append_text(part)
        percent = f"{round(clamp_progress(progress))}%"
        text.append(percent.rjust(PERCENT_WIDTH))
        return text


__all__ = ["NO_COLUMNS", "Column", "Columns", "InstanceLines"]
