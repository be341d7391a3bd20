"""Every dashboard operation in the command palette (ctrl+p).

The palette is where a user looks for what a key does, or for an operation whose key they
forgot; so every action bound to a key is listed here, with the key in its help text.
Textual's own commands (theme, quit, screenshot …) stay available next to these.
"""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

#: (title, action, help). ``tests/tui`` checks that each action exists on the app.
OPERATIONS = [
    ("Pause session", "pause", "p: SIGSTOP the selected session's stage"),
    ("Resume session", "resume", "r: continue it (starts a runner if needed)"),
    ("Start session", "start", "s: run a PENDING session (its runner in the background)"),
    ("Abort session", "abort", "a: FAILED with reason aborted (asks first)"),
    ("Delete session", "delete", "d: remove it with history and logs (asks first)"),
    ("Retry session", "retry", "t: run a failed session's failed stages again"),
    ("New session", "new_session", "n: pick a workflow, name it, start it"),
    ("Session details", "details", "enter: metadata, definition snapshot, events"),
    ("Filter sessions by text", "filter", "/: name, workflow or id prefix"),
    ("Clear the text filter", "clear_filter", "escape"),
    ("Show only PENDING sessions", "status_filter('PENDING')", "1"),
    ("Show only ACTIVE sessions", "status_filter('ACTIVE')", "2"),
    ("Show only PAUSED sessions", "status_filter('PAUSED')", "3"),
    ("Show only COMPLETED sessions", "status_filter('COMPLETED')", "4"),
    ("Show only FAILED sessions", "status_filter('FAILED')", "5"),
    ("Show all statuses", "status_filter('')", "0: clear the status filter"),
    ("Toggle log follow", "toggle_follow", "f: follow new lines or not"),
    ("Toggle log wrap", "toggle_wrap", "w: wrap long lines or not"),
    ("Keys help", "help", "?: every key"),
]


class OperationsProvider(Provider):
    """The dashboard's operations, matched fuzzily on their titles."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in OPERATIONS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.app.run_action, action),
                    help=help_text,
                )

    async def discover(self) -> Hits:
        for title, action, help_text in OPERATIONS:
            yield Hit(1.0, title, partial(self.app.run_action, action), help=help_text)
