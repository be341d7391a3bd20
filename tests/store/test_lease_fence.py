"""The runner's lease (store.changes, docs/ARCHITECTURE.md §2 "Ownership"): every write of a
manager holding a lease is conditioned on it in the write itself. For each write the runner
makes, the session is taken from the lease right before the write (another host takes it over,
the same host and pid claim it again, it is aborted and retried, or deleted): the write is
refused and every row of every table is as the takeover left it. The same writes land while the
lease holds, and a takeover still uncommitted when the write starts is waited for and then
refuses it. Every test runs on SQLite and, when VC_TEST_DATABASE_URL is set, PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import text

from store import (
    FlowSessionManager,
    Lease,
    LeaseLost,
    StageManager,
    StageStatus,
    StoreError,
    get_session_factory,
)
from tests.hosts.common import snapshot

HOST_A, PID_A = "host-a", 1001
HOST_B, PID_B = "host-b", 2002


@dataclass
class Runner:
    """What a runner holds: its lease and its two managers, on a connection of their own."""

    sid: str
    stage_ids: list[int]
    lease: Lease
    sessions: FlowSessionManager
    stages: StageManager


@pytest.fixture
def scene(engine, hello_definition):  # type: ignore[no-untyped-def]
    """A session of three stages claimed by runner A (host-a, pid 1001), and A's leased
    managers; ``scene.other`` is a session factory for everyone else."""
    factory = get_session_factory(engine)
    with factory() as db:
        manager = FlowSessionManager(db)
        sid = manager.create_session("hello", definition=hello_definition).id
        change = manager.start_session(sid, runner_host=HOST_A, runner_pid=PID_A)
        lease = manager.lease_of(change, HOST_A, PID_A)
        stage_ids = [s.id for s in StageManager(db).list_stages(sid)]
    assert lease.token == change.version
    with factory() as db_a:
        yield Runner(
            sid,
            stage_ids,
            lease,
            FlowSessionManager(db_a, actor="runner", lease=lease),
            StageManager(db_a, actor="runner", lease=lease),
        )


# -- the runner's writes ----------------------------------------------------------------------
# Each case runs what the runner did before on its leased managers (it lands: the lease holds)
# and returns the write to interleave, ready to call.

Case = Callable[[Runner], Callable[[], Any]]


def _started(r: Runner) -> Any:
    return r.stages.start_attempt(r.stage_ids[0], 1, pid=4321, pid_start=77, host=HOST_A)


def _stage(r: Runner, status: StageStatus, **kwargs: Any) -> Callable[[], Any]:
    return lambda: r.stages.move_stage(r.stage_ids[0], status, **kwargs)


def _after_start(write: Callable[[Runner], Callable[[], Any]]) -> Case:
    def case(r: Runner) -> Callable[[], Any]:
        _started(r)
        return write(r)

    return case


def _resume_of_paused(r: Runner) -> Callable[[], Any]:
    _started(r)
    r.stages.move_stage(r.stage_ids[0], StageStatus.PAUSED)
    return _stage(r, StageStatus.ACTIVE)


def _exit_code_of_aborted(r: Runner) -> Callable[[], Any]:
    _started(r)
    r.stages.move_stage(r.stage_ids[0], StageStatus.FAILED, error="aborted")
    return lambda: r.stages.record_exit_code(r.stage_ids[0], -15)


def _complete_from_known(r: Runner) -> Callable[[], Any]:
    known = _started(r)
    return _stage(r, StageStatus.COMPLETED, exit_code=0, known=known)


def _session_complete(r: Runner) -> Callable[[], Any]:
    for i, stage_id in enumerate(r.stage_ids):
        r.stages.start_attempt(stage_id, 1, pid=4321 + i, pid_start=77, host=HOST_A)
        r.stages.move_stage(stage_id, StageStatus.COMPLETED, exit_code=0)
    return lambda: r.sessions.complete(r.sid)


CASES: dict[str, Case] = {
    "start_attempt": lambda r: lambda: _started(r),
    "stage start without a process": lambda r: _stage(
        r, StageStatus.ACTIVE, new_attempt=True, attempt=1
    ),
    "stage completed": _after_start(lambda r: _stage(r, StageStatus.COMPLETED, exit_code=0)),
    "stage completed from the state its start left": _complete_from_known,
    "stage failed": _after_start(
        lambda r: _stage(r, StageStatus.FAILED, error="exit code 3", exit_code=3)
    ),
    "stage paused (SIGSTOP)": _after_start(lambda r: _stage(r, StageStatus.PAUSED)),
    "stage resumed (SIGCONT)": _resume_of_paused,
    "stage reset to PENDING (recovery)": _after_start(lambda r: _stage(r, StageStatus.PENDING)),
    "stage metadata": _after_start(
        lambda r: _stage(r, StageStatus.ACTIVE, metadata={"progress": 30, "note": "x"})
    ),
    "set_progress": _after_start(lambda r: lambda: r.stages.set_progress(r.stage_ids[0], 50)),
    "record_outputs": _after_start(
        lambda r: lambda: r.stages.record_outputs(r.stage_ids[0], 1, {"rows": "42"})
    ),
    "record_exit_code": _exit_code_of_aborted,
    "record_process": _after_start(
        lambda r: lambda: r.stages.record_process(r.stage_ids[0], pid=999, pid_start=1, host=HOST_A)
    ),
    "create_stage": lambda r: (
        lambda: r.stages.create_stage(r.sid, config={"run": "true"}, name="extra")
    ),
    "session paused at a gate": lambda r: (
        lambda: r.sessions.pause(r.sid, reason="waiting: approve")
    ),
    "session failed": lambda r: lambda: r.sessions.fail(r.sid, "stage count failed"),
    "session completed": _session_complete,
    "session started again (resumed before it ran)": lambda r: (
        lambda: r.sessions.start_session(r.sid, runner_host=HOST_A, runner_pid=PID_A)
    ),
    "announcement recorded": lambda r: (
        lambda: r.sessions.record_notified(r.sid, "failure #9", "count failed")
    ),
    "heartbeat": lambda r: (
        lambda: r.sessions.heartbeat(r.sid, runner_host=HOST_A, runner_pid=PID_A)
    ),
    "release_runner": lambda r: (
        lambda: r.sessions.release_runner(r.sid, runner_host=HOST_A, runner_pid=PID_A)
    ),
}
#: The writes that answer False instead of raising when refused.
ANSWERS_FALSE = {"heartbeat", "release_runner"}


def _prepare(r: Runner, case: str) -> Callable[[], Any]:
    return CASES[case](r)


# -- taking the session from the lease ----------------------------------------------------------


def _stale(engine, sid: str) -> None:  # type: ignore[no-untyped-def]
    """Runner A's heartbeat stops (it stalled, or lost its link to the store)."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE flow_sessions SET heartbeat_at = :t WHERE id = :s"),
            {"t": time.time() - 3600, "s": sid},
        )


def _another_host(engine, sid: str) -> None:  # type: ignore[no-untyped-def]
    _stale(engine, sid)
    with get_session_factory(engine)() as db:
        FlowSessionManager(db, actor="runner").start_session(
            sid, runner_host=HOST_B, runner_pid=PID_B
        )


def _same_host_and_pid(engine, sid: str) -> None:  # type: ignore[no-untyped-def]
    """Claimed again under A's own host and pid (a worker claiming a session its stalled
    runner thread still runs): only the token tells the two claims apart."""
    _stale(engine, sid)
    with get_session_factory(engine)() as db:
        FlowSessionManager(db, actor="runner").start_session(
            sid, runner_host=HOST_A, runner_pid=PID_A
        )


def _aborted_and_retried(engine, sid: str) -> None:  # type: ignore[no-untyped-def]
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db, actor="ana")
        manager.abort(sid)
        manager.retry(sid)


def _deleted(engine, sid: str) -> None:  # type: ignore[no-untyped-def]
    with get_session_factory(engine)() as db:
        FlowSessionManager(db, actor="ana").delete(sid, force=True)


TAKEOVERS = {
    "another host took it over": _another_host,
    "claimed again under the same host and pid": _same_host_and_pid,
    "aborted and retried": _aborted_and_retried,
    "deleted": _deleted,
}


def _refused(case: str, write: Callable[[], Any]) -> StoreError | None:
    """Call the write; the LeaseLost it raised (None for a refusal answered False)."""
    if case in ANSWERS_FALSE:
        assert write() is False
        return None
    with pytest.raises(LeaseLost) as raised:
        write()
    return raised.value


@pytest.mark.parametrize("how", list(TAKEOVERS))
@pytest.mark.parametrize("case", list(CASES))
def test_a_write_after_the_session_was_taken_from_the_lease_is_refused_and_changes_nothing(
    engine, scene, case, how
):
    write = _prepare(scene, case)
    TAKEOVERS[how](engine, scene.sid)
    before = snapshot(engine)
    error = _refused(case, write)
    assert snapshot(engine) == before
    if error is not None:
        assert error.deleted == (how == "deleted")
        if how == "another host took it over":
            assert error.holder == (HOST_B, PID_B)
            assert "another runner took over" in str(error) and "pid 2002 on host-b" in str(error)


@pytest.mark.parametrize("case", list(CASES))
def test_the_same_write_lands_while_the_lease_holds(engine, scene, case):
    write = _prepare(scene, case)
    before = snapshot(engine)
    result = write()
    assert snapshot(engine) != before
    assert result is not False


@pytest.mark.parametrize("case", list(CASES))
def test_a_takeover_uncommitted_when_the_write_starts_is_waited_for_and_refuses_it(
    engine, scene, case
):
    """The fence is in the write, not in a read before it: the takeover holds the session
    row (PostgreSQL) or the write lock (SQLite) as the write starts; the write waits for it,
    and once it commits, finds the claim changed and writes nothing."""
    write = _prepare(scene, case)
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["result"] = write()
        except BaseException as exc:  # handed to the test's thread
            outcome["error"] = exc

    with engine.connect() as conn:
        transaction = conn.begin()
        conn.execute(
            text(
                "UPDATE flow_sessions SET runner_host = :h, runner_pid = :p, "
                "runner_lease = version + 1, version = version + 1, heartbeat_at = :t "
                "WHERE id = :s"
            ),
            {"h": HOST_B, "p": PID_B, "t": time.time(), "s": scene.sid},
        )
        writer = threading.Thread(target=run)
        writer.start()
        writer.join(0.5)
        assert writer.is_alive(), f"the write did not wait for the takeover: {outcome}"
        transaction.commit()
        before = snapshot(engine)
    writer.join(30)
    assert not writer.is_alive()
    assert snapshot(engine) == before
    if case in ANSWERS_FALSE:
        assert outcome == {"result": False}
    else:
        assert isinstance(outcome.get("error"), LeaseLost), outcome


def test_a_leased_manager_writes_no_other_session(engine, scene, hello_definition):
    with get_session_factory(engine)() as db:
        other = FlowSessionManager(db).create_session("hello", definition=hello_definition).id
        stage_id = StageManager(db).list_stages(other)[0].id
    before = snapshot(engine)
    with pytest.raises(LeaseLost, match="not the session this runner holds"):
        scene.stages.move_stage(stage_id, StageStatus.ACTIVE)
    with pytest.raises(LeaseLost, match="not the session this runner holds"):
        scene.stages.set_progress(stage_id, 10)
    with pytest.raises(LeaseLost, match="not the session this runner holds"):
        scene.sessions.pause(other)
    assert snapshot(engine) == before


def test_every_claim_writes_a_new_token_and_releases_clear_it(engine, hello_definition):
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db)
        created = manager.create_session("hello", definition=hello_definition, runner=("h", 1))
        assert created.runner_lease == created.version == 2
        queued = manager.create_session("hello", definition=hello_definition, queued=True).id
        claimed = manager.claim_queued(runner_host="w", runner_pid=7)
        assert claimed is not None and claimed.session_id == queued
        assert manager.get_session(queued).runner_lease == claimed.version
        sid = manager.create_session("hello", definition=hello_definition).id
        first = manager.start_session(sid, runner_host="h", runner_pid=1)
        _stale(engine, sid)
        again = manager.start_session(sid, runner_host="h", runner_pid=1)
        assert manager.get_session(sid).runner_lease == again.version > first.version
        lease = manager.lease_of(again, "h", 1)
        runner = FlowSessionManager(db, lease=lease)
        assert runner.release_runner(sid, runner_host="h", runner_pid=1)
        row = manager.get_session(sid)
        assert (row.runner_host, row.runner_pid, row.runner_lease) == (None, None, None)
