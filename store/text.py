"""Making text that users or stages wrote safe to show on a terminal.

Names, metadata and log lines are shown literally everywhere: the front ends never parse them
as markup, and terminal control sequences (CSI, OSC, DCS, lone ESC, C0/C1 controls) are removed
here, in one place, before display. Tabs become spaces; newlines are kept only when asked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_ESCAPES = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]            # CSI ... final byte
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?  # OSC ... BEL or ST (or unterminated)
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?       # DCS / SOS / PM / APC ... ST
  | \x1b[@-Z\\-_]                       # other two-byte escapes
  | \x1b                                # lone ESC
  | \x9b[0-?]*[ -/]*[@-~]               # 8-bit CSI
  | \x9d[^\x07\x1b\x9c]*(?:\x07|\x9c|\x1b\\)?  # 8-bit OSC ... BEL or ST
  | [\x90\x98\x9e\x9f][^\x1b\x9c]*(?:\x9c|\x1b\\)?  # 8-bit DCS / SOS / PM / APC ... ST
    """,
    re.VERBOSE,
)
#: C0/C1 controls, and the invisible format characters that change what a reader sees
#: without showing themselves: the bidirectional overrides, embeddings, isolates and marks
#: (U+202E makes the rest of a line read backwards, "Trojan Source"), zero-width spaces and
#: joiners of words, and the byte order mark. The zero-width (non-)joiner U+200C/U+200D is
#: kept: scripts and emoji sequences need it, and it reorders nothing.
_CONTROLS = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200b\u200e\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u2069\ufeff]"
)
#: Unicode's own line and paragraph separators: line breaks like \n.
_SEPARATORS = re.compile("[\u2028\u2029]")


def clean_text(value: object, *, keep_newlines: bool = False) -> str:
    """Return ``value`` as text with every terminal control sequence removed."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    text = _SEPARATORS.sub("\n", _ESCAPES.sub("", text)).replace("\t", "    ")
    if keep_newlines:
        return _CONTROLS.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return _CONTROLS.sub("", text)


def command_line(command: str) -> str:
    """A stage's command on one line, each line break shown as ``⏎``: a script of two
    lines joined with a space would read as one command with more arguments."""
    lines = (line.strip() for line in clean_text(command, keep_newlines=True).splitlines())
    return " ⏎ ".join(line for line in lines if line)


def json_escaped(document: str) -> str:
    """JSON text (``json.dumps(..., ensure_ascii=False)``) with the characters a terminal
    acts on or a reader cannot see written as ``\\uXXXX`` escapes, as JSON already writes
    the C0 controls: the same document to a parser, nothing a terminal obeys to a person
    reading it. Other non-ASCII text stays readable."""
    return _CONTROLS.sub(_unicode_escape, _SEPARATORS.sub(_unicode_escape, document))


def _unicode_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


#: How many known names a refusal ("no stage 'x'; stages: …") lists before "and N more".
MAX_KNOWN_LISTED = 20


def listed(names: Sequence[str]) -> str:
    """``names`` for a refusal: the first :data:`MAX_KNOWN_LISTED`, then how many more, so
    that a workflow of 200 stages still gets a one-line error."""
    text = ", ".join(names[:MAX_KNOWN_LISTED]) or "(none)"
    if len(names) > MAX_KNOWN_LISTED:
        text += f" and {len(names) - MAX_KNOWN_LISTED} more"
    return text


def suggest(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'build'?)`` when one of ``choices`` is close to ``word``, else ''."""
    import difflib  # only a refusal needs it: the quick commands import this module

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
