"""Planning a stage's move: from the stage's current state and what is asked, either the
columns to write or why the move is refused.

Pure (no database, no clock: the caller gives ``now``), so every edge of the stage table of
:mod:`store.status` is tested without a store. :meth:`store.stages.StageManager.move_stage`
reads the stage, plans, and writes the plan conditioned on the version it read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from store.errors import ConcurrentModification, InvalidTransition, StoreError
from store.status import TERMINAL, StageStatus, stage_move_allowed

#: The event op each target state writes.
STAGE_OPS: dict[str, str] = {
    StageStatus.ACTIVE: "stage.start",
    StageStatus.PAUSED: "stage.pause",
    StageStatus.COMPLETED: "stage.complete",
    StageStatus.FAILED: "stage.fail",
    StageStatus.PENDING: "stage.reset",
}
#: The event of a failed attempt that its stage's ``retries`` let run again (no move: the
#: stage stays ACTIVE until the next attempt starts).
RETRY_OP = "stage.retry"


class StageState(NamedTuple):
    """What a move needs of the stage as stored (or as a previous move left it)."""

    session_id: str
    name: str
    status: str
    version: int
    attempt: int
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True)
class MoveRequest:
    """A move asked of a stage. ``metadata`` is merged into the stage's (``progress`` is
    apart); ``attempt`` is the number of a new attempt the caller chose already;
    ``process`` is (pid, start time, host) of the attempt's process; ``finished_at`` is
    when the attempt ended, for a final state recorded later (default: now)."""

    target: StageStatus
    progress: float | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    error: str | None = None
    exit_code: int | None = None
    expected_version: int | None = None
    new_attempt: bool = False
    attempt: int | None = None
    process: tuple[int, int | None, str] | None = None
    finished_at: float | None = None

    @classmethod
    def of(
        cls, status: StageStatus | str, metadata: Mapping[str, Any] | None, **options: Any
    ) -> MoveRequest:
        """The request of ``move_stage``'s arguments: ``metadata["progress"]`` is the
        progress, the other keys the metadata to merge."""
        meta = dict(metadata or {})
        progress = meta.pop("progress", None)
        return cls(StageStatus(status), progress, meta, **options)


@dataclass(frozen=True)
class MovePlan:
    """The columns to write (the version among them), the stage's attempt afterwards, and
    the op of the event to write: None for a same-state update (progress, metadata)."""

    values: dict[str, Any]
    attempt: int
    event: str | None


@dataclass(frozen=True)
class MoveRefusal:
    """Why a move cannot happen from the state it was planned on."""

    reason: Literal["transition", "version", "attempt"]
    message: str
    status: str
    allowed: list[str] = field(default_factory=list)

    def error(self) -> StoreError:
        if self.reason == "transition":
            return InvalidTransition(self.message, self.status, self.allowed)
        return ConcurrentModification(self.message)


def allowed_targets(status: str) -> list[str]:
    """The states a stage in ``status`` may move to, sorted."""
    return sorted(s.value for s in StageStatus if stage_move_allowed(status, s))


def plan_stage_move(
    current: StageState, request: MoveRequest, now: float
) -> MovePlan | MoveRefusal:
    """The move of a stage in state ``current`` asked by ``request`` at time ``now``.

    Refused when the caller pinned another version, when the stage table does not allow
    the move, or when a new attempt's number is not above the stored one. Entering ACTIVE
    from PENDING (or with ``new_attempt``) starts a new attempt: its outputs, exit code and
    error start empty. A final state records when it ended; COMPLETED is 100 % done; a
    move back to PENDING forgets progress, end, process and exit code (none of its
    attempts is running or has ended)."""
    target = request.target
    name = current.name
    if request.expected_version is not None and current.version != request.expected_version:
        return MoveRefusal(
            "version", f"stage {name!r} changed meanwhile; reload and try again", current.status
        )
    if not stage_move_allowed(current.status, target):
        allowed = allowed_targets(current.status)
        return MoveRefusal(
            "transition",
            f"cannot move stage {name!r} from {current.status} to {target}; "
            f"allowed: {', '.join(allowed) or 'none'}",
            current.status,
            allowed,
        )
    values: dict[str, Any] = {"status": target, "version": current.version + 1, "updated_at": now}
    if request.progress is not None:
        values["progress"] = max(0.0, min(100.0, float(request.progress)))
    if request.metadata:
        values["metadata"] = {**(current.metadata or {}), **request.metadata}
    if request.error is not None:
        values["error"] = request.error
    if request.exit_code is not None:
        values["exit_code"] = request.exit_code
    attempt = current.attempt
    if target == StageStatus.ACTIVE and (
        current.status == StageStatus.PENDING or request.new_attempt
    ):
        attempt = current.attempt + 1 if request.attempt is None else request.attempt
        if attempt <= current.attempt:
            return MoveRefusal(
                "attempt", f"stage {name!r} is at attempt {current.attempt} already", current.status
            )
        # A new attempt reports its own outputs: the last attempt's are gone.
        values.update(attempt=attempt, started_at=now, finished_at=None, outputs=None)
        values.setdefault("progress", 0.0)
        values.setdefault("exit_code", None)
        values.setdefault("error", None)
    if request.process is not None:
        pid, pid_start, host = request.process
        values.update(pid=pid, pid_start=pid_start, host=host)
    if target in TERMINAL:
        values["finished_at"] = now if request.finished_at is None else request.finished_at
        if target == StageStatus.COMPLETED:
            values["progress"] = 100.0
    if target == StageStatus.PENDING:
        values.update(progress=0.0, finished_at=None, pid=None, pid_start=None, exit_code=None)
    moved = current.status != target or "attempt" in values
    return MovePlan(values, attempt, STAGE_OPS[target] if moved else None)
