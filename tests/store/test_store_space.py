"""The SQLite store's reserve for a full disk (store.space), on real file systems."""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Callable
from pathlib import Path

from sqlalchemy.exc import OperationalError

from store import init_db
from store.space import RESERVE_BYTES, StoreSpace, is_disk_full


def test_opening_a_store_makes_its_reserve_private_and_whole(tmp_path: Path) -> None:
    engine = init_db(f"sqlite:///{tmp_path / '.vc' / 'flow.db'}")
    space = StoreSpace.of(engine)
    engine.dispose()
    assert space is not None
    st = space.reserve.stat()
    assert st.st_size == RESERVE_BYTES and oct(st.st_mode & 0o777) == "0o600"
    assert st.st_blocks * 512 >= RESERVE_BYTES  # allocated, not a sparse promise
    assert [p.name for p in space.reserve.parent.iterdir() if ".reserve." in p.name] == []


def test_release_frees_the_reserve_once_and_an_almost_full_disk_gets_none_back(
    small_disk: Callable[[str], Path],
) -> None:
    disk = small_disk("8m")
    space = StoreSpace(disk / "flow.db")
    assert space.ensure_reserve()
    (disk / "filler").write_bytes(bytes(5 << 20))  # less room left than ROOM_AGAIN
    assert space.release_reserve() is True
    assert space.release_reserve() is False
    assert space.ensure_reserve() is False and not space.reserve.exists()
    (disk / "filler").unlink()
    assert space.ensure_reserve() is True


def test_disk_full_is_told_from_other_errors(small_disk: Callable[[str], Path]) -> None:
    disk = small_disk("1m")
    conn = sqlite3.connect(disk / "x.db")
    conn.execute("CREATE TABLE t (x)")
    full: sqlite3.Error | None = None
    try:
        for _ in range(2000):
            conn.execute("INSERT INTO t VALUES (?)", ("x" * 1000,))
            conn.commit()
    except sqlite3.Error as exc:
        full = exc
    finally:
        conn.close()
    assert full is not None
    assert is_disk_full(full)
    assert is_disk_full(OperationalError("INSERT …", {}, full))
    assert is_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert not is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))


def test_once_full_the_released_reserve_goes_to_state_writes_not_to_checkpoints(
    small_disk: Callable[[str], Path],
) -> None:
    """A disk filled by log rows that sit in the WAL (a reader kept them from being
    checkpointed): after the reserve is released, the state writes that follow all get
    through. A checkpoint would copy the WAL's pages into the database file, which grows
    by as much, and take the released room for itself."""
    from store import FlowSessionManager, get_session_factory
    from store.log_ingest import LogLines, append_log_lines

    disk = small_disk("8m")
    engine = init_db(f"sqlite:///{disk / 'flow.db'}")
    factory = get_session_factory(engine)
    space = StoreSpace.of(engine)
    assert space is not None
    try:
        with factory() as db:
            sid = FlowSessionManager(db).create_session("w", name="full").id
        texts = ["x" * 500] * 500
        reader = sqlite3.connect(disk / "flow.db")  # `logs --follow`: no checkpoint ends
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM log_records").fetchone()
        with factory() as db:
            while True:  # log rows until the disk is full
                try:
                    append_log_lines(db, [LogLines(sid, 1.0, "INFO", "c", None, texts)])
                except OperationalError as exc:
                    assert is_disk_full(exc)
                    db.rollback()
                    break
        reader.close()
        assert space.release_reserve()
        with factory() as db:
            manager = FlowSessionManager(db)
            for _ in range(20):  # a runner's last writes: beats, then its session's end
                assert manager.heartbeat(sid, runner_host="h", runner_pid=1) is False
                manager.pause(sid, reason="full")
                manager.resume(sid)
    finally:
        engine.dispose()
