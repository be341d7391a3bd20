"""A team's fleet on one PostgreSQL server (issue: many hosts, connections at team scale).

``H`` hosts, each a `vc flow worker --concurrency S` process with its own ``VC_HOSTNAME``,
run ``S`` sessions each (a stage that sleeps), all at once. The bench counts the server
connections the fleet holds once everything runs (``pg_stat_activity``, by the
application name every fleet process connects with), as connections per running session
and per host, and the largest fleet of such hosts that fits in ``max_connections = 100``.
Then it pauses every session (one commit each, from this process) and times, per session,
from the pause's commit to its stage's process in state T: the p95 and the slowest
(target: every one within 1 s).

Targets: 200 running sessions (20 hosts x 10) within 50 connections; every pause within
1 s. Nothing fails on speed.

Run: `python -m tests.bench.bench_fleet [--small] [--url URL] [--hosts H] [--sessions S]`
(default 20 x 10; --small: 2 x 3).
"""

from __future__ import annotations

import argparse
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from typing import Any

from tests.bench.bench_hosts import _schema, _workspace
from tests.bench.common import postgres_base, precompile, report
from tests.bench.common import proc_state as _proc_state

HOLD = """
stages:
  - name: hold
    run: exec sleep 600
"""
_WORKER = (sys.executable, "-m", "app.main", "flow", "worker")
#: The server's default, what a team gets without tuning.
MAX_CONNECTIONS = 100


def _with_app_name(url: str, name: str) -> str:
    sep = "&" if "?" in url else "?"
    return f"{url}{sep}application_name={name}"


def _connections(engine: Any, app_name: str) -> int:
    from sqlalchemy import text

    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a"),
                {"a": app_name},
            ).scalar()
            or 0
        )


def _running_stages(engine: Any) -> dict[str, int]:
    """Session id -> its running stage's pid, for every session whose stage runs."""
    from sqlalchemy import text

    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT s.id, st.pid FROM flow_sessions s JOIN stage_instances st "
                "ON st.session_id = s.id WHERE s.status = 'ACTIVE' AND st.status = 'ACTIVE' "
                "AND st.pid IS NOT NULL"
            )
        ).all()
    return {sid: pid for sid, pid in rows if _proc_state(pid) in ("S", "R")}


def fleet(base: str, hosts: int, per_host: int) -> dict[str, Any]:
    from store import FlowSessionManager, get_session_factory, init_db
    from store.workflows import find_workflow

    app_name = f"vc-fleet-{uuid.uuid4().hex[:8]}"
    total = hosts * per_host
    with _schema(base) as plain_url, _workspace({"hold": HOLD}, plain_url) as (ws, env):
        url = _with_app_name(plain_url, app_name)
        env = {**env, "VC_DATABASE_URL": url}
        engine = init_db(plain_url)
        workers: list[subprocess.Popen[bytes]] = []
        peak = _PeakSampler(engine, app_name)
        try:
            definition = find_workflow(ws / "workflows", "hold")
            with get_session_factory(engine)() as db:
                manager = FlowSessionManager(db)
                for i in range(total):
                    manager.create_session("hold", name=f"s{i}", definition=definition, queued=True)
            peak.start()
            for h in range(hosts):
                workers.append(
                    subprocess.Popen(
                        [*_WORKER, "--concurrency", str(per_host)],
                        env={**env, "VC_HOSTNAME": f"fleet-{h:02d}"},
                        cwd=ws,
                        stdin=subprocess.DEVNULL,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                )
            deadline = time.monotonic() + 60 + total
            running = _running_stages(engine)
            while len(running) < total:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"only {len(running)} of {total} sessions run")
                time.sleep(0.5)
                running = _running_stages(engine)
            time.sleep(3)  # past the runners' first second: each has subscribed to LISTEN
            counts = []
            for _ in range(5):
                counts.append(_connections(engine, app_name))
                time.sleep(0.5)
            held = max(counts)
            latencies = _pause_all(engine, running)
            started_peak = peak.stop()
        finally:
            peak.stop()
            for proc in workers:
                proc.send_signal(signal.SIGTERM)
            for proc in workers:
                try:
                    proc.wait(60)
                except subprocess.TimeoutExpired:
                    proc.kill()
            engine.dispose()
    return {"running": total, "connections": held, "peak": started_peak, "pauses": latencies}


class _PeakSampler:
    """The most connections the fleet held at once, sampled every 20 ms on a connection of
    its own, opened before the fleet starts (a full server would refuse a new one)."""

    def __init__(self, engine: Any, app_name: str) -> None:
        self.engine = engine
        self.app_name = app_name
        self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from sqlalchemy import text

        conn = self.engine.connect()
        query = text("SELECT count(*) FROM pg_stat_activity WHERE application_name = :a")

        def sample() -> None:
            try:
                while not self._stop.wait(0.02):
                    n = int(conn.execute(query, {"a": self.app_name}).scalar() or 0)
                    conn.commit()
                    self.peak = max(self.peak, n)
            finally:
                conn.close()

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        return self.peak


def _pause_all(engine: Any, running: dict[str, int]) -> list[float]:
    """Pause every session (one commit each), then wait for each stage to stop: seconds
    from each pause's commit to its stage in state T."""
    from store import FlowSessionManager, get_session_factory

    committed: dict[str, float] = {}
    stopped: dict[str, float] = {}
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db)
        for sid in running:
            manager.pause(sid)
            committed[sid] = time.monotonic()
            for other, pid in running.items():  # watch meanwhile: no stop goes unseen
                if other not in stopped and _proc_state(pid) == "T":
                    stopped[other] = time.monotonic()
    deadline = time.monotonic() + 30
    while len(stopped) < len(running) and time.monotonic() < deadline:
        for sid, pid in running.items():
            if sid not in stopped and _proc_state(pid) == "T":
                stopped[sid] = time.monotonic()
        time.sleep(0.002)
    return [stopped.get(sid, float("inf")) - committed[sid] for sid in running]


def main(
    small: bool = False,
    url: str | None = None,
    hosts: int | None = None,
    sessions: int | None = None,
) -> list[str]:
    base = postgres_base("bench_fleet", url)
    precompile()
    h = hosts or (2 if small else 20)
    s = sessions or (3 if small else 10)
    got = fleet(base, h, s)
    per_session = got["connections"] / got["running"]
    per_host = got["connections"] / h
    fits = int(MAX_CONNECTIONS // per_host) * s if per_host else 0
    pauses = sorted(got["pauses"])
    p95 = pauses[min(len(pauses) - 1, round(0.95 * (len(pauses) - 1)))]
    late = sum(1 for p in pauses if p > 1.0)
    return [
        report(
            "fleet connections",
            f"{h} hosts x {s} running sessions = {got['running']}: {got['connections']} server "
            f"connections ({per_host:.2f} per host, {per_session:.3f} per running session); "
            f"in max_connections = {MAX_CONNECTIONS}: {fits} running sessions of such hosts "
            f"(target: 200 within 50 connections); at most {got['peak']} at once while the "
            "fleet started and was paused",
        ),
        report(
            "fleet pause",
            f"every session paused from one process: commit -> stage stopped p50 "
            f"{statistics.median(pauses) * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, slowest "
            f"{pauses[-1] * 1000:.0f} ms; over 1 s: {late} of {len(pauses)} (target 0)",
        ),
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="2 hosts x 3 sessions")
    parser.add_argument("--url", help="postgresql+psycopg://… (default VC_TEST_DATABASE_URL)")
    parser.add_argument("--hosts", type=int)
    parser.add_argument("--sessions", type=int, help="running sessions per host")
    args = parser.parse_args()
    main(small=args.small, url=args.url, hosts=args.hosts, sessions=args.sessions)
