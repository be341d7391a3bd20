"""`vc`: the console entry point.

Kept cheap on purpose: importing this module imports Typer and our command modules, which
import nothing heavy at module level (the store, Textual and loguru are imported inside the
commands that need them), so `vc --help` costs little more than `import typer`.

This is where the front ends meet: `vc flow tui` (the dashboard) is added here to the
CLI's `vc flow`, so the command modules (``app.cli``) and the dashboard (``app.tui``)
import nothing of each other.

Errors: Typer's usage errors are turned into one line on stderr with exit code 2, our own
refusals into one line with exit code 1, and nothing ever prints a traceback at a user.
"""

from __future__ import annotations

import os
import sys
from typing import Annotated

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


def _print_version(wanted: bool) -> None:
    if not wanted:
        return
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("vc-flow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        number = "unknown (not installed)"
    print(f"vc {number}")
    raise typer.Exit()


@app.callback()
def _root(
    _version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print vc's version and exit.", is_eager=True, callback=_print_version
        ),
    ] = False,
) -> None:
    pass


@flow.app.command("tui")
def tui_cmd(
    demo: Annotated[bool, typer.Option("--demo", help="Open on a demo workspace.")] = False,
    serve: Annotated[
        bool, typer.Option("--serve", help="Serve the dashboard to browsers instead.")
    ] = False,
    host: Annotated[
        str | None,
        typer.Option(
            "--host", metavar="H", help="With --serve: the address to listen on [127.0.0.1]."
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=0,
            max=65535,
            metavar="P",
            help="With --serve: the port (0: any free one) [8000].",
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            metavar="URL",
            help="With --serve: the URL browsers reach it by (a TLS proxy).",
        ),
    ] = None,
) -> None:
    """The full-screen dashboard (in this terminal, or served to browsers with --serve)."""
    from app.cli.common import fail, translate_errors

    if serve:
        if host is not None and not host.strip():
            raise fail("--host must name an address to listen on, e.g. 127.0.0.1", 2)
        with translate_errors():
            from app.tui.serve import DEFAULT_HOST, DEFAULT_PORT, ServeError
            from app.tui.serve import serve as serve_dashboard

            try:
                code = serve_dashboard(
                    demo=demo,
                    host=DEFAULT_HOST if host is None else host,
                    port=DEFAULT_PORT if port is None else port,
                    public_url=public_url,
                )
            except ServeError as exc:
                raise fail(str(exc), exc.code) from None
        if code:
            raise typer.Exit(code)
        return
    for name, value in (("--host", host), ("--port", port), ("--public-url", public_url)):
        if value is not None:
            raise fail(f"{name} needs --serve (see 'vc flow tui --help')", 2)
    with translate_errors():
        from app.tui.launch import NeedsTerminal, launch

        try:
            code = launch(demo=demo)
        except NeedsTerminal as exc:
            raise fail(str(exc), 2) from None
    if code:
        raise typer.Exit(code)


app.add_typer(flow.app, name="flow")
app.add_typer(db.app, name="db")


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit code (and exits with it when called without ``argv``,
    as the console script does)."""
    from app.console import error_line, silence_stdout

    for name in ("stdout", "stderr"):
        if getattr(sys, name) is None:  # closed by the caller (`vc … >&-`): write into nothing
            setattr(sys, name, open(os.devnull, "w"))  # noqa: SIM115 (lives as long as we do)
    for stream in (sys.stdout, sys.stderr):
        # A name or log line the locale cannot encode must not crash a command.
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            try:
                reconfigure(errors="backslashreplace")
            except (ValueError, OSError):
                pass
    bad = _invalid_utf8(sys.argv[1:] if argv is None else argv)
    if bad is not None:
        error_line(f"argument '{bad}' is not valid UTF-8 (see 'vc --help')")
        return _finish(2, argv)
    try:
        from app.cli.tree import lazy_command

        result = lazy_command(app)(args=argv, prog_name="vc", standalone_mode=False)
        code = result if isinstance(result, int) else 0
        sys.stdout.flush()
    except typer.Exit as exc:
        code = exc.exit_code
    except typer.TyperException as exc:  # usage errors (exit 2) and other click errors
        if type(exc).__name__ == "NoArgsIsHelpError":  # `vc`, `vc flow`: help is the answer
            sys.stdout.write(exc.format_message() + "\n")
            return _finish(0, argv)
        code = int(getattr(exc, "exit_code", 1))
        ctx = getattr(exc, "ctx", None)
        path = (
            ctx.command_path
            if ctx is not None
            else _command_words(sys.argv[1:] if argv is None else argv)
        )
        hint = f" (see '{path} --help')" if code == 2 else ""
        message = _plain_click(exc.format_message().strip().rstrip("."))
        error_line(f"{message[:1].lower()}{message[1:]}{hint}")
    except (typer.Abort, KeyboardInterrupt):
        error_line("interrupted")
        code = 130
    except BrokenPipeError:
        # The reader went away (`vc … | head`): not an error; keep Python from complaining
        # again when it flushes stdout at exit. A command whose exit code says something
        # (status, wait, run) keeps printing out of its way (app.console.reader_may_leave).
        silence_stdout()
        code = 0
    except SystemExit as exc:
        if not isinstance(exc.__context__, BrokenPipeError):
            raise
        silence_stdout()  # Click's own answer to the same closed pipe is exit 1: not ours
        code = 0
    except Exception as exc:  # a bug: still one line, never a traceback (VC_DEBUG=1 shows it)
        from app.console import failure

        known = failure(exc)  # a refusal raised outside a command's own error handling
        if known is not None:
            error_line(known[0])
            return _finish(known[1], argv)
        if os.environ.get("VC_DEBUG"):
            raise
        error_line(f"internal error: {type(exc).__name__}: {exc} (VC_DEBUG=1 shows details)")
        code = 1
    return _finish(code, argv)


def _command_words(argv: list[str]) -> str:
    """``vc`` and the command words that lead ``argv``, for the help hint of a usage error
    Click raises without its context (an option left without its value)."""
    import re

    words = ["vc"]
    for arg in argv:
        if not re.fullmatch(r"[a-z][a-z-]{0,30}", arg):
            break
        words.append(arg)
    return " ".join(words)


def _plain_click(message: str) -> str:
    """Click's words for a number it refused, in ours: ``'abc' is not a valid int range``
    and ``-1 is not in the range x>=1`` become "is not a whole number" and "must be at
    least 1"."""
    import re

    message = re.sub(r"is not a valid int(eger)?( range)?\b", "is not a whole number", message)
    message = re.sub(r"is not a valid float( range)?\b", "is not a number", message)
    bounds = {
        r"(\S+)<=x<=(\S+)": r"from \1 to \2",
        r"x>=(\S+)": r"at least \1",
        r"x<=(\S+)": r"at most \1",
        r"x>(\S+)": r"above \1",
        r"x<(\S+)": r"below \1",
    }
    for pattern, words in bounds.items():
        message = re.sub(rf"is not in the range {pattern}", rf"must be {words}", message)
    return message


def _finish(code: int, argv: list[str] | None) -> int:
    if argv is None:
        from app.quick_exit import is_quick, leave

        if is_quick(sys.argv[1:]):
            leave(code)  # the work is done: no interpreter teardown
        sys.exit(code)
    return code


def _invalid_utf8(args: list[str]) -> str | None:
    """The first argument that is not UTF-8 (Python hands such bytes over as surrogate
    escapes, which no name, id or option value can hold), shown with its bad bytes
    escaped; None when every argument is fine."""
    for arg in args:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            return os.fsencode(arg).decode("utf-8", "backslashreplace")
    return None


if __name__ == "__main__":
    main()
