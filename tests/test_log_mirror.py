"""The store mirror of log records (app.log_mirror.StoreMirror) on a real SQLite store: while
the store is unreachable (locked past the busy timeout) records wait, within a memory
limit; past it the oldest are let go and one WARNING in the store says how many are missing
there. A store that is only slow loses nothing."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from app.log_mirror import StoreMirror
from store import get_session_factory, init_db
from store.log_ingest import LogLines, append_log_lines
from tests.waiting import wait_until

SID = "0123456789abcdef0123456789abcdef"
CATEGORY = "workflow.stage.integration"
#: The mirror's memory limit in these tests: about 100 lines of "line NNNN" (see _cost).
LIMIT = 100 * (9 + 64)


@pytest.fixture
def store(sqlite_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """(engine, write_batch) on a fresh SQLite store with a short busy timeout."""
    monkeypatch.setenv("VC_BUSY_TIMEOUT", "0.1")
    engine = init_db(sqlite_url)
    factory = get_session_factory(engine)

    def write_batch(groups: Any) -> list[LogLines]:
        with factory() as session:
            return append_log_lines(session, groups)

    yield engine, write_batch
    engine.dispose()


def _line(i: int) -> LogLines:
    return LogLines(SID, 1_000.0 + i, "INFO", CATEGORY, "chatty", (f"line {i:04d}",))


def _stored(engine: Any) -> list[tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT level, text FROM log_records ORDER BY id"))
        return [(r[0], r[1]) for r in rows]


@pytest.fixture
def cut_off(store: Any, sqlite_url: str) -> Iterator[Any]:
    """A mirror (memory limit LIMIT) whose store is away: another connection holds the
    write lock, and line 0 is in flight, refused at least once. ``mirror.back()`` (set on
    this test mirror only) lets the store answer again."""
    _, write_batch = store
    tries: list[int] = []

    def counted(groups: Any) -> None:
        tries.append(len(groups))
        write_batch(groups)

    mirror = StoreMirror(counted, interval=0.05, max_pending=LIMIT)
    blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
    blocker.execute("BEGIN IMMEDIATE")

    def back() -> None:
        if blocker.in_transaction:
            blocker.rollback()

    mirror.back = back  # type: ignore[attr-defined]
    try:
        mirror.add(_line(0))
        wait_until(lambda: len(tries) >= 2, "a second try", 10)
        yield mirror
    finally:
        back()
        blocker.close()
        mirror.close()


def test_records_past_the_memory_limit_during_an_outage_are_replaced_by_a_note(
    store: Any, cut_off: Any
) -> None:
    engine, _ = store
    mirror = cut_off
    for i in range(1, 1001):
        mirror.add(_line(i))
    mirror.back()
    mirror.flush(timeout=30)

    rows = _stored(engine)
    dropped = mirror.dropped_lines
    assert 0 < dropped < 1000
    notes = [t for level, t in rows if level == "WARNING"]
    assert notes == [
        f"vc: {dropped} log line(s) are missing here: the store was unreachable for longer "
        "than they could be kept in memory (the session log file has them all)"
    ]
    kept = [t for level, t in rows if level == "INFO"]
    # the in-flight line, then the newest ones: the gap is where the note stands
    assert kept == ["line 0000"] + [f"line {i:04d}" for i in range(dropped + 1, 1001)]
    assert rows.index(("WARNING", notes[0])) == 1


def test_memory_held_for_an_unreachable_store_stays_within_the_limit(cut_off: Any) -> None:
    for i in range(1, 5001):
        cut_off.add(_line(i))
        assert cut_off.pending_bytes <= LIMIT


def test_flush_waits_for_the_record_in_flight_while_newer_ones_are_let_go(
    store: Any, cut_off: Any
) -> None:
    engine, _ = store
    flushing = threading.Thread(target=cut_off.flush, kwargs={"timeout": 30})
    flushing.start()
    for i in range(1, 301):  # another stage's output: more than the limit
        cut_off.add(_line(i))
    time.sleep(0.3)
    assert cut_off.dropped_lines > 0
    assert flushing.is_alive(), "flush returned while line 0 was not stored"
    cut_off.back()
    flushing.join(30)
    assert ("INFO", "line 0000") in _stored(engine)


def test_a_reachable_store_slower_than_the_output_gets_every_line(store: Any) -> None:
    engine, write_batch = store

    def slow(groups: Any) -> None:
        time.sleep(0.2)  # far slower than the producer: the backlog passes the limit
        write_batch(groups)

    mirror = StoreMirror(slow, interval=0.05, max_pending=LIMIT)
    for i in range(1000):
        mirror.add(_line(i))
    mirror.flush(timeout=30)
    mirror.close()

    assert mirror.dropped_lines == 0
    assert _stored(engine) == [("INFO", f"line {i:04d}") for i in range(1000)]


def test_a_stages_output_waits_for_a_slow_store_instead_of_growing_without_bound(
    store: Any,
) -> None:
    """Output added with ``wait_for_room`` (a stage's) never holds much more than
    ``max_behind`` in memory while a reachable store lags, and every line is stored in
    order."""
    engine, write_batch = store
    behind = 20 * (9 + 64)  # about 20 lines

    def slow(groups: Any) -> None:
        time.sleep(0.02)
        write_batch(groups)

    mirror = StoreMirror(slow, interval=0.05, max_behind=behind)
    most = 0
    for i in range(300):
        mirror.add(_line(i), wait_for_room=True)
        most = max(most, mirror.pending_bytes)
    mirror.flush(timeout=30)
    mirror.close()

    assert most <= behind + (9 + 64)  # one group past the limit at most
    assert mirror.dropped_lines == 0
    assert _stored(engine) == [("INFO", f"line {i:04d}") for i in range(300)]


def test_wait_stored_writes_at_once_instead_of_at_the_next_interval(store: Any) -> None:
    """A runner waits for a stage's lines before recording it COMPLETED: the wait wakes the
    writer rather than sleeping out its interval."""
    engine, write_batch = store
    mirror = StoreMirror(write_batch, interval=30.0)
    try:
        mirror.add(_line(1))
        mark = mirror.add(_line(2))
        assert not mirror.stored(mark)
        assert mirror.wait_stored(mark, 10.0)  # the interval (30 s) did not run out first
        assert mirror.stored(mark)
        assert _stored(engine) == [("INFO", "line 0001"), ("INFO", "line 0002")]
    finally:
        mirror.close()


def test_on_a_full_store_disk_lines_give_way_to_a_note_and_flush_does_not_wait_for_room(
    small_disk: Callable[[str], Path],
) -> None:
    """Log rows give way: once the store's disk is full the mirror stops writing them,
    and a flush (a runner about to record an outcome) lets what waits go and stores only
    the note saying how many lines are missing there. Once there is room again it writes
    again, and makes the store's reserve anew first."""
    from store.space import StoreSpace

    disk = small_disk("16m")
    engine = init_db(f"sqlite:///{disk / 'flow.db'}")
    factory = get_session_factory(engine)
    space = StoreSpace.of(engine)
    assert space is not None and space.reserve.exists()
    filler = disk / "filler"
    filler.write_bytes(bytes(12 << 20))

    def write_batch(groups: Any) -> None:
        with factory() as session:
            append_log_lines(session, groups)

    full: list[BaseException] = []
    mirror = StoreMirror(write_batch, interval=0.05, space=space, on_full=full.append)
    try:
        big = "x" * 1000
        for i in range(5000):  # 5 MB: more than the disk has left
            mirror.add(LogLines(SID, 1_000.0 + i, "INFO", CATEGORY, "chatty", (f"{i} {big}",)))
        wait_until(lambda: mirror.full, "the mirror full", 10)
        assert len(full) == 1
        mirror.flush(timeout=30)
        assert mirror.stored(5000)
        rows = _stored(engine)
        notes = [t for level, t in rows if level == "WARNING"]
        assert len(notes) == 1 and notes[0].endswith(
            "log line(s) are missing here: the store's disk was full (see the session log file)"
        )
        missing = int(notes[0].split()[1])
        assert missing == mirror.dropped_lines > 0
        assert len(rows) - 1 + missing == 5000  # every line stored or noted
        filler.unlink()  # room again
        mark = mirror.add(_line(1))
        assert mirror.wait_stored(mark, 10)
        assert _stored(engine)[-1] == ("INFO", "line 0001")
        assert not mirror.full and space.reserve.exists()
    finally:
        mirror.close()
        engine.dispose()


def test_lines_the_store_refuses_leave_a_note_where_they_are_missing(store: Any) -> None:
    engine, write_batch = store

    def picky(groups: Any) -> None:
        if any(text.startswith("poison") for group in groups for text in group.texts):
            raise ValueError("value out of range")
        write_batch(groups)

    mirror = StoreMirror(picky, interval=0.05, on_error=lambda exc: None)
    try:
        mark = mirror.add(
            LogLines(SID, 1_000.0, "INFO", CATEGORY, "chatty", ("poison 1", "poison 2"))
        )
        assert mirror.wait_stored(mark, 10)  # given up on after a few tries
        assert mirror.wait_stored(mirror.add(_line(1)), 10)
    finally:
        mirror.close()
    assert _stored(engine) == [
        (
            "WARNING",
            "vc: 2 log line(s) are missing here: the store refused them (value out of range)",
        ),
        ("INFO", "line 0001"),
    ]


def test_a_store_that_refuses_for_good_is_not_retried_and_says_why(store: Any) -> None:
    """A missing table (a store error waiting will not cure, store.failures): the batch is
    let go at once, without the retries an outage gets, ``failure`` names it (a runner
    stops on it) and the next batch that gets through clears it."""
    engine, write_batch = store
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE log_records RENAME TO log_records_away"))
    errors: list[BaseException] = []
    mirror = StoreMirror(write_batch, interval=0.05, on_error=errors.append)
    try:
        started = time.monotonic()
        assert mirror.wait_stored(mirror.add(_line(1)), 10)
        assert time.monotonic() - started < 1.0  # no backoff
        assert mirror.failure is not None and mirror.failure.permanent
        assert "no such table: log_records" in mirror.failure.what
        assert mirror.dropped_by_session == {SID: 1}
        assert errors == []  # said once, by whoever stops on it
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE log_records_away RENAME TO log_records"))
        assert mirror.wait_stored(mirror.add(_line(2)), 10)
        assert mirror.failure is None
    finally:
        mirror.close()
    texts = [t for _, t in _stored(engine)]
    assert texts[-1] == "line 0002"
    assert "line 0001" not in texts
    assert any(
        "1 log line(s) are missing here: the store refused them for good" in t for t in texts
    )


def test_the_lines_of_a_deleted_session_still_waiting_are_not_stored(store: Any) -> None:
    """No row outlives a session deleted while its runner still logs of it; the others'
    lines are stored, and a flush does not wait for those left out."""
    from app.log_mirror import BoundedSet

    engine, write_batch = store
    forgotten = BoundedSet()
    mirror = StoreMirror(write_batch, interval=60, forgotten=forgotten)
    try:
        mirror.add(_line(1))
        mirror.add(LogLines("0" * 32, 1_001.0, "INFO", CATEGORY, "other", ("kept",)))
        forgotten.add(SID)
        mirror.flush(timeout=10)
        assert _stored(engine) == [("INFO", "kept")]
    finally:
        mirror.close()


def test_the_deleted_sessions_remembered_are_the_newest_few() -> None:
    """A worker that runs for months beside deletions keeps a bounded set of them."""
    from app.log_mirror import BoundedSet

    seen = BoundedSet(limit=100)
    for i in range(1000):
        seen.add(f"s{i}")
    assert "s999" in seen and "s900" in seen
    assert "s899" not in seen and "s0" not in seen
    seen.discard("s999")
    assert "s999" not in seen


def test_lines_of_a_runner_taken_over_are_left_out_and_a_note_says_how_many(store: Any) -> None:
    """The store refuses a runner's lines once its claim is gone (store.log_ingest): the
    mirror stores, in their place, one WARNING saying how many are missing and where."""
    engine, write_batch = store
    with get_session_factory(engine)() as db:
        from store import FlowSessionManager

        sessions = FlowSessionManager(db)
        sid = sessions.create_session("w", definition=None).id
        change = sessions.start_session(sid, runner_host="here", runner_pid=4242)
        lease = sessions.lease_of(change, "here", 4242)
    stale = replace(lease, token=lease.token + 1)
    mirror = StoreMirror(write_batch, interval=30.0)
    for i in range(3):
        mirror.add(LogLines(sid, time.time(), "INFO", CATEGORY, "s", (f"late {i}",), stale))
    mirror.add(LogLines(sid, time.time(), "INFO", CATEGORY, None, ("a person's line",)))
    mirror.flush(5)
    mirror.close()
    assert _stored(engine) == [
        ("INFO", "a person's line"),
        (
            "WARNING",
            "vc: 3 log line(s) are missing here: they were read by a runner another one had "
            "taken the session over from (the session log file on that runner's host has them)",
        ),
    ]


def test_a_runners_line_logged_after_a_takeover_reaches_the_file_only(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Through the loguru sink: the ``lease`` a runner binds goes with its line."""
    from loguru import logger

    from app.logging import setup_logging
    from store import FlowSessionManager

    engine = init_db(sqlite_url)
    factory = get_session_factory(engine)
    with factory() as db:
        sessions = FlowSessionManager(db)
        sid = sessions.create_session("w", definition=None).id
        change = sessions.start_session(sid, runner_host="here", runner_pid=4242)
        stale = replace(sessions.lease_of(change, "here", 4242), token=change.version + 1)
    log = setup_logging(tmp_path / "logs", factory)
    try:
        said = logger.bind(category="workflow.session.operations", session_id=sid, stage=None)
        said.bind(lease=stale).info("the woken runner's line")
        said.info("a person's line")
    finally:
        log.close()
    texts = [t for _, t in _stored(engine)]
    assert "the woken runner's line" not in texts and "a person's line" in texts
    assert any("had taken the session over from" in t for t in texts)
    assert (
        "the woken runner's line"
        in (tmp_path / "logs" / "workflow" / "session" / f"{sid}.log").read_text()
    )
    engine.dispose()


def test_a_runners_transition_line_leaves_no_row_once_its_session_is_deleted(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Logged after its commit, stored with the mirror's next batch: a forced delete in
    between must not leave a row of the session behind."""
    from app.logging import setup_logging
    from store import FlowSessionManager

    engine = init_db(sqlite_url)
    factory = get_session_factory(engine)
    log = setup_logging(tmp_path / "logs", factory)
    try:
        with factory() as db, factory() as runner_db:
            sessions = FlowSessionManager(db)
            sid = sessions.create_session("w", definition=None).id
            change = sessions.start_session(sid, runner_host="here", runner_pid=4242)
            lease = sessions.lease_of(change, "here", 4242)
            FlowSessionManager(runner_db, actor="runner", lease=lease).complete(sid)
            sessions.delete(sid, force=True)
    finally:
        log.close()
    with engine.connect() as conn:
        left = conn.execute(text("SELECT text FROM log_records WHERE session_id = :s"), {"s": sid})
        assert [r[0] for r in left] == []
    engine.dispose()
