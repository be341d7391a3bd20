"""The foreground run and control from elsewhere: what `vc flow run` prints when someone else
pauses, resumes or aborts its session, and Ctrl-C, which pauses the session instead of
leaving an orphan. Real processes and signals (see tests/runner/test_runner.py)."""

from __future__ import annotations

import contextlib
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
from tests.receivers import Silent
from tests.runner.runner_testkit import (
    Store,
    Vc,
    covered_on_postgresql_by_another,
    foreground,
    gone,
    kill_session_processes,
    log_file,
    newest_session,
    proc_state,
    read_pid,
    start_detached,
    write_workflow,
)
from tests.waiting import wait_until

# ---- control from elsewhere, seen by the foreground run ------------------------------------------


def as_user(store: Store, op: str, sid: str) -> None:
    """`vc flow session OP` typed by user "ana" elsewhere (the event records her)."""
    with store.factory() as db:
        getattr(FlowSessionManager(db, actor="ana"), op)(sid)


def test_run_off_a_terminal_says_who_paused_resumed_and_aborted_it(store: Store, nap: str) -> None:
    with foreground("nap", "--name", "nightly run") as proc:
        sid = newest_session(store)
        store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
        as_user(store, "pause", sid)
        store.wait_stage(sid, "nap", "PAUSED")
        as_user(store, "resume", sid)
        store.wait_stage(sid, "nap", "ACTIVE")
        as_user(store, "abort", sid)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and out == ""
    lines = [line.split(" ", 1)[1] for line in err.splitlines()[1:]]  # without the time
    host = local_host()
    assert lines == [
        "nap: started",
        f"session paused by ana on {host}",
        f"session resumed by ana on {host}",
        f"session aborted by ana on {host}",
        f"error: session {sid[:12]} (nightly run): session aborted",
    ], err


@covered_on_postgresql_by_another
class OnATerminal:
    """`vc flow run WORKFLOW` in the foreground on a pseudo-terminal of ``columns``: what
    it drew so far (:attr:`seen`), read as it is asked for."""

    def __init__(self, workflow: str, columns: int = 100) -> None:
        import fcntl
        import pty
        import struct
        import termios

        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "COLUMNS"))}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "run", workflow],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            env=env,
        )
        os.close(slave)
        self.seen = bytearray()

    def has(self, text: str) -> bool:
        while select_ready(self.master):
            try:
                self.seen.extend(os.read(self.master, 65536))
            except OSError:
                break
        return text.encode() in self.seen

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        os.close(self.master)


def test_the_live_line_on_a_terminal_shows_who_paused_it(
    workspace: Path, store: Store, nap: str
) -> None:
    """It used to stay frozen on the last progress, as if the stage still ran."""
    screen = OnATerminal("nap")
    try:
        sid = newest_session(store)
        store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
        as_user(store, "pause", sid)
        host = local_host()
        wait_until(lambda: screen.has(f"PAUSED by ana on {host}"), what="PAUSED on the line")
        assert screen.has(f"session paused by ana on {host}\r\n")  # and a line of its own
        as_user(store, "abort", sid)
        assert screen.proc.wait(30) == 1
    finally:
        screen.close()


def test_the_live_line_of_a_gate_is_wrapped_to_the_terminal_so_its_checklist_can_be_read(
    workspace: Path, store: Store
) -> None:
    write_workflow(
        workspace,
        "checked",
        """
        stages:
          - name: review
            checklist: [the changelog names every breaking change, the release notes are out]
    """,
    )
    screen = OnATerminal("checked", columns=60)
    try:
        wait_until(lambda: screen.has("release notes are out"), what="the whole checklist")
        drawn = screen.seen.decode(errors="replace").split("\x1b[J")[-1]
        assert all(len(line) <= 59 for line in drawn.splitlines()), drawn
    finally:
        screen.close()


def select_ready(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0.05)[0])


# ---- Ctrl-C in the foreground ------------------------------------------------------------------


def _interrupt_foreground(
    store: Store, signum: int = signal.SIGINT
) -> tuple[str, int, subprocess.Popen[str], str]:
    with foreground("nap") as proc:
        sid = newest_session(store)
        pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
        assert pid is not None
        os.killpg(proc.pid, signum)  # SIGINT: what a terminal sends its foreground job
        _, stderr = proc.communicate(timeout=15)
    return sid, pid, proc, stderr


def test_ctrl_c_on_a_run_of_one_stage_says_how_to_finish_that_stage_only(
    vc: Vc, store: Store, nap: str
) -> None:
    """A resume would run every stage left, not what was asked: the message says both
    (the run it names: test_run_of_one_stage_after_another_steps_through_a_session_…)."""
    with foreground("nap:nap") as proc:
        sid = newest_session(store)
        store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    short = sid[:12]
    assert stderr.splitlines()[-1] == (
        f"vc: interrupted: session {short} ({store.view(sid).name}) paused; to finish nap "
        f"only, run 'vc flow run nap:nap --session {short}' here; 'vc flow session resume "
        f"{short}' runs every stage left, in the background"
    )


def test_ctrl_c_on_foreground_run_pauses_the_session_and_exits_130(store: Store, nap: str) -> None:
    sid, pid, proc, stderr = _interrupt_foreground(store)
    assert proc.returncode == 130
    assert stderr.splitlines()[-1] == (
        f"vc: interrupted: session {sid[:12]} ({store.view(sid).name}) paused; resume it "
        f"with 'vc flow session resume {sid[:12]}' (it goes on in the background)"
    )
    wait_until(lambda: gone(pid), timeout=5, what="the stage to be terminated")
    view = store.view(sid)
    assert (view.status, view.reason) == ("PAUSED", "interrupted")
    assert view.runner_pid is None and not view.orphaned
    assert [(s.name, s.status) for s in view.stages] == [("nap", "PENDING"), ("after", "PENDING")]


#: `vc flow run nap` whose Ctrl-C comes the instant its session is written, before its
#: runner exists: the command's own code, with only the moment of the signal chosen.
CTRL_C_AFTER_THE_INSERT = """
import os, signal, sys
from store.managers import FlowSessionManager

insert = FlowSessionManager.insert_session

def insert_then_ctrl_c(self, new):
    row = insert(self, new)
    os.kill(os.getpid(), signal.SIGINT)
    return row

FlowSessionManager.insert_session = insert_then_ctrl_c
from app.main import main
sys.argv = ["vc", "flow", "run", "nap"]
sys.exit(main())
"""


def test_ctrl_c_the_instant_the_session_is_written_pauses_it_instead_of_leaving_an_orphan(
    store: Store, nap: str
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run(
        [sys.executable, "-c", CTRL_C_AFTER_THE_INSERT],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        env={**env, "NO_COLOR": "1"},
    )
    assert proc.returncode == 130, proc.stderr
    view = store.view(newest_session(store))
    assert (view.status, view.reason) == ("PAUSED", "interrupted")
    assert view.runner_pid is None and not view.orphaned
    assert [(s.name, s.status) for s in view.stages] == [("nap", "PENDING"), ("after", "PENDING")]


def test_ctrl_c_while_the_ended_run_still_sends_its_notifications_ends_vc_at_once(
    store: Store, workspace: Path, silent_target: Silent, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run's own Ctrl-C handling is over with the run: the user need not wait out a
    target that does not answer (the session completed: exit 0)."""
    target = silent_target.url()
    write_workflow(
        workspace,
        "told",
        f"notify: {{on: [success], to: [{target}]}}\nstages:\n  - {{name: a, run: 'true'}}\n",
    )
    monkeypatch.setenv("VC_NOTIFY_TIMEOUT", "60")
    with foreground("told") as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("COMPLETED: ")
        with pytest.raises(subprocess.TimeoutExpired):
            proc.wait(timeout=1)  # waiting for the target
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=15) == 0


def _stderr_lines(proc: subprocess.Popen[str]) -> list[str]:
    """The lines ``proc`` writes on stderr, as they come (read in a thread)."""
    lines: list[str] = []
    stderr = proc.stderr
    assert stderr is not None
    threading.Thread(target=lambda: lines.extend(stderr), daemon=True).start()
    return lines


STUBBORN = """
    stages:
      - name: stubborn
        kill_timeout: 60
        run: |
          trap '' TERM
          echo $$ > stubborn.pid
          while :; do sleep 0.05; done
"""


def test_ctrl_c_says_what_it_waits_for_and_a_second_one_kills_the_stage_at_once(
    store: Store, workspace: Path
) -> None:
    write_workflow(workspace, "stubborn", STUBBORN)
    with foreground("stubborn") as proc:
        sid = newest_session(store)
        pid = read_pid(workspace / "stubborn.pid")
        store.wait_stage(sid, "stubborn", "ACTIVE", with_pid=True)
        lines = _stderr_lines(proc)
        os.killpg(proc.pid, signal.SIGINT)
        said = "stopping stubborn: SIGTERM sent, SIGKILL in 60 s at most (Ctrl-C again to kill now)"
        wait_until(lambda: any(said in line for line in lines), what="the line said at once")
        assert not gone(pid)  # it ignores SIGTERM, and its kill_timeout is a minute
        os.killpg(proc.pid, signal.SIGINT)
        started = time.monotonic()
        assert proc.wait(30) == 130
        assert time.monotonic() - started < 10  # not the minute of its kill_timeout
    assert gone(pid)
    view = store.view(sid)
    assert (view.status, view.stages[0].status) == ("PAUSED", "PENDING")


DEPLOY_BESIDE_STUBBORN = """
    max_parallel: 2
    stages:
      - name: deploy
        needs: []
        run: echo deployed >> ran; (sleep 1; echo late) &
      - name: stubborn
        needs: []
        kill_timeout: 60
        run: |
          trap '' TERM
          echo $$ > stubborn.pid
          while :; do sleep 0.05; done
"""


def test_a_second_ctrl_c_still_records_a_stage_that_exited_0_meanwhile(
    store: Store, workspace: Path
) -> None:
    """The first Ctrl-C waits for the stubborn stage; the deploy, exited 0, has all its
    output in by the second: it is COMPLETED, not thrown away and deployed again."""
    write_workflow(workspace, "deploy", DEPLOY_BESIDE_STUBBORN)
    with foreground("deploy") as proc:
        sid = newest_session(store)
        read_pid(workspace / "stubborn.pid")
        wait_until((workspace / "ran").exists, what="the deploy stage to run")
        lines = _stderr_lines(proc)
        os.killpg(proc.pid, signal.SIGINT)
        wait_until(lambda: any("stopping stubborn" in line for line in lines), what="stopping")
        time.sleep(2.0)  # the deploy's output (held by its child for 1 s) is all read
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(30) == 130
    stages = {s.name: s.status for s in store.view(sid).stages}
    assert stages == {"deploy": "COMPLETED", "stubborn": "PENDING"}


def test_a_closed_terminals_two_hangups_still_give_the_stage_its_kill_timeout(
    store: Store, workspace: Path
) -> None:
    """Only a second Ctrl-C kills at once: a terminal closing often sends SIGHUP twice."""
    write_workflow(workspace, "stubborn", STUBBORN.replace("kill_timeout: 60", "kill_timeout: 3"))
    with foreground("stubborn") as proc:
        sid = newest_session(store)
        pid = read_pid(workspace / "stubborn.pid")
        store.wait_stage(sid, "stubborn", "ACTIVE", with_pid=True)
        lines = _stderr_lines(proc)
        started = time.monotonic()
        os.killpg(proc.pid, signal.SIGHUP)
        wait_until(lambda: any("stopping stubborn" in line for line in lines), what="stopping")
        os.killpg(proc.pid, signal.SIGHUP)  # the second hangup, once the first is in hand
        assert proc.wait(30) == 129
        assert time.monotonic() - started >= 2.5  # its kill_timeout, waited out
    assert gone(pid)
    assert store.view(sid).status == "PAUSED"


#: A stage that succeeds at once (it counts its runs in ``ran``) but leaves a child holding
#: its output for a while: the attempt has exited 0 and its output is still being read,
#: the window in which an interrupt used to throw the success away.
DEPLOY_ONCE = """
    stages:
      - name: deploy
        run: echo deployed >> ran; (sleep 1.5; echo late) &
      - name: after
        run: sleep 600
"""


def test_ctrl_c_after_a_stage_exited_0_records_it_completed_and_the_resume_never_reruns_it(
    vc: Vc, store: Store, workspace: Path
) -> None:
    write_workflow(workspace, "deploy", DEPLOY_ONCE)
    ran = workspace / "ran"
    with foreground("deploy") as proc:
        sid = newest_session(store)
        store.wait_stage(sid, "deploy", "ACTIVE", with_pid=True)  # output open for 2 s more
        wait_until(ran.exists, timeout=15, what="the deploy stage to run")
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    view = store.view(sid)
    assert [(s.name, s.status, s.attempt) for s in view.stages] == [
        ("deploy", "COMPLETED", 1),
        ("after", "PENDING", 0),
    ]
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_stage(sid, "after", "ACTIVE", with_pid=True)
    vc("flow", "session", "abort", sid)
    assert ran.read_text() == "deployed\n"


BRANCHES = """
    max_parallel: 2
    stages:
      - name: deploy
        needs: []
        run: echo deployed >> ran; (sleep 5; echo late) &
      - name: long
        needs: []
        run: sleep 600
"""


def test_ctrl_c_stops_the_running_stages_before_it_waits_on_one_that_exited_0(
    store: Store, workspace: Path
) -> None:
    write_workflow(workspace, "branches", BRANCHES)
    with foreground("branches") as proc:
        sid = newest_session(store)
        long = store.wait_stage(sid, "long", "ACTIVE", with_pid=True).pid
        store.wait_stage(sid, "deploy", "ACTIVE", with_pid=True)
        wait_until((workspace / "ran").exists, timeout=15, what="the deploy stage to run")
        os.killpg(proc.pid, signal.SIGINT)
        # deploy's output stays open for 2 s more (the grace its readers get): long is
        # stopped at once, not after that
        wait_until(lambda: gone(long), timeout=1.0, what="the long stage to be stopped")
        assert proc.wait(30) == 130
    stages = {s.name: s.status for s in store.view(sid).stages}
    assert stages == {"deploy": "COMPLETED", "long": "PENDING"}


def test_a_pause_as_the_last_stage_ends_waits_and_says_the_resume_completes_the_session(
    store: Store, workspace: Path
) -> None:
    write_workflow(workspace, "deploy", DEPLOY_ONCE.split("      - name: after")[0])
    with foreground("deploy") as proc:
        sid = newest_session(store)
        store.wait_stage(sid, "deploy", "ACTIVE", with_pid=True)
        wait_until((workspace / "ran").exists, timeout=15, what="the deploy stage to run")
        as_user(store, "pause", sid)  # its process has exited; its output is still open
        store.wait_stage(sid, "deploy", "COMPLETED")
        log = log_file(workspace, sid)
        said = "paused after its last stage: resume completes the session"
        wait_until(lambda: said in log.read_text(), timeout=15, what="the runner to say so")
        assert store.view(sid).status == "PAUSED"
        as_user(store, "resume", sid)
        assert proc.wait(30) == 0
    assert store.view(sid).status == "COMPLETED"
    assert "the next stage waits" not in log.read_text()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_sigterm_or_a_closed_terminal_pauses_the_run_and_exits_128_plus_the_signal(
    store: Store, nap: str, signum: int
) -> None:
    sid, _, proc, stderr = _interrupt_foreground(store, signum)
    assert proc.returncode == 128 + signum, stderr
    assert "paused; resume it with" in stderr.splitlines()[-1]
    assert (store.view(sid).status, store.view(sid).reason) == ("PAUSED", "interrupted")


# on PostgreSQL: test_resume_of_orphan_removes_leftovers_and_never_reruns_completed_stages
#   (resume starts a detached runner, new attempt)
@covered_on_postgresql_by_another
def test_resume_after_ctrl_c_starts_a_detached_runner_with_a_new_attempt(
    vc: Vc, store: Store, nap: str
) -> None:
    sid, pid, proc, _ = _interrupt_foreground(store)
    assert proc.returncode == 130
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0, result.stderr
    assert "runner started" in result.stdout
    row = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
    assert row.attempt == 2 and row.pid != pid
    view = store.view(sid)
    assert view.runner_pid is not None and view.runner_pid != proc.pid


STRAY_WORKFLOW = """
    stages:
      - name: spawn
        kill_timeout: 2
        run: |
          setsid sh -c 'echo $$ > stray.pid; while true; do sleep 0.1; done' &
          wait
"""


def test_pause_resume_and_abort_reach_a_process_that_left_its_stages_group(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A stage's child in a session of its own (setsid) is not in the stage's process group,
    so a signal to the group misses it; its runner finds it by the variables it inherited."""
    write_workflow(workspace, "stray", STRAY_WORKFLOW)
    sid = start_detached(vc, "stray")
    stray_file = workspace / "stray.pid"
    wait_until(lambda: stray_file.exists() and stray_file.read_text().strip(), timeout=10)
    stray = read_pid(stray_file)
    try:
        assert os.getpgid(stray) != store.wait_stage(sid, "spawn", "ACTIVE", with_pid=True).pid
        assert vc("flow", "session", "pause", sid).returncode == 0
        wait_until(lambda: proc_state(stray) == "T", timeout=5, what="the stray stopped")
        assert vc("flow", "session", "resume", sid).returncode == 0
        wait_until(lambda: proc_state(stray) in ("S", "R"), timeout=5, what="the stray going on")
        assert vc("flow", "session", "abort", sid).returncode == 0
        wait_until(lambda: gone(stray), timeout=10, what="the stray removed")
    finally:
        kill_session_processes(sid)


JOB_WORKFLOW = """
    stages:
      - name: jobs
        kill_timeout: 2
        run: |
          set -m
          env -i sh -c 'echo $$ > job.pid; while true; do sleep 0.1; done' &
          wait
"""


def test_pause_resume_and_abort_reach_a_job_with_a_cleared_environment(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A job-control shell's job (``set -m``) is in a group of its own, and ``env -i`` left
    it none of the variables that name its stage: it is found in the kernel session its
    stage leads."""
    write_workflow(workspace, "jobs", JOB_WORKFLOW)
    sid = start_detached(vc, "jobs")
    job_file = workspace / "job.pid"
    wait_until(lambda: job_file.exists() and job_file.read_text().strip(), timeout=10)
    job = read_pid(job_file)
    try:
        stage = store.wait_stage(sid, "jobs", "ACTIVE", with_pid=True).pid
        assert os.getpgid(job) != stage and os.getsid(job) == stage
        assert b"VC_SESSION_ID" not in Path(f"/proc/{job}/environ").read_bytes()
        assert vc("flow", "session", "pause", sid).returncode == 0
        wait_until(lambda: proc_state(job) == "T", timeout=5, what="the job stopped")
        assert vc("flow", "session", "resume", sid).returncode == 0
        wait_until(lambda: proc_state(job) in ("S", "R"), timeout=5, what="the job going on")
        assert vc("flow", "session", "abort", sid).returncode == 0
        wait_until(lambda: gone(job), timeout=10, what="the job removed")
    finally:
        with contextlib.suppress(OSError):
            os.kill(job, signal.SIGKILL)
        kill_session_processes(sid)


@covered_on_postgresql_by_another
def test_a_pause_while_the_runner_is_stopped_says_the_stage_runs_on_until_it_answers(
    vc: Vc, store: Store, nap: str
) -> None:
    sid = start_detached(vc, nap)
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    runner = store.view(sid).runner_pid
    assert pid is not None and runner is not None
    os.kill(runner, signal.SIGSTOP)
    try:
        result = vc("flow", "session", "pause", sid)
        assert result.returncode == 0 and result.stdout.startswith("PAUSED:")
        assert result.stderr == (
            f"vc: warning: its runner (pid {runner}) is stopped (state T): its stages run on "
            "until it reads the pause; if it never does, the session shows orphaned 15 s "
            "after its last heartbeat, and 'pause' again enforces it from here\n"
        )
        assert proc_state(pid) != "T"
    finally:
        os.kill(runner, signal.SIGCONT)
    wait_until(lambda: proc_state(pid) == "T", timeout=5, what="the runner to enforce it")


def test_a_pause_with_a_live_runner_says_nothing_more(vc: Vc, store: Store, nap: str) -> None:
    sid = start_detached(vc, nap)
    store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
    result = vc("flow", "session", "pause", sid)
    assert result.returncode == 0 and result.stderr == ""


GATED = """
stages:
  - name: fetch
    run: "true"
  - name: review
    needs: [fetch]
  - name: publish
    needs: [review]
    run: "true"
"""


def test_ctrl_c_on_a_run_of_a_waiting_gate_alone_names_the_resume_not_a_refused_run(
    vc: Vc, store: Store, workspace: Path
) -> None:
    """`run --session` is refused while a gate waits: the message names the resume that
    passes the gate, never a run that would be refused."""
    write_workflow(workspace, "gated", GATED)
    vc("flow", "run", "gated:fetch")
    sid = newest_session(store)
    short = sid[:12]
    with foreground("gated:review", "--session", short) as proc:
        wait_until(lambda: store.view(sid).reason == "waiting: review", what="the gate")
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=15)
    assert stderr.splitlines()[-1] == (
        f"vc: interrupted: session {short} ({store.view(sid).name}) paused; 'vc flow session "
        f"resume {short}' runs every stage left, in the background; resuming passes the "
        f"manual gate review"
    )
    assert vc("flow", "session", "resume", short).returncode == 0  # what the message says
    wait_until(lambda: store.view(sid).status == "COMPLETED", what="the session to complete")
