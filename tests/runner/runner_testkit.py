"""What the runner's end-to-end tests share: the store as a test reads it, waits on real
processes (/proc), starting `vc flow run` detached or in the foreground, and the clean-up
that leaves no runner or stage of a test running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
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
    read_logs,
)
from tests.processes import kill_with_guard
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
            return read_logs(db, sid, stages=[stage] if stage else None, limit=100_000)

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


def kill_runner(store: Store, sid: str, *, with_guard: bool = True) -> int:
    """SIGKILL the session's runner and wait until it is gone; its pid.

    With its guard first (the default): its stage processes then run on, as after a kill
    of both or a reboot half done, for the tests of what a takeover or a command does with
    them. ``with_guard=False`` kills the runner alone, whose guard then stops them."""
    runner = store.view(sid).runner_pid
    assert runner is not None
    if with_guard:
        kill_with_guard(runner)
    else:
        os.kill(runner, signal.SIGKILL)
    wait_until(lambda: gone(runner), timeout=5, what="the runner to die")
    return runner


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


@contextmanager
def foreground(workflow: str, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """:func:`start_foreground`, killed on the way out if the test left it running."""
    proc = start_foreground(workflow, *extra)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()


@contextmanager
def killed_on_the_way_out(*pid_files: Path) -> Iterator[list[int]]:
    """The pids a stage wrote in these files (waited for), SIGKILLed on the way out if
    they are still there: a test that fails leaves no process behind."""
    pids = [read_pid(path) for path in pid_files]
    try:
        yield pids
    finally:
        for pid in pids:
            if not gone(pid):
                with suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def newest_session(store: Store) -> str:
    from store.queries import list_sessions

    def find() -> str | None:
        with store.factory() as db:
            views = list_sessions(db, limit=1)
        return views[0].id if views else None

    return wait_until(find, what="a session")


#: Three instances at once whose processes all ignore SIGTERM, each with a job of its own
#: (``set -m``) that cleared its environment: each writes ``pids.N`` (its pid and its job's).
STUBBORN_JOBS = """
    max_parallel: 3
    stages:
      - name: stubborn
        matrix: {n: [1, 2, 3]}
        kill_timeout: 3
        run: |
          trap '' TERM
          set -m
          env -i sh -c 'exec sleep 300' &
          echo $$ $! > pids.$VC_MATRIX_N
          sleep 300
"""


@contextmanager
def stubborn_jobs_left(workspace: Path, vc: Vc, store: Store) -> Iterator[tuple[str, list[int]]]:
    """:data:`STUBBORN_JOBS` running, then its runner and guard killed, as after a crash:
    the session and the pids of its stages and their jobs, all SIGKILLed on the way out."""
    write_workflow(workspace, "stubborn", STUBBORN_JOBS)
    sid = start_detached(vc, "stubborn")
    files = [workspace / f"pids.{n}" for n in (1, 2, 3)]
    wait_until(lambda: all(f.exists() and len(f.read_text().split()) == 2 for f in files))
    # A stage writes its pids before its runner records it (spawn, then record): killed in
    # between, with its guard, a stage is known by its environment only, which its env -i
    # job does not carry. Here each one is recorded first.
    wait_until(
        lambda: [(s.status, bool(s.pid)) for s in store.view(sid).stages] == [("ACTIVE", True)] * 3,
        what="every stage recorded with its pid",
    )
    pids = [int(pid) for f in files for pid in f.read_text().split()]
    try:
        kill_runner(store, sid)
        assert all(proc_state(pid) in ("S", "R") for pid in pids)
        yield sid, pids
    finally:
        for pid in pids:
            with suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        kill_session_processes(sid)
