"""A streaming log view for one session.

Why a custom Line-API widget rather than Textual's ``Log``/``RichLog``: ``Log`` has no per-line
styles and no wrapping, ``RichLog`` re-renders everything on resize and has no way to insert
older history above what is shown. ``LogPane`` keeps plain ``LogLine`` records (at most
``max_lines``, dropping the oldest: :class:`widgets.log_lines.LogLines`), renders only the lines
on screen, and wraps by cutting each record's rendered strip into screen-wide pieces, so a
resize or a wrap toggle costs one pass of integer arithmetic over the records, not a re-render.

Each record shows as ``HH:MM:SS LEVEL [stage] text`` (local time), coloured by level. Text is
rendered literally, never as markup; a record longer than ``MAX_LINE_CHARS`` is cut with a
``… (N more chars)`` marker, so a 1 MB line costs no more than a 10 kB one.

Follow mode: while ``follow`` is on, new lines scroll the view to the bottom. Scrolling up turns
it off, scrolling back to the bottom (or ``end``) turns it on again, and the app can toggle it
(key ``f``). ``FollowChanged`` is posted on every change.

Older history: when the user reaches the top and ``more_older`` is True, the pane posts
``OlderLogsRequested(before_id)`` once; the app answers ``prepend_older(lines, more=...)``. The
view stays on the lines the user was reading. History paging stops when ``max_lines`` records are
held: memory stays bounded, and ``vc flow session logs`` shows everything.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager

from rich.style import Style
from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.geometry import Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

from widgets import messages
from widgets.data import LogLine
from widgets.formatting import render_segments
from widgets.log_lines import MAX_LINE_CHARS, LogLines, line_body, line_prefix, line_width
from widgets.styles import level_style

_TIME_STYLE = Style(dim=True)
_STAGE_STYLE = Style(bold=True)


def format_line(line: LogLine) -> Text:
    """Render one record as literal ``Text``: ``HH:MM:SS LEVEL [stage] text``."""
    stamp, level, stage = line_prefix(line)
    style = level_style(line.level)
    text = Text(no_wrap=True, end="")
    text.append(stamp, _TIME_STYLE)
    text.append(" ")
    text.append(level, style)
    text.append(" ")
    if stage:
        text.append(stage, _STAGE_STYLE)
    text.append(line_body(line.text), style)
    return text


class LogPane(ScrollView, can_focus=True):
    """Streaming, bounded, wrap-able log view; see the module docstring."""

    OlderLogsRequested = messages.OlderLogsRequested
    FollowChanged = messages.FollowChanged

    # overflow-y: scroll keeps the content width constant, so wrapping never oscillates as a
    # scrollbar appears and disappears.
    DEFAULT_CSS = """
    LogPane {
        height: 1fr;
        overflow-y: scroll;
        overflow-x: auto;
    }
    """

    follow: reactive[bool] = reactive(True, init=False)
    """Scroll to new lines as they arrive (off while the user reads older lines)."""

    wrap: reactive[bool] = reactive(False, init=False)
    """Wrap long records at the pane's width instead of scrolling horizontally."""

    def __init__(
        self,
        *,
        max_lines: int = 5_000,
        follow: bool = True,
        wrap: bool = False,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        """Create an empty pane holding at most ``max_lines`` records."""
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._lines = LogLines(max_lines, wrap_width=1 if wrap else 0)
        self.more_older = False
        """Set by the owner: whether records older than the first one held may exist."""
        self._older_pending = False
        self._adjusting = False
        self._strips: LRUCache[int, Strip] = LRUCache(1024)
        self.set_reactive(LogPane.follow, follow)
        self.set_reactive(LogPane.wrap, wrap)

    # ------------------------------------------------------------------ public state

    @property
    def max_lines(self) -> int:
        """The most records held: older ones are dropped."""
        return self._lines.max_lines

    @property
    def lines(self) -> tuple[LogLine, ...]:
        """The records held, oldest first (read only)."""
        return tuple(self._lines.records)

    @property
    def line_count(self) -> int:
        """Number of records held (at most ``max_lines``)."""
        return len(self._lines)

    @property
    def first_id(self) -> int | None:
        """Id of the oldest record held (for ``before`` queries)."""
        return self._lines.records[0].id if self._lines.records else None

    @property
    def last_id(self) -> int | None:
        """Highest record id held (for ``after`` queries while tailing)."""
        return self._lines.max_id

    @property
    def visual_line_count(self) -> int:
        """Screen lines the records take (more than ``line_count`` when wrapping)."""
        return self._lines.visual_count

    # ------------------------------------------------------------------ owner API

    def append(self, lines: Iterable[LogLine]) -> None:
        """Add newer records at the bottom (ids already held are ignored).

        Beyond ``max_lines`` the oldest records are dropped; if the user is reading, the view
        stays on the same lines.
        """
        appended = self._lines.append(lines)
        if not appended.added:
            return
        for line in appended.dropped:
            self._strips.discard(line.id)
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_end()
        elif appended.dropped_visual:
            self._scroll_y_to(self.scroll_offset.y - appended.dropped_visual)
        self.refresh()

    def prepend_older(self, lines: Iterable[LogLine], more: bool | None = None) -> None:
        """Insert older records (oldest first) above those held: the answer to
        ``OlderLogsRequested``. ``more`` updates ``more_older``.

        Only as many as fit under ``max_lines`` are kept (the newest of them). The view stays on
        the lines the user was reading, and follow mode is switched off if that is not the
        bottom.
        """
        self._older_pending = False
        if more is not None:
            self.more_older = more
        added = self._lines.prepend(lines)
        if not added:
            return
        self._update_virtual_size()
        self._scroll_y_to(self.scroll_offset.y + added)
        if self.follow and not self._at_end():
            self.follow = False
        self.refresh()

    def clear(self) -> None:
        """Forget every record (e.g. another session was selected); follow mode resumes."""
        self._lines.clear()
        self._strips.clear()
        self.more_older = False
        self._older_pending = False
        self._update_virtual_size()
        self._scroll_y_to(0, x=0)
        self.follow = True
        self.refresh()

    def action_toggle_follow(self) -> None:
        """Toggle follow mode (the app binds ``f``)."""
        self.follow = not self.follow

    def action_toggle_wrap(self) -> None:
        """Toggle wrapping (the app binds ``w``)."""
        self.wrap = not self.wrap

    # ------------------------------------------------------------------ bookkeeping

    @contextmanager
    def _adjust(self) -> Iterator[None]:
        """Scroll changes made by the pane itself are not the user's: no follow decisions."""
        previous = self._adjusting
        self._adjusting = True
        try:
            yield
        finally:
            self._adjusting = previous

    def _content_width(self) -> int:
        return max(1, self.scrollable_content_region.width or self.size.width or 1)

    def _update_virtual_size(self) -> None:
        lines = self._lines
        if lines.wrap_width:
            self.virtual_size = Size(lines.wrap_width, lines.visual_count)
        else:
            self.virtual_size = Size(lines.max_width, len(lines))

    def _at_end(self) -> bool:
        return self.scroll_offset.y >= self.max_scroll_y

    def _scroll_to_end(self) -> None:
        if self.is_mounted:
            self.scroll_end(animate=False, immediate=True, x_axis=False)
            # Lines wider than the pane bring a horizontal scrollbar at the next layout,
            # which takes a row: the end moves one line down after this scroll.
            self.call_after_refresh(self._still_at_end)

    def _still_at_end(self) -> None:
        if self.follow and not self._at_end():
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    def _scroll_y_to(self, y: float, x: float | None = None) -> None:
        """Move the view for the pane's own reasons (not a user scroll: follow is unchanged)."""
        if self.is_mounted:
            with self._adjust():
                self.scroll_to(x=x, y=max(0, y), animate=False)

    def _relayout(self) -> None:
        """Wrap (or not) as ``wrap`` and the width say, keeping the first visible record at
        the top (or the bottom when following)."""
        lines = self._lines
        top_index, piece = (0, 0)
        if len(lines):
            top = min(int(self.scroll_offset.y), max(0, lines.visual_count - 1))
            top_index, piece = lines.locate(top)
            top_index = min(top_index, len(lines) - 1)
        lines.rewrap(self._content_width() if self.wrap else 0)
        self._update_virtual_size()
        if self.follow:
            self._scroll_to_end()
        elif len(lines):
            target = lines.visual_start(top_index)
            if self.wrap:
                target += min(piece, lines.rows_of(lines.widths[top_index]) - 1)
            self._scroll_y_to(target)
        self.refresh()

    # ------------------------------------------------------------------ watchers & events

    def watch_follow(self, follow: bool) -> None:
        # When the user scrolled to the bottom this runs inside the scroll animation's last
        # step, where starting another scroll would corrupt the animator: scroll only when
        # the app switched follow on away from the bottom.
        if follow and not self._at_end():
            self._scroll_to_end()
        self.post_message(messages.FollowChanged(self, follow))

    def watch_wrap(self) -> None:
        self._relayout()

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._adjusting or not self.is_mounted:
            return
        at_end = new_value >= self.max_scroll_y
        if new_value > old_value and at_end and not self.follow:
            self.follow = True
        elif new_value < old_value and not at_end and self.follow:
            self.follow = False
        if new_value < old_value and new_value <= 0:
            self._maybe_request_older()

    def on_resize(self, event: events.Resize) -> None:
        if self.wrap and self._content_width() != self._lines.wrap_width:
            self._relayout()
        elif self.follow:
            self._scroll_to_end()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._maybe_request_older()

    def action_scroll_up(self) -> None:
        super().action_scroll_up()
        self._maybe_request_older()

    def action_page_up(self) -> None:
        super().action_page_up()
        self._maybe_request_older()

    def action_scroll_home(self) -> None:
        """Jump to the oldest line held (and ask for older ones)."""
        self.scroll_to(y=0, animate=False)
        self._maybe_request_older()

    def action_scroll_end(self) -> None:
        """Jump to the newest line and follow: an animated scroll could end short of a
        bottom that moved while it ran."""
        if self.follow:
            self._scroll_to_end()
        else:
            self.follow = True

    def _maybe_request_older(self) -> None:
        """Ask for older records once, when at the top and there is room for them."""
        first = self.first_id
        if (
            not self.more_older
            or self._older_pending
            or first is None
            or len(self._lines) >= self.max_lines
            or self.scroll_offset.y > 0
        ):
            return
        self._older_pending = True
        self.post_message(messages.OlderLogsRequested(self, first))

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._strips.clear()

    # ------------------------------------------------------------------ rendering

    def _record_strip(self, index: int) -> Strip:
        """The whole record as one strip (cached by id unless part of it is selected)."""
        line = self._lines.records[index]
        selection = self.text_selection
        span = selection.get_span(index) if selection is not None else None
        if span is None:
            strip = self._strips.get(line.id)
            if strip is not None:
                return strip
        text = Text(style=self.rich_style, no_wrap=True, end="")
        text.append_text(format_line(line))
        if span is not None:
            start, end = span
            selected = self.screen.get_component_rich_style("screen--selection")
            text.stylize(selected, start, len(text) if end == -1 else end)
        strip = Strip(render_segments(text, self.app.console), self._lines.widths[index])
        if span is None:
            self._strips[line.id] = strip
        return strip

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        style = self.rich_style
        visual = scroll_y + y
        if visual >= self.visual_line_count or not len(self._lines):
            return Strip.blank(width, style)
        index, piece = self._lines.locate(visual)
        strip = self._record_strip(index)
        # Offsets tell text selection which record and column is under the mouse.
        if self.wrap:
            wrap_width = self._lines.wrap_width or width
            start = piece * wrap_width
            strip = strip.crop(start, start + wrap_width).apply_offsets(start, index)
            return strip.extend_cell_length(width, style)
        strip = strip.crop(scroll_x, scroll_x + width).apply_offsets(scroll_x, index)
        return strip.extend_cell_length(width, style)

    # ------------------------------------------------------------------ text selection

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """Selected text, one record per line, as displayed (so it can be copied)."""
        text = "\n".join(format_line(line).plain for line in self._lines.records)
        return selection.extract(text), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()


__all__ = ["MAX_LINE_CHARS", "LogPane", "format_line", "line_body", "line_width"]
