"""A yes/no modal for destructive operations (abort, delete).

``y`` confirms, ``n`` and ``escape`` cancel; the buttons do the same for mouse users. ``q``
cancels too, as it closes every other box of the dashboard (help, details): a user who
learnt "q closes" gets out of the question, not out of the application. The
keyboard focus starts on "No", so an ``enter`` typed by reflex never destroys anything. The
message usually quotes a session name, so it is rendered literally, never as markup.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Static

from widgets.quit_key import QUIT_KEY


def _literal(value: str | Text) -> Text:
    return Text(value) if isinstance(value, str) else value


class ConfirmScreen(ModalScreen[bool]):
    """Ask a question; ``push_screen(ConfirmScreen(msg), callback)`` gets True or False."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes"),
        Binding("n", "cancel", "No"),
        Binding("escape", "cancel", "Cancel"),
        Binding("q", "cancel", "No", show=False),
        QUIT_KEY,
    ]

    DEFAULT_CSS = """
    ConfirmScreen {
        align: center middle;
        & > #confirm-dialog {
            width: 64;
            max-width: 90%;
            height: auto;
            padding: 1 2;
            border: thick $error 60%;
            background: $surface;
        }
        & #confirm-title { text-style: bold; margin-bottom: 1; }
        & #confirm-buttons { height: auto; margin-top: 1; align-horizontal: right; }
        & #confirm-buttons Button { margin-left: 2; }
    }
    """

    def __init__(
        self,
        message: str | Text,
        *,
        title: str | Text = "Confirm",
        yes_label: str = "Yes (y)",
        no_label: str = "No (n)",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        """Create the modal.

        Args:
            message: The question; a ``str`` is shown literally.
            title: A short title line.
            yes_label: Label of the confirming button.
            no_label: Label of the cancelling button.
        """
        super().__init__(name=name, id=id, classes=classes)
        self.message_text = _literal(message)
        self.title_text = _literal(title)
        self._yes_label = yes_label
        self._no_label = no_label

    def compose(self) -> ComposeResult:
        with Vertical(id="confirm-dialog"):
            yield Static(self.title_text, markup=False, id="confirm-title")
            yield Static(self.message_text, markup=False, id="confirm-message")
            with Horizontal(id="confirm-buttons"):
                yield Button(Text(self._yes_label), variant="error", id="confirm-yes")
                yield Button(Text(self._no_label), variant="primary", id="confirm-no")
        yield Footer()  # this dialog's keys, over the dashboard's (whose q would quit)

    def on_mount(self) -> None:
        self.query_one("#confirm-no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.dismiss(event.button.id == "confirm-yes")

    def action_confirm(self) -> None:
        """Answer yes."""
        self.dismiss(True)

    def action_cancel(self) -> None:
        """Answer no."""
        self.dismiss(False)


__all__ = ["ConfirmScreen"]
