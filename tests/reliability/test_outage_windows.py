"""The spawn-to-record window during an outage: a stage's process spawned while the store
cannot record its attempt (another connection holds SQLite's write lock past the busy
timeout) is supervised all along, recorded once the store is back, and never left running
untracked, whatever happens meanwhile. (The crash variant of this window, the runner killed
in it, is in test_crash_windows.py.)

Each trial holds the store's write lock from the moment stage s1 is recorded COMPLETED, so
the runner spawns s2 and cannot record it; a trial whose lock came too late is tried again.
While s2 runs unrecorded (``window_hits``), one of:

- ``returns``: the store comes back while s2 runs: s2 is recorded with the pid the stage
  wrote in its ledger, and the session completes;
- ``exits``: s2 ends during the outage: its attempt and its end are recorded afterwards;
- ``interrupted``: the runner gets SIGTERM during the outage: it terminates s2, records the
  pause once the store is back, and ``resume`` runs s2 again;
- ``permanent``: the store turns read-only during the outage (a waiting the runner cannot
  cure): the runner stops, s2's process gone, and ``resume`` completes the session once the
  store is writable again.

On PostgreSQL (VC_TEST_DATABASE_URL), the server is cut off by a proxy at that moment
instead, and another host takes the stale session over while s2 runs unrecorded: once the
server is back the runner finds it taken over, terminates s2 and records nothing more
(``outage-windows-postgresql``).

At the end of every SQLite trial: the session COMPLETED, no two copies of s2 alive at once (an
``flock`` the stage holds), and no process of the session left (``untracked=0``). Prints
``outage-windows: trials=… window_hits=… untracked=… double_starts=…``.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.waiting import poll

from .harness import (
    child_env,
    hold_sqlite_write_lock,
    release_sqlite_write_lock,
    report,
    session_processes,
    vc,
)
from .test_store_errors import _no_dac_override

WORKFLOW = """
name: Window
stages:
  - name: s1
    run: echo one
  - name: s2
    run: |
      L="$VC_HOME/ledger"
      exec 9>>"$L.lock"
      flock -n 9 || echo "double $VC_ATTEMPT $$" >> "$L"
      echo "start $VC_ATTEMPT $$" >> "$L"
      if [ -e "$VC_HOME/quick" ]; then n=3; else n=25; fi
      for i in $(seq 1 $n); do echo "n $i"; sleep 0.1; done
      echo "end $VC_ATTEMPT $$" >> "$L"
  - name: s3
    run: echo three
"""
VARIANTS = ("returns", "exits", "interrupted", "permanent")
#: How long the store stays away once s2 runs unrecorded (seconds).
OUTAGE = 1.5


@dataclass
class Trial:
    variant: str
    window_hit: bool = False
    untracked: int = 0
    doubles: int = 0
    problems: list[str] = field(default_factory=list)


class Window:
    def __init__(self, ws: Path) -> None:
        self.ws = ws
        (ws / "workflows").mkdir(parents=True)
        (ws / "workflows" / "window.yaml").write_text(WORKFLOW)
        self.path = ws / ".vc" / "flow.db"
        self.url = f"sqlite:///{self.path}"
        from store import get_session_factory, init_db

        self.engine = init_db(self.url)
        self.factory = get_session_factory(self.engine)
        self.raw = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self.env = {"VC_HOME": str(ws), "VC_DATABASE_URL": self.url, "VC_BUSY_TIMEOUT": "0.2"}

    def close(self) -> None:
        self.raw.close()
        self.engine.dispose()

    def create(self) -> str:
        from store import FlowSessionManager
        from store.workflows import find_workflow

        definition = find_workflow(self.ws / "workflows", "window")
        with self.factory() as db:
            return FlowSessionManager(db).create_session("window", definition=definition).id

    def stage(self, sid: str, name: str) -> tuple[str, int, int | None]:
        row = self.raw.execute(
            "SELECT status, attempt, pid FROM stage_instances WHERE session_id = ? AND name = ?",
            (sid, name),
        ).fetchone()
        return row[0], row[1], row[2]

    def status(self, sid: str) -> str:
        row = self.raw.execute("SELECT status FROM flow_sessions WHERE id = ?", (sid,)).fetchone()
        return str(row[0])

    def ledger(self) -> list[list[str]]:
        path = self.ws / "ledger"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def starts(self) -> list[int]:
        return [int(parts[2]) for parts in self.ledger() if parts[0] == "start"]

    def hold(self) -> bool:
        return hold_sqlite_write_lock(self.raw)

    def release(self) -> None:
        release_sqlite_write_lock(self.raw)

    def runner(self, sid: str, prefix: list[str]) -> Any:
        return subprocess.Popen(
            [*prefix, sys.executable, "-m", "app.main", "flow", "run", "window", "--session", sid],
            env=child_env(self.env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def trial(self, variant: str, prefix: list[str]) -> Trial:
        """One trial (tried again, up to 5 times, while the lock comes too late)."""
        for _ in range(5):
            trial = Trial(variant)
            (self.ws / "ledger").unlink(missing_ok=True)
            quick = self.ws / "quick"
            if variant == "exits":
                quick.touch()
            else:
                quick.unlink(missing_ok=True)
            self.one(trial, prefix)
            if trial.window_hit or trial.problems:
                return trial
        trial.problems.append("the window was never hit")
        return trial

    def one(self, trial: Trial, prefix: list[str]) -> None:
        sid = self.create()
        runner = self.runner(sid, prefix)
        try:
            poll(lambda: self.stage(sid, "s1")[0] == "COMPLETED", 30, 0)
            held = self.hold()
            try:
                if held and poll(lambda: bool(self.starts()), 5, 0.001):
                    status, _, _ = self.stage(sid, "s2")
                    trial.window_hit = status == "PENDING" and bool(session_processes(sid))
                if not trial.window_hit:
                    return self._finish(trial, sid, runner, miss=True)
                if trial.variant == "exits":
                    poll(lambda: any(p[0] == "end" for p in self.ledger()), 10, 0.01)
                    time.sleep(0.2)
                    if session_processes(sid):
                        trial.problems.append("s2 did not end during the outage")
                elif trial.variant == "interrupted":
                    time.sleep(0.3)
                    runner.send_signal(signal.SIGTERM)
                    # terminated while the store is still away: supervised, not left behind
                    if not poll(lambda: not session_processes(sid), 5, 0.01):
                        trial.problems.append("s2 still runs after SIGTERM in the outage")
                elif trial.variant == "permanent":
                    self.path.chmod(0o400)
                    time.sleep(OUTAGE)
                else:
                    time.sleep(OUTAGE)
            finally:
                self.release()
            self._finish(trial, sid, runner)
        finally:
            self.path.chmod(0o600)
            if runner.poll() is None:
                runner.kill()
                runner.communicate()
        return None

    def _finish(self, trial: Trial, sid: str, runner: Any, *, miss: bool = False) -> None:
        try:
            _, err = runner.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            trial.problems.append("the runner did not end")
            return
        if miss:
            return
        if trial.variant == "returns":
            starts = [p for p in self.ledger() if p[0] == "start"]
            state = self.stage(sid, "s2")
            if runner.returncode != 0 or state[:2] != ("COMPLETED", 1):
                trial.problems.append(f"exit {runner.returncode}, s2 {state}: {err[-400:]}")
            elif state[2] != int(starts[0][2]):
                trial.problems.append(f"s2 recorded pid {state[2]}, the stage was {starts[0]}")
        elif trial.variant == "exits":
            state = self.stage(sid, "s2")
            if runner.returncode != 0 or state[:2] != ("COMPLETED", 1):
                trial.problems.append(f"exit {runner.returncode}, s2 {state}: {err[-400:]}")
        else:
            trial.untracked += len(session_processes(sid))  # the runner is gone: none may live
            if trial.variant == "permanent" and "refuses this runner" not in err:
                trial.problems.append(f"no line naming the read-only store: {err[-400:]}")
            self.path.chmod(0o600)
            proc = vc("flow", "session", "resume", sid, env=self.env)
            if proc.returncode != 0:
                trial.problems.append(f"resume: exit {proc.returncode}: {proc.stderr.strip()}")
                return
            poll(lambda: self.status(sid) in ("COMPLETED", "FAILED"), 60, 0.05)
        if self.status(sid) != "COMPLETED":
            trial.problems.append(f"session {self.status(sid)}: {err[-400:]}")
        poll(lambda: not session_processes(sid), 10, 0.05)
        trial.untracked += len(session_processes(sid))
        trial.doubles = sum(1 for p in self.ledger() if p[0] == "double")


def test_a_stage_spawned_during_an_outage_is_never_left_untracked(tmp_path: Path) -> None:
    prefix = _no_dac_override()
    variants = [v for v in VARIANTS if prefix is not None or v != "permanent"]
    trials = []
    for i, variant in enumerate(variants):
        window = Window(tmp_path / f"w{i}")
        try:
            trials.append(window.trial(variant, prefix or []))
        finally:
            window.close()
    line = report(
        "outage-windows",
        trials=len(trials),
        variants=",".join(t.variant for t in trials),
        window_hits=sum(t.window_hit for t in trials),
        untracked=sum(t.untracked for t in trials),
        double_starts=sum(t.doubles for t in trials),
    )
    problems = [f"{t.variant}: {p}" for t in trials for p in t.problems]
    assert not problems, (line, problems)
    assert sum(t.untracked for t in trials) == 0, line
    assert sum(t.doubles for t in trials) == 0, line


def test_a_stage_spawned_while_the_server_is_away_ends_when_another_host_took_over(
    tmp_path: Path, pg_url: str
) -> None:
    """PostgreSQL behind a proxy cut at the moment s1 is recorded COMPLETED: the runner
    spawns s2 and cannot record it; meanwhile another host takes the stale session over.
    Once the server is back the runner's fence finds it taken over: it terminates s2 (never
    left running untracked) and writes nothing more."""
    from sqlalchemy import make_url, text

    from store import FlowSessionManager, get_session_factory, init_db
    from store.workflows import find_workflow
    from tests.hosts.proxy import TcpProxy

    ws = tmp_path / "ws"
    (ws / "workflows").mkdir(parents=True)
    (ws / "workflows" / "window.yaml").write_text(WORKFLOW)
    engine = init_db(pg_url)
    upstream = make_url(pg_url)
    proxy = TcpProxy((upstream.host or "127.0.0.1", upstream.port or 5432))
    through = upstream.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    env = {"VC_HOME": str(ws), "VC_DATABASE_URL": through}

    def stage(sid: str, name: str) -> tuple[str, int] | None:
        with engine.connect() as conn:
            row = conn.execute(
                text(
                    "SELECT status, attempt FROM stage_instances "
                    "WHERE session_id = :s AND name = :n"
                ),
                {"s": sid, "n": name},
            ).first()
        return None if row is None else (row[0], row[1])

    hits = untracked = 0
    problems: list[str] = []
    away = [False]

    def cut() -> None:
        proxy.down()
        away[0] = True

    def back() -> None:
        if away[0]:
            proxy.up()
            away[0] = False

    try:
        for _ in range(5):
            (ws / "ledger").unlink(missing_ok=True)
            with get_session_factory(engine)() as db:
                definition = find_workflow(ws / "workflows", "window")
                sid = FlowSessionManager(db).create_session("window", definition=definition).id
            runner = subprocess.Popen(
                [sys.executable, "-m", "app.main", "flow", "run", "window", "--session", sid],
                env=child_env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            try:
                poll(lambda s=sid: (stage(s, "s1") or ("",))[0] == "COMPLETED", 30, 0)
                cut()
                started = poll(lambda: (ws / "ledger").exists(), 5, 0.001)
                hit = started and stage(sid, "s2") == ("PENDING", 0) and session_processes(sid)
                if not hit:
                    back()
                    runner.communicate(timeout=60)
                    continue
                hits += 1
                with engine.begin() as conn:  # another host claimed the stale session
                    conn.execute(
                        text(
                            "UPDATE flow_sessions SET runner_host = 'host-b', runner_pid = 4242, "
                            "heartbeat_at = :now WHERE id = :s"
                        ),
                        {"now": time.time(), "s": sid},
                    )
                time.sleep(1.0)
                back()
                _, err = runner.communicate(timeout=60)
                if runner.returncode != 1 or "took over" not in err:
                    problems.append(f"exit {runner.returncode}: {err[-400:]}")
                poll(lambda s=sid: not session_processes(s), 5, 0.01)
                untracked = len(session_processes(sid))
                if stage(sid, "s2") != ("PENDING", 0):
                    problems.append(f"the old runner recorded s2: {stage(sid, 's2')}")
                break
            finally:
                back()
                if runner.poll() is None:
                    runner.kill()
                    runner.communicate()
                for pid in session_processes(sid):
                    os.killpg(pid, signal.SIGKILL)
    finally:
        proxy.close()
        engine.dispose()
    line = report(
        "outage-windows-postgresql", takeover_trials=1, window_hits=hits, untracked=untracked
    )
    assert hits == 1, ("the window was never hit", line)
    assert not problems, (line, problems)
    assert untracked == 0, line
