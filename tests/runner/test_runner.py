"""The runner end to end: the real `vc` command, real stage processes, real signals.

Every test drives the product through the CLI (`vc flow run …`, `vc flow session …`) and
checks the result where a user or an operator would: the store (through the read models
and managers of ``store``), the session's log file, and /proc (a paused stage is in state
``T``, an aborted one is gone with its grandchildren). Nothing is mocked. Waits poll with
short intervals (:func:`wait_until`) instead of sleeping fixed times, so each test takes
about as long as the behaviour it checks.

The store is the ``db_url`` fixture's: each test runs on SQLite and, when
VC_TEST_DATABASE_URL is set, on PostgreSQL in a schema of its own (the runner then learns of
a pause or an abort by LISTEN/NOTIFY, writes its output through a server connection, and
may be killed with that connection open). Tests marked :data:`sqlite_only` check what the
runner does with processes, signals, pipes and the stage's environment, where the store
only records the outcome: they run once, on SQLite, to keep the suite's time down.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from store import FlowSessionManager, StageManager
from store.identity import local_host
from store.models import LogRecord, StageInstance
from store.queries import (
    LogView,
    SessionView,
    StageView,
    get_session_view,
    list_events,
    read_logs,
)
from tests.waiting import wait_until

Vc = Callable[..., subprocess.CompletedProcess[str]]

#: Not repeated on PostgreSQL: what the test checks happens between the runner and its
#: processes, pipes or clock; the store only records the outcome, as it does elsewhere.
sqlite_only = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
#: Not repeated on PostgreSQL to keep the suite's time down: another test that runs on both
#: stores takes the same path through the store (named at the test).
covered_on_postgresql_by_another = sqlite_only


# ---- helpers ----------------------------------------------------------------------------------


def stat_fields(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (index 0 is the state), None if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 1 :].decode().split()


def proc_state(pid: int) -> str | None:
    fields = stat_fields(pid)
    return None if fields is None else fields[0]


def gone(pid: int) -> bool:
    """No such process, or only its zombie (nobody may reap orphans in a container)."""
    return proc_state(pid) in (None, "Z", "X")


def cpu_ns(pid: int) -> int:
    """CPU time of all threads of ``pid`` in nanoseconds (/proc/PID/task/*/schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except OSError:
            pass
    return total


def utime(pid: int) -> int:
    fields = stat_fields(pid)
    assert fields is not None
    return int(fields[11])


def read_pid(path: Path) -> int:
    """The pid a stage wrote to ``path`` (`echo $$ > path` is one write: never partial)."""

    def content() -> str | None:
        return path.read_text().strip() if path.exists() else None

    return int(wait_until(content, what=f"{path}"))


def write_workflow(workspace: Path, workflow_id: str, text: str) -> None:
    (workspace / "workflows" / f"{workflow_id}.yaml").write_text(textwrap.dedent(text).lstrip())


#: A long stage that, unlike the sample `slow` (a busy loop, for CPU checks), costs no CPU.
NAP = """
    stages:
      - name: nap
        run: echo started; sleep 60
      - name: after
        run: echo after
"""


@pytest.fixture
def nap(workspace: Path) -> str:
    write_workflow(workspace, "nap", NAP)
    return "nap"


class Store:
    """Read access to the workspace's store, one short transaction per call (a test never
    holds a transaction open while the runner writes)."""

    def __init__(self, factory: Any) -> None:
        self.factory = factory

    def view(self, sid: str) -> SessionView:
        with self.factory() as db:
            view = get_session_view(db, sid)
        assert view is not None, f"session {sid} not found"
        return view

    def stage(self, sid: str, name: str) -> StageView:
        return next(s for s in self.view(sid).stages if s.name == name)

    def stage_row(self, sid: str, name: str) -> StageInstance:
        """The stage instance row, with the pid the runner recorded (StageManager)."""
        with self.factory() as db:
            row = StageManager(db).get_stage(self.stage(sid, name).id)
            db.expunge(row)
        return row

    def logs(self, sid: str, stage: str | None = None) -> list[LogView]:
        with self.factory() as db:
            return read_logs(db, sid, stage=stage, limit=100_000)

    def count_output(self, sid: str, stage: str) -> int:
        with self.factory() as db:
            return int(
                db.connection()
                .execute(
                    select(func.count())
                    .select_from(LogRecord)
                    .where(
                        LogRecord.session_id == sid,  # type: ignore[arg-type]
                        LogRecord.stage == stage,  # type: ignore[arg-type]
                        LogRecord.category == "workflow.stage.integration",  # type: ignore[arg-type]
                    )
                )
                .scalar_one()
            )

    def pause(self, sid: str) -> None:
        with self.factory() as db:
            FlowSessionManager(db).pause(sid)

    def status_is(self, sid: str, *statuses: str) -> SessionView | None:
        view = self.view(sid)
        return view if view.status in statuses else None

    def wait_status(self, sid: str, *statuses: str, timeout: float = 15.0) -> SessionView:
        return wait_until(
            lambda: self.status_is(sid, *statuses),
            timeout=timeout,
            what=f"session {sid[:8]} in {statuses}",
        )

    def wait_stage(
        self, sid: str, name: str, status: str, *, with_pid: bool = False, timeout: float = 15.0
    ) -> StageInstance:
        def ready() -> StageInstance | None:
            row = self.stage_row(sid, name)
            if row.status == status and (row.pid or not with_pid):
                return row
            return None

        return wait_until(ready, timeout=timeout, what=f"stage {name} {status}")


def _stop_everything(factory: Any) -> None:
    """Abort what still runs and wait for its runner; SIGKILL a runner that does not stop,
    and remove a stage a killed runner left behind (only while its leader still runs with
    the recorded start time: never anybody else's process)."""
    from app.runner.process import kill_leftover_group, process_start_time
    from store.queries import list_sessions

    with factory() as db:
        rows = (
            db.connection()
            .execute(
                select(StageInstance.pid, StageInstance.pid_start).where(  # type: ignore[call-overload]
                    StageInstance.pid.is_not(None),  # type: ignore[union-attr]
                    StageInstance.status.in_(("ACTIVE", "PAUSED")),
                )  # type: ignore[attr-defined]
            )
            .all()
        )
        manager = FlowSessionManager(db)
        runners = []
        for view in list_sessions(db, limit=1000):
            if view.status in ("PENDING", "ACTIVE", "PAUSED"):
                try:
                    manager.abort(view.id)
                except Exception:
                    db.rollback()
            if view.runner_pid and view.runner_host == local_host():
                runners.append(view.runner_pid)
    for pid in runners:
        try:
            wait_until(partial(gone, pid), timeout=5)
        except AssertionError:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    for pid, start in rows:
        if start is not None and process_start_time(pid) == start:
            kill_leftover_group(pid, start, 0.5)


def kill_session_processes(sid: str) -> None:
    """SIGKILL whatever processes of the session's stages run on (after a test killed
    their runner), recorded or not."""
    from app.runner.process import find_session_processes

    for proc in find_session_processes(sid):
        try:
            os.killpg(proc.pgid, signal.SIGKILL)
        except OSError:
            pass


def start_detached(vc: Vc, workflow: str, *extra: str) -> str:
    result = vc("flow", "run", workflow, "--detach", *extra)
    assert result.returncode == 0, result.stderr
    sid = result.stdout.strip()
    assert len(sid) == 32, result.stdout
    return sid


def session_json(vc: Vc, *args: str) -> Any:
    result = vc(*args, "--json")
    assert result.returncode in (0, 1), result.stderr
    return json.loads(result.stdout)


def log_file(workspace: Path, sid: str) -> Path:
    return workspace / "logs" / "workflow" / "session" / f"{sid}.log"


def start_foreground(workflow: str, *extra: str) -> subprocess.Popen[str]:
    """`vc flow run WORKFLOW` in the foreground, as a terminal's job: its own process group
    (so a test can send the terminal's SIGINT to the whole job)."""
    return subprocess.Popen(
        [sys.executable, "-m", "app.main", "flow", "run", workflow, *extra],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")},
            "NO_COLOR": "1",
        },
    )


def newest_session(store: Store) -> str:
    from store.queries import list_sessions

    def find() -> str | None:
        with store.factory() as db:
            views = list_sessions(db, limit=1)
        return views[0].id if views else None

    return wait_until(find, what="a session")


# ---- a workflow runs ----------------------------------------------------------------------------


def test_workflow_runs_to_completed_with_logs_in_file_and_store(
    workspace: Path, vc: Vc, store: Store
) -> None:
    sid = start_detached(vc, "hello")
    view = store.wait_status(sid, "COMPLETED")
    assert [(s.name, s.status, s.attempt, s.exit_code) for s in view.stages] == [
        ("greet", "COMPLETED", 1, 0),
        ("count", "COMPLETED", 1, 0),
        ("done", "COMPLETED", 1, 0),
    ]
    assert view.progress == 100.0 and view.runner_pid is None and not view.orphaned
    logs = [
        (r.stage, r.level, r.text)
        for r in store.logs(sid)
        if r.category == "workflow.stage.integration"
    ]
    assert ("greet", "INFO", "hello from greet attempt 1") in logs
    assert ("count", "INFO", "step 4") in logs
    assert ("done", "WARNING", "bye") in logs  # stderr
    text = log_file(workspace, sid).read_text()
    assert "| INFO    | workflow.stage.integration | " + sid + " | greet | hello from greet" in text
    assert "| WARNING | workflow.stage.integration | " + sid + " | done | bye" in text
    shown = vc("flow", "session", "logs", sid)
    assert shown.returncode == 0 and "hello from greet attempt 1" in shown.stdout


# on PostgreSQL: test_ctrl_c_on_foreground_run_pauses_the_session_and_exits_130 (a runner in
#   the CLI process)
@covered_on_postgresql_by_another
def test_foreground_run_completes_and_prints_the_result(vc: Vc, store: Store) -> None:
    result = vc("flow", "run", "hello", "--name", "fg run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("COMPLETED: ")
    sid = newest_session(store)
    view = store.view(sid)
    assert view.name == "fg run" and view.status == "COMPLETED"
    assert f"session {sid} (SIGINT or SIGTERM pauses it)" in result.stderr  # off a terminal


@sqlite_only
def test_stage_sees_session_stage_attempt_its_env_and_cwd(
    workspace: Path, vc: Vc, store: Store
) -> None:
    (workspace / "sub").mkdir()
    write_workflow(
        workspace,
        "envcheck",
        """
        stages:
          - name: show
            env: {FOO: bar baz}
            cwd: sub
            run: echo "sid=$VC_SESSION_ID stage=$VC_STAGE attempt=$VC_ATTEMPT foo=$FOO pwd=$PWD"
    """,
    )
    result = vc("flow", "run", "envcheck")
    assert result.returncode == 0, result.stderr
    sid = newest_session(store)
    texts = [r.text for r in store.logs(sid, stage="show")]
    assert f"sid={sid} stage=show attempt=1 foo=bar baz pwd={workspace / 'sub'}" in texts


@sqlite_only
def test_needs_decide_the_order_of_stages(workspace: Path, vc: Vc, store: Store) -> None:
    write_workflow(
        workspace,
        "ordered",
        """
        stages:
          - {name: c, needs: [b], run: echo c >> order.txt}
          - {name: b, needs: [a], run: echo b >> order.txt}
          - {name: a, run: echo a >> order.txt}
    """,
    )
    assert vc("flow", "run", "ordered").returncode == 0
    assert (workspace / "order.txt").read_text().split() == ["a", "b", "c"]


def test_a_stages_output_comes_after_its_attempt_line_in_the_store_and_the_file(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "eager", "stages:\n  - {name: eager, run: seq 1 200}\n")
    assert vc("flow", "run", "eager").returncode == 0
    sid = newest_session(store)
    texts = [r.text for r in store.logs(sid, stage="eager")]
    attempt = next(i for i, t in enumerate(texts) if t.startswith("attempt 1 (pid "))
    assert texts[attempt + 1 : attempt + 201] == [str(i) for i in range(1, 201)]
    lines = log_file(workspace, sid).read_text().splitlines()
    attempt = next(i for i, line in enumerate(lines) if "| attempt 1 (pid " in line)
    assert [line.rsplit(" | ", 1)[1] for line in lines[attempt + 1 : attempt + 201]] == [
        str(i) for i in range(1, 201)
    ]


def test_progress_lines_set_stage_progress(workspace: Path, vc: Vc, store: Store) -> None:
    write_workflow(
        workspace,
        "prog",
        """
        stages:
          - name: work
            run: |
              echo "::progress 2/5"
              while [ ! -e go1 ]; do sleep 0.02; done
              echo "::progress 90"
              echo "real output"
              while [ ! -e go2 ]; do sleep 0.02; done
    """,
    )
    sid = start_detached(vc, "prog")
    wait_until(lambda: store.stage(sid, "work").progress == 40.0, what="progress 40")
    assert store.view(sid).progress == 40.0
    (workspace / "go1").touch()
    wait_until(lambda: store.stage(sid, "work").progress == 90.0, what="progress 90")
    (workspace / "go2").touch()
    store.wait_status(sid, "COMPLETED")
    texts = [r.text for r in store.logs(sid, stage="work")]
    assert "real output" in texts
    assert not [t for t in texts if t.startswith("::progress")]  # shown as the bar only


# ---- pause, resume, abort -----------------------------------------------------------------------


def test_pause_stops_the_stage_and_resume_continues_where_it_was(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "slow")
    pid = store.wait_stage(sid, "spin", "ACTIVE", with_pid=True).pid
    assert pid is not None
    wait_until(lambda: utime(pid) > 0, what="the stage to use CPU")

    assert vc("flow", "session", "pause", sid).returncode == 0
    paused_at = time.monotonic()
    wait_until(lambda: proc_state(pid) == "T", timeout=5, interval=0.005, what="state T")
    enforced = time.monotonic() - paused_at
    assert enforced < 1.0  # the runner polls at most 100 ms apart while a stage runs
    # The runner records the stage PAUSED right after the signal has taken effect.
    wait_until(lambda: store.stage(sid, "spin").status == "PAUSED", timeout=1, what="PAUSED")
    before = utime(pid)
    time.sleep(0.3)
    assert utime(pid) == before  # a paused stage holds no CPU
    assert proc_state(pid) == "T"

    assert vc("flow", "session", "resume", sid).returncode == 0
    wait_until(lambda: proc_state(pid) != "T", timeout=5, what="SIGCONT")
    wait_until(lambda: utime(pid) > before, timeout=5, what="CPU use again")
    stage = store.stage_row(sid, "spin")
    assert (stage.status, stage.attempt, stage.pid) == ("ACTIVE", 1, pid)  # same process
    assert [r.text for r in store.logs(sid, stage="spin")].count("started") == 1


def test_abort_kills_the_whole_process_group_including_grandchildren(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "tree",
        """
        stages:
          - name: tree
            run: |
              sleep 60 & echo $! > child.pid
              (sleep 60 & echo $! > grandchild.pid; wait) &
              wait
    """,
    )
    sid = start_detached(vc, "tree")
    main = store.wait_stage(sid, "tree", "ACTIVE", with_pid=True).pid
    assert main is not None
    child, grandchild = read_pid(workspace / "child.pid"), read_pid(workspace / "grandchild.pid")
    assert os.getpgid(grandchild) == main  # all in the stage's own process group

    assert vc("flow", "session", "abort", sid).returncode == 0
    for pid in (main, child, grandchild):
        wait_until(partial(gone, pid), timeout=5, what=f"pid {pid} gone")
    view = store.view(sid)
    assert (view.status, view.reason) == ("FAILED", "aborted")
    # The runner records the exit code after it has reaped the group: just after the pids go.
    wait_until(lambda: store.view(sid).runner_pid is None, timeout=5, what="runner released")
    row = store.stage_row(sid, "tree")
    assert (row.status, row.error, row.exit_code) == ("FAILED", "aborted", -signal.SIGTERM)


@sqlite_only
def test_stage_ignoring_sigterm_is_killed_after_kill_timeout(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "stubborn",
        """
        stages:
          - name: stubborn
            kill_timeout: 1
            run: |
              trap '' TERM
              echo $$ > stubborn.pid
              while :; do sleep 0.05; done
    """,
    )
    sid = start_detached(vc, "stubborn")
    pid = read_pid(workspace / "stubborn.pid")
    store.wait_stage(sid, "stubborn", "ACTIVE", with_pid=True)
    assert vc("flow", "session", "abort", sid).returncode == 0
    time.sleep(0.3)
    assert not gone(pid)  # SIGTERM is ignored ...
    wait_until(lambda: gone(pid), timeout=5, interval=0.005, what="SIGKILL")
    killed_at = time.time()
    with store.factory() as db:
        aborted_at = [e.at for e in list_events(db, sid) if e.op == "abort"][-1]
    assert killed_at - aborted_at >= 1.0  # ... until kill_timeout (1 s) has passed
    wait_until(
        lambda: store.stage(sid, "stubborn").exit_code == -signal.SIGKILL,
        timeout=5,
        what="exit code -9 recorded",
    )


@sqlite_only
def test_timeout_fails_the_stage_and_session_with_reason_timeout(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "late",
        """
        stages:
          - {name: late, timeout: 0.5, run: sleep 30}
          - {name: never, run: echo never}
    """,
    )
    started = time.monotonic()
    result = vc("flow", "run", "late")
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert "timeout" in result.stderr
    view = store.view(newest_session(store))
    assert (view.status, view.reason) == ("FAILED", "timeout")
    late, never = view.stages
    assert (late.status, late.error, late.exit_code) == ("FAILED", "timeout", -signal.SIGTERM)
    assert never.status == "PENDING"


def test_retries_run_a_failing_stage_again_as_new_attempts(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "flaky",
        """
        stages:
          - name: flaky
            retries: 3
            run: echo $VC_ATTEMPT >> attempts.txt; [ "$VC_ATTEMPT" -ge 3 ]
    """,
    )
    result = vc("flow", "run", "flaky")
    assert result.returncode == 0, result.stderr
    assert (workspace / "attempts.txt").read_text().split() == ["1", "2", "3"]
    stage = store.stage(newest_session(store), "flaky")
    assert (stage.status, stage.attempt, stage.exit_code) == ("COMPLETED", 3, 0)


# on PostgreSQL: test_retries_run_a_failing_stage_again_as_new_attempts
@covered_on_postgresql_by_another
def test_retries_exhausted_fail_the_session_with_the_last_exit_code(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "hopeless",
        """
        stages:
          - {name: hopeless, retries: 1, run: exit 5}
    """,
    )
    result = vc("flow", "run", "hopeless")
    assert result.returncode == 1
    view = store.view(newest_session(store))
    stage = view.stages[0]
    assert (stage.status, stage.attempt, stage.exit_code) == ("FAILED", 2, 5)
    assert view.status == "FAILED" and view.reason == "stage hopeless failed: exit code 5"


def test_manual_gate_pauses_waiting_and_resume_completes_it(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "gate")
    view = store.wait_status(sid, "PAUSED")
    assert view.reason == "waiting: approve"
    assert [(s.name, s.status) for s in view.stages] == [
        ("build", "COMPLETED"),
        ("approve", "PAUSED"),
        ("deploy", "PENDING"),
    ]
    runner = view.runner_pid
    assert runner is not None and not view.orphaned  # its runner waits for the resume

    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0 and "runner started" not in result.stdout
    view = store.wait_status(sid, "COMPLETED")
    assert [s.status for s in view.stages] == ["COMPLETED"] * 3
    assert "deployed" in [r.text for r in store.logs(sid, stage="deploy")]


@covered_on_postgresql_by_another
def test_a_waiting_gate_shows_its_checklist_in_the_log_show_and_status(
    vc: Vc, store: Store
) -> None:
    sid = start_detached(vc, "gate")
    store.wait_status(sid, "PAUSED")
    waiting = wait_until(
        lambda: [r.text for r in store.logs(sid, stage="approve") if "waiting" in r.text],
        what="the gate's waiting line in the store",
    )[0]
    assert waiting == (
        f"manual gate approve: waiting for 'vc flow session resume {sid[:12]}'; "
        "checklist: changelog reviewed"
    )
    assert "checklist: changelog reviewed" in vc("flow", "session", "show", sid).stdout
    assert "check    changelog reviewed" in vc("flow", "status", sid).stdout
    stages = session_json(vc, "flow", "session", "show", sid)["stages"]
    assert [s["checklist"] for s in stages] == [[], ["changelog reviewed"], []]
    vc("flow", "session", "abort", sid)


@covered_on_postgresql_by_another
def test_run_off_a_terminal_prints_a_line_per_stage_start_and_outcome(
    workspace: Path, store: Store
) -> None:
    write_workflow(
        workspace,
        "retried",
        """
        stages:
          - {name: first, run: echo one}
          - {name: flaky, run: "test -e again || { touch again; exit 3; }", retries: 1}
    """,
    )
    proc = start_foreground("retried", "--name", "nightly run")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    sid = newest_session(store)
    assert err.splitlines()[0] == f"session {sid} (SIGINT or SIGTERM pauses it)"
    lines = [line.split(" ", 1)[1] for line in err.splitlines()[1:]]  # without the time
    assert lines == [
        "first: started",
        "first: stage completed (attempt 1)",
        "flaky: started",
        "flaky: attempt 1 failed: exit code 3; retrying (1 of 1 retries)",
        "flaky: stage completed (attempt 2)",
    ]
    assert out == f"COMPLETED: {sid[:12]} (nightly run)\n"  # the id and the name


@covered_on_postgresql_by_another
def test_run_off_a_terminal_says_started_before_a_stage_that_cannot_start_failed(
    workspace: Path, store: Store
) -> None:
    write_workflow(workspace, "nowhere", "stages:\n  - {name: bad, run: 'true', cwd: gone}\n")
    proc = start_foreground("nowhere")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line.split(" ", 1)[1] for line in err.splitlines()[1:-1]]  # time, error line
    assert lines == ["bad: started", f"bad: stage failed: cwd does not exist: {workspace}/gone"]


@pytest.mark.parametrize(
    "db_url",
    [
        "sqlite",
        "postgresql",
    ],
    indirect=True,
)
def test_idle_runner_uses_less_than_one_percent_cpu(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "gate")
    view = store.wait_status(sid, "PAUSED")
    runner = view.runner_pid
    assert runner is not None
    time.sleep(1.0)  # let it settle into its idle poll (start-up work, LISTEN connection)
    before, started = cpu_ns(runner), time.monotonic()
    time.sleep(3.0)
    used = (cpu_ns(runner) - before) / 1e9 / (time.monotonic() - started)
    assert used < 0.01, f"idle runner used {used:.2%} CPU"


# on PostgreSQL: test_manual_gate_pauses_waiting_and_resume_completes_it (a runner waiting,
#   paused)
@covered_on_postgresql_by_another
def test_pause_between_stages_holds_the_next_stage_until_resume(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """`WORKFLOW:STAGE` runs that stage only and leaves the session PAUSED (not ACTIVE
    without a runner): resume starts a runner that carries on with the next stage."""
    write_workflow(
        workspace,
        "two",
        """
        stages:
          - {name: one, run: echo one >> runs.txt}
          - {name: two, run: echo two >> runs.txt}
    """,
    )
    result = vc("flow", "run", "two:one")
    assert result.returncode == 0, result.stderr
    sid = newest_session(store)
    view = store.view(sid)
    assert view.status == "PAUSED" and view.runner_pid is None and not view.orphaned
    assert view.reason == "ran one only: resume to run the rest"
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0 and "runner started" in result.stdout
    view = store.wait_status(sid, "COMPLETED")
    assert (workspace / "runs.txt").read_text().split() == ["one", "two"]
    assert [s.attempt for s in view.stages] == [1, 1]


# on PostgreSQL: test_manual_gate_pauses_waiting_and_resume_completes_it (a runner waiting,
#   paused)
@covered_on_postgresql_by_another
def test_stage_that_exits_before_the_pause_signal_completes_and_the_next_waits(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The stage's main process is gone when the pause arrives (a background child still
    holds its output open, so the runner is still on that stage): nothing can be stopped,
    the stage is recorded COMPLETED from its exit code, and the next stage waits for the
    resume. The pause goes through the manager (what `vc flow session pause` calls) to fit
    in the stage's last second reliably."""
    write_workflow(
        workspace,
        "exits",
        """
        stages:
          - name: one
            run: echo $$ > one.pid; sleep 1.5 &
          - {name: two, run: echo two > two.txt}
    """,
    )
    sid = start_detached(vc, "exits")
    pid = read_pid(workspace / "one.pid")
    wait_until(lambda: gone(pid), timeout=5, what="stage one's main process exits")
    store.pause(sid)
    store.wait_stage(sid, "one", "COMPLETED", timeout=10)
    time.sleep(0.5)
    view = store.view(sid)
    assert view.status == "PAUSED"
    assert [(s.name, s.status, s.exit_code) for s in view.stages] == [
        ("one", "COMPLETED", 0),
        ("two", "PENDING", None),
    ]
    assert not (workspace / "two.txt").exists()
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED")
    assert (workspace / "two.txt").read_text().strip() == "two"


def test_abort_while_paused_kills_the_stopped_stage(vc: Vc, store: Store, nap: str) -> None:
    sid = start_detached(vc, nap)
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    assert pid is not None
    assert vc("flow", "session", "pause", sid).returncode == 0
    wait_until(lambda: proc_state(pid) == "T", timeout=5, what="state T")
    assert vc("flow", "session", "abort", sid).returncode == 0
    wait_until(lambda: gone(pid), timeout=5, what="the stopped stage to die")
    assert store.view(sid).reason == "aborted"


# ---- control from elsewhere, seen by the foreground run ------------------------------------------


def as_user(store: Store, op: str, sid: str) -> None:
    """`vc flow session OP` typed by user "ana" elsewhere (the event records her)."""
    with store.factory() as db:
        getattr(FlowSessionManager(db, actor="ana"), op)(sid)


def test_run_off_a_terminal_says_who_paused_resumed_and_aborted_it(store: Store, nap: str) -> None:
    proc = start_foreground("nap", "--name", "nightly run")
    try:
        sid = newest_session(store)
        store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
        as_user(store, "pause", sid)
        store.wait_stage(sid, "nap", "PAUSED")
        as_user(store, "resume", sid)
        store.wait_stage(sid, "nap", "ACTIVE")
        as_user(store, "abort", sid)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
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
def test_the_live_line_on_a_terminal_shows_who_paused_it(
    workspace: Path, store: Store, nap: str
) -> None:
    """It used to stay frozen on the last progress, as if the stage still ran."""
    import pty

    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.main", "flow", "run", "nap"],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        start_new_session=True,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}},
    )
    os.close(slave)
    seen = bytearray()

    def screen_has(text: str) -> bool:
        while select_ready(master):
            try:
                seen.extend(os.read(master, 65536))
            except OSError:
                break
        return text.encode() in seen

    try:
        sid = newest_session(store)
        store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
        as_user(store, "pause", sid)
        host = local_host()
        wait_until(lambda: screen_has(f"PAUSED by ana on {host}"), what="PAUSED on the line")
        assert screen_has(f"session paused by ana on {host}\r\n")  # and a line of its own
        as_user(store, "abort", sid)
        assert proc.wait(30) == 1
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)


def select_ready(fd: int) -> bool:
    import select

    return bool(select.select([fd], [], [], 0.05)[0])


# ---- Ctrl-C in the foreground ------------------------------------------------------------------


def _interrupt_foreground(store: Store) -> tuple[str, int, subprocess.Popen[str], str]:
    proc = start_foreground("nap")
    try:
        sid = newest_session(store)
        pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
        assert pid is not None
        os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends its foreground job
        _, stderr = proc.communicate(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
    return sid, pid, proc, stderr


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
    runner = store.view(sid).runner_pid
    assert runner is not None
    os.kill(runner, signal.SIGKILL)
    wait_until(lambda: gone(runner), timeout=5, what="the runner to die")
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
    dead = subprocess.Popen(["true"])
    dead.wait()
    with store.factory() as db:
        definition = find_workflow(workspace / "workflows", "ledger")
        sid = FlowSessionManager(db).create_session("ledger", definition=definition).id
        FlowSessionManager(db).start_session(sid, runner_host=local_host(), runner_pid=dead.pid)
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
    runner = store.view(sid).runner_pid
    assert runner is not None
    os.kill(runner, signal.SIGKILL)
    wait_until(lambda: store.view(sid).orphaned, timeout=5, what="orphaned")
    assert store.view(sid).status == "PAUSED"
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0 and "runner started" in result.stdout
    row = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True)
    assert row.attempt == 2 and row.pid != pid
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


# ---- output -------------------------------------------------------------------------------------


@sqlite_only
def test_logs_deleted_while_a_session_runs_are_created_again_and_the_store_says_so(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "gap",
        """
        stages:
          - name: one
            run: echo before; while [ ! -e go ]; do sleep 0.02; done; echo after
          - {name: two, run: echo two}
    """,
    )
    sid = start_detached(vc, "gap")
    path = log_file(workspace, sid)
    wait_until(lambda: path.exists() and "| one | before" in path.read_text(), what="before")
    shutil.rmtree(workspace / "logs")
    (workspace / "go").touch()
    store.wait_status(sid, "COMPLETED")
    lines = path.read_text().splitlines()
    note = (
        f"vc: the log file {path} was deleted while in use and is created again: the lines "
        "before this one are gone from it (the store has them)"
    )
    assert lines[0].endswith(f"| WARNING | workflow.session.operations | {sid} | - | {note}")
    assert any(line.endswith("| one | after") for line in lines)
    assert any(line.endswith("| two | two") for line in lines)
    warnings = [r.text for r in store.logs(sid) if r.level == "WARNING"]
    assert note.removeprefix("vc: ") in warnings
    assert (workspace / "logs" / "workflow" / "session" / "operations.log").exists()


# PostgreSQL takes the million rows about five times slower (~50 s, most of this file's
# PostgreSQL time): its rate is measured by tests/bench/bench_hosts.py instead.
@covered_on_postgresql_by_another
def test_a_million_output_lines_reach_the_log_file_and_the_store(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "big",
        """
        stages:
          - {name: lines, run: seq 1 1000000}
    """,
    )
    started = time.monotonic()
    result = vc("flow", "run", "big", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    sid = newest_session(store)
    assert store.count_output(sid, "lines") == 1_000_000
    with log_file(workspace, sid).open("rb") as fh:
        in_file = sum(1 for line in fh if b" | lines | " in line and b"stage.integration" in line)
    assert in_file == 1_000_000
    with store.factory() as db:
        last = read_logs(db, sid, stage="lines", limit=1, newest=True)
        tail = [r.text for r in read_logs(db, sid, stage="lines", limit=10, newest=True)]
    assert last and "1000000" in tail
    rate = 1_000_000 / elapsed
    print(f"\n1,000,000 lines stored in {elapsed:.2f}s (whole command): {rate:,.0f} lines/s")


def test_non_utf8_and_nul_bytes_are_kept_and_shown_safely(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "binary",
        r"""
        stages:
          - name: binary
            run: |
              printf 'bad \377\376 end\n'
              printf 'nul \000 here\n'
              printf 'esc \033[31mred\033[0m\n'
    """,
    )
    assert vc("flow", "run", "binary").returncode == 0
    sid = newest_session(store)
    texts = [r.text for r in store.logs(sid, stage="binary")]
    assert "bad \\xff\\xfe end" in texts and "nul \\x00 here" in texts
    shown = vc("flow", "session", "logs", sid, "--stage", "binary")
    assert shown.returncode == 0
    assert "bad \\xff\\xfe end" in shown.stdout and "nul \\x00 here" in shown.stdout
    assert "\x1b" not in shown.stdout and "esc red" in shown.stdout
    assert "bad \\xff\\xfe end" in log_file(workspace, sid).read_text()


@sqlite_only
def test_stage_closing_stdout_early_still_runs_to_completion(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "closer",
        """
        stages:
          - name: closer
            run: |
              echo before
              exec 1>&-
              sleep 0.3
              echo after-close >&2
    """,
    )
    assert vc("flow", "run", "closer").returncode == 0
    sid = newest_session(store)
    logs = [
        (r.level, r.text)
        for r in store.logs(sid, stage="closer")
        if r.category == "workflow.stage.integration"
    ]
    assert logs == [("INFO", "before"), ("WARNING", "after-close")]
    assert store.view(sid).status == "COMPLETED"


# ---- bad input ----------------------------------------------------------------------------------


@sqlite_only
def test_missing_command_records_exit_127_with_a_clear_reason(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "typo",
        """
        stages:
          - {name: typo, run: no-such-command-xyz --flag}
    """,
    )
    result = vc("flow", "run", "typo")
    assert result.returncode == 1
    assert "command not found" in result.stderr
    view = store.view(newest_session(store))
    stage = view.stages[0]
    assert (stage.status, stage.exit_code) == ("FAILED", 127)
    assert view.reason is not None and "command not found" in view.reason
    assert "no-such-command-xyz" in view.reason


@sqlite_only
def test_missing_cwd_fails_the_stage_with_a_clear_error(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "nowhere",
        """
        stages:
          - {name: nowhere, cwd: does/not/exist, run: echo never}
    """,
    )
    result = vc("flow", "run", "nowhere")
    assert result.returncode == 1
    missing = str(workspace / "does" / "not" / "exist")
    assert f"cwd does not exist: {missing}" in result.stderr
    stage = store.view(newest_session(store)).stages[0]
    assert stage.status == "FAILED" and stage.error == f"cwd does not exist: {missing}"


@covered_on_postgresql_by_another
def test_a_task_stage_without_run_fails_naming_what_is_missing(vc: Vc, store: Store) -> None:
    """A stage made through the API with no command: never the shell command `None`."""
    from app.runner.runner import NO_COMMAND

    with store.factory() as db:
        sid = FlowSessionManager(db).create_session("api-made").id
        StageManager(db).create_stage(sid, stage_type="task", config={"timeout": 3600})
    result = vc("flow", "run", "api-made", "--session", sid)
    assert result.returncode == 1
    assert NO_COMMAND in result.stderr
    assert "command not found" not in result.stderr
    view = store.view(sid)
    assert (view.status, view.stages[0].status) == ("FAILED", "FAILED")
    assert view.stages[0].error == NO_COMMAND
    assert view.reason == f"stage stage-1 failed: {NO_COMMAND}"
    assert not any("command not found" in r.text for r in store.logs(sid))


def test_run_on_a_completed_session_is_refused_and_mentions_retry(vc: Vc, store: Store) -> None:
    assert vc("flow", "run", "hello").returncode == 0
    sid = newest_session(store)
    result = vc("flow", "run", "hello", "--session", sid)
    assert result.returncode == 1
    assert "COMPLETED" in result.stderr and "retry" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert [s.attempt for s in store.view(sid).stages] == [1, 1, 1]


def test_run_of_a_stage_the_workflow_does_not_have_is_refused_and_creates_nothing(
    vc: Vc, store: Store
) -> None:
    result = vc("flow", "run", "hello:nostage")
    assert result.returncode == 1
    assert result.stderr == (
        "vc: error: workflow 'hello' has no stage 'nostage'; stages: count, done, greet\n"
    )
    assert json.loads(vc("flow", "session", "list", "--json").stdout) == []


def test_run_session_of_another_workflow_is_refused_and_runs_nothing(vc: Vc, store: Store) -> None:
    sid = vc("flow", "run", "hello", "--queue").stdout.strip()
    result = vc("flow", "run", "broken", "--session", sid)
    assert result.returncode == 1
    assert result.stderr == (
        f"vc: error: session {sid[:12]} belongs to workflow 'hello', not 'broken'\n"
    )
    assert store.view(sid).status == "PENDING"


@covered_on_postgresql_by_another
def test_a_queued_session_no_runner_holds_is_labelled_queued(vc: Vc, store: Store) -> None:
    sid = vc("flow", "run", "hello", "--queue").stdout.strip()
    assert f"{sid[:8]}  " in vc("flow", "session", "list").stdout
    assert "PENDING (queued)" in vc("flow", "session", "list").stdout
    show = vc("flow", "session", "show", sid).stdout.splitlines()
    assert "status:    PENDING (queued)" in show
    assert "runner:    none (queued: the next 'vc flow worker' claims it)" in show
    assert vc("flow", "status", sid).stdout.startswith(f"PENDING (queued)  {sid[:12]}")


@covered_on_postgresql_by_another
def test_a_stage_failure_is_logged_before_the_session_fails(vc: Vc, store: Store) -> None:
    assert vc("flow", "run", "broken").returncode == 1
    texts = [r.text for r in store.logs(newest_session(store))]
    stage_failed = texts.index("stage failed: exit code 3")
    session_failed = next(i for i, t in enumerate(texts) if t.startswith("fail ACTIVE -> FAILED"))
    assert stage_failed < session_failed


# on PostgreSQL: test_run_on_a_completed_session_is_refused_and_mentions_retry
@covered_on_postgresql_by_another
def test_run_on_a_failed_session_is_refused_and_says_to_retry(vc: Vc, store: Store) -> None:
    assert vc("flow", "run", "broken").returncode == 1
    sid = newest_session(store)
    result = vc("flow", "run", "broken", "--session", sid)
    assert result.returncode == 1
    assert f"vc flow session retry {sid[:12]}" in result.stderr


def test_retry_then_run_session_carries_on_without_rerunning_completed_stages(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "fixable",
        """
        stages:
          - {name: ok, run: echo ok >> runs.txt}
          - {name: bad, run: echo bad >> runs.txt; test -e fixed}
          - {name: last, run: echo last >> runs.txt}
    """,
    )
    assert vc("flow", "run", "fixable").returncode == 1
    sid = newest_session(store)
    (workspace / "fixed").touch()
    assert vc("flow", "session", "retry", sid).returncode == 0
    assert store.view(sid).status == "PENDING"
    result = vc("flow", "run", "fixable", "--session", sid)
    assert result.returncode == 0, result.stderr
    view = store.view(sid)
    assert view.status == "COMPLETED"
    assert [(s.name, s.attempt) for s in view.stages] == [("ok", 1), ("bad", 2), ("last", 1)]
    assert (workspace / "runs.txt").read_text().split() == ["ok", "bad", "bad", "last"]


def test_second_runner_is_refused_naming_host_and_pid(vc: Vc, store: Store, nap: str) -> None:
    sid = start_detached(vc, nap)
    view = store.view(sid)
    for extra in ((), ("--detach",)):
        result = vc("flow", "run", nap, "--session", sid, *extra)
        assert result.returncode == 1
        assert f"pid {view.runner_pid} on {view.runner_host}" in result.stderr
    assert store.view(sid).runner_pid == view.runner_pid  # the first runner keeps it
