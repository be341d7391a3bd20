"""Is a session's runner alive? The one test, shared by the managers, the queries and the
dashboard (docs/ARCHITECTURE.md §2).

A runner beats every :data:`HEARTBEAT_INTERVAL` seconds; a heartbeat older than the stale
limit means the runner is gone. On the runner's own host a dead pid is noticed at once.
The stale limit is a setting: the application passes its own (``VC_STALE_AFTER``) through
:func:`store.engine.get_session_factory`, whose sessions carry it (:func:`stale_after_of`);
nothing here reads the environment.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from store.identity import local_host, pid_alive
from store.status import SessionStatus

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

HEARTBEAT_INTERVAL = 2.0
#: The default stale limit, in seconds, when no setting is given.
STALE_AFTER = 15.0
#: Where a database session carries the stale limit it was made with (``Session.info``).
STALE_AFTER_KEY = "vc_stale_after"


def stale_after_of(session: Session) -> float:
    """The stale limit the session's factory was given, else :data:`STALE_AFTER`."""
    return float(session.info.get(STALE_AFTER_KEY, STALE_AFTER))


def runner_gone(
    runner_host: str | None,
    runner_pid: int | None,
    heartbeat_at: float | None,
    now: float,
    stale_after: float = STALE_AFTER,
) -> bool:
    """No live runner: none recorded, its heartbeat stale, or (on its own host) its pid
    dead. Unlike :func:`is_orphaned`, whatever the session's status."""
    if runner_pid is None:
        return True
    if heartbeat_at is None or now - heartbeat_at > stale_after:
        return True
    return runner_host == local_host() and not pid_alive(runner_pid)


def runner_lost(
    runner_host: str | None,
    runner_pid: int | None,
    heartbeat_at: float | None,
    now: float,
    stale_after: float = STALE_AFTER,
) -> bool:
    """A runner held the session and none is alive (:func:`runner_gone` with one
    recorded): nobody will enforce a change made to it."""
    return runner_pid is not None and runner_gone(
        runner_host, runner_pid, heartbeat_at, now, stale_after
    )


def is_orphaned(
    status: str,
    runner_host: str | None,
    runner_pid: int | None,
    heartbeat_at: float | None,
    now: float | None = None,
    stale_after: float = STALE_AFTER,
) -> bool:
    """A session ACTIVE or PAUSED whose runner is gone: heartbeat stale, or (on the
    runner's own host) its pid dead. A session no runner ever claimed is not orphaned."""
    if status not in (SessionStatus.ACTIVE, SessionStatus.PAUSED) or runner_pid is None:
        return False
    now = time.time() if now is None else now
    return runner_gone(runner_host, runner_pid, heartbeat_at, now, stale_after)


def awaits_worker(status: str, queued: bool, runner_pid: int | None) -> bool:
    """Queued work that no runner holds, ready to run: the next `vc flow worker` claims
    it. So a resume or an approval that leaves a queued session ACTIVE starts no runner
    of its own for it: that would run it on the host where the command was typed,
    wherever the workers run (a session a stopping worker handed back is ACTIVE with no
    runner, and one a worker's runner handed back at a gate becomes so on its approval)."""
    return (
        bool(queued)
        and runner_pid is None
        and status in (SessionStatus.PENDING, SessionStatus.ACTIVE)
    )


__all__ = [
    "HEARTBEAT_INTERVAL",
    "STALE_AFTER",
    "awaits_worker",
    "is_orphaned",
    "runner_gone",
    "runner_lost",
    "stale_after_of",
]
