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
        path = self.session_path(session_id)
        with self._lock:
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


#: Why records were let go, and what the note that takes their place says.
_AWAY = (
    "the store was unreachable for longer than they could be kept in memory (the session "
    "log file has them all)"
)
_FULL = "the store's disk was full (see the session log file)"
#: While the store's disk is full: how often the writer looks for room again.
FULL_RETRY = 1.0


class StoreMirror:
    """Batches log records into the store from one background thread.

    Its unit is a group of lines that share time, level, category, session and stage
    (``store.log_ingest.LogLines``: what a stage printed in one read, or one record), so a
    stage's output crosses from the reader to the database with no per-line object.
    ``add`` never blocks on the database: a writer that is slower than the producer makes
    the batches bigger, not the producer slower. ``flush`` waits until everything added so
    far is committed (or let go, see :data:`MAX_PENDING`); ``close`` flushes and stops.

    A full disk (with ``space``, the SQLite store's, see :mod:`store.space`): log rows give
    way to the store's state. The writer stops writing (it tries again only once there is
    room, and first makes the store's reserve again), records wait as they do for an
    unreachable store, and ``flush``, ``wait_stored`` and ``close`` do not wait for room:
    they let what waits go and write only the notes that say how many lines are missing
    where (one row each; if even that fails for lack of room, the reserve is released for
    them, since whoever flushes is about to record an outcome). ``on_full`` hears of it
    once per episode.
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
        space: Any = None,
        on_full: Callable[[BaseException], None] | None = None,
    ) -> None:
        self._write_batch = write_batch
        self._interval = interval
        self._on_error = on_error
        self._max_pending = max_pending
        self._space = space
        self._on_full = on_full
        self._pending: deque[Any] = deque()
        self._pending_lines = 0
        self._pending_cost = 0
        #: Records let go: (session, stage, category, why) -> [how many lines, the first
        #: group]; noted in the store with the next batch.
        self._dropped: dict[tuple[str, str | None, str, str], list[Any]] = {}
        self.dropped_lines = 0
        #: Lines let go so far, by session.
        self.dropped_by_session: dict[str, int] = {}
        #: Set while the writer's last try failed for a transient reason (store away, or
        #: its disk full): only then are records let go. A reachable store that is slower
        #: than a stage only makes the batches bigger; every line gets there.
        self._store_away = False
        #: Set while the store's disk is full (see the class doc).
        self.full = False
        #: The store error waiting will not cure (``store.failures``) that the last write
        #: met, None once a write succeeds: its batch is let go at once, not retried, and
        #: a runner stops on it.
        self.failure: Any = None
        #: A flush or a close asked a writer stuck on a full disk to let go.
        self._give_up = False
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
            while self._done < mark:
                self._nudge()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.05))
        return True

    def _nudge(self) -> None:
        """Under the lock: wake the writer, and tell it to let go if the disk is full."""
        if self.full:
            self._give_up = True
        self._cond.notify_all()

    @property
    def pending_bytes(self) -> int:
        """About the memory the records waiting for the store hold (see MAX_PENDING)."""
        return self._pending_cost

    def _drop(self, group: Any, why: str) -> None:
        """Under the lock: count a group let go, for the note that takes its place."""
        key = (group.session_id, group.stage, group.category, why)
        seen = self._dropped.get(key)
        if seen is None:
            self._dropped[key] = [len(group.texts), group]
        else:
            seen[0] += len(group.texts)
        self.dropped_lines += len(group.texts)
        sid = group.session_id
        self.dropped_by_session[sid] = self.dropped_by_session.get(sid, 0) + len(group.texts)

    def _let_go_oldest(self) -> None:
        """Under the lock, while the writer is stuck on an unreachable store: let the
        oldest waiting records go, down to half the limit (so this runs rarely), counted
        per session, stage and category for the note that takes their place."""
        target = max(0, self._max_pending // 2 - self._inflight_cost)
        while self._pending and self._pending_cost > target:
            self._let_go_first()

    def _let_go_first(self) -> None:
        group, cost = self._pending.popleft()
        self._pending_cost -= cost
        self._pending_lines -= len(group.texts)
        self._let_go += 1
        self._drop(group, _FULL if self.full else _AWAY)

    def _notes(self) -> list[Any]:
        """Under the lock: one WARNING record per (session, stage, category, why) whose
        records were let go, dated like the first of them, so it sits where they would
        have."""
        notes = []
        for (_sid, _stage, _category, why), (count, first) in self._dropped.items():
            text = f"vc: {count} log line(s) are missing here: {why}"
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
                    self._write(notes, groups)
                finally:
                    self._store_away = self.full
                    with self._cond:
                        self._done += len(groups) + self._let_go
                        self._let_go = 0
                        self._inflight_cost = 0
                        self._cond.notify_all()
            elif closed:
                return

    def _write(self, notes: list[Any], groups: list[Any]) -> None:
        """Store one batch. While the store is unreachable (server restarting, network
        down, SQLite locked) the batch waits and is retried with a backoff up to
        :data:`MAX_RETRY_DELAY`, as long as the mirror runs: nothing is dropped because the
        database went away for a while (records that pile up meanwhile are kept up to
        :data:`MAX_PENDING`). After ``close`` it gets :data:`CLOSE_PATIENCE`
        seconds. While its disk is full, see the class doc. Any other error (a row the
        database refuses) is retried a few times, then reported and the batch dropped (the
        session log file has every line anyway)."""
        from store.errors import transient_errors
        from store.space import is_disk_full

        transient = transient_errors()
        delay = 0.1
        other_errors = 0
        closing_deadline: float | None = None
        while True:
            if self.full:
                if self._space.has_room():
                    self._space.ensure_reserve()
                elif self._give_up or self._closed:
                    self._abandon(notes, groups)
                    return
                else:
                    with self._cond:
                        if not (self._give_up or self._closed):
                            self._cond.wait(FULL_RETRY)
                    continue
            try:
                try:
                    self._write_batch(notes + groups)
                except Exception as exc:
                    if self._refused_for_good(exc, groups):
                        return
                    raise
                self._store_away = self.full = self._give_up = False
                self.failure = None
                return
            except transient as exc:
                self._store_away = True
                if self._space is not None and is_disk_full(exc):
                    if not self.full:
                        self.full = True
                        if self._on_full is not None:
                            self._on_full(exc)
                        continue
                    if self._give_up or self._closed:  # full again despite the room seen
                        self._abandon(notes, groups)
                        return
                    with self._cond:
                        self._cond.wait(FULL_RETRY)
                    continue
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
                    why = f"the store refused them ({_first_line(exc)})"
                    with self._cond:  # noted with the next batch
                        for group in groups:
                            self._drop(group, why)
                    return
            time.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_DELAY)

    def _refused_for_good(self, exc: BaseException, groups: list[Any]) -> bool:
        """A store error that waiting will not cure (``store.failures``): the batch is let
        go at once instead of retried forever (the session log files have every line),
        and :attr:`failure` says why, for whoever writes through this store to stop on
        it. False for any other error."""
        from store.failures import classify

        failure = classify(exc)
        if failure is None or not failure.permanent:
            return False
        self.failure = failure
        why = f"the store refused them for good ({failure.what})"
        with self._cond:  # noted with the next batch, if the store takes it
            for group in groups:
                self._drop(group, why)
        return True

    def _abandon(self, notes: list[Any], groups: list[Any]) -> None:
        """The disk is full and someone waits: let the batch and everything waiting go,
        and store only the notes saying so (see the class doc)."""
        from store.space import is_disk_full

        with self._cond:
            for group in groups:
                self._drop(group, _FULL)
            while self._pending:
                self._let_go_first()
            self._give_up = False
            notes = notes + self._notes()
        for attempt in range(2):
            try:
                self._write_batch(notes)
                return
            except Exception as exc:
                if attempt == 0 and is_disk_full(exc) and self._space.release_reserve():
                    continue
                if self._on_error is not None:
                    self._on_error(exc)
                return

    def flush(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._added
            self._nudge()
            while self._done < target and time.monotonic() < deadline:
                self._cond.wait(0.05)
                self._nudge()

    def close(self) -> None:
        """Store what is left, giving an unreachable store CLOSE_PATIENCE seconds (what
        cannot be stored is reported through ``on_error``; the log files have it)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self.flush(timeout=CLOSE_PATIENCE + MAX_RETRY_DELAY)
        self._thread.join(timeout=CLOSE_PATIENCE + MAX_RETRY_DELAY)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


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

    from store.changes import enable_logging
    from store.log_ingest import LogLines

    files = LogFiles(log_dir)
    mirror: StoreMirror | None = None
    forgotten: set[str] = set()
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

        def write_batch(groups: Sequence[Any]) -> None:
            with session_factory() as session:
                append_log_lines(session, groups)

        space = StoreSpace.of(session_factory.kw["bind"])

        def store_full(exc: BaseException) -> None:
            where = space.database if space is not None else "the store"
            say_on_terminal(
                f"cannot write the store {where}: the disk is full; log lines are left "
                "out of it (a note says how many, where) so that the sessions' states can "
                "still be recorded"
            )

        mirror = StoreMirror(write_batch, on_error=warn_once, space=space, on_full=store_full)

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
