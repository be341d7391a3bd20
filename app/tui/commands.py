"""Every dashboard operation in the command palette (ctrl+p)."""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

OPERATIONS = [
    ("Pause session", "pause", "SIGSTOP the selected session's stage"),
    ("Resume session", "resume", "continue it (starts a runner if needed)"),
    ("Abort session", "abort", "FAILED with reason aborted (asks first)"),
    ("Delete session", "delete", "remove it with history and logs (asks first)"),
    ("Retry session", "retry", "failed stages back to PENDING"),
    ("New session", "new_session", "pick a workflow and start it"),
    ("Session details", "details", "metadata, definition, events"),
    ("Filter sessions", "filter", "by text"),
    ("Show all statuses", "status_filter('')", "clear the status filter"),
    ("Toggle log follow", "toggle_follow", "follow new lines or not"),
    ("Toggle log wrap", "toggle_wrap", "wrap long lines or not"),
    ("Help", "help", "the keys"),
]


class OperationsProvider(Provider):
    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in OPERATIONS:
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title),
                          partial(self.app.run_action, action), help=help_text)

    async def discover(self) -> Hits:
        for title, action, help_text in OPERATIONS:
            yield Hit(1.0, title, partial(self.app.run_action, action), help=help_text)
