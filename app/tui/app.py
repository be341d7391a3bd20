"""`vc flow tui`: the dashboard (DESIGN §10).

One screen, three regions: the sessions table on top, the selected session's stages on the
left and its log on the right; a header with counts per status and a footer with the keys.

Rules this module keeps, and why:

* The event loop never waits on the store. Every read and write runs in a thread worker
  and hands plain data back with ``call_later`` (thread safe, never blocking the worker),
  so a slow or locked database freezes nothing but the data.
* One refresh at a time. Every re-read (a change found by the poll, a cursor move, a
  scroll, a filter, the end of an operation) goes through ``request_refresh``; while one
  refresh runs the next is only remembered. Answers therefore arrive in order. A refresh
  carries the request it answers, so an answer for a filter or a session the user has
  already left is recognised and dropped.
* An idle dashboard costs next to nothing (issue: idle CPU < 2% of a core with 100,000
  sessions). One long-lived poll worker owns the store's ``ChangeWatcher`` and asks it
  every ``poll_interval`` whether anything was committed (``PRAGMA data_version`` on
  SQLite, microseconds); the event loop hears from it only when there is something to
  re-read. "Orphaned" also changes with time alone (a heartbeat growing stale, or a runner
  on this host dying, commits nothing): each refresh says when that can next happen
  (``data.Watch``) and the poll worker asks for a re-read at that moment, instead of a
  blind periodic re-read of 100,000 sessions' counts. Between changes the widgets repaint
  only the cells whose text moves (a running duration's next second or minute).
* Every operation is one function of ``app.tui.operations`` (one manager call); a refusal
  is shown as a notification carrying the manager's own message, and nothing else
  happens.
* Text users or stages wrote is never parsed as markup: widgets get ``Text`` or plain data,
  and notifications are sent with ``markup=False``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, ClassVar

from rich.text import Text
from textual import events, on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.messages import ExitApp
from textual.widgets import Footer, Input, Static
from textual.worker import get_current_worker

from app.tui import data, operations
from app.tui.commands import OperationsProvider
from app.tui.lifeline import Lifeline
from app.tui.screens import DetailsScreen, NewSessionScreen
from store.queries import SessionFilter
from widgets.confirm import ConfirmScreen
from widgets.counts import StatusCountsBar
from widgets.help import HelpScreen
from widgets.log_pane import LogPane
from widgets.messages import (
    FollowChanged,
    OlderLogsRequested,
    SessionHighlighted,
    SessionSelected,
    WindowRequested,
)
from widgets.session_table import SessionTable
from widgets.stage_list import StageList

POLL_INTERVAL = 0.25
"""Seconds between change checks: a change by any process shows well within 1 s. A check
is one ``PRAGMA data_version`` in the poll worker's thread; it never wakes the event loop
unless something changed."""

ALERTS_SHOWN = 5
"""Most sessions one refresh pops up as failed or waiting at a gate; any more are counted in
one last notification instead of covering the screen."""

WATCH_MIN_GAP = 1.0
"""Seconds between two re-reads asked for by the clock alone (``data.Watch``): a bound,
should a deadline somehow stay in the past, on what a dashboard nobody touches can cost."""

PID_CHECK_EVERY = 1.0
"""Seconds between checks that the local runners of the sessions shown are alive."""

STATUS_KEYS = {"1": "PENDING", "2": "ACTIVE", "3": "PAUSED", "4": "COMPLETED", "5": "FAILED"}

EMPTY_TEXT = (
    "No sessions yet.\n\n"
    "Press n to start one, or from a shell:\n"
    "  vc flow run WORKFLOW --detach\n"
    "  vc flow session create WORKFLOW\n\n"
    "(vc flow list shows the workflows of this workspace)"
)
NO_MATCH_TEXT = (
    "No session matches the filter.\n\n"
    "Press 0 to show every status, / to change the text, escape to clear it."
)

#: Longest session name quoted in a confirmation question (the table shows the rest).
QUESTION_NAME_CHARS = 80

#: Actions that only make sense on the dashboard itself: disabled while a dialog is open,
#: so a key typed into the help or the details never pauses or deletes anything.
DASHBOARD_ACTIONS = frozenset(
    {
        "pause",
        "resume",
        "start",
        "abort",
        "delete",
        "retry",
        "new_session",
        "details",
        "filter",
        "clear_filter",
        "status_filter",
        "toggle_follow",
        "toggle_wrap",
        "help",
    }
)


class FlowApp(App[int]):
    """The dashboard over one store (``ctx`` is what ``app.cli.common.open_store`` gives).

    ``poll_interval`` is how often the store is checked for changes; ``clock`` is the "now"
    the widgets show durations against (a fixed clock makes snapshots deterministic).
    """

    CSS_PATH = "app.tcss"
    TITLE = "vc flow"
    COMMANDS = App.COMMANDS | {OperationsProvider}
    #: Below 100 columns app.tcss gives the log more room (the screen gets "-narrow").
    HORIZONTAL_BREAKPOINTS: ClassVar[list[tuple[int, str]]] = [(0, "-narrow"), (100, "-wide")]

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "pause", "Pause"),
        Binding("r", "resume", "Resume"),
        # Not in the footer (it would push "q Quit" off an 80-column one): the summary of a
        # PENDING session says "s starts it", and help and the palette list it.
        Binding("s", "start", "Start", show=False),
        Binding("a", "abort", "Abort"),
        Binding("d", "delete", "Delete"),
        Binding("t", "retry", "Retry"),
        Binding("n", "new_session", "New"),
        Binding("enter", "details", "Details"),
        Binding("slash", "filter", "Filter"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("w", "toggle_wrap", "Wrap"),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit", "Quit"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        *[
            Binding(k, f"status_filter('{v}')", v.title(), show=False)
            for k, v in STATUS_KEYS.items()
        ],
        Binding("0", "status_filter('')", "All", show=False),
    ]

    #: (key, description) for the help screen; one list so help and bindings agree.
    KEY_HELP: ClassVar[list[tuple[str, str]]] = [
        ("p", "pause the selected session (SIGSTOP)"),
        ("r", "resume it (starts a runner if it has none)"),
        ("s", "start a PENDING session: its runner runs in the background"),
        ("a", "abort it (asks first)"),
        ("d", "delete it with its history and logs (asks first)"),
        ("t", "retry a failed session: failed stages run again"),
        ("n", "new session: pick a workflow, name it, start it"),
        ("enter", "details: metadata, definition snapshot, events"),
        ("/", "filter by text (name, workflow, id prefix)"),
        ("1-5", "only PENDING/ACTIVE/PAUSED/COMPLETED/FAILED"),
        ("0", "every status"),
        ("escape", "clear the text filter"),
        ("f", "follow the log on / off"),
        ("w", "wrap log lines on / off"),
        ("tab", "move between the table, the stages and the log"),
        ("ctrl+p", "command palette: every operation"),
        ("?", "this help"),
        ("q", "quit (sessions keep running)"),
    ]

    #: What the help says beyond the keys.
    HELP_NOTES: ClassVar[list[str]] = [
        "Alerts: when any session in the store fails, or reaches a manual gate, a "
        "notification says so once, whichever session is selected.",
    ]

    def __init__(
        self,
        ctx: Any,
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        from store.watch import ChangeWatcher

        self.ctx = ctx
        self.poll_interval = poll_interval
        self.clock = clock
        self.filter = SessionFilter()
        self.selected_id: str | None = None
        self.watcher = ChangeWatcher(ctx.engine)
        self._last_log_id: int | None = None
        #: The newest event looked at for alerts (failures and gates anywhere in the store).
        self._last_event_id: int | None = None
        self._log_generation = 0
        self._refreshing = False
        self._preloaded: tuple[data.RefreshRequest, data.Refresh] | None = None
        self._refresh_again = False
        # Shared with the poll worker (each written by one side only, read by the other):
        self._watch = data.Watch()  # event loop -> poll: when the picture can age
        self._retries_asked = 0  # event loop -> poll: a read failed, re-read next poll
        self._stop_polling = threading.Event()
        self._store_error: str | None = None
        self._summary_shown = ""
        self._stderr_buffer = ""
        #: Makes sure this process ends (see app.tui.lifeline): exits held until the first
        #: frame, the end of stdin, SIGTERM and SIGHUP, a deadline on the way out.
        self.lifeline = Lifeline(lambda: App.post_message(self, ExitApp()))

    # -- layout ------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.table = SessionTable(id="sessions", empty_text=EMPTY_TEXT, clock=self.clock)
        self.stages = StageList(id="stages", clock=self.clock)
        self.summary = Static("", id="session-summary", markup=False)
        self.log_pane = LogPane(id="log")
        self.counts = StatusCountsBar(id="counts")
        self.filter_label = Static("", id="filter-label", markup=False)
        self.log_state = Static("", id="log-state", markup=False)
        self.filter_box = Input(
            placeholder="filter: text in name or workflow, or an id prefix "
            "(enter applies, escape clears)",
            id="filter",
        )
        with Horizontal(id="header"):
            yield Static("vc flow", id="title", markup=False)
            yield self.counts
            yield self.filter_label
            yield self.log_state
        yield self.table
        with Horizontal(id="detail"):
            with Vertical(id="stages-box"):
                yield self.summary
                yield self.stages
            yield self.log_pane
        yield self.filter_box
        yield Footer()

    def preload(self, rows: int = 100) -> None:
        """Read the first window before the app starts (the launcher calls this): the
        first paint then has its rows at once, instead of waiting for a worker whose
        queries compete with Textual's start-up for the GIL (3x slower at 100,000
        sessions). Nothing runs on the event loop; a failure just leaves it to the poll."""
        request = data.RefreshRequest(
            filter=self.filter,
            offset=0,
            limit=rows,
            session_id=None,
            after_log_id=None,
            log_generation=self._log_generation,
            after_event_id=self._last_event_id,
        )
        try:
            with self.ctx.factory() as db:
                self._preloaded = (request, data.load_refresh(db, request))
        except Exception:
            self._preloaded = None

    def post_message(self, message: Message) -> bool:
        if isinstance(message, ExitApp) and self.lifeline.hold_exit():
            return True  # posted again after the first frame (see app.tui.lifeline)
        return super().post_message(message)

    def on_ready(self) -> None:
        self.lifeline.first_frame()

    def on_mount(self) -> None:
        if not self.is_headless:
            loop = asyncio.get_running_loop()

            def request_exit(code: int) -> None:  # from a thread or a signal handler
                try:
                    loop.call_soon_threadsafe(lambda: self.exit(return_code=code))
                except RuntimeError:  # the loop is closed: the app is gone already
                    pass

            self.lifeline.arm(request_exit)
        self.begin_capture_print(self, stdout=False, stderr=True)
        self.filter_box.display = False
        self.table.focus()
        self._show_log_state()
        if self._preloaded is not None:
            self._apply(*self._preloaded)
            self._preloaded = None
        # The poll worker's first check always says "changed": that is the first refresh,
        # read after the watcher took its first token, so no commit can fall in between.
        self._poll_worker()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Dashboard keys do nothing while a dialog (help, details, confirm, new) is open;
        the command palette runs its command after it has closed, so it is no dialog."""
        if action in DASHBOARD_ACTIONS:
            top = self.screen
            if top is not self.screen_stack[0] and not isinstance(top, CommandPalette):
                return False
        return True

    # -- reading -----------------------------------------------------------------------------

    def request_refresh(self) -> None:
        """Re-read what is shown: now if no refresh runs, else right after the one that does."""
        if self._refreshing:
            self._refresh_again = True
            return
        self._refresh_again = False
        offset, limit = self.table.wanted_window
        request = data.RefreshRequest(
            filter=self.filter,
            offset=offset,
            limit=limit,
            session_id=self.selected_id,
            after_log_id=self._last_log_id,
            log_generation=self._log_generation,
            after_event_id=self._last_event_id,
        )
        self._refreshing = True
        self._refresh_worker(request)

    @work(thread=True, group="poll", exit_on_error=False)
    def _poll_worker(self) -> None:
        """Every ``poll_interval``, in its own thread for the app's whole life: ask the
        watcher whether anything was committed, and whether the picture shown has aged
        (``data.Watch``); only then wake the event loop to re-read. The watcher's
        connection is used by this thread alone, and closed by it on the way out."""
        worker = get_current_worker()
        retries_seen = 0
        failing = False
        fired: data.Watch | None = None  # the watch that last asked for a re-read
        fired_at = pids_checked = 0.0
        wait = 0.0  # the first check at once: it is the first refresh
        try:
            while not self._stop_polling.wait(wait) and not worker.is_cancelled:
                wait = self.poll_interval
                try:
                    changed = self.watcher.changed()  # a commit after this is seen next time
                except Exception as exc:  # the store is away: say so, retry next poll
                    failing = True
                    self._deliver(self._report_store_error, exc)
                    continue
                retries = self._retries_asked
                due = changed or failing or retries != retries_seen
                failing, retries_seen = False, retries
                watch, now = self._watch, time.monotonic()
                if not due and watch is not fired and now - fired_at >= WATCH_MIN_GAP:
                    if watch.due(time.time()):
                        due = True
                    elif watch.pids and now - pids_checked >= PID_CHECK_EVERY:
                        pids_checked = now
                        due = watch.dead_pid()
                    if due:
                        fired, fired_at = watch, now
                if due:
                    self._deliver(self.request_refresh)
        finally:
            self.watcher.close()

    @work(thread=True, group="refresh", exit_on_error=False)
    def _refresh_worker(self, request: data.RefreshRequest) -> None:
        result: data.Refresh | None = None
        error: BaseException | None = None
        try:
            with self.ctx.factory() as db:
                result = data.load_refresh(db, request)
        except Exception as exc:  # database away, locked, broken: say so, keep the picture
            error = exc
        self._deliver(self._refreshed, request, result, error)

    def _deliver(self, callback: Callable[..., Any], *args: Any) -> None:
        """From a worker thread: run ``callback(*args)`` on the event loop, without waiting
        for it (and without complaint when the app is already closing)."""
        try:
            self.call_later(callback, *args)
        except RuntimeError:  # the event loop is closed: the app is gone
            pass

    def _refreshed(
        self,
        request: data.RefreshRequest,
        result: data.Refresh | None,
        error: BaseException | None,
    ) -> None:
        self._refreshing = False
        if error is not None:
            self._report_store_error(error)
        elif self._store_error is not None:
            self._store_error = None
            self.notify("the store is reachable again", timeout=3)
        if result is not None:
            self._apply(request, result)
        if self._refresh_again:
            self.request_refresh()

    def _report_store_error(self, exc: BaseException) -> None:
        """One notification when the store becomes unusable, not one per poll."""
        from store.engine import unavailable_message

        message = unavailable_message(exc, self.ctx.settings.database_url)
        if message != self._store_error:
            self._store_error = message
            self.notify(
                message, title="store unavailable", severity="error", timeout=8, markup=False
            )
        # No immediate retry (that would spin), but a re-read at the next poll: the change
        # the failed read was meant to show must not wait for the next commit.
        self._retries_asked += 1

    def _apply(self, request: data.RefreshRequest, result: data.Refresh) -> None:
        self._show_alerts(result)
        window = result.window
        self._watch = result.watch
        self.counts.set_counts(window.counts)
        if request.filter != self.filter:
            self._refresh_again = True  # the filter changed meanwhile: this window is stale
        else:
            self.table.empty_text = EMPTY_TEXT if window.counts.total == 0 else NO_MATCH_TEXT
            self.table.set_window(window.offset, window.rows, window.total)
        if request.session_id is None or request.session_id != self.selected_id:
            return
        self._show_detail(result.detail)
        if result.logs and request.log_generation == self._log_generation:
            if request.after_log_id is None:
                self.log_pane.more_older = len(result.logs) >= data.LOG_PAGE
            self.log_pane.append(result.logs)
            self._last_log_id = max(self._last_log_id or 0, result.logs[-1].id)

    def _show_alerts(self, result: data.Refresh) -> None:
        """Each session anywhere in the store that failed or reached a manual gate since
        the last refresh pops up once (refreshes run one at a time, each reading the events
        after the newest one the previous read)."""
        if result.last_event_id is None:
            return
        if self._last_event_id is not None and result.last_event_id <= self._last_event_id:
            return
        self._last_event_id = result.last_event_id
        for alert in result.alerts[:ALERTS_SHOWN]:
            failed = alert.kind == "failure"
            self.notify(
                alert.text,
                title=alert.title,
                severity="error" if failed else "warning",
                timeout=15 if failed else 10,
                markup=False,
            )
        more = len(result.alerts) - ALERTS_SHOWN
        if more > 0:
            self.notify(
                f"and {more} more sessions failed or reached a gate (filter with 5 or 3)",
                title="more alerts",
                severity="warning",
                timeout=15,
                markup=False,
            )

    def _show_detail(self, detail: data.Detail | None) -> None:
        self.stages.set_stages(detail.stages if detail else [])
        summary = detail.summary() if detail else ""
        if summary != self._summary_shown:  # an update lays the screen out again
            self._summary_shown = summary
            self.summary.update(Text(summary))
        self.summary.set_class(detail is None, "-none")
        for status in ("PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED"):
            self.summary.set_class(
                detail is not None and detail.status == status, f"-{status.lower()}"
            )
        self.summary.set_class(detail is not None and detail.orphaned, "-orphaned")

    @on(WindowRequested)
    def _window_requested(self, message: WindowRequested) -> None:
        """The table scrolled, resized or jumped to rows it does not hold."""
        self.request_refresh()

    @on(SessionHighlighted)
    def _highlighted(self, message: SessionHighlighted) -> None:
        """The cursor rests on another session (None: the table is empty): show its stages
        and log from scratch."""
        if message.session_id == self.selected_id:
            return
        self.selected_id = message.session_id
        self._log_generation += 1
        self._last_log_id = None
        self.log_pane.clear()
        self._show_detail(None)
        self.request_refresh()

    @on(OlderLogsRequested)
    def _older(self, message: OlderLogsRequested) -> None:
        if self.selected_id is not None:
            self._older_worker(self.selected_id, self._log_generation, message.before_id)

    @work(thread=True, group="older", exit_on_error=False)
    def _older_worker(self, sid: str, generation: int, before_id: int) -> None:
        try:
            with self.ctx.factory() as db:
                lines = data.load_older_logs(db, sid, before_id)
        except Exception as exc:
            self._deliver(self._report_store_error, exc)
            return
        self._deliver(self._show_older, generation, lines)

    def _show_older(self, generation: int, lines: list[Any]) -> None:
        if generation == self._log_generation:
            self.log_pane.prepend_older(lines, more=len(lines) >= data.LOG_PAGE)

    # -- operations --------------------------------------------------------------------------

    def _selected_row_name(self, sid: str) -> str:
        row = next((r for r in self.table.rows if r.id == sid), None)
        name = row.name if row is not None else sid[:12]
        if len(name) > QUESTION_NAME_CHARS:
            name = name[: QUESTION_NAME_CHARS - 1] + "…"
        return name

    def _operate(self, label: str, operation: Callable[..., str], *args: Any) -> None:
        """Run ``operation(ctx, *args)`` in a worker; the outcome becomes a notification."""
        self._operation_worker(label, operation, args)

    def _on_selected(
        self, label: str, operation: Callable[..., str], question: str | None = None
    ) -> None:
        """Run ``operation`` on the session under the cursor. That is the table's
        ``selected_id``, not ``self.selected_id``: the latter follows the cursor through a
        message, so a key typed right after a cursor move would act on the previous row."""
        sid = self.table.selected_id
        if sid is None:
            self.notify("no session selected", title=label, severity="warning")
            return
        if question is None:
            self._operate(label, operation, sid)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._operate(label, operation, sid)

        text = Text(question.format(name=self._selected_row_name(sid), id=sid[:12]))
        self.push_screen(ConfirmScreen(text, title=label.title()), answered)

    @work(thread=True, group="ops", exit_on_error=False)
    def _operation_worker(
        self, label: str, operation: Callable[..., str], args: tuple[Any, ...]
    ) -> None:
        from store.errors import StoreError
        from store.workflows import WorkflowError

        try:
            note = operation(self.ctx, *args)
        except (StoreError, WorkflowError) as exc:
            self._deliver(self._operation_done, f"{label} refused", str(exc), "warning")
        except operations.RunnerError as exc:
            self._deliver(self._operation_done, f"{label}: no runner", str(exc), "warning")
        except Exception as exc:
            self._deliver(
                self._operation_done, f"{label} failed", f"{type(exc).__name__}: {exc}", "error"
            )
        else:
            self._deliver(self._operation_done, label, note, "information")

    def _operation_done(self, title: str, message: str, severity: Any) -> None:
        from store.text import clean_text

        self.notify(
            clean_text(message),
            title=title,
            severity=severity,
            markup=False,
            timeout=4 if severity == "information" else 8,
        )
        self.request_refresh()

    def action_pause(self) -> None:
        self._on_selected("pause", operations.pause)

    def action_resume(self) -> None:
        self._on_selected("resume", operations.resume)

    def action_start(self) -> None:
        self._on_selected("start", operations.start)

    def action_retry(self) -> None:
        self._on_selected("retry", operations.retry)

    def action_abort(self) -> None:
        self._on_selected(
            "abort",
            operations.abort,
            "Abort session {name} ({id})? Its running stage is terminated.",
        )

    def action_delete(self) -> None:
        self._on_selected(
            "delete", operations.delete, "Delete session {name} ({id}) with its history and logs?"
        )

    def action_new_session(self) -> None:
        def chosen(choice: tuple[str, str | None, dict[str, str]] | None) -> None:
            if choice:
                self.notify(f"starting a session of {choice[0]}…", timeout=2, markup=False)
                self._operate("new session", operations.new_session, *choice)

        self.push_screen(NewSessionScreen(self.ctx.settings.workflows_dir), chosen)

    @on(SessionSelected)
    def _selected(self, message: SessionSelected) -> None:
        self.action_details()

    def action_details(self) -> None:
        sid = self.table.selected_id
        if sid is None:
            self.notify("no session selected", title="details", severity="warning")
            return
        self._details_worker(sid)

    @work(thread=True, group="details", exit_on_error=False)
    def _details_worker(self, sid: str) -> None:
        try:
            with self.ctx.factory() as db:
                text = data.details_text(db, sid)
        except Exception as exc:
            self._deliver(self._report_store_error, exc)
            return
        self._deliver(self._show_details, text)

    def _show_details(self, text: str | None) -> None:
        if text is None:
            self.notify("that session is gone", title="details", severity="warning")
        elif self.screen is self.screen_stack[0]:
            self.push_screen(DetailsScreen(text))

    # -- view --------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.filter_box.display = True
        self.filter_box.value = self.filter.text or ""
        self.filter_box.focus()

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.filter_box.display = False
        self._set_filter(text=event.value.strip() or None)
        self.table.focus()

    def action_clear_filter(self) -> None:
        if self.filter_box.display:
            self.filter_box.display = False
            self.table.focus()
        if self.filter.text:
            self._set_filter(text=None)

    def action_status_filter(self, status: str) -> None:
        if (status or None) != self.filter.status:
            self._set_filter(status=status or None)

    def _set_filter(self, **changes: Any) -> None:
        current = {"status": self.filter.status, "text": self.filter.text}
        current.update(changes)
        self.filter = SessionFilter(status=current["status"], text=current["text"])
        label = Text()
        if current["status"]:
            label.append(current["status"])
        if current["text"]:
            label.append(f"{' ' if label else ''}“{current['text']}”")
        self.filter_label.update(Text("filter: ") + label if label else Text())
        self.table.cursor_index = 0
        self.table.scroll_to(y=0, animate=False)
        self.request_refresh()

    def action_toggle_follow(self) -> None:
        self.log_pane.follow = not self.log_pane.follow

    def action_toggle_wrap(self) -> None:
        self.log_pane.wrap = not self.log_pane.wrap
        self._show_log_state()

    @on(FollowChanged)
    def _follow_changed(self, message: FollowChanged) -> None:
        """Follow switches off when the user scrolls up and on again at the bottom: the
        header says which, so a log that stopped moving is never a mystery."""
        self._show_log_state()

    def _show_log_state(self) -> None:
        self.log_state.update(
            Text(
                f"log: follow {'on' if self.log_pane.follow else 'off'}, "
                f"wrap {'on' if self.log_pane.wrap else 'off'}"
            )
        )

    def action_help(self) -> None:
        self.push_screen(HelpScreen(self.KEY_HELP, notes=self.HELP_NOTES))

    def on_print(self, event: events.Print) -> None:
        """Lines the shared code writes on stderr for the CLI ("vc: error: could not start a
        runner …", "vc: warning: cannot write log …") would vanish behind a full-screen
        app: each complete line becomes a notification instead."""
        from store.text import clean_text

        if not event.stderr:
            return
        self._stderr_buffer += event.text
        *lines, self._stderr_buffer = self._stderr_buffer.split("\n")
        for line in filter(None, (clean_text(raw).strip() for raw in lines)):
            error = line.startswith("vc: error:")
            self.notify(
                line.removeprefix("vc: error: ").removeprefix("vc: warning: "),
                title="error" if error else "warning",
                severity="error" if error else "warning",
                markup=False,
                timeout=10,
            )

    def on_unmount(self) -> None:
        self._stop_polling.set()  # the poll worker ends within one check, closing the watcher
