"""A virtual, windowed sessions table.

Why not ``DataTable``: it holds every row, and the dashboard must open 100,000 sessions as fast
as 10 (DESIGN §10). ``SessionTable`` holds only the rows of one *window* that its owner loaded
with a windowed store query. It knows the ``total`` row count, so the scrollbar and the
``end`` key behave as if every row were there; the rows it shows but has not been given yet are
dim placeholders while it asks for them with a ``WindowRequested`` message.

Protocol with the owner (the app):

1. The table posts ``WindowRequested(offset, limit)`` when what it shows is not covered by the
   loaded window (on mount, scroll, cursor jumps, resize). ``limit`` is about twice the visible
   rows: the visible rows plus half a page each side, so small moves need no query.
2. The owner answers ``set_window(offset, rows, total)``, from a worker's result. It also calls
   it again for live refreshes, using ``wanted_window`` for the offset and limit.
3. The table posts ``SessionHighlighted`` when the cursor rests on another session, and
   ``SessionSelected`` on ``enter`` or a double click.

Rendering follows Textual's Line API (as ``Log`` and ``DataTable`` do): the virtual height is
``total + 1`` (the header), and ``render_line`` renders only the lines on screen. The header is
fixed; it does not scroll.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from widgets import messages
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

_PENDING_TIMEOUT = 1.0
"""Seconds after which an unanswered window request may be posted again."""


@dataclass(frozen=True, slots=True)
class _Column:
    key: str
    title: str
    width: int
    justify: str = "left"


# Fixed widths; the name column takes what is left. ``_DROP_ORDER`` is what narrow terminals
# give up first (DESIGN: host, then workflow, then stage).
_ID_W, _WORKFLOW_W, _STAGE_W, _HOST_W, _TIME_W, _PROGRESS_W = 8, 16, 16, 14, 5, 11
_STATUS_WIDE_W, _STATUS_NARROW_W = 16, 9
_NAME_MIN_W = 12
_BAR_W = 6
_DROP_ORDER = ("host", "workflow", "stage")


def layout_columns(width: int) -> list[_Column]:
    """Columns that fit ``width`` cells, with one space between columns.

    Space is given up in this order: the long orphaned label (``⚠orphaned`` becomes ``⚠``), then
    the host, workflow and stage columns; the name column absorbs any spare width. Public for
    tests and for the app's own width decisions.
    """
    status_w = _STATUS_WIDE_W
    keep = {"host", "workflow", "stage"}

    def build(name_w: int) -> list[_Column]:
        cols = [_Column("id", "ID", _ID_W), _Column("name", "NAME", name_w)]
        if "workflow" in keep:
            cols.append(_Column("workflow", "WORKFLOW", _WORKFLOW_W))
        cols.append(_Column("status", "STATUS", status_w))
        cols.append(_Column("progress", "PROGRESS", _PROGRESS_W))
        if "stage" in keep:
            cols.append(_Column("stage", "STAGE", _STAGE_W))
        if "host" in keep:
            cols.append(_Column("host", "HOST", _HOST_W))
        cols.append(_Column("time", "TIME", _TIME_W, "right"))
        return cols

    def needed(cols: list[_Column]) -> int:
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
    name_w = max(4, _NAME_MIN_W + spare)
    return build(name_w)


class SessionTable(ScrollView, can_focus=True):
    """Sessions table over a window of rows; see the module docstring for the protocol.

    Public state: ``total``, ``window_offset`` (first loaded row), ``rows`` (the loaded window),
    ``cursor_index``, ``selected_id``, ``wanted_window``, ``empty_text``.
    """

    ALLOW_SELECT = False  # a click selects a row, not text (as in DataTable)

    WindowRequested = messages.WindowRequested
    SessionHighlighted = messages.SessionHighlighted
    SessionSelected = messages.SessionSelected

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("pageup", "page_up", "Page up", show=False),
        Binding("pagedown", "page_down", "Page down", show=False),
        Binding("home", "first", "First", show=False),
        Binding("end", "last", "Last", show=False),
        Binding("enter", "select", "Details", show=False),
    ]

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "session-table--header",
        "session-table--cursor",
        "session-table--placeholder",
        "session-table--empty",
    }
    """Themable parts; the app's .tcss may restyle them."""

    # Layout is intrinsic (a virtual table must have a bounded height and no horizontal
    # scrolling); the component defaults only make the cursor and header visible out of the box.
    DEFAULT_CSS = """
    SessionTable {
        height: 1fr;
        overflow-x: hidden;
        overflow-y: auto;
        & > .session-table--header { text-style: bold; background: $panel; }
        & > .session-table--cursor {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        &:focus > .session-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
        }
        & > .session-table--placeholder { color: $text-muted; }
        & > .session-table--empty { color: $text-muted; }
    }
    """

    def __init__(
        self,
        *,
        empty_text: str | Text = "No sessions.",
        clock: Callable[[], float] = time.time,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        """Create an empty table; nothing is shown until the owner's first ``set_window``.

        Args:
            empty_text: Help shown, centred, when ``total`` is 0 (rendered literally).
            clock: Source of "now" for the TIME column (injectable for tests/snapshots).
        """
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._empty_text: Text = Text(empty_text) if isinstance(empty_text, str) else empty_text
        self._clock = clock
        self._loaded = False
        self._total = 0
        self._offset = 0
        self._rows: list[SessionRow] = []
        self._index_of: dict[str, int] = {}
        self._cursor = 0
        self._cursor_id: str | None = None
        self._posted_id: str | None = None
        self._posted_any = False
        self._pending: tuple[int, int] | None = None
        self._pending_at = 0.0
        self._columns: list[_Column] = []
        self._columns_width = -1
        self._line_cache: LRUCache[tuple[object, ...], Strip] = LRUCache(256)
        self._row_cache: LRUCache[tuple[object, ...], _RenderedRow] = LRUCache(256)
        self._base_style: Style | None = None
        self._time_shown: dict[int, str] = {}
        """TIME text last rendered per absolute row index: what ``_tick`` compares with."""

    # ------------------------------------------------------------------ public state

    @property
    def total(self) -> int:
        """Number of sessions matching the owner's query (not the number held)."""
        return self._total

    @property
    def window_offset(self) -> int:
        """Index of the first loaded row (``Widget.offset`` is Textual's, a screen offset)."""
        return self._offset

    @property
    def rows(self) -> Sequence[SessionRow]:
        """The loaded window (read only)."""
        return tuple(self._rows)

    @property
    def loaded(self) -> bool:
        """Whether the owner has answered at least once (before that, nothing is drawn)."""
        return self._loaded

    @property
    def cursor_index(self) -> int:
        """Absolute index of the cursor row in ``[0, total)`` (0 when empty)."""
        return self._cursor

    @cursor_index.setter
    def cursor_index(self, index: int) -> None:
        self.move_cursor(index)

    @property
    def selected_id(self) -> str | None:
        """Id of the session under the cursor, or None while that row is not loaded / empty."""
        return self._cursor_id

    @property
    def empty_text(self) -> Text:
        """Help shown when ``total`` is 0; set a ``str`` (literal) or a ``Text``."""
        return self._empty_text

    @empty_text.setter
    def empty_text(self, value: str | Text) -> None:
        self._empty_text = Text(value) if isinstance(value, str) else value
        if self._loaded and self._total == 0:
            self.refresh()

    @property
    def visible_rows(self) -> int:
        """Data rows that fit on screen (the header takes one line)."""
        return max(0, self.scrollable_content_region.height - 1)

    @property
    def wanted_window(self) -> tuple[int, int]:
        """``(offset, limit)`` the owner should load now: the visible rows plus half a page
        above and below. Use it for periodic refreshes."""
        visible = max(1, self.visible_rows)
        limit = 2 * visible
        offset = max(0, int(self.scroll_offset.y) - visible // 2)
        if self._loaded:
            offset = max(0, min(offset, self._total - limit))
        return offset, limit

    def row_at(self, index: int) -> SessionRow | None:
        """The loaded row at absolute ``index``, or None if it is outside the window."""
        i = index - self._offset
        if 0 <= i < len(self._rows) and index < self._total:
            return self._rows[i]
        return None

    # ------------------------------------------------------------------ owner API

    def set_window(self, offset: int, rows: Sequence[SessionRow], total: int) -> None:
        """Give the table the rows ``[offset, offset + len(rows))`` and the current total.

        The cursor stays on the same session if it is in the new window (it follows the session
        when rows above it were inserted or removed); otherwise it keeps its index. The scroll
        position is kept (only clamped if the table shrank).
        """
        total = max(0, int(total))
        offset = max(0, int(offset))
        rows = list(rows)
        # A live refresh mostly brings back what is shown: then nothing is repainted.
        changed = not (
            self._loaded and offset == self._offset and total == self._total and rows == self._rows
        )
        self._loaded = True
        self._offset = offset
        self._rows = rows
        self._index_of = {row.id: offset + i for i, row in enumerate(self._rows)}
        if changed:
            self._clear_caches()

        self._total = total
        self.virtual_size = Size(0, total + 1)
        if self.scroll_offset.y > self.max_scroll_y:
            self.scroll_to(y=self.max_scroll_y, animate=False)

        previous_id = self._cursor_id
        if previous_id is not None and previous_id in self._index_of:
            self._cursor = self._index_of[previous_id]
        else:
            self._cursor = self._clamp(self._cursor)
        row = self.row_at(self._cursor)
        if row is not None:
            self._cursor_id = row.id
        elif self._total == 0:
            self._cursor_id = None
        # else: the cursor row is outside the window (the user scrolled away with the mouse):
        # keep remembering which session it was on.

        if self._pending is not None and (
            self._pending[0] == offset or self._covers(*self._visible_span())
        ):
            self._pending = None
        self._post_highlight()
        if changed:
            self.refresh()
        self._ensure_window()

    # ------------------------------------------------------------------ cursor

    def move_cursor(self, index: int, *, scroll: bool = True) -> None:
        """Put the cursor on absolute row ``index`` (clamped), scrolling it into view."""
        index = self._clamp(index)
        old = self._cursor
        self._cursor = index
        if index != old or self._cursor_id is None:
            row = self.row_at(index)
            self._cursor_id = row.id if row is not None else None
        if index != old:
            self._refresh_row(old)
            self._refresh_row(index)
        if scroll:
            self._scroll_to_cursor()
        self._post_highlight()
        self._ensure_window()

    def _clamp(self, index: int) -> int:
        return max(0, min(int(index), self._total - 1)) if self._total else 0

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.visible_rows)
        top = int(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False)
        elif self._cursor >= top + visible:
            self.scroll_to(y=self._cursor - visible + 1, animate=False)

    def _post_highlight(self) -> None:
        """Post ``SessionHighlighted`` when the known session under the cursor changed."""
        sid = self._cursor_id
        if sid is None and (not self._loaded or self._total > 0):
            return  # unknown yet: keep the previous highlight until the rows arrive
        if self._posted_any and sid == self._posted_id:
            return
        self._posted_any = True
        self._posted_id = sid
        self.post_message(messages.SessionHighlighted(self, sid))

    def action_cursor_up(self) -> None:
        """Move the cursor one row up."""
        self.move_cursor(self._cursor - 1)

    def action_cursor_down(self) -> None:
        """Move the cursor one row down."""
        self.move_cursor(self._cursor + 1)

    def action_page_up(self) -> None:
        """Move the cursor and the view one page up."""
        page = max(1, self.visible_rows)
        self.scroll_to(y=max(0, int(self.scroll_offset.y) - page), animate=False)
        self.move_cursor(self._cursor - page)

    def action_page_down(self) -> None:
        """Move the cursor and the view one page down."""
        page = max(1, self.visible_rows)
        self.scroll_to(y=int(self.scroll_offset.y) + page, animate=False)
        self.move_cursor(self._cursor + page)

    def action_first(self) -> None:
        """Go to the first session."""
        self.move_cursor(0)

    def action_last(self) -> None:
        """Go to the last session (its rows are requested, not scanned)."""
        self.move_cursor(self._total - 1)

    def action_select(self) -> None:
        """Tell the owner the user chose the session under the cursor."""
        if self._cursor_id is not None:
            self.post_message(messages.SessionSelected(self, self._cursor_id))

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1 or not self._total:
            return
        index = int(self.scroll_offset.y) + offset.y - 1
        if index >= self._total:
            return
        event.stop()
        self.move_cursor(index, scroll=False)
        if event.chain >= 2:
            self.action_select()

    # ------------------------------------------------------------------ windowing

    def _visible_span(self) -> tuple[int, int]:
        top = int(self.scroll_offset.y)
        end = top + max(1, self.visible_rows)
        if self._loaded:
            end = min(end, self._total)
        return top, end

    def _covers(self, start: int, end: int) -> bool:
        """Is ``[start, end)`` inside the loaded window?"""
        if start >= end:
            return True
        return self._offset <= start and end <= self._offset + len(self._rows)

    def _ensure_window(self) -> None:
        """Request a window if what is on screen is not loaded (and not already asked for)."""
        if not self.is_mounted or self.scrollable_content_region.height < 2:
            return
        start, end = self._visible_span()
        if self._loaded and self._covers(start, end):
            return
        if self._pending is not None:
            p_offset, p_limit = self._pending
            fresh = time.monotonic() - self._pending_at < _PENDING_TIMEOUT
            if fresh and p_offset <= start and end <= p_offset + p_limit:
                return
        offset, limit = self.wanted_window
        self._pending = (offset, limit)
        self._pending_at = time.monotonic()
        self.post_message(messages.WindowRequested(self, offset, limit))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):
            self._ensure_window()

    def on_mount(self) -> None:
        # Textual also runs ScrollView.on_mount (handlers are dispatched along the MRO).
        self.set_interval(1.0, self._tick)

    def on_resize(self, event: events.Resize) -> None:
        self._clear_caches()
        self._ensure_window()

    def on_focus(self, event: events.Focus) -> None:
        self._clear_caches(style=True)
        self.refresh()

    def on_blur(self, event: events.Blur) -> None:
        self._clear_caches(style=True)
        self.refresh()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._clear_caches(style=True)

    def _clear_caches(self, style: bool = False) -> None:
        self._line_cache.clear()
        self._row_cache.clear()
        self._time_shown.clear()
        if style:
            self._base_style = None

    def _tick(self) -> None:
        """Once a second: repaint the TIME cells whose text moved on (a running session's
        next second, minute or hour), and nothing else: an idle dashboard costs little."""
        if not self._loaded or not self._time_shown or not self._columns:
            return
        now = int(self._clock())
        time_column = self._columns[-1]
        x = sum(col.width + 1 for col in self._columns[:-1])
        top = int(self.scroll_offset.y)
        for index in range(*self._visible_span()):
            shown = self._time_shown.get(index)
            row = self.row_at(index)
            if shown is None or row is None or row.finished_at is not None:
                continue
            if session_time(row, now) != shown:
                self.refresh(Region(x, index - top + 1, time_column.width, 1))

    # ------------------------------------------------------------------ rendering

    def _refresh_row(self, index: int) -> None:
        self.refresh_line(index + 1)

    def _layout(self, width: int) -> list[_Column]:
        if width != self._columns_width:
            self._columns = layout_columns(width)
            self._columns_width = width
        return self._columns

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        base = self._base_style
        if base is None:  # walks every ancestor's styles: once, not once per line
            base = self._base_style = self.rich_style
        if not self._loaded:
            return Strip.blank(width, base)
        columns = self._layout(width)
        if y == 0:
            return self._render_header(columns, width, base)
        if self._total == 0:
            return self._render_empty(y - 1, width, base)
        index = int(self.scroll_offset.y) + y - 1
        if index >= self._total:
            return Strip.blank(width, base)
        row = self.row_at(index)
        is_cursor = index == self._cursor
        key = (index, row, is_cursor, width, self.has_focus)
        if row is None:
            cached = self._line_cache.get(key)
            if cached is None:
                cached = self._render_placeholder(columns, width, base, is_cursor)
                self._line_cache[key] = cached
            return cached
        # A running session's TIME moves on while the rest of its row stays: the row is
        # rendered once without it, and the TIME cell is added when its text changes.
        shown = session_time(row, int(self._clock()))
        self._time_shown[index] = shown
        rendered = self._row_cache.get(key)
        if rendered is None:
            rendered = self._row_cache[key] = self._render_row(row, columns, base, is_cursor)
        return rendered.line(shown, columns[-1], width)

    def _to_strip(self, text: Text, width: int, style: Style) -> Strip:
        return Strip(render_segments(text, self.app.console)).crop_extend(0, width, style)

    def _render_header(self, columns: list[_Column], width: int, base: Style) -> Strip:
        style = base + self.get_component_rich_style("session-table--header")
        line = Text(style=style, no_wrap=True, end="")
        for i, col in enumerate(columns):
            if i:
                line.append(" ")
            line.append_text(fit(Text(col.title), col.width, col.justify))
        return self._to_strip(line, width, style)

    def _render_empty(self, y: int, width: int, base: Style) -> Strip:
        lines = self._empty_text.split("\n", allow_blank=True)
        height = max(0, self.scrollable_content_region.height - 1)
        first = max(0, (height - len(lines)) // 2)
        i = y - first
        if not 0 <= i < len(lines):
            return Strip.blank(width, base)
        style = base + self.get_component_rich_style("session-table--empty")
        text = Text(style=style, no_wrap=True, end="")
        text.append_text(lines[i])
        text.truncate(width, overflow="ellipsis")
        pad = max(0, (width - text.cell_len) // 2)
        text.pad_left(pad)
        return self._to_strip(text, width, base)

    def _render_placeholder(
        self, columns: list[_Column], width: int, base: Style, is_cursor: bool
    ) -> Strip:
        style = base + self.get_component_rich_style("session-table--placeholder")
        if is_cursor:
            style += self.get_component_rich_style("session-table--cursor")
        line = Text(style=style, no_wrap=True, end="")
        for i, col in enumerate(columns):
            if i:
                line.append(" ")
            cell = PLACEHOLDER if col.key in ("id", "name") else ""
            line.append(cell.ljust(col.width))
        return self._to_strip(line, width, style)

    def _render_row(
        self, row: SessionRow, columns: list[_Column], base: Style, is_cursor: bool
    ) -> _RenderedRow:
        """Every cell but the TIME one (the last column), with the separator before it."""
        style = base
        if is_cursor:
            style = base + self.get_component_rich_style("session-table--cursor")
        line = Text(style=style, no_wrap=True, end="")
        for col in columns[:-1]:
            line.append_text(fit(self._cell(row, col), col.width, col.justify))
            line.append(" ")
        return _RenderedRow(render_segments(line, self.app.console), style)

    def _cell(self, row: SessionRow, col: _Column) -> Text:
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
            return Text(clean(row.current_stage or ""))
        if key == "host":
            return Text(clean(row.host or ""))
        return Text()


class _RenderedRow:
    """One row rendered without its TIME cell (the last column), and the whole line for
    the last TIME text: a ticking clock costs one segment, not a row's rendering."""

    __slots__ = ("head", "last", "length", "line_for", "style")

    def __init__(self, start: list[Segment], style: Style) -> None:
        self.head = start[:-1]
        self.last = start[-1] if start else Segment("", style)
        self.length = Segment.get_line_length(start)
        self.style = style
        self.line_for: tuple[str, int, Strip] | None = None

    def line(self, shown: str, column: _Column, width: int) -> Strip:
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


def session_time(row: SessionRow, now: float) -> str:
    """The TIME cell: :func:`session_elapsed`, except for a PAUSED session, whose clock
    stops: it shows how long it has been paused, marked ``‖`` (``‖3m``), since a running
    clock on a stopped session reads as work going on."""
    if row.status == PAUSED and row.finished_at is None:
        return paused_duration(now - row.updated_at)
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


__all__ = ["SessionTable", "layout_columns", "session_elapsed", "session_time"]
