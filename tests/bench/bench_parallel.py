"""Benchmarks of stages in parallel (issue: parallel stages). Each prints its figures, a
ratio against a floor measured in the same run (alternating the two where both repeat) and
its target; none fails on speed.

* fan-out of sleeps: 100 independent `sleep 1` stages (``needs: []``, ``max_parallel:
  20``) run by `vc flow run` in the foreground, start to exit, against ``xargs -P 20``
  running the same 100 commands (target <= 1.2);
* fan-out of true: 200 independent `true` stages, ``max_parallel: 8``, against ``xargs -P
  8`` of 200 `true` (target <= 2);
  Beside it, the floor of any Python front end: the same 200 spawned by a Python
  process that imports only Typer and sqlite3 and records nothing;
* pause: a session with 32 running stages; from the pause's commit (its event) until every
  process of every stage's process group is stopped (state T in /proc), p50/p95 over K
  pauses, and the same for the resume (none left in T); also how long after the command
  returned (0: all stopped before `vc` exited). Target p95 <= 300 ms. The session is
  aborted at the end and every stage process is checked gone;
* runner memory: the runner's RSS (VmRSS) with 64 running stages against 1 (target <= 2);
* show of a matrix session: `vc flow session show` of a session of 256 matrix instances
  (16 x 16, all run) against ``python3 -c "import sqlmodel, typer"`` (target <= 1.5).

The stages that hold (pause, memory) are `sleep 600`: the machine is shared, and a stopped
sleep is told from a sleeping one by /proc alike (T against S).

Run: `python -m tests.bench.bench_parallel [--small]`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.bench.common import (
    RUNNER_STACK,
    alternate,
    bench_workspace,
    precompile,
    proc_state,
    report,
    runner_stack_import,
)
from tests.bench.common import timed_command as _timed
from tests.bench.common import wait_until as _wait

VC = [sys.executable, "-m", "app.main"]
#: How often the stages' states are read while a pause or resume is on its way.
STEP = 0.003


def _vc(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(
        [*VC, *args], env=env, capture_output=True, text=True, check=True, stdin=subprocess.DEVNULL
    )
    return out.stdout.strip()


def _factory(ws: Path):  # type: ignore[no-untyped-def]
    from store import get_session_factory, init_db

    return get_session_factory(init_db(f"sqlite:///{ws / '.vc' / 'flow.db'}"))


def _independent(stages: int, command: str, parallel: int) -> str:
    """A workflow of ``stages`` stages that need nothing, ``parallel`` at once."""
    body = "".join(f"  - name: s{i}\n    needs: []\n    run: {command!r}\n" for i in range(stages))
    return f"max_parallel: {parallel}\nstages:\n{body}"


def _verdict(value: float, target: float, what: str = "") -> str:
    return f"target {what}<= {target:g}: {'met' if value <= target else 'MISSED'}"


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


# -- fan-out against xargs ------------------------------------------------------------------------


#: The least a Python front end can do for the same fan-out: start the interpreter with the
#: CLI's own library and the store's driver, then spawn the commands through a shell, at
#: most ``parallel`` at once, recording nothing. What this takes beyond xargs is not the
#: runner's to save.
PYTHON_SPAWNS = """
import os, sys, typer, sqlite3
stages, parallel, command = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
running = started = 0
while started < stages or running:
    while started < stages and running < parallel:
        os.posix_spawn("/bin/sh", ["sh", "-c", command], os.environ)
        started += 1
        running += 1
    os.wait()
    running -= 1
"""


#: The least a runner that keeps the design's record can do for the same fan-out: the
#: :data:`PYTHON_SPAWNS` floor plus, per stage, its output through a pipe into a log file,
#: its process group, and its start (with the pid) and its end each committed to SQLite
#: (WAL, ``synchronous=NORMAL``) as they happen, read by one selector loop: no ORM, no
#: events, no threads. Where this lands against ``xargs`` says whether the target is
#: within reach of a runner at all, and how far today's runner is from that.
PYTHON_RECORDS = """
import os, sys, selectors, sqlite3, time, typer
stages, parallel, command, where = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
db = sqlite3.connect(os.path.join(where, "floor.db"), isolation_level=None)
db.execute("pragma journal_mode=wal")
db.execute("pragma synchronous=normal")
db.execute("create table stage (id integer primary key, status text, pid integer, "
           "exit integer, started real, ended real)")
db.execute("begin")
db.executemany("insert into stage (id, status) values (?, 'PENDING')",
               [(i,) for i in range(stages)])
db.execute("commit")
log = open(os.path.join(where, "floor.log"), "ab", buffering=0)
def record(sql, *args):
    db.execute("begin immediate")
    db.execute(sql, args)
    db.execute("commit")
selector = selectors.DefaultSelector()
env = dict(os.environ)
started = running = 0
while started < stages or running:
    while started < stages and running < parallel:
        r, w = os.pipe()
        pid = os.posix_spawn("/bin/sh", ["sh", "-c", command], {**env, "VC_STAGE": str(started)},
            file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2),
                          (os.POSIX_SPAWN_CLOSE, r)], setpgroup=0)
        os.close(w)
        record("update stage set status='ACTIVE', pid=?, started=? where id=?",
               pid, time.time(), started)
        selector.register(r, selectors.EVENT_READ, (started, pid))
        started += 1
        running += 1
    for key, _ in selector.select():
        data = os.read(key.fd, 65536)
        if data:
            log.write(data)
            continue
        selector.unregister(key.fd)
        os.close(key.fd)
        stage, pid = key.data
        code = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
        record("update stage set status='COMPLETED', exit=?, ended=? where id=?",
               code, time.time(), stage)
        running -= 1
"""


def python_records(stages: int, command: str, parallel: int, rounds: int) -> tuple[float, float]:
    """Medians of alternating runs: (the :data:`PYTHON_RECORDS` floor, ``xargs -P``)."""
    import tempfile

    floor = f"seq {stages} | xargs -P {parallel} -I{{}} sh -c {command!r}"

    def records() -> float:
        with tempfile.TemporaryDirectory(prefix="vc-bench-floor-") as where:
            script = [sys.executable, "-c", PYTHON_RECORDS, str(stages), str(parallel), command]
            return _timed([*script, where])

    got, xargs, _ = alternate(records, lambda: _timed(["sh", "-c", floor]), rounds)
    return got, xargs


def python_spawns(stages: int, command: str, parallel: int, rounds: int) -> tuple[float, float]:
    """Medians of alternating runs: (the :data:`PYTHON_SPAWNS` floor, ``xargs -P``)."""
    floor = f"seq {stages} | xargs -P {parallel} -I{{}} sh -c {command!r}"
    spawns, xargs, _ = alternate(
        lambda: _timed([sys.executable, "-c", PYTHON_SPAWNS, str(stages), str(parallel), command]),
        lambda: _timed(["sh", "-c", floor]),
        rounds,
    )
    return spawns, xargs


def fan_out(stages: int, command: str, parallel: int, rounds: int) -> tuple[float, float, float]:
    """Medians of alternating runs: (`vc flow run` start to exit, ``xargs -P``, ratio)."""
    ws, env = bench_workspace({"fan": _independent(stages, command, parallel)})
    floor = f"seq {stages} | xargs -P {parallel} -I{{}} sh -c {command!r}"
    try:
        return alternate(
            lambda: _timed([*VC, "flow", "run", "fan"], env),
            lambda: _timed(["sh", "-c", floor]),
            rounds,
        )
    finally:
        shutil.rmtree(ws, ignore_errors=True)


# -- sessions of held stages ----------------------------------------------------------------------


class Held:
    """A detached session of ``stages`` running `sleep 600` stages, all at once; the
    processes of each stage's group read from /proc. Aborted on leaving, and every stage
    process checked gone."""

    def __init__(self, stages: int) -> None:
        self.ws, self.env = bench_workspace({"hold": _independent(stages, "sleep 600", stages)})
        self.stages = stages
        self.factory = _factory(self.ws)
        self.sid = ""
        self.pids: list[int] = []
        self.runner_pid: int | None = None
        self.leftovers: list[int] = []

    def __enter__(self) -> Held:
        self.sid = _vc(self.env, "flow", "run", "hold", "--detach")
        try:
            self.pids, self.runner_pid = _wait(self._all_running, timeout=60, step=0.02)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _all_running(self) -> tuple[list[int], int] | None:
        from store.queries import get_session_view

        with self.factory() as db:
            view = get_session_view(db, self.sid)
        if view is None or view.runner_pid is None or len(view.stages) != self.stages:
            return None
        pids = [s.pid for s in view.stages if s.status == "ACTIVE" and s.pid is not None]
        if len(pids) != self.stages or any(proc_state(p) not in ("R", "S") for p in pids):
            return None
        return pids, view.runner_pid

    def groups(self) -> list[int]:
        """Every live process of the stages' process groups (a stage's pid leads its
        group)."""
        leaders = set(self.pids)
        members = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[2]) in leaders:
                members.append(int(entry))
        return members

    def event_at(self, op: str) -> float:
        from store.queries import list_events

        with self.factory() as db:
            return [e.at for e in list_events(db, self.sid) if e.op == op][-1]

    def __exit__(self, *exc: object) -> None:
        members = self.groups()
        subprocess.run(
            [*VC, "flow", "session", "abort", self.sid], env=self.env, capture_output=True
        )
        watched = [*members, *([self.runner_pid] if self.runner_pid else [])]

        def alive() -> list[int]:
            return [p for p in watched if proc_state(p) not in (None, "Z")]

        try:
            _wait(lambda: not alive(), timeout=30, step=0.02)
        except TimeoutError:
            pass
        self.leftovers = alive()
        for pid in self.leftovers:  # ours: started by this bench, so ended by it too
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(self.ws, ignore_errors=True)


def _all(pids: Iterable[int], test: Callable[[str | None], bool]) -> Callable[[], float | None]:
    pids = list(pids)
    return lambda: time.time() if all(test(proc_state(p)) for p in pids) else None


def pause_resume(stages: int, rounds: int) -> dict[str, Any]:
    """Seconds from each pause's commit until every stage process is stopped, from its
    command's return, and the same for each resume (none stopped any more)."""
    got: dict[str, Any] = {"pause": [], "pause_cmd": [], "resume": [], "resume_cmd": []}
    with Held(stages) as held:
        members = held.groups()
        got["processes"] = len(members)
        for _ in range(rounds):
            for op, state_ok in (("pause", lambda s: s == "T"), ("resume", lambda s: s != "T")):
                # Watched while the command runs: the runner usually acts before `vc`
                # itself has exited.
                command = subprocess.Popen(
                    [*VC, "flow", "session", op, held.sid],
                    env=held.env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                reached = _wait(_all(members, state_ok), timeout=30, step=STEP)
                if command.wait(60) != 0:
                    raise RuntimeError(f"`vc flow session {op}` exited {command.returncode}")
                returned = time.time()
                got[op].append(reached - held.event_at(op))
                got[f"{op}_cmd"].append(max(0.0, reached - returned))
    got["leftovers"] = held.leftovers
    return got


def runner_rss(stages: int) -> int:
    """The runner's VmRSS (kB) while ``stages`` stages run: the median of a few reads once
    all of them are running."""

    def rss(pid: int) -> int:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    with Held(stages) as held:
        assert held.runner_pid is not None
        time.sleep(0.5)  # past the starts: every reader thread up, the writes done
        reads = []
        for _ in range(5):
            reads.append(rss(held.runner_pid))
            time.sleep(0.1)
    if held.leftovers:
        raise RuntimeError(f"processes left after the abort: {held.leftovers}")
    return int(statistics.median(reads))


# -- show of a matrix session ----------------------------------------------------------------------


def show_matrix(side: int, rounds: int) -> tuple[float, float, float, int]:
    """Medians of alternating `vc flow session show` of a completed session of side x
    side matrix instances and of the import floor; (show, floor, ratio, instances)."""
    values = ", ".join(str(i) for i in range(side))
    ws, env = bench_workspace(
        {
            "grid": f"""
        max_parallel: 8
        stages:
          - name: cell
            needs: []
            matrix: {{a: [{values}], b: [{values}]}}
            run: "true"
    """
        }
    )
    try:
        _vc(env, "flow", "run", "grid")
        session = json.loads(_vc(env, "flow", "session", "list", "--json", "--limit", "1"))[0]
        assert session["status"] == "COMPLETED", session["status"]
        show, floor, ratio = alternate(
            lambda: _timed([*VC, "flow", "session", "show", session["id"]], env),
            lambda: _timed([sys.executable, "-c", "import sqlmodel, typer"]),
            rounds,
        )
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    return show, floor, ratio, len(session["stages"])


def main(small: bool = False) -> list[str]:
    precompile()
    lines = []

    n, p, sleep = (10, 5, "sleep 0.2") if small else (100, 20, "sleep 1")
    ours, floor, ratio = fan_out(n, sleep, p, 1 if small else 3)
    lines.append(
        report(
            "fan-out of sleeps",
            f"{n} independent `{sleep}` stages, max_parallel {p}: `vc flow run` "
            f"{ours:.2f} s vs `xargs -P {p}` {floor:.2f} s, medians of alternating runs "
            f"(ratio {ratio:.2f}, {_verdict(ratio, 1.2)})",
        )
    )

    n, p = (20, 4) if small else (200, 8)
    ours, floor, ratio = fan_out(n, "true", p, 1 if small else 5)
    lines.append(
        report(
            "fan-out of true",
            f"{n} independent `true` stages, max_parallel {p}: `vc flow run` {_ms(ours)} "
            f"vs `xargs -P {p}` {_ms(floor)}, medians of alternating runs "
            f"(ratio {ratio:.2f}, {_verdict(ratio, 2.0)})",
        )
    )
    spawns, xargs = python_spawns(n, "true", p, 1 if small else 5)
    lines.append(
        report(
            "fan-out of true, Python's floor",
            f"the same {n} `true`, {p} at once, spawned by `python3 -c` importing typer and "
            f"sqlite3 and recording nothing: {_ms(spawns)} vs `xargs -P {p}` {_ms(xargs)} "
            f"(ratio {spawns / xargs:.2f}: of the target's 2.0, {2.0 - spawns / xargs:.2f} "
            "is left for the runner's imports, store and supervision)",
        )
    )
    stack, xargs, _ = alternate(
        lambda: runner_stack_import(),
        lambda: _timed(["sh", "-c", f"seq {n} | xargs -P {p} -I{{}} sh -c true"]),
        1 if small else 5,
    )
    lines.append(
        report(
            "fan-out of true, the runner's imports",
            f"`import {', '.join(RUNNER_STACK)}`, what `vc flow run` imports before its "
            f"first stage, alone: {_ms(stack)} vs `xargs -P {p}` {_ms(xargs)} (ratio "
            f"{stack / xargs:.2f}, against the target's 2.0)",
        )
    )
    records, xargs = python_records(n, "true", p, 1 if small else 5)
    lines.append(
        report(
            "fan-out of true, a durable floor",
            f"the same, each stage's output piped to a log file and its start and end "
            f"committed to SQLite by one selector loop (no ORM, no threads): {_ms(records)} "
            f"vs `xargs -P {p}` {_ms(xargs)} (ratio {records / xargs:.2f})",
        )
    )

    n = 4 if small else 32
    got = pause_resume(n, 2 if small else 15)
    worst = max(_p95(got["pause"]), _p95(got["resume"]))
    left = got["leftovers"]
    lines.append(
        report(
            "pause of running stages",
            f"{n} running stages ({got['processes']} processes), {len(got['pause'])} pauses: "
            f"commit -> all stopped p50 {_ms(statistics.median(got['pause']))}, p95 "
            f"{_ms(_p95(got['pause']))}; resume commit -> none stopped p50 "
            f"{_ms(statistics.median(got['resume']))}, p95 {_ms(_p95(got['resume']))}; "
            f"after the command returned p95 {_ms(_p95(got['pause_cmd']))} / "
            f"{_ms(_p95(got['resume_cmd']))} (0: done before `vc` exited) "
            f"({_verdict(worst * 1000, 300, 'p95 (ms) ')}); after the abort "
            + (f"{len(left)} processes LEFT (killed)" if left else "nothing left running"),
        )
    )

    n = 8 if small else 64
    many, one = runner_rss(n), runner_rss(1)
    lines.append(
        report(
            "runner memory",
            f"runner VmRSS with {n} running stages {many / 1024:.1f} MiB vs 1 running "
            f"{one / 1024:.1f} MiB (ratio {many / one:.2f}, {_verdict(many / one, 2.0)})",
        )
    )

    side = 4 if small else 16
    show, floor, ratio, instances = show_matrix(side, 2 if small else 7)
    lines.append(
        report(
            "show of a matrix session",
            f"`vc flow session show` of {instances} instances ({side} x {side}, all run): "
            f"{_ms(show)} vs `python3 -c 'import sqlmodel, typer'` {_ms(floor)}, medians of "
            f"alternating runs (ratio {ratio:.2f}, {_verdict(ratio, 1.5)})",
        )
    )
    return lines


if __name__ == "__main__":
    main(small="--small" in sys.argv)
