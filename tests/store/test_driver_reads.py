"""Reads that run straight on the driver (store._driver) return what SQLAlchemy's typed
reads return: the same values, JSON columns decoded (sqlite3 hands them over as text),
on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import bindparam, select

from store import FlowSessionManager, StageManager, StageStatus
from store._driver import execute_on_driver, rows_on_driver
from store.models import FlowSession
from store.queries import get_session_view, list_sessions

DEFINITION = {
    "id": "typed",
    "stages": [
        {"name": "build", "run": "make", "env": {"MODE": "fast"}},
        {"name": "ship", "run": "scp out host:"},
    ],
}


def test_one_sessions_view_read_on_the_driver_equals_the_typed_read(db: Any) -> None:
    sessions, stages = FlowSessionManager(db), StageManager(db)
    created = sessions.create_session(
        "typed",
        name="naïve ☃ run",
        metadata={"owner": "ops", "tags": ["a", "b"], "nested": {"n": 1.5}},
        definition=DEFINITION,
        queued=True,
    )
    build = stages.list_stages(created.id)[0]
    stages.update_stage_status(build.id, StageStatus.ACTIVE, {"progress": 0.25})
    stages.record_outputs(build.id, 1, {"artifact": "out/app.tar", "ünï": "✓"})

    driver = get_session_view(db, created.id)
    typed = list_sessions(db)[0]  # read by SQLAlchemy, result processing and all

    assert driver is not None
    assert driver.definition is not None and driver.definition["stages"][0]["env"] == {
        "MODE": "fast"
    }
    assert dataclasses.replace(driver, definition=None, orphaned=typed.orphaned) == typed
    assert driver.metadata == {"owner": "ops", "tags": ["a", "b"], "nested": {"n": 1.5}}
    assert driver.queued is True
    assert driver.stages[0].outputs == {"artifact": "out/app.tar", "ünï": "✓"}
    assert driver.stages[0].progress == 0.25


def test_a_view_of_a_session_that_is_not_there_is_none(db: Any) -> None:
    assert get_session_view(db, "0" * 32) is None


def test_a_constant_written_into_a_statement_is_bound_on_the_driver(db: Any) -> None:
    """``status != 'COMPLETED'`` carries its value in the statement, not in the caller's
    parameters."""
    sessions = FlowSessionManager(db)
    sid = sessions.create_session("typed", definition=DEFINITION).id
    table = FlowSession.__table__  # type: ignore[attr-defined]
    query = select(table.c.id).where(
        table.c.id == bindparam("sid"), table.c.status != StageStatus.COMPLETED
    )
    assert [row.id for row in rows_on_driver(db.connection(), query, {"sid": sid})] == [sid]
    db.rollback()


def test_a_statement_with_a_list_parameter_is_refused_on_the_driver(db: Any) -> None:
    table = FlowSession.__table__  # type: ignore[attr-defined]
    query = select(table.c.id).where(table.c.status.in_(["PENDING", "ACTIVE"]))
    with pytest.raises(ValueError, match="list parameters"):
        execute_on_driver(db.connection(), query, {})
    db.rollback()
