"""The one place that maps statuses and log levels to colours.

Status colours are used inside rendered text (table cells, stage rows, header counts) rather than
as CSS classes on whole widgets, because one line mixes several statuses' worth of styling; so they
are Rich styles, defined once here so every widget (and the CLI, if it wants) agrees on them.
Widget chrome (cursor, header background, borders) is themable CSS, not defined here.
"""

from __future__ import annotations

from rich.style import Style

STATUS_STYLES: dict[str, Style] = {
    "PENDING": Style(color="blue", dim=True),
    "ACTIVE": Style(color="green", bold=True),
    "PAUSED": Style(color="yellow"),
    "COMPLETED": Style(color="cyan"),
    "FAILED": Style(color="red", bold=True),
}
"""Rich style per status (PENDING dim blue, ACTIVE green, PAUSED yellow, COMPLETED cyan,
FAILED red)."""

ORPHANED_STYLE = Style(color="magenta", bold=True)
"""The orphaned mark: a session whose runner stopped beating needs attention whatever its state."""

LEVEL_STYLES: dict[str, Style] = {
    "TRACE": Style(dim=True),
    "DEBUG": Style(dim=True),
    "INFO": Style(),
    "SUCCESS": Style(color="green"),
    "WARNING": Style(color="yellow"),
    "ERROR": Style(color="red"),
    "CRITICAL": Style(color="red", bold=True, reverse=True),
}
"""Rich style per log level (DEBUG dim, INFO default, WARNING yellow, ERROR red)."""

_NULL = Style()


def status_style(status: str) -> Style:
    """Style for a status; unknown statuses (a newer store) render unstyled instead of failing."""
    return STATUS_STYLES.get(status.upper(), _NULL)


def level_style(level: str) -> Style:
    """Style for a log level; unknown levels render unstyled."""
    return LEVEL_STYLES.get(level.upper(), _NULL)
