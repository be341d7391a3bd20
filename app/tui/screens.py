"""Secondary screens of the dashboard: session details and the new-session form.

Both show text users wrote (names, metadata, workflow names) as ``Text``, never as markup;
their looks are in app.tcss.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, OptionList, Static
from textual.widgets.option_list import Option


class DetailsScreen(ModalScreen[None]):
    """Metadata, the definition snapshot and the event history of one session."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
        Binding("enter", "dismiss", "Close", show=False),
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details-box"):
            yield Static(Text(self.text), id="details-text")
        yield Label("escape, q or enter closes", id="details-hint")

    def action_dismiss(self) -> None:  # type: ignore[override]
        """Close (escape, q or enter): the dashboard underneath kept refreshing."""
        self.dismiss(None)


class NewSessionScreen(ModalScreen[tuple[str, str | None] | None]):
    """Pick a workflow, name the session, start it detached."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, workflows_dir: Path) -> None:
        super().__init__()
        self.workflows_dir = workflows_dir

    def compose(self) -> ComposeResult:
        with Vertical(id="new-box"):
            yield Label("New session: pick a workflow", id="new-title")
            yield OptionList(id="new-workflows")
            yield Input(placeholder="name (optional)", id="new-name")
            yield Static("", id="new-errors", markup=False)
            yield Button("Start (enter)", id="new-start", variant="primary")

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exit_on_error=False)
    def _load(self) -> None:
        """Read the workflow files off the event loop (a slow disk must not freeze it)."""
        from store.workflows import discover_workflows

        try:
            found, errors = discover_workflows(self.workflows_dir)
        except Exception as exc:  # an unreadable directory: say so in the dialog
            found, errors = [], [exc]
        self.call_later(self._show, found, errors)  # dropped if the dialog has closed

    def _show(self, found: list, errors: list) -> None:  # type: ignore[type-arg]
        from store.text import clean_text

        options = self.query_one(OptionList)
        for wf in found:
            label = Text(clean_text(wf.id))
            if wf.name and wf.name != wf.id:
                label.append(f"  {clean_text(wf.name)}")
            options.add_option(Option(label, id=wf.id))
        if not found:
            options.add_option(
                Option(
                    Text(f"no workflows in {self.workflows_dir}: add a YAML file there"),
                    disabled=True,
                )
            )
        if errors:
            self.query_one("#new-errors", Static).update(
                Text("\n".join(clean_text(str(e)) for e in errors[:5]))
            )
        options.highlighted = 0 if found else None
        options.focus()

    @on(OptionList.OptionSelected)
    def _picked(self) -> None:
        self.query_one("#new-name", Input).focus()

    @on(Input.Submitted)
    @on(Button.Pressed, "#new-start")
    def _start(self) -> None:
        options = self.query_one(OptionList)
        if options.highlighted is None:
            self.notify("pick a workflow first", severity="warning")
            return
        option = options.get_option_at_index(options.highlighted)
        if option.id is None:
            return
        name = self.query_one("#new-name", Input).value.strip() or None
        self.dismiss((option.id, name))

    def action_cancel(self) -> None:
        self.dismiss(None)
