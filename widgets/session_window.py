"""What a virtual sessions table holds: one window of rows its owner loaded, the total
they are a window of, the cursor, and the window asked for and not answered yet.

Plain Python, no Textual: :class:`widgets.session_table.SessionTable` renders it and turns
its answers into messages. Indexes are absolute, in ``[0, total)``; the window covers
``[offset, offset + len(rows))``.
"""

from __future__ import annotations

from collections.abc import Sequence

from widgets.data import SessionRow

PENDING_TIMEOUT = 1.0
"""Seconds after which an unanswered window request may be made again."""


class SessionWindow:
    """The loaded rows and the cursor of one table."""

    def __init__(self) -> None:
        self.loaded = False
        """Whether the owner has answered at least once."""
        self.total = 0
        self.offset = 0
        self.rows: list[SessionRow] = []
        self.cursor = 0
        """Absolute index of the cursor row (0 when empty)."""
        self.cursor_id: str | None = None
        """The session under the cursor; None while its row is not loaded, or when empty.
        Kept while the user scrolls the cursor row out of the window with the mouse."""
        self._index_of: dict[str, int] = {}
        self._pending: tuple[int, int] | None = None
        self._pending_at = 0.0

    def row_at(self, index: int) -> SessionRow | None:
        """The loaded row at absolute ``index``, or None if it is outside the window."""
        i = index - self.offset
        if 0 <= i < len(self.rows) and index < self.total:
            return self.rows[i]
        return None

    def clamp(self, index: int) -> int:
        return max(0, min(int(index), self.total - 1)) if self.total else 0

    def covers(self, start: int, end: int) -> bool:
        """Is ``[start, end)`` inside the loaded window?"""
        if start >= end:
            return True
        return self.offset <= start and end <= self.offset + len(self.rows)

    def load(self, offset: int, rows: Sequence[SessionRow], total: int) -> bool:
        """Take the owner's answer; True if it differs from what was held (a live refresh
        mostly brings back what is shown, and then nothing needs repainting).

        The cursor stays on the same session if it is in the new window (it follows the
        session when rows above it were inserted or removed); otherwise it keeps its
        index, clamped to the new total."""
        total = max(0, int(total))
        offset = max(0, int(offset))
        new_rows = list(rows)
        changed = not (
            self.loaded and offset == self.offset and total == self.total and new_rows == self.rows
        )
        self.loaded = True
        self.offset = offset
        self.rows = new_rows
        self.total = total
        self._index_of = {row.id: offset + i for i, row in enumerate(new_rows)}

        previous_id = self.cursor_id
        if previous_id is not None and previous_id in self._index_of:
            self.cursor = self._index_of[previous_id]
        else:
            self.cursor = self.clamp(self.cursor)
        row = self.row_at(self.cursor)
        if row is not None:
            self.cursor_id = row.id
        elif self.total == 0:
            self.cursor_id = None
        return changed

    def move_cursor(self, index: int) -> int:
        """Put the cursor on ``index`` (clamped); returns where it was."""
        index = self.clamp(index)
        old = self.cursor
        self.cursor = index
        if index != old or self.cursor_id is None:
            row = self.row_at(index)
            self.cursor_id = row.id if row is not None else None
        return old

    def settle(self, offset: int, visible: tuple[int, int]) -> None:
        """After an answer at ``offset``: the request it answers, or one whose rows it
        brought anyway, is no longer pending."""
        if self._pending is not None and (self._pending[0] == offset or self.covers(*visible)):
            self._pending = None

    def needs(self, visible: tuple[int, int], wanted: tuple[int, int], now: float) -> bool:
        """Should the rows ``wanted`` (offset, limit) be asked for, for the ``visible``
        span? Not if they are loaded, nor if a recent request covers them. If so, that
        request is now pending (``now`` is a monotonic time)."""
        start, end = visible
        if self.loaded and self.covers(start, end):
            return False
        if self._pending is not None:
            p_offset, p_limit = self._pending
            fresh = now - self._pending_at < PENDING_TIMEOUT
            if fresh and p_offset <= start and end <= p_offset + p_limit:
                return False
        self._pending = wanted
        self._pending_at = now
        return True


__all__ = ["PENDING_TIMEOUT", "SessionWindow"]
