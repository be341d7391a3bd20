"""Pause, abort and delete of a session whose runner is gone (app/runner/orphans.py): nobody
is left to enforce the change, so the command does it on this host, under the takeover's
rules. Real runners killed with SIGKILL, real stage processes."""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from store.queries import get_session_view
from tests.runner.runner_testkit import (
    Store,
    Vc,
    gone,
    kill_runner,
    kill_session_processes,
    proc_state,
    read_pid,
    start_detached,
    stubborn_jobs_left,
    write_workflow,
)
from tests.waiting import wait_until


def _orphan(vc: Vc, store: Store, nap: str) -> tuple[str, int]:
    """A session whose runner was SIGKILLed while its stage ran; the stage's pid."""
    sid = start_detached(vc, nap)
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    assert pid is not None
    kill_runner(store, sid)
    wait_until(lambda: store.view(sid).orphaned, timeout=5, what="orphaned")
    assert proc_state(pid) in ("S", "R")  # the leftover runs on
    return sid, pid


def test_abort_of_a_session_whose_runner_is_gone_removes_its_stage_process(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid = _orphan(vc, store, nap)
    result = vc("flow", "session", "abort", sid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("FAILED:")
    assert gone(pid)  # before the command returned
    assert f"removed the leftover process group {pid} of stage nap" in result.stderr


def test_an_abort_without_a_runner_removes_every_stage_and_job_in_one_kill_timeout(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Each stage's processes, and its jobs, get their kill_timeout at the same time, not
    one stage's after another's: three stubborn stages with their jobs take one
    kill_timeout, not six."""
    with stubborn_jobs_left(workspace, vc, store) as (sid, pids):
        started = time.monotonic()
        result = vc("flow", "session", "abort", sid)
        took = time.monotonic() - started
        assert result.returncode == 0, result.stderr
        assert [pid for pid in pids if not gone(pid)] == []
        assert took < 12, f"the abort took {took:.1f} s: kill_timeouts waited in turn"


def test_a_session_aborted_without_a_runner_forgets_its_dead_runner(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, _ = _orphan(vc, store, nap)
    assert vc("flow", "session", "abort", sid).returncode == 0
    view = store.view(sid)
    assert (view.status, view.runner_pid, view.runner_host) == ("FAILED", None, None)
    assert "runner:    none" in vc("flow", "session", "show", sid).stdout


def test_what_an_abort_without_a_runner_did_is_kept_in_the_session_log(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid = _orphan(vc, store, nap)
    assert vc("flow", "session", "abort", sid).returncode == 0
    logs = vc("flow", "session", "logs", sid)
    assert logs.returncode == 0, logs.stderr
    assert f"abort without a runner: removed the leftover process group {pid}" in logs.stdout


def test_an_abort_says_what_it_did_to_a_stage_recorded_under_another_host_name(
    vc: Vc, store: Store, nap: str
) -> None:
    """One machine known by two names (VC_HOSTNAME): the recorded pid belongs to the other
    name and is not signalled by it, but the stage's processes, found here by their
    VC_SESSION_ID, are removed, and the command says that, not that they are out of
    reach."""
    result = vc("flow", "run", nap, "--detach", env={"VC_HOSTNAME": "host-a"})
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    assert pid is not None
    kill_runner(store, sid)
    stale = {"VC_STALE_AFTER": "3", "VC_HOSTNAME": "host-b"}

    def orphaned() -> bool:
        shown = vc("flow", "session", "show", sid, "--json", env=stale)
        return bool(json.loads(shown.stdout)["orphaned"])

    wait_until(
        orphaned,
        timeout=10,
        what="orphaned as seen from host-b",
    )
    try:
        result = vc("flow", "session", "abort", sid, env=stale)
        assert result.returncode == 0, result.stderr
        assert gone(pid)
        assert f"removed the leftover process group {pid} of stage nap" in result.stderr
        assert "cannot be signalled" not in result.stderr
    finally:
        kill_session_processes(sid)


def test_pause_of_a_session_whose_runner_is_gone_stops_its_stage_process(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid = _orphan(vc, store, nap)
    try:
        _pause_stops_the_stage(vc, sid, pid)
    finally:
        kill_session_processes(sid)


def _pause_stops_the_stage(vc: Vc, sid: str, pid: int) -> Any:
    """`session pause` stopped the stage ``pid`` itself, and said so; its result."""
    result = vc("flow", "session", "pause", sid)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("PAUSED:")
    assert proc_state(pid) == "T"
    assert f"stopped the leftover process group {pid} of stage nap" in result.stderr
    return result


def test_delete_of_a_session_whose_runner_is_gone_removes_its_stage_process(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid = _orphan(vc, store, nap)
    result = vc("flow", "session", "delete", sid, "--yes")
    assert result.returncode == 0, result.stderr
    assert gone(pid)
    with store.factory() as db:
        assert get_session_view(db, sid) is None


def test_abort_with_a_live_runner_leaves_the_stage_to_its_runner(
    vc: Vc, store: Store, nap: str
) -> None:
    sid = start_detached(vc, nap)
    store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
    result = vc("flow", "session", "abort", sid)
    assert result.returncode == 0, result.stderr
    assert "runner is gone" not in result.stderr
    store.wait_status(sid, "FAILED")


@pytest.mark.parametrize("op", ["pause", "abort", "delete"])
def test_the_dashboard_operations_do_the_same_for_a_session_whose_runner_is_gone(
    vc: Vc, store: Store, nap: str, op: str
) -> None:
    from app import context
    from app.tui import operations
    from store.changes import enable_logging

    sid, pid = _orphan(vc, store, nap)
    action: Callable[..., str] = getattr(operations, op)
    try:
        with context.open_context() as ctx:
            note = action(ctx, sid)
        state = proc_state(pid)
    finally:
        enable_logging(False)  # open_context switched operation logging on for this process
        kill_session_processes(sid)
    assert "its runner is gone" in note
    assert state == "T" if op == "pause" else state in (None, "Z", "X")


def _paused_then_runner_killed(vc: Vc, store: Store, nap: str) -> tuple[str, int]:
    """A pause that committed while the runner was stalled (SIGSTOP), the runner then
    SIGKILLed before it could stop the stage: PAUSED in the store, the stage running."""

    sid = start_detached(vc, nap)
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    assert pid is not None
    runner = store.view(sid).runner_pid
    assert runner is not None
    os.kill(runner, signal.SIGSTOP)
    assert vc("flow", "session", "pause", sid).returncode == 0
    kill_runner(store, sid)
    assert proc_state(pid) in ("S", "R")  # the pause was never enforced
    return sid, pid


def test_a_pause_asked_again_after_its_runner_died_unenforced_stops_the_stage(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid = _paused_then_runner_killed(vc, store, nap)
    try:
        assert "it was already" in _pause_stops_the_stage(vc, sid, pid).stdout
    finally:
        kill_session_processes(sid)


def test_a_pause_asked_once_more_with_the_stage_stopped_already_is_refused(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid = _paused_then_runner_killed(vc, store, nap)
    try:
        assert vc("flow", "session", "pause", sid).returncode == 0  # stops it
        again = vc("flow", "session", "pause", sid)  # nothing left to do
        assert again.returncode == 1
        assert "it is PAUSED" in again.stderr and "runner is gone" not in again.stderr
        assert proc_state(pid) == "T"
    finally:
        kill_session_processes(sid)


def test_an_abort_asked_again_after_its_runner_died_mid_kill_removes_the_stage(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The runner was waiting out `kill_timeout` of a stage that ignores SIGTERM when it
    died: the session is FAILED, the stage runs on; a second abort removes it."""
    write_workflow(
        workspace,
        "stubborn",
        """
        stages:
          - name: hold
            kill_timeout: 2
            run: |
              echo $$ > hold.pid
              trap 'echo term >> hold.txt' TERM
              for i in $(seq 1 120); do sleep 0.5; done
    """,
    )
    sid = start_detached(vc, "stubborn")
    store.wait_stage(sid, "hold", "ACTIVE", with_pid=True)
    pid = read_pid(workspace / "hold.pid")
    try:
        assert vc("flow", "session", "abort", sid).returncode == 0
        marks = workspace / "hold.txt"
        wait_until(marks.exists, timeout=10, interval=0.05, what="the stage's TERM, ignored")
        kill_runner(store, sid)  # within kill_timeout: the stage was never killed
        assert store.view(sid).status == "FAILED" and not gone(pid)
        result = vc("flow", "session", "abort", sid)
        assert result.returncode == 0, result.stderr
        assert "it was already" in result.stdout
        assert gone(pid)
        assert f"removed the leftover process group {pid} of stage hold" in result.stderr
        assert store.view(sid).runner_pid is None  # the dead runner is forgotten
    finally:
        kill_session_processes(sid)


def test_a_pause_asked_again_with_nothing_left_to_stop_is_still_refused(
    vc: Vc, store: Store, nap: str
) -> None:
    sid = start_detached(vc, nap)
    store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
    assert vc("flow", "session", "pause", sid).returncode == 0
    store.wait_stage(sid, "nap", "PAUSED")
    try:
        again = vc("flow", "session", "pause", sid)  # its runner lives and did stop it
        assert again.returncode == 1
        assert "it is PAUSED" in again.stderr
    finally:
        vc("flow", "session", "abort", sid)


def test_the_dashboards_pause_asked_again_does_the_same(vc: Vc, store: Store, nap: str) -> None:
    from app import context
    from app.tui import operations
    from store.changes import enable_logging

    sid, pid = _paused_then_runner_killed(vc, store, nap)
    try:
        with context.open_context() as ctx:
            note = operations.pause(ctx, sid)
        state = proc_state(pid)
    finally:
        enable_logging(False)
        kill_session_processes(sid)
    assert note.startswith("already PAUSED") and "its runner is gone" in note
    assert state == "T"
