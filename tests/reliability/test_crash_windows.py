"""Part 7, the crash windows: runners SIGKILLed at random moments and at the moments
where a crash hurts most, and the store filled up, each session then taken to its end.

Every stage keeps a ledger (``start|end STAGE ATTEMPT PID`` lines in a file of its
session) and prints numbered lines (``n STAGE ATTEMPT I``). On start it takes an
exclusive ``flock`` that its processes hold until the last of them is gone: a copy that
finds it taken writes ``double STAGE ATTEMPT PID``, so two copies of a stage alive at once
are caught however they came about. Stages ignore SIGPIPE, so a copy whose runner died
runs on as a real stage would (one that writes its own files, not only its output).

Windows aimed at (each trial picks one stage, and a variant at random):

- ``spawn``: after a stage's process is spawned and before its attempt is recorded. The
  precise variant holds the store's write lock from the moment the previous stage is
  recorded COMPLETED, so the runner spawns the stage and then waits to record it: the
  runner is killed as soon as the stage has started (a store that is slow for a moment
  makes the same window). The natural variant kills 0-10 ms after the previous stage's
  end. The chosen stage runs 2 s on its first attempt, longer than a takeover needs.
- ``end``: after a stage's last line: 0-30 ms after it, or the moment the store shows it
  COMPLETED, or while its COMPLETED write waits for the store's lock.
- ``pause``: after a pause was written, before or after it was enforced (SIGSTOP), the
  stage's process group sometimes killed too.
- ``twice``: two aimed kills in one session, the second in the runner that took over.
- ``random``: 1-3 kills at random moments of a session of mixed stages, sometimes with the
  stage's process group, sometimes after a pause.

After each kill: ``PRAGMA integrity_check`` is ok and every stage COMPLETED in the store
has all its numbered lines there, or notes saying how many are missing (the store outage
and full disk notes). Then ``vc flow session resume`` takes over, and at the end: the
session COMPLETED, no ``double`` in the ledger, no stage that was COMPLETED at a kill
started again, every stage's numbered lines of its last attempt in the store and in the
session log file, no process of the session left in /proc, integrity ok.

The full-disk trials run a stage that prints 20 MB on a workspace, or a store alone, on
an 8 MB tmpfs: the session must end within 5 s of that stage, FAILED with a reason that
says the disk is full, every line of the stage in the store or noted.

``VC_STRESS=1``: 200 trials per window, 100 random sessions, 10 full-disk trials.
``VC_RELIABILITY_SEED`` replays a run.
"""

from __future__ import annotations

import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import poll

from .harness import (
    PART_TIMEOUT,
    child_env,
    hold_sqlite_write_lock,
    release_sqlite_write_lock,
    report,
    scale,
    session_processes,
    sqlite_integrity,
    vc,
)
from .replay import replay

STAGES = 5
#: Numbered lines per stage attempt.
LINES = 60
NOTE = re.compile(r"^vc: (\d+) log line\(s\) are missing here")


def _stage(name: str, ledger: Path, body: str = "") -> dict[str, Any]:
    script = (
        f'L="{ledger}/$VC_SESSION_ID"\n'
        "trap '' PIPE\n"
        'exec 9>>"$L.$VC_STAGE.lock"\n'
        'flock -n 9 || echo "double $VC_STAGE $VC_ATTEMPT $$" >> "$L"\n'
        'echo "start $VC_STAGE $VC_ATTEMPT $$" >> "$L"\n'
        'if [ "$VC_ATTEMPT" = 1 ] && [ -e "$L.$VC_STAGE.slow" ]; then sleep 2; fi\n'
        f"{body}"
        f'i=1; while [ $i -le {LINES} ]; do echo "n $VC_STAGE $VC_ATTEMPT $i"; i=$((i+1)); done\n'
        "sleep 0.01\n"
        'echo "end $VC_STAGE $VC_ATTEMPT $$" >> "$L"\n'
    )
    return {"name": name, "run": script, "kill_timeout": 2}


def _workflows(ws: Path, ledger: Path) -> None:
    import yaml

    slow = 'for k in $(seq 1 20); do echo "tick $k"; sleep 0.04; done\n'
    burst = 'i=1; while [ $i -le 3000 ]; do echo "burst $i"; i=$((i+1)); done\n'
    flows = {
        "quick": [_stage(f"s{i}", ledger) for i in range(1, STAGES + 1)],
        "pausable": [
            _stage("s1", ledger),
            _stage("s2", ledger, slow),
            _stage("s3", ledger),
        ],
        "mixed": [
            _stage("s1", ledger),
            _stage("s2", ledger, burst),
            _stage("s3", ledger, slow),
            _stage("s4", ledger),
            _stage("s5", ledger, burst),
        ],
    }
    (ws / "workflows").mkdir(parents=True, exist_ok=True)
    for wid, stages in flows.items():
        (ws / "workflows" / f"{wid}.yaml").write_text(yaml.safe_dump({"stages": stages}))


@dataclass
class Ledger:
    path: Path

    def lines(self) -> list[tuple[str, str, int, int]]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        out = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) == 4 and parts[0] in ("start", "end", "double"):
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
    window: str
    seed: int
    variant: str = ""
    sid: str = ""
    kills: int = 0
    window_hits: int = 0
    problems: list[str] = field(default_factory=list)
    double_starts: int = 0
    missing_lines: int = 0
    noted_lines: int = 0
    reran_completed: int = 0
    leftovers: int = 0
    integrity_failures: int = 0


class Harness:
    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.ledger_dir = ws / "ledger"
        self.ledger_dir.mkdir()
        _workflows(ws, self.ledger_dir)
        self.db_path = ws / ".vc" / "flow.db"
        self.env = {"VC_HOME": str(ws), "VC_STALE_AFTER": "15"}
        from store import get_session_factory, init_db

        self.engine = init_db(f"sqlite:///{self.db_path}")
        self.factory = get_session_factory(self.engine)
        self.raw = sqlite3.connect(self.db_path, timeout=30, isolation_level=None)

    def close(self) -> None:
        self.raw.close()
        self.engine.dispose()

    # -- the store ----------------------------------------------------------------------------

    def view(self, sid: str) -> Any:
        from store.queries import get_session_view

        with self.factory() as db:
            return get_session_view(db, sid)

    def create(self, workflow: str) -> str:
        from store import FlowSessionManager
        from store.workflows import find_workflow

        definition = find_workflow(self.ws / "workflows", workflow)
        with self.factory() as db:
            return FlowSessionManager(db).create_session(workflow, definition=definition).id

    def operate(self, op: str, sid: str) -> None:
        from store import FlowSessionManager

        with self.factory() as db:
            getattr(FlowSessionManager(db), op)(sid)

    def stage_state(self, sid: str, stage: str) -> tuple[str, int] | None:
        """(status, attempt) of a stage, read with a bare query: cheap enough to poll
        every few microseconds."""
        row = self.raw.execute(
            "SELECT status, attempt FROM stage_instances WHERE session_id = ? AND name = ?",
            (sid, stage),
        ).fetchone()
        return None if row is None else (row[0], row[1])

    def hold_write_lock(self) -> bool:
        """Take the store's write lock (as a slow writer would hold it); False if the
        runner holds it at the moment and keeps it for longer than a few ms."""
        return hold_sqlite_write_lock(self.raw)

    def release_write_lock(self) -> None:
        release_sqlite_write_lock(self.raw)

    # -- runners ------------------------------------------------------------------------------

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

    def runner_pid(self, sid: str, not_pid: int | None = None) -> int | None:
        view = self.view(sid)
        pid = view.runner_pid if view is not None else None
        return pid if pid != not_pid else None

    def resume(self, trial: Trial, sid: str) -> int | None:
        """Take the session over with the real CLI; the new runner's pid (None if the
        session ended meanwhile)."""
        view = self.view(sid)
        if view.status in ("COMPLETED", "FAILED"):
            return None
        old = view.runner_pid
        steps = [("flow", "session", "resume", sid)]
        if view.status == "PENDING":  # never started: nothing to resume, only to run
            steps = [("flow", "run", view.workflow_id, "--session", sid, "--detach")]
        elif view.status == "PAUSED" and view.started_at is None:
            steps.append(("flow", "run", view.workflow_id, "--session", sid, "--detach"))
        for args in steps:
            proc = vc(*args, env=self.env, cwd=self.ws, timeout=90)
            if proc.returncode != 0 or "Traceback" in proc.stderr:
                trial.problems.append(
                    f"{' '.join(args[:3])}: exit {proc.returncode}: {proc.stderr.strip()[-300:]}"
                )
                return None
        poll(lambda: self.runner_pid(sid, old) is not None or self.ended(sid), 10, 0.005)
        pid = self.runner_pid(sid, old)
        if pid is None and not self.ended(sid):
            view = self.view(sid)
            trial.problems.append(
                f"no runner after {' + '.join(a[2] for a in steps)}: {view.status} "
                f"runner {view.runner_pid} (was {old}); {proc.stdout.strip()!r}"
            )
        return pid

    def ended(self, sid: str) -> bool:
        return self.view(sid).status in ("COMPLETED", "FAILED")

    # -- checks -------------------------------------------------------------------------------

    def store_lines(self, sid: str) -> tuple[dict[tuple[str, int], set[int]], dict[str, int]]:
        """Numbered lines in the store by (stage, attempt), and lines noted missing by
        stage."""
        from store.queries import read_logs

        with self.factory() as db:
            rows = read_logs(db, sid, limit=10_000_000)
        lines: dict[tuple[str, int], set[int]] = {}
        noted: dict[str, int] = {}
        for row in rows:
            if row.stage is None:
                continue
            match = NOTE.match(row.text)
            if match:
                noted[row.stage] = noted.get(row.stage, 0) + int(match.group(1))
                continue
            parts = row.text.split()
            if len(parts) == 4 and parts[0] == "n" and parts[1] == row.stage:
                lines.setdefault((parts[1], int(parts[2])), set()).add(int(parts[3]))
        return lines, noted

    def check_completed_lines(self, trial: Trial, sid: str, when: str) -> None:
        """Every COMPLETED stage has its numbered lines in the store, or notes for them."""
        view = self.view(sid)
        lines, noted = self.store_lines(sid)
        for stage in view.stages:
            if stage.status != "COMPLETED":
                continue
            have = lines.get((stage.name, stage.attempt), set())
            missing = LINES - len(have & set(range(1, LINES + 1)))
            accounted = min(missing, noted.get(stage.name, 0))
            trial.noted_lines += accounted
            if missing > accounted:
                trial.missing_lines += missing - accounted
                trial.problems.append(
                    f"{when}: {stage.name} COMPLETED (attempt {stage.attempt}) with "
                    f"{missing - accounted} numbered line(s) missing from the store, no note"
                )

    def check_integrity(self, trial: Trial, when: str) -> None:
        result = sqlite_integrity(self.db_path)
        if result != "ok":
            trial.integrity_failures += 1
            trial.problems.append(f"integrity_check {when}: {result}")

    def after_kill(self, trial: Trial, sid: str, runner: int) -> dict[str, int]:
        """Checks right after a kill; returns the stages COMPLETED at that moment."""
        trial.kills += 1
        poll(lambda: not _alive(runner), 5, 0.005)
        self.check_integrity(trial, f"after kill {trial.kills}")
        self.check_completed_lines(trial, sid, f"after kill {trial.kills}")
        view = self.view(sid)
        return {s.name: s.attempt for s in view.stages if s.status == "COMPLETED"}

    def finish(self, trial: Trial, sid: str, completed_at_kills: dict[str, int]) -> None:
        """Take the session to its end and check everything."""
        for _ in range(5):
            if not poll(lambda: self.ended(sid), 60, 0.02):
                trial.problems.append(f"not ended 60 s after its takeover: {self.view(sid).status}")
                return
            view = self.view(sid)
            if view.status == "COMPLETED":
                break
            trial.problems.append(f"ended {view.status} ({view.reason})")
            return
        view = self.view(sid)
        ledger = Ledger(self.ledger_dir / sid).lines()
        doubles = [line for line in ledger if line[0] == "double"]
        trial.double_starts += len(doubles)
        if doubles:
            trial.problems.append(f"stage copies alive at once: {doubles[:3]} in {ledger}")
        for name, attempt in completed_at_kills.items():
            again = [a for k, s, a, _ in ledger if k == "start" and s == name and a > attempt]
            if again:
                trial.reran_completed += 1
                trial.problems.append(f"{name} was COMPLETED at a kill and started again {again}")
        self.check_completed_lines(trial, sid, "at the end")
        text = (self.ws / "logs" / "workflow" / "session" / f"{sid}.log").read_text(
            "utf-8", "replace"
        )
        for stage in view.stages:
            wanted = [f"| {stage.name} | n {stage.name} {stage.attempt} {i}" for i in (1, LINES)]
            if not all(w in text for w in wanted):
                trial.problems.append(f"session log file lacks {stage.name}'s lines")
        for bad in ("Traceback", "runner crashed"):
            if bad in text:
                i = text.index(bad)
                trial.problems.append(f"session log: {text[max(0, i - 200) : i + 300]!r}")
        problems = replay(
            _events(self, sid),
            [s.name for s in view.stages],
            view.status,
            {s.name: s.status for s in view.stages},
        )
        trial.problems += [f"history: {p}" for p in problems]
        self.check_integrity(trial, "at the end")
        poll(lambda: not session_processes(sid), 5, 0.05)
        left = session_processes(sid)
        trial.leftovers += len(left)
        if left:
            trial.problems.append(f"processes of the session left: {left}")
            for pid in left:
                _kill(pid)

    # -- windows ------------------------------------------------------------------------------

    def aim(
        self, trial: Trial, rnd: random.Random, sid: str, runner: int, window: str, k: int
    ) -> None:
        """Wait for the window at stage ``k`` and kill ``runner`` in it."""
        ledger = Ledger(self.ledger_dir / sid)
        if window == "spawn":
            target, before = f"s{k}", f"s{k - 1}"
            started = self.attempts_started(sid, target)
            if rnd.random() < 0.6:
                trial.variant = _join(trial.variant, "spawn-held")
                poll(lambda: (self.stage_state(sid, before) or ("",))[0] == "COMPLETED", 30, 0)
                held = self.hold_write_lock()
                try:
                    poll(lambda: len(self.attempts_started(sid, target)) > len(started), 5, 0)
                    time.sleep(rnd.uniform(0, 0.003))
                    _kill(runner)
                finally:
                    self.release_write_lock()
                trial.variant += "" if held else "(lock missed)"
            else:
                trial.variant = _join(trial.variant, "spawn-natural")
                poll(lambda: ledger.has("end", before), 30, 0.0005)
                time.sleep(rnd.uniform(0, 0.010))
                _kill(runner)
            state = self.stage_state(sid, target)
            alive = [p for p in session_processes(sid) if _stage_of(p) == target]
            if state is not None and state[0] == "PENDING" and alive:
                trial.window_hits += 1
        elif window == "end":
            target = f"s{k}"
            variant = rnd.choice(("end-natural", "end-completed", "end-held"))
            trial.variant = _join(trial.variant, variant)
            if variant == "end-completed":
                poll(lambda: (self.stage_state(sid, target) or ("",))[0] == "COMPLETED", 30, 0)
                _kill(runner)
                trial.window_hits += 1
            else:
                poll(lambda: ledger.has("end", target), 30, 0.0005)
                if variant == "end-held":
                    held = self.hold_write_lock()
                    try:
                        time.sleep(rnd.uniform(0, 0.02))
                        _kill(runner)
                    finally:
                        self.release_write_lock()
                    state = self.stage_state(sid, target)
                    trial.window_hits += int(held and state is not None and state[0] == "ACTIVE")
                else:
                    time.sleep(rnd.uniform(0, 0.03))
                    _kill(runner)
        elif window == "pause":
            poll(lambda: ledger.has("start", "s2"), 30, 0.002)
            time.sleep(rnd.uniform(0.0, 0.5))
            self.operate("pause", sid)
            enforced = rnd.random() < 0.5
            if enforced:
                poll(lambda: any(s.status == "PAUSED" for s in self.view(sid).stages), 5, 0.005)
            else:
                time.sleep(rnd.uniform(0, 0.05))
            with_group = rnd.random() < 0.3
            trial.variant = f"pause-{'enforced' if enforced else 'written'}" + (
                "-group" if with_group else ""
            )
            _kill(runner)
            if with_group:
                for pid in session_processes(sid):
                    _killpg(pid)
            trial.window_hits += 1
        else:
            raise ValueError(window)

    def attempts_started(self, sid: str, stage: str) -> list[int]:
        """Pids of the stage's processes that wrote their start line so far."""
        ledger = Ledger(self.ledger_dir / sid)
        return [p for k, s, _a, p in ledger.lines() if k == "start" and s == stage]

    def run_aimed(self, trial: Trial, windows: list[str]) -> None:
        """One session, a kill per window, each at a stage that has not started yet when
        it is chosen (before the runner that will run it). A stage aimed at runs 2 s on
        its first attempt: a spawn-window leftover outlives the takeover, and the runner
        that took over is still there to be killed."""
        rnd = random.Random(trial.seed)
        workflow = "pausable" if windows[0] == "pause" else "quick"
        sid = trial.sid = self.create(workflow)
        ledger = Ledger(self.ledger_dir / sid)

        def choose(i: int) -> int | None:
            started = [int(s[1:]) for k, s, _a, _p in ledger.lines() if k == "start"]
            low = max(2, max(started, default=0) + 1)
            high = STAGES - (len(windows) - 1 - i)
            if low > high:
                return None  # the kill before landed late: no stage left to aim at
            k = rnd.randint(low, high)
            (self.ledger_dir / f"{sid}.s{k}.slow").touch()
            return k

        k = choose(0)
        runner: int | None = self.spawn(sid).pid
        completed: dict[str, int] = {}
        for i, window in enumerate(windows):
            if k is None or runner is None:
                break
            self.aim(trial, rnd, sid, runner, window, k)
            completed.update(self.after_kill(trial, sid, runner))
            if trial.problems:
                return
            k = choose(i + 1) if i + 1 < len(windows) else None
            runner = self.resume(trial, sid)
        self.finish(trial, sid, completed)

    def run_random(self, trial: Trial) -> None:
        rnd = random.Random(trial.seed)
        sid = trial.sid = self.create("mixed")
        runner: int | None = self.spawn(sid).pid
        completed: dict[str, int] = {}
        for _ in range(rnd.randint(1, 3)):
            if runner is None:
                break
            time.sleep(rnd.uniform(0.0, 1.2))
            if self.ended(sid):
                break
            paused = rnd.random() < 0.2
            if paused:
                self.operate("pause", sid)
                time.sleep(rnd.uniform(0, 0.3))
            _kill(runner)
            if rnd.random() < 0.3:
                for pid in session_processes(sid):
                    _killpg(pid)
            trial.variant += "p" if paused else "k"
            completed.update(self.after_kill(trial, sid, runner))
            if trial.problems:
                return
            runner = self.resume(trial, sid)
        self.finish(trial, sid, completed)


def _join(done: str, variant: str) -> str:
    return f"{done}+{variant}" if done else variant


def _events(harness: Harness, sid: str) -> list[Any]:
    from store.queries import list_events

    with harness.factory() as db:
        return list_events(db, sid)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat = fh.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] not in (b"Z", b"X")


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def _killpg(pid: int) -> None:
    try:
        os.killpg(os.getpgid(pid), signal.SIGKILL)
    except OSError:
        pass


def _stage_of(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            for item in fh.read().split(b"\0"):
                if item.startswith(b"VC_STAGE="):
                    return item[9:].decode()
    except OSError:
        return None
    return None


@pytest.fixture
def harness(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR", "VC_HOME"):
        monkeypatch.delenv(var, raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    result = Harness(ws)
    yield result
    result.close()


def _seed() -> int:
    return int(os.environ.get("VC_RELIABILITY_SEED", str(int(time.time()))))


def _run(part: str, trials: list[Trial], run: Callable[[Trial], None], **extra: Any) -> list[Trial]:
    start = time.monotonic()
    for trial in trials:
        try:
            run(trial)
        except Exception as exc:  # a harness failure is a failure of the trial
            trial.problems.append(f"{type(exc).__name__}: {exc}")
    variants: dict[str, int] = {}
    for t in trials:
        variants[t.variant] = variants.get(t.variant, 0) + 1
    failed = [t for t in trials if t.problems]
    report(
        part,
        trials=len(trials),
        kills=sum(t.kills for t in trials),
        window_hits=sum(t.window_hits for t in trials),
        failures=len(failed),
        double_starts=sum(t.double_starts for t in trials),
        missing_store_lines=sum(t.missing_lines for t in trials),
        noted_lines=sum(t.noted_lines for t in trials),
        reran_completed=sum(t.reran_completed for t in trials),
        leftover_processes=sum(t.leftovers for t in trials),
        integrity_failures=sum(t.integrity_failures for t in trials),
        **extra,
        variants="/".join(f"{k}:{v}" for k, v in sorted(variants.items())),
        seconds=round(time.monotonic() - start, 1),
    )
    detail = "\n".join(
        f"trial {t.index} [{t.window} {t.variant}] sid={t.sid[:12]}: " + "; ".join(t.problems)
        for t in failed
    )
    assert not failed, f"{len(failed)} of {len(trials)} trials failed:\n{detail}"
    return trials


@pytest.mark.timeout(PART_TIMEOUT)
@pytest.mark.parametrize("window", ["spawn", "end", "pause", "twice"])
def test_kills_aimed_at_a_crash_window(harness: Harness, window: str) -> None:
    seed = _seed()
    count = scale(1 if window in ("twice", "pause") else 2, 200)
    trials = [Trial(i, window, seed * 1000 + i) for i in range(count)]

    def run(trial: Trial) -> None:
        rnd = random.Random(trial.seed)
        windows = (
            [rnd.choice(["spawn", "end"]) for _ in range(2)] if window == "twice" else [window]
        )
        harness.run_aimed(trial, windows)

    _run(f"crash-windows-{window}", trials, run, seed=seed)


@pytest.mark.timeout(PART_TIMEOUT)
def test_kills_at_random_moments(harness: Harness) -> None:
    seed = _seed()
    trials = [Trial(i, "random", seed * 1000 + i) for i in range(scale(2, 100))]
    _run("crash-windows-random", trials, harness.run_random, seed=seed)


# -- a full disk ---------------------------------------------------------------------------------

FULL_DISK_LINES = 100_000
FULL_DISK_WORKFLOW = f"""
stages:
  - {{name: first, run: echo first}}
  - name: big
    run: python3 -c "[print(f'line {{i}} ' + 'x' * 190) for i in range(1, {FULL_DISK_LINES + 1})]"
  - {{name: last, run: echo last}}
"""


@pytest.mark.timeout(PART_TIMEOUT)
def test_full_disk_trials(small_disk: Callable[[str], Path], tmp_path: Path) -> None:
    """A stage printing 20 MB on an 8 MB disk that holds the workspace (or the store
    alone): the session ends within 5 s of that stage, saying the disk is full."""
    trials = scale(2, 10)
    delays: list[float] = []
    problems: list[str] = []
    noted = 0
    start = time.monotonic()
    for i in range(trials):
        store_only = i % 2 == 1
        disk = small_disk("8m")
        ws = tmp_path / f"full{i}" if store_only else disk
        (ws / "workflows").mkdir(parents=True, exist_ok=True)
        (ws / "workflows" / "big.yaml").write_text(FULL_DISK_WORKFLOW)
        env = {"VC_HOME": str(ws)}
        db = disk / "flow.db" if store_only else ws / ".vc" / "flow.db"
        if store_only:
            env["VC_DATABASE_URL"] = f"sqlite:///{db}"
        proc = vc("flow", "run", "big", env=env, cwd=ws, timeout=120)
        last = (proc.stderr.strip().splitlines() or [""])[-1]
        conn = sqlite3.connect(db)
        try:
            status, reason, finished = conn.execute(
                "SELECT status, reason, finished_at FROM flow_sessions"
            ).fetchone()
            big_end = conn.execute(
                "SELECT finished_at FROM stage_instances WHERE name = 'big'"
            ).fetchone()[0]
            rows = conn.execute("SELECT text FROM log_records WHERE stage = 'big'").fetchall()
            integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
        finally:
            conn.close()
        stored = sum(1 for (text,) in rows if text.startswith("line "))
        trial_noted = sum(int(m.group(1)) for (text,) in rows if (m := NOTE.match(text)))
        noted += trial_noted
        what = f"trial {i} ({'store' if store_only else 'workspace'} full)"
        if proc.returncode != 1 or "is full" not in last:
            problems.append(f"{what}: exit {proc.returncode}, last line {last!r}")
        if status != "FAILED" or "is full" not in (reason or ""):
            problems.append(f"{what}: {status} ({reason})")
        if finished is None or big_end is None:
            problems.append(f"{what}: not ended")
        else:
            delays.append(finished - big_end)
            if finished - big_end >= 5.0:
                problems.append(f"{what}: ended {finished - big_end:.1f} s after its stage")
        if stored + trial_noted < FULL_DISK_LINES:
            problems.append(f"{what}: {FULL_DISK_LINES - stored - trial_noted} lines unaccounted")
        if integrity != "ok":
            problems.append(f"{what}: integrity {integrity}")
    report(
        "crash-windows-full-disk",
        trials=trials,
        failures=len(problems),
        max_seconds_to_end=round(max(delays, default=0.0), 2),
        noted_lines=noted,
        seconds=round(time.monotonic() - start, 1),
    )
    assert not problems, "\n".join(problems)
