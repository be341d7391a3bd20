"""What the store keeps and answers for telling people: the record of an announced event
(written once, whoever tries), the states `vc flow session wait` follows, waiting itself,
and the failures and gates the dashboard pops up. Real SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from store import FlowSessionManager, StageManager
from store.queries import alerts_after, list_events, session_states
from store.waiting import wait_for_end

DEFINITION = {
    "id": "release",
    "stages": [
        {"name": "build", "run": "true"},
        {"name": "approve", "checklist": ["changelog reviewed"]},
    ],
}


def new_session(managers: tuple[FlowSessionManager, StageManager], name: str = "s") -> str:
    sessions, _ = managers
    return sessions.create_session("release", name=name, definition=DEFINITION).id


def reach_gate(managers: tuple[FlowSessionManager, StageManager], sid: str) -> None:
    """What the runner does at a manual gate: the gate stage, then the session, PAUSED."""
    sessions, stages = managers
    sessions.start_session(sid)
    for stage in stages.list_stages(sid):
        if stage.name == "build":
            stages.update_stage_status(stage.id, "ACTIVE")
            stages.update_stage_status(stage.id, "COMPLETED")
        else:
            stages.update_stage_status(stage.id, "PAUSED")
    sessions.pause(sid, reason="waiting: approve")


# -- the record of an announced event ---------------------------------------------------------


def test_an_event_is_recorded_as_announced_once(managers: Any, db: Any) -> None:
    sessions, _ = managers
    sid = new_session(managers)
    assert not sessions.notified(sid, "failure #3")
    assert sessions.record_notified(sid, "failure #3", "sent to 1 of 1 target(s)")
    assert sessions.notified(sid, "failure #3")
    assert not sessions.record_notified(sid, "failure #3", "sent again")
    notes = [e for e in list_events(db, sid) if e.op == "notify"]
    assert [n.reason for n in notes] == ["failure #3: sent to 1 of 1 target(s)"]
    assert notes[0].from_status is None and notes[0].to_status is None


def test_records_of_different_events_do_not_mask_each_other(managers: Any) -> None:
    sessions, _ = managers
    sid = new_session(managers)
    sessions.record_notified(sid, "failure #3", "sent")
    assert not sessions.notified(sid, "failure #31")
    assert not sessions.notified(sid, "gate approve #3")
    assert sessions.record_notified(sid, "failure #31", "sent")


def test_a_record_for_a_deleted_session_writes_nothing(managers: Any) -> None:
    sessions, _ = managers
    sid = new_session(managers)
    sessions.delete(sid)
    assert not sessions.record_notified(sid, "failure #3", "sent")


def test_a_writer_racing_another_for_one_event_writes_nothing(engine: Any, managers: Any) -> None:
    """The first writer's transaction is held open between its insert and its commit (its
    commit waits for the test): the second writer must wait for it and then find its
    record, not insert a second one beside the uncommitted first."""
    from store import get_session_factory

    sid = new_session(managers)
    factory = get_session_factory(engine)
    release, inserted = threading.Event(), threading.Event()
    results: dict[str, bool] = {}

    def first() -> None:
        with factory() as db:
            commit = db.commit

            def held_commit() -> None:
                inserted.set()
                release.wait(10)
                commit()

            db.commit = held_commit  # type: ignore[method-assign]
            results["first"] = FlowSessionManager(db).record_notified(sid, "gate approve #2", "a")

    def second() -> None:
        with factory() as db:
            results["second"] = FlowSessionManager(db).record_notified(sid, "gate approve #2", "b")

    one = threading.Thread(target=first)
    one.start()
    assert inserted.wait(10)
    two = threading.Thread(target=second)
    two.start()
    time.sleep(0.3)  # the second writer is at the first's lock now
    release.set()
    one.join(10)
    two.join(10)
    assert results == {"first": True, "second": False}


# -- session states ---------------------------------------------------------------------------


def test_session_states_say_ended_and_which_gate_a_session_waits_at(managers: Any, db: Any) -> None:
    sessions, _ = managers
    gated, done, gone = new_session(managers), new_session(managers), new_session(managers)
    reach_gate(managers, gated)
    sessions.start_session(done)
    sessions.fail(done, "stage build failed: exit code 3")
    sessions.delete(gone)
    states = session_states(db, [gated, done, gone])
    assert set(states) == {gated, done}
    assert (states[gated].status, states[gated].gate, states[gated].ended) == (
        "PAUSED",
        "approve",
        False,
    )
    assert states[done].ended and states[done].reason == "stage build failed: exit code 3"


# -- waiting ----------------------------------------------------------------------------------


def test_wait_returns_once_every_session_has_ended(engine: Any, managers: Any) -> None:
    from store import get_session_factory

    sessions, _ = managers
    first, second = new_session(managers), new_session(managers)
    sessions.start_session(first)
    sessions.start_session(second)
    factory = get_session_factory(engine)
    seen: list[tuple[str, str | None]] = []

    def finish() -> None:
        with factory() as db:
            other = FlowSessionManager(db)
            time.sleep(0.3)
            other.abort(first)
            time.sleep(0.3)
            other.fail(second, "boom")

    thread = threading.Thread(target=finish)
    thread.start()
    result = wait_for_end(
        engine, [first, second], 20, on_state=lambda sid, s: seen.append((sid, s and s.status))
    )
    thread.join()
    assert not result.timed_out and not result.all_completed
    assert {sid: s.status for sid, s in result.states.items() if s} == {
        first: "FAILED",
        second: "FAILED",
    }
    assert (first, "FAILED") in seen and (second, "FAILED") in seen


def test_wait_does_not_take_a_gate_for_an_end_and_times_out(engine: Any, managers: Any) -> None:
    sid = new_session(managers)
    reach_gate(managers, sid)
    started = time.monotonic()
    result = wait_for_end(engine, [sid], 0.5)
    assert result.timed_out and time.monotonic() - started >= 0.5
    state = result.states[sid]
    assert state is not None and state.gate == "approve"


def test_wait_reports_a_session_deleted_meanwhile(engine: Any, managers: Any) -> None:
    from store import get_session_factory

    sid = new_session(managers)
    factory = get_session_factory(engine)

    def delete() -> None:
        time.sleep(0.3)
        with factory() as db:
            FlowSessionManager(db).delete(sid)

    thread = threading.Thread(target=delete)
    thread.start()
    result = wait_for_end(engine, [sid], 20)
    thread.join()
    assert not result.timed_out and result.states[sid] is None and not result.all_completed


# -- the dashboard's alerts -------------------------------------------------------------------


def test_alerts_start_from_now_and_then_name_new_failures_and_gates(managers: Any, db: Any) -> None:
    sessions, _ = managers
    old = new_session(managers, "old failure")
    sessions.start_session(old)
    sessions.fail(old, "before the dashboard opened")
    start, none = alerts_after(db, None)
    assert none == []
    failed, gated, aborted = (new_session(managers, n) for n in ("f", "g", "a"))
    sessions.start_session(failed)
    sessions.fail(failed, "stage build failed: exit code 3")
    reach_gate(managers, gated)
    sessions.abort(aborted)  # somebody's decision: not news to them
    last, alerts = alerts_after(db, start)
    assert [(a.name, a.kind) for a in alerts] == [("f", "failure"), ("g", "gate")]
    assert alerts[0].reason == "stage build failed: exit code 3"
    assert alerts[1].stage == "approve" and alerts[1].checklist == ("changelog reviewed",)
    assert alerts_after(db, last) == (last, [])


def test_a_paused_task_stage_is_no_gate_alert(managers: Any, db: Any) -> None:
    sessions, stages = managers
    sid = new_session(managers)
    start, _ = alerts_after(db, None)
    sessions.start_session(sid)
    build = next(s for s in stages.list_stages(sid) if s.name == "build")
    stages.update_stage_status(build.id, "ACTIVE")
    stages.update_stage_status(build.id, "PAUSED")  # a user's pause, enforced by SIGSTOP
    sessions.pause(sid)
    assert alerts_after(db, start)[1] == []


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_alerts_cost_a_read_of_the_new_events_only(managers: Any, db: Any) -> None:
    """With a long history and nothing new, the query reads nothing but the newest id."""
    sessions, _ = managers
    for _ in range(50):
        sid = new_session(managers)
        sessions.start_session(sid)
        sessions.fail(sid, "x")
    last, _ = alerts_after(db, None)
    plan = db.connection().exec_driver_sql(
        "EXPLAIN QUERY PLAN SELECT id FROM flow_events WHERE id > ? AND id <= ? AND op = 'fail'",
        (last, last),
    )
    assert any("USING INTEGER PRIMARY KEY" in str(row) for row in plan)
