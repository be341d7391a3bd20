"""Reads that run straight on the driver (store._driver) return what SQLAlchemy's typed
reads return: the same values, JSON columns decoded (sqlite3 hands them over as text),
on SQLite and on PostgreSQL."""

from __future__ import annotations

import dataclasses
import time
from enum import Enum
from typing import Any

import pytest
from sqlalchemy import bindparam, select

from store import FlowSessionManager, StageManager, StageStatus
from store._driver import execute_on_driver, rows_on_driver
from store.identity import local_host
from store.leases import _queue_query
from store.models import FlowSession
from store.queries import _ONE_SESSION, _STAGES_OF_ONE, get_session_view, list_sessions
from store.sessions import _READ_STATE_AND_OPEN_STAGES

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


def _reads(sid: str, dialect: str) -> dict[str, tuple[Any, dict[str, Any]]]:
    """The reads that run on the driver, with their parameters."""
    claim = {
        "stale_before": time.time() - 30,
        "this_host": local_host(),
        "batch": 8,
        "pending": "PENDING",
        "active": "ACTIVE",
    }
    return {
        "a transition's state": (_READ_STATE_AND_OPEN_STAGES, {"sid": sid}),
        "the claim's candidates": (_queue_query(dialect, False), claim),
        "one session": (_ONE_SESSION, {"sid": sid}),
        "its stages": (_STAGES_OF_ONE, {"sid": sid}),
    }


def test_every_driver_read_returns_the_typed_reads_values_and_types(db: Any) -> None:
    """Value for value and type for type, but ``queued``: sqlite3 hands a boolean over as
    0 or 1 (the view makes it a bool; the test above reads it so)."""
    sessions, stages = FlowSessionManager(db), StageManager(db)
    sid = sessions.create_session(
        "typed", metadata={"k": [1, 2.5, None]}, definition=DEFINITION, queued=True
    ).id
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE, {"progress": 0.5})
    conn = db.connection()
    for what, (statement, params) in _reads(sid, conn.dialect.name).items():
        typed = [tuple(row) for row in conn.execute(statement, params).all()]
        driver = [tuple(row) for row in rows_on_driver(conn, statement, params)]
        assert typed and len(driver) == len(typed), what
        for typed_row, driver_row in zip(typed, driver, strict=True):
            for got, want in zip(driver_row, typed_row, strict=True):
                assert got == want, (what, got, want)
                if not isinstance(want, bool):
                    assert type(got) is type(want), (what, got, want)
    db.rollback()


def test_a_view_of_a_session_that_is_not_there_is_none(db: Any) -> None:
    assert get_session_view(db, "0" * 32) is None


class _Shade(Enum):
    """An enum whose names are not its values (psycopg would write a name)."""

    FRESH = "PENDING"
    OVER = "COMPLETED"


def test_a_constant_written_into_a_statement_is_bound_on_the_driver_by_its_value(
    db: Any,
) -> None:
    """``status = 'PENDING'`` carries its value in the statement, not in the caller's
    parameters; an enum member is bound as its value."""
    sessions = FlowSessionManager(db)
    sid = sessions.create_session("typed", definition=DEFINITION).id
    table = FlowSession.__table__  # type: ignore[attr-defined]
    conn = db.connection()
    for shade, expected in ((_Shade.FRESH, [sid]), (_Shade.OVER, [])):
        query = select(table.c.id).where(table.c.id == bindparam("sid"), table.c.status == shade)
        assert [row.id for row in rows_on_driver(conn, query, {"sid": sid})] == expected
    db.rollback()


def test_a_computed_constant_is_refused_on_the_driver(db: Any) -> None:
    table = FlowSession.__table__  # type: ignore[attr-defined]
    query = select(table.c.id).where(table.c.status == bindparam("s", callable_=lambda: "X"))
    with pytest.raises(ValueError, match="needs SQLAlchemy"):
        execute_on_driver(db.connection(), query, {})
    db.rollback()


def test_a_statement_with_a_list_parameter_is_refused_on_the_driver(db: Any) -> None:
    table = FlowSession.__table__  # type: ignore[attr-defined]
    query = select(table.c.id).where(table.c.status.in_(["PENDING", "ACTIVE"]))
    with pytest.raises(ValueError, match="list or literal parameters"):
        execute_on_driver(db.connection(), query, {})
    db.rollback()
