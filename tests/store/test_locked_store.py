"""A store that stays locked past the busy timeout: the managers raise SQLAlchemy's
OperationalError (what the runner retries and the CLI turns into one line), leave nothing
half-written, and work again once the lock is gone."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.exc import OperationalError

from store import FlowSessionManager, StageManager, get_session_factory, init_db
from store.status import StageStatus


def test_a_stage_move_on_a_locked_store_raises_operational_error_and_changes_nothing(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, hello_definition
) -> None:
    monkeypatch.setenv("VC_BUSY_TIMEOUT", "0.2")
    engine = init_db(sqlite_url)
    with get_session_factory(engine)() as db:
        sessions = FlowSessionManager(db)
        stages = StageManager(db)
        sid = sessions.create_session("hello", definition=hello_definition).id
        sessions.start_session(sid)
        stage = stages.list_stages(sid)[0]
        started = stages.start_attempt(stage.id, 1, pid=7, pid_start=None, host=None)

        blocker = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))
        blocker.execute("BEGIN IMMEDIATE")
        try:
            with pytest.raises(OperationalError, match="locked"):
                stages.move_stage(stage.id, StageStatus.COMPLETED, exit_code=0, known=started)
        finally:
            blocker.rollback()
            blocker.close()

        assert stages.get_stage(stage.id).status == StageStatus.ACTIVE
        stages.move_stage(stage.id, StageStatus.COMPLETED, exit_code=0, known=started)
        assert stages.get_stage(stage.id).status == StageStatus.COMPLETED
    engine.dispose()
