"""The dashboard's one screen: the sessions table on top, the selected session's stages on
the left and its log on the right; a header with counts per status and a footer with the
keys.

The screen composes presentation-only widgets: they post messages up (the table wants
other rows, the cursor moved, the log wants older lines) and get plain data down
(``set_window``, ``set_stages``, ``append``). What it shows is decided by three reactives
whose watchers act: :attr:`DashboardScreen.filter`, :attr:`DashboardScreen.selected_id`
and the store's error (:class:`app.tui.store_link.StoreLink`, which also runs the
workers). Each read starts from a frozen ``RefreshRequest`` taken here, so an answer for a
filter or a session the user has left is recognised and dropped.

Every operation is a row of :data:`app.tui.keys.KEYS` running one function of
``app.tui.operations`` (one manager call); a refusal is shown as a notification carrying
the manager's own message, and nothing else happens. Text users or stages wrote is never
parsed as markup: widgets get ``Text`` or plain data, notifications ``markup=False``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any, ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.command import CommandPalette
from textual.containers import Horizontal, Vertical
from textual.reactive import var
from textual.widgets import Footer, Input, Static

from app.tui import data, keys
from app.tui.alerts import AlertPopups
from app.tui.commands import OperationsProvider
from app.tui.messages import (
    DetailsLoaded,
    OlderLogsLoaded,
    OperationDone,
    Refreshed,
    StoreChanged,
)
from app.tui.screens import DetailsScreen, NewSession, NewSessionScreen
from app.tui.store_link import POLL_INTERVAL, StoreLink
from store.queries import SessionFilter
from widgets.confirm import ConfirmScreen
from widgets.counts import StatusCountsBar
from widgets.data import SessionRow
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
from widgets.summary import SessionSummary

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

#: Refreshes that may come back without the session to select before it is given up.
SELECT_TRIES = 3
#: The most characters of the text filter the header shows.
FILTER_SHOWN = 24
#: Columns from which the header says the log pane's state in full.
WIDE_HEADER = 100

FIRST_ROWS = 100
"""Rows read before the app starts (:meth:`DashboardScreen.preload`): more than a tall
terminal shows."""


class DashboardScreen(StoreLink):
    """The dashboard over one store (``ctx`` as ``app.context.open_context`` gives it);
    ``clock`` is the "now" the widgets show durations against (a fixed one makes
    snapshots deterministic)."""

    BINDINGS: ClassVar[list[BindingType]] = list(keys.screen_bindings())
    COMMANDS = {OperationsProvider}

    filter: var[SessionFilter] = var(SessionFilter, init=False)
    """Which sessions the table lists."""

    selected_id: var[str | None] = var(None, init=False)
    """The session whose stages and log are shown: the one under the cursor, once the
    table knows it (None: the table is empty)."""

    def __init__(
        self,
        ctx: Any,
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(ctx, poll_interval=poll_interval)
        self.clock = clock
        self._preloaded: Refreshed | None = None
        self._last_log_id: int | None = None
        #: The log pane is full and its reader scrolled up (follow off): newer lines are not
        #: read, so that none of those being read is dropped to make room; following again
        #: jumps to the newest.
        self._logs_held = False
        #: The newest event looked at for alerts (failures and gates anywhere in the store).
        self._last_event_id: int | None = None
        self.alerts = AlertPopups(self)
        self._log_generation = 0
        #: A session to put the cursor on once a refresh shows it (see _select_if_shown).
        self._select_when_shown: str | None = None
        self._select_tries = 0
        #: The session to select is the one selected before a filter change: the cursor
        #: goes to the top if the new filter's first rows do not hold it.
        self._top_unless_shown = False

    # -- layout ----------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        self.table = SessionTable(id="sessions", empty_text=EMPTY_TEXT, clock=self.clock)
        self.stages = StageList(id="stages", clock=self.clock)
        self.summary = SessionSummary(id="session-summary")
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

    def preload(self, rows: int = FIRST_ROWS) -> None:
        """Read the first window before the app starts (the launcher calls this): the
        first paint then has its rows at once, instead of waiting for a worker whose
        queries compete with Textual's start-up for the GIL. Nothing runs on the event
        loop; a failure just leaves it to the first refresh."""
        request = self._request(0, rows)
        try:
            with self.ctx.factory() as db:
                self._preloaded = Refreshed(request, data.load_refresh(db, request))
        except Exception:
            self._preloaded = None

    def on_mount(self) -> None:
        self.filter_box.display = False
        self.table.focus()
        self._show_log_state()
        if self._preloaded is not None:
            self._show_refresh(self._preloaded)
            self._preloaded = None
        self.poll_store()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """The dashboard's keys are off while a dialog covers it (the footer under the
        dialog hides them too); the command palette runs its command as it closes, so it
        is no dialog."""
        if action == "filter" and self.focused is self.filter_box:
            return False  # a `/` typed into the filter is text (`/` binds with priority)
        top = self.app.screen
        return top is self or isinstance(top, CommandPalette)

    # -- reading ---------------------------------------------------------------------------

    def _request(self, offset: int, limit: int) -> data.RefreshRequest:
        return data.RefreshRequest(
            filter=self.filter,
            offset=offset,
            limit=limit,
            session_id=self.selected_id,
            after_log_id=self._last_log_id,
            log_generation=self._log_generation,
            after_event_id=self._last_event_id,
            read_logs=not self._logs_held,
        )

    def request_refresh(self) -> None:
        """Read again what is shown now: the table's window, the selected session's stages
        and its new log lines. While a session the form made waits to be selected, the
        window read is the top of the table, where the newest session is, wherever the
        table is scrolled (it scrolls there once the session is found)."""
        offset, limit = self.table.wanted_window
        if self._select_when_shown is not None:
            offset = 0
        self.read_refresh(self._request(offset, limit))

    @on(StoreChanged)
    def _store_changed(self) -> None:
        self.request_refresh()

    @on(WindowRequested)
    def _window_requested(self) -> None:
        """The table scrolled, resized or jumped to rows it does not hold."""
        self.request_refresh()

    @on(Refreshed)
    def _refreshed(self, message: Refreshed) -> None:
        self.store_error = None
        self._show_refresh(message)

    def _show_refresh(self, answer: Refreshed) -> None:
        request, result = answer.request, answer.result
        self._show_alerts(result)
        window = result.window
        self.expect(result.watch)
        self.counts.set_counts(window.counts)
        if request.filter == self.filter:
            self.table.empty_text = EMPTY_TEXT if window.counts.total == 0 else NO_MATCH_TEXT
            self.table.set_window(window.offset, window.rows, window.total)
            self._select_if_shown(window.offset, window.rows)
        if request.session_id is None or request.session_id != self.selected_id:
            return
        self._show_detail(result.detail)
        if result.logs and request.log_generation == self._log_generation:
            if request.after_log_id is None:
                self.log_pane.more_older = len(result.logs) >= data.LOG_PAGE
            logs = result.logs
            if not self.log_pane.follow:  # a reader: no line of theirs is dropped for room
                room = max(0, self.log_pane.max_lines - self.log_pane.line_count)
                if len(logs) > room:
                    logs = logs[:room]
                    self._logs_held = True
                    self._show_log_state()
            if logs:
                self.log_pane.append(logs)
                self._last_log_id = max(self._last_log_id or 0, logs[-1].id)
            if (
                not self._logs_held
                and request.after_log_id is not None
                and len(result.logs) >= data.NEW_LOGS_LIMIT
            ):
                self._catch_up()

    def _catch_up(self) -> None:
        """A refresh brought as many new lines as one reads: more wait (a stage printed a
        burst), and no refresh may come until the store changes again. Following, the
        pane jumps to the newest lines (those in between are a page up away, as after a
        new selection); scrolled up, the next lines are read at once."""
        if self.log_pane.follow:
            self._restart_log()
        self.request_refresh()

    def _restart_log(self) -> None:
        """Read the log from its newest lines again: a new generation, so that an answer
        to an older request is dropped, and an empty pane (following)."""
        self._log_generation += 1
        self._last_log_id = None
        self._logs_held = False
        self.log_pane.clear()

    def _select_if_shown(self, offset: int, rows: Sequence[SessionRow]) -> None:
        """The cursor goes to the session a new-session form just made, once a refresh
        shows it (a filter that hides it leaves the cursor where it was)."""
        wanted = self._select_when_shown
        if wanted is None:
            return
        index = next((i for i, row in enumerate(rows) if row.id == wanted), None)
        if index is not None:
            self._select_when_shown, self._top_unless_shown = None, False
            self.table.move_cursor(offset + index)
            return
        self._select_tries += 1  # a read begun before it was made, or a window elsewhere
        if self._select_tries >= SELECT_TRIES:
            self._select_when_shown = None
            if self._top_unless_shown:
                self._top_unless_shown = False
                self.table.move_cursor(0)

    def _show_alerts(self, result: data.Refresh) -> None:
        """Each session anywhere in the store that failed or reached a manual gate since
        the last refresh pops up once (reads run one at a time, each reading the events
        after the newest one the previous read)."""
        if result.last_event_id is None:
            return
        if self._last_event_id is not None and result.last_event_id <= self._last_event_id:
            return
        self._last_event_id = result.last_event_id
        self.alerts.add(result.alerts)

    def _show_detail(self, detail: data.Detail | None) -> None:
        if detail is None:
            self.stages.set_stages([])
            self.summary.show(None)
            return
        self.stages.set_stages(detail.stages)
        self.summary.show(detail.summary(), detail.status, detail.orphaned)

    @on(SessionHighlighted)
    def _highlighted(self, message: SessionHighlighted) -> None:
        self.selected_id = message.session_id

    def watch_selected_id(self) -> None:
        """Another session under the cursor: its stages and log from scratch."""
        self._restart_log()
        self._show_detail(None)
        self.request_refresh()

    @on(OlderLogsRequested)
    def _older_wanted(self, message: OlderLogsRequested) -> None:
        if self.selected_id is not None:
            self.read_older_logs(self.selected_id, self._log_generation, message.before_id)

    @on(OlderLogsLoaded)
    def _older_loaded(self, message: OlderLogsLoaded) -> None:
        if message.generation == self._log_generation:
            self.log_pane.prepend_older(message.lines, more=len(message.lines) >= data.LOG_PAGE)

    # -- operations ------------------------------------------------------------------------

    def action_operate(self, name: str) -> None:
        """Run operation ``name`` of the keys table on the session under the cursor. That
        is the table's ``selected_id``, not ours: ours follows the cursor through a
        message, so a key typed right after a cursor move would act on the previous row."""
        key = keys.OPERATIONS[name]
        run = key.run
        assert run is not None
        session_id = self.table.selected_id
        if session_id is None:
            self.notify("no session selected", title=name, severity="warning")
            return
        question = keys.confirm_question(key, self._row_name(session_id), session_id)
        if question is None:
            args: tuple[str | None, ...] = (session_id,)
            if name == "approve" and self.stages.has_focus and self.selected_id == session_id:
                row = self.stages.cursor_row  # with several gates waiting: the one chosen
                args = (session_id, row.name if row is not None else None)
            self.run_operation(name, run, args)
            return
        refused = self._refused_as_shown(name, session_id)
        if refused is not None:  # no question for what cannot happen
            self.notify(refused, title=f"{name} refused", severity="warning", markup=False)
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self.run_operation(name, run, (session_id,))

        self.app.push_screen(ConfirmScreen(Text(question), title=name.title()), answered)

    def _refused_as_shown(self, name: str, session_id: str) -> str | None:
        """Why operation ``name`` cannot apply to the session as its row shows it (the
        state table's refusal), or None. The store still decides: this only spares a
        question whose "yes" could only be refused."""
        from store.records import refusal
        from store.status import SessionOp, SessionStatus, allowed_session_ops

        row = next((r for r in self.table.rows if r.id == session_id), None)
        if row is None:
            return None
        if name not in allowed_session_ops(row.status):
            return str(refusal(session_id, SessionOp(name), row.status, reason=row.reason))
        live_runner = row.host is not None and not row.orphaned and not row.queued
        if name == "delete" and row.status == SessionStatus.ACTIVE and live_runner:
            return (
                f"cannot delete session {session_id[:12]}: it is ACTIVE with a live runner; "
                "pause or abort it first"
            )
        return None

    def _row_name(self, session_id: str) -> str:
        row = next((r for r in self.table.rows if r.id == session_id), None)
        name = row.name if row is not None else session_id[:12]
        if len(name) > QUESTION_NAME_CHARS:
            name = name[: QUESTION_NAME_CHARS - 1] + "…"
        return name

    def action_new_session(self) -> None:
        from app.tui import operations

        def chosen(choice: NewSession | None) -> None:
            if choice:
                self.notify(f"starting a session of {choice[0]}…", timeout=2, markup=False)
                self.run_operation("new session", operations.new_session, choice)

        self.app.push_screen(NewSessionScreen(self.ctx.settings.workflows_dir), chosen)

    @on(OperationDone)
    def _operation_done(self, message: OperationDone) -> None:
        from store.text import clean_text

        self.notify(
            clean_text(message.text),
            title=message.title,
            severity=message.severity,
            markup=False,
            timeout=message.timeout or (4 if message.severity == "information" else 8),
        )
        if message.select is not None:
            self._select_when_shown, self._select_tries = message.select, 0
            self._top_unless_shown = False
        self.request_refresh()

    @on(SessionSelected)
    def _chosen(self) -> None:
        self.action_details()

    def action_details(self) -> None:
        session_id = self.table.selected_id
        if session_id is None:
            self.notify("no session selected", title="details", severity="warning")
            return
        self.read_details(session_id)

    @on(DetailsLoaded)
    def _details_loaded(self, message: DetailsLoaded) -> None:
        if message.text is None:
            self.notify("that session is gone", title="details", severity="warning")
        elif self.app.screen is self:
            self.app.push_screen(DetailsScreen(message.text))

    # -- view ------------------------------------------------------------------------------

    def action_filter(self) -> None:
        self.filter_box.display = True
        self.filter_box.value = self.filter.text or ""
        # At once, not on the next turn as ``focus()`` does: the keys read together with
        # the `/` (a paste, fast typing) come next and must reach the box, never the
        # dashboard's bindings (a `p` in the text would pause the session). `/` is a
        # priority binding for the same reason (keys.py).
        self.set_focus(self.filter_box)

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.filter_box.display = False
        self.filter = replace(self.filter, text=event.value.strip() or None)
        self.table.focus()

    def action_clear_filter(self) -> None:
        if self.filter_box.display:
            self.filter_box.display = False
            self.table.focus()
        self.filter = replace(self.filter, text=None)

    def action_status_filter(self, status: str) -> None:
        self.filter = replace(self.filter, status=status or None)

    def watch_filter(self, shown: SessionFilter) -> None:
        """Another filter: say which in the header, list its sessions from the top, the
        cursor staying on the selected session if the new filter's first rows hold it."""
        label = Text()
        if shown.status:
            label.append(shown.status)
        if shown.text:
            from store.text import clean_text

            text = clean_text(shown.text)  # the header keeps its counts: a long one is cut
            if len(text) > FILTER_SHOWN:
                text = text[: FILTER_SHOWN - 1] + "…"
            label.append(f"{' ' if label else ''}“{text}”")
        self.filter_label.update(Text("filter: ") + label if label else Text())
        keep = self.table.selected_id
        if keep is None:
            self.table.cursor_index = 0
        else:  # one look: the first answer under the new filter
            self._select_when_shown, self._select_tries = keep, SELECT_TRIES - 1
            self._top_unless_shown = True
        self.table.scroll_to(y=0, animate=False)
        self.request_refresh()

    def action_toggle_follow(self) -> None:
        self.log_pane.follow = not self.log_pane.follow

    def action_toggle_wrap(self) -> None:
        self.log_pane.wrap = not self.log_pane.wrap
        self._show_log_state()

    @on(FollowChanged)
    def _follow_changed(self) -> None:
        """Follow switches off when the user scrolls up and on again at the bottom: the
        header says which, so a log that stopped moving is never a mystery. Following
        again after lines were held jumps to the newest (those held are a page up away)."""
        if self.log_pane.follow and self._logs_held:
            self._restart_log()
            self.request_refresh()
        self._show_log_state()

    def _show_log_state(self) -> None:
        """``log: follow on (f), wrap off (w)``; below :data:`WIDE_HEADER` columns a
        short form (``log f:on w:off``), which leaves the counts their room."""
        follow = "on" if self.log_pane.follow else "off"
        wrap = "on" if self.log_pane.wrap else "off"
        if self.size.width and self.size.width < WIDE_HEADER:
            held = " held" if self._logs_held else ""
            self.log_state.update(Text(f"log f:{follow}{held} w:{wrap}"))
            return
        held = ", newer lines held" if self._logs_held else ""
        self.log_state.update(Text(f"log: follow {follow} (f){held}, wrap {wrap} (w)"))

    def on_resize(self) -> None:
        self._show_log_state()

    def action_help(self) -> None:
        self.app.push_screen(HelpScreen(keys.help_lines(), notes=keys.HELP_NOTES))


__all__ = ["EMPTY_TEXT", "NO_MATCH_TEXT", "DashboardScreen"]
