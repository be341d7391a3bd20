"""The selected session's stages, one row each with a progress bar.

A session has a handful of stages (its workflow's definition), so unlike the sessions table this
is an ordinary container of small widgets: one ``StageRowView`` per stage with a Textual
``ProgressBar``. The app calls ``set_stages`` on every refresh (several times a second while a
session runs); when the stage names are unchanged the rows are updated in place, field by field,
so nothing is remounted and nothing flickers. Only another session (other names) rebuilds.

A matrix stage's instances (up to 256) are one row, the group (``▸ resize 4/6``: COMPLETED /
instances, one status, the mean progress; :mod:`widgets.stage_groups`), closed at first. A
closed group mounts nothing for its instances; an open one mounts one ``InstanceLines`` under
its row, which draws every instance in the header's columns. The list has a cursor while it
has the focus: up / down / home / end move it, enter or space opens or closes the group under
it (enter on a stage of its own is left to the screen: the session's details).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual import events
from textual.actions import SkipAction
from textual.app import ComposeResult, RenderResult
from textual.binding import Binding, BindingType
from textual.color import Color
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Region
from textual.message import Message
from textual.widgets import ProgressBar, Static

from widgets.data import StageRow
from widgets.formatting import clamp_progress, clean
from widgets.instance_lines import Column, Columns, InstanceLines
from widgets.stage_groups import CLOSED_MARK, OPEN_MARK, Block, blocks, group_row
from widgets.styles import status_style
from widgets.timing import stage_duration, stage_time, ticking


def _cell(text: str, classes: str) -> Static:
    return Static(Text(text), markup=False, classes=classes)


class _HeaderCell(Static):
    """A column's title. An open group's instance lines draw their cells where these are,
    read as they draw; a cell that moves (the terminal narrowed, a column hidden or shown
    again) tells the list, which has them drawn again: a resize can reach them before the
    header's own layout, and they would keep the columns they read then."""

    class Moved(Message):
        """A header cell changed size: the columns moved."""

    def __init__(self, text: str, classes: str) -> None:
        super().__init__(Text(text), markup=False, classes=classes)

    def on_resize(self) -> None:
        self.post_message(self.Moved())


class _NameCell(Static):
    """A stage's name, cut with "…" when the column is narrow; a group's row
    (``▸ resize 4/6``) keeps its count and loses letters of its name instead."""

    def __init__(self) -> None:
        super().__init__("", markup=False, classes="stage-name")
        self._label = ""
        self._count = ""

    def show(self, label: str, count: str) -> None:
        self._label, self._count = label, count
        self.update(Text(label))

    def render(self) -> RenderResult:
        width = self.content_region.width
        text = Text(self._label, no_wrap=True)
        if not self._count or width <= 0 or text.cell_len <= width:
            return text
        head = Text(self._label[: -len(self._count)].rstrip(), no_wrap=True)
        head.truncate(max(1, width - len(self._count) - 1), overflow="ellipsis")
        return head + Text(" " + self._count)


class StageRowView(Vertical):
    """One stage: name, status, progress bar, attempt, duration, and its error if any."""

    def __init__(self, stage: StageRow, clock: Callable[[], float]) -> None:
        super().__init__(classes="stage-row")
        self._stage = stage
        self._clock = clock
        self._shown: StageRow | None = None
        self._time_shown: str | None = None
        self._name_cell = _NameCell()
        self._status = _cell("", "stage-status")
        self._bar = ProgressBar(total=100, show_eta=False, classes="stage-bar")
        self._attempt = _cell("", "stage-attempt")
        self._time = _cell("", "stage-time")
        self._error = _cell("", "stage-error")

    @property
    def stage(self) -> StageRow:
        """The stage shown."""
        return self._stage

    def compose(self) -> ComposeResult:
        with Horizontal(classes="stage-line"):
            yield self._name_cell
            yield self._status
            yield self._bar
            yield self._attempt
            yield self._time
        yield self._error

    def on_mount(self) -> None:
        self._apply()

    def update_stage(self, stage: StageRow) -> None:
        """Show new values for the same stage; unchanged fields are not touched."""
        self._stage = stage
        if self.is_mounted:
            self._apply()

    def tick(self) -> None:
        """Refresh the running duration (repainted only when its text moved on)."""
        if self.is_mounted:
            self._show_time()

    def _show_time(self) -> None:
        text = stage_time(self._stage, self._clock())
        if text != self._time_shown:
            self._time_shown = text
            self._time.update(Text(text), layout=False)

    def _apply(self) -> None:
        new, old = self._stage, self._shown
        if old is None or new.name != old.name:
            name = clean(new.name)
            is_group = name.startswith((OPEN_MARK, CLOSED_MARK))  # "▸ resize 4/6"
            self._name_cell.show(name, name.rpartition(" ")[2] if is_group else "")
        if old is None or (new.status, new.exit_code) != (old.status, old.exit_code):
            label = Text(clean(new.status), style=status_style(new.status), no_wrap=True)
            if new.status == "FAILED" and new.exit_code is not None:
                label.append(f" ({new.exit_code})")
            self._status.update(label, layout=False)
            for cls in list(self.classes):
                if cls.startswith("status-"):
                    self.remove_class(cls)
            self.add_class(f"status-{new.status.lower()}")
        if old is None or new.progress != old.progress:
            self._bar.update(progress=clamp_progress(new.progress))
        if old is None or new.attempt != old.attempt:
            self._attempt.update(Text(str(new.attempt)), layout=False)
        self._show_time()
        if old is None or new.error != old.error:
            if new.error:
                self._error.update(
                    Text(
                        "↳ " + clean(new.error),
                        style=status_style("FAILED"),
                        no_wrap=True,
                        overflow="ellipsis",
                    )
                )
            self._error.display = bool(new.error)
        self._shown = new


def _paint(view: StageRowView, background: Color | None) -> None:
    """Give the row the cursor's background (None: its own again). Inline, not a class:
    a class makes Textual match the row's dozen widgets against the stylesheet again,
    several ms a key. Its cells cache their look with the background they were drawn on,
    so they are told their style changed."""
    view.styles.background = background
    for cell in view.walk_children(with_self=False):
        cell.notify_style_update()
        cell.refresh()


class StageList(VerticalScroll):
    """Stages of the selected session; feed it with ``set_stages``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "cursor_up", "Up", show=False),
        Binding("down", "cursor_down", "Down", show=False),
        Binding("home", "cursor_home", "First", show=False),
        Binding("end", "cursor_end", "Last", show=False),
        Binding("enter,space", "toggle_group", "Open/close", show=False),
    ]

    DEFAULT_CSS = """
    StageList {
        height: 1fr;
        scrollbar-gutter: stable;
        scrollbar-size-vertical: 1;
        & .stage-line { height: 1; }
        & .stage-row { height: auto; }
        & .stage-name { width: 1fr; min-width: 6; text-wrap: nowrap; text-overflow: ellipsis; }
        & .stage-status { width: 14; padding: 0 1; }
        & .stage-bar { width: 22; }
        & .stage-bar Bar { width: 1fr; }
        & .stage-attempt { width: 5; text-align: right; }
        & .stage-time { width: 6; text-align: right; }
        & .stage-error {
            height: 1; padding-left: 2; display: none; text-wrap: nowrap; text-overflow: ellipsis;
        }
        & .stage-header { height: 1; text-style: bold; }
        & .stage-empty { width: 1fr; content-align: center middle; height: 3; }
        & > .stage-list--cursor { background: $block-cursor-background; }
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {"stage-list--cursor"}
    """The cursor's row (its background; the app's .tcss may restyle it)."""

    def __init__(
        self,
        *,
        empty_text: str | Text = "No session selected.",
        clock: Callable[[], float] = time.time,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        """Create an empty list.

        Args:
            empty_text: Shown when there are no stages (rendered literally).
            clock: Source of "now" for running durations (injectable for tests).
        """
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._clock = clock
        self._stages: tuple[StageRow, ...] = ()
        self._blocks: list[Block] = []
        self._views: list[StageRowView] = []  # one per block: a stage, or a group's row
        self._open: dict[int, InstanceLines] = {}  # block index -> its instances, mounted
        #: The cursor: (block index, instance index or None for the block's own row).
        self._at: tuple[int, int | None] = (0, None)
        self._cursor_view: StageRowView | None = None
        self._empty = Static(
            Text(empty_text) if isinstance(empty_text, str) else empty_text,
            markup=False,
            classes="stage-empty",
        )
        self._header_cells = (
            _HeaderCell("STAGE", "stage-name"),
            _HeaderCell("STATUS", "stage-status"),
            _HeaderCell("PROGRESS", "stage-bar"),
            _HeaderCell("TRY", "stage-attempt"),
            _HeaderCell("TIME", "stage-time"),
        )
        self._header = Horizontal(*self._header_cells, classes="stage-line stage-header")
        self._header.display = False

    @property
    def stages(self) -> tuple[StageRow, ...]:
        """The stages shown, in order (every instance of a matrix stage included)."""
        return self._stages

    @property
    def row_views(self) -> tuple[StageRowView, ...]:
        """The row widgets of the top level, in order: one per stage, one per matrix stage
        (its group's row); stable across in-place updates."""
        return tuple(self._views)

    @property
    def instance_lines(self) -> tuple[InstanceLines, ...]:
        """The instances of the open groups, one widget per open group, in order."""
        return tuple(self._open[i] for i in sorted(self._open))

    @property
    def open_groups(self) -> tuple[str, ...]:
        """The matrix stages whose instances are shown, in order."""
        return tuple(str(self._blocks[i].group) for i in sorted(self._open))

    @property
    def cursor_row(self) -> StageRow | None:
        """What the cursor is on: a stage, an instance, or a group's own row (its summing
        up, whose ``group`` names the matrix stage); None without stages."""
        if not self._blocks:
            return None
        block, instance = self._at
        if instance is None:
            return self._views[block].stage
        return self._blocks[block].rows[instance]

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._empty
        for index, view in enumerate(self._views):  # stages given before it was mounted
            yield view
            if index in self._open:
                yield self._open[index]

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def on__header_cell_moved(self, event: _HeaderCell.Moved) -> None:
        event.stop()
        for lines in self._open.values():
            lines.refresh()

    def set_stages(self, stages: Sequence[StageRow]) -> None:
        """Show ``stages``; same names in the same order update the rows in place (and
        keep open groups open); other names (another session) rebuild the list, every
        group closed."""
        stages = tuple(stages)
        new = blocks(stages)
        same = [b.shape for b in new] == [b.shape for b in self._blocks]
        self._stages = stages
        if same and len(self._views) == len(new):
            self._blocks = new
            for index, view in enumerate(self._views):
                row = self._block_row(index)
                if view.stage != row:
                    view.update_stage(row)
                lines = self._open.get(index)
                if lines is not None:
                    lines.set_rows(new[index].rows)
            return
        old_widgets: list[Vertical | InstanceLines] = [*self._views, *self._open.values()]
        self._blocks = new
        self._open = {}
        self._at = (0, None)
        self._cursor_view = None
        self._views = [self._make_view(index) for index in range(len(new))]
        if not self.is_mounted:
            self._empty.display = not stages
            self._header.display = bool(stages)
            return
        with self.app.batch_update():
            for widget in old_widgets:
                widget.remove()
            if self._views:
                self.mount_all(self._views)
            self._empty.display = not stages
            self._header.display = bool(stages)
        self._show_cursor()

    # -- groups ----------------------------------------------------------------------------

    def toggle_group(self, group: str) -> None:
        """Open the matrix stage ``group`` (show its instances), or close it."""
        for index, block in enumerate(self._blocks):
            if block.group == group:
                self._toggle(index)
                return

    def _block_row(self, index: int) -> StageRow:
        block = self._blocks[index]
        if block.group is None:
            return block.rows[0]
        return group_row(block.group, block.rows, index in self._open)

    def _make_view(self, index: int) -> StageRowView:
        view = StageRowView(self._block_row(index), self._clock)
        if self._blocks[index].group is not None:
            view.add_class("stage-group")
        return view

    def _toggle(self, index: int) -> None:
        block, view = self._blocks[index], self._views[index]
        if block.group is None:
            return
        lines = self._open.pop(index, None)
        if lines is not None:
            if self._at[0] == index:
                self._at = (index, None)
            if self.is_mounted:
                lines.remove()
        else:
            lines = InstanceLines(block.rows, self._clock, self._columns)
            self._open[index] = lines
            if self.is_mounted:
                self.mount(lines, after=view)
        view.update_stage(self._block_row(index))
        self._show_cursor()

    def _columns(self) -> Columns:
        """Where the header's cells put each column's content (0 wide: hidden)."""
        found: list[Column] = []
        x = 0
        for cell in self._header_cells:
            if not cell.display:
                found.append(Column(x, 0))
                continue
            outer = cell.outer_size.width
            gutter = cell.styles.gutter
            found.append(Column(x + gutter.left, max(0, outer - gutter.width)))
            x += outer
        return Columns(*found)

    # -- the cursor ------------------------------------------------------------------------

    def _entries(self) -> list[tuple[int, int | None]]:
        """Every row the cursor can be on, in order."""
        entries: list[tuple[int, int | None]] = []
        for index, block in enumerate(self._blocks):
            entries.append((index, None))
            if index in self._open:
                entries.extend((index, i) for i in range(len(block.rows)))
        return entries

    def _move(self, delta: int = 0, *, to: int | None = None) -> None:
        """Move the cursor ``delta`` rows, or to row ``to`` (negative: from the end)."""
        entries = self._entries()
        if not entries:
            return
        if to is None:
            here = entries.index(self._at) if self._at in entries else 0
            target = here + delta
        else:
            target = to if to >= 0 else len(entries) + to
        self._at = entries[max(0, min(target, len(entries) - 1))]
        self._show_cursor()
        self._scroll_to_cursor()

    def action_cursor_up(self) -> None:
        """Move the cursor to the row above."""
        self._move(-1)

    def action_cursor_down(self) -> None:
        """Move the cursor to the row below."""
        self._move(1)

    def action_cursor_home(self) -> None:
        """Move the cursor to the first row."""
        self._move(to=0)

    def action_cursor_end(self) -> None:
        """Move the cursor to the last row."""
        self._move(to=-1)

    def action_toggle_group(self) -> None:
        """Open or close the group the cursor is on (or in); on a stage of its own the key
        is not ours (enter: the screen's details)."""
        if not self._blocks:
            raise SkipAction()
        index, _ = self._at
        if self._blocks[index].group is None:
            raise SkipAction()
        self._toggle(index)

    # Our handlers run before Widget's own, which set ``has_focus``: hence the argument.
    def on_focus(self) -> None:
        self._show_cursor(focused=True)

    def on_blur(self) -> None:
        self._show_cursor(focused=False)

    def _show_cursor(self, *, focused: bool | None = None) -> None:
        """Highlight the cursor's row while the list has the focus, and nothing else."""
        index, instance = self._at
        focused = self.has_focus if focused is None else focused
        shown = focused and index < len(self._views)
        view = self._views[index] if shown and instance is None else None
        if view is not self._cursor_view:
            if self._cursor_view is not None:
                _paint(self._cursor_view, None)
            if view is not None:
                _paint(view, self.get_component_styles("stage-list--cursor").background)
            self._cursor_view = view
        for at, lines in self._open.items():
            lines.cursor = instance if shown and at == index else None

    def _scroll_to_cursor(self, *, laid_out: bool = False) -> None:
        """Scroll the cursor's row into view: at once, or after the next refresh when the
        row has no place yet (just mounted)."""
        index, instance = self._at
        if index >= len(self._views):
            return
        lines = self._open.get(index) if instance is not None else None
        target = self._views[index] if lines is None else lines
        box = target.virtual_region
        if not box.height and not laid_out:
            self.call_after_refresh(self._scroll_to_cursor, laid_out=True)
            return
        if lines is None or instance is None:
            self.scroll_to_widget(target, animate=False, immediate=True)
            return
        y = box.y + lines.line_of(instance)
        self.scroll_to_region(Region(0, y, max(1, box.width), 1), animate=False, immediate=True)

    def on_click(self, event: events.Click) -> None:
        """A click puts the cursor on the row; on a group's row it also opens or closes
        the group."""
        widget = event.widget
        if widget is None:
            return
        chain = [widget, *widget.ancestors]
        for index, view in enumerate(self._views):
            if view in chain:
                self._at = (index, None)
                if self._blocks[index].group is not None:
                    self._toggle(index)
                else:
                    self._show_cursor()
                return
        for index, lines in self._open.items():
            if lines in chain:
                offset = event.get_content_offset(lines)
                row = lines.row_at(offset.y) if offset is not None else None
                if row is not None:
                    self._at = (index, row)
                    self._show_cursor()
                return

    def _tick(self) -> None:
        for view in self._views:
            if ticking(view.stage):
                view.tick()
        for lines in self._open.values():
            lines.tick()


__all__ = ["StageList", "StageRowView", "stage_duration", "stage_time"]
