"""Every message the dashboard widgets post, in one module: small dataclasses.

The widgets never call the app or the store: they post these messages and the app answers by
calling the widget's setters (``SessionTable.set_window``, ``LogPane.prepend_older`` …). Keeping
them together gives the app layer one page to read for the whole contract.

Each message carries the widget that posted it (``control``), so ``@on(Message, "#id")``
selectors work and one app can host several instances. Messages whose bursts only matter for
their latest value (window requests while scrolling, highlights while holding a key) implement
``can_replace`` so Textual drops the superseded ones from the queue.

Handler names (Textual derives them from the namespace):

- ``on_session_table_window_requested``, ``on_session_table_session_highlighted``,
  ``on_session_table_session_selected``
- ``on_log_pane_older_logs_requested``, ``on_log_pane_follow_changed``

The same classes are also reachable as attributes of the widgets
(``SessionTable.WindowRequested`` …), the usual Textual spelling.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from textual.message import Message
from textual.widget import Widget


@dataclass
class WindowRequested(Message, namespace="session_table"):
    """The table needs rows ``[offset, offset + limit)`` for what it shows now.

    Answer with ``SessionTable.set_window(offset, rows, total)``. Only the latest request
    matters: while scrolling fast, older pending requests are dropped (``can_replace``). ``limit``
    is about twice the visible rows, never the whole table.
    """

    table: Widget = field(repr=False)
    offset: int
    limit: int

    @property
    def control(self) -> Widget:
        """The table that asked."""
        return self.table

    def can_replace(self, message: Message) -> bool:
        """A later request from the same table supersedes this one."""
        return isinstance(message, WindowRequested) and message.table is self.table


@dataclass
class SessionHighlighted(Message, namespace="session_table"):
    """The cursor now rests on another session (``None``: the table is empty).

    Posted only once the session under the cursor is known: while the rows of a freshly
    requested window are loading, the previous highlight stands, so the details panes do not
    blank out and flicker during a page-down.
    """

    table: Widget = field(repr=False)
    session_id: str | None

    @property
    def control(self) -> Widget:
        """The table whose cursor moved."""
        return self.table

    def can_replace(self, message: Message) -> bool:
        """Holding a cursor key only needs the final session loaded."""
        return isinstance(message, SessionHighlighted) and message.table is self.table


@dataclass
class SessionSelected(Message, namespace="session_table"):
    """The user chose the session under the cursor (``enter`` or a double click)."""

    table: Widget = field(repr=False)
    session_id: str

    @property
    def control(self) -> Widget:
        """The table the choice was made in."""
        return self.table


@dataclass
class OlderLogsRequested(Message, namespace="log_pane"):
    """The user reached the top of the log and older records may exist.

    Answer with ``LogPane.prepend_older(lines, more=...)`` with records whose id is below
    ``before_id`` (oldest first). Not posted again until answered.
    """

    pane: Widget = field(repr=False)
    before_id: int

    @property
    def control(self) -> Widget:
        """The log pane that asked."""
        return self.pane

    def can_replace(self, message: Message) -> bool:
        """Only the latest boundary matters."""
        return isinstance(message, OlderLogsRequested) and message.pane is self.pane


@dataclass
class FollowChanged(Message, namespace="log_pane"):
    """Follow mode switched, by the user scrolling away / back or by the app.

    ``follow`` False means the user scrolled away from the bottom (new lines no longer move
    the view); the app can show it in the footer.
    """

    pane: Widget = field(repr=False)
    follow: bool

    @property
    def control(self) -> Widget:
        """The log pane whose mode changed."""
        return self.pane


__all__ = [
    "FollowChanged",
    "OlderLogsRequested",
    "SessionHighlighted",
    "SessionSelected",
    "WindowRequested",
]
