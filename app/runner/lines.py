"""A stage's output between the pipe and its lines: decoding, splitting, and the backlog
between the thread that reads a fast writer's output and the one that splits it (used by
:class:`app.runner.process.StageProcess`)."""

from __future__ import annotations

import re
import threading
import time
from collections import deque
from collections.abc import Iterable

__all__ = [
    "HANDOFF_BYTES",
    "MAX_LINE_BYTES",
    "Backlog",
    "LineBatch",
    "decode",
    "last_progress",
    "last_progress_in",
    "parse_progress",
    "pieces",
    "split_block",
    "utf8_cut",
]

#: A line longer than this many bytes is delivered as several pieces of at most this size, so
#: one runaway line (a binary blob, a progress bar without newlines) cannot exhaust memory.
MAX_LINE_BYTES = 1 << 20
#: Once a stage has written this much, its reader hands the splitting to a thread of its
#: own (see ``StageProcess._read`` in app.runner.process); and this much read within
#: :data:`HOLD_BACK` seconds is a burst (see :class:`Backlog`).
HANDOFF_BYTES = 256 * 1024
#: Seconds after the last burst during which the splitter leaves the reader alone (see
#: :class:`Backlog`): lines of a fast writer reach the log at most this much later.
HOLD_BACK = 0.02
#: Most bytes the splitter takes as one block: a batch of lines is logged with one write,
#: and this bounds what such a write holds in memory (about 150,000 short lines).
MAX_BLOCK = 1 << 20


def decode(raw: bytes | bytearray) -> str:
    """UTF-8 with invalid bytes kept as ``\\xNN`` escapes, NUL shown as ``\\x00``."""
    text = raw.decode("utf-8", "backslashreplace")
    if "\x00" in text:
        text = text.replace("\x00", "\\x00")
    return text


def utf8_cut(raw: bytes | bytearray, limit: int) -> int:
    """A cut position <= limit that does not split a UTF-8 sequence (when the data is UTF-8)."""
    if len(raw) <= limit:
        return len(raw)
    cut = limit
    while cut > limit - 3 and (raw[cut] & 0xC0) == 0x80:
        cut -= 1
    return cut if (raw[cut] & 0xC0) != 0x80 else limit


def pieces(raw: bytes | bytearray) -> list[str]:
    """One complete line (terminator removed) as one or more decoded pieces of bounded size."""
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    out: list[str] = []
    while len(raw) > MAX_LINE_BYTES:
        cut = utf8_cut(raw, MAX_LINE_BYTES)
        out.append(decode(raw[:cut]))
        raw = raw[cut:]
    out.append(decode(raw))
    return out


def split_block(block: bytes | bytearray) -> list[str]:
    """Decode a block of complete lines, each ending with b"\\n" (the last one included).

    Decoded and split a piece at a time (C speed, no per-line Python call). Decoding
    before splitting is exact: b"\\n" never occurs inside a UTF-8 sequence and escapes of
    invalid bytes contain no newline. The pieces are at most :data:`MAX_LINE_BYTES` + 1
    bytes and end at a newline, so no line of a piece can be over-long; only a line that
    is (no newline within that many bytes) is cut, by :func:`pieces`.
    """
    size = len(block)
    if size <= MAX_LINE_BYTES + 1:
        return split_piece(block)
    lines: list[str] = []
    pos = 0
    while pos < size:
        end = pos + MAX_LINE_BYTES + 1
        if end >= size:
            lines.extend(split_piece(block[pos:]))
            break
        nl = block.rfind(b"\n", pos, end)
        if nl >= 0:
            lines.extend(split_piece(block[pos : nl + 1]))
        else:  # an over-long line: cut into pieces
            nl = block.find(b"\n", end)
            lines.extend(pieces(block[pos:nl]))
        pos = nl + 1
    return lines


def split_piece(block: bytes | bytearray) -> list[str]:
    """:func:`split_block` of a block without over-long lines."""
    text = decode(block)
    if "\r" in text:
        text = text.replace("\r\n", "\n")
    lines = text.split("\n")
    lines.pop()  # the empty string after the final newline
    return lines


class Backlog:
    """Chunks read but not split yet, in the order read: the reader thread puts, the
    splitter thread takes.

    While the stage writes fast (:data:`HANDOFF_BYTES` or more read within
    :data:`HOLD_BACK` seconds), :meth:`take` waits until it slows down: the reader and the
    splitter share one interpreter lock, and every moment the splitter holds it is a moment
    the pipe is not read and the stage cannot write. So a burst is read first and split
    after it (sooner once half the limit waits). A stage that prints at a human pace has
    its lines split as they come. :meth:`take` joins the waiting chunks of a stream into
    one block (up to :data:`MAX_BLOCK`): the slower the splitter, the bigger its blocks
    and the fewer its deliveries. :meth:`wait_for_room` holds the reader while more than
    ``limit`` bytes wait, so a stage that outpaces the log for long is slowed down, not the
    memory exhausted."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._chunks: deque[tuple[str, float, bytes | None]] = deque()
        self._bytes = 0
        self._closed = False
        self._cond = threading.Condition()
        #: Bytes put since ``_window_at`` (monotonic), and when they reached
        #: :data:`HANDOFF_BYTES` (None once a stream ended).
        self._window_at = 0.0
        self._window_bytes = 0
        self._burst_at: float | None = None

    def put(self, stream: str, at: float, data: bytes | None) -> None:
        with self._cond:
            self._chunks.append((stream, at, data))
            if data is None:
                self._burst_at = None
            else:
                self._bytes += len(data)
                now = time.monotonic()
                if now - self._window_at > HOLD_BACK:
                    self._window_at, self._window_bytes = now, 0
                self._window_bytes += len(data)
                if self._window_bytes >= HANDOFF_BYTES:
                    self._burst_at = now
            self._cond.notify_all()

    def take(self) -> tuple[str, float, bytes | None] | None:
        """The oldest chunk (joined with the next ones of its stream), once the reader is
        not in a burst; None once the reader closed the backlog and it is empty."""
        with self._cond:
            while True:
                if self._chunks:
                    burst = self._burst_at
                    if burst is None or self._closed or self._bytes >= self._limit // 2:
                        return self._pop()
                    left = burst + HOLD_BACK - time.monotonic()
                    if left <= 0:
                        return self._pop()
                    self._cond.wait(left)
                elif self._closed:
                    return None
                else:
                    self._cond.wait()

    def _pop(self) -> tuple[str, float, bytes | None]:
        """Under the lock: the oldest chunk and the following ones of the same stream."""
        chunks = self._chunks
        stream, at, data = chunks.popleft()
        if data is None or not chunks:
            return stream, at, data
        parts = [data]
        size = len(data)
        while chunks and chunks[0][0] == stream and chunks[0][2] is not None:
            more = chunks[0][2]
            if size + len(more) > MAX_BLOCK:
                break
            at = chunks.popleft()[1]  # a line's time is when it was read: the last read
            parts.append(more)
            size += len(more)
        if len(parts) == 1:
            return stream, at, data
        return stream, at, b"".join(parts)

    def bursting(self) -> bool:
        """Whether the stage is writing fast now (see the class doc)."""
        burst = self._burst_at
        return burst is not None and time.monotonic() - burst < HOLD_BACK

    def done(self, size: int) -> None:
        """A chunk of ``size`` bytes was split and delivered: room for more."""
        with self._cond:
            self._bytes -= size
            self._cond.notify_all()

    def wait_for_room(self, stop: threading.Event) -> None:
        with self._cond:
            while self._bytes > self._limit and not stop.is_set():
                self._cond.wait(0.1)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


#: One delivered line: (unix time of the read, "stdout" | "stderr", decoded text).
Line = tuple[float, str, str]
LineBatch = list[Line]

_PROGRESS_TAG = "::progress"
_NUM = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PROGRESS_RE = re.compile(
    rf"::progress\s+(?:(?P<done>{_NUM})\s*/\s*(?P<total>{_NUM})|(?P<pct>[+-]?{_NUM})\s*%?)",
    re.ASCII,
)


# --------------------------------------------------------------------------------------------
# progress lines


def parse_progress(line: str) -> float | None:
    """Parse ``::progress N`` (percent) or ``::progress DONE/TOTAL``; None for anything else.

    The value is clamped to 0..100 because a stage's arithmetic is not ours to trust and a bar
    beyond its ends helps nobody. ``TOTAL`` 0 means "unknown yet" and yields None. Surrounding
    whitespace and a trailing ``%`` after ``N`` are accepted as harmless variations.
    """
    if _PROGRESS_TAG not in line:  # cheap reject before the regex
        return None
    match = _PROGRESS_RE.fullmatch(line.strip())
    if match is None:
        return None
    pct = match.group("pct")
    if pct is not None:
        value = float(pct)
    else:
        total = float(match.group("total"))
        if total == 0:
            return None
        value = float(match.group("done")) * 100.0 / total
    return min(100.0, max(0.0, value))


def last_progress_in(texts: Iterable[str]) -> float | None:
    """Last valid progress value among ``texts`` scanned from the end (texts is reversed)."""
    for text in texts:
        if _PROGRESS_TAG in text:
            value = parse_progress(text)
            if value is not None:
                return value
    return None


def last_progress(lines: LineBatch) -> float | None:
    """The last valid progress value in a batch of lines, or None.

    Scans from the end, so a batch carrying many progress lines costs one parse; lines without
    the ``::progress`` tag cost one substring test each. Lines from both streams count.
    """
    return last_progress_in(text for _, _, text in reversed(lines))
