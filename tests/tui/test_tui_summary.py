"""The line above the stages (``app.tui.data.Detail.summary``), read from a real store the
way the dashboard reads it: what it says of a runner that is silent but alive, and of the
checklists of several gates waiting at once."""

from __future__ import annotations

import subprocess
import sys
import time
from typing import Any

from tests.tui.tui_testkit import make_session, manager

GATES_WITH_CHECKLISTS = """\
name: Gates
stages:
  - {name: build, run: echo built}
  - {name: qa, needs: [build], checklist: [smoke test passed]}
  - {name: legal, needs: [build], checklist: [licences listed, notice signed]}
  - {name: deploy, run: echo deployed, needs: [qa, legal]}
"""


def _summary(ctx: Any, session_id: str) -> str:
    from app.tui.data import load_detail

    with ctx.factory() as db:
        detail = load_detail(db, session_id)
        db.commit()
    assert detail is not None
    return detail.summary()


def _stale_heartbeat(ctx: Any, session_id: str, pid: int) -> None:
    """Claimed by ``pid`` on this host, whose last heartbeat is far older than the limit."""
    from sqlalchemy import text

    from store.identity import local_host

    with ctx.factory() as db:
        manager(db).start_session(session_id, runner_host=local_host(), runner_pid=pid)
        db.execute(
            text("UPDATE flow_sessions SET heartbeat_at = :at WHERE id = :id"),
            {"at": time.time() - 3600, "id": session_id},
        )
        db.commit()


def test_an_orphan_whose_runner_is_alive_here_is_said_to_be_silent_not_gone(ctx: Any) -> None:
    """A runner stopped, or one that cannot write while the store is locked, beats no
    more but is not gone: saying "gone" would invite a takeover of a live runner blindly."""
    sid = make_session(ctx, name="locked out")
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _stale_heartbeat(ctx, sid, runner.pid)
        said = _summary(ctx, sid)
    finally:
        runner.kill()
        runner.wait()
    assert said.startswith(
        f"ACTIVE (orphaned: its runner, pid {runner.pid} on this host, is alive but silent"
    ), said
    assert "gone" not in said


def test_an_orphan_whose_runner_is_dead_is_said_to_be_gone(ctx: Any) -> None:
    sid = make_session(ctx, name="crashed")
    runner = subprocess.Popen([sys.executable, "-c", "pass"])
    runner.wait()
    _stale_heartbeat(ctx, sid, runner.pid)
    assert _summary(ctx, sid).startswith(
        "ACTIVE (orphaned: its runner is gone; r starts a new one)"
    )


def _detail(ctx: Any, session_id: str) -> Any:
    from app.tui.data import load_detail

    with ctx.factory() as db:
        detail = load_detail(db, session_id)
        db.commit()
    assert detail is not None
    return detail


def _active_stage(ctx: Any, session_id: str) -> None:
    from store import StageManager

    with ctx.factory() as db:
        stages = StageManager(db)
        stages.move_stage(stages.list_stages(session_id)[0].id, "ACTIVE")


def test_a_stage_of_a_runner_dead_on_this_host_is_known_only_until_its_last_beat(
    ctx: Any,
) -> None:
    """Paused or not, the ACTIVE stage of a runner dead on this host runs no more (the
    runner's guard stops its processes): its clock stops at the runner's last heartbeat."""
    sid = make_session(ctx, name="crashed")
    runner = subprocess.Popen([sys.executable, "-c", "pass"])
    runner.wait()
    _stale_heartbeat(ctx, sid, runner.pid)
    _active_stage(ctx, sid)
    with ctx.factory() as db:
        manager(db).pause(sid)
    detail = _detail(ctx, sid)
    beat = detail.stages[0].known_until
    assert detail.orphaned and beat is not None and time.time() - beat > 3000


def test_a_stage_of_a_silent_runner_alive_here_keeps_its_clock(ctx: Any) -> None:
    """A runner stopped, or locked out of the store, may have its stages running still."""
    sid = make_session(ctx, name="locked out")
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        _stale_heartbeat(ctx, sid, runner.pid)
        _active_stage(ctx, sid)
        detail = _detail(ctx, sid)
    finally:
        runner.kill()
        runner.wait()
    assert detail.orphaned and detail.stages[0].known_until is None


def test_a_stage_of_a_runner_on_another_host_keeps_its_clock(ctx: Any) -> None:
    """Its heartbeat stopped, but whether it died or lost the store only that host knows:
    its stages may be running."""
    from sqlalchemy import text

    sid = make_session(ctx, name="over there")
    with ctx.factory() as db:
        manager(db).start_session(sid, runner_host="elsewhere", runner_pid=4242)
        db.execute(
            text("UPDATE flow_sessions SET heartbeat_at = :at WHERE id = :id"),
            {"at": time.time() - 3600, "id": sid},
        )
        db.commit()
    _active_stage(ctx, sid)
    detail = _detail(ctx, sid)
    assert detail.orphaned and detail.stages[0].known_until is None


def test_several_gates_waiting_each_show_their_checklist(ctx: Any) -> None:
    from tests.gates import hold_at_gates

    (ctx.settings.workflows_dir / "gates.yaml").write_text(GATES_WITH_CHECKLISTS)
    sid = make_session(ctx, "gates", name="release", state="ACTIVE")
    with ctx.factory() as db:
        hold_at_gates(db, sid, ("qa", "legal"), None)
    assert _summary(ctx, sid) == (
        "ACTIVE — gates waiting: qa, legal (g on a gate in the stages approves it)"
        " — qa: check smoke test passed — legal: check licences listed; notice signed"
    )


def test_the_gate_resume_passes_shows_its_checklist_and_the_other_gates_theirs(
    ctx: Any,
) -> None:
    from tests.gates import hold_at_gates

    (ctx.settings.workflows_dir / "gates.yaml").write_text(GATES_WITH_CHECKLISTS)
    sid = make_session(ctx, "gates", name="release", state="ACTIVE")
    with ctx.factory() as db:
        hold_at_gates(db, sid, ("qa", "legal"), "qa")
    assert _summary(ctx, sid) == (
        "PAUSED — waiting: qa (r resumes it) — check: smoke test passed"
        " — also waiting: legal (g on a gate in the stages approves it)"
        " — legal: check licences listed; notice signed"
    )


def test_a_session_paused_by_hand_says_r_resumes_it(ctx: Any) -> None:
    """As a PENDING session says what starts it: a pause by hand, or one left after its
    gate was approved meanwhile, waits for ``r`` just as a gate does."""
    sid = make_session(ctx, name="nightly", state="PAUSED")
    assert _summary(ctx, sid) == "PAUSED (r resumes it)"


def test_the_window_gives_a_paused_session_the_time_it_was_paused(ctx: Any) -> None:
    """What the table's ‖ clock counts from (an approval while paused moves updated_at)."""
    from app.tui.data import load_window
    from store.queries import SessionFilter, paused_since

    sid = make_session(ctx, state="PAUSED")
    running = make_session(ctx, state="ACTIVE")
    with ctx.factory() as db:
        paused = paused_since(db, [sid])
        window = load_window(db, SessionFilter(), 0, 10)
        db.commit()
    assert {r.id: r.paused_at for r in window.rows} == {sid: paused[sid], running: None}
