"""`vc`: the console entry point.

Kept cheap on purpose: importing this module imports Typer and our command modules, which
import nothing heavy at module level (the store, Textual and loguru are imported inside the
commands that need them), so `vc --help` costs little more than `import typer`.

Errors: Typer's usage errors are turned into one line on stderr with exit code 2, our own
refusals into one line with exit code 1, and nothing ever prints a traceback at a user.
"""

from __future__ import annotations

import sys

import typer

from app.cli import db, flow

app = typer.Typer(
    name="vc",
    help="vc: durable, resumable workflow sessions (headless commands and a dashboard).",
    no_args_is_help=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(flow.app, name="flow")
app.add_typer(db.app, name="db")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns (and exits with) the process exit code."""
    from app.cli.common import error_line

    try:
        result = app(args=argv, prog_name="vc", standalone_mode=False)
        code = result if isinstance(result, int) else 0
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # usage errors (exit 2) and other click errors
        code = int(getattr(exc, "exit_code", 1))
        ctx = getattr(exc, "ctx", None)
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None and code == 2 else ""
        error_line(f"{exc.format_message()}{hint}")
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        code = 130
    except BrokenPipeError:
        code = 0
    sys.stdout.flush() if not sys.stdout.closed else None
    if argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()
