"""Small, pure text helpers shared by the widgets.

They are pure functions over plain values so that they can be unit-tested without an App and so
that every widget shows durations, bars and truncated text the same way.
"""

from __future__ import annotations

import re

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text

ELLIPSIS = "…"

# C0 controls (but tab, handled separately), DEL and C1 controls. The caller already strips
# terminal escape sequences; whatever control character is left must not reach the terminal.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def cut_middle(value: str, n: int) -> str:
    """``value`` in at most ``n`` cells: whole, its start (``n`` < 3), or its start and end
    around ``…`` (matrix instances differ at their end: ``build[os=linux,…arch=arm64]``).
    Cells, not characters: a wide character (CJK) takes two."""
    if cell_len(value) <= n:
        return value
    if n < 3:
        return _fit(value, n) or ELLIPSIS[:n]
    room = n - 1  # beside the ellipsis
    head = _fit(value, room - room // 2)
    tail = _fit(value[::-1], room - cell_len(head))[::-1]
    # a wide character that did not fit one side leaves its cell to the other
    head = _fit(value, room - cell_len(tail))
    return head + ELLIPSIS + tail


def cut_end(value: str, n: int) -> str:
    """``value`` in at most ``n`` cells: whole, or its start and ``…``."""
    if cell_len(value) <= n:
        return value
    return _fit(value, n - 1) + ELLIPSIS if n >= 1 else ""


def _fit(value: str, cells: int) -> str:
    """The longest start of ``value`` that takes at most ``cells`` cells."""
    taken = 0
    for index, char in enumerate(value):
        taken += cell_len(char)
        if taken > cells:
            return value[:index]
    return value


def clean(text: str, *, tab_size: int = 4) -> str:
    """Make ``text`` safe to show on one terminal line.

    Defence in depth: tabs become spaces (so cell widths are predictable), a newline becomes a
    visible ``↵`` (a record stays one line), any other control character becomes ``�``.
    """
    if "\t" in text:
        text = text.expandtabs(tab_size)
    if _CONTROL.search(text) is None:
        return text
    return _CONTROL.sub(lambda m: "↵" if m.group() == "\n" else "\ufffd", text)


def human_duration(seconds: float | None) -> str:
    """Compact, single-unit duration: ``5s``, ``3m``, ``2h``, ``4d`` (floored).

    One unit keeps a narrow column readable and stable in width; the exact times are in the
    session details.
    """
    if seconds is None:
        return ""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


PAUSED_MARK = "‖"


def paused_duration(seconds: float) -> str:
    """How long something has been paused, marked so it does not read as running time:
    ``‖3m``. A paused session's or stage's clock shows its pause, not a run going on."""
    return PAUSED_MARK + human_duration(seconds)


def clamp_progress(progress: float) -> float:
    """Progress as 0-100 whatever the store sent (NaN counts as 0)."""
    if progress != progress:  # NaN
        return 0.0
    return min(100.0, max(0.0, float(progress)))


def progress_bar(progress: float, width: int = 6) -> tuple[str, str]:
    """A text bar and a percentage, e.g. ``("███░░░", " 52%")``.

    Both are floored, so a bar is only full and the figure only reads 100% when the work is done.
    """
    p = clamp_progress(progress)
    filled = int(p * width / 100)
    return "█" * filled + "░" * (width - filled), f"{int(p):>3}%"


def fit(text: Text, width: int, justify: str = "left") -> Text:
    """Truncate ``text`` with ``…`` to ``width`` cells and pad it to exactly that width."""
    text = text.copy()
    text.truncate(max(0, width), overflow="ellipsis")
    if justify == "right":
        pad = width - text.cell_len
        if pad > 0:
            text.pad_left(pad)
    else:
        text.pad_right(max(0, width - text.cell_len))
    return text


def render_segments(text: Text, console: Console) -> list[Segment]:
    """``text`` rendered to segments that all carry a style: Textual's monochrome filter
    (active under NO_COLOR) fails on a segment whose style is None, which Rich emits for
    unstyled text."""
    null = Style.null()
    return [
        segment if segment.style is not None else Segment(segment.text, null, segment.control)
        for segment in text.render(console)
    ]
