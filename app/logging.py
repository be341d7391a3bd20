"""Logging (DESIGN §7): loguru with four categories, three kinds of files, and a mirror of
every session record into the store's log table (what `session logs` and the dashboard read,
from any host).

Files are written with one ``os.write`` per batch on ``O_APPEND`` descriptors: appends from
several processes never interleave inside a line and ``tail -f`` sees whole lines. Each
record is one line; newlines inside a message are escaped so a stage cannot forge records.
The store mirror buffers rows and inserts them in batches from one background thread.
"""

from __future__ import annotations

import errno
import os
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CATEGORIES = (
    "workflow.session.integration",
    "workflow.session.operations",
    "workflow.stage.integration",
    "workflow.stage.operations",
)
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


def format_line(
    at: float, level: str, category: str, session_id: str | None, stage: str | None, text: str
) -> str:
    """One record as one line of a log file."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at))
    millis = int((at % 1) * 1000)
    if "\n" in text or "\r" in text:
        text = text.replace("\r", "\\r").replace("\n", "\\n")
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
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(root))
    return root


class LogFiles:
    """The log tree: ``<log_dir>/workflow/session/{<id>.log, operations.log,
    integration.log}``, created on demand (directories 0700, files 0600)."""

    def __init__(self, log_dir: Path) -> None:
        self.root = log_dir / "workflow" / "session"
        self._fds: dict[str, int] = {}
        self._lock = threading.Lock()

    def session_path(self, session_id: str) -> Path:
        if not _SAFE_ID.match(session_id):
            raise ValueError(f"invalid session id for a log file name: {session_id!r}")
        return self.root / f"{session_id}.log"

    def _fd(self, name: str) -> int:
        fd = self._fds.get(name)
        if fd is None:
            make_private_dirs(self.root)
            fd = os.open(self.root / name, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            if len(self._fds) > 64:  # called under self._lock: close without re-locking
                for old in self._fds.values():
                    os.close(old)
                self._fds.clear()
            self._fds[name] = fd
        return fd

    def write(self, name: str, data: str) -> None:
        payload = data.encode("utf-8", "backslashreplace")
        with self._lock:
            fd = self._fd(name)
            view = memoryview(payload)
            while view:
                written = os.write(fd, view)
                view = view[written:]

    def write_session(self, session_id: str, data: str) -> None:
        self.write(self.session_path(session_id).name, data)

    def remove_session(self, session_id: str) -> None:
        path = self.session_path(session_id)
        with self._lock:
            fd = self._fds.pop(path.name, None)
            if fd is not None:
                os.close(fd)
        path.unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            for fd in self._fds.values():
                os.close(fd)
            self._fds.clear()


#: How often the mirror stores what was logged. Each write holds SQLite's write lock and
#: the GIL for a moment, which stalls the runner's own stage bookkeeping if it comes often:
#: 0.5 s keeps log lines in the store (dashboard, `logs --follow`) well within a second
#: while a workflow of quick stages meets one write, not a handful.
MIRROR_INTERVAL = 0.5
#: Longest wait between two tries of a log batch while the store is unreachable.
MAX_RETRY_DELAY = 5.0
#: How long a closing mirror keeps trying to store what is left.
CLOSE_PATIENCE = 10.0
#: Most memory (about: characters plus :data:`LINE_OVERHEAD` per line) that records waiting
#: for an unreachable store may hold. Past it the oldest waiting records are let go, and the
#: store gets one WARNING per session, stage and category saying how many are missing there
#: (the session log file has every one of them): a chatty stage during a long outage must not
#: grow the runner until the kernel kills it, which would lose far more.
MAX_PENDING = 256 * 1024 * 1024
#: What one waiting line costs beyond its characters (a str object and a list slot).
LINE_OVERHEAD = 64


class StoreMirror:
    """Batches log records into the store from one background thread.

    Its unit is a group of lines that share time, level, category, session and stage
    (``store.managers.LogLines``: what a stage printed in one read, or one record), so a
    stage's output crosses from the reader to the database with no per-line object.
    ``add`` never blocks on the database: a writer that is slower than the producer makes
    the batches bigger, not the producer slower. ``flush`` waits until everything added so
    far is committed (or let go, see :data:`MAX_PENDING`); ``close`` flushes and stops.
    """

    #: Pending lines that wake the writer before its interval is up.
    WAKE_AT = 20000

    def __init__(
        self,
        write_batch: Callable[[Sequence[Any]], None],
        *,
        interval: float = MIRROR_INTERVAL,
        on_error: Callable[[BaseException], None] | None = None,
        max_pending: int = MAX_PENDING,
    ) -> None:
        self._write_batch = write_batch
        self._interval = interval
        self._on_error = on_error
        self._max_pending = max_pending
        self._pending: deque[Any] = deque()
        self._pending_lines = 0
        self._pending_cost = 0
        #: Records let go while the store was unreachable: (session, stage, category) ->
        #: [how many lines, the first group]; noted in the store with the next batch.
        self._dropped: dict[tuple[str, str | None, str], list[Any]] = {}
        self.dropped_lines = 0
        #: Set while the writer's last try failed for a transient reason (store away): only
        #: then are records let go. A reachable store that is slower than a stage only
        #: makes the batches bigger; every line gets there.
        self._store_away = False
        #: Groups let go since the in-flight batch was taken: all newer than it, so they
        #: count as done only once it is (``flush`` must not return before it is stored).
        self._let_go = 0
        #: What the batch being written holds (counted against the limit as well).
        self._inflight_cost = 0
        self._cond = threading.Condition()
        self._added = 0
        self._done = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="vc-log-mirror", daemon=True)
        self._thread.start()

    def add(self, lines: Any) -> int:
        """Queue one ``LogLines`` group (its ``texts`` must not change afterwards). Returns
        its mark: :meth:`stored` says when it (and everything added before) is in the
        store."""
        count = len(lines.texts)
        cost = _cost(lines)
        with self._cond:
            self._pending.append((lines, cost))
            self._added += 1
            mark = self._added
            self._pending_lines += count
            self._pending_cost += cost
            if self._store_away and self._pending_cost + self._inflight_cost > self._max_pending:
                self._let_go_oldest()
            if self._pending_lines >= self.WAKE_AT:
                self._cond.notify_all()
        return mark

    def stored(self, mark: int) -> bool:
        """Whether the group with this mark, and every group added before it, is in the
        store (or was let go, with a note in its place)."""
        return self._done >= mark

    def wait_stored(self, mark: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for :meth:`stored`; the writer is woken at once
        rather than at its next interval. True once stored."""
        if self._done >= mark:
            return True
        deadline = time.monotonic() + timeout
        with self._cond:
            self._cond.notify_all()
            while self._done < mark:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
                self._cond.notify_all()
        return True

    @property
    def pending_bytes(self) -> int:
        """About the memory the records waiting for the store hold (see MAX_PENDING)."""
        return self._pending_cost

    def _let_go_oldest(self) -> None:
        """Under the lock, while the writer is stuck on an unreachable store: let the
        oldest waiting records go, down to half the limit (so this runs rarely), counted
        per session, stage and category for the note that takes their place."""
        target = max(0, self._max_pending // 2 - self._inflight_cost)
        while self._pending and self._pending_cost > target:
            group, cost = self._pending.popleft()
            self._pending_cost -= cost
            self._pending_lines -= len(group.texts)
            self._let_go += 1
            key = (group.session_id, group.stage, group.category)
            seen = self._dropped.get(key)
            if seen is None:
                self._dropped[key] = [len(group.texts), group]
            else:
                seen[0] += len(group.texts)
            self.dropped_lines += len(group.texts)

    def _notes(self) -> list[Any]:
        """Under the lock: one WARNING record per (session, stage, category) whose records
        were let go, dated like the first of them, so it sits where they would have."""
        notes = []
        for count, first in self._dropped.values():
            text = (
                f"vc: {count} log line(s) are missing here: the store was unreachable for "
                "longer than they could be kept in memory (the session log file has them all)"
            )
            notes.append(first._replace(level="WARNING", texts=(text,)))
        self._dropped.clear()
        return notes

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._pending and not self._closed:
                    self._cond.wait(self._interval)
                notes = self._notes() if self._dropped else []
                groups = [group for group, _ in self._pending]
                self._pending.clear()
                self._pending_lines = 0
                self._inflight_cost, self._pending_cost = self._pending_cost, 0
                closed = self._closed
            if groups or notes:
                try:
                    self._write(notes + groups)
                finally:
                    self._store_away = False
                    with self._cond:
                        self._done += len(groups) + self._let_go
                        self._let_go = 0
                        self._inflight_cost = 0
                        self._cond.notify_all()
            elif closed:
                return

    def _write(self, batch: list[Any]) -> None:
        """Store one batch. While the store is unreachable (server restarting, network
        down, SQLite locked) the batch waits and is retried with a backoff up to
        :data:`MAX_RETRY_DELAY`, as long as the mirror runs: nothing is dropped because the
        database went away for a while (records that pile up meanwhile are kept up to
        :data:`MAX_PENDING`). After ``close`` it gets :data:`CLOSE_PATIENCE`
        seconds. Any other error (a row the database refuses) is retried a few times, then
        reported and the batch dropped (the session log file has every line anyway)."""
        from store.errors import transient_errors

        transient = transient_errors()
        delay = 0.1
        other_errors = 0
        closing_deadline: float | None = None
        while True:
            try:
                self._write_batch(batch)
                self._store_away = False
                return
            except transient as exc:
                self._store_away = True
                if self._closed:
                    now = time.monotonic()
                    closing_deadline = closing_deadline or now + CLOSE_PATIENCE
                    if now > closing_deadline:
                        if self._on_error is not None:
                            self._on_error(exc)
                        return
            except Exception as exc:
                other_errors += 1
                if other_errors >= 4:
                    if self._on_error is not None:
                        self._on_error(exc)
                    return
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._added
            self._cond.notify_all()
            while self._done < target and time.monotonic() < deadline:
                self._cond.wait(0.05)
                self._cond.notify_all()

    def close(self) -> None:
        """Store what is left, giving an unreachable store CLOSE_PATIENCE seconds (what
        cannot be stored is reported through ``on_error``; the log files have it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.flush(timeout=CLOSE_PATIENCE + MAX_RETRY_DELAY)
        self._thread.join(timeout=CLOSE_PATIENCE + MAX_RETRY_DELAY)


def _cost(group: Any) -> int:
    """About the memory a waiting group of lines holds (see :data:`MAX_PENDING`)."""
    texts = group.texts
    if len(texts) == 1:
        return len(texts[0]) + LINE_OVERHEAD
    return sum(map(len, texts)) + LINE_OVERHEAD * len(texts)


class Logging:
    """What :func:`setup_logging` installed; ``close()`` flushes and removes it."""

    def __init__(self, files: LogFiles, mirror: StoreMirror | None, handler_id: int) -> None:
        self.files = files
        self.mirror = mirror
        self._handler_id = handler_id
        self.forgotten: set[str] = set()

    def flush(self) -> None:
        if self.mirror is not None:
            self.mirror.flush()

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

    def close(self) -> None:
        from loguru import logger

        try:
            logger.remove(self._handler_id)
        except ValueError:
            pass
        if self.mirror is not None:
            self.mirror.close()
        self.files.close()


def setup_logging(log_dir: Path, session_factory: Any | None = None) -> Logging:
    """Route loguru records to the files and (with a session factory) to the store."""
    from loguru import logger

    from store.managers import LogLines, enable_logging

    files = LogFiles(log_dir)
    mirror: StoreMirror | None = None
    forgotten: set[str] = set()
    warned: list[bool] = []

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
        from store.managers import append_log_lines

        def write_batch(groups: Sequence[Any]) -> None:
            with session_factory() as session:
                append_log_lines(session, groups)

        mirror = StoreMirror(write_batch, on_error=warn_once)

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
                if mirror is not None:
                    mirror.add(LogLines(session_id, at, level, category, stage, (text,)))
        except Exception as exc:
            warn_once(exc)

    logger.remove()
    enable_logging()
    handler_id = logger.add(sink, level="DEBUG", format="{message}", catch=True)
    result = Logging(files, mirror, handler_id)
    result.forgotten = forgotten
    return result
