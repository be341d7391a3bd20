"""Everything a user can do in the dashboard, in one table: its key bindings, its help
screen and its command palette are all derived from :data:`KEYS`, so the three can never
disagree (a key missing from the help, a palette entry whose key changed).

A row that runs an operation names the function of :mod:`app.tui.operations` it calls (one
manager call, in a worker); the other rows name an action of the dashboard screen (a view
change, a form, a read). The rows are in the order the help lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from textual.binding import Binding

from app.tui import operations

#: An operation: ``run(ctx, *args)`` in a worker thread returns a note for the user, or
#: raises the manager's error, whose message is the refusal shown.
Operation = Callable[..., str | operations.Done]

STATUS_KEYS = {"1": "PENDING", "2": "ACTIVE", "3": "PAUSED", "4": "COMPLETED", "5": "FAILED"}


@dataclass(frozen=True)
class Key:
    """One row of the table."""

    key: str
    """The key as the help shows it (``/``, ``?``, ``1-5``)."""
    description: str
    """What it does: the help's line, and the palette entry's help after the key."""
    title: str | None = None
    """The command palette's entry; None: not in the palette."""
    action: str | None = None
    """The Textual action the key runs (on the dashboard screen, or on the app when
    ``on_app``); None: a line of help about keys bound elsewhere (Textual's own, or the
    rows after it)."""
    footer: str | None = None
    """The footer's label; None: bound, but not in the footer."""
    binding: str | None = None
    """Textual's name of the key, where it differs from ``key`` (``slash``)."""
    in_help: bool = True
    """False for a row that a help-only row before it already describes (``1-5``)."""
    operation: str | None = None
    """The name of the operation the key runs on the session under the cursor (its
    notifications are titled with it: ``pause refused``)."""
    run: Operation | None = None
    """That operation's function."""
    confirm: str | None = None
    """The question asked before ``run`` (``{name}`` and ``{id}`` filled in): the
    operation destroys something."""
    on_app: bool = False
    """Bound on the app rather than the dashboard screen: it works over the dialogs too."""
    priority: bool = False
    """Run as the key is read, before the keys read after it go anywhere (Textual's
    priority binding): for a key that moves the focus, so that what is typed next reaches
    the new place."""


def _operation(
    key: str,
    name: str,
    run: Operation,
    *,
    description: str,
    title: str,
    footer: str | None,
    confirm: str | None = None,
) -> Key:
    """A row whose key runs ``run`` on the session under the cursor."""
    return Key(
        key,
        description,
        title=title,
        action=f"operate('{name}')",
        footer=footer,
        operation=name,
        run=run,
        confirm=confirm,
    )


#: The footer holds what fits an 80-column terminal with "? Help" and "q Quit" (every key
#: is in the help and the palette): pause, resume, abort, new and filter. The others are
#: said where they apply: the summary of a PENDING session says "s starts it", of a FAILED
#: one "t retries it", of one at a gate "r resumes it"; the header says "follow on (f)".
KEYS: tuple[Key, ...] = (
    _operation(
        "p",
        "pause",
        operations.pause,
        description="pause the selected session (SIGSTOP)",
        title="Pause session",
        footer="Pause",
    ),
    _operation(
        "r",
        "resume",
        operations.resume,
        description="resume it (starts a runner if it has none)",
        title="Resume session",
        footer="Resume",
    ),
    _operation(
        "g",
        "approve",
        operations.approve,
        description="pass its waiting gate (or the one at the stage cursor)",
        title="Approve gate",
        footer=None,
    ),
    _operation(
        "s",
        "start",
        operations.start,
        description="start a PENDING session: its runner runs in the background",
        title="Start session",
        footer=None,
    ),
    _operation(
        "a",
        "abort",
        operations.abort,
        description="abort it (asks first)",
        title="Abort session",
        footer="Abort",
        confirm=(
            "Abort session {name} ({id})? It ends FAILED (aborted); a running stage is terminated."
        ),
    ),
    _operation(
        "d",
        "delete",
        operations.delete,
        description="delete it with its history and logs (asks first)",
        title="Delete session",
        footer=None,
        confirm="Delete session {name} ({id}) with its history and logs?",
    ),
    _operation(
        "t",
        "retry",
        operations.retry,
        description="retry a failed session: failed stages run again",
        title="Retry session",
        footer=None,
    ),
    Key(
        "n",
        "new session: pick a workflow, name it, start it",
        title="New session",
        action="new_session",
        footer="New",
    ),
    Key(
        "enter",
        "details: metadata, definition snapshot, events",
        title="Session details",
        action="details",
        footer=None,
    ),
    Key(
        "/",
        "filter by text (name, workflow, id prefix)",
        title="Filter sessions by text",
        action="filter",
        footer="Filter",
        binding="slash",
        priority=True,  # a paste of `/prod` must filter, its `p` never pause the session
    ),
    Key("1-5", "only PENDING/ACTIVE/PAUSED/COMPLETED/FAILED"),
    *(
        Key(
            key,
            f"only {status}",
            title=f"Show only {status} sessions",
            action=f"status_filter('{status}')",
            in_help=False,
        )
        for key, status in STATUS_KEYS.items()
    ),
    Key("0", "every status", title="Show all statuses", action="status_filter('')"),
    Key("escape", "clear the text filter", title="Clear the text filter", action="clear_filter"),
    Key(
        "f",
        "follow the log on / off",
        title="Toggle log follow",
        action="toggle_follow",
        footer=None,
    ),
    Key(
        "w",
        "wrap log lines on / off",
        title="Toggle log wrap",
        action="toggle_wrap",
        footer=None,
    ),
    Key("tab", "move between the table, the stages and the log"),
    # Bound on the stage list itself (widgets/stage_list.py), where up / down move its cursor.
    Key("space", "in the stages: open / close a matrix stage (enter too)"),
    Key("ctrl+p", "command palette: every operation"),
    Key(
        "?",
        "this help",
        title="Keys help",
        action="help",
        footer="Help",
        binding="question_mark",
    ),
    Key(
        "q",
        "quit (sessions keep running; --demo stops its own)",
        action="quit",
        footer="Quit",
        on_app=True,
    ),
    # Textual's own ctrl+c only says "press ctrl+q to quit"; every other vc command stops
    # on Ctrl-C, so the dashboard does too; a text field keeps it for copying, and never
    # loses what was typed to it (FlowApp.action_interrupt).
    Key("ctrl+c", "quit, as q (in a text field: copy)", action="interrupt", on_app=True),
)

OPERATIONS: dict[str, Key] = {key.operation: key for key in KEYS if key.operation is not None}
"""The rows that run an operation, by its name (what their ``operate`` action passes)."""


def _binding(key: Key) -> Binding:
    assert key.action is not None
    return Binding(
        key.binding or key.key,
        key.action,
        key.footer or key.title or key.description,
        show=key.footer is not None,
        priority=key.priority,
    )


def screen_bindings() -> list[Binding]:
    """The dashboard screen's bindings: inactive while a dialog covers it."""
    return [_binding(key) for key in KEYS if key.action is not None and not key.on_app]


def app_bindings() -> list[Binding]:
    """The app's bindings: active wherever no dialog is up (a modal screen ends the chain
    of bindings: each dialog binds what must work over it, ``widgets.quit_key``)."""
    return [_binding(key) for key in KEYS if key.action is not None and key.on_app]


#: What the help says beyond the keys.
HELP_NOTES = (
    "Alerts: when any session in the store fails, or reaches a manual gate, a "
    "notification says so once, whichever session is selected.",
)


def help_lines() -> list[tuple[str, str]]:
    """``(key, description)`` per line of the help screen, in the table's order."""
    return [(key.key, key.description) for key in KEYS if key.in_help]


def palette_entries() -> list[tuple[str, str, str]]:
    """``(title, action, help)`` per command palette entry, in the table's order; the
    action as the screen the palette was opened over runs it."""
    return [
        (
            key.title,
            f"app.{key.action}" if key.on_app else key.action,
            f"{key.key}: {key.description}",
        )
        for key in KEYS
        if key.title is not None and key.action is not None
    ]


def confirm_question(key: Key, name: str, session_id: str) -> str | None:
    """The question asked before ``key``'s operation on that session, if it asks one."""
    if key.confirm is None:
        return None
    return key.confirm.format(name=name, id=session_id[:12])


__all__ = [
    "KEYS",
    "OPERATIONS",
    "STATUS_KEYS",
    "Key",
    "Operation",
    "app_bindings",
    "confirm_question",
    "help_lines",
    "palette_entries",
    "screen_bindings",
]
