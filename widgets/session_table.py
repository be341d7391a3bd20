"""A virtual, windowed sessions table.

Why not ``DataTable``: it holds every row, and the dashboard must open 100,000 sessions as fast
as 10. ``SessionTable`` holds only the rows of one *window* that its owner loaded with a
windowed store query (:class:`widgets.session_window.SessionWindow`). It knows the ``total``
row count, so the scrollbar and the ``end`` key behave as if every row were there; the rows it
shows but has not been given yet are dim placeholders while it asks for them with a
``WindowRequested`` message.

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
fixed; it does not scroll. What each column shows is in :mod:`widgets.session_columns`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from widgets import messages
from widgets.data import SessionRow
from widgets.session_columns import (
    Column,
    RenderedRow,
    empty_line,
    header_line,
    layout_columns,
    placeholder_line,
    session_elapsed,
    session_time,
)
from widgets.session_window import SessionWindow


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
        self._window = SessionWindow()
        self._posted_id: str | None = None
        self._posted_any = False
        self._columns: list[Column] = []
        self._columns_width = -1
        self._line_cache: LRUCache[tuple[object, ...], Strip] = LRUCache(256)
        self._row_cache: LRUCache[tuple[object, ...], RenderedRow] = LRUCache(256)
        self._base_style: Style | None = None
        self._time_shown: dict[int, str] = {}
        """TIME text last rendered per absolute row index: what ``_tick`` compares with."""

    # ------------------------------------------------------------------ public state

    @property
    def total(self) -> int:
        """Number of sessions matching the owner's query (not the number held)."""
        return self._window.total

    @property
    def window_offset(self) -> int:
        """Index of the first loaded row (``Widget.offset`` is Textual's, a screen offset)."""
        return self._window.offset

    @property
    def rows(self) -> Sequence[SessionRow]:
        """The loaded window (read only)."""
        return tuple(self._window.rows)

    @property
    def loaded(self) -> bool:
        """Whether the owner has answered at least once (before that, nothing is drawn)."""
        return self._window.loaded

    @property
    def cursor_index(self) -> int:
        """Absolute index of the cursor row in ``[0, total)`` (0 when empty)."""
        return self._window.cursor

    @cursor_index.setter
    def cursor_index(self, index: int) -> None:
        self.move_cursor(index)

    @property
    def selected_id(self) -> str | None:
        """Id of the session under the cursor, or None while that row is not loaded / empty."""
        return self._window.cursor_id

    @property
    def empty_text(self) -> Text:
        """Help shown when ``total`` is 0; set a ``str`` (literal) or a ``Text``."""
        return self._empty_text

    @empty_text.setter
    def empty_text(self, value: str | Text) -> None:
        self._empty_text = Text(value) if isinstance(value, str) else value
        if self.loaded and self.total == 0:
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
        if self.loaded:
            offset = max(0, min(offset, self.total - limit))
        return offset, limit

    def row_at(self, index: int) -> SessionRow | None:
        """The loaded row at absolute ``index``, or None if it is outside the window."""
        return self._window.row_at(index)

    # ------------------------------------------------------------------ owner API

    def set_window(self, offset: int, rows: Sequence[SessionRow], total: int) -> None:
        """Give the table the rows ``[offset, offset + len(rows))`` and the current total.

        The cursor stays on the same session if it is in the new window (it follows the session
        when rows above it were inserted or removed); otherwise it keeps its index. The scroll
        position is kept (only clamped if the table shrank), unless the cursor was in view and
        following its session took it out: then the table scrolls to keep it in view.
        """
        in_view = self._cursor_in_view()
        changed = self._window.load(offset, rows, total)
        if changed:
            self._clear_caches()
        self.virtual_size = Size(0, self.total + 1)
        if self.scroll_offset.y > self.max_scroll_y:
            self.scroll_to(y=self.max_scroll_y, animate=False)
        if in_view and not self._cursor_in_view():
            self._scroll_to_cursor()
        self._window.settle(self.window_offset, self._visible_span())
        self._post_highlight()
        if changed:
            self.refresh()
        self._ensure_window()

    # ------------------------------------------------------------------ cursor

    def move_cursor(self, index: int, *, scroll: bool = True) -> None:
        """Put the cursor on absolute row ``index`` (clamped), scrolling it into view."""
        old = self._window.move_cursor(index)
        if self.cursor_index != old:
            self._refresh_row(old)
            self._refresh_row(self.cursor_index)
        if scroll:
            self._scroll_to_cursor()
        self._post_highlight()
        self._ensure_window()

    def _cursor_in_view(self) -> bool:
        top = int(self.scroll_offset.y)
        return top <= self.cursor_index < top + max(1, self.visible_rows)

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.visible_rows)
        top = int(self.scroll_offset.y)
        cursor = self.cursor_index
        if cursor < top:
            self.scroll_to(y=cursor, animate=False)
        elif cursor >= top + visible:
            self.scroll_to(y=cursor - visible + 1, animate=False)

    def _post_highlight(self) -> None:
        """Post ``SessionHighlighted`` when the known session under the cursor changed."""
        sid = self.selected_id
        if sid is None and (not self.loaded or self.total > 0):
            return  # unknown yet: keep the previous highlight until the rows arrive
        if self._posted_any and sid == self._posted_id:
            return
        self._posted_any = True
        self._posted_id = sid
        self.post_message(messages.SessionHighlighted(self, sid))

    def action_cursor_up(self) -> None:
        """Move the cursor one row up."""
        self.move_cursor(self.cursor_index - 1)

    def action_cursor_down(self) -> None:
        """Move the cursor one row down."""
        self.move_cursor(self.cursor_index + 1)

    def action_page_up(self) -> None:
        """Move the cursor and the view one page up."""
        page = max(1, self.visible_rows)
        self.scroll_to(y=max(0, int(self.scroll_offset.y) - page), animate=False)
        self.move_cursor(self.cursor_index - page)

    def action_page_down(self) -> None:
        """Move the cursor and the view one page down."""
        page = max(1, self.visible_rows)
        self.scroll_to(y=int(self.scroll_offset.y) + page, animate=False)
        self.move_cursor(self.cursor_index + page)

    def action_first(self) -> None:
        """Go to the first session."""
        self.move_cursor(0)

    def action_last(self) -> None:
        """Go to the last session (its rows are requested, not scanned)."""
        self.move_cursor(self.total - 1)

    def action_select(self) -> None:
        """Tell the owner the user chose the session under the cursor."""
        if self.selected_id is not None:
            self.post_message(messages.SessionSelected(self, self.selected_id))

    async def _on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None or offset.y < 1 or not self.total:
            return
        index = int(self.scroll_offset.y) + offset.y - 1
        if index >= self.total:
            return
        event.stop()
        self.move_cursor(index, scroll=False)
        if event.chain >= 2:
            self.action_select()

    # ------------------------------------------------------------------ windowing

    def _visible_span(self) -> tuple[int, int]:
        top = int(self.scroll_offset.y)
        end = top + max(1, self.visible_rows)
        if self.loaded:
            end = min(end, self.total)
        return top, end

    def _ensure_window(self) -> None:
        """Request a window if what is on screen is not loaded (and not already asked for)."""
        if not self.is_mounted or self.scrollable_content_region.height < 2:
            return
        wanted = self.wanted_window
        if self._window.needs(self._visible_span(), wanted, time.monotonic()):
            self.post_message(messages.WindowRequested(self, *wanted))

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if round(old_value) != round(new_value):
            self._ensure_window()

    def on_mount(self) -> None:
        # Textual also runs ScrollView.on_mount (handlers are dispatched along the MRO).
        self.set_interval(1.0, self._tick)

    def on_resize(self, event: events.Resize) -> None:
        self._clear_caches()
        self._scroll_to_cursor()  # a smaller table keeps its cursor in view
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
        next second, minute or hour), and nothing else: an idle dashboard costs little.
        A visible row whose TIME is not known (a resize cleared what was recorded, and
        Textual may not paint again on its own) is repainted too, so no clock stops."""
        if not self.loaded or not self._columns:
            return
        now = int(self._clock())
        time_column = self._columns[-1]
        x = sum(col.width + 1 for col in self._columns[:-1])
        top = int(self.scroll_offset.y)
        for index in range(*self._visible_span()):
            shown = self._time_shown.get(index)
            row = self.row_at(index)
            if row is None or row.finished_at is not None:
                continue
            if shown is None or session_time(row, now) != shown:
                self.refresh(Region(x, index - top + 1, time_column.width, 1))

    # ------------------------------------------------------------------ rendering

    def _refresh_row(self, index: int) -> None:
        self.refresh_line(index + 1)

    def _layout(self, width: int) -> list[Column]:
        if width != self._columns_width:
            self._columns = layout_columns(width)
            self._columns_width = width
        return self._columns

    def render_line(self, y: int) -> Strip:
        width = self.scrollable_content_region.width or self.size.width
        base = self._base_style
        if base is None:  # walks every ancestor's styles: once, not once per line
            base = self._base_style = self.rich_style
        if not self.loaded:
            return Strip.blank(width, base)
        columns = self._layout(width)
        console = self.app.console
        if y == 0:
            style = base + self.get_component_rich_style("session-table--header")
            return header_line(columns, width, style, console)
        if self.total == 0:
            height = max(0, self.scrollable_content_region.height - 1)
            style = base + self.get_component_rich_style("session-table--empty")
            return empty_line(self._empty_text, y - 1, height, width, base, style, console)
        index = int(self.scroll_offset.y) + y - 1
        if index >= self.total:
            return Strip.blank(width, base)
        row = self.row_at(index)
        is_cursor = index == self.cursor_index
        key = (index, row, is_cursor, width, self.has_focus)
        if row is None:
            cached = self._line_cache.get(key)
            if cached is None:
                style = base + self.get_component_rich_style("session-table--placeholder")
                cached = placeholder_line(columns, width, self._cursor(style, is_cursor), console)
                self._line_cache[key] = cached
            return cached
        # A running session's TIME moves on while the rest of its row stays: the row is
        # rendered once without it, and the TIME cell is added when its text changes.
        shown = session_time(row, int(self._clock()))
        self._time_shown[index] = shown
        rendered = self._row_cache.get(key)
        if rendered is None:
            style = self._cursor(base, is_cursor)
            rendered = self._row_cache[key] = RenderedRow.of(row, columns, style, console)
        return rendered.line(shown, columns[-1], width)

    def _cursor(self, style: Style, is_cursor: bool) -> Style:
        """``style``, with the cursor's on top for the cursor's row."""
        if not is_cursor:
            return style
        return style + self.get_component_rich_style("session-table--cursor")


__all__ = ["SessionTable", "layout_columns", "session_elapsed", "session_time"]
