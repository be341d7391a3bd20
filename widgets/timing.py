"""The TIME of a stage row: how long it ran, or how long it has been paused. Pure functions
over a ``StageRow`` and "now", shared by the stage rows and the lines of matrix instances."""

from __future__ import annotations

from widgets.data import ACTIVE, PAUSED, PENDING, StageRow
from widgets.formatting import human_duration, paused_duration


def stage_end(stage: StageRow) -> float | None:
    """When the stage stopped running: its end if it finished; for one that is not
    running (PENDING again after an interrupt, FAILED by an abort without an end of its
    own) its last change; for one ACTIVE under a runner dead, that runner's last beat
    (``known_until``); None while it runs (ACTIVE, or PAUSED: a clock of its own)."""
    if stage.finished_at is not None:
        return stage.finished_at
    if stage.status == ACTIVE:
        return stage.known_until
    if stage.status == PAUSED:
        return None
    return stage.updated_at


def stage_duration(stage: StageRow, now: float) -> float | None:
    """Seconds the stage has run: to its end if it stopped (:func:`stage_end`), to
    ``now`` if it runs; None if it never started, or if it is PENDING: waiting to run
    (again, after a retry or an interrupt), where a time of an earlier attempt would read
    as this one's. A matrix group's row is PENDING while some instances are done and
    others wait: it keeps the span of those that ran."""
    if stage.started_at is None or (stage.status == PENDING and not stage.summary):
        return None
    end = stage_end(stage)
    return max(0.0, (now if end is None else end) - stage.started_at)


def stage_time(stage: StageRow, now: float) -> str:
    """The TIME cell: :func:`stage_duration`, except for a PAUSED stage (stopped, or a gate
    waiting), whose clock stops: how long it has been paused, marked ``‖`` (``‖3m``)."""
    if stage.status == PAUSED and stage.finished_at is None and stage.updated_at is not None:
        return paused_duration(now - stage.updated_at)
    return human_duration(stage_duration(stage, now))


def ticking(stage: StageRow) -> bool:
    """Whether the stage's TIME moves with the clock (running, or paused)."""
    return stage_end(stage) is None and (stage.started_at is not None or stage.status == PAUSED)


__all__ = ["stage_duration", "stage_end", "stage_time", "ticking"]
