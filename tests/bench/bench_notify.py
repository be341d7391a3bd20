"""Benchmarks of telling people (issue: notifications and `wait`). Ratios and figures,
never a pass/fail.

* notify overhead: 50 stages of `true` with ``notify: {on: [any]}`` and a target that never
  answers (``VC_NOTIFY``: a socket on 127.0.0.1 that accepts and stays silent), the
  session's start -> completion as recorded, against the same workflow without ``notify``,
  medians of alternating runs (target <= 1.1x). Also shown: how long the `vc flow run`
  process itself then stays to give the silent target its ``VC_NOTIFY_TIMEOUT`` (it has
  printed its result by then).
* wait: `vc flow session wait` on 100 ACTIVE sessions whose (simulated) runners beat every
  2 s, as 100 runners would: its CPU as % of a core (target < 1%) over a quiet window (they
  all run on) and over a window in which 99 of them end, each against a real runner idling
  at a manual gate in the same window (the floor: the same change detection, for one
  session); then the time from the last session's end (its commit) to `wait` printing it
  (target < 1 s).

Run: `python -m tests.bench.bench_notify [--small]`.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.bench.common import bench_workspace, precompile, report
from tests.bench.common import wait_until as _wait

VC = [sys.executable, "-m", "app.main"]
TICK = os.sysconf("SC_CLK_TCK")


def _factory(ws: Path) -> Any:
    from store import get_session_factory, init_db

    return get_session_factory(init_db(f"sqlite:///{ws / '.vc' / 'flow.db'}"))


class _Silent:
    """Accepts connections, never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.held.append(conn)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        raw = f.read()
    fields = raw[raw.rfind(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def notify_overhead(stages: int, rounds: int) -> tuple[float, float, float, float]:
    """(median start->complete with notify, without, median process wall time with, without)."""
    import json

    from store.queries import get_session_view

    body = "\n".join(f'  - name: s{i}\n    run: "true"' for i in range(stages))
    ws, env = bench_workspace(
        {"plain": f"stages:\n{body}\n", "told": f"notify: {{on: [any]}}\nstages:\n{body}\n"}
    )
    silent = _Silent()
    factory = _factory(ws)
    told_env = {
        **env,
        "VC_NOTIFY": f"json://127.0.0.1:{silent.port}/hook",
        "VC_NOTIFY_TIMEOUT": "2",
    }

    def run(workflow: str, run_env: dict[str, str]) -> tuple[float, float]:
        started = time.perf_counter()
        subprocess.run([*VC, "flow", "run", workflow], env=run_env, capture_output=True, check=True)
        wall = time.perf_counter() - started
        out = subprocess.run(
            [*VC, "flow", "session", "list", "--json", "--limit", "1"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        sid = json.loads(out.stdout)[0]["id"]
        with factory() as db:
            view = get_session_view(db, sid)
        assert view is not None and view.status == "COMPLETED"
        return (view.finished_at or 0) - (view.started_at or 0), wall

    run("told", told_env)  # warm-up: byte code, the store file
    run("plain", env)
    told, plain, told_wall, plain_wall = [], [], [], []
    for i in range(rounds):
        for which in ("told", "plain") if i % 2 == 0 else ("plain", "told"):  # no order bias
            if which == "told":
                recorded, wall = run("told", told_env)
                told.append(recorded)
                told_wall.append(wall)
            else:
                recorded, wall = run("plain", env)
                plain.append(recorded)
                plain_wall.append(wall)
    return (
        statistics.median(told),
        statistics.median(plain),
        statistics.median(told_wall),
        statistics.median(plain_wall),
    )


def wait_on_many(sessions: int, window: float) -> tuple[float, float, float, float, float]:
    """(waiter CPU % of a core and gate runner CPU % while all run on, the same while 99
    end, ms from the last end to `wait` saying so)."""
    from store import FlowSessionManager

    ws, env = bench_workspace(
        {"gate": "stages:\n  - {name: build, run: 'true'}\n  - {name: approve}\n"}
    )
    factory = _factory(ws)
    me = os.getpid()
    with factory() as db:
        manager = FlowSessionManager(db, actor="runner")
        ids = [manager.create_session("bench", name=f"s{i}").id for i in range(sessions)]
        for sid in ids:  # "runners" of this process: ACTIVE, beating
            manager.start_session(sid, runner_pid=me)
    gate = subprocess.run(
        [*VC, "flow", "run", "gate", "--detach"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()

    def gate_runner() -> int | None:
        with factory() as db:
            row = FlowSessionManager(db).get_session(gate)
            return row.runner_pid if row.status == "PAUSED" else None

    runner_pid = _wait(gate_runner, step=0.05)
    stop = threading.Event()

    def beat() -> None:  # 100 runners' heartbeats, spread over their 2 s period
        with factory() as db:
            manager = FlowSessionManager(db, actor="runner")
            while not stop.is_set():
                for sid in ids:
                    manager.heartbeat(sid, runner_host=manager.host, runner_pid=me)
                    if stop.wait(2.0 / len(ids)):
                        return

    beating = threading.Thread(target=beat, daemon=True)
    beating.start()
    waiter = subprocess.Popen(
        [*VC, "flow", "session", "wait", *ids],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    printed: dict[str, float] = {}

    def read() -> None:
        assert waiter.stdout is not None
        for line in waiter.stdout:
            printed[line.split()[1].rstrip(":")[:12]] = time.monotonic()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    time.sleep(2.0)  # started, first read done
    waiter_cpu, gate_cpu = _cpu_seconds(waiter.pid), _cpu_seconds(runner_pid)
    started = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - started
    quiet_waiter = (_cpu_seconds(waiter.pid) - waiter_cpu) / elapsed * 100
    quiet_gate = (_cpu_seconds(runner_pid) - gate_cpu) / elapsed * 100
    waiter_cpu, gate_cpu = _cpu_seconds(waiter.pid), _cpu_seconds(runner_pid)
    started = time.monotonic()
    with factory() as db:
        manager = FlowSessionManager(db, actor="runner")
        for sid in ids[:-1]:  # 99 ends spread over the window
            manager.complete(sid)
            time.sleep(window / sessions)
    time.sleep(max(0.0, started + window - time.monotonic()))
    elapsed = time.monotonic() - started
    waiter_pct = (_cpu_seconds(waiter.pid) - waiter_cpu) / elapsed * 100
    gate_pct = (_cpu_seconds(runner_pid) - gate_cpu) / elapsed * 100
    with factory() as db:
        FlowSessionManager(db, actor="runner").complete(ids[-1])
    ended = time.monotonic()
    waiter.wait(30)
    reader.join(5)
    stop.set()
    beating.join(5)
    subprocess.run([*VC, "flow", "session", "abort", gate], env=env, capture_output=True)
    latency = printed.get(ids[-1][:12], float("nan")) - ended
    return quiet_waiter, quiet_gate, waiter_pct, gate_pct, latency * 1000


def main(small: bool = False) -> list[str]:
    precompile()
    lines = []
    n = 10 if small else 50
    told, plain, told_wall, plain_wall = notify_overhead(n, 2 if small else 7)
    lines.append(
        report(
            "notify overhead",
            f"{n} stages of `true`, notify on any to a target that never answers: "
            f"{told:.3f} s start->complete vs {plain:.3f} s without notify, medians of "
            f"alternating runs (ratio {told / plain:.2f}, target <= 1.1); the `vc flow run` "
            f"process then gives the silent target its 2 s (VC_NOTIFY_TIMEOUT): "
            f"{told_wall:.2f} s vs {plain_wall:.2f} s in all",
        )
    )
    count = 20 if small else 100
    quiet, quiet_gate, busy, busy_gate, latency = wait_on_many(count, 3.0 if small else 10.0)

    def ratio(a: float, b: float) -> str:
        return f"{a / b:.2f}" if b else "n/a"

    lines.append(
        report(
            "wait",
            f"`vc flow session wait` on {count} sessions beating like live runners: "
            f"{quiet:.2f}% of a core while they run on, {busy:.2f}% while {count - 1} of "
            f"them end (target < 1%), vs {quiet_gate:.2f}% and {busy_gate:.2f}% for a "
            f"runner idling at a gate in the same windows (ratios {ratio(quiet, quiet_gate)}, "
            f"{ratio(busy, busy_gate)}); the last end seen {latency:.0f} ms after its commit "
            "(target < 1000 ms)",
        )
    )
    return lines


if __name__ == "__main__":
    main(small="--small" in sys.argv)
