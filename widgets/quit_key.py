"""Ctrl-C quits the dashboard from its dialogs as from the dashboard itself.

A modal screen ends Textual's chain of bindings: the app's own Ctrl-C is never consulted
while a dialog is up, and the screen's built-in Ctrl-C (copy a selection) swallows the
key. Every dialog therefore binds it; a text field focused in one keeps Ctrl-C for
copying, as its own binding comes first, and with nothing selected the app's
``interrupt`` says so rather than quit (what was typed in a form is never lost to it).
"""

from __future__ import annotations

from textual.binding import Binding

QUIT_KEY = Binding("ctrl+c", "app.interrupt", "Quit", show=False)

__all__ = ["QUIT_KEY"]
