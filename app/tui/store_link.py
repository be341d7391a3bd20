"""The dashboard screen's link to the store: every read and write runs in a Textual thread
worker that posts a message (:mod:`app.tui.messages`) and touches nothing else.

Threads, because the store's calls block (SQLite's busy timeout, a PostgreSQL server gone
away) and the event loop must never wait on them. What a worker needs to know (the filter,
the rows shown, the selected session) it is handed as a frozen request made on the event
loop, so the workers and the screen share nothing but messages.

* **Change detection** is one long-lived worker: every ``poll_interval`` it asks the
  store's ``ChangeWatcher`` whether anything was committed (``PRAGMA data_version`` on
  SQLite, microseconds; one aggregate query elsewhere) and posts ``StoreChanged`` only
  then. An idle dashboard costs that query in a thread and nothing on the event loop.
* **Refreshes** are exclusive: a new request cancels those still waiting, and they read
  one at a time. A refresh that has begun reading is not thrown away when a newer one is
  asked for: it finishes and posts its answer. Dropping it instead would show nothing at
  all while changes come faster than a read takes (a busy store, a slow server). Answers
  therefore arrive in order, and the screen ignores what answers a filter or session the
  user has left.
* **Details and older log lines** are exclusive in groups of their own: only the latest
  request counts. **Operations** are not: two keys pressed are two operations.
* **A read that fails** ends its worker in the ERROR state. The one handler of that
  state sets :attr:`StoreLink.store_error` (its watcher notifies once when the store
  becomes unusable and once when it answers again) and reads again after
  ``poll_interval``, so the change the failed read was to show does not wait for the next
  commit, and a store that stays away costs one attempt per interval.
* **"Orphaned" changes with time alone**: a runner's heartbeat growing stale, or a runner
  on this host dying, commits nothing. Each refresh says when that can next happen
  (``data.Watch``); :meth:`StoreLink.expect` sets a timer for that moment, and checks the
  local runners' pids once a second while there are any, instead of a blind periodic
  re-read of 100,000 sessions' counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from textual import work
from textual.notifications import SeverityLevel
from textual.reactive import var
from textual.screen import Screen
from textual.timer import Timer
from textual.worker import Worker, WorkerState, get_current_worker

from app.tui import data, operations
from app.tui.keys import Operation
from app.tui.messages import (
    DetailsLoaded,
    OlderLogsLoaded,
    OperationDone,
    Refreshed,
    StoreChanged,
)

POLL_INTERVAL = 0.25
"""Seconds between change checks: a change by any process shows well within 1 s."""

WATCH_MIN_GAP = 1.0
"""Seconds between two re-reads asked for by the clock alone: a bound, should a deadline
stay in the past, on what a dashboard nobody touches can cost."""

PID_CHECK_EVERY = 1.0
"""Seconds between checks that the local runners of the sessions shown are alive."""

READ_TURN_CHECK = 0.05
"""Seconds between two looks at its cancellation while a refresh waits for its turn: a
superseded refresh gives its thread back to the pool within that."""


class StoreLink(Screen[None]):
    """A screen whose store work runs in workers; the dashboard screen is one.

    A subclass provides :meth:`request_refresh` (what a refresh reads depends on what it
    shows) and handles the messages the workers post.
    """

    store_error: var[str | None] = var(None, init=False)
    """Why the store cannot be used now (its own words), None while it answers."""

    def __init__(self, ctx: Any, *, poll_interval: float = POLL_INTERVAL) -> None:
        super().__init__()
        self.ctx = ctx
        self.poll_interval = poll_interval
        self._reading = threading.Lock()
        self._watch = data.Watch()
        self._deadline: Timer | None = None
        self._pid_check: Timer | None = None
        self._clock_reread_at = -WATCH_MIN_GAP
        self._operations_lock = threading.Lock()
        self._operations_running: list[str] = []

    def request_refresh(self) -> None:
        """Read again what is shown (the subclass knows what that is)."""
        raise NotImplementedError

    # -- workers ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, group="watch", exit_on_error=False)
    def poll_store(self) -> None:
        """For the screen's whole life: post ``StoreChanged`` whenever something was
        committed. The first check always says so (that is the first refresh, read after
        the watcher took its first token, so no commit can fall in between). The
        watcher's connection is used by this thread alone and closed by it."""
        from store.watch import ChangeWatcher

        worker = get_current_worker()
        watcher = ChangeWatcher(self.ctx.engine)
        try:
            while not worker.is_cancelled:
                if watcher.changed():
                    self.post_message(StoreChanged())
                if worker.cancelled_event.wait(self.poll_interval):
                    break
        finally:
            watcher.close()

    @work(thread=True, exclusive=True, group="refresh", exit_on_error=False)
    def read_refresh(self, request: data.RefreshRequest) -> None:
        """Read what ``request`` asks for and post it as ``Refreshed``."""
        worker = get_current_worker()
        if not self._take_read_turn(worker):
            return
        try:
            with self.ctx.factory() as db:
                result = data.load_refresh(db, request)
            self.post_message(Refreshed(request, result))
        finally:
            self._reading.release()

    def _take_read_turn(self, worker: Worker[None]) -> bool:
        """Wait until no other refresh reads; False if this one was superseded first."""
        while not self._reading.acquire(timeout=READ_TURN_CHECK):
            if worker.is_cancelled:
                return False
        if worker.is_cancelled:
            self._reading.release()
            return False
        return True

    @work(thread=True, exclusive=True, group="older-logs", exit_on_error=False)
    def read_older_logs(self, session_id: str, generation: int, before_id: int) -> None:
        with self.ctx.factory() as db:
            lines = data.load_older_logs(db, session_id, before_id)
        self.post_message(OlderLogsLoaded(generation, lines))

    @work(thread=True, exclusive=True, group="details", exit_on_error=False)
    def read_details(self, session_id: str) -> None:
        with self.ctx.factory() as db:
            text = data.details_text(db, session_id)
        self.post_message(DetailsLoaded(session_id, text))

    @work(thread=True, group="operations", exit_on_error=False)
    def run_operation(self, name: str, operation: Operation, args: Sequence[Any]) -> None:
        """Run ``operation(ctx, *args)``; how it ended is posted as ``OperationDone``.
        Its refusals and failures are its outcome, not the store's error: the user asked
        for it and is told why it did not happen."""
        from store.errors import StoreError
        from store.workflows import WorkflowError

        severity: SeverityLevel = "information"
        title = name
        select: str | None = None
        with self._operations_lock:
            self._operations_running.append(name)
        try:
            done = operation(self.ctx, *args)
            if isinstance(done, operations.Done):
                if done.error is not None:  # said first, as it happened first
                    self.post_message(OperationDone("error", done.error, "error", timeout=10))
                text, select = done.note, done.select
            else:
                text = done
        except (StoreError, WorkflowError) as exc:
            title, text, severity = f"{name} refused", str(exc), "warning"
        except operations.RunnerError as exc:
            title, text, severity = f"{name}: no runner", str(exc), "warning"
        except Exception as exc:  # the store failing under it (locked, gone away)
            from app.console import failure

            said = failure(exc)  # the CLI's line for the same failure
            text = said[0] if said is not None else f"{type(exc).__name__}: {exc}"
            title, severity = f"{name} failed", "error"
        finally:
            with self._operations_lock:
                self._operations_running.remove(name)
        if severity == "information" and self.ctx.logging is not None:
            # what the operation logged besides its change (a runner started, a process
            # stopped) in the store by the time its note shows, not at the mirror's next
            # turn (the change's own records were committed with it: store.changes)
            self.ctx.logging.flush(timeout=5.0)
        self.post_message(OperationDone(title, text, severity, select=select))

    def unfinished_operations(self) -> list[str]:
        """The operations still running (waiting on the store), which quitting abandons
        (app.tui.threads)."""
        with self._operations_lock:
            return list(self._operations_running)

    # -- failures --------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """The one handler of failed reads: the store's error is shown, and read again."""
        if event.state is not WorkerState.ERROR or event.worker.error is None:
            return
        from store.engine import unavailable_message

        self.store_error = unavailable_message(event.worker.error, self.ctx.settings.database_url)
        if event.worker.group == "watch":
            self.set_timer(self.poll_interval, self._watch_again)
        else:
            self.set_timer(self.poll_interval, self.request_refresh)

    def _watch_again(self) -> None:
        self.poll_store()

    def watch_store_error(self, before: str | None, now: str | None) -> None:
        if now is not None:
            self.notify(now, title="store unavailable", severity="error", timeout=8, markup=False)
        elif before is not None:
            self.notify("the store is reachable again", timeout=3)

    # -- the clock -------------------------------------------------------------------------

    def expect(self, watch: data.Watch) -> None:
        """Read again when what a refresh showed can change with nothing committed: at
        ``watch``'s heartbeat deadline, and as soon as one of its local runners dies."""
        if watch == self._watch:
            return  # the timers set for it still run
        self._watch = watch
        if self._deadline is not None:
            self._deadline.stop()
            self._deadline = None
        if watch.stale_at is not None:
            delay = max(
                watch.stale_at - time.time(),
                self._clock_reread_at + WATCH_MIN_GAP - time.monotonic(),
                0.0,
            )
            self._deadline = self.set_timer(delay, self._reread_for_clock)
        if watch.pids and self._pid_check is None:
            self._pid_check = self.set_interval(PID_CHECK_EVERY, self._check_pids)
        elif not watch.pids and self._pid_check is not None:
            self._pid_check.stop()
            self._pid_check = None

    def _check_pids(self) -> None:
        """Microseconds per pid, no store: ``kill(pid, 0)`` and its /proc entry."""
        if time.monotonic() - self._clock_reread_at >= WATCH_MIN_GAP and self._watch.dead_pid():
            self._reread_for_clock()

    def _reread_for_clock(self) -> None:
        self._deadline = None
        self._clock_reread_at = time.monotonic()
        self.request_refresh()


__all__ = ["PID_CHECK_EVERY", "POLL_INTERVAL", "WATCH_MIN_GAP", "StoreLink"]
