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
from store.records import SessionChange, change_lines
from store.status import SessionOp


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


def _texts(manager: Any, *logged: tuple[Any, str]) -> list[str]:
    return [text for *_, text in change_lines(logged, manager.actor, manager.host, manager.pid)]


def test_a_commands_change_is_in_the_session_log_when_it_commits(
    db: Any, engine: Any, hello_definition: Any, in_store_logging: list[Any]
) -> None:
    manager = _manager(db, log_in_transaction=True)
    sid = manager.create_session("hello", definition=hello_definition).id
    seen = _texts_at_commit(db, engine, sid)
    change = manager.abort(sid)
    assert seen, "the abort committed"
    assert seen[-1][-2:] == _texts(manager, (change, "x"))


def test_an_approval_that_resumes_is_in_the_session_log_when_it_commits(
    db: Any, engine: Any, in_store_logging: list[Any]
) -> None:
    from store import StageManager
    from tests.store.test_gates import open_gates, started, wait_at

    manager = _manager(db, log_in_transaction=True)
    managers = (manager, StageManager(db))
    sid = started(managers)
    open_gates(managers, sid, "qa")
    wait_at(managers, sid, "qa")
    seen = _texts_at_commit(db, engine, sid)
    manager.approve(sid, "qa")
    told = [text.split(" by ")[0] for text in seen[-1][-4:]]
    assert told == [
        "notify 0 subscriber(s): approve PAUSED -> COMPLETED",
        "approve PAUSED -> COMPLETED",
        "notify 0 subscriber(s): resume PAUSED -> ACTIVE",
        "resume PAUSED -> ACTIVE",
    ]


def test_an_approval_that_leaves_the_session_as_it_was_logs_the_gate_alone(
    db: Any, engine: Any, in_store_logging: list[Any]
) -> None:
    """A gate approved while other stages run: the session stays ACTIVE, and no line
    tagged with the gate says `approve ACTIVE -> ACTIVE` as if the gate went back."""
    from store import StageManager
    from tests.store.test_gates import open_gates, started

    manager = _manager(db, log_in_transaction=True)
    managers = (manager, StageManager(db))
    sid = started(managers)
    open_gates(managers, sid, "qa")
    seen = _texts_at_commit(db, engine, sid)
    manager.approve(sid, "qa")
    told = [text.split(" by ")[0] for text in seen[-1] if "approve" in text]
    assert told == [
        "notify 0 subscriber(s): approve PAUSED -> COMPLETED",
        "approve PAUSED -> COMPLETED",
    ]


def test_the_store_holds_a_commands_records_once_in_the_order_loguru_saw_them(
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
    from store import FlowSessionManager, get_session_factory

    sid = _manager(db).create_session("hello", definition=hello_definition).id
    change = FlowSessionManager(db).start_session(sid, runner_host="host-a", runner_pid=1001)
    lease = FlowSessionManager(db).lease_of(change, "host-a", 1001)
    with get_session_factory(engine)() as runner_db:
        runner = _manager(runner_db, actor="runner", lease=lease, log_in_transaction=True)
        seen = _texts_at_commit(runner_db, engine, sid)
        runner.pause(sid)
    assert seen == [[]]


def test_the_log_sink_stores_a_commands_records_once(
    workspace: Path, hello_definition: Any
) -> None:
    from app.context import open_context
    from store.changes import enable_logging

    try:
        with open_context() as ctx:
            with ctx.session() as db:
                manager = ctx.sessions(db)
                created = manager.create_session("hello", definition=hello_definition)
                aborted = manager.abort(created.id)
            assert ctx.logging is not None
            ctx.logging.flush()
            with ctx.session() as db:
                texts = [line.text for line in read_logs(db, created.id)]
                db.commit()
    finally:
        enable_logging(False)
    create = SessionChange(created.id, SessionOp.CREATE, None, "PENDING", 0)
    assert texts == _texts(manager, (create, "x"), (aborted, "x"))


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


def _refuse_log_rows_as_a_full_disk(engine: Any) -> None:
    """Every insert into the log table fails as a full disk does (the driver's message),
    while the state tables still take writes: the window in which the change's own
    records give way to it."""
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TRIGGER full_log BEFORE INSERT ON log_records "
            "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END"
        )


def test_on_a_full_disk_a_commands_records_give_way_to_its_change(
    sqlite_url: str, hello_definition: Any, in_store_logging: list[Any]
) -> None:
    from store import get_session_factory, init_db

    engine = init_db(sqlite_url)
    with get_session_factory(engine)() as db:
        manager = _manager(db, log_in_transaction=True)
        sid = manager.create_session("hello", definition=hello_definition).id
        _refuse_log_rows_as_a_full_disk(engine)
        manager.abort(sid)
        assert manager.get_session(sid).status == "FAILED"
    engine.dispose()
    assert [text.split(" ")[0] for *_, text in in_store_logging][-2:] == ["notify", "abort"]


def test_on_a_full_disk_the_driver_paths_records_give_way_to_its_change(
    sqlite_url: str, hello_definition: Any
) -> None:
    from store import FlowSessionManager, get_session_factory, init_db
    from store.direct import open_direct
    from store.direct_control import DirectControl

    engine = init_db(sqlite_url)
    with get_session_factory(engine)() as db:
        sid = FlowSessionManager(db).create_session("hello", definition=hello_definition).id
    _refuse_log_rows_as_a_full_disk(engine)
    direct = open_direct(sqlite_url)
    assert direct is not None
    try:
        outcome = DirectControl(direct, log_in_transaction=True).abort(sid)
    finally:
        direct.close()
    with get_session_factory(engine)() as db:
        status = FlowSessionManager(db).get_session(sid).status
    engine.dispose()
    assert (outcome.stored, status) == (False, "FAILED")
