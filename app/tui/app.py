"""`vc flow tui`: the dashboard application.

The app holds what concerns the process: its one screen (:mod:`app.tui.dashboard`, which
reads the store through workers, :mod:`app.tui.store_link`), the keys that work over every
dialog (quit), lines printed on stderr turned into notifications, and the hooks of
:mod:`app.tui.lifeline` that make sure a dashboard process always ends.

The rules the dashboard keeps:

* The event loop never waits on the store: every read and write runs in a Textual thread
  worker that posts a message back.
* An answer for a filter or a session the user has already left is dropped.
* An idle dashboard costs next to nothing: one cheap change check every ``poll_interval``
  in a worker, nothing on the event loop until something changed, and re-reads asked for
  by the clock only when what is shown can age ("orphaned").
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from typing import Any, ClassVar

from textual import events
from textual.app import App
from textual.binding import BindingType
from textual.message import Message
from textual.messages import ExitApp
from textual.screen import Screen

from app.tui import keys
from app.tui.dashboard import DashboardScreen
from app.tui.lifeline import Lifeline
from app.tui.store_link import POLL_INTERVAL


class FlowApp(App[int]):
    """The dashboard over one store (``ctx`` is what ``app.context.open_context`` gives).

    ``poll_interval`` is how often the store is checked for changes; ``clock`` is the "now"
    the widgets show durations against (a fixed clock makes snapshots deterministic).
    """

    CSS_PATH = "app.tcss"
    TITLE = "vc flow"
    #: Below 120 columns app.tcss gives the stage names the room of the attempt and
    #: duration columns (the screen gets "-narrow").
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (120, "-wide")]
    BINDINGS: ClassVar[list[BindingType]] = list(keys.app_bindings())

    def __init__(
        self,
        ctx: Any,
        *,
        poll_interval: float = POLL_INTERVAL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        self.ctx = ctx
        self.dashboard = DashboardScreen(ctx, poll_interval=poll_interval, clock=clock)
        self._stderr_buffer = ""
        #: Makes sure this process ends (see app.tui.lifeline): exits held until the first
        #: frame, the end of stdin, SIGTERM and SIGHUP, a deadline on the way out.
        self.lifeline = Lifeline(lambda: App.post_message(self, ExitApp()))

    def get_default_screen(self) -> Screen[Any]:
        return self.dashboard

    def preload(self) -> None:
        """Read the first rows before the app starts (see ``DashboardScreen.preload``)."""
        self.dashboard.preload()

    def post_message(self, message: Message) -> bool:
        if isinstance(message, ExitApp) and self.lifeline.hold_exit():
            return True  # posted again after the first frame (see app.tui.lifeline)
        return super().post_message(message)

    def on_load(self) -> None:
        from app.tui.threads import DaemonThreads

        # before any worker starts: quitting never waits on a store write (app.tui.threads)
        asyncio.get_running_loop().set_default_executor(DaemonThreads())

    def on_ready(self) -> None:
        self.lifeline.first_frame()
        # What exists at the first frame (modules, classes, the screen and its widgets)
        # mostly lives as long as the app: kept out of the collector's full passes, which
        # walked all of it and held a key for 100-170 ms every few hundred frames. The
        # price: cycles among those objects that become garbage later (the first rows'
        # widgets, once replaced) wait for the app's end to be collected, a bounded amount
        # set at this moment. Given back to the collector when the app ends (a process may
        # run several, as tests do).
        gc.freeze()

    def on_unmount(self) -> None:
        gc.unfreeze()

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

    def action_interrupt(self) -> None:
        """Ctrl-C: quit, as ``q``, except in a text field. There it copies a selection (the
        field's own binding); with nothing selected the key reaches here, and quitting
        would throw away what was typed (a half-filled new session): say so instead.
        (How to leave differs: enter applies the filter, escape clears it or cancels the
        form.)"""
        from textual.widgets import Input, TextArea

        if isinstance(self.focused, Input | TextArea):
            self.notify(
                "in a text field ctrl+c copies the selected text; to quit, leave the field "
                "first, then press q or ctrl+c",
                title="ctrl+c",
                markup=False,
                timeout=4,
            )
            return
        self.exit()

    def on_print(self, event: events.Print) -> None:
        """Lines the shared code writes on stderr ("vc: warning: cannot write log …" from
        the log sinks, whatever a library prints) would vanish behind a full-screen app:
        each complete line becomes a notification instead. The dashboard's own outcomes
        (a runner that did not start among them) never take this way: they are results
        (``OperationDone``)."""
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


__all__ = ["FlowApp"]
