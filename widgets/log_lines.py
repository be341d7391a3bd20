"""What a log pane holds: at most ``max_lines`` records, oldest first, each id once, with the
width each takes on screen; and, while wrapping, the screen line each record starts on.

Plain Python, no Textual: :class:`widgets.log_pane.LogPane` renders the records and scrolls
over them. Wrapping cuts a record's one-line rendering into pieces of the pane's width,
so it needs only each record's width: a resize or a wrap toggle is one pass of integer
arithmetic over the records, never a re-render.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable
from typing import NamedTuple

from rich.cells import cell_len

from widgets.data import LogLine
from widgets.formatting import clean, cut_end, cut_middle
from widgets.stage_groups import matrix_values

MAX_LINE_CHARS = 10_000
"""Characters of one record's text that are rendered; the rest is summarised by a marker."""

LEVEL_WIDTH = 7  # len("WARNING")
#: Most cells of a stage's name in a line's ``[stage]`` tag (a matrix instance's name can
#: be longer than a narrow screen).
STAGE_TAG_CHARS = 32


def line_body(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """The text of a record as displayed: truncated first (cheap on a 1 MB line), then cleaned."""
    if len(text) > limit:
        text = f"{text[:limit]}… ({len(text) - limit} more chars)"
    return clean(text)


def line_prefix(line: LogLine) -> tuple[str, str, str]:
    """The time (local), the padded level and the ``[stage] `` a record is shown with: a
    matrix instance's long name is cut to :data:`STAGE_TAG_CHARS` (:func:`stage_tag`), so
    the line's own text still shows on an 80-column screen."""
    stamp = time.strftime("%H:%M:%S", time.localtime(line.at))
    level = clean(line.level.upper()).ljust(LEVEL_WIDTH)
    stage = f"[{stage_tag(clean(line.stage))}] " if line.stage else ""
    return stamp, level, stage


def stage_tag(stage: str, cells: int = STAGE_TAG_CHARS) -> str:
    """``stage`` in at most ``cells`` cells. A matrix instance too long for them loses its
    keys first, then letters of its stage's name, and keeps its values whole where they
    fit (``build-artifa…[linux,amd64,3.11]``): the values are what tell the lines of one
    stage's instances apart. Otherwise cut in its middle."""
    if cell_len(stage) <= cells:
        return stage
    name, bracket, rest = stage.partition("[")
    bare = matrix_values(rest[:-1]) if bracket and rest.endswith("]") else None
    if bare is None:
        return cut_middle(stage, cells)
    values = "[" + ",".join(bare) + "]"
    room = cells - cell_len(values)
    if cell_len(name) <= room:
        return name + values
    if room >= 4:  # three cells of the name and its ellipsis at least
        return cut_end(name, room) + values
    return cut_middle(name + values, cells)


def line_width(line: LogLine) -> int:
    """Cells the formatted record takes, without building styled text."""
    stamp, level, stage = line_prefix(line)
    return len(stamp) + 1 + cell_len(level) + 1 + cell_len(stage) + cell_len(line_body(line.text))


class Appended(NamedTuple):
    """What :meth:`LogLines.append` did."""

    added: int
    """Records added (ids not held before)."""
    dropped: list[LogLine]
    """The oldest records dropped to stay under ``max_lines``."""
    dropped_visual: int
    """The screen lines those took."""


class LogLines:
    """The records of one pane and their geometry on screen."""

    def __init__(self, max_lines: int, *, wrap_width: int = 0) -> None:
        self.max_lines = max(1, int(max_lines))
        self.records: list[LogLine] = []
        self.widths: list[int] = []
        """Cells each record takes unwrapped, in the order of ``records``."""
        self.max_width = 0
        self.max_id: int | None = None
        self.wrap_width = wrap_width
        """The width records are wrapped at; 0 while not wrapping."""
        self._ids: set[int] = set()
        self._starts: list[int] = []  # while wrapping: the first screen line of each record
        self._visual = 0  # while wrapping: the screen lines of all records

    def __len__(self) -> int:
        return len(self.records)

    @property
    def visual_count(self) -> int:
        """Screen lines the records take (more than their number when wrapping)."""
        return self._visual if self.wrap_width else len(self.records)

    def append(self, lines: Iterable[LogLine]) -> Appended:
        """Add newer records at the end (ids already held are ignored), dropping the oldest
        beyond ``max_lines``."""
        new = [line for line in lines if line.id not in self._ids]
        if not new:
            return Appended(0, [], 0)
        for line in new:
            self._ids.add(line.id)
            if self.max_id is None or line.id > self.max_id:
                self.max_id = line.id
            width = line_width(line)
            self.widths.append(width)
            self.max_width = max(self.max_width, width)
        self.records.extend(new)
        dropped, dropped_visual = self._drop_oldest()
        if dropped or not self.wrap_width:
            self._rebuild_offsets()
        else:
            self._extend_offsets(len(self.records) - len(new))
        return Appended(len(new), dropped, dropped_visual)

    def prepend(self, lines: Iterable[LogLine]) -> int:
        """Insert older records (oldest first) before those held, as many as fit under
        ``max_lines`` (the newest of them). Returns the screen lines they take (0: none
        was kept)."""
        new = [line for line in lines if line.id not in self._ids]
        room = self.max_lines - len(self.records)
        new = new[-room:] if room > 0 else []
        if not new:
            return 0
        old_visual = self.visual_count
        widths = [line_width(line) for line in new]
        self._ids.update(line.id for line in new)
        top = max(line.id for line in new)
        self.max_id = top if self.max_id is None else max(self.max_id, top)
        self.records[:0] = new
        self.widths[:0] = widths
        self.max_width = max(self.max_width, *widths)
        self._rebuild_offsets()
        return self.visual_count - old_visual

    def clear(self) -> None:
        self.records.clear()
        self._ids.clear()
        self.widths.clear()
        self._starts.clear()
        self._visual = 0
        self.max_width = 0
        self.max_id = None

    def rewrap(self, width: int) -> None:
        """Wrap the records at ``width`` cells (0: stop wrapping)."""
        self.wrap_width = width
        self._rebuild_offsets()

    def locate(self, y: int) -> tuple[int, int]:
        """(record index, wrapped piece) at screen line ``y``."""
        if not self.wrap_width or not self._starts:
            return y, 0
        index = bisect_right(self._starts, y) - 1
        return index, y - self._starts[index]

    def visual_start(self, index: int) -> int:
        """The screen line record ``index`` starts on."""
        if not self.wrap_width:
            return index
        return self._starts[index] if index < len(self._starts) else self._visual

    def rows_of(self, width: int) -> int:
        """Screen lines a record ``width`` cells wide takes while wrapping."""
        return max(1, -(-width // (self.wrap_width or 1)))

    def _drop_oldest(self) -> tuple[list[LogLine], int]:
        excess = len(self.records) - self.max_lines
        if excess <= 0:
            return [], 0
        if self.wrap_width and self._starts:
            dropped_visual = self._starts[excess] if excess < len(self._starts) else self._visual
        else:
            dropped_visual = excess
        dropped = self.records[:excess]
        for line in dropped:
            self._ids.discard(line.id)
        del self.records[:excess]
        del self.widths[:excess]
        return dropped, dropped_visual

    def _rebuild_offsets(self) -> None:
        self._starts = []
        self._visual = 0 if self.wrap_width else len(self.records)
        if self.wrap_width:
            self._extend_offsets(0)

    def _extend_offsets(self, first: int) -> None:
        starts = self._starts
        visual = self._visual
        rows_of = self.rows_of
        for width in self.widths[first:]:
            starts.append(visual)
            visual += rows_of(width)
        self._visual = visual


__all__ = [
    "LEVEL_WIDTH",
    "MAX_LINE_CHARS",
    "Appended",
    "LogLines",
    "line_body",
    "line_prefix",
    "line_width",
]
