"""A runner killed outright (SIGKILL, the OOM killer) leaves no stage running behind it: its
guard (app/runner/stage_guard.py) stops them. Real runners, real signals, real process groups."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from app.runner import stage_guard
from app.runner.groups import process_start_time
from app.runner.process import StageProcess
from app.runner.stage_guard import GUARD, Guarded, StageGuard
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
def test_a_process_that_left_its_stages_group_is_removed_with_it(
    vc: Vc, store: Store, workspace: Path
) -> None:
    """As an abort removes it: found by the stage and attempt its environment carries."""
    text = """
        stages:
          - name: forks
            run: "setsid sleep 300 & echo $! > stray.pid; sleep 300"
            kill_timeout: 1
    """
    sid, pid = _running(vc, store, workspace, text, "forks")
    stray = read_pid(workspace / "stray.pid")
    try:
        wait_until(lambda: os.getpgid(stray) == stray, what="the stray's own session")
        kill_runner(store, sid, with_guard=False)
        wait_until(lambda: gone(pid) and gone(stray), timeout=10, what="both to be removed")
    finally:
        with contextlib.suppress(OSError):
            os.kill(stray, signal.SIGKILL)


@sqlite_only
def test_a_job_with_a_cleared_environment_is_removed_with_its_stage(
    vc: Vc, store: Store, workspace: Path
) -> None:
    """Found in the kernel session its stage leads: nothing in its environment names it."""
    text = """
        stages:
          - name: jobs
            run: |
              set -m
              env -i sh -c 'echo $$ > job.pid; exec sleep 300' &
              sleep 300
            kill_timeout: 1
    """
    sid, pid = _running(vc, store, workspace, text, "jobs")
    wait_until(lambda: (workspace / "job.pid").exists(), what="the job's pid")
    job = read_pid(workspace / "job.pid")
    try:
        wait_until(lambda: os.getpgid(job) != pid, what="the job's own group")
        kill_runner(store, sid, with_guard=False)
        wait_until(lambda: gone(pid) and gone(job), timeout=10, what="both to be removed")
    finally:
        with contextlib.suppress(OSError):
            os.kill(job, signal.SIGKILL)


@sqlite_only
def test_a_runner_killed_while_it_stops_a_stage_leaves_nothing_of_it_running(
    vc: Vc, store: Store, workspace: Path
) -> None:
    """The stage timed out, its leader exited at SIGTERM and was reaped, and the runner waits
    out kill_timeout for a child that ignores it: killed then, its guard finishes the stop."""
    text = """
        stages:
          - name: slow
            run: "(trap '' TERM; exec sleep 300) & echo $! > child.pid; wait"
            timeout: 1
            kill_timeout: 3
    """
    sid, pid = _running(vc, store, workspace, text, "slow")
    child = read_pid(workspace / "child.pid")
    wait_until(lambda: gone(pid), timeout=10, what="the timed-out stage's leader to exit")
    assert not gone(child)
    kill_runner(store, sid, with_guard=False)
    wait_until(lambda: gone(child), timeout=10, what="the guard to remove the child")


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
def test_a_guard_killed_while_a_stage_runs_is_started_again_at_once_and_told_of_it(
    vc: Vc, store: Store, workspace: Path
) -> None:
    """No other stage starts or ends meanwhile: the new guard does not wait for one."""
    text = """
        stages:
          - name: long
            run: sleep 300
    """
    sid, long = _running(vc, store, workspace, text, "long")
    runner = store.view(sid).runner_pid
    assert runner is not None
    old_guard = wait_until(lambda: guard_of(runner), timeout=10, what="the guard")
    os.kill(old_guard, signal.SIGKILL)
    new_guard = wait_until(
        lambda: (g := guard_of(runner)) not in (None, old_guard) and g,
        timeout=10,
        what="a new guard",
    )
    assert new_guard != old_guard
    kill_runner(store, sid, with_guard=False)
    wait_until(lambda: gone(long), timeout=10, what="the long stage to be removed")


def test_a_stopped_guard_is_replaced_and_the_new_one_told_of_the_groups(tmp_path: Path) -> None:
    """A guard stopped with SIGSTOP would act on nothing if its runner died: it is replaced
    at once, without waiting for the next stage to start or end."""
    guard = StageGuard()
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True, cwd=tmp_path)
    stopped = None
    try:
        guard.watch(Guarded(proc.pid, _start_time(proc.pid), 1.0))
        stopped = guard.pid
        assert stopped is not None
        os.kill(stopped, signal.SIGSTOP)
        wait_until(lambda: guard.pid not in (None, stopped), timeout=10, what="a new guard")
        wait_until(lambda: gone(stopped), timeout=5, what="the stopped guard to be gone")
        assert guard._proc is not None and guard._proc.stdin is not None
        guard._proc.stdin.close()  # the runner's death, to the new guard
        assert proc.wait(timeout=10) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()
        if stopped is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(stopped, signal.SIGKILL)


def test_a_write_to_a_guard_that_reads_nothing_gives_up_rather_than_block_the_runner() -> None:
    read_end, write_end = os.pipe()
    try:
        os.set_blocking(write_end, False)
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(write_end, b"x" * 4096)  # a full pipe: its reader reads nothing
        with pytest.raises(TimeoutError):
            stage_guard._write_all(write_end, b"+ 1 2 1.0 - - -\n")
    finally:
        os.close(read_end)
        os.close(write_end)


def test_a_guard_that_dies_as_it_starts_is_not_started_again_in_a_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A guard killed by a signal is replaced at once, but one that keeps dying as it
    starts (a crash, here a guard whose start-up kills itself) is given up for a while
    rather than spawned again and again."""
    starts = tmp_path / "starts"
    monkeypatch.setattr(
        stage_guard,
        "_BOOT",
        f"import os, signal; open({str(starts)!r}, 'a').write('x'); "
        "os.kill(os.getpid(), signal.SIGKILL)",
    )
    guard = StageGuard()
    guard.watch(Guarded(2**23, 1, 1.0))  # above any pid: never signalled
    wait_until(
        lambda: starts.exists() and len(starts.read_text()) >= 2, timeout=10, what="a restart"
    )
    time.sleep(2)
    assert len(starts.read_text()) == 2
    assert guard.pid is None


def test_the_end_of_the_guards_pipe_stops_every_group_it_was_told_of(tmp_path: Path) -> None:
    """The guard on its own, without a runner: groups watched are stopped at the end of its
    pipe, a group released is left alone."""
    guard = StageGuard()
    groups = [
        subprocess.Popen(["sleep", "300"], start_new_session=True, cwd=tmp_path) for _ in range(3)
    ]
    try:
        for proc in groups:
            guard.watch(Guarded(proc.pid, _start_time(proc.pid), 1.0))
        guard.release(groups[2].pid, _start_time(groups[2].pid))
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


def test_a_release_for_a_pid_reused_since_leaves_the_new_group_guarded(tmp_path: Path) -> None:
    guard = StageGuard()
    proc = subprocess.Popen(["sleep", "300"], start_new_session=True, cwd=tmp_path)
    try:
        start = _start_time(proc.pid)
        guard.watch(Guarded(proc.pid, start, 1.0))
        guard.release(proc.pid, start - 1)  # the late release of the pid's previous owner
        assert guard._proc is not None and guard._proc.stdin is not None
        guard._proc.stdin.close()
        guard._proc.wait(timeout=10)
        assert proc.wait(timeout=5) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait()


def test_a_stage_reaped_by_the_watcher_thread_is_never_left_guarded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without pidfd (kernels before 5.3) a thread reaps the stage, perhaps before its
    start returned: the guard must have been told first, or the release would come before
    the registration and leave the group guarded for good (and what it left running
    killed when the runner ends normally)."""
    monkeypatch.delattr(os, "pidfd_open")
    procs = [
        StageProcess(
            "true",
            env={"PATH": "/usr/bin:/bin"},
            cwd=None,
            on_lines=lambda _: None,
            kill_timeout=1.0,
        )
        for _ in range(30)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        assert proc.wait(timeout=10) == 0
    assert not {p.pid for p in procs} & set(GUARD._groups)


@pytest.mark.parametrize("stage", ["build", "resize[format=hi res,size=small]", "résumé – ☃", None])
def test_a_registration_reaches_the_guard_whatever_the_stage_is_called(stage: str | None) -> None:
    group = Guarded(4242, 123456, 2.5, "0" * 32, stage, "3")
    op, *fields = group.line().split()
    assert op == b"+" and Guarded.parse(fields) == group


def _start_time(pid: int) -> int:
    start = process_start_time(pid)
    assert start is not None
    return start


def _stage_env(session: str, attempt: str) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "VC_SESSION_ID": session,
        "VC_STAGE": "build",
        "VC_ATTEMPT": attempt,
    }


def _sleeper(tmp_path: Path, session: str, attempt: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["sleep", "300"], start_new_session=True, cwd=tmp_path, env=_stage_env(session, attempt)
    )


def _expected_and_spawned(
    tmp_path: Path, session: str
) -> tuple[StageGuard, subprocess.Popen[bytes]]:
    """A guard told to expect attempt 2 of the stage, and that attempt spawned (exec'd) but
    never watched: the runner is about to die in between."""
    guard = StageGuard()
    guard.expect(1.0, session, "build", "2")
    stage = _sleeper(tmp_path, session, "2")
    wait_until(lambda: _carries_env(stage.pid), timeout=5, what="the stage's exec")
    return guard, stage


def _removed_when_the_runner_dies(guard: StageGuard, stage: subprocess.Popen[bytes]) -> None:
    try:
        _runner_dies(guard)
        assert stage.wait(timeout=10) == -signal.SIGTERM
    finally:
        stage.kill()
        stage.wait()


def _runner_dies(guard: StageGuard) -> None:
    """What the kernel does to the guard's pipe when the runner dies, and the guard's end."""
    assert guard._proc is not None and guard._proc.stdin is not None
    guard._proc.stdin.close()
    assert guard._proc.wait(timeout=10) == 0


def test_a_stage_spawned_but_not_yet_watched_when_its_runner_dies_is_removed(
    tmp_path: Path,
) -> None:
    """The runner killed between a stage's spawn and the line telling the guard its group:
    the expectation told before the spawn names the stage's attempt."""
    guard, stage = _expected_and_spawned(tmp_path, os.urandom(16).hex())
    _removed_when_the_runner_dies(guard, stage)


def test_what_another_attempt_of_the_expected_stage_left_running_is_left_alone(
    tmp_path: Path,
) -> None:
    session = os.urandom(16).hex()
    earlier = _sleeper(tmp_path, session, "1")  # a service the first attempt started
    guard, stage = _expected_and_spawned(tmp_path, session)
    try:
        _runner_dies(guard)
        assert stage.wait(timeout=10) == -signal.SIGTERM
        assert earlier.poll() is None
    finally:
        for proc in (earlier, stage):
            proc.kill()
            proc.wait()


def test_an_expectation_forgotten_once_the_group_was_watched_and_released_stops_nothing(
    tmp_path: Path,
) -> None:
    """The normal course: the group watched, then its leader reaped; what the stage left
    running (here the stage's process itself) outlives the runner's normal end."""
    session = os.urandom(16).hex()
    guard = StageGuard()
    token = guard.expect(1.0, session, "build", "1")
    stage = _sleeper(tmp_path, session, "1")
    try:
        start = _start_time(stage.pid)
        guard.watch(Guarded(stage.pid, start, 1.0, session, "build", "1"))
        guard.forget(token)
        guard.release(stage.pid, start)
        _runner_dies(guard)  # the guard ends once it has stopped all it would
        assert stage.poll() is None
    finally:
        stage.kill()
        stage.wait()


def test_an_expected_stage_gets_one_sigterm_though_it_starts_processes_as_it_stops(
    tmp_path: Path,
) -> None:
    """Its cleanup (here a ``sleep`` in the TERM trap, started after the guard's first
    look) is not taken for a late spawn: the group is signalled once, as an abort does."""
    session = os.urandom(16).hex()
    terms = tmp_path / "terms"
    guard = StageGuard()
    guard.expect(5.0, session, "build", "1")
    stage = subprocess.Popen(
        [
            "bash",
            "-c",
            f"trap 'echo term >> {terms}; sleep 1; exit 0' TERM; while :; do sleep 0.05; done",
        ],
        start_new_session=True,
        cwd=tmp_path,
        env=_stage_env(session, "1"),
    )
    try:
        wait_until(lambda: _carries_env(stage.pid), timeout=5, what="the stage's exec")
        _runner_dies(guard)
        assert stage.wait(timeout=10) == 0
        assert terms.read_text().splitlines() == ["term"]
    finally:
        stage.kill()
        stage.wait()


def test_a_process_of_the_expected_attempt_started_after_the_runner_died_is_left_alone(
    tmp_path: Path,
) -> None:
    """A takeover on this host may number its attempt as the dead runner did, which never
    recorded it: what starts after the pipe ended is the new runner's."""
    session = os.urandom(16).hex()
    guard = StageGuard()
    guard.expect(1.0, session, "build", "1")
    time.sleep(0.5)  # the guard started and reading, as a runner's is long before it dies
    assert guard._proc is not None and guard._proc.stdin is not None
    guard._proc.stdin.close()
    time.sleep(0.03)  # the clock ticks (10 ms each) past the pipe's end
    takeover = _sleeper(tmp_path, session, "1")
    try:
        assert guard._proc.wait(timeout=10) == 0
        assert takeover.poll() is None
    finally:
        takeover.kill()
        takeover.wait()


def test_an_expected_stage_whose_exec_comes_after_the_first_look_is_removed_at_the_second(
    tmp_path: Path,
) -> None:
    """Forked before the runner died, the stage carries its environment only once it has
    exec'd: the guard looks again after EXEC_GRACE."""
    session = os.urandom(16).hex()
    guard = StageGuard()
    guard.expect(1.0, session, "build", "1")
    env = " ".join(f"{k}={v}" for k, v in _stage_env(session, "1").items())
    stage = subprocess.Popen(
        ["bash", "-c", f"sleep 0.15; exec env {env} sleep 300"],
        start_new_session=True,
        cwd=tmp_path,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )
    _removed_when_the_runner_dies(guard, stage)


def test_a_stage_process_is_expected_by_the_guard_when_it_is_spawned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.runner import process

    session = os.urandom(16).hex()
    seen: list[list[tuple[str | None, str | None, str | None]]] = []
    real_popen = subprocess.Popen

    def spawn(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        if args[0] == "true":  # the stage, not a guard started meanwhile
            seen.append([(e.session, e.stage, e.attempt) for e in GUARD._expected.values()])
        return real_popen(*args, **kwargs)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(process.subprocess, "Popen", spawn)
    stage = StageProcess(
        "true",
        env=_stage_env(session, "4"),
        cwd=str(tmp_path),
        on_lines=lambda _: None,
        kill_timeout=1.0,
    )
    stage.start()
    assert stage.wait(timeout=10) == 0
    assert seen == [[(session, "build", "4")]]
    assert not GUARD._expected


def _carries_env(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            return b"VC_SESSION_ID=" in fh.read()
    except OSError:
        return False
