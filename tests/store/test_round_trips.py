"""What the hot path of a queued session costs the store, in statements (docs/ARCHITECTURE.md
§6, the worker): each one is a round trip and Python on both sides, so a worker draining
thousands of sessions pays for every one. Counted at the driver (SQLite's trace callback),
which sees the statements SQLAlchemy's events do not (those run straight on the cursor)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import event

from store import FlowSessionManager, StageManager, get_session_factory, init_db

DEFINITION = {"id": "one", "stages": [{"name": "only", "run": "true"}]}


@pytest.fixture
def traced(sqlite_url: str) -> Iterator[tuple[Any, list[str]]]:
    """A session factory over a new SQLite store, and the statements its connections run."""
    engine = init_db(sqlite_url)
    statements: list[str] = []

    @event.listens_for(engine, "connect")
    def trace(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.set_trace_callback(statements.append)

    engine.dispose()  # the connections made before the listener are not traced
    yield get_session_factory(engine), statements
    engine.dispose()


_WRITE = re.compile(r"\s*(UPDATE|INSERT INTO)\s+(\w+)", re.IGNORECASE)


def _reads_of(statements: list[str], table: str) -> list[str]:
    return [s for s in statements if s.lstrip().upper().startswith("SELECT") and table in s]


def test_a_claim_of_queued_work_reads_the_session_once(traced: tuple[Any, list[str]]) -> None:
    """The claim decides on the row its query read (on PostgreSQL, locked), not on a
    second read of the same row."""
    factory, statements = traced
    with factory() as db:
        sessions = FlowSessionManager(db)
        sid = sessions.create_session("one", definition=DEFINITION, queued=True).id
        statements.clear()
        change = sessions.claim_queued(runner_host="w1", runner_pid=4242)
    assert change is not None and change.session_id == sid
    assert len(_reads_of(statements, "flow_sessions")) == 1, statements
    writes = [m.groups() for m in map(_WRITE.match, statements) if m is not None]
    assert writes == [("UPDATE", "flow_sessions"), ("INSERT INTO", "flow_events")]


def test_completing_a_session_reads_it_and_its_open_stages_in_one_statement(
    traced: tuple[Any, list[str]],
) -> None:
    factory, statements = traced
    with factory() as db:
        sessions, stages = FlowSessionManager(db), StageManager(db)
        sid = sessions.create_session("one", definition=DEFINITION).id
        sessions.start_session(sid)
        only = stages.list_stages(sid)[0].id
        stages.move_stage(only, "ACTIVE")
        stages.move_stage(only, "COMPLETED")
        statements.clear()
        change = sessions.complete(sid)
    assert change.to_status == "COMPLETED"
    assert len([s for s in statements if s.lstrip().upper().startswith("SELECT")]) == 1, statements
