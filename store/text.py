"""Making text that users or stages wrote safe to show on a terminal.

Names, metadata and log lines are shown literally everywhere: the front ends never parse them
as markup, and terminal control sequences (CSI, OSC, DCS, lone ESC, C0/C1 controls) are removed
here, in one place, before display. Tabs become spaces; newlines are kept only when asked.
"""

from __future__ import annotations

import re

_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]            # CSI ... final byte
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?  # OSC ... BEL or ST (or unterminated)
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?       # DCS / SOS / PM / APC ... ST
  | \x1b[@-Z\\-_]                       # other two-byte escapes
  | \x1b                                # lone ESC
  | \x9b[0-?]*[ -/]*[@-~]               # 8-bit CSI
    """,
    re.VERBOSE,
)
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def clean_text(value: object, *, keep_newlines: bool = False) -> str:
    """Return ``value`` as text with every terminal control sequence removed."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    text = _ESCAPES.sub("", text).replace("\t", "    ")
    if keep_newlines:
        return _CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _CONTROLS.sub("", text)
