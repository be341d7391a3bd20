"""Logging (docs/ARCHITECTURE.md §7): loguru with four categories, three kinds of files, and a
mirror of every session record into the store's log table (what `session logs` and the dashboard
read, from any host).

Files are written with one ``os.write`` per batch on ``O_APPEND`` descriptors: appends from
several processes never interleave inside a line and ``tail -f`` sees whole lines. Each
record is one line; newlines inside a message are escaped so a stage cannot forge records.
The store mirror buffers rows and inserts them in batches from one background thread.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from app.log_mirror import BoundedSet, StoreMirror

CATEGORIES = (
    "workflow.session.integration",
    "workflow.session.operations",
    "workflow.stage.integration",
    "workflow.stage.operations",
)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


#: What a line vc writes to a log file never holds as it came: control characters (but
#: tab, and the newline that ends each record), which `tail -f` or `less -R` would let a
#: stage use to clear the screen, retitle the terminal or forge a record; the Unicode line
#: separators (a reader splitting lines would split there) and bidi controls too.
_WRITTEN_OUT: dict[int, str] = {
    code: "\\r" if code == 0x0D else f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
    for code in [
        *range(0x00, 0x09),
        *range(0x0B, 0x20),
        *range(0x7F, 0xA0),
        0x2028,
        0x2029,
        *range(0x202A, 0x202F),
        *range(0x2066, 0x206A),
    ]
}
UNSAFE_IN_FILE = re.compile("[" + re.escape("".join(map(chr, _WRITTEN_OUT))) + "]")


def escape_for_file(text: str) -> str:
    """``text`` with its control characters written out (``\\r``, ``\\x1b``, ``\\u2028``
    …); newlines are kept (the caller decides what one is)."""
    return text.translate(_WRITTEN_OUT)


def format_line(
    at: float, level: str, category: str, session_id: str | None, stage: str | None, text: str
) -> str:
    """One record as one line of a log file."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    millis = int((at % 1) * 1000)
    if not text.isprintable():
        text = escape_for_file(text).replace("\n", "\\n")
    return (
        f"{stamp}.{millis:03d} | {level:<7} | {category} | {session_id or '-'} | "
        f"{stage or '-'} | {text}\n"
    )


def make_private_dirs(path: Path) -> None:
    """``mkdir -p`` where every directory created (not only the last) is 0700 whatever the
    umask: ``Path.mkdir(parents=True)`` gives the parents the default 0777 & ~umask, and a
    world-writable ``logs/workflow/`` would let anyone swap the session directory."""
    if path.is_dir():
        return
    missing = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=0o700)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue
        os.chmod(directory, 0o700)  # mkdir's mode is filtered by the umask


def check_log_dir(log_dir: Path) -> Path:
    """Create the session log directory (0700) if needed and make sure it is writable, so a
    command that is about to change something fails before it does, with an ``OSError``
    naming the path (turned into "cannot write PATH: …" by the CLI)."""
    root = log_dir / "workflow" / "session"
    make_private_dirs(root)
    if not root.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(root))
    if not os.access(root, os.W_OK | os.X_OK):
        if os.statvfs(root).f_flag & os.ST_RDONLY:  # where even root cannot write
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(root))
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root))
    return root


#: After a write to a log file failed, how long it is left alone before the next try (a
#: full disk is tried again only once there is room, see ``store.space.has_room``).
FILE_RETRY = 1.0
#: The category of the notes vc writes about its own log files.
NOTE_CATEGORY = "workflow.session.operations"


class _FileTrouble:
    """A log file that could not be written: what was left out since, and when to try."""

    def __init__(self, exc: OSError) -> None:
        self.error = exc
        self.lost = 0
        self.partial = False
        self.since = time.time()
        self.next_try = time.monotonic() + FILE_RETRY
        #: Closing: one more try whatever the free space (the note is one line).
        self.last_try = False

    @property
    def full(self) -> bool:
        from store.space import is_disk_full

        return is_disk_full(self.error)

    def reason(self) -> str:
        return (self.error.strerror or str(self.error)).lower()


class LogFiles:
    """The log tree: ``<log_dir>/workflow/session/{<id>.log, operations.log,
    integration.log}``, created on demand (directories 0700, files 0600).

    Writing never raises: a log file must not stop a stage or undo an operation. A file
    deleted while in use (``rm -r logs``) is noticed at the next write (its link count is
    0) and created again, starting with a WARNING line that says so. A write that fails
    (a full disk, a file made read-only) leaves the file alone for :data:`FILE_RETRY`
    seconds, a full disk until there is room again, and the lines meanwhile are counted;
    the first line that gets through again is preceded by a WARNING saying how many are
    missing there (and a line cut short by the full disk is ended first). Each of these
    events is also handed to ``on_event(file name, level, text)`` (the store and the
    terminal hear of it); it is called without the lock held, and must not log through
    loguru (a sink calls this).
    """

    def __init__(self, log_dir: Path) -> None:
        self.root = log_dir / "workflow" / "session"
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()
        self._trouble: dict[str, _FileTrouble] = {}
        #: Files found deleted while open and not created again yet.
        self._deleted: set[str] = set()
        #: Files of deleted sessions (:meth:`remove_session`): never written again.
        self._removed = BoundedSet()
        #: The error of the write that found the disk full, until there is room again.
        self._full: OSError | None = None
        self._room_checked = 0.0
        #: Lines left out of each file so far, and why the last time (by file name).
        self.lost: dict[str, int] = {}
        self.last_error: dict[str, str] = {}
        self.on_event: Callable[[str, str, str], None] | None = None

    def session_path(self, session_id: str) -> Path:
        if not _SAFE_ID.match(session_id):
            raise ValueError(f"invalid session id for a log file name: {session_id!r}")
        return self.root / f"{session_id}.log"

    def _fd(self, name: str) -> tuple[int, bool]:
        """The open file (opened now if needed), and whether it was created again because
        it had been deleted while open."""
        fd = self._fds.get(name)
        if fd is not None:
            try:
                deleted = os.fstat(fd).st_nlink == 0
            except OSError:
                deleted = True
            if not deleted:
                return fd, False
            del self._fds[name]
            with contextlib.suppress(OSError):
                os.close(fd)
            self._deleted.add(name)
        make_private_dirs(self.root)
        fd = os.open(self.root / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        if len(self._fds) > 64:  # called under self._lock: close without re-locking
            for old in self._fds.values():
                os.close(old)
            self._fds.clear()
        self._fds[name] = fd
        recreated = name in self._deleted
        self._deleted.discard(name)
        return fd, recreated

    def write(self, name: str, data: str) -> None:
        events: list[tuple[str, str]] = []
        with self._lock:
            self._write(name, data, events)
        for level, text in events:
            self._report(name, level, text)

    def _write(self, name: str, data: str, events: list[tuple[str, str]]) -> None:
        """Under the lock: the notes due, then ``data``; what happened goes to ``events``."""
        if name in self._removed:
            return
        trouble = self._trouble.get(name)
        if trouble is None and self._full is not None and not self._room():
            # Another file of the tree found the disk full: this one waits for room too
            # (what it would write now would take the room the store's state needs).
            self._failed(name, None, self._full, data.count("\n"), False, events)
            return
        if trouble is not None and not self._due(trouble):
            self._count_lost(name, trouble, data.count("\n"))
            return
        try:
            fd, recreated = self._fd(name)
        except OSError as exc:
            self._failed(name, trouble, exc, data.count("\n"), False, events)
            return
        head = ""
        notes: list[tuple[str, str]] = []
        if trouble is not None:
            text = (
                f"{trouble.lost} line(s) are missing here: {trouble.reason()} "
                f"from {_clock(trouble.since)} to {_clock(time.time())}"
            )
            head += ("\n" if trouble.partial else "") + self._note_line(name, f"vc: {text}")
            notes.append(("INFO", f"the log file {self.root / name} is written again; {text}"))
        if recreated:
            text = (
                f"the log file {self.root / name} was deleted while in use and is created "
                "again: the lines before this one are gone from it"
                + (" (the store has them)" if name not in _SHARED_FILES else "")
            )
            head += self._note_line(name, f"vc: {text}")
            notes.append(("WARNING", text))
        head_bytes = head.encode("utf-8", "backslashreplace")
        body = data.encode("utf-8", "backslashreplace")
        payload = memoryview(head_bytes + body)
        written = 0
        try:
            while written < len(payload):
                written += os.write(fd, payload[written:])
        except OSError as exc:
            if written >= len(head_bytes):  # the notes got through: that trouble is over
                self._trouble.pop(name, None)
                events.extend(notes)
                trouble = None
            lost = body[max(0, written - len(head_bytes)) :].count(b"\n")
            self._failed(name, trouble, exc, lost, written > 0, events)
            return
        self._trouble.pop(name, None)
        events.extend(notes)

    def _count_lost(self, name: str, trouble: _FileTrouble, lines: int) -> None:
        trouble.lost += lines
        self.lost[name] = self.lost.get(name, 0) + lines

    def _failed(
        self,
        name: str,
        trouble: _FileTrouble | None,
        exc: OSError,
        lost: int,
        partial: bool,
        events: list[tuple[str, str]],
    ) -> None:
        """Under the lock: a write failed with ``exc``, leaving out ``lost`` lines (and
        the file's last line cut short if ``partial``)."""
        if trouble is None:
            trouble = self._trouble[name] = _FileTrouble(exc)
            if trouble.full:
                self._full = exc
                self._room_checked = time.monotonic()
            what = "the disk is full" if trouble.full else trouble.reason()
            until = "there is room again" if trouble.full else "it can be written again"
            events.append(
                (
                    "WARNING",
                    f"cannot write the log file {self.root / name}: {what}; its lines are "
                    f"left out until {until}",
                )
            )
        else:
            trouble.error = exc
            trouble.next_try = time.monotonic() + FILE_RETRY
        trouble.partial = trouble.partial or partial
        self.last_error[name] = "the disk was full" if trouble.full else trouble.reason()
        self._count_lost(name, trouble, lost)

    def _due(self, trouble: _FileTrouble) -> bool:
        if time.monotonic() < trouble.next_try:
            return False
        if trouble.full and not trouble.last_try and not self._room():
            trouble.next_try = time.monotonic() + FILE_RETRY
            return False
        return True

    def _room(self) -> bool:
        """Under the lock, after the disk was found full: is there room again (looked at
        once per :data:`FILE_RETRY` at most)?"""
        if self._full is None:
            return True
        now = time.monotonic()
        if now - self._room_checked < FILE_RETRY:
            return False
        self._room_checked = now
        from store.space import has_room

        if not has_room(self.root):
            return False
        self._full = None
        return True

    @staticmethod
    def _note_line(name: str, text: str) -> str:
        session_id = name[:-4] if name not in _SHARED_FILES else None
        return format_line(time.time(), "WARNING", NOTE_CATEGORY, session_id, None, text)

    def _report(self, name: str, level: str, text: str) -> None:
        if self.on_event is not None:
            try:
                self.on_event(name, level, text)
            except Exception:
                pass  # reporting a log problem must not become one

    def trouble(self, name: str) -> str | None:
        """Why ``name`` cannot be written now ("the disk is full", …), or None."""
        trouble = self._trouble.get(name)
        if trouble is None:
            return None
        return "the disk is full" if trouble.full else trouble.reason()

    def write_session(self, session_id: str, data: str) -> None:
        self.write(self.session_path(session_id).name, data)

    def remove_session(self, session_id: str) -> None:
        """The session was deleted: its file goes, and a line still written of it (its
        stages' stop) does not create it again."""
        path = self.session_path(session_id)
        with self._lock:
            self._removed.add(path.name)
            fd = self._fds.pop(path.name, None)
            if fd is not None:
                os.close(fd)
            self._trouble.pop(path.name, None)
        path.unlink(missing_ok=True)

    def close(self) -> None:
        """Close the files; a file that lines are missing from gets its note now if it
        can (the disk may have room for a line, if not for all that was left out)."""
        with self._lock:
            troubles = list(self._trouble.items())
        for name, trouble in troubles:
            trouble.next_try = 0.0
            trouble.last_try = True
            if not trouble.full or self._room_for_a_line():
                self.write(name, "")
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()

    def _room_for_a_line(self) -> bool:
        from store.space import free_bytes

        free = free_bytes(self.root)
        return free is None or free > 4096


_SHARED_FILES = ("operations.log", "integration.log")


def _clock(at: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(at))


class Logging:
    """What :func:`setup_logging` installed; ``close()`` flushes and removes it."""

    def __init__(self, files: LogFiles, mirror: StoreMirror | None, handler_id: int) -> None:
        self.files = files
        self.mirror = mirror
        self._handler_id = handler_id
        self.forgotten = BoundedSet()

    def flush(self, timeout: float = 30.0) -> None:
        if self.mirror is not None:
            self.mirror.flush(timeout)

    @contextmanager
    def deleting(self, session_id: str) -> Iterator[None]:
        """Around the deletion of a session: its records go to operations.log only (neither
        its file nor the store's log table outlive it), and its file goes once the delete
        succeeded; a refused delete leaves everything as it was."""
        self.flush()
        self.forgotten.add(session_id)
        try:
            yield
        except BaseException:
            self.forgotten.discard(session_id)
            raise
        self.files.remove_session(session_id)

    def forget(self, session_id: str) -> None:
        """Another process deleted the session: as :meth:`deleting` ends, what is still
        said of it goes to operations.log only, and its file (created again by a line
        written since the delete) goes. Idempotent."""
        if session_id not in self.forgotten:
            self.forgotten.add(session_id)
            self.files.remove_session(session_id)

    def close(self) -> None:
        from loguru import logger

        try:
            logger.remove(self._handler_id)
        except ValueError:
            pass
        if self.mirror is not None:
            from store.changes import enable_logging, logging_enabled

            enable_logging(logging_enabled(), in_store=False)
            self.mirror.close()
        self.files.close()


def setup_logging(log_dir: Path, session_factory: Any | None = None) -> Logging:
    """Route loguru records to the files and (with a session factory) to the store."""
    from loguru import logger

    from store.changes import enable_logging
    from store.log_ingest import LogLines

    files = LogFiles(log_dir)
    mirror: StoreMirror | None = None
    forgotten = BoundedSet()
    warned: list[bool] = []

    def say_on_terminal(text: str) -> None:
        try:
            print(f"vc: warning: {text}", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            pass

    def warn_once(exc: BaseException) -> None:
        # A log file that cannot be written must not undo (or hide) an operation that has
        # already committed: say so once, on one line, and go on.
        if not warned:
            warned.append(True)
            reason = f"{exc.strerror or exc}" if isinstance(exc, OSError) else f"{exc}"
            where = f" {exc.filename}" if isinstance(exc, OSError) and exc.filename else ""
            try:
                print(
                    f"vc: warning: cannot write log{where}: {reason}", file=sys.stderr, flush=True
                )
            except (OSError, ValueError):
                pass

    if session_factory is not None:
        from store.log_ingest import append_log_lines
        from store.space import StoreSpace

        def write_batch(groups: Sequence[Any]) -> list[Any]:
            with session_factory() as session:
                return append_log_lines(session, groups)

        space = StoreSpace.of(session_factory.kw["bind"])

        def store_full(exc: BaseException) -> None:
            where = space.database if space is not None else "the store"
            say_on_terminal(
                f"cannot write the store {where}: the disk is full; log lines are left "
                "out of it (a note says how many, where) so that the sessions' states can "
                "still be recorded"
            )

        mirror = StoreMirror(
            write_batch, on_error=warn_once, space=space, on_full=store_full, forgotten=forgotten
        )

    def file_event(name: str, level: str, text: str) -> None:
        # Not through loguru: this runs inside the sink. The session's own file problems
        # go to the store too (its other records are there already).
        if level == "WARNING":
            say_on_terminal(text)
        session_id = name.removesuffix(".log")
        if (
            mirror is not None
            and name not in _SHARED_FILES
            and _SAFE_ID.match(session_id)
            and session_id not in forgotten
        ):
            mirror.add(LogLines(session_id, time.time(), level, NOTE_CATEGORY, None, (text,)))

    files.on_event = file_event

    def sink(message: Any) -> None:
        record = message.record
        extra = record["extra"]
        category = extra.get("category")
        if category not in CATEGORIES:
            return
        session_id = extra.get("session_id")
        stage = extra.get("stage")
        level = record["level"].name
        if level not in LEVELS:
            level = "ERROR" if record["level"].no >= 40 else "INFO"
        at = record["time"].timestamp()
        text = str(record["message"])
        line = format_line(at, level, category, session_id, stage, text)
        try:
            if category.endswith("operations"):
                files.write("operations.log", line)
            else:
                files.write("integration.log", line)
            if session_id and _SAFE_ID.match(session_id) and session_id not in forgotten:
                files.write_session(session_id, line)
                # "stored": written with the change it tells of (store.changes).
                if mirror is not None and not extra.get("stored"):
                    lease = extra.get("lease")  # a runner's line: stored while it holds
                    mirror.add(LogLines(session_id, at, level, category, stage, (text,), lease))
        except Exception as exc:
            warn_once(exc)

    logger.remove()
    enable_logging(in_store=mirror is not None)
    handler_id = logger.add(sink, level="DEBUG", format="{message}", catch=True)
    result = Logging(files, mirror, handler_id)
    result.forgotten = forgotten
    return result
