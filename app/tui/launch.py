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
            if throwaway and started:
                demo_mod.stop_demo_sessions(ctx, started)
        if throwaway:
            print(
                f"demo workspace: {ctx.settings.workspace} (its sessions were stopped)",
                file=sys.stderr,
            )
    return app.return_code or 0
