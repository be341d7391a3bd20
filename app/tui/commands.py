"""Every dashboard operation in the command palette (ctrl+p).

The palette is where a user looks for what a key does, or for an operation whose key they
forgot: its entries are the rows of :data:`app.tui.keys.KEYS` that have a title, with the
key and what it does as their help. Textual's own commands (theme, quit, screenshot …)
stay available next to these.
"""

from __future__ import annotations

from functools import partial

from textual.command import Hit, Hits, Provider

from app.tui.keys import palette_entries


class OperationsProvider(Provider):
    """The dashboard's operations, matched fuzzily on their titles; each runs its action
    on the screen the palette was opened over."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, action, help_text in palette_entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(
                    score,
                    matcher.highlight(title),
                    partial(self.screen.run_action, action),
                    help=help_text,
                )

    async def discover(self) -> Hits:
        for title, action, help_text in palette_entries():
            yield Hit(1.0, title, partial(self.screen.run_action, action), help=help_text)
