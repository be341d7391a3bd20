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
import shutil
import sys
import time
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


@contextmanager
def open_store(*, writes: bool = True) -> Iterator[Context]:
    """The store and (for commands that change something) the log sinks, with every
    failure turned into one line on stderr and exit code 1 (or 2 for usage errors)."""
    with translate_errors():
        from app.settings import Settings
        from store import get_session_factory, init_db

        settings = Settings.from_env()
        engine = init_db(settings.database_url)
        factory = get_session_factory(engine)
        log = None
        try:
            if writes:
                from app.logging import setup_logging

                log = setup_logging(settings.log_dir, factory)
            yield Context(settings, engine, factory, log)
        finally:
            if log is not None:
                log.close()
            engine.dispose()


@contextmanager
def translate_errors() -> Iterator[None]:
    from store.errors import StoreError, WorkflowError

    try:
        yield
    except typer.Exit:
        raise
    except StoreError as exc:
        raise fail(str(exc), exc.exit_code) from None
    except WorkflowError as exc:
        raise fail(str(exc), 1) from None
    except PermissionError as exc:
        raise fail(f"cannot write {exc.filename}: permission denied", 1) from None
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        raise fail(f"cannot access{where}: {exc.strerror or exc}", 1) from None
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError, SQLAlchemyError

        if isinstance(exc, DBAPIError | SQLAlchemyError):
            from store.engine import resolve_database_url, unavailable_message

            raise fail(unavailable_message(exc, resolve_database_url()), 1) from None
        raise


# -- output ------------------------------------------------------------------------------------

_STATUS_COLORS = {
    "PENDING": "34",
    "ACTIVE": "32",
    "PAUSED": "33",
    "COMPLETED": "36",
    "FAILED": "31",
}


def use_color() -> bool:
    return (
        sys.stdout.isatty()
        and "NO_COLOR" not in os.environ
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
    """Width to fit tables into, or None when stdout is not a terminal (no truncation,
    so `grep` sees whole names)."""
    if not sys.stdout.isatty():
        columns = os.environ.get("COLUMNS")
        return int(columns) if columns and columns.isdigit() else None
    return shutil.get_terminal_size((100, 24)).columns


def shorten(text: str, width: int) -> str:
    if width <= 0:
        return ""
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def render_table(
    headers: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    flexible: int = 1,
    drop_order: Sequence[int] = (),
    status_column: int | None = None,
) -> str:
    """A plain table fitted to the terminal: low-priority columns (``drop_order``) are
    dropped first, then the ``flexible`` column (usually the name) is shortened."""
    from store.text import clean_text

    cells = [[clean_text(c) for c in row] for row in rows]
    keep = list(range(len(headers)))
    width = terminal_width()

    def widths() -> list[int]:
        return [max([len(headers[i])] + [len(r[i]) for r in cells]) for i in keep]

    if width is not None:
        for col in drop_order:
            if sum(widths()) + 2 * (len(keep) - 1) <= width:
                break
            if col in keep and col != flexible:
                keep.remove(col)
    col_widths = widths()
    if width is not None:
        overflow = sum(col_widths) + 2 * (len(keep) - 1) - width
        if overflow > 0 and flexible in keep:
            idx = keep.index(flexible)
            col_widths[idx] = max(8, col_widths[idx] - overflow)
    lines = []
    header = "  ".join(shorten(headers[i], w).ljust(w) for i, w in zip(keep, col_widths))
    lines.append(header.rstrip())
    for row in cells:
        parts = []
        for i, w in zip(keep, col_widths):
            text = shorten(row[i], w).ljust(w)
            if i == status_column:
                text = paint(text, row[i].split()[0] if row[i] else "")
            parts.append(text)
        lines.append("  ".join(parts).rstrip())
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
    filled = int(round(value / 100 * width))
    return f"{'█' * filled}{'░' * (width - filled)} {value:5.1f}%"


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(
                f"--meta expects KEY=VALUE, got {pair!r}", param_hint="--meta"
            )
        meta[key.strip()] = value
    return meta


def confirm(question: str) -> bool:
    """Ask on a terminal; without one there is nobody to ask, so the answer is no."""
    if not sys.stdin.isatty():
        return False
    try:
        answer = input(f"{question} [y/N] ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")
