"""One browser tab's dashboard: the process `vc flow tui --serve` starts for each WebSocket
(``python -I -m app.tui.tab``), with textual-serve's pipes as its stdin and stdout and
Textual's web driver chosen by the server (``TEXTUAL_DRIVER``).

Its own entry, not `vc flow tui`: the terminal command refuses what makes no sense in a
terminal, and this process has no terminal by design. It exits when the tab closes
(textual-serve sends "quit"), on `q`, and when the server is gone: its stdin is the
server's pipe, whose hang-up the dashboard watches (``app.tui.lifeline``).
"""

from __future__ import annotations

import os
import sys


def main() -> int:
    from app.console import error_line, failure, warning_line
    from app.context import open_context

    try:
        with open_context(warn=warning_line) as ctx:
            from app.tui.app import FlowApp

            app = FlowApp(ctx)
            app.preload()
            try:
                app.run()
            finally:
                app.lifeline.disarm()
        if app.lifeline.reason:
            error_line(app.lifeline.reason)
        return app.return_code or 0
    except Exception as exc:  # still one line, never a traceback
        known = failure(exc)
        if known is not None:  # a refusal
            error_line(known[0])
            return known[1]
        if os.environ.get("VC_DEBUG"):
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
