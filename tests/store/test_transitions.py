"""The state machine of docs/ARCHITECTURE.md §2, through the managers, on every configured store."""

from __future__ import annotations

import pytest
from sqlalchemy import func
from sqlmodel import select

from store import (
    ConcurrentModification,
    FlowEvent,
    InvalidTransition,
    SessionStatus,
    StageStatus,
)
from store.status import SESSION_TRANSITIONS, SessionOp

S = SessionStatus


def _events(db, sid):  # type: ignore[no-untyped-def]
    db.commit()
    query = select(FlowEvent).where(FlowEvent.session_id == sid).order_by(FlowEvent.id)
    return db.exec(query).all()


def _make(managers, hello_definition, status: SessionStatus) -> str:  # type: ignore[no-untyped-def]
    """A session brought to ``status`` through allowed operations only."""
    sessions, stages = managers
    sid = sessions.create_session("hello", name="t", definition=hello_definition).id
    if status == S.PENDING:
        return sid
    if status == S.PAUSED:
        sessions.pause(sid)
        return sid
    sessions.start_session(sid)
    if status == S.ACTIVE:
        return sid
    if status == S.FAILED:
        sessions.fail(sid, "boom")
        return sid
    for st in stages.list_stages(sid):
        stages.update_stage_status(st.id, StageStatus.ACTIVE)
        stages.update_stage_status(st.id, StageStatus.COMPLETED)
    sessions.complete(sid)
    return sid


def _apply(managers, op: SessionOp, sid: str):  # type: ignore[no-untyped-def]
    sessions, _ = managers
    return {
        SessionOp.PAUSE: lambda: sessions.pause(sid),
        SessionOp.RESUME: lambda: sessions.resume(sid),
        SessionOp.ABORT: lambda: sessions.abort(sid),
        SessionOp.RETRY: lambda: sessions.retry(sid),
        SessionOp.FAIL: lambda: sessions.fail(sid, "x"),
    }[op]()


USER_OPS = [SessionOp.PAUSE, SessionOp.RESUME, SessionOp.ABORT, SessionOp.RETRY, SessionOp.FAIL]
CASES = [(status, op) for status in S for op in USER_OPS]


def _allowed(status: SessionStatus, op: SessionOp) -> bool:
    if op == SessionOp.RESUME and status == S.ACTIVE:
        return False  # only when orphaned; a session we just started has a live runner
    return status in SESSION_TRANSITIONS[op].sources


@pytest.mark.parametrize(("status", "op"), [c for c in CASES if _allowed(*c)], ids=lambda v: str(v))
def test_allowed_transition_moves_state_bumps_version_and_writes_one_event(
    managers, db, hello_definition, status, op
):
    sid = _make(managers, hello_definition, status)
    version_before = managers[0].get_session(sid).version
    events_before = len(_events(db, sid))
    change = _apply(managers, op, sid)
    after = managers[0].get_session(sid)
    assert change.from_status == status
    assert after.status == change.to_status
    assert after.version == version_before + 1
    events = _events(db, sid)
    assert len(events) == events_before + 1
    assert (events[-1].op, events[-1].from_status, events[-1].to_status) == (
        op.value,
        status.value,
        change.to_status,
    )
    assert events[-1].host and events[-1].pid and events[-1].actor


@pytest.mark.parametrize(
    ("status", "op"), [c for c in CASES if not _allowed(*c)], ids=lambda v: str(v)
)
def test_refused_transition_changes_nothing_and_names_allowed_operations(
    managers, db, hello_definition, status, op
):
    sid = _make(managers, hello_definition, status)
    before = managers[0].get_session(sid)
    status_before, version_before = before.status, before.version
    events_before = len(_events(db, sid))
    with pytest.raises(InvalidTransition) as info:
        _apply(managers, op, sid)
    message = str(info.value)
    assert status.value in message and "allowed:" in message
    after = managers[0].get_session(sid)
    assert (after.status, after.version) == (status_before, version_before)
    assert len(_events(db, sid)) == events_before


def test_resume_of_a_session_paused_before_it_started_goes_back_to_pending(
    managers, hello_definition
):
    sessions, _ = managers
    sid = _make(managers, hello_definition, S.PAUSED)
    assert sessions.resume(sid).to_status == S.PENDING


def test_resume_of_a_started_session_goes_to_active(managers, hello_definition):
    sessions, _ = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    sessions.pause(sid)
    assert sessions.resume(sid).to_status == S.ACTIVE


def test_abort_is_failed_with_reason_aborted_and_fails_the_running_stage(
    managers, hello_definition
):
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    sessions.abort(sid)
    obj = sessions.get_session(sid)
    assert (obj.status, obj.reason) == (S.FAILED, "aborted")
    statuses = [s.status for s in stages.list_stages(sid)]
    assert statuses == [S.FAILED, S.PENDING, S.PENDING]


def test_retry_resets_failed_stages_keeps_completed_and_attempts(managers, hello_definition):
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first, second, _third = stages.list_stages(sid)
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    stages.update_stage_status(first.id, StageStatus.COMPLETED)
    stages.update_stage_status(second.id, StageStatus.ACTIVE)
    stages.update_stage_status(second.id, StageStatus.FAILED, error="exit code 3", exit_code=3)
    sessions.fail(sid, "stage count failed")
    sessions.retry(sid)
    after = stages.list_stages(sid)
    assert sessions.get_session(sid).status == S.PENDING
    assert [s.status for s in after] == [S.COMPLETED, S.PENDING, S.PENDING]
    assert after[1].attempt == 1


def test_retries_used_count_per_stage_until_the_sessions_retry(managers, hello_definition):
    """The retries a stage's ``retries`` granted (events ``stage.retry``) outlive the runner
    that granted them; the session's ``retry`` starts every stage's budget afresh."""
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first, second, _third = stages.list_stages(sid)
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    stages.note_retry(first.id, "attempt 1 failed: exit code 3")
    stages.note_retry(first.id, "attempt 2 failed: exit code 3")
    stages.update_stage_status(second.id, StageStatus.ACTIVE)
    stages.note_retry(second.id, "attempt 1 failed: timeout")
    assert stages.retries_used(sid) == {first.name: 2, second.name: 1}
    retried = [e for e in _events(stages.session, sid) if e.op == "stage.retry"]
    assert (retried[0].stage, retried[0].from_status, retried[0].to_status) == (
        first.name,
        S.ACTIVE,
        S.ACTIVE,
    )
    assert [e.reason for e in retried][:2] == [
        "attempt 1 failed: exit code 3",
        "attempt 2 failed: exit code 3",
    ]
    stages.update_stage_status(first.id, StageStatus.FAILED, error="exit code 3", exit_code=3)
    sessions.fail(sid, "stage first failed")
    sessions.retry(sid)
    assert stages.retries_used(sid) == {}
    from tests.reliability.replay import replay

    names = [s.name for s in stages.list_stages(sid)]
    assert replay(_events(stages.session, sid), names, S.PENDING, None) == []


def test_a_retry_noted_twice_for_one_attempt_counts_once(managers, hello_definition):
    """A write repeated after its answer was lost (the runner's backoff) is one retry."""
    _sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    stages.note_retry(first.id, "attempt 1 failed: exit code 3")
    stages.note_retry(first.id, "attempt 1 failed: exit code 3")
    assert stages.retries_used(sid) == {first.name: 1}


def test_a_retry_is_noted_for_a_paused_stage_whose_process_ended(managers, hello_definition):
    """Killed while stopped, or exiting as the pause came: its next attempt waits for the
    resume, so the retry counts like any other."""
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    sessions.pause(sid)
    stages.update_stage_status(first.id, StageStatus.PAUSED)
    stages.note_retry(first.id, "attempt 1 failed: killed by SIGKILL")
    assert stages.retries_used(sid) == {first.name: 1}


def test_no_retry_is_noted_for_a_stage_an_abort_failed(managers, hello_definition):
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    sessions.abort(sid)
    before = len(_events(stages.session, sid))
    with pytest.raises(InvalidTransition):
        stages.note_retry(first.id, "attempt 1 failed: exit code 3")
    assert len(_events(stages.session, sid)) == before
    assert stages.retries_used(sid) == {}


def test_retry_forgets_the_exit_code_and_error_of_the_stages_it_resets(managers, hello_definition):
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    stages.update_stage_status(first.id, StageStatus.FAILED, error="exit code 7", exit_code=7)
    sessions.fail(sid, "stage greet failed")
    sessions.retry(sid)
    reset = stages.list_stages(sid)[0]
    assert (reset.status, reset.exit_code, reset.error, reset.finished_at) == (
        S.PENDING,
        None,
        None,
        None,
    )


def test_a_stage_moved_back_to_pending_keeps_no_exit_code(managers, hello_definition):
    _, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first = stages.list_stages(sid)[0]
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    stages.update_stage_status(first.id, StageStatus.PENDING, exit_code=-15)
    assert stages.list_stages(sid)[0].exit_code is None


def test_complete_is_refused_while_a_stage_is_not_completed(managers, hello_definition):
    sessions, _ = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    with pytest.raises(InvalidTransition, match="stages not completed"):
        sessions.complete(sid)
    assert sessions.get_session(sid).status == S.ACTIVE


def test_completed_session_refuses_every_operation_but_delete(managers, hello_definition):
    sid = _make(managers, hello_definition, S.COMPLETED)
    for op in USER_OPS:
        with pytest.raises(InvalidTransition):
            _apply(managers, op, sid)
    managers[0].delete(sid)


def test_stale_expected_version_raises_concurrent_modification(managers, hello_definition):
    sessions, _ = managers
    sid = _make(managers, hello_definition, S.PENDING)
    version = sessions.get_session(sid).version
    sessions.pause(sid)
    with pytest.raises(ConcurrentModification):
        sessions.resume(sid, expected_version=version)
    assert sessions.get_session(sid).status == S.PAUSED


def test_delete_removes_session_stages_events_and_logs(managers, db, hello_definition):
    from store.log_ingest import append_logs
    from store.models import LogRecord, StageInstance

    sessions, _ = managers
    sid = _make(managers, hello_definition, S.FAILED)
    append_logs(
        db,
        [
            {
                "session_id": sid,
                "at": 1.0,
                "level": "INFO",
                "category": "c",
                "stage": None,
                "text": "x",
            }
        ],
    )
    sessions.delete(sid)
    for model in (StageInstance, FlowEvent, LogRecord):
        count = db.exec(select(func.count()).select_from(model).where(model.session_id == sid))
        assert count.one() == 0


def test_delete_of_active_session_with_live_runner_is_refused_without_force(
    managers, hello_definition
):
    sessions, _ = managers
    sid = _make(managers, hello_definition, S.ACTIVE)  # this process is its (live) runner
    with pytest.raises(InvalidTransition, match="live runner"):
        sessions.delete(sid)
    assert sessions.get_session(sid).status == S.ACTIVE
    sessions.delete(sid, force=True)


def test_second_runner_is_refused_while_the_first_lives(managers, hello_definition):
    from store import RunnerConflict

    sessions, _ = managers
    sid = _make(managers, hello_definition, S.PENDING)
    sessions.start_session(sid, runner_host="hostA", runner_pid=os_pid())
    with pytest.raises(RunnerConflict, match="hostA"):
        sessions.start_session(sid, runner_host="hostB", runner_pid=12345)


def os_pid() -> int:
    import os

    return os.getpid()


def test_orphaned_session_can_be_started_again_by_a_new_runner(managers, hello_definition):
    import subprocess

    sessions, _ = managers
    sid = _make(managers, hello_definition, S.PENDING)
    dead = subprocess.Popen(["true"])
    dead.wait()
    from store.identity import local_host

    sessions.start_session(sid, runner_host=local_host(), runner_pid=dead.pid)
    change = sessions.start_session(sid)
    assert change.from_status == S.ACTIVE and change.to_status == S.ACTIVE


def test_session_progress_is_the_mean_with_completed_as_100(managers, hello_definition):
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    first, second, _ = stages.list_stages(sid)
    stages.update_stage_status(first.id, StageStatus.ACTIVE)
    stages.update_stage_status(first.id, StageStatus.COMPLETED)
    stages.update_stage_status(second.id, StageStatus.ACTIVE, metadata={"progress": 50})
    assert sessions.get_session_progress(sid) == 50.0


def test_api_example_of_the_design_works(engine):
    from store import FlowSessionManager, StageManager, get_session_factory

    factory = get_session_factory(engine)
    with factory() as session:
        sessions = FlowSessionManager(session)
        stages = StageManager(session)
        s = sessions.create_session(workflow_id="nightly-etl", name="run 42", metadata={"k": "v"})
        st = stages.create_stage(session_id=s.id, stage_type="task", config={"timeout": 3600})
        stages.update_stage_status(st.id, StageStatus.ACTIVE, metadata={"progress": 50})
        assert sessions.get_session_progress(s.id) == 50.0
        assert sessions.get_session(s.id).meta == {"k": "v"}
        # The README's ending: no runner drives it, so its writer ends it.
        stages.update_stage_status(st.id, StageStatus.COMPLETED)
        sessions.complete(s.id)
        assert sessions.get_session(s.id).status == "COMPLETED"


def test_a_stage_starting_in_a_pending_session_starts_the_session_in_the_same_transaction(
    managers, db, hello_definition
):
    """The design's API example drives a stage by hand: a session with an ACTIVE stage
    is ACTIVE, its start recorded by its own event, written with the stage's."""
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.PENDING)
    st = stages.list_stages(sid)[0]
    version = sessions.get_session(sid).version
    stages.update_stage_status(st.id, StageStatus.ACTIVE, metadata={"progress": 50})
    session = sessions.get_session(sid)
    assert (session.status, session.version) == (S.ACTIVE, version + 1)
    assert session.started_at is not None
    start, stage_start = _events(db, sid)[-2:]
    assert (start.op, start.from_status, start.to_status, start.reason) == (
        "start",
        S.PENDING,
        S.ACTIVE,
        "stage greet started",
    )
    assert (stage_start.op, stage_start.stage) == ("stage.start", "greet")
    assert start.at == stage_start.at == session.updated_at  # one write
    # a second stage starting finds it ACTIVE: no second start
    stages.update_stage_status(stages.list_stages(sid)[1].id, StageStatus.ACTIVE)
    assert [e.op for e in _events(db, sid)].count("start") == 1


def test_metadata_of_a_session_object_is_the_users_dict(managers, db):
    from sqlmodel import SQLModel

    from store import FlowSession, StageInstance

    sessions, stages = managers
    s = sessions.create_session("nightly-etl", metadata={"k": "v"})
    assert s.metadata == {"k": "v"} == sessions.get_session(s.id).metadata
    st = stages.create_stage(s.id, config={"run": "true"})
    assert stages.get_stage(st.id).metadata == {}
    # the classes keep SQLAlchemy's MetaData, which the schema and migrations use
    assert FlowSession.metadata is SQLModel.metadata is StageInstance.metadata
    s.metadata = {"other": "1"}
    assert s.meta == {"other": "1"}


def test_stage_refuses_to_leave_completed(managers, hello_definition):
    _, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    st = stages.list_stages(sid)[0]
    stages.update_stage_status(st.id, StageStatus.ACTIVE)
    stages.update_stage_status(st.id, StageStatus.COMPLETED)
    with pytest.raises(InvalidTransition, match="COMPLETED"):
        stages.update_stage_status(st.id, StageStatus.ACTIVE)


def test_start_attempt_records_attempt_and_process_in_one_event(managers, db, hello_definition):
    _, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    st = stages.list_stages(sid)[0]
    before = len(_events(db, sid))
    move = stages.start_attempt(st.id, 1, pid=4242, pid_start=99, host="builder")
    row = stages.get_stage(st.id)
    assert (row.status, row.attempt, row.pid, row.pid_start, row.host) == (
        S.ACTIVE,
        1,
        4242,
        99,
        "builder",
    )
    assert (move.attempt, move.session_status) == (1, S.ACTIVE)
    assert len(_events(db, sid)) == before + 1


def test_start_attempt_refuses_an_attempt_number_already_used(managers, hello_definition):
    _, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    st = stages.list_stages(sid)[0]
    stages.start_attempt(st.id, 2, pid=1, pid_start=None, host=None)
    with pytest.raises(ConcurrentModification, match="attempt 2"):
        stages.start_attempt(st.id, 2, pid=1, pid_start=None, host=None)
    assert stages.get_stage(st.id).attempt == 2


def test_move_stage_reports_the_session_status_read_in_the_same_transaction(
    managers, hello_definition
):
    sessions, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    st = stages.list_stages(sid)[0]
    stages.move_stage(st.id, StageStatus.ACTIVE)
    sessions.pause(sid)
    move = stages.move_stage(st.id, StageStatus.COMPLETED, exit_code=0)
    assert (move.status, move.session_status) == (S.COMPLETED, S.PAUSED)


def _first_stage_started(managers, hello_definition):  # type: ignore[no-untyped-def]
    """(stage manager, the first stage of an ACTIVE session, that stage's ``start_attempt``
    move): where the known-state tests start from."""
    _, stages = managers
    sid = _make(managers, hello_definition, S.ACTIVE)
    st = stages.list_stages(sid)[0]
    return stages, st, stages.start_attempt(st.id, 1, pid=7, pid_start=None, host=None)


def test_move_stage_from_a_known_state_applies_like_a_read_one(managers, db, hello_definition):
    stages, st, started = _first_stage_started(managers, hello_definition)

    done = stages.move_stage(st.id, StageStatus.COMPLETED, exit_code=0, known=started)

    assert (done.status, done.version, done.attempt, done.name) == (
        S.COMPLETED,
        started.version + 1,
        1,
        st.name,
    )
    row = stages.get_stage(st.id)
    assert (row.status, row.version, row.exit_code, row.progress) == (
        S.COMPLETED,
        started.version + 1,
        0,
        100.0,
    )
    last = _events(db, started.session_id)[-1]
    assert (last.op, last.from_status, last.to_status, last.stage) == (
        "stage.complete",
        S.ACTIVE,
        S.COMPLETED,
        st.name,
    )


def test_move_stage_from_a_stale_known_state_rereads_and_refuses_what_is_not_allowed(
    managers, hello_definition
):
    stages, st, started = _first_stage_started(managers, hello_definition)
    stages.move_stage(st.id, StageStatus.FAILED, error="aborted")  # decided meanwhile

    with pytest.raises(InvalidTransition, match="FAILED"):
        stages.move_stage(st.id, StageStatus.COMPLETED, exit_code=0, known=started)
    row = stages.get_stage(st.id)
    assert (row.status, row.error) == (S.FAILED, "aborted")


def test_move_stage_rereads_when_a_known_state_refuses_what_the_stored_one_allows(
    managers, hello_definition
):
    import dataclasses

    stages, st, started = _first_stage_started(managers, hello_definition)
    wrong = dataclasses.replace(started, status=S.FAILED)  # FAILED -> COMPLETED is refused

    done = stages.move_stage(st.id, StageStatus.COMPLETED, exit_code=0, known=wrong)

    assert done.status == S.COMPLETED
    assert stages.get_stage(st.id).status == S.COMPLETED


def test_a_session_created_claimed_is_what_create_then_start_leave_in_one_commit(
    managers, db, hello_definition
):
    """`vc flow run` of a new session: created claimed by its runner in one transaction,
    with the same row and the same events as a create followed by the runner's start."""
    from sqlalchemy import event

    from store import FlowSession, FlowSessionManager

    sessions, _ = managers
    runner = FlowSessionManager(db, actor="runner")
    apart = sessions.create_session("hello", name="t", definition=hello_definition).id
    runner.start_session(apart, runner_host="hostA", runner_pid=4242)
    commits: list[object] = []

    def count(conn: object) -> None:
        commits.append(conn)

    event.listen(db.get_bind(), "commit", count)
    try:
        created = sessions.create_session(
            "hello", name="t", definition=hello_definition, runner=("hostA", 4242)
        )
    finally:
        event.remove(db.get_bind(), "commit", count)
    assert len(commits) == 1
    db.commit()

    def row(sid: str) -> tuple[object, ...]:
        s = db.get(FlowSession, sid, populate_existing=True)
        assert s is not None
        return (s.status, s.version, s.runner_host, s.runner_pid, s.queued, s.reason)

    assert row(created.id) == row(apart) == (S.ACTIVE, 2, "hostA", 4242, False, None)
    claimed = db.get(FlowSession, created.id)
    assert claimed is not None and claimed.started_at == claimed.created_at
    assert (created.status, created.version, created.runner_pid) == (S.ACTIVE, 2, 4242)

    def events(sid: str) -> list[tuple[object, ...]]:
        return [(e.op, e.from_status, e.to_status, e.actor) for e in _events(db, sid)]

    assert events(created.id) == events(apart)
    assert [e[0] for e in events(created.id)] == ["create", "start"]
    assert events(created.id)[1][3] == "runner"
