"""A modal listing the dashboard's keys.

The app passes plain ``(key, description)`` pairs rather than its ``Binding`` objects, so the
help can group, order and word them for people (and can include keys handled elsewhere, such as
the command palette), and so this module needs nothing of the app.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from widgets.formatting import clean
from widgets.quit_key import QUIT_KEY


def help_text(bindings: Sequence[tuple[str, str]]) -> Text:
    """Two aligned columns, keys in bold, as literal ``Text``."""
    keys = [clean(key) for key, _ in bindings]
    width = max((len(key) for key in keys), default=0)
    text = Text(end="")
    for i, (key, (_, description)) in enumerate(zip(keys, bindings, strict=True)):
        if i:
            text.append("\n")
        text.append(key.rjust(width), Style(bold=True))
        text.append("  ")
        text.append(clean(description))
    return text


class HelpScreen(ModalScreen[None]):
    """Key help; closed by ``escape``, ``q`` or ``?``."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close"),
        Binding("q", "close", "Close"),
        Binding("question_mark", "close", "Close"),
        QUIT_KEY,
    ]

    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
        & > #help-dialog {
            width: 64;
            max-width: 90%;
            height: auto;
            max-height: 90%;
            padding: 1 2;
            border: thick $primary 60%;
            background: $surface;
        }
        & #help-title { text-style: bold; margin-bottom: 1; }
        & #help-keys { height: auto; max-height: 70vh; }
        & .help-note { margin-top: 1; }
        & #help-footer { margin-top: 1; color: $text-muted; }
    }
    """

    def __init__(
        self,
        bindings: Sequence[tuple[str, str]],
        *,
        title: str | Text = "Keys",
        notes: Sequence[str] = (),
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        """Create the modal from ``(key, description)`` pairs, shown in the given order,
        and ``notes``: paragraphs shown under them (what happens without a key)."""
        super().__init__(name=name, id=id, classes=classes)
        self.key_help = list(bindings)
        self.notes = [clean(note) for note in notes]
        self.title_text = Text(title) if isinstance(title, str) else title

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static(self.title_text, markup=False, id="help-title")
            with VerticalScroll(id="help-keys"):
                yield Static(help_text(self.key_help), markup=False, id="help-text")
                for note in self.notes:
                    yield Static(Text(note), markup=False, classes="help-note")
            yield Static(Text("escape / q / ? to close"), markup=False, id="help-footer")
        yield Footer()  # this dialog's keys, over the dashboard's (whose q would quit)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)


__all__ = ["HelpScreen", "help_text"]
