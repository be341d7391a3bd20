"""The mirror of log records into the store (docs/ARCHITECTURE.md §5, §7): what `session logs`
and the dashboard read, from any host. Apart from :mod:`app.logging` (the sinks and files),
which hands it every session record.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

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
#: Most memory (counted as for :data:`MAX_PENDING`) that a stage's output may hold while
#: the store, reachable, takes it slower than the stage prints: past it the stage's output
#: waits (its splitter, then its reader, its pipe and the stage itself), so a stage that
#: prints millions of lines a second runs at the store's pace instead of growing the runner
#: by gigabytes. A million short lines (``seq 1000000``) cost about 70 MB and never wait.
MAX_BEHIND = 128 * 1024 * 1024


#: Why records were let go, and what the note that takes their place says.
_AWAY = (
    "the store was unreachable for longer than they could be kept in memory (the session "
    "log file has them all)"
)
_FULL = "the store's disk was full (see the session log file)"
_TAKEN_OVER = (
    "they were read by a runner another one had taken the session over from (the session "
    "log file on that runner's host has them)"
)
#: While the store's disk is full: how often the writer looks for room again.
FULL_RETRY = 1.0


class BoundedSet:
    """Strings, at most ``limit`` of them, the oldest let go first: the sessions deleted
    while this process may still log of them (a runner stopping their stages), whose
    lines go nowhere but ``operations.log``. A session deleted long ago has nothing left
    to say here, and a worker that runs for months beside a retention job must not grow
    with it. Adding takes a lock; a look does not (one dict lookup)."""

    def __init__(self, limit: int = 4096) -> None:
        self._limit = limit
        self._items: dict[str, None] = {}
        self._lock = threading.Lock()

    def add(self, item: str) -> None:
        with self._lock:
            self._items[item] = None
            while len(self._items) > self._limit:
                del self._items[next(iter(self._items))]

    def discard(self, item: str) -> None:
        with self._lock:
            self._items.pop(item, None)

    def __contains__(self, item: object) -> bool:
        return item in self._items


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
        write_batch: Callable[[Sequence[Any]], Sequence[Any] | None],
        *,
        interval: float = MIRROR_INTERVAL,
        on_error: Callable[[BaseException], None] | None = None,
        max_pending: int = MAX_PENDING,
        max_behind: int = MAX_BEHIND,
        space: Any = None,
        on_full: Callable[[BaseException], None] | None = None,
        transient: tuple[type[BaseException], ...] | None = None,
        forgotten: BoundedSet | None = None,
    ) -> None:
        self._max_behind = max_behind
        #: Deleted sessions: their lines still waiting are not written (no row outlives
        #: the session) and count as done.
        self._forgotten = forgotten if forgotten is not None else BoundedSet()
        self._write_batch = write_batch
        #: The errors of a store that is away for now (default: SQLAlchemy's and psycopg's,
        #: ``store.errors.transient_errors``; a writer on the bare driver names its own).
        self._transient = transient
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

    def add(self, lines: Any, *, wait_for_room: bool = False) -> int:
        """Queue one ``LogLines`` group (its ``texts`` must not change afterwards). Returns
        its mark: :meth:`stored` says when it (and everything added before) is in the
        store. ``wait_for_room`` (a stage's output): first wait while the store, reachable,
        is :data:`MAX_BEHIND` behind."""
        count = len(lines.texts)
        cost = _cost(lines)
        with self._cond:
            while wait_for_room and self._behind():
                self._cond.notify_all()  # the writer need not wait for its interval
                self._cond.wait(0.5)
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

    def _behind(self) -> bool:
        """Under the lock: records wait beyond :data:`MAX_BEHIND` for a store that takes
        them (while it does not, :data:`MAX_PENDING` lets the oldest go instead)."""
        if self._store_away or self._closed or self.failure is not None:
            return False
        return self._pending_cost + self._inflight_cost > self._max_behind

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
            notes.append(first._replace(level="WARNING", texts=(text,), lease=None))
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

    def _of_live_sessions(self, rows: list[Any]) -> list[Any]:
        """``rows`` without those of sessions deleted meanwhile: no row outlives its
        session (they count as done all the same)."""
        forgotten = self._forgotten
        return [row for row in rows if row.session_id not in forgotten]

    def _store(self, rows: list[Any]) -> None:
        """Write ``rows``; those of a runner the store says was taken over (their ``lease``
        is not the session's claim any more: ``store.log_ingest``) are left out, and a
        note says how many where."""
        left_out = self._write_batch(rows)
        if left_out:
            with self._cond:  # noted with the next batch
                for group in left_out:
                    self._drop(group, _TAKEN_OVER)

    def _write(self, notes: list[Any], groups: list[Any]) -> None:
        """Store one batch. While the store is unreachable (server restarting, network
        down, SQLite locked) the batch waits and is retried with a backoff up to
        :data:`MAX_RETRY_DELAY`, as long as the mirror runs: nothing is dropped because the
        database went away for a while (records that pile up meanwhile are kept up to
        :data:`MAX_PENDING`). After ``close`` it gets :data:`CLOSE_PATIENCE`
        seconds. While its disk is full, see the class doc. Any other error (a row the
        database refuses) is retried a few times, then reported and the batch dropped (the
        session log file has every line anyway)."""
        from store.space import is_disk_full

        transient = self._transient
        if transient is None:
            from store.errors import transient_errors

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
                    rows = self._of_live_sessions(notes + groups)  # again at each try
                    if rows:
                        self._store(rows)
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
        notes = self._of_live_sessions(notes)
        for attempt in range(2):
            try:
                if notes:
                    self._store(notes)
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
