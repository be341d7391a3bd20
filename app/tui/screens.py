"""Secondary screens of the dashboard: session details and the new-session form.

Both show text users wrote (names, metadata, workflow names) as ``Text``, never as markup;
their looks are in app.tcss.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.validation import ValidationResult, Validator
from textual.widget import Widget
from textual.widgets import Button, Footer, Input, Label, OptionList, Static
from textual.widgets.option_list import Option

from app.tui.messages import WorkflowsFound
from store.new_session import MAX_NAME, is_blank_name
from widgets.quit_key import QUIT_KEY


class DetailsScreen(ModalScreen[None]):
    """Metadata, the definition snapshot and the event history of one session."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "dismiss", "Close"),
        Binding("q", "dismiss", "Close"),
        Binding("enter", "dismiss", "Close", show=False),
        QUIT_KEY,
    ]

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="details-box"):
            yield Static(Text(self.text), id="details-text")
        yield Label("escape, q or enter closes", id="details-hint")
        yield Footer()  # this dialog's keys, over the dashboard's (whose q would quit)

    def action_dismiss(self) -> None:  # type: ignore[override]
        """Close (escape, q or enter): the dashboard underneath kept refreshing."""
        self.dismiss(None)


class _Accepts(Validator):
    """Checks one parameter's value as it is typed (the rules ``--param`` follows). An
    empty field means "no value": the default applies, and a required one is missing."""

    def __init__(self, spec: Any) -> None:
        super().__init__()
        self.spec = spec

    def validate(self, value: str) -> ValidationResult:
        if value == "":
            if self.spec.required:
                return self.failure(f"required: accepts {self.spec.accepts()}")
            return self.success()
        try:
            self.spec.coerce(value)
        except ValueError as exc:
            return self.failure(f"refused: accepts {exc}")
        return self.success()


NewSession = tuple[str, str | None, dict[str, str]]


class _FormScroll(VerticalScroll, can_focus=False):
    """The new-session form: it scrolls as a whole when it is taller than the screen, so
    every field can be reached and the focused one is scrolled into view; not a tab stop
    of its own (its fields are)."""


class NewSessionScreen(ModalScreen[NewSession | None]):
    """Pick a workflow, name the session, fill in its parameters, start it detached.

    One field per parameter of the highlighted workflow, its default filled in, checked
    as it is typed; under it, its description and what it accepts (or why the value is
    refused). Start is refused while a field is refused."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel"), QUIT_KEY]

    def __init__(self, workflows_dir: Path) -> None:
        super().__init__()
        self.workflows_dir = workflows_dir
        self._definitions: dict[str, Any] = {}
        self._shown_params: str | None = None

    def compose(self) -> ComposeResult:
        with _FormScroll(id="new-box"):
            yield Label(
                "New session: enter picks a workflow, then name it; enter again starts it",
                id="new-title",
            )
            yield OptionList(id="new-workflows")
            yield Input(placeholder="name (optional)", id="new-name", max_length=MAX_NAME)
            yield Vertical(id="new-params")
            yield Static("", id="new-errors", markup=False)
            yield Button("Start (enter)", id="new-start", variant="primary")
        yield Footer()  # this form's keys: q is typed, escape cancels

    def on_mount(self) -> None:
        self._load()

    @work(thread=True, exclusive=True, group="workflows", exit_on_error=False)
    def _load(self) -> None:
        """Read the workflow files off the event loop (a slow disk must not freeze it)."""
        from store.workflows import discover_workflows

        errors: list[Exception]
        try:
            found, found_errors = discover_workflows(self.workflows_dir)
            errors = list(found_errors)
        except Exception as exc:  # an unreadable directory: say so in the dialog
            found, errors = [], [exc]
        self.post_message(WorkflowsFound(found, errors))  # dropped if the dialog has closed

    @on(WorkflowsFound)
    def _show(self, message: WorkflowsFound) -> None:
        from store.text import clean_text

        found, errors = message.workflows, message.errors
        options = self.query_one(OptionList)
        for wf in found:
            self._definitions[wf.id] = wf
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

    @on(OptionList.OptionHighlighted)
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._show_params(event.option.id)

    def _show_params(self, workflow_id: str | None) -> None:
        """The fields of the highlighted workflow's parameters (none: no fields)."""
        if workflow_id == self._shown_params:
            return
        self._shown_params = workflow_id
        from store.names import param_text
        from store.text import clean_text

        box = self.query_one("#new-params", Vertical)
        box.remove_children()
        definition = self._definitions.get(workflow_id or "")
        if definition is None:
            return
        fields: list[Widget] = []
        for key, spec in definition.params.items():
            fields.append(Label(Text(key), classes="param-key"))
            fields.append(
                Input(
                    "" if spec.default is None else param_text(spec.default),
                    placeholder=clean_text(spec.accepts()),
                    validators=[_Accepts(spec)],
                    validate_on=["changed", "submitted"],
                    id=f"param-{key}",
                    classes="param-value",
                )
            )
            fields.append(Static(self._note(spec), id=f"note-{key}", classes="param-note"))
        box.mount_all(fields)

    @staticmethod
    def _note(spec: Any, problem: str | None = None) -> Text:
        from store.text import clean_text

        accepts = f"{'required: ' if spec.required else ''}accepts {spec.accepts()}"
        parts = [spec.description or "", problem or accepts]
        text = Text(clean_text(" — ".join(p for p in parts if p)))
        if problem:
            text.stylize("bold red")
        return text

    @on(Input.Changed, ".param-value")
    def _checked(self, event: Input.Changed) -> None:
        """Each value is checked as it is typed; the note under it says why it is refused."""
        key = (event.input.id or "").removeprefix("param-")
        spec = self._spec(key)
        if spec is None:
            return
        result = event.validation_result
        problem = None if result is None or result.is_valid else result.failure_descriptions[0]
        self.query_one(f"#note-{key}", Static).update(self._note(spec, problem))

    def _spec(self, key: str) -> Any:
        definition = self._definitions.get(self._shown_params or "")
        return None if definition is None else definition.params.get(key)

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
        self._show_params(option.id)
        params: dict[str, str] = {}
        for field in self.query(".param-value").results(Input):
            key = (field.id or "").removeprefix("param-")
            result = field.validate(field.value)
            if result is not None and not result.is_valid:
                spec = self._spec(key)
                if spec is not None:
                    note = self._note(spec, result.failure_descriptions[0])
                    self.query_one(f"#note-{key}", Static).update(note)
                field.focus()
                self.notify(
                    f"{key}: {result.failure_descriptions[0]}",
                    title="parameter refused",
                    severity="warning",
                    markup=False,
                )
                return
            if field.value != "":
                params[key] = field.value
        name_field = self.query_one("#new-name", Input)
        name = name_field.value.strip() or None
        if name is not None and is_blank_name(name):  # as `--name` refuses it
            name_field.focus()
            self.notify(
                "a session name cannot be blank (control characters do not show)",
                title="name refused",
                severity="warning",
                markup=False,
            )
            return
        self.dismiss((option.id, name, params))

    def action_cancel(self) -> None:
        self.dismiss(None)
