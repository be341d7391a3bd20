"""Plain data fed to the dashboard widgets.

The widgets are presentation only: they never import the store or the app. The app layer turns
store query results into these frozen dataclasses and hands them over; the widgets render them and
post messages back up. Keeping the contract to plain, immutable values means a widget can cache a
rendered line keyed by the row object itself, and a test can drive a widget without a database.

Times are unix seconds (``time.time()`` values); statuses are the store's status names as plain
strings (see ``STATUSES``) so that this module does not depend on ``store.status``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PENDING = "PENDING"
ACTIVE = "ACTIVE"
PAUSED = "PAUSED"
COMPLETED = "COMPLETED"
FAILED = "FAILED"

STATUSES: tuple[str, ...] = (PENDING, ACTIVE, PAUSED, COMPLETED, FAILED)
"""The five states sessions and stages share, in their display order."""

TERMINAL_STATUSES: frozenset[str] = frozenset({COMPLETED, FAILED})
"""States that never change again: their durations are final, so no live clock is needed."""


@dataclass(frozen=True, slots=True)
class SessionRow:
    """One line of the sessions table: what the windowed store query returns for a session."""

    id: str
    name: str
    workflow_id: str
    status: str
    reason: str | None
    orphaned: bool
    progress: float
    """0-100, the mean of the session's stages (COMPLETED counts 100)."""
    current_stage: str | None
    host: str | None
    created_at: float
    updated_at: float
    """When it last changed."""
    finished_at: float | None
    started_at: float | None
    queued: bool = False
    """Queued work no runner holds now: the next worker claims it."""
    also_running: int = 0
    """How many more stages run (or are paused) beside ``current_stage``: shown ``+N``."""
    paused_at: float | None = None
    """For a PAUSED session, when it was paused (None: ``updated_at`` stands in)."""


@dataclass(frozen=True, slots=True)
class StageRow:
    """One stage instance of the selected session."""

    name: str
    status: str
    progress: float
    """0-100."""
    attempt: int
    exit_code: int | None
    started_at: float | None
    finished_at: float | None
    error: str | None
    updated_at: float | None = None
    """When it last changed: for a PAUSED stage, when it was paused."""
    group: str | None = None
    """For an instance of a matrix stage (``resize[size=small,format=png]``), the workflow
    stage it belongs to (``resize``): the stage list shows the instances of one matrix stage
    under one row. None for a stage without a matrix."""
    summary: bool = False
    """A matrix stage's own row, summing up its instances (``widgets.stage_groups``)."""
    known_until: float | None = None
    """For a stage still ACTIVE in the store under a runner known to be dead (its pid gone
    on this host): that runner's last heartbeat, the last moment it was known to run. Its
    clock stops there rather than count time nobody ran it for."""


@dataclass(frozen=True, slots=True)
class LogLine:
    """One log record of a session; ``id`` grows monotonically in the store."""

    id: int
    at: float
    level: str
    stage: str | None
    text: str


@dataclass(frozen=True)
class StatusCounts:
    """Sessions per status for the header, plus the grand total.

    ``counts`` may omit statuses with no session; they display as 0.
    """

    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
