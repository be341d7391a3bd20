"""The SQLite store's files on first use: several processes opening a store whose
directory does not exist yet (a worker pool, scripts started together) all succeed."""

from __future__ import annotations

import multiprocessing
from pathlib import Path


def _open(url: str) -> str:
    from store.engine import make_engine

    try:
        make_engine(url).dispose()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "ok"


def test_processes_racing_to_create_the_store_directory_all_open_it(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    with context.Pool(8) as pool:
        for trial in range(30):  # the race is narrow: many tries make it show
            url = f"sqlite:///{tmp_path}/{trial}/ws/.vc/flow.db"
            assert pool.map(_open, [url] * 8) == ["ok"] * 8
    assert (tmp_path / "0" / "ws" / ".vc").stat().st_mode & 0o777 == 0o700
