"""A person's change (a CLI command, a dashboard key) commits its log records with it: a
runner that the change wakes, logging through its own writer, cannot get its lines into
the session's log ahead of the change that woke it. A runner's own changes keep the log
mirror's batches."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from store.queries import read_logs
from store.records import change_lines


@pytest.fixture
def in_store_logging(logged_lines: list[Any]) -> Iterator[list[Any]]:
    """Logging on, with the records kept in the store (what the application sets up)."""
    from store.changes import enable_logging

    enable_logging(True, in_store=True)
    yield logged_lines


def _texts_at_commit(db: Any, engine: Any, sid: str) -> list[list[str]]:
    """The session's log as another connection reads it right after each commit of
    ``db``, before the manager logs anything through loguru."""
    seen: list[list[str]] = []

    def read(_session: Any) -> None:
        from store import get_session_factory

        with get_session_factory(engine)() as other:
            seen.append([line.text for line in read_logs(other, sid)])
            other.commit()

    event.listen(db, "after_commit", read)
    return seen


def _manager(db: Any, **kw: Any) -> Any:
    from store import FlowSessionManager, FlowStatusIntegration

    return FlowSessionManager(db, integration=FlowStatusIntegration(db), **kw)


def test_a_commands_change_is_in_the_session_log_when_it_commits(
    db: Any, engine: Any, hello_definition: Any, in_store_logging: list[Any]
) -> None:
    manager = _manager(db, log_in_transaction=True)
    sid = manager.create_session("hello", definition=hello_definition).id
    seen = _texts_at_commit(db, engine, sid)
    change = manager.abort(sid)
    assert seen, "the abort committed"
    expected = [
        text for *_, text in change_lines([(change, "x")], manager.actor, manager.host, manager.pid)
    ]
    assert seen[0][-2:] == expected


def test_a_commands_change_is_stored_once_and_in_order_with_its_integration_line(
    db: Any, hello_definition: Any, in_store_logging: list[Any]
) -> None:
    manager = _manager(db, log_in_transaction=True)
    sid = manager.create_session("hello", definition=hello_definition).id
    manager.abort(sid)
    stored = [(line.level, line.category, line.text) for line in read_logs(db, sid)]
    db.commit()
    logged = [(level, category, text) for level, category, _stage, text in in_store_logging]
    assert stored == logged


def test_a_runners_change_leaves_its_lines_to_the_log_mirror(
    db: Any, engine: Any, hello_definition: Any, in_store_logging: list[Any]
) -> None:
    manager = _manager(db)
    sid = manager.create_session("hello", definition=hello_definition).id
    seen = _texts_at_commit(db, engine, sid)
    manager.abort(sid)
    assert seen == [[]]


def test_the_log_sink_stores_a_commands_change_once(workspace: Path) -> None:
    from app.context import open_context

    with open_context() as ctx:
        with ctx.session() as db:
            manager = ctx.sessions(db)
            sid = manager.create_session("hello", definition=_definition()).id
            manager.abort(sid)
        assert ctx.logging is not None
        ctx.logging.flush()
        with ctx.session() as db:
            texts = [line.text for line in read_logs(db, sid)]
            db.commit()
    aborted = [text for text in texts if text.startswith("abort ")]
    created = [text for text in texts if text.startswith("create ")]
    assert (len(aborted), len(created)) == (1, 1), texts


def test_a_commands_change_on_the_driver_path_commits_its_log_lines_with_it(
    db: Any, direct: Any, hello_definition: Any
) -> None:
    from store import FlowSessionManager
    from store.direct_control import DirectControl

    sid = FlowSessionManager(db).create_session("hello", definition=hello_definition).id
    control = DirectControl(direct, log_in_transaction=True)
    outcome = control.abort(sid)
    texts = [line.text for line in read_logs(db, sid)]
    db.commit()
    lines = change_lines(outcome.logged, control.actor, control.host, control.pid)
    assert (outcome.stored, texts) == (True, [text for *_, text in lines])


def _definition() -> Any:
    import textwrap

    from store.workflows import load_workflow_text
    from tests.conftest import SAMPLE_WORKFLOWS

    return load_workflow_text(textwrap.dedent(SAMPLE_WORKFLOWS["hello.yaml"]), default_id="hello")
