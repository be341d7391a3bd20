"""Manual gates through the managers: `approve` passes a waiting gate, and the `resume` of a
session PAUSED at a gate passes it too, each in one transaction. Real SQLite and PostgreSQL.

The sessions are brought to their gates through the managers, as a runner would (the gate
stage PAUSED; the session PAUSED with reason ``waiting: <gate>`` once nothing else runs),
without running one."""

from __future__ import annotations

import os
from typing import Any

import pytest

from store import FlowSessionManager, InvalidTransition, StageManager
from store.changes import SessionChange
from store.identity import local_host
from store.queries import get_session_view, list_events
from store.status import GATE_PASS, STAGE_TRANSITIONS

#: build, then two gates side by side (qa, legal), then deploy after both.
DEFINITION = {
    "id": "release",
    "fail_fast": True,
    "stages": [
        {"name": "build", "run": "true"},
        {"name": "qa", "needs": ["build"], "checklist": ["tests read"]},
        {"name": "legal", "needs": ["build"]},
        {"name": "deploy", "run": "true", "needs": ["qa", "legal"]},
    ],
}

Managers = tuple[FlowSessionManager, StageManager]


class Recorder:
    """An integration that keeps every change published to it."""

    def __init__(self) -> None:
        self.changes: list[SessionChange] = []

    def publish(self, change: SessionChange) -> None:
        self.changes.append(change)


def started(managers: Managers) -> str:
    """An ACTIVE session whose build has COMPLETED; its gates are PENDING."""
    sessions, stages = managers
    sid = sessions.create_session("release", name="r", definition=DEFINITION).id
    sessions.start_session(sid)
    build = stage(managers, sid, "build")
    stages.move_stage(build.id, "ACTIVE")
    stages.move_stage(build.id, "COMPLETED")
    return sid


def stage(managers: Managers, sid: str, name: str) -> Any:
    return next(s for s in managers[1].list_stages(sid) if s.name == name)


def open_gates(managers: Managers, sid: str, *names: str) -> None:
    """The gates reached: PAUSED, the session going on (other branches may run)."""
    for name in names:
        managers[1].move_stage(stage(managers, sid, name).id, "PAUSED")


def wait_at(managers: Managers, sid: str, gate: str) -> None:
    """Nothing else can run: the session PAUSED at ``gate``."""
    managers[0].pause(sid, reason=f"waiting: {gate}")


def statuses(db: Any, sid: str) -> dict[str, str]:
    db.commit()
    view = get_session_view(db, sid)
    assert view is not None
    return {"session": view.status, **{s.name: s.status for s in view.stages}}


def state(db: Any, sid: str) -> tuple[Any, ...]:
    """Everything an operation could change: the session row, its stages, its events."""
    db.commit()
    view = get_session_view(db, sid)
    assert view is not None
    return (
        view.status,
        view.reason,
        view.version,
        view.updated_at,
        tuple((s.name, s.status, s.version) for s in view.stages),
        len(list_events(db, sid)),
    )


def refusal(managers: Managers, db: Any, sid: str, gate: str | None = None) -> str:
    """``approve``'s refusal, checked to have changed nothing."""
    before = state(db, sid)
    with pytest.raises(InvalidTransition) as info:
        managers[0].approve(sid, gate)
    assert state(db, sid) == before
    return str(info.value)


def test_the_gate_pass_is_an_edge_of_the_stage_table() -> None:
    assert GATE_PASS[1] in STAGE_TRANSITIONS[GATE_PASS[0]]


def test_approve_passes_the_gate_and_records_who_approved(managers: Managers, db: Any) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    approver = FlowSessionManager(db, actor="ana")
    change = approver.approve(sid[:8])
    assert change.stage == "qa"
    assert statuses(db, sid)["qa"] == "COMPLETED"
    event = list_events(db, sid)[-1]
    assert (event.op, event.stage, event.from_status, event.to_status) == (
        "approve",
        "qa",
        "PAUSED",
        "COMPLETED",
    )
    assert (event.actor, event.host, event.pid) == ("ana", local_host(), os.getpid())


def test_approve_resumes_a_session_paused_at_that_gate(managers: Managers, db: Any) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    wait_at(managers, sid, "qa")
    change = managers[0].approve(sid, "qa")
    assert (change.from_status, change.to_status) == ("PAUSED", "ACTIVE")
    assert statuses(db, sid) == {
        "session": "ACTIVE",
        "build": "COMPLETED",
        "qa": "COMPLETED",
        "legal": "PENDING",
        "deploy": "PENDING",
    }
    assert managers[0].get_session(sid).reason is None
    ops = [(e.op, e.stage, e.from_status, e.to_status) for e in list_events(db, sid)[-2:]]
    assert ops == [("approve", "qa", "PAUSED", "COMPLETED"), ("resume", None, "PAUSED", "ACTIVE")]


def test_approve_leaves_an_active_session_active_and_bumps_its_version(
    managers: Managers, db: Any
) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    before = managers[0].get_session(sid)
    version, updated_at = before.version, before.updated_at
    change = managers[0].approve(sid)
    after = managers[0].get_session(sid)
    assert (change.from_status, change.to_status) == ("ACTIVE", "ACTIVE")
    assert (after.status, after.version) == ("ACTIVE", version + 1)
    assert after.updated_at >= updated_at
    assert [e.op for e in list_events(db, sid)][-1] == "approve"


def test_approve_of_another_gate_resumes_a_session_paused_at_its_gate_which_still_waits(
    managers: Managers, db: Any
) -> None:
    """The session waited at qa only because nothing else could run; legal's branch can
    now. qa is not passed: its runner pauses at it again once nothing else can run."""
    sid = started(managers)
    open_gates(managers, sid, "qa", "legal")
    wait_at(managers, sid, "qa")
    change = managers[0].approve(sid, "legal")
    now = statuses(db, sid)
    assert (now["session"], now["qa"], now["legal"]) == ("ACTIVE", "PAUSED", "COMPLETED")
    assert managers[0].get_session(sid).reason is None
    assert (change.to_status, change.stage) == ("ACTIVE", "legal")
    assert [e.op for e in list_events(db, sid)][-2:] == ["approve", "resume"]


def test_a_pause_at_a_gate_is_refused_once_that_gate_was_approved(
    managers: Managers, db: Any
) -> None:
    """The runner pauses at a gate it read waiting; an approval committed in between makes
    that pause a refusal, not a session paused at a gate already passed."""
    sid = started(managers)
    open_gates(managers, sid, "qa", "legal")
    managers[0].approve(sid, "qa")
    with pytest.raises(InvalidTransition, match="gate qa no longer waits"):
        managers[0].pause(sid, reason="waiting: qa", at_gate="qa")
    assert statuses(db, sid)["session"] == "ACTIVE"
    managers[0].pause(sid, reason="waiting: legal", at_gate="legal")
    assert statuses(db, sid)["session"] == "PAUSED"


def test_approve_leaves_a_session_paused_by_hand_paused(managers: Managers, db: Any) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa", "legal")
    managers[0].pause(sid)
    managers[0].approve(sid, "legal")
    now = statuses(db, sid)
    assert (now["session"], now["qa"], now["legal"]) == ("PAUSED", "PAUSED", "COMPLETED")


def test_an_approval_while_paused_by_hand_leaves_the_time_it_was_paused(
    managers: Managers, db: Any
) -> None:
    """The dashboard's ‖ clock counts from the pause, not from the session row's last
    change (an approval bumps that)."""
    from store.queries import paused_since

    sid = started(managers)
    open_gates(managers, sid, "qa", "legal")
    managers[0].pause(sid)
    db.commit()
    paused_at = paused_since(db, [sid])[sid]
    managers[0].approve(sid, "legal")
    db.commit()
    view = get_session_view(db, sid)
    assert view is not None and view.updated_at > paused_at
    assert paused_since(db, [sid]) == {sid: paused_at}


def test_a_pause_of_a_session_paused_by_hand_does_not_offer_approve(
    managers: Managers, db: Any
) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    managers[0].pause(sid)
    with pytest.raises(InvalidTransition) as refused:
        managers[0].pause(sid)
    assert str(refused.value).endswith("it is PAUSED; allowed: resume, abort, delete")
    assert refused.value.allowed == ["resume", "abort", "delete"]


def test_a_pause_of_a_session_paused_at_a_gate_offers_approve(managers: Managers, db: Any) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    wait_at(managers, sid, "qa")
    with pytest.raises(InvalidTransition) as refused:
        managers[0].pause(sid)
    assert str(refused.value).endswith(
        "it is PAUSED (waiting at gate qa); allowed: approve, resume, abort, delete"
    )
    assert refused.value.allowed[0] == "approve"


def test_approve_publishes_the_gate_and_the_session_change(db: Any, managers: Managers) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    wait_at(managers, sid, "qa")
    recorder = Recorder()
    FlowSessionManager(db, integration=recorder).approve(sid)
    assert [(c.op, c.stage, c.from_status, c.to_status) for c in recorder.changes] == [
        ("approve", "qa", "PAUSED", "COMPLETED"),
        ("resume", None, "PAUSED", "ACTIVE"),
    ]


def test_approve_refuses_a_session_with_no_gate_waiting(managers: Managers, db: Any) -> None:
    sid = started(managers)
    assert refusal(managers, db, sid) == f"session {sid[:12]} has no gate waiting"


def test_approve_refuses_a_gate_that_is_not_waiting_naming_those_that_are(
    managers: Managers, db: Any
) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    message = refusal(managers, db, sid, "legal")
    assert message == f"session {sid[:12]} has no gate 'legal' waiting; waiting: qa"


def test_approve_without_a_gate_refuses_when_two_wait_naming_them(
    managers: Managers, db: Any
) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa", "legal")
    assert refusal(managers, db, sid) == (
        f"session {sid[:12]} has 2 gates waiting: qa, legal; name the one to approve"
    )


def test_approve_refuses_a_task_stage_by_name(managers: Managers, db: Any) -> None:
    """A PAUSED task is not a gate: passing it would skip its work."""
    sid = started(managers)
    open_gates(managers, sid, "qa")
    deploy = stage(managers, sid, "deploy")
    managers[1].move_stage(deploy.id, "ACTIVE")
    managers[1].move_stage(deploy.id, "PAUSED")
    assert "has no gate 'deploy' waiting; waiting: qa" in refusal(managers, db, sid, "deploy")


def test_approve_refuses_an_ended_session_as_other_operations_do(
    managers: Managers, db: Any
) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    managers[0].abort(sid)
    assert refusal(managers, db, sid) == (
        f"cannot approve session {sid[:12]}: it is FAILED; allowed: retry, delete"
    )


def test_resume_of_a_session_paused_at_a_gate_passes_the_gate(managers: Managers, db: Any) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    wait_at(managers, sid, "qa")
    resumer = FlowSessionManager(db, actor="ana")
    assert resumer.resume(sid).to_status == "ACTIVE"
    assert statuses(db, sid)["qa"] == "COMPLETED"
    events = [(e.op, e.stage, e.to_status, e.actor) for e in list_events(db, sid)[-2:]]
    assert events == [("approve", "qa", "COMPLETED", "ana"), ("resume", None, "ACTIVE", "ana")]


def test_resume_of_a_session_paused_otherwise_leaves_its_gates_waiting(
    managers: Managers, db: Any
) -> None:
    """Paused by someone while a gate waits beside other branches: resume is only that."""
    sid = started(managers)
    open_gates(managers, sid, "qa")
    managers[0].pause(sid)
    managers[0].resume(sid)
    assert statuses(db, sid)["qa"] == "PAUSED"
    assert list_events(db, sid)[-1].op == "resume"


def test_resume_publishes_the_gate_it_passed(db: Any, managers: Managers) -> None:
    sid = started(managers)
    open_gates(managers, sid, "qa")
    wait_at(managers, sid, "qa")
    recorder = Recorder()
    FlowSessionManager(db, integration=recorder).resume(sid)
    assert [(c.op, c.stage) for c in recorder.changes] == [("approve", "qa"), ("resume", None)]


def test_a_history_of_gates_passed_replays_on_the_state_tables(managers: Managers, db: Any) -> None:
    from tests.reliability.replay import replay

    sid = started(managers)
    open_gates(managers, sid, "qa", "legal")
    managers[0].approve(sid, "legal")
    wait_at(managers, sid, "qa")
    managers[0].resume(sid)
    db.commit()
    view = get_session_view(db, sid)
    assert view is not None
    final = {s.name: s.status for s in view.stages}
    assert replay(list_events(db, sid), list(final), view.status, final) == []
