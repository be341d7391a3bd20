"""Queued work (docs/ARCHITECTURE.md §9): `vc flow worker` claims queued sessions atomically, runs
each exactly once, hands running sessions back to the queue on SIGTERM, and a worker that dies
leaves orphans that another worker or `resume` takes over. SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import text

from store import FlowSessionManager, get_session_factory, init_db
from store.liveness import is_orphaned
from store.queries import get_session_view
from store.workflows import find_workflow
from tests.conftest import run_vc, vc_env
from tests.hosts.common import alive, kill_group
from tests.processes import kill_with_guard
from tests.waiting import wait_until

TRIVIAL = """
name: Trivial
stages:
  - name: only
    run: "true"
"""

HANDBACK = """
name: Interrupted once
stages:
  - name: first
    run: echo one
  - name: work
    run: |
      echo "attempt $VC_ATTEMPT"
      if [ "$VC_ATTEMPT" = 1 ]; then sleep 60; fi
"""

GATED = """
name: Gated
stages:
  - name: build
    run: echo built
  - name: ok
    checklist: [the build looks right]
  - name: ship
    run: echo shipped
"""

#: fail_fast off: bad fails, the other branch goes on to a gate.
FAILED_BRANCH = """
name: Failed branch
fail_fast: false
stages:
  - {name: bad, run: "echo ran >> bad.count; exit 3", needs: []}
  - {name: good, run: "echo good", needs: []}
  - {name: gate, needs: [good]}
  - {name: after, run: "echo after", needs: [gate]}
"""

SLOW = """
name: Slow
stages:
  - name: long
    run: sleep 30
"""


@pytest.fixture
def queue_ws(store_workspace: Path, db_url: str):  # type: ignore[no-untyped-def]
    (store_workspace / "workflows" / "trivial.yaml").write_text(TRIVIAL.lstrip())
    (store_workspace / "workflows" / "handback.yaml").write_text(HANDBACK.lstrip())
    (store_workspace / "workflows" / "gated.yaml").write_text(GATED.lstrip())
    (store_workspace / "workflows" / "slow.yaml").write_text(SLOW.lstrip())
    (store_workspace / "workflows" / "failedbranch.yaml").write_text(FAILED_BRANCH.lstrip())
    engine = init_db(db_url)
    yield store_workspace, engine
    engine.dispose()


class Workers:
    """`vc flow worker` processes of a test, stopped (and their stages killed) at the end."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.ws / f"worker-{len(self.procs)}.err", "wb")  # noqa: SIM115
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "worker", *args],
            cwd=self.ws,
            env=vc_env(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def output(self, index: int) -> str:
        return (self.ws / f"worker-{index}.err").read_text()

    def stop_all(self) -> list[int]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        return [proc.wait(timeout=30) for proc in self.procs]


@pytest.fixture
def workers(queue_ws):  # type: ignore[no-untyped-def]
    ws, _ = queue_ws
    w = Workers(ws)
    yield w
    for proc in w.procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _queue(engine, ws: Path, workflow: str, n: int) -> list[str]:  # type: ignore[no-untyped-def]
    definition = find_workflow(ws / "workflows", workflow)
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db)
        return [
            manager.create_session(
                workflow, name=f"{workflow} {i}", definition=definition, queued=True
            ).id
            for i in range(n)
        ]


def _scalar(engine, sql: str, **params):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _view(engine, sid: str):  # type: ignore[no-untyped-def]
    with get_session_factory(engine)() as db:
        return get_session_view(db, sid)


def _starts(engine, sid: str) -> int:  # type: ignore[no-untyped-def]
    return int(
        _scalar(
            engine, "SELECT count(*) FROM flow_events WHERE session_id = :s AND op = 'start'", s=sid
        )
    )


# -- the claim itself ---------------------------------------------------------------------------


def test_concurrent_claims_take_each_session_once(queue_ws):
    """Six claimers with their own connections race over 60 queued sessions."""
    ws, engine = queue_ws
    ids = set(_queue(engine, ws, "trivial", 60))
    claimed: list[str] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def claimer() -> None:
        own = init_db(str(engine.url.render_as_string(hide_password=False)))
        try:
            with get_session_factory(own)() as db:
                manager = FlowSessionManager(db, actor="worker")
                while True:
                    change = manager.claim_queued()
                    if change is None:
                        return
                    with lock:
                        claimed.append(change.session_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=claimer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert Counter(claimed) == Counter(ids)  # every session once, none twice
    for sid in ids:
        assert _starts(engine, sid) == 1
        view = _view(engine, sid)
        assert view.status == "ACTIVE" and view.queued and view.runner_pid == os.getpid()


def test_claim_respects_the_workflow_filter_and_live_runners(queue_ws):
    ws, engine = queue_ws
    hello = _queue(engine, ws, "hello", 2)
    trivial = _queue(engine, ws, "trivial", 1)
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db, actor="worker")
        got = [manager.claim_queued(workflow_id="hello") for _ in range(3)]
        assert [c.session_id for c in got if c] == hello  # oldest first, hello only
        assert got[2] is None
        # a session created without --queue is never a worker's
        manager.create_session("trivial", name="not queued")
        change = manager.claim_queued()
        assert change is not None and change.session_id == trivial[0]
        assert manager.claim_queued() is None  # ours are live: nothing left


# -- workers ------------------------------------------------------------------------------------


def test_three_workers_run_each_of_100_sessions_exactly_once(queue_ws, workers):
    ws, engine = queue_ws
    ids = _queue(engine, ws, "trivial", 100)
    for _ in range(3):
        workers.start("--concurrency", "2")
    wait_until(
        lambda: (
            _scalar(engine, "SELECT count(*) FROM flow_sessions WHERE status = 'COMPLETED'") == 100
        ),
        timeout=50,
        interval=0.2,
        what="100 COMPLETED sessions",
    )
    assert workers.stop_all() == [0, 0, 0]
    with engine.connect() as conn:
        starts = dict(
            conn.execute(
                text(
                    "SELECT session_id, count(*) FROM flow_events WHERE op = 'start' "
                    "GROUP BY session_id"
                )
            ).all()
        )
        statuses = dict(conn.execute(text("SELECT id, status FROM flow_sessions")).all())
        attempts = conn.execute(text("SELECT DISTINCT attempt FROM stage_instances")).all()
        pids = conn.execute(text("SELECT DISTINCT pid FROM flow_events WHERE op = 'start'")).all()
    assert starts == dict.fromkeys(ids, 1)
    assert set(statuses.values()) == {"COMPLETED"}
    assert attempts == [(1,)]
    assert len(pids) >= 2, "the work was not shared between workers"
    for i in range(3):
        assert "Traceback" not in workers.output(i)


def test_sigterm_hands_running_sessions_back_to_the_queue(queue_ws, workers):
    ws, engine = queue_ws
    (sid,) = _queue(engine, ws, "handback", 1)
    first = workers.start()

    def running_pid():  # type: ignore[no-untyped-def]
        view = _view(engine, sid)
        return (
            _scalar(
                engine,
                "SELECT pid FROM stage_instances WHERE session_id = :s AND "
                "name = 'work' AND status = 'ACTIVE'",
                s=sid,
            )
            if view
            else None
        )

    stage_pid = wait_until(running_pid, timeout=20, what="the stage to run")
    assert alive(stage_pid)
    started = time.monotonic()
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=20) == 0
    assert time.monotonic() - started < 15
    assert not alive(stage_pid), "the interrupted stage's process outlived its worker"
    out = workers.output(0)
    assert "handed back to the queue" in out and "Traceback" not in out

    view = _view(engine, sid)
    assert view.status == "ACTIVE" and view.queued and view.runner_pid is None
    assert view.reason.startswith("requeued: worker")
    assert {s.name: s.status for s in view.stages} == {"first": "COMPLETED", "work": "PENDING"}

    workers.start()
    wait_until(
        lambda: _view(engine, sid).status == "COMPLETED",
        timeout=30,
        what="the handed-back session to complete",
    )
    view = _view(engine, sid)
    assert {s.name: s.attempt for s in view.stages} == {"first": 1, "work": 2}
    assert _starts(engine, sid) == 2  # one claim per worker
    assert workers.stop_all() == [0, 0]


STUBBORN = """
name: Stubborn
stages:
  - name: hold
    kill_timeout: 60
    run: "trap '' TERM; while :; do sleep 0.1; done"
"""


@pytest.mark.parametrize("first", [signal.SIGTERM, signal.SIGHUP])
def test_a_second_sigterm_kills_the_stages_a_stopping_worker_waits_for(queue_ws, workers, first):  # type: ignore[no-untyped-def]
    """The stage ignores SIGTERM and has a minute to go: a SIGTERM while the worker stops
    (a SIGTERM or a closing terminal's SIGHUP stopped it) cuts it short, as a foreground
    run's second Ctrl-C does, and the session still goes back to the queue."""
    ws, engine = queue_ws
    (ws / "workflows" / "stubborn.yaml").write_text(STUBBORN.lstrip())
    (sid,) = _queue(engine, ws, "stubborn", 1)
    worker = workers.start()
    wait_until(
        lambda: _scalar(
            engine,
            "SELECT pid FROM stage_instances WHERE session_id = :s AND status = 'ACTIVE'",
            s=sid,
        ),
        timeout=20,
        what="the stage to run",
    )
    worker.send_signal(first)
    wait_until(lambda: "interrupting" in workers.output(0), timeout=10, what="the stop begun")
    assert "a SIGTERM or SIGINT from now on kills it at once" in workers.output(0)
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(timeout=20) == 0
    assert time.monotonic() - started < 10
    assert "asked again while stopping: the stages still stopping got SIGKILL at once" in (
        workers.output(0)
    )
    view = _view(engine, sid)
    assert view.status == "ACTIVE" and view.queued and view.runner_pid is None


@pytest.mark.parametrize("taker", ["worker", "resume"])
def test_dead_worker_leaves_an_orphan_that_is_taken_over(queue_ws, workers, taker):
    ws, engine = queue_ws
    (sid,) = _queue(engine, ws, "handback", 1)
    first = workers.start()
    stage_pid = wait_until(
        lambda: _scalar(
            engine,
            "SELECT pid FROM stage_instances WHERE session_id = :s AND "
            "name = 'work' AND status = 'ACTIVE'",
            s=sid,
        ),
        timeout=20,
        what="the stage to run",
    )
    try:
        kill_with_guard(first.pid)  # a kill of the worker alone: see the test after this one
        first.wait()
        assert alive(stage_pid)  # the stage runs on, in its own process group
        view = _view(engine, sid)
        assert view.status == "ACTIVE" and view.orphaned
        assert is_orphaned(view.status, view.runner_host, view.runner_pid, view.heartbeat_at)

        if taker == "worker":
            workers.start()
        else:
            result = run_vc("flow", "session", "resume", sid[:8])
            assert result.returncode == 0, result.stderr
        wait_until(
            lambda: _view(engine, sid).status == "COMPLETED",
            timeout=30,
            what="the orphan to be taken over and completed",
        )
        assert not alive(stage_pid), "the leftover stage process was not removed"
        view = _view(engine, sid)
        assert {s.name: s.attempt for s in view.stages} == {"first": 1, "work": 2}
        assert _starts(engine, sid) == 2
    finally:
        kill_group(stage_pid)
    if taker == "worker":
        assert "(it ran before: going on from where it stopped)" in workers.output(1)
        assert workers.stop_all()[1] == 0


def test_a_killed_workers_guard_stops_the_stages_of_every_session_it_ran(queue_ws, workers):
    """SIGKILL of the worker alone (the OOM killer's way): its runner threads share one
    guard, which removes every running stage, so no host taking over runs one twice."""
    ws, engine = queue_ws
    sids = _queue(engine, ws, "slow", 2)
    worker = workers.start("--concurrency", "2")

    def stage_pids() -> list[int] | None:
        pids = [
            _scalar(
                engine,
                "SELECT pid FROM stage_instances WHERE session_id = :s AND status = 'ACTIVE'",
                s=sid,
            )
            for sid in sids
        ]
        return pids if all(pids) else None

    pids = wait_until(stage_pids, timeout=20, what="both sessions' stages to run")
    try:
        worker.kill()
        worker.wait()
        wait_until(
            lambda: not any(alive(pid) for pid in pids),
            timeout=10,
            what="the guard to remove the stages",
        )
    finally:
        for pid in pids:
            kill_group(pid)


def _only_stage(engine, sid: str) -> str:  # type: ignore[no-untyped-def]
    """The status of the one stage of the session."""
    return str(_scalar(engine, "SELECT status FROM stage_instances WHERE session_id = :s", s=sid))


def _start_pids(engine, sid: str) -> list[int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT pid FROM flow_events WHERE session_id = :s AND op = 'start' ORDER BY id"),
            {"s": sid},
        )
        return [int(pid) for (pid,) in rows]


def test_a_session_waiting_at_a_gate_gives_its_worker_slot_to_the_next_one(queue_ws, workers):
    """With one slot, a session waiting for an approval does not hold the queue up: its
    runner hands it back (PAUSED, no runner), the next session runs, and the approval
    leaves it to the worker (no runner of the approving command) which finishes it."""
    ws, engine = queue_ws
    (gated,) = _queue(engine, ws, "gated", 1)
    (quick,) = _queue(engine, ws, "trivial", 1)
    worker = workers.start("--concurrency", "1")
    wait_until(
        lambda: _view(engine, quick).status == "COMPLETED",
        timeout=30,
        what="the session queued behind the gate to run",
    )
    view = _view(engine, gated)
    assert (view.status, view.reason) == ("PAUSED", "waiting: ok")
    assert view.queued and view.runner_pid is None and not view.orphaned

    result = run_vc("flow", "session", "approve", gated[:8], "ok")
    assert result.returncode == 0, result.stderr
    assert "queued: the next 'vc flow worker' runs it" in result.stdout
    wait_until(
        lambda: _view(engine, gated).status == "COMPLETED",
        timeout=30,
        what="the approved session to complete",
    )
    assert _start_pids(engine, gated) == [worker.pid, worker.pid]
    out = workers.output(0)
    assert "waits at manual gate ok: handed back to the queue" in out
    assert f"claimed {gated[:12]} (it ran before: going on from where it stopped)" in out
    assert workers.stop_all() == [0]
    # two sessions ran, in three claims: the gated one is finished once, when it ends
    assert "stopped (3 claim(s), 2 session(s) finished)" in workers.output(0)


def test_a_failed_stage_stays_failed_when_its_session_comes_back_from_a_gate(queue_ws, workers):  # type: ignore[no-untyped-def]
    """The runner that goes on after the hand-back knows what the first one recorded: the
    FAILED stage never runs again, and the session ends FAILED with its reason."""
    ws, engine = queue_ws
    (sid,) = _queue(engine, ws, "failedbranch", 1)
    workers.start()
    wait_until(
        lambda: _view(engine, sid).reason == "waiting: gate",
        timeout=30,
        what="the session handed back at its gate",
    )
    result = run_vc("flow", "session", "approve", sid[:8], "gate")
    assert result.returncode == 0, result.stderr
    view = wait_until(
        lambda: (v := _view(engine, sid)).status in ("FAILED", "COMPLETED") and v,
        timeout=30,
        what="the session to end",
    )
    assert (view.status, view.reason) == ("FAILED", "stage bad failed: exit code 3")
    assert {s.name: s.status for s in view.stages} == {
        "bad": "FAILED",
        "good": "COMPLETED",
        "gate": "COMPLETED",
        "after": "COMPLETED",
    }
    assert (ws / "bad.count").read_text() == "ran\n"
    assert workers.stop_all() == [0]


def test_a_paused_session_with_a_stopped_stage_keeps_its_worker_slot(queue_ws, workers):
    """The stopped stage's process is the worker's child: its runner stays to resume it."""
    ws, engine = queue_ws
    (slow,) = _queue(engine, ws, "slow", 1)
    worker = workers.start("--concurrency", "1")
    wait_until(lambda: _only_stage(engine, slow) == "ACTIVE", timeout=20, what="the stage to run")
    result = run_vc("flow", "session", "pause", slow[:8])
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: _only_stage(engine, slow) == "PAUSED", timeout=20, what="the stage to be stopped"
    )
    (quick,) = _queue(engine, ws, "trivial", 1)
    time.sleep(2)  # several looks at the queue (0.5 s on SQLite, at once on PostgreSQL)
    assert _view(engine, quick).status == "PENDING"
    assert _view(engine, slow).runner_pid == worker.pid
    assert run_vc("flow", "session", "abort", slow[:8]).returncode == 0
    wait_until(
        lambda: _view(engine, quick).status == "COMPLETED",
        timeout=30,
        what="the next session to run once the slot is free",
    )
    assert workers.stop_all() == [0]


def test_one_worker_runs_more_sessions_than_it_keeps_log_files_open(queue_ws, workers, db_url):
    """A long-lived worker closes each finished session's log file (app.logging keeps at
    most 64 open, and used to deadlock beyond that)."""
    if not db_url.startswith("sqlite"):
        pytest.skip("not about the database: SQLite is enough")
    ws, engine = queue_ws
    _queue(engine, ws, "trivial", 80)
    workers.start("--concurrency", "4")
    wait_until(
        lambda: (
            _scalar(engine, "SELECT count(*) FROM flow_sessions WHERE status = 'COMPLETED'") == 80
        ),
        timeout=50,
        interval=0.2,
        what="80 COMPLETED sessions",
    )
    assert workers.stop_all() == [0]
    assert "stopped (80 claim(s), 80 session(s) finished)" in workers.output(0)


def test_worker_with_a_workflow_filter_leaves_other_sessions_queued(queue_ws, workers):
    ws, engine = queue_ws
    (mine,) = _queue(engine, ws, "trivial", 1)
    (other,) = _queue(engine, ws, "hello", 1)
    workers.start("--workflow", "trivial")
    wait_until(
        lambda: _view(engine, mine).status == "COMPLETED",
        timeout=30,
        what="the trivial session to complete",
    )
    time.sleep(1.0)  # two more looks at the queue
    view = _view(engine, other)
    assert view.status == "PENDING" and view.queued and view.runner_pid is None
    assert workers.stop_all() == [0]
    assert "workflow trivial" in workers.output(0)


def test_a_workflow_filter_this_workspace_does_not_define_is_warned_about_and_served(
    queue_ws, workers
):
    """Not refused: a queued session carries its definition, so a worker may serve a
    workflow it has no file of; but a typo must not go unnoticed."""
    ws, engine = queue_ws
    (sid,) = _queue(engine, ws, "trivial", 1)
    (ws / "workflows" / "trivial.yaml").unlink()
    workers.start("--workflow", "trivial")
    wait_until(lambda: _view(engine, sid).status == "COMPLETED", timeout=30, what="completed")
    assert workers.stop_all() == [0]
    first = workers.output(0).splitlines()[0]
    assert first.startswith("vc: warning: unknown workflow 'trivial'")
    assert "the worker waits for queued sessions of 'trivial' anyway" in first


PARAMS = """
name: With parameters
params:
  day: {required: true}
  shards: {type: int, default: 4}
stages:
  - name: first
    run: |
      echo "day=$VC_PARAM_DAY shards=$VC_PARAM_SHARDS"
      echo "::output rows=$VC_PARAM_SHARDS"
  - name: second
    run: echo "rows=$VC_OUTPUT_FIRST_ROWS"
"""


def test_a_worker_hands_a_queued_sessions_parameters_to_its_stages(queue_ws, workers):
    """`run --queue --param …` stores the values; the worker's runner, on any host, hands
    them (and the first stage's output) to the stages."""
    ws, engine = queue_ws
    (ws / "workflows" / "params.yaml").write_text(PARAMS.lstrip())
    queued = run_vc("flow", "run", "params", "--queue", "-p", "day=2024-01-02", "-p", "shards=8")
    assert queued.returncode == 0, queued.stderr
    sid = queued.stdout.strip()
    workers.start()
    wait_until(lambda: _view(engine, sid).status == "COMPLETED", timeout=30, what="COMPLETED")
    with get_session_factory(engine)() as db:
        from store.queries import read_logs

        texts = [r.text for r in read_logs(db, sid, limit=1000)]
    assert "day=2024-01-02 shards=8" in texts and "rows=8" in texts
    view = _view(engine, sid)
    assert view.params == {"day": "2024-01-02", "shards": 8}
    assert view.stages[0].outputs == {"rows": "8"}
    assert workers.stop_all() == [0]


def test_a_worker_started_while_the_server_is_full_waits_and_then_works(queue_ws, workers, db_url):  # type: ignore[no-untyped-def]
    """A fleet starting at once can fill the server for a moment: a worker that finds no
    free connection says so once and waits, instead of leaving its share of the queue."""
    if not db_url.startswith("postgresql"):
        pytest.skip("a server's connection limit")

    import psycopg

    from tests.conftest import pg_role

    ws, engine = queue_ws
    with pg_role(db_url, connection_limit=3) as (_role, url):
        conninfo = url.replace("postgresql+psycopg://", "postgresql://", 1)
        held = [psycopg.connect(conninfo) for _ in range(3)]  # every slot of the role
        (sid,) = _queue(engine, ws, "trivial", 1)
        proc = workers.start(env={"VC_DATABASE_URL": url})
        wait_until(
            lambda: "the worker waits for the store" in workers.output(0),
            timeout=20,
            what="the worker to say it waits",
        )
        assert proc.poll() is None
        assert "too many connections" in workers.output(0)
        for conn in held:
            conn.close()
        wait_until(
            lambda: (_view(engine, sid) or object()).status == "COMPLETED",  # type: ignore[attr-defined]
            timeout=60,
            what="the queued session to run once the server had room",
        )
        assert "the store answers: the worker starts" in workers.output(0)
        assert workers.stop_all() == [0]


def test_a_first_claim_skips_the_search_for_leftovers_and_a_second_claim_does_not(
    queue_ws,
):  # type: ignore[no-untyped-def]
    """No runner can have left a process of a session that never started, so a worker's
    first claim of it spares the /proc search (a pass over every process, per session);
    a session that ran before (handed back, orphaned) is searched."""
    from app.context import open_context
    from app.runner.runner import Runner
    from store.identity import local_host

    ws, engine = queue_ws
    (sid,) = _queue(engine, ws, "trivial", 1)
    with open_context() as ctx:
        for expected in (False, True):
            with ctx.session() as db:
                change = FlowSessionManager(db).claim_queued(
                    runner_host=local_host(), runner_pid=os.getpid()
                )
            assert change is not None and change.session_id == sid
            runner = Runner(ctx.factory, ctx.logging, sid, workspace=ws)
            runner.claim()
            assert runner._started_before is expected
            runner._db.close()
            with ctx.session() as db:  # handed back, as a stopping worker does
                FlowSessionManager(db).requeue(sid)
