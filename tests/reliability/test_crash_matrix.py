"""Part 1, the crash matrix: a runner killed with SIGKILL at points of a session's life.

Kill points (round robin over the trials, each with a random delay):

- ``before-start``: a random moment between spawning the runner and its first stage, or
  right after it claimed the session;
- ``stage-start``: just after a stage's process began (its first marker line);
- ``stage-end``: just after a stage's process wrote its last line and exits, i.e. around
  the window between the exit and the COMPLETED write (a workflow of many short stages);
- ``mid-stage``: while a long stage runs;
- ``log-burst``: while a stage prints tens of thousands of lines;
- ``pausing``: just after a pause was written (before or after the runner enforced it);
- ``aborting``: just after an abort was written.

Each stage appends ``begin|end STAGE ATTEMPT PID`` lines to a marker file of its session.
After the kill: ``PRAGMA integrity_check`` is ok and the session is orphaned or consistent.
Then it is recovered with the real CLI (``run --session``, ``session resume``, or ``retry``
then ``run --session`` for an aborted one) and must complete with: no stage that was
COMPLETED at the kill executed again, no stage skipped, stages in order, every log record
committed before the kill still there, the event history a valid path of the state machine.
Leftover stage processes (alive after the recovered session completed) are counted.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.processes import kill_with_guard
from tests.waiting import poll

from .harness import (
    PART_TIMEOUT,
    child_env,
    report,
    scale,
    session_processes,
    sqlite_integrity,
    vc,
)
from .replay import replay

KILL_POINTS = (
    "before-start",
    "stage-start",
    "stage-end",
    "mid-stage",
    "log-burst",
    "pausing",
    "aborting",
)
SHORT_STAGES = 8
BURST_LINES = 20000


def _stage(name: str, body: str, markers: Path) -> dict[str, Any]:
    script = (
        f'M="{markers}/$VC_SESSION_ID"\n'
        'echo "begin $VC_STAGE $VC_ATTEMPT $$" >> "$M"\n'
        f"{body}\n"
        'echo "end $VC_STAGE $VC_ATTEMPT $$" >> "$M"\n'
    )
    return {"name": name, "run": script, "kill_timeout": 2}


def _workflows(ws: Path, markers: Path) -> None:
    import yaml

    first_long = 'if [ "$VC_ATTEMPT" = 1 ]; then sleep 20; else sleep 0.05; fi'
    burst = (
        f'if [ "$VC_ATTEMPT" = 1 ]; then n={BURST_LINES}; else n=50; fi\n'
        'i=1; while [ $i -le $n ]; do echo "burst $VC_ATTEMPT $i"; i=$((i+1)); done\n'
        'if [ "$VC_ATTEMPT" = 1 ]; then sleep 20; fi'
    )
    flows = {
        "many": [_stage(f"s{i}", "sleep 0.03", markers) for i in range(1, SHORT_STAGES + 1)],
        "long": [
            _stage("s1", "sleep 0.02", markers),
            _stage("s2", first_long, markers),
            _stage("s3", "sleep 0.02", markers),
        ],
        "burst": [
            _stage("s1", "sleep 0.02", markers),
            _stage("s2", burst, markers),
            _stage("s3", "sleep 0.02", markers),
        ],
    }
    (ws / "workflows").mkdir(parents=True, exist_ok=True)
    for wid, stages in flows.items():
        (ws / "workflows" / f"{wid}.yaml").write_text(yaml.safe_dump({"stages": stages}))


WORKFLOW_OF = {
    "before-start": "many",
    "stage-start": "many",
    "stage-end": "many",
    "mid-stage": "long",
    "log-burst": "burst",
    "pausing": "long",
    "aborting": "long",
}


@dataclass
class Markers:
    path: Path

    def lines(self) -> list[tuple[str, str, int, int]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] in ("begin", "end"):
                out.append((parts[0], parts[1], int(parts[2]), int(parts[3])))
        return out

    def has(self, kind: str, stage: str, attempt: int | None = None) -> bool:
        return any(
            k == kind and s == stage and (attempt is None or a == attempt)
            for k, s, a, _ in self.lines()
        )


@dataclass
class Trial:
    index: int
    point: str
    seed: int
    sid: str = ""
    state_at_kill: str = ""
    problems: list[str] = field(default_factory=list)
    log_rows_at_kill: int = 0
    lost_logs: int = 0
    reruns_after_exit: int = 0
    leftovers: list[int] = field(default_factory=list)
    recovery: str = ""
    cli_calls: int = 0


class Matrix:
    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.markers = ws / "markers"
        self.markers.mkdir()
        _workflows(ws, self.markers)
        self.db_path = ws / ".vc" / "flow.db"
        self.url = f"sqlite:///{self.db_path}"
        self.env = {"VC_HOME": str(ws), "VC_STALE_AFTER": "15"}
        from store import get_session_factory, init_db

        self.engine = init_db(self.url)
        self.factory = get_session_factory(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- store access -----------------------------------------------------------------------

    def view(self, sid: str) -> Any:
        from store.queries import get_session_view

        with self.factory() as db:
            return get_session_view(db, sid)

    def events(self, sid: str) -> list[Any]:
        from store.queries import list_events

        with self.factory() as db:
            return list_events(db, sid)

    def logs(self, sid: str) -> list[tuple[int, str, str | None]]:
        from store.queries import read_logs

        with self.factory() as db:
            rows = read_logs(db, sid, limit=10_000_000)
        return [(r.id, r.text, r.stage) for r in rows]

    def create(self, workflow: str) -> str:
        from store import FlowSessionManager
        from store.workflows import find_workflow

        definition = find_workflow(self.ws / "workflows", workflow)
        with self.factory() as db:
            return (
                FlowSessionManager(db)
                .create_session(workflow, name=f"crash {workflow}", definition=definition)
                .id
            )

    def operate(self, op: str, sid: str) -> None:
        from store import FlowSessionManager

        with self.factory() as db:
            getattr(FlowSessionManager(db), op)(sid)

    # -- one trial --------------------------------------------------------------------------

    def spawn(self, sid: str) -> subprocess.Popen[bytes]:
        out = open(self.ws / f"runner-{sid[:8]}.out", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                [sys.executable, "-m", "app.runner", sid],
                cwd=str(self.ws),
                env=child_env(self.env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )
        finally:
            out.close()

    def run_trial(self, trial: Trial) -> None:
        rnd = random.Random(trial.seed)
        workflow = WORKFLOW_OF[trial.point]
        sid = trial.sid = self.create(workflow)
        marks = Markers(self.markers / sid)
        runner = self.spawn(sid)
        try:
            self._approach(trial.point, rnd, sid, marks, runner)
        finally:
            if runner.poll() is None:
                os.kill(runner.pid, signal.SIGKILL)
            runner.wait(10)
        self._after_kill(trial, sid, marks)
        if not trial.problems:
            self._recover(trial, rnd, sid, workflow)
        if not trial.problems:
            self._after_recovery(trial, sid, marks)

    def _approach(
        self, point: str, rnd: random.Random, sid: str, marks: Markers, runner: Any
    ) -> None:
        """Wait until the trial's kill point, plus its random delay (the caller kills)."""

        def claimed() -> bool:
            view = self.view(sid)
            return view is not None and view.runner_pid == runner.pid

        if point == "before-start":
            if rnd.random() < 0.5:
                time.sleep(rnd.uniform(0.0, 0.8))
            else:
                poll(claimed, 20, 0.005)
                time.sleep(rnd.uniform(0.0, 0.03))
        elif point in ("stage-start", "stage-end"):
            kind = "begin" if point == "stage-start" else "end"
            stage = f"s{rnd.randint(1, SHORT_STAGES)}"
            poll(lambda: marks.has(kind, stage, 1), 30, 0.002)
            time.sleep(rnd.uniform(0.0, 0.006 if kind == "begin" else 0.03))
        elif point in ("mid-stage", "log-burst"):
            poll(lambda: marks.has("begin", "s2", 1), 30, 0.005)
            time.sleep(rnd.uniform(0.05, 0.6))
        elif point in ("pausing", "aborting"):
            poll(lambda: marks.has("begin", "s2", 1), 30, 0.005)
            time.sleep(rnd.uniform(0.0, 0.2))
            self.operate("pause" if point == "pausing" else "abort", sid)
            time.sleep(rnd.uniform(0.0, 0.3))

    def _after_kill(self, trial: Trial, sid: str, marks: Markers) -> None:
        integrity = sqlite_integrity(self.db_path)
        if integrity != "ok":
            trial.problems.append(f"integrity_check after the kill: {integrity}")
        view = self.view(sid)
        trial.state_at_kill = view.status + (" orphaned" if view.orphaned else "")
        live_states = ("ACTIVE", "PAUSED")
        if view.status in live_states and view.runner_pid is not None and not view.orphaned:
            trial.problems.append(f"{view.status} with a dead runner is not orphaned")
        if view.status == "COMPLETED" and any(s.status != "COMPLETED" for s in view.stages):
            trial.problems.append("COMPLETED session with unfinished stages")
        running = [s.name for s in view.stages if s.status in ("ACTIVE", "PAUSED")]
        if len(running) > 1:
            trial.problems.append(f"several stages running at once: {running}")
        seen_open = False
        for s in view.stages:
            if s.status != "COMPLETED":
                seen_open = True
            elif seen_open:
                trial.problems.append(f"stage {s.name} COMPLETED after an unfinished one")
        self.completed_at_kill = {s.name: s.attempt for s in view.stages if s.status == "COMPLETED"}
        self.logs_at_kill = self.logs(sid)
        trial.log_rows_at_kill = len(self.logs_at_kill)
        problems = replay(
            self.events(sid),
            [s.name for s in view.stages],
            view.status,
            {s.name: s.status for s in view.stages},
        )
        trial.problems += [f"after the kill: {p}" for p in problems]
        # burst lines of the first attempt that reached the store: no hole
        numbers = [
            int(t.split()[2])
            for _i, t, st in self.logs_at_kill
            if st == "s2" and t.startswith("burst 1 ")
        ]
        if numbers and numbers != list(range(1, len(numbers) + 1)):
            missing = sorted(set(range(1, max(numbers) + 1)) - set(numbers))
            trial.problems.append(
                f"log lines missing before the last flushed one: {missing[:10]} "
                f"({len(missing)} lines)"
            )

    def _recover(self, trial: Trial, rnd: random.Random, sid: str, workflow: str) -> None:
        view = self.view(sid)
        steps: list[tuple[str, ...]] = []
        if view.status == "PENDING":
            steps = [("flow", "run", workflow, "--session", sid)]
        elif view.status == "ACTIVE":
            steps = (
                [("flow", "run", workflow, "--session", sid)]
                if rnd.random() < 0.5
                else [("flow", "session", "resume", sid)]
            )
        elif view.status == "PAUSED":
            steps = [("flow", "session", "resume", sid)]
        elif view.status == "FAILED":
            steps = [("flow", "session", "retry", sid), ("flow", "run", workflow, "--session", sid)]
        trial.recovery = " + ".join(s[1] if s[1] != "session" else s[2] for s in steps) or "-"
        for args in steps:
            trial.cli_calls += 1
            proc = vc(*args, env=self.env, cwd=self.ws, timeout=90)
            if proc.returncode != 0 or "Traceback" in proc.stderr:
                trial.problems.append(
                    f"'vc {' '.join(args[:3])}' exit {proc.returncode}: "
                    f"{proc.stderr.strip()[-400:]}"
                )
                return
        if not poll(lambda: self.view(sid).status in ("COMPLETED", "FAILED"), 60, 0.1):
            trial.problems.append(f"not finished 60 s after recovery: {self.view(sid).status}")

    def _after_recovery(self, trial: Trial, sid: str, marks: Markers) -> None:
        view = self.view(sid)
        if view.status != "COMPLETED":
            trial.problems.append(f"recovered session ended {view.status} ({view.reason})")
        integrity = sqlite_integrity(self.db_path)
        if integrity != "ok":
            trial.problems.append(f"integrity_check after recovery: {integrity}")
        lines = marks.lines()
        for name, attempt in self.completed_at_kill.items():
            again = [a for k, s, a, _ in lines if k == "begin" and s == name and a > attempt]
            if again:
                trial.problems.append(
                    f"stage {name} was COMPLETED (attempt {attempt}) at the kill and ran "
                    f"again (attempts {again})"
                )
        positions = []
        for s in view.stages:
            if s.status != "COMPLETED":
                trial.problems.append(f"stage {s.name} ended {s.status}")
                continue
            ends = [
                i
                for i, (k, n, a, _) in enumerate(lines)
                if k == "end" and n == s.name and a == s.attempt
            ]
            if not ends:
                trial.problems.append(
                    f"stage {s.name} is COMPLETED (attempt {s.attempt}) but never ran to "
                    "its end: skipped"
                )
                continue
            positions.append(ends[0])
            ended_before = [
                a for k, n, a, _ in lines if k == "end" and n == s.name and a < s.attempt
            ]
            trial.reruns_after_exit += bool(ended_before)
        if positions != sorted(positions):
            trial.problems.append("stages did not complete in order")
        after = {(i, t) for i, t, _s in self.logs(sid)}
        lost = [(i, t) for i, t, _s in self.logs_at_kill if (i, t) not in after]
        trial.lost_logs = len(lost)
        if lost:
            trial.problems.append(
                f"{len(lost)} log records committed before the kill are gone, e.g. {lost[:3]}"
            )
        problems = replay(
            self.events(sid),
            [s.name for s in view.stages],
            view.status,
            {s.name: s.status for s in view.stages},
        )
        trial.problems += [f"after recovery: {p}" for p in problems]
        log_file = self.ws / "logs" / "workflow" / "session" / f"{sid}.log"
        text = log_file.read_text(errors="replace") if log_file.exists() else ""
        for bad in ("Traceback", "runner crashed", "internal error"):
            if bad in text:
                i = text.index(bad)
                trial.problems.append(f"session log: {text[max(0, i - 200) : i + 300]!r}")
        poll(lambda: not session_processes(sid), 3, 0.05)
        trial.leftovers = session_processes(sid)
        for pid in trial.leftovers:
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture
def matrix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR", "VC_HOME"):
        monkeypatch.delenv(var, raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    result = Matrix(ws)
    yield result
    result.close()


@pytest.mark.timeout(PART_TIMEOUT)
def test_crash_matrix(matrix: Matrix) -> None:
    trials_n = scale(20, 200)
    base_seed = int(os.environ.get("VC_RELIABILITY_SEED", str(int(time.time()))))
    trials = [
        Trial(i, KILL_POINTS[i % len(KILL_POINTS)], base_seed * 1000 + i) for i in range(trials_n)
    ]
    start = time.monotonic()
    for trial in trials:
        try:
            matrix.run_trial(trial)
        except Exception as exc:  # a harness failure is a failure of the trial
            trial.problems.append(f"{type(exc).__name__}: {exc}")
    failed = [t for t in trials if t.problems]
    # an aborted session whose runner died before it enforced the abort keeps its stage
    # running: the reported bug of test_abort_then_runner_killed_leaves_no_stage_process,
    # counted here, not failed on; any other leftover fails
    known = [
        t
        for t in trials
        if t.leftovers and t.point == "aborting" and t.state_at_kill.startswith("FAILED")
    ]
    leftovers = [t for t in trials if t.leftovers and t not in known]
    report(
        "crash-matrix",
        trials=len(trials),
        operations=sum(t.cli_calls for t in trials),
        failures=len(failed),
        lost=sum(t.lost_logs for t in trials),
        log_rows_checked=sum(t.log_rows_at_kill for t in trials),
        reruns_after_exit=sum(t.reruns_after_exit for t in trials),
        leftover_processes=sum(len(t.leftovers) for t in leftovers),
        known_bug_leftovers=sum(len(t.leftovers) for t in known),
        seed=base_seed,
        seconds=round(time.monotonic() - start, 1),
    )
    detail = "\n".join(
        f"trial {t.index} [{t.point}] sid={t.sid[:12]} at-kill={t.state_at_kill} "
        f"recovery={t.recovery}: " + "; ".join(t.problems)
        for t in failed
    )
    assert not failed, f"{len(failed)} of {len(trials)} trials failed:\n{detail}"
    leftover_detail = "\n".join(
        f"trial {t.index} [{t.point}] at-kill={t.state_at_kill}: pids {t.leftovers}"
        for t in leftovers
    )
    assert not leftovers, f"stage processes left running after recovery:\n{leftover_detail}"


def _freeze_at_long_stage(matrix: Matrix) -> tuple[str, subprocess.Popen[bytes]]:
    sid = matrix.create("long")
    runner = matrix.spawn(sid)
    marks = Markers(matrix.markers / sid)
    assert poll(lambda: marks.has("begin", "s2", 1), 30, 0.005)
    time.sleep(0.2)  # the runner has recorded the stage's pid
    os.kill(runner.pid, signal.SIGSTOP)
    return sid, runner


def test_abort_then_runner_killed_leaves_no_stage_process(matrix: Matrix) -> None:
    """A runner frozen mid-stage, the session aborted, the runner killed: the aborted
    stage's process must not outlive the session's recovery (retry + run)."""
    sid, runner = _freeze_at_long_stage(matrix)
    matrix.operate("abort", sid)
    os.kill(runner.pid, signal.SIGKILL)
    runner.wait(10)
    assert matrix.view(sid).status == "FAILED"
    try:
        for args in (("flow", "session", "retry", sid), ("flow", "run", "long", "--session", sid)):
            proc = vc(*args, env=matrix.env, cwd=matrix.ws)
            assert proc.returncode == 0, proc.stderr
        assert matrix.view(sid).status == "COMPLETED"
        left = session_processes(sid)
        assert not left, f"stage processes of the aborted attempt still run: {left}"
    finally:
        for pid in session_processes(sid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass


def test_pause_then_runner_killed_resume_removes_stopped_group(matrix: Matrix) -> None:
    """The runner enforced a pause (SIGSTOP) and died with its guard: resume must remove
    the stopped group and run the stage again as a new attempt."""
    sid = matrix.create("long")
    runner = matrix.spawn(sid)
    marks = Markers(matrix.markers / sid)
    try:
        assert poll(lambda: marks.has("begin", "s2", 1), 30, 0.005)
        matrix.operate("pause", sid)
        assert poll(lambda: any(s.status == "PAUSED" for s in matrix.view(sid).stages), 5, 0.02)
        kill_with_guard(runner.pid)
        runner.wait(10)
        stopped = session_processes(sid)
        assert stopped, "the paused stage's processes should still exist (stopped)"
        proc = vc("flow", "session", "resume", sid, env=matrix.env, cwd=matrix.ws)
        assert proc.returncode == 0, proc.stderr
        assert poll(lambda: matrix.view(sid).status == "COMPLETED", 30, 0.1)
        assert poll(lambda: not session_processes(sid), 3, 0.05), session_processes(sid)
        s2 = next(s for s in matrix.view(sid).stages if s.name == "s2")
        assert s2.attempt == 2
    finally:
        for pid in session_processes(sid):
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
