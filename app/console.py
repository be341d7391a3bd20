"""The lines every part of vc writes for a person: errors and warnings on stderr, how a
failure to reach the store or a file is put in words, and durations.

Free of Typer and Textual: the CLI, the runner (whose stderr is a session log) and the
dashboard's processes print the same lines, and the CLI turns a :func:`failure` into its
exit code (``app.cli.common.translate_errors``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any


def error_line(message: str) -> None:
    """The one line a refused or malformed request gets on stderr."""
    from store.text import clean_text

    to_stderr(f"vc: error: {clean_text(message)}\n")


def warning_line(message: str) -> None:
    """A problem worth knowing that does not stop the command."""
    from store.text import clean_text

    to_stderr(f"vc: warning: {clean_text(message)}\n")


def to_stderr(text: str) -> None:
    """Write ``text`` for the person watching. A reader that went away (`vc flow run W 2>&1
    | head -1`) ends the writing, not the command, which still exits with its own code: a
    failed run piped that way under ``pipefail`` must not pass for a success."""
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # the reader is gone, or the terminal with it
        silence(sys.stderr)


def _driver_error(exc: BaseException) -> bool:
    """An error of a database driver itself (only those already imported can be it)."""
    for module, name in (("sqlite3", "Error"), ("psycopg", "Error")):
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return True
    return False


def silence_stdout() -> None:
    silence(sys.stdout)


def silence(stream: Any) -> None:
    """The reader of ``stream`` went away (`vc … | head`): what is still written goes
    nowhere, and the flush at exit does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


@contextlib.contextmanager
def reader_may_leave() -> Iterator[None]:
    """Around what a command prints before its exit code: a reader that goes away
    (`vc flow status ID | head -1`) ends the printing, not the command, which still exits
    with its own code (1 for a FAILED session)."""
    try:
        yield
        sys.stdout.flush()
    except BrokenPipeError:
        silence_stdout()


def result_line(text: str) -> None:
    """Print a command's result line; a reader that went away does not change what the
    command did, nor its exit code."""
    with reader_may_leave():
        print(text)


def failure(exc: BaseException) -> tuple[str, int] | None:
    """The line and exit code of a refusal or an environment failure (the store's refusals,
    a workflow file's errors, a file we cannot use, the database out of reach), or None
    for anything else: a bug, or a broken pipe, which is not the user's to read."""
    from store.errors import SettingError, StoreError, WorkflowError, os_error_message

    if isinstance(exc, StoreError | WorkflowError | SettingError):
        return str(exc), exc.exit_code
    if isinstance(exc, BrokenPipeError):
        return None
    if isinstance(exc, OSError):
        return os_error_message(exc), 1
    if not isinstance(exc, Exception):
        return None
    if _driver_error(exc):  # the driver path (store.direct) met the database's refusal
        from store.engine import unavailable_message
        from store.location import resolve_database_url

        return unavailable_message(exc, resolve_database_url()), 1
    from sqlalchemy.exc import DBAPIError, SQLAlchemyError

    if isinstance(exc, DBAPIError | SQLAlchemyError):
        from store.engine import unavailable_message
        from store.location import resolve_database_url

        return unavailable_message(exc, resolve_database_url()), 1
    return None


def clock_text(ts: float) -> str:
    """A moment in local date and time, to the second."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def moment_text(ts: float) -> str:
    """A moment as a person reads it: local date and time, and how long ago."""
    return f"{clock_text(ts)} ({age_text(ts)} ago)"


def age_text(ts: float | None) -> str:
    """How long ago ``ts`` was (``-`` when unknown)."""
    import time

    return "-" if ts is None else duration_text(time.time() - ts)


def runner_text(
    pid: int | None, host: str | None, heartbeat_at: float | None, awaits_worker: bool
) -> str:
    """Who runs a session, for `session show` and the dashboard's details alike."""
    if pid is not None:
        return f"pid {pid} on {host}, heartbeat {age_text(heartbeat_at)} ago"
    if awaits_worker:
        return "none (queued: the next 'vc flow worker' claims it)"
    return "none"


def duration_text(seconds: float | None) -> str:
    """A duration in its two largest units, for lines a person reads whole (``45s``,
    ``3m05s``, ``2h10m``, ``4d03h``; ``-`` when unknown). The dashboard's columns use the
    one-unit ``widgets.formatting.human_duration`` instead, which keeps them narrow."""
    if seconds is None:
        return "-"
    whole = max(0, int(seconds))  # floored, as the dashboard's: never "1m60s"
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"
