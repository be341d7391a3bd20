"""Fixtures of the runner's end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from store import get_session_factory, init_db
from tests.runner.runner_testkit import NAP, Store, _stop_everything, write_workflow


@pytest.fixture
def store(store_workspace: Path, db_url: str) -> Iterator[Store]:
    """The workspace's store (SQLite, or a PostgreSQL schema of the test's own, named by
    VC_DATABASE_URL for every `vc` the test starts); on teardown, no runner or stage of the
    test is left running."""
    engine = init_db(db_url)
    factory = get_session_factory(engine)
    yield Store(factory)
    _stop_everything(factory)
    engine.dispose()


@pytest.fixture
def nap(workspace: Path) -> str:
    write_workflow(workspace, "nap", NAP)
    return "nap"
