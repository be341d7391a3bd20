"""The SQLite store's files on first use: several processes opening a store whose
directory does not exist yet (a worker pool, scripts started together) all succeed."""

from __future__ import annotations

import multiprocessing
from functools import partial
from pathlib import Path


def _open(url: str, *, connect: bool = False) -> str:
    """Open the store at ``url`` as a process starting up does ("ok", or the error), and
    with ``connect`` read from it too."""
    from store.engine import make_engine

    try:
        engine = make_engine(url)
        try:
            if connect:
                with engine.connect() as conn:
                    conn.exec_driver_sql("PRAGMA user_version").scalar()
        finally:
            engine.dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_a_new_store_file_is_in_wal_mode_before_anyone_connects(tmp_path: Path) -> None:
    from store.engine import make_engine

    store = tmp_path / "ws" / ".vc" / "flow.db"
    make_engine(f"sqlite:///{store}").dispose()  # makes the file, opens no connection
    header = store.read_bytes()[:20]
    assert header.startswith(b"SQLite format 3\x00")
    assert (header[18], header[19]) == (2, 2)  # WAL read and write versions
    assert store.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in store.parent.iterdir()) == ["flow.db", "flow.db-reserve"]


def test_a_store_path_that_is_a_dangling_symlink_gets_its_target_made(tmp_path: Path) -> None:
    from store.opening import init_db

    (tmp_path / "ws" / ".vc").mkdir(parents=True)
    target = tmp_path / "elsewhere.db"
    (tmp_path / "ws" / ".vc" / "flow.db").symlink_to(target)
    init_db(f"sqlite:///{tmp_path}/ws/.vc/flow.db").dispose()
    assert target.stat().st_mode & 0o777 == 0o600
    assert target.read_bytes().startswith(b"SQLite format 3\x00")


def test_processes_racing_to_first_connect_to_a_new_store_all_get_in(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        for trial in range(40):  # the race is narrow: many tries make it show
            url = f"sqlite:///{tmp_path}/{trial}/ws/.vc/flow.db"
            assert pool.map(partial(_open, connect=True), [url] * 8) == ["ok"] * 8


def test_processes_racing_to_create_the_store_directory_all_open_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        for trial in range(30):  # the race is narrow: many tries make it show
            url = f"sqlite:///{tmp_path}/{trial}/ws/.vc/flow.db"
            assert pool.map(_open, [url] * 8) == ["ok"] * 8
    assert (tmp_path / "0" / "ws" / ".vc").stat().st_mode & 0o777 == 0o700


def test_what_a_killed_first_start_left_is_removed_on_the_next_open(tmp_path: Path) -> None:
    """A first start killed between linking its scratch file in place and removing it left
    a second name of the store; one killed before the link left a stray file. The next
    open removes both, and not a scratch file that another first start is making now."""
    import os
    import time

    from store.engine import make_engine

    store = tmp_path / "ws" / ".vc" / "flow.db"
    make_engine(f"sqlite:///{store}").dispose()
    linked = store.parent / ".flow.db.k1ll3d.new"
    os.link(store, linked)
    stray = store.parent / ".flow.db.0ld.new"
    stray.write_bytes(b"")
    (store.parent / ".flow.db.0ld.new-wal").write_bytes(b"")
    an_hour_ago = time.time() - 3600
    os.utime(stray, (an_hour_ago, an_hour_ago))
    in_the_making = store.parent / ".flow.db.n0w.new"
    in_the_making.write_bytes(b"")
    make_engine(f"sqlite:///{store}").dispose()
    assert sorted(p.name for p in store.parent.iterdir()) == [
        ".flow.db.n0w.new",
        "flow.db",
        "flow.db-reserve",
    ]
    assert store.stat().st_nlink == 1
