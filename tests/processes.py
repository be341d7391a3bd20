"""Looking at processes through /proc: whether one still runs, its state, and which belong
to a workspace (every process of a workspace carries its VC_HOME)."""

from __future__ import annotations

import os
from pathlib import Path


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie has ended)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"


def processes_of(marker: str) -> list[int]:
    """Live processes (other than this one) whose VC_HOME mentions ``marker``: every process
    of a workspace carries it (server, dashboards, runners, their stages, the demo
    reaper)."""
    found = []
    needle = marker.encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                environ = f.read().split(b"\0")
        except OSError:
            continue
        home = next((v for v in environ if v.startswith(b"VC_HOME=")), b"")
        if needle in home and alive(int(entry)):
            found.append(int(entry))
    return found


def describe(pids: list[int]) -> dict[int, str]:
    """Each pid's command line, for a failure message."""
    lines = {}
    for pid in pids:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            argv = [b"(gone)"]
        lines[pid] = b" ".join(argv).decode(errors="replace")[:200]
    return lines


def state(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3].decode()
