"""The public API: every operation on sessions and stages (docs/ARCHITECTURE.md §2-3).

The CLI, the dashboard and the runner all call these managers, so the two front ends
cannot drift apart. Each change is one transaction that writes its event row and bumps
``version``; hot paths use SQLAlchemy Core statements on the session's connection rather
than ORM objects, which keeps a single process well above 5,000 transitions per second on
SQLite. The operations live by concern: :mod:`store.sessions` (state changes),
:mod:`store.leases` (runner ownership, heartbeats, the queue),
:mod:`store.announcements` (what was announced), :mod:`store.stages`
(stages, with the pure move planning of :mod:`store.stage_moves`) and
:mod:`store.log_ingest` (log records).
"""

from __future__ import annotations

from store.announcements import AnnouncementRecords
from store.leases import RunnerLeases
from store.records import SESSION_CATEGORY
from store.stages import StageManager


class FlowSessionManager(RunnerLeases, AnnouncementRecords):
    """Sessions: creation, every state change of docs/ARCHITECTURE.md §2, runner claims and
    heartbeats, and the records of what was announced."""

    CATEGORY = SESSION_CATEGORY


#: The seed's name for the same object.
StageInstanceManager = StageManager


__all__ = ["FlowSessionManager", "StageInstanceManager", "StageManager"]
