"""Latency benchmarks of the commands people type and of a run's start and output (issue:
answer like a native tool). Each prints ratios against floors measured in the same run,
alternating subject and floor; none fails on speed.

* teardown: how long a process takes to end once `vc flow session list` has done its work
  (flushed, committed, closed), left the ordinary way (``sys.exit``: the interpreter's
  teardown) against ``app.quick_exit.leave`` (what the short commands do);
* control: `vc flow session pause ID` from the command's start until the stage's process is
  in state T (``/proc``), `resume` until it runs again, `abort` until it is gone; p50 and
  p95 over K rounds each, against ``python3 -c "import typer, sqlite3"`` (targets: p50
  <= 1.5x that floor plus the runner's poll interval, p95 <= 300 ms);
* flow run: `vc flow run` of 50 `true` stages, the whole command (start to exit), against
  Debian's task-spooler running the same 50 jobs (``tsp``; installed with apt-get when
  missing and allowed, see :func:`spooler`) and against a bash loop of 50 `/bin/true`
  (targets: <= 2.5x tsp, or <= 4x the loop);
* seq stage: `seq 1000000` as a stage, its own run time (start -> exit as recorded)
  against `seq 1000000 > file` timed inside the same shell (target <= 3x), with every
  line in the store and in the session log file, in order (checked).

Bytecode: the project's own .pyc files are written before anything is measured
(``compileall`` of app, store, widgets and vc_main, see :func:`tests.bench.common.precompile`):
the environment may set PYTHONDONTWRITEBYTECODE, which stops Python from writing them, not
from reading them, so every measured start loads bytecode as an installed `vc` does.

``--against DIR`` measures the `vc` of another checkout too (its own .pyc written the same
way), in the same rounds: old and new side by side.

Run: `python -m tests.bench.bench_latency [--small] [--against DIR]`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.common import (
    RUNNER_STACK,
    bench_workspace,
    check_runner_stack,
    precompile,
    report,
    runner_stack_import,
)

ROOT = Path(__file__).resolve().parents[2]


def _vc(tree: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """`vc ARGS…` of the checkout ``tree`` (``python -m app.main``, as the console script
    ends: with its own exit)."""
    return subprocess.run(
        [sys.executable, "-m", "app.main", *args],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=True,
    )


def _medians(subjects: dict[str, Callable[[], float]], rounds: int) -> dict[str, float]:
    """Each subject run once to warm up, then ``rounds`` times alternating; medians."""
    times: dict[str, list[float]] = {name: [] for name in subjects}
    for run in subjects.values():
        run()
    for _ in range(rounds):
        for name, run in subjects.items():
            times[name].append(run())
    return {name: statistics.median(values) for name, values in times.items()}


# -- teardown ---------------------------------------------------------------------------------

#: Runs `vc ARGS…` in-process (its work: parse, open the store, print, close), then stamps
#: the time and leaves one way or the other; the parent times the rest until the exit.
_TEARDOWN = """
import os, sys, time
sys.argv = ["vc", *sys.argv[2:]]
from vc_main import pin_own_packages
pin_own_packages()
from app.main import main
code = main(sys.argv[1:])
os.write(int(os.environ["BENCH_FD"]), repr(time.time()).encode())
if os.environ["BENCH_EXIT"] == "quick":
    from app.quick_exit import leave
    leave(code)
sys.exit(code)
"""


def teardown(rounds: int) -> tuple[float, float]:
    """Median seconds from the end of `vc flow session list`'s work to the process' end:
    (ordinary exit, quick exit)."""
    ws, env = bench_workspace({"one": "stages:\n  - name: a\n    run: 'true'\n"})
    for _ in range(3):
        _vc(ROOT, env, "flow", "run", "one")

    def leave_by(how: str) -> Callable[[], float]:
        def run() -> float:
            read, write = os.pipe()
            proc = subprocess.Popen(
                [sys.executable, "-c", _TEARDOWN, "x", "flow", "session", "list"],
                env={**env, "BENCH_EXIT": how, "BENCH_FD": str(write), "PYTHONPATH": str(ROOT)},
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stdin=subprocess.DEVNULL,
                pass_fds=(write,),
            )
            os.close(write)
            stamp = b""
            while chunk := os.read(read, 64):
                stamp += chunk
            os.close(read)
            proc.wait()
            ended = time.time()
            assert proc.returncode == 0 and stamp, proc.returncode
            return ended - float(stamp)

        return run

    got = _medians({"ordinary": leave_by("ordinary"), "quick": leave_by("quick")}, rounds)
    shutil.rmtree(ws, ignore_errors=True)
    return got["ordinary"], got["quick"]


# -- pause, resume, abort ------------------------------------------------------------------------


def _until(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError("the stage did not get there")
        time.sleep(0.0005)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def control(rounds: int, sessions: int) -> tuple[dict[str, list[float]], float]:
    """Seconds from each command's start until the stage's process shows it (pause: state
    T; resume: running again; abort: gone), over ``rounds`` pause/resume rounds on each of
    ``sessions`` sessions and one abort each; and the floor's median."""
    from tests.bench.common import proc_state

    ws, env = bench_workspace({"long": "stages:\n  - name: a\n    run: exec sleep 600\n"})
    env = {**env, "PYTHONPATH": str(ROOT)}
    got: dict[str, list[float]] = {"pause": [], "resume": [], "abort": []}
    floor: list[float] = []
    pid = 0

    def command(*args: str, until: Callable[[], bool]) -> float:
        started = time.perf_counter()
        proc = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "session", *args],
            env=env,
            cwd=ws,
            stdout=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        _until(until)
        took = time.perf_counter() - started
        if proc.wait() != 0:
            raise RuntimeError(f"vc flow session {' '.join(args)} failed")
        return took

    try:
        for _ in range(sessions):
            sid = _vc(ROOT, env, "flow", "run", "long", "--detach").stdout.split()[-1]

            def stage_pid(sid: str = sid) -> bool:
                nonlocal pid
                with sqlite3.connect(ws / ".vc" / "flow.db") as db:
                    row = db.execute(
                        "SELECT pid FROM stage_instances WHERE session_id = ? "
                        "AND status = 'ACTIVE'",
                        (sid,),
                    ).fetchone()
                pid = row[0] if row and row[0] and proc_state(row[0]) in ("S", "R") else 0
                return pid != 0

            _until(stage_pid)
            for _ in range(rounds):
                got["pause"].append(
                    command("pause", sid[:12], until=lambda: proc_state(pid) == "T")
                )
                got["resume"].append(
                    command("resume", sid[:12], until=lambda: proc_state(pid) in ("S", "R"))
                )
                started = time.perf_counter()
                subprocess.run([sys.executable, "-c", "import typer, sqlite3"], check=True)
                floor.append(time.perf_counter() - started)
            got["abort"].append(
                command("abort", sid[:12], until=lambda: proc_state(pid) in (None, "Z"))
            )
    finally:
        if pid and proc_state(pid) not in (None, "Z"):  # a round failed: leave nothing behind
            os.killpg(pid, signal.SIGKILL)
        shutil.rmtree(ws, ignore_errors=True)
    return got, statistics.median(floor)


# -- vc flow run of 50 `true` --------------------------------------------------------------------


def spooler(install: bool) -> str | None:
    """The task-spooler client (``tsp``, Debian's name; ``ts`` where it is not renamed),
    installed with apt-get when missing and ``install`` allows it (as root)."""
    found = shutil.which("tsp")
    if found is None and install and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "task-spooler"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=300,
            check=False,
        )
        found = shutil.which("tsp")
    if found is None:
        ts = shutil.which("ts")
        if ts is not None:
            usage = subprocess.run([ts, "-h"], capture_output=True, text=True, check=False)
            if "TS_SOCKET" in usage.stdout + usage.stderr:
                found = ts
    return found


def flow_run(
    stages: int, rounds: int, trees: dict[str, Path], install: bool
) -> tuple[dict[str, float], str | None]:
    """Median seconds of `vc flow run` of ``stages`` `true` stages (start to exit) per
    tree, of the bash loop and of task-spooler (if found)."""
    body = "\n".join(f'  - name: s{i}\n    run: "true"' for i in range(stages))
    ws, env = bench_workspace({"many": f"stages:\n{body}\n"})
    loop = f"for i in $(seq {stages}); do /bin/true; done"

    def timed(call: Callable[[], object]) -> float:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started

    subjects: dict[str, Callable[[], float]] = {}
    for label, tree in trees.items():

        def run_vc(tree: Path = tree) -> float:
            return timed(lambda: _vc(tree, env, "flow", "run", "many"))

        subjects[f"vc {label}"] = run_vc
    check_runner_stack(ROOT, env, "many")
    subjects["runner stack"] = lambda: runner_stack_import(env)
    subjects["bash loop"] = lambda: timed(lambda: subprocess.run(["bash", "-c", loop], check=True))
    tsp = spooler(install)
    spool = Path(tempfile.mkdtemp(prefix="vc-bench-tsp-"))
    tsp_env = {**os.environ, "TS_SOCKET": str(spool / "socket"), "TMPDIR": str(spool)}
    if tsp is not None:

        def run_tsp() -> float:
            def jobs() -> None:
                for _ in range(stages):
                    subprocess.run(
                        [tsp, "-n", "/bin/true"], env=tsp_env, stdout=subprocess.DEVNULL, check=True
                    )
                subprocess.run([tsp, "-w"], env=tsp_env, check=False)  # the last job's end

            took = timed(jobs)
            subprocess.run([tsp, "-C"], env=tsp_env, check=False)  # forget the finished jobs
            return took

        subjects["task-spooler"] = run_tsp
    try:
        got = _medians(subjects, rounds)
    finally:
        if tsp is not None:
            subprocess.run([tsp, "-K"], env=tsp_env, check=False, stderr=subprocess.DEVNULL)
        shutil.rmtree(spool, ignore_errors=True)
        shutil.rmtree(ws, ignore_errors=True)
    return got, tsp


# -- the start of a run ---------------------------------------------------------------------------


def run_start(stages: int, rounds: int, trees: dict[str, Path]) -> dict[str, float]:
    """Medians per tree, from the command's start: `vc flow run --queue` to its exit
    ("queue"), and a foreground run to its first stage's start ("first"); and the floor
    ``python3 -c "import typer, sqlite3"``."""
    body = "\n".join(f'  - name: s{i}\n    run: "true"' for i in range(stages))
    ws, env = bench_workspace({"many": f"stages:\n{body}\n"})
    store = ws / ".vc" / "flow.db"
    times: dict[str, list[float]] = {"floor": []}
    try:
        for tree in trees.values():
            _vc(tree, env, "flow", "run", "many", "--queue")  # the store exists, warm
        for _ in range(rounds):
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", "import typer, sqlite3"], check=True)
            times["floor"].append(time.perf_counter() - started)
            for label, tree in trees.items():
                started = time.perf_counter()
                _vc(tree, env, "flow", "run", "many", "--queue")
                times.setdefault(f"queue {label}", []).append(time.perf_counter() - started)
                began = time.time()
                sid = _vc(tree, env, "flow", "run", "many").stdout.split()[1]
                with sqlite3.connect(store) as db:
                    (first,) = db.execute(
                        "SELECT min(started_at) FROM stage_instances WHERE session_id LIKE ?",
                        (f"{sid}%",),
                    ).fetchone()
                times.setdefault(f"first {label}", []).append(first - began)
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    return {name: statistics.median(values) for name, values in times.items()}


# -- seq 1000000 as a stage ------------------------------------------------------------------------


def seq_stage(lines: int, rounds: int, trees: dict[str, Path]) -> dict[str, float]:
    """Median seconds of the stage's own run time per tree, and of the same command
    redirected to a file ("floor"). Every run's lines are checked in the store and in
    the session log file, complete and in order."""
    from sqlalchemy import text

    from store import get_session_factory, init_db
    from store.queries import get_session_view

    command = f"seq {lines}"
    ws, env = bench_workspace({"seq": f"stages:\n  - name: s\n    run: {command}\n"})
    engine = init_db(f"sqlite:///{ws / '.vc' / 'flow.db'}")
    factory = get_session_factory(engine)
    expected = [str(i) for i in range(1, lines + 1)]
    log_dir = ws / "logs" / "workflow" / "session"

    def checked(sid: str) -> float:
        with factory() as db:
            view = get_session_view(db, sid)
            stored = [
                row[0]
                for row in db.connection().execute(
                    text(
                        "SELECT text FROM log_records WHERE session_id = :sid AND stage = 's' "
                        "AND category = 'workflow.stage.integration' ORDER BY id"
                    ),
                    {"sid": sid},
                )
            ]
        assert view is not None and view.status == "COMPLETED", sid
        assert stored == expected, f"{len(stored)} of {lines} lines stored in order"
        logged = [
            line.rsplit(" | ", 1)[-1]
            for line in (log_dir / f"{sid}.log").read_text().splitlines()
            if " | workflow.stage.integration | " in line
        ]
        assert logged == expected, f"{len(logged)} of {lines} lines logged in order"
        stage = view.stages[0]
        assert stage.started_at is not None and stage.finished_at is not None
        return stage.finished_at - stage.started_at

    subjects: dict[str, Callable[[], float]] = {}
    for label, tree in trees.items():

        def run_vc(tree: Path = tree) -> float:
            out = _vc(tree, env, "flow", "run", "seq")
            sid_prefix = out.stdout.split(": ", 1)[1].split()[0]
            listed = json.loads(
                _vc(ROOT, env, "flow", "session", "list", "--json", "--limit", "1").stdout
            )[0]
            assert listed["id"].startswith(sid_prefix)
            return checked(listed["id"])

        subjects[f"vc {label}"] = run_vc

    def floor() -> float:
        # Timed inside the shell, as the stage's run time leaves the shell's start out.
        timing = f"s=$EPOCHREALTIME; {command} > out.txt; e=$EPOCHREALTIME; echo $s $e"
        done = subprocess.run(
            ["bash", "-c", timing], cwd=ws, check=True, capture_output=True, text=True
        )
        start, end = (float(v) for v in done.stdout.split())
        return end - start

    subjects["floor"] = floor
    try:
        return _medians(subjects, rounds)
    finally:
        engine.dispose()
        shutil.rmtree(ws, ignore_errors=True)


def main(small: bool = False, against: Path | None = None) -> list[str]:
    trees = {"new": ROOT} if against is None else {"new": ROOT, "old": against}
    compiled = [precompile(tree) for tree in trees.values()]
    out = []
    out.append(
        report(
            "bytecode",
            f"compileall before measuring ({sum(compiled)} modules written or checked); "
            f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '(unset)')} "
            "stops only the writing, every measured start reads the .pyc",
        )
    )
    ordinary, quick = teardown(3 if small else 15)
    out.append(
        report(
            "teardown",
            f"`flow session list`, work done -> process gone: ordinary exit "
            f"{ordinary * 1000:.0f} ms, quick exit {quick * 1000:.0f} ms "
            f"({ordinary / quick:.1f}x faster), medians",
        )
    )
    latencies, typer_floor = control(3 if small else 10, 1 if small else 3)
    from app.runner.runner import POLL_INTERVAL

    target = 1.5 * typer_floor + POLL_INTERVAL
    figures = "; ".join(
        f"{op} p50 {_percentile(v, 0.5) * 1000:.0f} ms (ratio to the floor "
        f"{_percentile(v, 0.5) / typer_floor:.2f}), p95 {_percentile(v, 0.95) * 1000:.0f} ms"
        for op, v in latencies.items()
    )
    out.append(
        report(
            "control",
            f"from the command's start to the stage stopped / running / gone: {figures}; "
            f"floor `import typer, sqlite3` {typer_floor * 1000:.0f} ms (targets: p50 <= "
            f"{target * 1000:.0f} ms = 1.5x the floor + the runner's {POLL_INTERVAL * 1000:.0f} "
            "ms poll, p95 <= 300 ms)",
        )
    )
    n = 10 if small else 50
    got, tsp = flow_run(n, 2 if small else 9, trees, install=not small)
    parts = [f"{label} {got[f'vc {label}'] * 1000:.0f} ms" for label in trees]
    ratios = []
    for label in trees:
        vc = got[f"vc {label}"]
        loop = f"{vc / got['bash loop']:.1f}x the loop"
        spool = f", {vc / got['task-spooler']:.1f}x tsp" if "task-spooler" in got else ""
        ratios.append(f"{label}: {loop}{spool}")
    floors = f"bash loop {got['bash loop'] * 1000:.0f} ms" + (
        f", task-spooler {got['task-spooler'] * 1000:.0f} ms" if tsp else ", no task-spooler"
    )
    stack = got["runner stack"]
    reference = got["task-spooler"] if "task-spooler" in got else got["bash loop"]
    out.append(
        report(
            f"flow run, {n} true stages",
            f"vc {', '.join(parts)}; {floors}; ratios {'; '.join(ratios)} "
            "(targets: <= 2.5x tsp, or <= 4x the loop); the runner's third-party imports "
            f"alone (`import {', '.join(RUNNER_STACK)}`) {stack * 1000:.0f} ms, "
            f"{stack / reference:.1f}x {'tsp' if 'task-spooler' in got else 'the loop'}",
        )
    )
    got = run_start(n, 2 if small else 9, trees)
    floor = got["floor"]
    start_parts = "; ".join(
        f"{label}: `--queue` {got[f'queue {label}'] * 1000:.0f} ms "
        f"({got[f'queue {label}'] / floor:.1f}x the floor), a foreground run's first stage "
        f"at {got[f'first {label}'] * 1000:.0f} ms"
        for label in trees
    )
    out.append(
        report(
            "start of a run",
            f"from the command's start: {start_parts}; floor `import typer, sqlite3` "
            f"{floor * 1000:.0f} ms (medians)",
        )
    )
    count = 100_000 if small else 1_000_000
    got = seq_stage(count, 2 if small else 7, trees)
    floor = got["floor"]
    stage_parts = "; ".join(
        f"{label} {got[f'vc {label}'] * 1000:.0f} ms (ratio {got[f'vc {label}'] / floor:.2f})"
        for label in trees
    )
    out.append(
        report(
            f"seq {count} stage",
            f"the stage's run time: {stage_parts}; redirected to a file {floor * 1000:.0f} ms "
            "(target <= 3); every line in the store and the log file, in order",
        )
    )
    return out


if __name__ == "__main__":
    against = None
    if "--against" in sys.argv:
        against = Path(sys.argv[sys.argv.index("--against") + 1]).resolve()
    main(small="--small" in sys.argv, against=against)
