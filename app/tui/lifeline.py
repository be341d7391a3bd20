"""A dashboard process always ends: when asked to, when its terminal or browser is gone, and
even when Textual is stuck on the way out.

Three behaviours of Textual (8.2) made `vc flow tui` a process that could not exit; each is
worked around here rather than patched in Textual:

* **An exit before the first frame, with a resize in flight, never finishes.** When the
  exit reaches the app before its screen was first laid out while two terminal sizes are
  still on their way (textual-serve sends the browser's size and then "quit" when a tab is
  resized and closed at once; the web driver's own start-up size arrives after both),
  the app closes its queue with a stale size and, in the batch mode its shutdown starts,
  the default screen posts itself Resize events that flip between the two sizes forever:
  the event loop runs at full speed and the app never finishes exiting. The web driver's
  SIGTERM handler only posts another exit to that closed app, so SIGTERM looked ignored.
  Workaround: an exit asked for before the first frame is held until that frame
  (:meth:`Lifeline.hold_exit`, :meth:`Lifeline.first_frame`), which takes milliseconds.
* **End of input is not noticed.** The Linux driver's input thread loops at full speed
  once its stdin is at its end (a pty whose master closed without hanging us up, a pipe
  whose writer closed, /dev/null): select() says "readable" and read() returns nothing,
  for the app's whole life. The web driver ends its input thread there but tells the app
  nothing, so a dashboard outlived the textual-serve server that fed it. Workaround: a
  thread of ours waits for the hang-up of stdin (``poll`` with no events asked: it wakes
  only on POLLHUP, POLLERR or POLLNVAL, so it costs nothing meanwhile) and asks the app to
  exit; input that is at its end from the start (a file, /dev/null) is seen at once.
* **SIGTERM and SIGHUP killed a terminal dashboard outright** (Textual installs no handler
  for them on Linux), so `--demo` never stopped its sessions when its terminal closed.
  Both now ask the app to exit like `q`, with the exit code a shell gives a process
  killed by that signal (128 + the signal's number).

Whatever asked for the exit, if the app has not finished exiting :data:`EXIT_DEADLINE`
seconds later the process unwinds with SystemExit raised in its main thread (the
cleanups of the launcher, such as stopping a throw-away demo, still run), and
:data:`KILL_DEADLINE` seconds after that it ends with ``os._exit``.

The watch is armed only for a real terminal or browser (the app's ``on_mount`` when the app
is not headless): Pilot tests run with whatever stdin pytest has.
"""

from __future__ import annotations

import os
import select
import signal
import stat
import sys
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

EXIT_DEADLINE = 5.0
"""Seconds an exit may take before the main thread is made to unwind."""

KILL_DEADLINE = 2.0
"""Further seconds before the process ends without unwinding."""

HOLD_LIMIT = 1.0
"""Seconds an early exit waits for the first frame: a screen of size zero is never laid
out, and the exit must not wait for it forever."""

INPUT_CLOSED = "the dashboard's input closed (its terminal or pipe is gone)"
INPUT_AT_END = (
    "the dashboard's input is at its end (stdin is a file or /dev/null): run it in a terminal"
)

INPUT_CLOSED_EXIT = 1


class Lifeline:
    """One per dashboard app. ``post_exit`` posts Textual's exit message to the app,
    bypassing the hold (the app's own ``post_message``)."""

    def __init__(self, post_exit: Callable[[], object]) -> None:
        self._post_exit = post_exit
        # Re-entrant: the signal handler may run while the main thread holds it.
        self._lock = threading.RLock()
        self._drawn = False
        self._held = False
        self._exit_asked_at: float | None = None
        self._deadline_started = False
        self._armed = False
        self._disarmed = threading.Event()
        self._forcing = False
        self._exit_code = 0
        self._request: Callable[[int], None] | None = None
        #: Why the dashboard ended on its own (input closed), for the launcher to print.
        self.reason: str | None = None

    # -- the hold: no exit before the first frame -------------------------------------------

    def hold_exit(self) -> bool:
        """An exit message is being posted: True to hold it back (no frame drawn yet). Any
        thread. Every exit, held or not, starts the deadline."""
        with self._lock:
            self._exit_started()
            if self._drawn:
                return False
            if not self._held:
                self._held = True
                timer = threading.Timer(HOLD_LIMIT, self._release)
                timer.daemon = True
                timer.start()
            return True

    def first_frame(self) -> None:
        """The screen was laid out for the first time (Textual's Ready event)."""
        self._release()

    def _release(self) -> None:
        with self._lock:
            self._drawn = True
            held, self._held = self._held, False
        if held:
            self._post_exit()

    # -- arming: signals, stdin, the deadline -----------------------------------------------

    def arm(self, request_exit: Callable[[int], None]) -> None:
        """Watch stdin and take SIGTERM and SIGHUP; ``request_exit(code)`` must be safe to
        call from any thread and from a signal handler (``loop.call_soon_threadsafe``).
        Call from the main thread, once the driver has started (it installs its own
        handlers first)."""
        self._request = request_exit
        with self._lock:
            self._armed = True
            self._start_deadline()  # an exit asked for before the app was mounted
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        if _input_at_end(sys.__stdin__):
            self._input_gone(INPUT_AT_END)
            return
        threading.Thread(target=self._watch_input, name="vc-input-watch", daemon=True).start()

    def disarm(self) -> None:
        """The app has returned: the launcher's own cleanup (stopping a throw-away demo)
        is not hurried, and SIGTERM or SIGHUP meanwhile is ignored: the process is already
        on its way out."""
        self._disarmed.set()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._disarmed.is_set():
            return
        if self._forcing:  # the deadline passed: unwind from wherever the main thread is
            raise SystemExit(self._exit_code or 1)
        self._ask(128 + signum)

    def _watch_input(self) -> None:
        fd = sys.__stdin__.fileno() if sys.__stdin__ is not None else 0
        poller = select.poll()
        poller.register(fd, 0)  # no event asked: only POLLHUP, POLLERR, POLLNVAL wake it
        while not self._disarmed.is_set():
            try:
                if poller.poll(500):
                    break
            except InterruptedError:
                continue
            except OSError:
                break
        else:
            return
        self._input_gone(INPUT_CLOSED)

    def _input_gone(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self._ask(INPUT_CLOSED_EXIT)

    def _ask(self, code: int) -> None:
        with self._lock:
            first = self._exit_asked_at is None
            if first or not self._exit_code:
                self._exit_code = code
            self._exit_started()
        if first and self._request is not None:
            self._request(code)

    def _exit_started(self) -> None:
        """An exit was asked for (the caller holds the lock): start the deadline."""
        if self._exit_asked_at is None:
            self._exit_asked_at = time.monotonic()
        self._start_deadline()

    def _start_deadline(self) -> None:
        """Once armed and asked to exit (in either order), once (under the lock)."""
        if self._armed and self._exit_asked_at is not None and not self._deadline_started:
            self._deadline_started = True
            threading.Thread(target=self._deadline, name="vc-exit-deadline", daemon=True).start()

    def _deadline(self) -> None:
        if self._disarmed.wait(EXIT_DEADLINE):
            return
        self._forcing = True
        try:
            os.write(2, b"vc: error: the dashboard did not stop in time; ending it\n")
        except OSError:
            pass
        main = threading.main_thread().ident
        if main is not None:
            try:  # a real signal: it also interrupts a main thread blocked in a lock
                signal.pthread_kill(main, signal.SIGTERM)
            except (OSError, ValueError):
                pass
        if self._disarmed.wait(KILL_DEADLINE):
            return
        os._exit(self._exit_code or 1)


def _input_at_end(stream: Any) -> bool:
    """True when stdin can never deliver a key: a regular file or a character device that
    is not a terminal (/dev/null). A closed stdin counts as well."""
    if stream is None:
        return True
    try:
        fd = stream.fileno()
        mode = os.fstat(fd).st_mode
    except (OSError, ValueError):
        return True
    if stat.S_ISREG(mode):
        return True
    return stat.S_ISCHR(mode) and not os.isatty(fd)
