"""Who is acting: host, pid and user recorded on every event and runner claim."""

from __future__ import annotations

import getpass
import os
import socket
from functools import cache


@cache
def local_host() -> str:
    """The host name runners and events are recorded under; `VC_HOSTNAME` overrides it so
    several logical hosts can share one machine (tests, containers with random names)."""
    return os.environ.get("VC_HOSTNAME") or socket.gethostname()


@cache
def local_user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return stat[stat.rfind(b")") + 2 : stat.rfind(b")") + 3] != b"Z"
    except OSError:
        return True
