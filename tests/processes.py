"""Looking at processes through /proc: whether one still runs, its state, and which belong
to a workspace (every process of a workspace carries its VC_HOME)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from app.runner.stage_guard import MARK as STAGE_GUARD_MARK


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


def guard_of(pid: int) -> int | None:
    """The stage guard a runner or worker started (app/runner/stage_guard.py), if it runs."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rfind(b")") + 2 :].split()[1] != str(pid).encode():
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if STAGE_GUARD_MARK.encode() in f.read():
                    return int(entry)
        except (OSError, IndexError):
            continue
    return None


def kill_with_guard(pid: int) -> None:
    """SIGKILL a runner or worker and its stage guard, so that its stages run on (as after
    a kill of both): what a takeover, or a command on this host, must then deal with. The
    runner is stopped first, so it cannot start another guard meanwhile."""
    os.kill(pid, signal.SIGSTOP)
    guard = guard_of(pid)
    if guard is not None:
        os.kill(guard, signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
