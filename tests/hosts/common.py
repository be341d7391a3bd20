"""Helpers of the many-hosts suite: raw table snapshots, waiting, process states."""

from __future__ import annotations

import os
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

TABLES = ("flow_sessions", "stage_instances", "flow_events", "log_records")


def snapshot(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary-key order."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as conn:
        for table in TABLES:
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            out[table] = [tuple(r) for r in rows]
    return out


def proc_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T, Z …), None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3].decode()


def alive(pid: int) -> bool:
    state = proc_state(pid)
    return state is not None and state not in ("Z", "X")


def kill_group(pid: int) -> None:
    try:
        os.killpg(pid, 9)
    except OSError:
        pass
