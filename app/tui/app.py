"""`vc flow tui`: the dashboard (DESIGN §10).

One screen, three regions: the sessions table on top, the selected session's stages on the
left and its log on the right; a header with counts per status and a footer with the keys.

Rules this module keeps:
* the event loop never waits on the store: every read and write runs in a thread worker and
  hands plain data back with ``call_from_thread``;
* polling is cheap: every POLL_INTERVAL a worker asks the store's ChangeWatcher whether
  anything was committed, and only then re-reads the visible window, the selected session
  and its new log lines;
* every operation is one manager call, the same one the CLI makes; a refusal is shown as a
  notification with the manager's own message.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Input, Static

from app.tui import data
from app.tui.commands import OperationsProvider
from app.tui.screens import DetailsScreen, NewSessionScreen
from store.queries import SessionFilter
from widgets.confirm import ConfirmScreen
from widgets.counts import StatusCountsBar
from widgets.help import HelpScreen
from widgets.log_pane import LogPane
from widgets.messages import OlderLogsRequested, SessionHighlighted, SessionSelected
from widgets.messages import WindowRequested
from widgets.session_table import SessionTable
from widgets.stage_list import StageList

POLL_INTERVAL = 0.5
STATUS_KEYS = {"1": "PENDING", "2": "ACTIVE", "3": "PAUSED", "4": "COMPLETED", "5": "FAILED"}
EMPTY_TEXT = (
    "No sessions yet.\n\n"
    "Press n to start one, or from a shell:\n"
    "  vc flow run WORKFLOW --detach\n"
    "  vc flow session create WORKFLOW"
)


class FlowApp(App[int]):
    CSS_PATH = "app.tcss"
    TITLE = "vc flow"
    COMMANDS = App.COMMANDS | {OperationsProvider}

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        Binding("a", "abort", "Abort"),
        Binding("d", "delete", "Delete"),
        Binding("t", "retry", "Retry"),
        Binding("n", "new_session", "New"),
        Binding("slash", "filter", "Filter"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("w", "toggle_wrap", "Wrap"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        *[Binding(k, f"status_filter('{v}')", v.title(), show=False)
          for k, v in STATUS_KEYS.items()],
        Binding("0", "status_filter('')", "All", show=False),
    ]

    #: (key, description) for the help screen; one list so help and bindings agree.
    KEY_HELP: ClassVar[list[tuple[str, str]]] = [
        ("p", "pause the selected session (its stage gets SIGSTOP)"),
        ("r", "resume it (starts a runner if it has none)"),
        ("a", "abort it (asks first)"),
        ("d", "delete it with its history and logs (asks first)"),
        ("t", "retry a failed session (then resume or run it)"),
        ("n", "new session: pick a workflow, name it, start it"),
        ("enter", "details: metadata, definition snapshot, events"),
        ("/", "filter by text (name, workflow, id)"),
        ("1-5", "only PENDING / ACTIVE / PAUSED / COMPLETED / FAILED"),
        ("0", "all statuses"),
        ("f", "follow the log on / off"),
        ("w", "wrap log lines on / off"),
        ("ctrl+p", "command palette: every operation"),
        ("?", "this help"),
        ("q", "quit"),
    ]

    def __init__(self, ctx: Any, *, poll_interval: float = POLL_INTERVAL) -> None:
        super().__init__()
        self.ctx = ctx
        self.poll_interval = poll_interval
        self.filter = SessionFilter()
        self.selected_id: str | None = None
        self._last_log_id: int | None = None
        self._log_session: str | None = None
        from store.watch import ChangeWatcher

        self.watcher = ChangeWatcher(ctx.engine)

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        with Horizontal(id="header"):
            yield Static("vc flow", id="title")
            yield StatusCountsBar(id="counts")
            yield Static("", id="filter-label")
        yield SessionTable(id="sessions", empty_text=EMPTY_TEXT)
        with Horizontal(id="detail"):
            with Vertical(id="stages-box"):
                yield StageList(id="stages")
            yield LogPane(id="log")
        yield Input(placeholder="filter: text in name, workflow or id (enter applies, "
                    "escape clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.query_one(SessionTable).focus()
        self.set_interval(self.poll_interval, self.poll)
        self.poll()

    @property
    def table(self) -> SessionTable:
        return self.query_one(SessionTable)

    # -- reading -----------------------------------------------------------------------------

    def poll(self) -> None:
        self._poll_worker()

    @work(thread=True, exclusive=True, group="poll")
    def _poll_worker(self) -> None:
        try:
            changed = self.watcher.changed()
        except Exception as exc:  # database away: say so, keep the last picture
            self.call_from_thread(self._store_error, exc)
            return
        if not changed:
            return
        offset, limit = self.table.wanted_window
        self._load_window(offset, limit)
        self._load_selected()

    def _store_error(self, exc: BaseException) -> None:
        from store.engine import unavailable_message

        self.notify(unavailable_message(exc, self.ctx.settings.database_url),
                    severity="error", timeout=5, markup=False)

    def _load_window(self, offset: int, limit: int) -> None:
        with self.ctx.factory() as db:
            window = data.load_window(db, self.filter, offset, limit)
        self.call_from_thread(self._show_window, window)

    def _show_window(self, window: data.Window) -> None:
        self.table.set_window(window.offset, window.rows, window.total)
        self.query_one(StatusCountsBar).set_counts(window.counts)

    @on(WindowRequested)
    def _window_requested(self, message: WindowRequested) -> None:
        self._window_worker(message.offset, message.limit)

    @work(thread=True, exclusive=True, group="window")
    def _window_worker(self, offset: int, limit: int) -> None:
        self._load_window(offset, limit)

    @on(SessionHighlighted)
    def _highlighted(self, message: SessionHighlighted) -> None:
        if message.session_id == self.selected_id:
            return
        self.selected_id = message.session_id
        self._last_log_id = None
        self._log_session = message.session_id
        self.query_one(LogPane).clear()
        self._selected_worker()

    @work(thread=True, exclusive=True, group="selected")
    def _selected_worker(self) -> None:
        self._load_selected()

    def _load_selected(self) -> None:
        sid = self.selected_id
        if sid is None:
            self.call_from_thread(self._show_detail, None, None, [])
            return
        with self.ctx.factory() as db:
            detail = data.load_detail(db, sid)
            logs = data.load_new_logs(db, sid, self._last_log_id) if detail else []
        self.call_from_thread(self._show_detail, sid, detail, logs)

    def _show_detail(self, sid: str | None, detail: data.Detail | None, logs: list) -> None:  # type: ignore[type-arg]
        if sid != self.selected_id:
            return  # the selection moved on while we read
        self.query_one(StageList).set_stages(detail.stages if detail else [])
        if logs and sid == self._log_session:
            self.query_one(LogPane).append(logs)
            self._last_log_id = logs[-1].id

    @on(OlderLogsRequested)
    def _older(self, message: OlderLogsRequested) -> None:
        if self.selected_id is not None:
            self._older_worker(self.selected_id, message.before_id)

    @work(thread=True, group="older")
    def _older_worker(self, sid: str, before_id: int) -> None:
        with self.ctx.factory() as db:
            lines = data.load_older_logs(db, sid, before_id)
        self.call_from_thread(self._show_older, sid, lines)

    def _show_older(self, sid: str, lines: list) -> None:  # type: ignore[type-arg]
        if sid == self.selected_id:
            self.query_one(LogPane).prepend_older(lines, more=len(lines) >= data.LOG_PAGE)

    # -- operations --------------------------------------------------------------------------

    def _operate(self, label: str, call: Callable[[Any], str | None]) -> None:
        sid = self.selected_id
        if sid is None:
            self.notify("no session selected", severity="warning")
            return
        self._operation_worker(label, sid, call)

    @work(thread=True, group="ops")
    def _operation_worker(self, label: str, sid: str, call: Callable[..., str | None]) -> None:
        from store.errors import StoreError

        try:
            with self.ctx.factory() as db:
                note = call(db, sid)
        except StoreError as exc:
            self.call_from_thread(self.notify, str(exc), title=f"{label} refused",
                                  severity="warning", markup=False)
            return
        except Exception as exc:
            self.call_from_thread(self.notify, f"{type(exc).__name__}: {exc}",
                                  title=f"{label} failed", severity="error", markup=False)
            return
        self.call_from_thread(self.notify, note or f"{label}: {sid[:12]}", markup=False)
        self.call_from_thread(self.poll)

    def _manager(self, db: Any) -> Any:
        from store import FlowSessionManager

        return FlowSessionManager(db, actor=f"{_user()} (tui)")

    def action_pause(self) -> None:
        self._operate("pause", lambda db, sid: self._manager(db).pause(sid) and None)

    def action_resume(self) -> None:
        def resume(db: Any, sid: str) -> str:
            from app.runner.launch import ensure_runner

            change = self._manager(db).resume(sid)
            return f"{change.to_status}: {sid[:12]}{ensure_runner(self.ctx, sid)}"

        self._operate("resume", resume)

    def action_retry(self) -> None:
        self._operate("retry", lambda db, sid: self._manager(db).retry(sid) and
                      f"retry: {sid[:12]} is PENDING; press r or run it to carry on")

    def action_abort(self) -> None:
        self._confirm_then("abort", "Abort session {name}? Its stage is terminated.",
                           lambda db, sid: self._manager(db).abort(sid) and None)

    def action_delete(self) -> None:
        def delete(db: Any, sid: str) -> str:
            self._manager(db).delete(sid)
            if self.ctx.logging is not None:
                self.ctx.logging.files.remove_session(sid)
            return f"deleted {sid[:12]}"

        self._confirm_then("delete", "Delete session {name} with its history and logs?",
                           delete)

    def _confirm_then(self, label: str, question: str, call: Callable[..., str | None]) -> None:
        sid = self.selected_id
        if sid is None:
            self.notify("no session selected", severity="warning")
            return
        row = next((r for r in self.table.rows if r.id == sid), None)
        name = row.name if row else sid[:12]
        from rich.text import Text

        def done(answer: bool | None) -> None:
            if answer:
                self._operation_worker(label, sid, call)

        self.push_screen(ConfirmScreen(Text(question.format(name=name)), title=label.title()),
                         done)

    def action_new_session(self) -> None:
        def done(choice: tuple[str, str | None] | None) -> None:
            if choice:
                self._create_worker(*choice)

        self.push_screen(NewSessionScreen(self.ctx.settings.workflows_dir), done)

    @work(thread=True, group="ops")
    def _create_worker(self, workflow_id: str, name: str | None) -> None:
        from app.runner.launch import LaunchError, spawn_runner
        from store.errors import StoreError
        from store.workflows import WorkflowError, find_workflow

        try:
            definition = find_workflow(self.ctx.settings.workflows_dir, workflow_id)
            with self.ctx.factory() as db:
                sid = self._manager(db).create_session(
                    definition.id, name=name or None, definition=definition).id
            spawn_runner(self.ctx, sid)
        except (StoreError, WorkflowError, LaunchError) as exc:
            self.call_from_thread(self.notify, str(exc), title="new session failed",
                                  severity="error", markup=False)
            return
        self.call_from_thread(self.notify, f"started {sid[:12]}", markup=False)
        self.call_from_thread(self.poll)

    @on(SessionSelected)
    def _selected(self, message: SessionSelected) -> None:
        self.action_details()

    def action_details(self) -> None:
        if self.selected_id is not None:
            self._details_worker(self.selected_id)

    @work(thread=True, group="details")
    def _details_worker(self, sid: str) -> None:
        with self.ctx.factory() as db:
            text = data.details_text(db, sid)
        if text is None:
            self.call_from_thread(self.notify, "that session is gone", severity="warning")
        else:
            self.call_from_thread(self.push_screen, DetailsScreen(text))

    # -- view --------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.filter.text or ""
        box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.input.display = False
        self._set_filter(text=event.value.strip() or None)
        self.table.focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        if box.display:
            box.display = False
            self.table.focus()
        self._set_filter(text=None)

    def action_status_filter(self, status: str) -> None:
        self._set_filter(status=status or None)

    def _set_filter(self, **changes: Any) -> None:
        current = {"status": self.filter.status, "text": self.filter.text}
        current.update(changes)
        self.filter = SessionFilter(status=current["status"], text=current["text"])
        parts = [p for p in (current["status"], current["text"] and f"“{current['text']}”") if p]
        self.query_one("#filter-label", Static).update(
            f"filter: {' '.join(parts)}" if parts else "")
        self.table.cursor_index = 0
        offset, limit = self.table.wanted_window
        self._window_worker(0, limit)

    def action_toggle_follow(self) -> None:
        pane = self.query_one(LogPane)
        pane.follow = not pane.follow
        self.notify(f"follow {'on' if pane.follow else 'off'}", timeout=1.5)

    def action_toggle_wrap(self) -> None:
        pane = self.query_one(LogPane)
        pane.wrap = not pane.wrap

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.KEY_HELP))

    def on_unmount(self) -> None:
        self.watcher.close()


def _user() -> str:
    from store.identity import local_user

    return local_user()
