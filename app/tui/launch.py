"""Starting the dashboard in this terminal (`vc flow tui`; Textual is imported only here,
on demand)."""

from __future__ import annotations

import contextlib
import sys
from typing import Any


class NeedsTerminal(Exception):
    """The dashboard was asked for without a terminal to draw on (a usage error)."""


def launch(*, demo: bool = False) -> int:
    """Run the dashboard in this terminal. Refused (:class:`NeedsTerminal`) when stdout or
    stderr (where Textual draws) is not a terminal (`vc flow tui | tail`, `2>log`): it
    would write escape sequences into the pipe or file until killed. Only this path
    checks: a dashboard served elsewhere has a terminal of its own. A refusal of the store
    or the system is one line on stderr and its exit code (``app.console.failure``)."""
    from app.console import error_line, failure, warning_line
    from app.context import open_context
    from app.tui import demo as demo_mod

    for name, stream in (("stdout", sys.stdout), ("stderr", sys.stderr)):
        if _terminal_gone(stream):  # closed between the start and this look: not a usage error
            with contextlib.suppress(OSError):
                error_line("the dashboard's terminal closed before it started")
            return 1
        if not stream.isatty():
            raise NeedsTerminal(
                f"the dashboard needs a terminal and {name} is not one; for scripts use "
                "'vc flow session list' or 'vc flow status ID'"
            )

    if not demo:
        from app.settings import no_workspace_here

        missing = no_workspace_here()
        if missing is not None:
            error_line(missing)
            return 1
    throwaway = demo_mod.prepare_demo_environment() if demo else None
    signals = _QuitOnSignals() if throwaway is not None else None
    app: Any = None
    try:
        try:
            with open_context(warn=warning_line) as ctx:
                try:
                    if demo:
                        demo_mod.start_demo_sessions(ctx)
                    from app.tui.app import FlowApp

                    app = FlowApp(ctx)
                    app.preload()
                    if signals is not None:
                        signals.app = app
                    app.run()
                finally:
                    if app is not None:
                        app.lifeline.disarm()
                    if signals is not None:
                        signals.restore()
                    if throwaway is not None:  # what the demo and the user started there
                        demo_mod.stop_demo_sessions(ctx)
        except Exception as exc:  # refused or out of reach: one line, said before the demo goes
            known = failure(exc)
            if known is None:
                raise
            error_line(known[0])
            return known[1]
    finally:
        if signals is not None:
            signals.restore()
        if throwaway is not None:  # once the store and the log files are closed
            print(demo_mod.remove_demo_workspace(throwaway), file=sys.stderr)
    unfinished = app.dashboard.unfinished_operations()
    if unfinished:
        with contextlib.suppress(OSError):  # its terminal may be gone with its input
            warning_line(
                f"quit before {', '.join(unfinished)} finished (it was waiting for the "
                "store): what it did not commit did not happen; 'vc flow session list' "
                "shows where things are"
            )
    if app.lifeline.reason:
        try:
            error_line(app.lifeline.reason)
        except OSError:  # its terminal is gone with its input
            pass
    return app.return_code or 0


def _terminal_gone(stream: Any) -> bool:
    """True for a terminal that was hung up (its window or its pty's master closed): it is
    still a terminal device, but the kernel answers every request with EIO, so ``isatty``
    says no."""
    import errno
    import termios

    try:
        termios.tcgetattr(stream.fileno())
    except termios.error as exc:
        return bool(exc.args) and exc.args[0] == errno.EIO
    except (OSError, ValueError):
        return False
    return False


class _QuitOnSignals:
    """While a throw-away demo starts and runs: closed with its terminal (SIGHUP) or
    killed politely (SIGTERM), it quits as with ``q``, so its sessions are stopped and its
    workspace removed all the same (before the dashboard runs, the start is abandoned the
    same way). The clean-up itself runs under the previous handlers again."""

    def __init__(self) -> None:
        import signal

        self.app: Any = None
        self._previous = {
            sig: signal.signal(sig, self._quit) for sig in (signal.SIGHUP, signal.SIGTERM)
        }

    def _quit(self, _signum: int, _frame: Any) -> None:
        import asyncio

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # the dashboard is not running (yet): leave at once
            raise KeyboardInterrupt from None
        if self.app is not None:
            loop.call_soon_threadsafe(self.app.exit)

    def restore(self) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
