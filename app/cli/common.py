"""Shared plumbing of the commands: opening the store, turning refusals into one line and
an exit code, and printing tables and JSON.

Human output is plain text laid out here rather than with Rich: it is cheap to import (the
`list` command has to answer instantly), it never interprets markup in names, and it honours
NO_COLOR and the terminal width. Every user- or stage-written string goes through
``store.text.clean_text`` before it reaches a terminal.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session

    from app.logging import Logging
    from app.settings import Settings
    from store import FlowSessionManager


def warning_line(message: str) -> None:
    """A problem worth knowing that does not stop the command."""
    from store.text import clean_text

    print(f"vc: warning: {clean_text(message)}", file=sys.stderr, flush=True)


def _warn_unsafe_workspace(settings: Settings) -> None:
    from app.settings import workspace_warnings

    for message in workspace_warnings(settings.workspace):
        warning_line(message)


def error_line(message: str) -> None:
    """The one line a refused or malformed request gets on stderr."""
    from store.text import clean_text

    print(f"vc: error: {clean_text(message)}", file=sys.stderr, flush=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    error_line(message)
    return typer.Exit(code)


@dataclass
class Context:
    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    logging: Logging | None

    def session(self) -> Session:
        return self.factory()

    def sessions(self, db: Session) -> FlowSessionManager:
        """The session manager the commands use: its operations are published through a
        :class:`FlowStatusIntegration` (whose traffic is integration.log's content)."""
        from store import FlowSessionManager, FlowStatusIntegration

        return FlowSessionManager(db, integration=FlowStatusIntegration(db))


@contextmanager
def open_store(*, writes: bool = True, file_logs: bool = False) -> Iterator[Context]:
    """The store and (for commands that change something) the log sinks, with every
    failure turned into one line on stderr and exit code 1 (or 2 for usage errors).

    A command that writes checks first that its log directory is usable, before it opens
    (or creates) the database: a refusal then leaves everything as it was. ``file_logs``
    gives a read-only command best-effort file logging (no store mirror, so a read stays
    a read; an unusable log dir is then silently skipped)."""
    with translate_errors():
        from app.settings import Settings

        settings = Settings.from_env()
        _warn_unsafe_workspace(settings)
        log = None
        if writes:
            from app.logging import check_log_dir

            check_log_dir(settings.log_dir)
        from store import get_session_factory, init_db

        engine = init_db(settings.database_url)
        factory = get_session_factory(engine, stale_after=settings.stale_after)
        try:
            if writes or file_logs:
                from app.logging import check_log_dir, setup_logging

                if writes:
                    log = setup_logging(settings.log_dir, factory)
                else:
                    try:
                        check_log_dir(settings.log_dir)
                    except OSError:
                        pass
                    else:
                        log = setup_logging(settings.log_dir, None)
            yield Context(settings, engine, factory, log)
        finally:
            if log is not None:
                log.close()
            engine.dispose()


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn every refusal and environment failure into one line on stderr and an exit
    code (1, or 2 for malformed input). Anything else propagates to :func:`app.main.main`,
    which still prints one line (never a traceback)."""
    from store.errors import StoreError, WorkflowError

    try:
        yield
    except typer.Exit:
        raise
    except StoreError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except WorkflowError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except BrokenPipeError:
        raise
    except OSError as exc:
        raise fail(os_error_message(exc), 1) from None
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        if isinstance(exc, DBAPIError | SQLAlchemyError):
            from store.engine import unavailable_message
            from store.location import resolve_database_url

            raise fail(unavailable_message(exc, resolve_database_url()), 1) from None
        raise


def os_error_message(exc: OSError, path: object = None) -> str:
    """'cannot write PATH: permission denied' and the like, for a file we failed to use."""
    import errno

    where = exc.filename if exc.filename is not None else path
    if exc.errno in (errno.EACCES, errno.EPERM):
        what = "permission denied"
    elif exc.errno == errno.EROFS:
        what = "read-only file system"
    elif exc.errno is not None:
        what = os.strerror(exc.errno).lower()
    else:
        what = str(exc)
    return f"cannot write {where}: {what}" if where is not None else f"cannot write: {what}"


# -- output ------------------------------------------------------------------------------------

_STATUS_COLORS = {
    "PENDING": "34",
    "ACTIVE": "32",
    "PAUSED": "33",
    "COMPLETED": "36",
    "FAILED": "31",
}
_SGR = re.compile(r"\x1b\[[0-9;]*m")


def use_color() -> bool:
    """Colour only on a terminal, and never with NO_COLOR set (no-color.org: any non-empty
    value) or TERM=dumb."""
    return (
        sys.stdout.isatty()
        and not os.environ.get("NO_COLOR")
        and os.environ.get("TERM", "") != "dumb"
    )


def paint(text: str, status: str) -> str:
    code = _STATUS_COLORS.get(status)
    if not code or not use_color():
        return text
    return f"\x1b[{code}m{text}\x1b[0m"


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, ensure_ascii=False, default=str))
    sys.stdout.write("\n")


def terminal_width() -> int | None:
    """Width to fit human output into: the terminal's (``COLUMNS`` wins, as everywhere),
    or ``COLUMNS`` when stdout is not a terminal; None means no limit (a pipe without
    ``COLUMNS``), so `grep` sees whole names."""
    columns = os.environ.get("COLUMNS", "").strip()
    if columns.isdigit() and int(columns) > 0:
        return max(int(columns), 20)
    if not sys.stdout.isatty():
        return None
    return max(shutil.get_terminal_size((100, 24)).columns, 20)


def char_width(char: str) -> int:
    """Terminal cells taken by one character: 2 for East Asian wide/fullwidth, 0 for
    combining marks, else 1."""
    if char < "\u0300":
        return 1
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def cell_width(text: str) -> int:
    """Terminal cells taken by ``text`` (colour codes take none)."""
    if "\x1b" in text:
        text = _SGR.sub("", text)
    if text.isascii():
        return len(text)
    return sum(char_width(c) for c in text)


def shorten(text: str, width: int) -> str:
    """``text`` cut to ``width`` cells, with an ellipsis when cut."""
    if width <= 0:
        return ""
    if cell_width(text) <= width:
        return text
    out, used = [], 0
    for char in text:
        w = char_width(char)
        if used + w > width - 1:
            break
        out.append(char)
        used += w
    return "".join(out) + "…"


def pad(text: str, width: int) -> str:
    return text + " " * max(0, width - cell_width(text))


def fit(line: str, width: int | None = None) -> str:
    """One output line cut to the terminal width (colour dropped if it must be cut)."""
    width = terminal_width() if width is None else width
    if width is None or cell_width(line) <= width:
        return line
    return shorten(_SGR.sub("", line), width)


def echo(*texts: str) -> None:
    """Print human output, every line fitted to the terminal width."""
    width = terminal_width()
    lines = [line for text in texts for line in (text.split("\n") if text else [""])]
    sys.stdout.write("".join(fit(line, width) + "\n" for line in lines))


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    flexible: int = 1,
    drop_order: Sequence[int] = (),
    status_column: int | None = None,
    width: int | None = None,
    min_flexible: int = 12,
) -> str:
    """A plain table fitted to the terminal: the ``flexible`` column (usually the name) is
    shortened, down to ``min_flexible`` cells; if that is not enough, low-priority columns
    (``drop_order``) are dropped, and as a last resort every line is cut to the width.
    Cells are cleaned of control sequences."""
    from store.text import clean_text

    cells = [[clean_text(c) for c in row] for row in rows]
    keep = list(range(len(headers)))
    width = terminal_width() if width is None else width

    def widths() -> list[int]:
        return [max([cell_width(headers[i])] + [cell_width(r[i]) for r in cells]) for i in keep]

    def total(ws: list[int]) -> int:
        return sum(ws) + 2 * (len(ws) - 1)

    def squeezed() -> int:
        ws = widths()
        if flexible in keep:
            idx = keep.index(flexible)
            ws[idx] = min(ws[idx], max(min_flexible, cell_width(headers[flexible])))
        return total(ws)

    if width is not None:
        for col in drop_order:
            if squeezed() <= width:
                break
            if col in keep and col != flexible:
                keep.remove(col)
    col_widths = widths()
    if width is not None:
        overflow = total(col_widths) - width
        if overflow > 0 and flexible in keep:
            idx = keep.index(flexible)
            col_widths[idx] = max(min(8, col_widths[idx]), col_widths[idx] - overflow)
    lines = []
    pairs = list(zip(keep, col_widths, strict=True))
    header = "  ".join(pad(shorten(headers[i], w), w) for i, w in pairs)
    lines.append(fit(header.rstrip(), width))
    for row in cells:
        parts = []
        for i, w in pairs:
            text = pad(shorten(row[i], w), w)
            if i == status_column:
                text = paint(text, row[i].split()[0] if row[i] else "")
            parts.append(text)
        lines.append(fit("  ".join(parts).rstrip(), width))
    return "\n".join(lines)


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = max(0.0, seconds)
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m{seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h{(seconds % 3600) // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d{(seconds % 86400) // 3600:02.0f}h"


def age(ts: float | None) -> str:
    return "-" if ts is None else human_duration(time.time() - ts)


def progress_text(value: float, width: int = 10) -> str:
    """A bar and a percentage; ``width=0`` gives the percentage alone (narrow terminals)."""
    value = max(0.0, min(100.0, float(value or 0.0)))
    if width <= 0:
        return f"{value:5.1f}%"
    filled = round(value / 100 * width)
    return f"{'█' * filled}{'░' * (width - filled)} {value:5.1f}%"


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--meta")
        meta[key.strip()] = value
    return meta


def parse_params(pairs: Sequence[str]) -> dict[str, str]:
    """``--param KEY=VALUE`` options: the value is everything after the first ``=``, kept
    exactly (it reaches stages only as ``VC_PARAM_KEY``); the workflow checks it."""
    params: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--param")
        if key in params:
            raise typer.BadParameter(f"parameter {key!r} given twice", param_hint="--param")
        params[key] = value
    return params


def confirm(question: str) -> bool:
    """Ask on a terminal (the question goes to stderr, so stdout stays clean); without
    a terminal there is nobody to ask, so the answer is no."""
    if not sys.stdin.isatty():
        return False
    from store.text import clean_text

    sys.stderr.write(f"{clean_text(question)} [y/N] ")
    sys.stderr.flush()
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        sys.stderr.write("\n")
        return False
    return answer.strip().lower() in ("y", "yes")
