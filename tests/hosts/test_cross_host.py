"""Control across hosts (docs/ARCHITECTURE.md §2, §9): a pause written by another process under
another VC_HOSTNAME reaches the runner within a second; PostgreSQL delivers session changes by
LISTEN/NOTIFY (store.notify.SessionNotifier); a runner never signals a pid recorded on a host that
is not its own."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest
from sqlalchemy import text

from app.runner.process import process_start_time
from store import FlowSessionManager, StageManager, StageStatus, get_session_factory, init_db
from store.notify import SessionNotifier
from store.queries import get_session_view, list_events
from store.workflows import find_workflow
from tests.conftest import run_vc
from tests.hosts.common import alive, kill_group, proc_state
from tests.waiting import wait_until

QUICK = """
name: Quick
stages:
  - name: spin
    run: echo "attempt $VC_ATTEMPT"
"""


def _stage_pid(engine, sid: str, stage: str):  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return conn.execute(
            text(
                "SELECT pid FROM stage_instances WHERE session_id = :s AND "
                "name = :n AND status = 'ACTIVE'"
            ),
            {"s": sid, "n": stage},
        ).scalar()


def _events(engine, sid: str):  # type: ignore[no-untyped-def]
    with get_session_factory(engine)() as db:
        return list_events(db, sid)


def test_pause_from_another_host_reaches_the_runner_within_a_second(store_workspace, db_url):
    engine = init_db(db_url)
    started = run_vc("flow", "run", "slow", "--detach", env={"VC_HOSTNAME": "host-a"})
    assert started.returncode == 0, started.stderr
    sid = started.stdout.strip()
    pid = wait_until(lambda: _stage_pid(engine, sid, "spin"), timeout=20, what="the stage")
    try:
        paused = run_vc("flow", "session", "pause", sid[:8], env={"VC_HOSTNAME": "host-b"})
        assert paused.returncode == 0, paused.stderr
        wait_until(
            lambda: proc_state(pid) == "T", timeout=5, interval=0.01, what="SIGSTOP of the stage"
        )
        seen = time.time()
        event = [e for e in _events(engine, sid) if e.op == "pause"][-1]
        assert event.host == "host-b"
        assert seen - event.at < 1.0, f"pause enforced {seen - event.at:.2f}s after commit"
        with get_session_factory(engine)() as db:
            assert get_session_view(db, sid).runner_host == "host-a"

        aborted = run_vc("flow", "session", "abort", sid[:8], env={"VC_HOSTNAME": "host-b"})
        assert aborted.returncode == 0, aborted.stderr
        wait_until(lambda: not alive(pid), timeout=15, what="the aborted stage to end")
    finally:
        kill_group(pid)
        engine.dispose()


@pytest.fixture
def listen_engine(store_workspace, db_url):  # type: ignore[no-untyped-def]
    """The store's engine on PostgreSQL, disposed afterwards; the test is skipped on
    SQLite (LISTEN is PostgreSQL's)."""
    if not db_url.startswith("postgresql"):
        pytest.skip("LISTEN is PostgreSQL's")
    engine = init_db(db_url)
    yield engine
    engine.dispose()


def test_notifier_wakes_on_a_change_committed_by_another_host(store_workspace, db_url):
    engine = init_db(db_url)
    try:
        with get_session_factory(engine)() as db:
            manager = FlowSessionManager(db)
            sid = manager.create_session("hello", name="watched").id
            other = manager.create_session("hello", name="other").id
            manager.start_session(sid)
            notifier = SessionNotifier(engine, sid, resync=60)
            try:
                assert notifier.changed()  # nothing known yet: read once
                if engine.dialect.name != "postgresql":
                    assert not notifier.listening
                    assert notifier.changed()  # no LISTEN: always "maybe", callers poll
                    return
                assert notifier.listening
                assert not notifier.changed()

                # heartbeats and other sessions' changes stay silent for this notifier
                manager.heartbeat(sid, runner_host=manager.host, runner_pid=manager.pid)
                manager.pause(other)
                assert not notifier.wait(0.3)

                result: dict[str, float] = {}

                def listen() -> None:
                    if notifier.wait(10):
                        result["woke"] = time.time()

                listener = threading.Thread(target=listen)
                listener.start()
                paused = run_vc("flow", "session", "pause", sid, env={"VC_HOSTNAME": "host-b"})
                assert paused.returncode == 0, paused.stderr
                listener.join(10)
                event = [e for e in list_events(db, sid) if e.op == "pause"][-1]
                assert event.host == "host-b"
                assert "woke" in result
                assert result["woke"] - event.at < 1.0
            finally:
                notifier.close()
    finally:
        engine.dispose()


def test_notifier_recovers_from_a_lost_connection(listen_engine, monkeypatch):
    import store.notify

    monkeypatch.setattr(store.notify, "RECONNECT_INTERVAL", 0.1)
    notifier = SessionNotifier(listen_engine, resync=60)
    try:
        assert notifier.changed() and not notifier.changed()
        backend = notifier.backend_pid
        with listen_engine.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": backend})
            conn.commit()
        # the loss is noticed and reported as "maybe changed" (changes may have been missed)
        wait_until(notifier.changed, timeout=5, what="the loss to be reported")
        wait_until(
            lambda: notifier.changed() is not None and notifier.listening,
            timeout=5,
            interval=0.1,
            what="LISTEN to be re-established",
        )
        with get_session_factory(listen_engine)() as db:
            FlowSessionManager(db).create_session("hello", name="after the loss")
        assert notifier.wait(5)
    finally:
        notifier.close()


@pytest.mark.parametrize("runner_host", ["host-b", "host-a"])
def test_runner_never_signals_a_pid_recorded_on_another_host(store_workspace, db_url, runner_host):
    """A session orphaned on host-a whose stage process still runs: a runner on host-b
    re-runs the stage but leaves the pid alone (it names a process on another machine); a
    runner on host-a itself removes it (pid and start time checked)."""
    ws = store_workspace
    (ws / "workflows" / "quick.yaml").write_text(QUICK.lstrip())
    leftover = subprocess.Popen(["sleep", "60"], start_new_session=True)
    reaper = threading.Thread(target=leftover.wait, daemon=True)
    reaper.start()
    engine = init_db(db_url)
    try:
        with get_session_factory(engine)() as db:
            sessions, stages = FlowSessionManager(db), StageManager(db)
            sid = sessions.create_session(
                "quick", name="remote", definition=find_workflow(ws / "workflows", "quick")
            ).id
            sessions.start_session(sid, runner_host="host-a", runner_pid=leftover.pid)
            (stage,) = stages.list_stages(sid)
            stages.update_stage_status(stage.id, StageStatus.ACTIVE)
            stages.record_process(
                stage.id,
                pid=leftover.pid,
                pid_start=process_start_time(leftover.pid),
                host="host-a",
            )
            db.connection().execute(
                text("UPDATE flow_sessions SET heartbeat_at = :t WHERE id = :s"),
                {"t": time.time() - 3600, "s": sid},
            )
            db.commit()
        resumed = run_vc("flow", "session", "resume", sid[:8], env={"VC_HOSTNAME": runner_host})
        assert resumed.returncode == 0, resumed.stderr
        with get_session_factory(engine)() as db:
            wait_until(
                lambda: (db.commit(), get_session_view(db, sid))[1].status == "COMPLETED",
                timeout=20,
                what="the session to complete",
            )
            view = get_session_view(db, sid)
        assert view.stages[0].attempt == 2
        if runner_host == "host-b":
            assert alive(leftover.pid), "a runner on host-b signalled a pid of host-a"
        else:
            wait_until(lambda: not alive(leftover.pid), timeout=5, what="the leftover to go")
    finally:
        kill_group(leftover.pid)
        engine.dispose()


def test_the_notifiers_of_a_process_share_one_listen_connection(listen_engine):
    with get_session_factory(listen_engine)() as db:
        manager = FlowSessionManager(db)
        first = manager.create_session("hello", name="first").id
        second = manager.create_session("hello", name="second").id
        notifiers = [SessionNotifier(listen_engine, sid, resync=60) for sid in (first, second)]
        anyone = SessionNotifier(listen_engine, resync=60)
        backends = {n.backend_pid for n in (*notifiers, anyone)}
        assert len(backends) == 1 and None not in backends
        for n in (*notifiers, anyone):
            assert n.changed()  # the first call reads
        manager.pause(second)
        assert notifiers[1].wait(5)
        assert anyone.wait(5)
        assert not notifiers[0].wait(0.3)  # another session's change
        for n in (*notifiers, anyone):
            n.close()
        (backend,) = backends

        def closed() -> bool:
            with listen_engine.connect() as conn:
                return not conn.execute(
                    text("SELECT 1 FROM pg_stat_activity WHERE pid = :p"), {"p": backend}
                ).first()

        wait_until(closed, timeout=5, what="the LISTEN connection to close with its last user")


def test_the_listen_thread_wakes_only_for_a_notification_or_to_look_whether_to_stop(listen_engine):
    """Every runner of a process shares it, and a paused runner idles for hours: its
    wake-ups are CPU. It waits on the connection's socket itself (psycopg's own wait wakes
    every 100 ms) and still hears a change at once."""
    with get_session_factory(listen_engine)() as db:
        manager = FlowSessionManager(db)
        sid = manager.create_session("hello", name="watched").id
        notifier = SessionNotifier(listen_engine, sid, resync=60)
        try:
            assert notifier.changed() and notifier.listening
            (thread,) = [t for t in threading.enumerate() if t.name == "vc-listen"]
            time.sleep(0.3)

            def times_run() -> int:  # its waits: voluntary context switches
                with open(f"/proc/self/task/{thread.native_id}/status") as fh:
                    line = next(x for x in fh if x.startswith("voluntary_ctxt_switches:"))
                    return int(line.split()[1])

            before = times_run()
            time.sleep(2.0)
            assert times_run() - before <= 8  # every 0.5 s: 4 (was 20)
            manager.pause(sid)
            assert notifier.wait(2)
        finally:
            notifier.close()
