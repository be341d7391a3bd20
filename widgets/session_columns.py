"""The sessions table's columns and lines: which columns fit a width, what each cell of a
row says, and each kind of line as a strip: the header, a row (rendered once; its TIME
cell is the only part that changes with the clock), the placeholder of a row not loaded
yet, and the help shown when there is no session.

Every cell is literal ``Text``: user text is never parsed as markup.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.strip import Strip

from widgets.data import PAUSED, SessionRow
from widgets.formatting import (
    clean,
    fit,
    human_duration,
    paused_duration,
    progress_bar,
    render_segments,
)
from widgets.styles import ORPHANED_STYLE, status_style

ORPHANED_LONG = " ⚠orphaned"
ORPHANED_SHORT = " ⚠"
QUEUED_LONG = " (queued)"
QUEUED_SHORT = " ⧗"
PLACEHOLDER = "…"


@dataclass(frozen=True, slots=True)
class Column:
    """One column of the table: its key, header, width in cells and justification."""

    key: str
    title: str
    width: int
    justify: str = "left"


# Fixed widths; the name column takes what is left. ``_DROP_ORDER`` is what narrow terminals
# give up first: host, then workflow, then stage.
_ID_W, _WORKFLOW_W, _STAGE_W, _HOST_W, _TIME_W, _PROGRESS_W = 8, 16, 16, 14, 5, 11
_STATUS_WIDE_W, _STATUS_NARROW_W = 16, 9
_NAME_MIN_W = 12
_BAR_W = 6
_DROP_ORDER = ("host", "workflow", "stage")
#: Spare width goes to the name column first, up to this many cells; of the rest, the
#: stage column gains half, at most :data:`_STAGE_MAX_EXTRA` cells, so that a wide terminal
#: shows ``resize[size=small,format=png] +2`` whole.
_NAME_FIRST = 20
_STAGE_MAX_EXTRA = 24


def layout_columns(width: int) -> list[Column]:
    """Columns that fit ``width`` cells, with one space between columns.

    Space is given up in this order: the long orphaned label (``⚠orphaned`` becomes ``⚠``), then
    the host, workflow and stage columns; spare width goes to the name column, and on a wide
    terminal partly to the stage column (:data:`_NAME_FIRST`). Public for tests and for the
    owner's own width decisions.
    """
    status_w = _STATUS_WIDE_W
    stage_w = _STAGE_W
    keep = {"host", "workflow", "stage"}

    def build(name_w: int) -> list[Column]:
        cols = [Column("id", "ID", _ID_W), Column("name", "NAME", name_w)]
        if "workflow" in keep:
            cols.append(Column("workflow", "WORKFLOW", _WORKFLOW_W))
        cols.append(Column("status", "STATUS", status_w))
        cols.append(Column("progress", "PROGRESS", _PROGRESS_W))
        if "stage" in keep:
            cols.append(Column("stage", "STAGE", stage_w))
        if "host" in keep:
            cols.append(Column("host", "HOST", _HOST_W))
        cols.append(Column("time", "TIME", _TIME_W, "right"))
        return cols

    def needed(cols: list[Column]) -> int:
        return sum(c.width for c in cols) + len(cols) - 1

    cols = build(_NAME_MIN_W)
    if needed(cols) > width:
        status_w = _STATUS_NARROW_W
        cols = build(_NAME_MIN_W)
    for key in _DROP_ORDER:
        if needed(cols) <= width:
            break
        keep.discard(key)
        cols = build(_NAME_MIN_W)
    spare = width - needed(cols)
    if "stage" in keep and spare > _NAME_FIRST:  # a wide terminal shows instances whole
        stage_w = _STAGE_W + min((spare - _NAME_FIRST) // 2, _STAGE_MAX_EXTRA)
        spare -= stage_w - _STAGE_W
    name_w = max(4, _NAME_MIN_W + spare)
    return build(name_w)


def cell_text(row: SessionRow, col: Column) -> Text:
    """One cell as literal ``Text`` (user text is never parsed as markup)."""
    key = col.key
    if key == "id":
        return Text(clean(row.id[:8]))
    if key == "name":
        return Text(clean(row.name))
    if key == "workflow":
        return Text(clean(row.workflow_id))
    if key == "status":
        text = Text(clean(row.status), style=status_style(row.status))
        if row.orphaned:
            long_fits = len(row.status) + len(ORPHANED_LONG) <= col.width
            text.append(ORPHANED_LONG if long_fits else ORPHANED_SHORT, ORPHANED_STYLE)
        elif row.queued:
            long_fits = len(row.status) + len(QUEUED_LONG) <= col.width
            text.append(QUEUED_LONG if long_fits else QUEUED_SHORT, "dim")
        return text
    if key == "progress":
        bar, pct = progress_bar(row.progress, _BAR_W)
        text = Text(bar, style=status_style(row.status))
        text.append(" " + pct)
        return text
    if key == "stage":
        return _stage_cell(row, col.width)
    if key == "host":
        return Text(clean(row.host or ""))
    return Text()


def _stage_cell(row: SessionRow, width: int) -> Text:
    """The current stage, and ``+N`` when N more run beside it (as `session list` says):
    a name too long for the column loses its end, never the count."""
    name = Text(clean(row.current_stage or ""))
    if not row.also_running:
        return name
    more = f" +{row.also_running}"
    name.truncate(max(1, width - len(more)), overflow="ellipsis")
    return name + Text(more)


class RenderedRow:
    """One row rendered without its TIME cell (the last column), and the whole line for
    the last TIME text: a ticking clock costs one segment, not a row's rendering."""

    __slots__ = ("head", "last", "length", "line_for", "style")

    def __init__(self, start: list[Segment], style: Style) -> None:
        self.head = start[:-1]
        self.last = start[-1] if start else Segment("", style)
        self.length = Segment.get_line_length(start)
        self.style = style
        self.line_for: tuple[str, int, Strip] | None = None

    @classmethod
    def of(
        cls, row: SessionRow, columns: list[Column], style: Style, console: Console
    ) -> RenderedRow:
        """Every cell but the TIME one (the last column), with the separator before it."""
        line = Text(style=style, no_wrap=True, end="")
        for col in columns[:-1]:
            line.append_text(fit(cell_text(row, col), col.width, col.justify))
            line.append(" ")
        return cls(render_segments(line, console), style)

    def line(self, shown: str, column: Column, width: int) -> Strip:
        if self.line_for is not None and self.line_for[:2] == (shown, width):
            return self.line_for[2]
        cell = fit(Text(shown), column.width, column.justify).plain
        last = self.last
        # The same segments as one render of the whole line (the SVG snapshots agree):
        # the TIME cell joins the segment before it when their styles are equal.
        if last.style == self.style and not last.control:
            tail = [Segment(last.text + cell, self.style)]
        else:
            tail = [last, Segment(cell, self.style)]
        length = self.length + cell_len(cell)
        strip = Strip([*self.head, *tail], length)
        if length != width:
            strip = strip.crop_extend(0, width, self.style)
        self.line_for = (shown, width, strip)
        return strip


def _strip(text: Text, width: int, style: Style, console: Console) -> Strip:
    return Strip(render_segments(text, console)).crop_extend(0, width, style)


def header_line(columns: list[Column], width: int, style: Style, console: Console) -> Strip:
    line = Text(style=style, no_wrap=True, end="")
    for i, col in enumerate(columns):
        if i:
            line.append(" ")
        line.append_text(fit(Text(col.title), col.width, col.justify))
    return _strip(line, width, style, console)


def placeholder_line(columns: list[Column], width: int, style: Style, console: Console) -> Strip:
    """A row whose session is not loaded yet: dim dots where its id and name will be."""
    line = Text(style=style, no_wrap=True, end="")
    for i, col in enumerate(columns):
        if i:
            line.append(" ")
        cell = PLACEHOLDER if col.key in ("id", "name") else ""
        line.append(cell.ljust(col.width))
    return _strip(line, width, style, console)


def empty_line(
    text: Text, y: int, height: int, width: int, base: Style, style: Style, console: Console
) -> Strip:
    """Line ``y`` of the ``height`` lines under the header when there is no row: ``text``
    centred both ways."""
    lines = text.split("\n", allow_blank=True)
    first = max(0, (height - len(lines)) // 2)
    i = y - first
    if not 0 <= i < len(lines):
        return Strip.blank(width, base)
    line = Text(style=style, no_wrap=True, end="")
    line.append_text(lines[i])
    line.truncate(width, overflow="ellipsis")
    line.pad_left(max(0, (width - line.cell_len) // 2))
    return _strip(line, width, base, console)


def session_time(row: SessionRow, now: float) -> str:
    """The TIME cell: :func:`session_elapsed`, except for a PAUSED session, whose clock
    stops: it shows how long it has been paused, marked ``‖`` (``‖3m``), since a running
    clock on a stopped session reads as work going on."""
    if row.status == PAUSED and row.finished_at is None:
        since = row.paused_at if row.paused_at is not None else row.updated_at
        return paused_duration(now - since)
    return human_duration(session_elapsed(row, now))


def session_elapsed(row: SessionRow, now: float) -> float:
    """Seconds shown in the TIME column.

    Finished sessions: how long they ran (from start, or creation if they never started).
    Running or paused ones: time since they started. Never-started ones: their age. One
    column with the most useful figure per state, rather than two mostly-empty columns.
    """
    start = row.started_at if row.started_at is not None else row.created_at
    if row.finished_at is not None:
        return row.finished_at - start
    return now - start


__all__ = [
    "Column",
    "RenderedRow",
    "cell_text",
    "empty_line",
    "header_line",
    "layout_columns",
    "placeholder_line",
    "session_elapsed",
    "session_time",
]
