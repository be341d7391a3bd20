"""Detached runners, heartbeats and recovery: a runner killed at any moment leaves a session
that shows orphaned and that `resume` takes over, removing what is left of its attempts and
never running a COMPLETED stage again. Real processes and SIGKILL (see
tests/runner/test_runner.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from store import FlowSessionManager
from store.identity import local_host
from store.models import StageInstance
from store.queries import list_events
from tests.receivers import Receiver
from tests.runner.runner_testkit import (
    NAP,
    Store,
    Vc,
    covered_on_postgresql_by_another,
    gone,
    kill_runner,
    kill_session_processes,
    log_file,
    proc_state,
    read_pid,
    session_json,
    sqlite_only,
    start_detached,
    stubborn_jobs_left,
    write_workflow,
)
from tests.waiting import wait_until

# ---- detached runners, heartbeats, recovery ------------------------------------------------------


@sqlite_only
def test_detached_runner_has_its_own_session_and_logs_to_the_session_file(
    workspace: Path, vc: Vc, store: Store, nap: str
) -> None:
    started = time.monotonic()
    sid = start_detached(vc, nap)
    assert time.monotonic() - started < 10  # returns at once, not when the session ends
    view = store.view(sid)
    assert view.status == "ACTIVE" and view.runner_host == local_host()
    runner = view.runner_pid
    assert runner is not None
    assert os.getsid(runner) == runner  # a session leader: the terminal's hangup misses it
    assert os.readlink(f"/proc/{runner}/fd/0") == "/dev/null"
    for fd in (1, 2):
        assert os.readlink(f"/proc/{runner}/fd/{fd}") == str(log_file(workspace, sid))


def test_heartbeat_is_recorded_and_refreshed(vc: Vc, store: Store, nap: str) -> None:
    sid = start_detached(vc, nap)
    first = store.view(sid)
    assert first.heartbeat_at is not None and first.runner_pid is not None
    wait_until(
        lambda: (store.view(sid).heartbeat_at or 0) > (first.heartbeat_at or 0),
        timeout=6,
        interval=0.1,
        what="a fresh heartbeat",
    )
    assert not store.view(sid).orphaned


def _killed_runner(workspace: Path, vc: Vc, store: Store) -> tuple[str, int, int, int]:
    """A detached runner SIGKILLed in the middle of its second stage, whose process (and
    its background child) keep running."""
    write_workflow(
        workspace,
        "recover",
        """
        stages:
          - {name: one, run: echo one >> runs.txt}
          - name: two
            run: |
              echo two-$VC_ATTEMPT >> runs.txt
              if [ "$VC_ATTEMPT" = 1 ]; then
                echo $$ > two.pid
                sleep 60 & echo $! > two-child.pid
                wait
              fi
          - {name: three, run: echo three >> runs.txt}
    """,
    )
    sid = start_detached(vc, "recover")
    stage_pid = read_pid(workspace / "two.pid")
    child_pid = read_pid(workspace / "two-child.pid")
    store.wait_stage(sid, "two", "ACTIVE", with_pid=True)
    runner = kill_runner(store, sid)
    return sid, runner, stage_pid, child_pid


def test_killed_runner_shows_orphaned_in_list_show_and_status(
    workspace: Path, vc: Vc, store: Store
) -> None:
    sid, runner, _, _ = _killed_runner(workspace, vc, store)
    shown = session_json(vc, "flow", "session", "show", sid)
    assert shown["orphaned"] is True and shown["status"] == "ACTIVE"
    assert shown["runner"]["pid"] == runner and shown["runner"]["host"] == local_host()
    listed = session_json(vc, "flow", "session", "list")
    assert [s["orphaned"] for s in listed if s["id"] == sid] == [True]
    assert session_json(vc, "flow", "status", sid)["orphaned"] is True
    assert "orphaned" in vc("flow", "session", "list").stdout


def test_resume_of_orphan_removes_leftovers_and_never_reruns_completed_stages(
    workspace: Path, vc: Vc, store: Store
) -> None:
    sid, _, stage_pid, child_pid = _killed_runner(workspace, vc, store)
    assert not gone(stage_pid) and not gone(child_pid)  # the interrupted stage lives on
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0, result.stderr
    assert "runner started" in result.stdout
    view = store.wait_status(sid, "COMPLETED")
    assert gone(stage_pid) and gone(child_pid)  # removed before the stage ran again
    assert (workspace / "runs.txt").read_text().split() == ["one", "two-1", "two-2", "three"]
    assert [(s.name, s.attempt) for s in view.stages] == [("one", 1), ("two", 2), ("three", 1)]
    texts = [r.text for r in store.logs(sid, stage="two")]
    assert any(t.startswith(f"removed the leftover process group {stage_pid}") for t in texts)


#: A stage that notes its start and its TERM in slow.txt and goes on for its kill_timeout of
#: 3 s: a runner killed meanwhile dies with a fail_fast cancellation under way.
SLOW_IGNORING_TERM = """\
          - name: slow
            needs: []
            kill_timeout: 3
            run: |
              echo "start $VC_ATTEMPT $$" >> slow.txt
              trap 'echo term >> slow.txt' TERM
              for i in $(seq 1 60); do sleep 0.5; done"""


def _slow_ignoring_its_term(workspace: Path) -> Path:
    """Once the stage ``slow`` (below) got its TERM and ignored it: the file it writes."""
    marks = workspace / "slow.txt"
    wait_until(
        lambda: marks.exists() and "term" in marks.read_text().split(),
        timeout=15,
        interval=0.05,
        what="slow's TERM, ignored",
    )
    return marks


def test_a_fail_fast_cancellation_under_way_when_the_runner_died_stands_after_resume(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The runner was cancelling `slow` (its TERM ignored, within `kill_timeout`) because
    `broken` failed, and died: the resume removes what is left of `slow`, records it
    cancelled and fails the session with `broken`'s failure. Nothing runs again."""
    write_workflow(
        workspace,
        "ff",
        f"""
        stages:
{SLOW_IGNORING_TERM}
          - {{name: broken, needs: [], run: 'sleep 0.5; exit 3'}}
          - {{name: later, needs: [slow], run: echo later >> later.txt}}
    """,
    )
    sid = start_detached(vc, "ff")
    marks = _slow_ignoring_its_term(workspace)
    slow_pid = int(marks.read_text().split()[2])
    kill_runner(store, sid)  # within slow's kill_timeout: its cancellation is not recorded
    assert store.view(sid).status == "ACTIVE" and not gone(slow_pid)
    assert vc("flow", "session", "resume", sid).returncode == 0
    view = store.wait_status(sid, "FAILED")
    assert view.reason == "stage broken failed: exit code 3"
    slow = store.stage(sid, "slow")
    assert (slow.status, slow.error, slow.attempt) == ("FAILED", "cancelled: broken failed", 1)
    assert store.stage(sid, "later").status == "PENDING"
    assert gone(slow_pid)
    assert [line.split()[0] for line in marks.read_text().splitlines()] == ["start", "term"]
    assert not (workspace / "later.txt").exists()


def test_a_gate_waiting_when_a_fail_fast_runner_died_cancelling_is_cancelled_by_the_resume(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """As above, with a manual gate waiting beside: the runner that died was about to
    close it. The resume records it cancelled too: a FAILED session waits at no gate."""
    write_workflow(
        workspace,
        "ffgate",
        f"""
        stages:
{SLOW_IGNORING_TERM}
          - {{name: gate, needs: []}}
          - {{name: broken, needs: [], run: 'sleep 0.5; exit 3'}}
    """,
    )
    sid = start_detached(vc, "ffgate")
    _slow_ignoring_its_term(workspace)
    kill_runner(store, sid)  # while slow's TERM is waited for: the gate is still waiting
    assert store.stage(sid, "gate").status == "PAUSED"
    assert vc("flow", "session", "resume", sid).returncode == 0
    view = store.wait_status(sid, "FAILED")
    assert view.reason == "stage broken failed: exit code 3"
    gate = store.stage(sid, "gate")
    assert (gate.status, gate.error) == ("FAILED", "cancelled: broken failed")
    assert view.current_stage is None


def _claimed_by_a_dead_runner(workspace: Path, store: Store, workflow_id: str) -> str:
    """A new session of ``workflow_id``, ACTIVE under a runner of this host that is dead:
    what a runner killed outright leaves, for the takeover to find."""
    from store.workflows import find_workflow

    dead = subprocess.Popen(["true"])
    dead.wait()
    with store.factory() as db:
        definition = find_workflow(workspace / "workflows", workflow_id)
        sid = FlowSessionManager(db).create_session(workflow_id, definition=definition).id
        FlowSessionManager(db).start_session(sid, runner_host=local_host(), runner_pid=dead.pid)
    return sid


def test_a_futile_gate_a_runner_that_died_left_waiting_is_closed_by_the_takeover(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """``fail_fast: false``: `bad` failed and gate `futile` can start nothing any more; the
    runner died before closing it. The takeover closes it at once, so the session waits
    at `useful` alone (an `approve` with no gate named is not refused for two)."""
    from store import StageManager

    write_workflow(
        workspace,
        "leftgate",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'exit 1'}
          - {name: useful, needs: []}
          - {name: branch, needs: [useful], run: 'true'}
          - {name: futile, needs: []}
          - {name: blocked, needs: [bad, futile], run: 'true'}
    """,
    )
    sid = _claimed_by_a_dead_runner(workspace, store, "leftgate")
    with store.factory() as db:
        stages = StageManager(db)
        rows = {row.name: row.id for row in stages.list_stages(sid)}
        stages.move_stage(rows["bad"], "ACTIVE")
        stages.move_stage(rows["bad"], "FAILED", error="exit code 1", exit_code=1)
        stages.move_stage(rows["useful"], "PAUSED")
        stages.move_stage(rows["futile"], "PAUSED")
    assert vc("flow", "session", "resume", sid).returncode == 0
    wait_until(lambda: store.view(sid).reason == "waiting: useful", what="the pause at useful")
    futile = store.stage(sid, "futile")
    assert (futile.status, futile.error) == ("FAILED", "cancelled: bad failed")
    assert vc("flow", "session", "approve", sid).returncode == 0
    assert store.wait_status(sid, "FAILED").reason is not None


def test_the_failure_a_takeover_announces_names_the_stage_that_failed_not_a_cancelled_one(
    workspace: Path, vc: Vc, store: Store, receiver: Receiver
) -> None:
    """The runner that died had recorded `broken` failed and was cancelling `slow`; the
    runner of the resume records `slow` cancelled and fails the session: its message
    names `broken`."""
    write_workflow(
        workspace,
        "ffnotify",
        f"""
        notify: {{on: [failure], to: ['{receiver.url()}']}}
        stages:
{SLOW_IGNORING_TERM}
          - {{name: broken, needs: [], run: 'sleep 0.5; exit 3'}}
    """,
    )
    sid = start_detached(vc, "ffnotify")
    _slow_ignoring_its_term(workspace)
    kill_runner(store, sid)
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "FAILED")
    [failure] = receiver.wait_for(1)
    assert "Stage: broken\n" in failure.message + "\n"
    assert "Reason: stage broken failed: exit code 3" in failure.message


LEDGER_WORKFLOW = """
    stages:
      - name: work
        kill_timeout: 2
        run: |
          echo "start $VC_ATTEMPT $$" >> ledger.txt
          if [ "$VC_ATTEMPT" = 1 ]; then sleep 30; else sleep 0.2; fi
          echo "done $VC_ATTEMPT $$" >> ledger.txt
      - {name: after, run: echo after}
"""


def _runner_died_right_after_spawning(workspace: Path, store: Store) -> tuple[str, int]:
    """The state a runner SIGKILLed between spawning a stage and recording its attempt
    leaves: the session ACTIVE under a dead runner of this host, the stage PENDING at
    attempt 0 with no pid, and the stage's process running on (own session, the VC_*
    variables its runner gave it). Returns the session and that process' pid."""
    from store.workflows import find_workflow

    write_workflow(workspace, "ledger", LEDGER_WORKFLOW)
    sid = _claimed_by_a_dead_runner(workspace, store, "ledger")
    definition = find_workflow(workspace / "workflows", "ledger")
    stage = subprocess.Popen(
        ["/bin/bash", "-c", str(definition.stages[0].run)],
        cwd=workspace,
        env={**os.environ, "VC_SESSION_ID": sid, "VC_STAGE": "work", "VC_ATTEMPT": "1"},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )
    threading.Thread(target=stage.wait, daemon=True).start()  # init's part after a crash
    wait_until(lambda: (workspace / "ledger.txt").exists(), what="the stage to start")
    row = store.stage_row(sid, "work")
    assert (row.status, row.attempt, row.pid) == ("PENDING", 0, None)
    return sid, stage.pid


@sqlite_only
def test_retries_used_before_the_runner_died_still_count_after_the_takeover(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """`retries: 2`: three failures at most, whatever runners come and go. Attempt 1 fails
    and is retried; attempt 2 is cut short by its runner's death (no failure of its own);
    after the takeover attempt 3 fails and is retried, attempt 4 fails for good. A new
    runner that granted the whole budget again would run a fifth."""
    write_workflow(
        workspace,
        "flaky",
        """
        stages:
          - name: flaky
            retries: 2
            run: |
              echo $VC_ATTEMPT >> attempts.txt
              if [ "$VC_ATTEMPT" = 2 ]; then echo $$ > two.pid; sleep 60; fi
              exit 3
    """,
    )
    sid = start_detached(vc, "flaky")
    read_pid(workspace / "two.pid")
    wait_until(lambda: store.stage_row(sid, "flaky").attempt == 2, what="attempt 2 recorded")
    kill_runner(store, sid)
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0, result.stderr
    view = store.wait_status(sid, "FAILED")
    assert (workspace / "attempts.txt").read_text().split() == ["1", "2", "3", "4"]
    assert view.reason == "stage flaky failed: exit code 3"
    shown = session_json(vc, "flow", "session", "show", sid)
    retried = [e["reason"] for e in shown["events"] if e["op"] == "stage.retry"]
    assert retried == ["attempt 1 failed: exit code 3", "attempt 3 failed: exit code 3"]


def test_takeover_removes_an_unrecorded_attempt_before_the_stage_runs_again(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A stage never runs twice at once: the copy a dead runner started but never
    recorded is found by its environment and removed before the new attempt starts, and
    the new attempt is numbered after it."""
    sid, leftover = _runner_died_right_after_spawning(workspace, store)
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0, result.stderr
    view = store.wait_status(sid, "COMPLETED")
    ledger = (workspace / "ledger.txt").read_text().splitlines()
    assert ledger[0] == f"start 1 {leftover}"
    assert f"done 1 {leftover}" not in ledger, ledger  # it was not left to run beside
    assert [line.split()[:2] for line in ledger[1:]] == [["start", "2"], ["done", "2"]]
    assert gone(leftover)
    assert [(s.name, s.attempt) for s in view.stages] == [("work", 2), ("after", 1)]
    texts = [r.text for r in store.logs(sid, stage="work")]
    assert (
        f"removed the leftover process group {leftover} of attempt 1 (the attempt had not "
        "been recorded), found on this host by its VC_SESSION_ID"
    ) in texts


def test_a_completed_stage_has_all_its_lines_in_the_store_when_its_runner_dies_next(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The runner is SIGKILLed the moment the store shows the stage COMPLETED: every line
    the stage printed is in the store already (the mirror writes only twice a second, so
    recording COMPLETED first used to lose them)."""
    write_workflow(
        workspace,
        "tail",
        """
        stages:
          - {name: talk, run: 'for i in $(seq 1 300); do echo "line $i"; done'}
          - {name: nap, run: sleep 30}
    """,
    )
    sid = start_detached(vc, "tail")
    wait_until(
        lambda: store.stage_row(sid, "talk").status == "COMPLETED",
        interval=0.002,
        what="talk COMPLETED",
    )
    runner = store.view(sid).runner_pid
    assert runner is not None
    os.kill(runner, signal.SIGKILL)
    texts = [r.text for r in store.logs(sid, stage="talk") if r.category.endswith("integration")]
    assert texts == [f"line {i}" for i in range(1, 301)]
    kill_session_processes(sid)


@sqlite_only
def test_a_runner_a_stage_starts_detached_is_not_taken_for_a_leftover_of_that_stage(
    workspace: Path, vc: Vc, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stage that starts another session in the background (`vc flow run … --detach`)
    and is interrupted: the runner taking over its session removes the stage, not the
    other session's runner, which carries none of the stage's VC_* variables."""
    write_workflow(workspace, "inner", NAP)
    write_workflow(
        workspace,
        "outer",
        """
        stages:
          - name: launch
            run: |
              "$PY" -m app.main flow run inner --detach > inner.sid
              if [ "$VC_ATTEMPT" = 1 ]; then echo $$ > launch.pid; sleep 60; fi
    """,
    )
    monkeypatch.setenv("PY", sys.executable)
    sid = start_detached(vc, "outer")
    read_pid(workspace / "launch.pid")
    inner = (workspace / "inner.sid").read_text().strip()
    inner_runner = store.view(inner).runner_pid
    assert inner_runner is not None
    with open(f"/proc/{inner_runner}/environ", "rb") as fh:
        assert b"VC_STAGE=" not in fh.read()
    outer_runner = store.view(sid).runner_pid
    assert outer_runner is not None
    os.kill(outer_runner, signal.SIGKILL)
    wait_until(lambda: gone(outer_runner), timeout=5, what="the outer runner to die")
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED")
    assert not gone(inner_runner)
    assert store.view(inner).status == "ACTIVE"


# on PostgreSQL: test_resume_of_orphan_removes_leftovers_and_never_reruns_completed_stages
@covered_on_postgresql_by_another
def test_resume_of_a_paused_orphan_removes_the_stopped_stage_and_runs_it_again(
    vc: Vc, store: Store, nap: str
) -> None:
    sid = start_detached(vc, nap)
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    assert pid is not None
    assert vc("flow", "session", "pause", sid).returncode == 0
    wait_until(lambda: proc_state(pid) == "T", timeout=5, what="state T")
    kill_runner(store, sid)  # and its guard: the stopped stage is left behind
    wait_until(lambda: store.view(sid).orphaned, timeout=5, what="orphaned")
    assert store.view(sid).status == "PAUSED" and proc_state(pid) == "T"
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0 and "runner started" in result.stdout

    def second_attempt() -> StageInstance | None:
        row = store.stage_row(sid, "nap")
        return row if row.attempt == 2 and row.status == "ACTIVE" and row.pid else None

    row = wait_until(second_attempt, timeout=15, what="attempt 2 to run")
    assert row.pid != pid
    assert gone(pid)  # the stopped leftover got SIGTERM + SIGCONT before the new attempt


@sqlite_only
def test_stale_heartbeat_of_a_runner_on_another_host_shows_orphaned(
    vc: Vc, store: Store, nap: str
) -> None:
    """Another host's pid cannot be checked from here: only the heartbeat's age tells.
    The runner records itself as host `elsewhere`; freezing it (SIGSTOP) stops its beats;
    the CLI is asked with a 3 s staleness limit instead of the default 15 s."""
    result = vc("flow", "run", nap, "--detach", env={"VC_HOSTNAME": "elsewhere"})
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    stale_after = {"VC_STALE_AFTER": "3"}
    shown = json.loads(vc("flow", "session", "show", sid, "--json", env=stale_after).stdout)
    assert shown["runner"]["host"] == "elsewhere" and shown["orphaned"] is False
    runner = shown["runner"]["pid"]
    os.kill(runner, signal.SIGSTOP)
    try:
        beat = store.view(sid).heartbeat_at
        assert beat is not None
        time.sleep(max(0.0, beat + 3.2 - time.time()))
        shown = json.loads(vc("flow", "session", "show", sid, "--json", env=stale_after).stdout)
        assert shown["orphaned"] is True
    finally:
        os.kill(runner, signal.SIGCONT)


# on PostgreSQL: test_resume_of_orphan_removes_leftovers_and_never_reruns_completed_stages
@covered_on_postgresql_by_another
def test_run_session_on_orphan_takes_over_in_the_foreground(
    workspace: Path, vc: Vc, store: Store
) -> None:
    sid, _, stage_pid, _ = _killed_runner(workspace, vc, store)
    result = vc("flow", "run", "recover", "--session", sid[:8])
    assert result.returncode == 0, result.stderr
    assert gone(stage_pid)
    assert store.view(sid).status == "COMPLETED"
    assert (workspace / "runs.txt").read_text().split() == ["one", "two-1", "two-2", "three"]


@sqlite_only
def test_a_takeover_removes_every_stage_and_job_left_in_one_kill_timeout(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The groups a dead runner left, and the jobs in the sessions they lead (found with a
    cleared environment too), get their kill_timeouts at the same time before any stage
    runs again: two kill_timeouts in all (groups, then what carries the session's id), not
    one per stage in turn."""
    files = [workspace / f"pids.{n}" for n in (1, 2, 3)]
    with stubborn_jobs_left(workspace, vc, store) as (sid, pids):
        left = list(pids)
        for f in files:
            f.unlink()
        started = time.monotonic()
        assert vc("flow", "session", "resume", sid).returncode == 0
        written = lambda: all(f.exists() and len(f.read_text().split()) == 2 for f in files)  # noqa: E731
        wait_until(written, timeout=30, what="attempt 2 of each")
        took = time.monotonic() - started
        # Attempt 2's jobs carry no session id: killed on the way out with the rest.
        pids += [int(pid) for f in files for pid in f.read_text().split()]
        assert [pid for pid in left if not gone(pid)] == []
        assert took < 12, f"the takeover took {took:.1f} s: kill_timeouts waited in turn"
        said = [
            f"removed the leftover process group {stage_pid} and its jobs' groups {job_pid} "
            "of attempt 1"
            for stage_pid, job_pid in zip(left[::2], left[1::2], strict=True)
        ]
        logged = lambda: set(said) <= {r.text for r in store.logs(sid)}  # noqa: E731
        wait_until(logged, what="each stage's group and jobs named in the log")


@sqlite_only
def test_a_runner_woken_after_a_takeover_adds_no_line_to_the_store(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Frozen, the runner of host `elsewhere` is taken over; its stage printed on meanwhile,
    into the pipe. Woken, it reads those lines: they must not land among attempt 2's, stamped
    with the time they were read (a runner's lines logged after another claim are left out;
    what it had read before the takeover is stored, with its time)."""
    write_workflow(
        workspace,
        "chatty",
        """
        stages:
          - name: talk
            run: for i in $(seq 1 3000); do echo "a $VC_ATTEMPT $i"; sleep 0.01; done
    """,
    )
    result = vc("flow", "run", "chatty", "--detach", env={"VC_HOSTNAME": "elsewhere"})
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    wait_until(lambda: store.count_output(sid, "talk") > 20, what="attempt 1's first lines")
    old_runner = json.loads(vc("flow", "session", "show", sid, "--json").stdout)["runner"]["pid"]
    os.kill(old_runner, signal.SIGSTOP)
    try:
        beat = store.view(sid).heartbeat_at
        assert beat is not None
        time.sleep(max(0.0, beat + 3.5 - time.time()))
        taken = vc("flow", "session", "resume", sid, env={"VC_STALE_AFTER": "3"})
        assert taken.returncode == 0, taken.stderr
        wait_until(lambda: store.stage_row(sid, "talk").attempt == 2, what="attempt 2")
        time.sleep(1.0)  # attempt 1 prints on into the frozen runner's pipe
    finally:
        os.kill(old_runner, signal.SIGCONT)
    wait_until(lambda: gone(old_runner), timeout=20, what="the old runner to stop")
    with store.factory() as db:
        claimed_at = max(e.at for e in list_events(db, sid) if e.op == "start")
    records = store.logs(sid)
    late = [r.text for r in records if r.text.startswith("a 1 ") and r.at >= claimed_at]
    assert late == [], f"{len(late)} line(s) of attempt 1 read after the takeover: {late[:3]}"
    texts = [r.text for r in records]
    second = next(i for i, t in enumerate(texts) if t.startswith("attempt 2 ("))
    assert any("had taken the session over from" in t for t in texts[second:])  # the note
    # Its own last words are its host's file's: it says so after the takeover too.
    assert not any("another runner took over" in t for t in texts)
    assert "another runner took over" in log_file(workspace, sid).read_text()
    vc("flow", "session", "abort", sid)
