"""Starting the dashboard from the CLI (Textual is imported only here, on demand)."""

from __future__ import annotations

import sys


def launch(*, demo: bool = False) -> int:
    """Run the dashboard in this terminal. Refused (one line, exit 2) when stdout is not a
    terminal (`vc flow tui | tail`): it would write escape sequences into the pipe until
    killed. Only this path checks: a dashboard served elsewhere has a terminal of its own."""
    from app.cli.common import fail, open_store
    from app.tui import demo as demo_mod

    if not sys.stdout.isatty():
        raise fail(
            "the dashboard needs a terminal and stdout is not one; for scripts use "
            "'vc flow session list' or 'vc flow status ID'",
            2,
        )

    throwaway = demo_mod.prepare_demo_environment() if demo else False
    with open_store() as ctx:
        started: list[str] = []
        if demo:
            started = demo_mod.start_demo_sessions(ctx)
        from app.tui.app import FlowApp

        app = FlowApp(ctx)
        app.preload()
        try:
            app.run()
        finally:
            if throwaway and started:
                demo_mod.stop_demo_sessions(ctx, started)
        if throwaway:
            print(
                f"demo workspace: {ctx.settings.workspace} (its sessions were stopped)",
                file=sys.stderr,
            )
    return app.return_code or 0
