"""Starting the dashboard from the CLI (Textual is imported only here, on demand)."""

from __future__ import annotations

import sys


def launch(*, demo: bool = False) -> int:
    from app.cli.common import open_store
    from app.tui import demo as demo_mod

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
            app.lifeline.disarm()
            if throwaway and started:
                demo_mod.stop_demo_sessions(ctx, started)
        if throwaway:
            print(
                f"demo workspace: {ctx.settings.workspace} (its sessions were stopped)",
                file=sys.stderr,
            )
    if app.lifeline.reason:
        from app.cli.common import error_line

        try:
            error_line(app.lifeline.reason)
        except OSError:  # its terminal is gone with its input
            pass
    return app.return_code or 0
