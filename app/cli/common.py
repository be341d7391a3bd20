"""Shared plumbing of the commands: the store opened for a command, refusals turned into
one line and an exit code, and tables and JSON printed.

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
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import typer

from app.console import error_line, failure, warning_line
from app.context import Context, open_context

#: The lines of app.console, where the commands have always found them.
__all__ = ["error_line", "warning_line"]


def fail(message: str, code: int = 1) -> typer.Exit:
    error_line(message)
    return typer.Exit(code)


@contextmanager
def open_store(
    *, writes: bool = True, file_logs: bool = False, warned: bool = False
) -> Iterator[Context]:
    """:func:`app.context.open_context` for a command: the workspace's warnings on stderr
    (unless the command ``warned`` already) and every failure turned into one line on
    stderr and exit code 1 (or 2 for usage errors)."""
    warn = None if warned else warning_line
    with (
        translate_errors(),
        open_context(writes=writes, file_logs=file_logs, warn=warn) as ctx,
    ):
        yield ctx


@contextmanager
def translate_errors() -> Iterator[None]:
    """Turn every refusal and environment failure into one line on stderr and an exit
    code (1, or 2 for malformed input; see :func:`app.console.failure`). Anything else
    propagates to :func:`app.main.main`, which still prints one line (never a traceback)."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:
        known = failure(exc)
        if known is None:
            raise
        raise fail(*known) from None


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
    from store.text import json_escaped

    sys.stdout.write(json_escaped(json.dumps(document, indent=2, ensure_ascii=False, default=str)))
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
    flexible: int | Sequence[int] = 1,
    drop_order: Sequence[int] = (),
    status_column: int | None = None,
    width: int | None = None,
    min_flexible: int = 12,
) -> str:
    """A plain table fitted to the terminal: the ``flexible`` columns (the name, a
    reason; several in the order they give way) are shortened, each down to
    ``min_flexible`` cells; if that is not enough, low-priority columns (``drop_order``)
    are dropped, and as a last resort every line is cut to the width. Cells are cleaned of
    control sequences."""
    from store.text import clean_text

    cells = [[clean_text(c) for c in row] for row in rows]
    keep = list(range(len(headers)))
    width = terminal_width() if width is None else width
    shrinkable = [flexible] if isinstance(flexible, int) else list(flexible)

    def widths() -> list[int]:
        return [max([cell_width(headers[i])] + [cell_width(r[i]) for r in cells]) for i in keep]

    def total(ws: list[int]) -> int:
        return sum(ws) + 2 * (len(ws) - 1)

    def narrowest(col: int, current: int) -> int:
        return min(current, max(min_flexible, cell_width(headers[col])))

    def squeezed() -> int:
        ws = widths()
        for col in shrinkable:
            if col in keep:
                idx = keep.index(col)
                ws[idx] = narrowest(col, ws[idx])
        return total(ws)

    if width is not None:
        for col in drop_order:
            if squeezed() <= width:
                break
            if col in keep and col not in shrinkable:
                keep.remove(col)
    col_widths = widths()
    if width is not None:
        for col in shrinkable:
            overflow = total(col_widths) - width
            if overflow <= 0:
                break
            if col in keep:
                idx = keep.index(col)
                floor = narrowest(col, col_widths[idx])
                col_widths[idx] = max(floor, col_widths[idx] - overflow)
        overflow = total(col_widths) - width
        if overflow > 0 and shrinkable[0] in keep:  # below the floor, rather than cut lines
            idx = keep.index(shrinkable[0])
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


def progress_text(value: float, width: int = 10) -> str:
    """A bar and a percentage; ``width=0`` gives the percentage alone (narrow terminals)."""
    value = max(0.0, min(100.0, float(value or 0.0)))
    if width <= 0:
        return f"{value:5.1f}%"
    filled = round(value / 100 * width)
    return f"{'█' * filled}{'░' * (width - filled)} {value:5.1f}%"


def check_name(value: str | None) -> str | None:
    """``--name``: not blank, at most ``store.new_session.MAX_NAME`` characters (else a
    usage error)."""
    if value is None:
        return None
    from store.new_session import BLANK_NAME, MAX_NAME, is_blank_name, name_too_long

    if is_blank_name(value):  # a session no list, no dashboard row could tell apart
        raise typer.BadParameter(BLANK_NAME)

    if len(value) > MAX_NAME:
        raise typer.BadParameter(name_too_long(value))
    return value


def parse_meta(pairs: Sequence[str]) -> dict[str, str]:
    meta: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--meta")
        if key.strip() in meta:  # as --param: which of the two was meant is not ours to guess
            raise typer.BadParameter(f"key {key.strip()!r} given twice", param_hint="--meta")
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
