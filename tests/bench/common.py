"""Helpers for benchmarks: every figure is a ratio against a floor measured in the same run,
alternating the two so that machine noise hits both alike."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def timed_command(args: Sequence[str], env: dict[str, str] | None = None) -> float:
    started = time.perf_counter()
    subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def alternate(
    subject: Callable[[], float], floor: Callable[[], float], rounds: int
) -> tuple[float, float, float]:
    """Median of ``subject`` and of ``floor`` run alternately; returns (subject, floor,
    ratio)."""
    subject_times, floor_times = [], []
    subject()
    floor()
    for _ in range(rounds):
        subject_times.append(subject())
        floor_times.append(floor())
    s, f = statistics.median(subject_times), statistics.median(floor_times)
    return s, f, s / f


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T, …), None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3].decode()


def wait_until(predicate: Callable[[], Any], timeout: float = 30.0, step: float = 0.002) -> Any:
    """The predicate's first true value, polled every ``step`` seconds."""
    from tests.waiting import poll

    value = poll(predicate, timeout, step)
    if not value:
        raise TimeoutError("condition not reached")
    return value


def postgres_base(bench: str, url: str | None) -> str:
    """The PostgreSQL URL a bench of many hosts runs on: ``url``, else
    VC_TEST_DATABASE_URL; exits with one line saying how to give one."""
    base = url or os.environ.get("VC_TEST_DATABASE_URL")
    if not base or not base.startswith("postgresql"):
        raise SystemExit(
            f"{bench} needs PostgreSQL: set VC_TEST_DATABASE_URL or pass --url "
            "postgresql+psycopg://USER@HOST:PORT/DB"
        )
    return base


#: The third-party modules `vc flow run` imports before its first stage: the store's
#: engine and sessions, its models, the workflow model, YAML, the log sinks, the CLI. Any
#: runner built on them pays their import before anything runs; timed alone, they are the
#: floor of a foreground run's start (:func:`check_runner_stack` keeps the list true).
RUNNER_STACK = ("sqlalchemy.orm", "sqlmodel", "pydantic", "yaml", "loguru", "typer", "sqlite3")


def runner_stack_import(env: dict[str, str] | None = None) -> float:
    """Seconds of ``python3 -c "import <RUNNER_STACK>"``: nothing of vc's own."""
    return timed_command([sys.executable, "-c", f"import {', '.join(RUNNER_STACK)}"], env)


def check_runner_stack(tree: Path, env: dict[str, str], workflow: str) -> None:
    """Fail unless `vc flow run WORKFLOW` of ``tree`` imports every module of
    :data:`RUNNER_STACK` (``-X importtime`` lists what a process imports)."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.main", "flow", "run", workflow],
        env={**env, "PYTHONPATH": str(tree)},
        cwd=tree,
        capture_output=True,
        text=True,
        check=False,
    )
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    missing = [name for name in RUNNER_STACK if name not in imported]
    assert not missing, f"`vc flow run` no longer imports {missing}: the floor overstates"


def report(name: str, line: str) -> str:
    text = f"[bench] {name}: {line}"
    print(
        text, file=sys.stderr if os.environ.get("PYTEST_CURRENT_TEST") else sys.stdout, flush=True
    )
    return text


def precompile(root: Path | None = None) -> int:
    """Write the project's bytecode first: a user's `vc` runs from cached .pyc files after
    its first start (pip byte-compiles the dependencies already), while an environment with
    PYTHONDONTWRITEBYTECODE would otherwise make every measured start compile our sources
    (the variable stops Python from writing .pyc files, not from reading them).
    ``root``: the checkout to compile (this one by default). Returns how many modules have
    bytecode now."""
    import compileall
    import py_compile

    root = root or Path(__file__).resolve().parents[2]
    for package in ("app", "store", "widgets"):
        compileall.compile_dir(str(root / package), quiet=1)
    if (root / "vc_main.py").exists():
        py_compile.compile(str(root / "vc_main.py"))
    patterns = [f"{package}/**/__pycache__/*.pyc" for package in ("app", "store", "widgets")]
    return sum(
        1 for pattern in [*patterns, "__pycache__/vc_main.*.pyc"] for _ in root.glob(pattern)
    )


class MachineLoad:
    """How many of the machine's cores were busy (any process: ours, PostgreSQL, the
    bench itself) between two wall-clock times, from /proc/stat sampled in a thread.

    Why: a speed-up from more workers is bounded by the cores left idle. If one worker
    already keeps ``u`` cores busy, N workers can be at most ``cores / u`` times faster,
    however little they contend; a bench reports that ceiling next to its ratio."""

    def __init__(self, step: float = 0.05) -> None:
        self.step = step
        self.samples: list[tuple[float, int, int]] = []  # (unix time, total, idle) jiffies
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    @staticmethod
    def _read() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        return sum(fields), fields[3] + fields[4]  # idle + iowait

    def _run(self) -> None:
        while not self._stop.is_set():
            total, idle = self._read()
            self.samples.append((time.time(), total, idle))
            self._stop.wait(self.step)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Idempotent; fine before :meth:`start` too."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def busy_cores(self, start: float, end: float) -> float:
        """Mean busy cores between ``start`` and ``end`` (unix times); NaN if the window
        holds fewer than two samples."""
        window = [s for s in self.samples if start <= s[0] <= end]
        if len(window) < 2:
            return float("nan")
        (_, total0, idle0), (_, total1, idle1) = window[0], window[-1]
        total = total1 - total0
        if total <= 0:
            return float("nan")
        return (total - (idle1 - idle0)) / total * (os.cpu_count() or 1)


def bench_workspace(workflows: dict[str, str]) -> tuple[Path, dict[str, str]]:
    """A new workspace holding ``workflows`` (name -> YAML text), and the environment of a
    `vc` that uses it and nothing of the caller's own store, logs, targets or imports."""
    ws = Path(tempfile.mkdtemp(prefix="vc-bench-"))
    (ws / "workflows").mkdir()
    for name, text in workflows.items():
        (ws / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip())
    env = {**os.environ, "VC_HOME": str(ws), "NO_COLOR": "1"}
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR", "VC_NOTIFY", "PYTHONPATH"):
        env.pop(var, None)
    return ws, env
