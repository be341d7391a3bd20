"""What the dashboard's store workers tell the screen: small dataclass messages, posted from
worker threads (Textual queues them on the event loop) and handled by the dashboard screen.

A worker never touches a widget or the screen's state: it reads what its request says,
posts one of these, and ends. Messages whose bursts only matter for their latest value
say so with ``can_replace``: Textual then drops a superseded one still waiting in the queue.
A worker's failure is no message: it ends the worker in the ERROR state, which the screen's
one worker-error handler turns into the store's error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from textual.message import Message
from textual.notifications import SeverityLevel

from app.tui.data import Refresh, RefreshRequest
from widgets.data import LogLine

if TYPE_CHECKING:
    from store.definitions import WorkflowDefinition


@dataclass
class StoreChanged(Message):
    """Something was committed to the store since the last check (the first check always
    says so): what is shown must be read again."""

    def can_replace(self, message: Message) -> bool:
        """Two changes in a row need one re-read."""
        return isinstance(message, StoreChanged)


@dataclass
class Refreshed(Message):
    """The answer to one refresh: everything it read, and the request it answers (from
    which the screen sees whether the user has left that filter or session meanwhile)."""

    request: RefreshRequest
    result: Refresh

    def can_replace(self, message: Message) -> bool:
        """A later answer reads everything an earlier unhandled one read, and more: the log
        lines after the same last line, the window and the counts as they are now."""
        return isinstance(message, Refreshed)


@dataclass
class OlderLogsLoaded(Message):
    """Log lines older than the oldest one shown (oldest first), for the session shown
    in log generation ``generation`` (dropped if the log pane has been cleared since)."""

    generation: int
    lines: list[LogLine]


@dataclass
class DetailsLoaded(Message):
    """The details of one session as text (None: it is gone)."""

    session_id: str
    text: str | None


@dataclass
class OperationDone(Message):
    """How an operation ended, as one notification: its note, its refusal (the manager's
    own message) or its failure."""

    title: str
    text: str
    severity: SeverityLevel
    #: Seconds on screen; None: the usual for its severity.
    timeout: float | None = None
    #: A session to put the table's cursor on (a new session the operation made).
    select: str | None = None


@dataclass
class WorkflowsFound(Message):
    """The workflows the new-session form offers, and why any file of the workflows
    directory cannot be used (or the directory itself cannot be read)."""

    workflows: list[WorkflowDefinition]
    errors: list[Exception]


__all__ = [
    "DetailsLoaded",
    "OlderLogsLoaded",
    "OperationDone",
    "Refreshed",
    "StoreChanged",
    "WorkflowsFound",
]
