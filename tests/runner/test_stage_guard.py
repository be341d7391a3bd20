"""A runner killed outright (SIGKILL, the OOM killer) leaves no stage running behind it: its
guard (app/runner/stage_guard.py) stops them. Real runners, real signals, real process groups."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from app.runner.groups import process_start_time
from app.runner.stage_guard import StageGuard
from tests.processes import guard_of
from tests.runner.runner_testkit import (
    Store,
    Vc,
    gone,
    kill_runner,
    proc_state,
    read_pid,
    sqlite_only,
    start_detached,
    write_workflow,
)
from tests.waiting import wait_until

#: A stage whose processes ignore SIGTERM, so only the SIGKILL after kill_timeout ends them.
STUBBORN = """
    stages:
      - name: stubborn
        run: "trap '' TERM; sleep 300 & echo $! > child.pid; wait"
        kill_timeout: 1
"""


def _running(vc: Vc, store: Store, workspace: Path, text: str, stage: str) -> tuple[str, int]:
    """A detached session of ``text`` whose ``stage`` runs; its recorded pid."""
    write_workflow(workspace, "guarded", text)
    sid = start_detached(vc, "guarded")
    pid = store.wait_stage(sid, stage, "ACTIVE", with_pid=True).pid
    assert pid is not None
    return sid, pid


def test_a_runner_killed_with_sigkill_leaves_none_of_its_stage_processes_running(
    vc: Vc, store: Store, workspace: Path
) -> None:
    sid, pid = _running(vc, store, workspace, STUBBORN, "stubborn")
    child = read_pid(workspace / "child.pid")
    kill_runner(store, sid, with_guard=False)
    wait_until(lambda: gone(pid) and gone(child), timeout=10, what="the stage to be removed")


@sqlite_only
def test_a_stage_paused_when_its_runner_is_killed_is_removed_too(
    vc: Vc, store: Store, workspace: Path
) -> None:
    sid, pid = _running(vc, store, workspace, STUBBORN, "stubborn")
    assert vc("flow", "session", "pause", sid).returncode == 0
    wait_until(lambda: proc_state(pid) == "T", timeout=5, what="the stage to stop")
    kill_runner(store, sid, with_guard=False)
    wait_until(lambda: gone(pid), timeout=10, what="the paused stage to be removed")


@sqlite_only
def test_what_a_stage_left_running_after_it_exited_outlives_its_runners_death(
    vc: Vc, store: Store, workspace: Path
) -> None:
    """A stage may start a service on purpose: once the stage exited, its leftovers are no
    longer the guard's, as they are not the runner's."""
    text = """
        stages:
          - name: service
            run: "sleep 300 > /dev/null 2>&1 & echo $! > service.pid"
          - name: nap
            run: sleep 300
            needs: [service]
    """
    sid, pid = _running(vc, store, workspace, text, "nap")
    service = read_pid(workspace / "service.pid")
    try:
        kill_runner(store, sid, with_guard=False)
        wait_until(lambda: gone(pid), timeout=10, what="the running stage to be removed")
        assert not gone(service)
    finally:
        os.kill(service, signal.SIGKILL)


@sqlite_only
def test_a_guard_that_died_is_started_again_and_told_of_the_running_stages(
    vc: Vc, store: Store, workspace: Path
) -> None:
    text = """
        stages:
          - name: long
            run: sleep 300
            needs: []
          - name: short
            run: sleep 3
            needs: []
    """
    sid, long = _running(vc, store, workspace, text, "long")
    store.wait_stage(sid, "short", "ACTIVE")
    runner = store.view(sid).runner_pid
    assert runner is not None
    old_guard = guard_of(runner)
    assert old_guard is not None
    os.kill(old_guard, signal.SIGKILL)
    wait_until(lambda: gone(old_guard), timeout=5, what="the guard to die")
    # short's exit is told to the guard: a new one starts, told of long.
    store.wait_stage(sid, "short", "COMPLETED", timeout=15)
    new_guard = wait_until(lambda: guard_of(runner), timeout=10, what="a new guard")
    assert new_guard != old_guard
    kill_runner(store, sid, with_guard=False)
    wait_until(lambda: gone(long), timeout=10, what="the long stage to be removed")


def test_the_end_of_the_guards_pipe_stops_every_group_it_was_told_of(tmp_path: Path) -> None:
    """The guard on its own, without a runner: groups watched are stopped at the end of its
    pipe, a group released is left alone."""
    guard = StageGuard()
    groups = [
        subprocess.Popen(["sleep", "300"], start_new_session=True, cwd=tmp_path) for _ in range(3)
    ]
    try:
        for proc in groups:
            guard.watch(proc.pid, _start_time(proc.pid), 1.0)
        guard.release(groups[2].pid)
        assert guard.pid is not None
        guard_proc = guard._proc
        assert guard_proc is not None and guard_proc.stdin is not None
        guard_proc.stdin.close()  # what the kernel does when the runner dies
        assert guard_proc.wait(timeout=10) == 0
        assert [proc.wait(timeout=5) for proc in groups[:2]] == [-signal.SIGTERM] * 2
        assert groups[2].poll() is None
    finally:
        for proc in groups:
            proc.kill()
            proc.wait()


def _start_time(pid: int) -> int:
    start = process_start_time(pid)
    assert start is not None
    return start
