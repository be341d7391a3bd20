"""Shared plumbing of the reliability harness: sizes, the one figures line per part, the
store and the processes the parts drive.

Sizes are modest by default (the whole directory runs in a few minutes on two cores) and
grow with ``VC_STRESS=1``. Every part prints exactly one line of figures to stderr,
prefixed ``[reliability]``, so it shows with ``pytest -s`` and in the ``-rA`` summary.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
STRESS = os.environ.get("VC_STRESS", "") not in ("", "0")
PG_URL = os.environ.get("VC_TEST_DATABASE_URL")


#: pytest-timeout for the parts whose size grows with VC_STRESS
PART_TIMEOUT = 4 * 3600 if STRESS else 600


def scale(default: int, stress: int) -> int:
    """``default`` in CI, ``stress`` with VC_STRESS=1; VC_RELIABILITY_SCALE multiplies both
    (a quick local run: 0.2)."""
    factor = float(os.environ.get("VC_RELIABILITY_SCALE", "1") or 1)
    return max(1, round((stress if STRESS else default) * factor))


def report(part: str, **figures: Any) -> str:
    """Print the part's one line of figures (and return it, for assertion messages)."""
    body = " ".join(f"{k}={v}" for k, v in figures.items())
    line = f"[reliability] {part}: {body}"
    # sys.__stderr__: an earlier test may have swapped sys.stderr (the app's logging does).
    print(line, file=sys.__stderr__ or sys.stderr, flush=True)
    return line


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a `vc` or runner subprocess: ours, without pytest's variables,
    colour off, the repository importable (``tests.reliability`` helpers)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["NO_COLOR"] = "1"
    env.pop("VC_DEBUG", None)
    env["PYTHONPATH"] = str(ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env.update(extra or {})
    return env


def vc(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 60,
    text: bool = True,
) -> subprocess.CompletedProcess[Any]:
    """Run the real CLI (``python -m app.main``) in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "app.main", *args],
        capture_output=True,
        text=text,
        errors="surrogateescape" if text else None,
        env=child_env(env),
        cwd=str(cwd) if cwd else None,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
    )


@contextmanager
def store(url: str) -> Iterator[Any]:
    """(engine, session factory) of ``url``, disposed afterwards."""
    from store import get_session_factory, init_db

    engine = init_db(url)
    try:
        yield engine, get_session_factory(engine)
    finally:
        engine.dispose()


def sqlite_integrity(path: Path) -> str:
    """``PRAGMA integrity_check`` of a SQLite file, through a fresh connection."""
    import sqlite3

    conn = sqlite3.connect(str(path), timeout=30)
    try:
        rows = conn.execute("PRAGMA integrity_check").fetchall()
        fk = conn.execute("PRAGMA foreign_key_check").fetchall()
    finally:
        conn.close()
    result = ", ".join(str(r[0]) for r in rows)
    if fk:
        result += f"; foreign_key_check: {fk[:5]}"
    return result


def session_processes(session_id: str) -> list[int]:
    """Live (non-zombie) processes whose environment says they belong to ``session_id``:
    what is left of its stages."""
    wanted = f"VC_SESSION_ID={session_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                environ = f.read().split(b"\0")
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        state = stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3]
        if wanted in environ and state not in (b"Z", b"X"):
            found.append(int(name))
    return found


def rss_kb(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def open_fds(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


@contextmanager
def pg_schema_url() -> Iterator[str]:
    """A PostgreSQL URL on a schema of its own (dropped afterwards), from
    VC_TEST_DATABASE_URL."""
    import uuid

    import sqlalchemy

    assert PG_URL is not None
    schema = f"rel_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in PG_URL else "?"
    url = f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        try:
            yield url
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
    finally:
        admin.dispose()


def hold_sqlite_write_lock(raw: sqlite3.Connection, patience: float = 0.05) -> bool:
    """Take a SQLite store's write lock on ``raw`` (autocommit), as a slow writer holds it;
    False if another connection holds it for longer than ``patience`` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            raw.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.0002)


def release_sqlite_write_lock(raw: sqlite3.Connection) -> None:
    if raw.in_transaction:
        raw.execute("ROLLBACK")
