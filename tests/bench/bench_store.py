"""Store and CLI start-up benchmarks (issue: headless core).

* manager transitions per second on SQLite, against raw sqlite3 doing the same update +
  event insert (the floor); target: >= 5,000/s;
* `vc flow session list --limit 50` with 10,000 sessions, against
  `python -c "import sqlmodel, typer"`; target: <= 0.5x (the driver path imports neither
  SQLAlchemy nor SQLModel);
* `vc --help` and `vc flow session --help` against `python -c "import typer"`; <= 1.2x.

Run: `python -m tests.bench.bench_store [--small]`.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench.common import alternate, precompile, report, timed_command


def transitions_per_second(n: int) -> float:
    from store import FlowSessionManager, get_session_factory, init_db

    directory = tempfile.mkdtemp()
    engine = init_db(f"sqlite:///{directory}/flow.db")
    with get_session_factory(engine)() as session:
        manager = FlowSessionManager(session)
        ids = [manager.create_session("bench", name=f"s{i}").id for i in range(100)]
        started = time.perf_counter()
        for i in range(n // 2):
            sid = ids[i % 100]
            manager.pause(sid)
            manager.resume(sid)
        elapsed = time.perf_counter() - started
    engine.dispose()
    return n / elapsed


def raw_sqlite_per_second(n: int) -> float:
    directory = tempfile.mkdtemp()
    conn = sqlite3.connect(f"{directory}/raw.db", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(
        "create table s(id text primary key, status text, version int, "
        "updated_at real, reason text)"
    )
    conn.execute(
        "create table e(id integer primary key, session_id text, op text, "
        "from_status text, to_status text, actor text, host text, pid int, at real, "
        "reason text)"
    )
    ids = [uuid.uuid4().hex for _ in range(100)]
    conn.executemany("insert into s values(?,?,?,?,?)", [(i, "PENDING", 1, 0, None) for i in ids])
    started = time.perf_counter()
    for k in range(n):
        sid = ids[k % 100]
        conn.execute("begin")
        status, version = conn.execute(
            "select status, version from s where id=?", (sid,)
        ).fetchone()
        new = "PAUSED" if status == "PENDING" else "PENDING"
        conn.execute(
            "update s set status=?, version=?, updated_at=?, reason=? where id=? and version=?",
            (new, version + 1, time.time(), None, sid, version),
        )
        conn.execute(
            "insert into e(session_id, op, from_status, to_status, actor, host, pid, "
            "at, reason) values(?,?,?,?,?,?,?,?,?)",
            (sid, "pause", status, new, "bench", "host", 1, time.time(), None),
        )
        conn.execute("commit")
    return n / (time.perf_counter() - started)


def fill_sessions(workspace: Path, count: int) -> None:
    """``count`` sessions of a three-stage workflow, inserted in bulk through the store's
    own tables (creating them one by one would measure creation, not listing)."""
    from sqlalchemy import insert

    from store import init_db
    from store.models import FlowSession, StageInstance

    engine = init_db(f"sqlite:///{workspace / '.vc' / 'flow.db'}")
    now = time.time()
    sessions, stages = [], []
    for i in range(count):
        sid = uuid.uuid4().hex
        sessions.append(
            {
                "id": sid,
                "name": f"session {i}",
                "workflow_id": "bench",
                "status": ("PENDING", "ACTIVE", "COMPLETED", "FAILED")[i % 4],
                "definition": {},
                "metadata": {},
                "version": 1,
                "created_at": now - count + i,
                "updated_at": now,
                "queued": False,
            }
        )
        for pos, name in enumerate(("a", "b", "c")):
            stages.append(
                {
                    "session_id": sid,
                    "position": pos,
                    "name": name,
                    "stage_type": "task",
                    "config": {},
                    "status": "PENDING",
                    "progress": 0.0,
                    "attempt": 0,
                    "updated_at": now,
                    "metadata": {},
                    "version": 1,
                }
            )
    with engine.begin() as conn:
        conn.execute(insert(FlowSession.__table__), sessions)  # type: ignore[attr-defined]
        conn.execute(insert(StageInstance.__table__), stages)  # type: ignore[attr-defined]
    engine.dispose()


def main(small: bool = False) -> list[str]:
    precompile()
    lines = []
    n = 2000 if small else 10000
    ours = transitions_per_second(n)
    raw = raw_sqlite_per_second(n)
    lines.append(
        report(
            "transitions",
            f"{ours:,.0f}/s via managers, raw sqlite3 {raw:,.0f}/s "
            f"(ratio {ours / raw:.2f}; target >= 5,000/s)",
        )
    )

    workspace = Path(tempfile.mkdtemp())
    fill_sessions(workspace, 1000 if small else 10000)
    env = {**os.environ, "VC_HOME": str(workspace), "NO_COLOR": "1"}
    env.pop("VC_DATABASE_URL", None)
    rounds = 3 if small else 9
    vc = [sys.executable, "-m", "app.main"]
    s, f, r = alternate(
        lambda: timed_command([*vc, "flow", "session", "list", "--limit", "50"], env),
        lambda: timed_command([sys.executable, "-c", "import sqlmodel, typer"], env),
        rounds,
    )
    lines.append(
        report(
            "session list --limit 50",
            f"{s * 1000:.0f} ms vs floor {f * 1000:.0f} ms: ratio {r:.2f} (target <= 0.5)",
        )
    )
    for args in (["--help"], ["flow", "session", "--help"]):
        s, f, r = alternate(
            lambda args=args: timed_command([*vc, *args], env),
            lambda: timed_command([sys.executable, "-c", "import typer"], env),
            rounds,
        )
        lines.append(
            report(
                f"vc {' '.join(args)}",
                f"{s * 1000:.0f} ms vs floor {f * 1000:.0f} ms: ratio {r:.2f} (target <= 1.2)",
            )
        )
    return lines


if __name__ == "__main__":
    main(small="--small" in sys.argv)
