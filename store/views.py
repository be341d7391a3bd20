"""What the store's reads hand out: sessions, stages, events and log lines as plain frozen
dataclasses, with the derived values every front end shows (progress, the stage being worked
on, what each stage waits for) and the JSON of the README's Commands.

Free of the database layer: the SQLAlchemy queries (:mod:`store.queries`) and the driver
path (:mod:`store.direct_reads`) build the same views, so a command prints the same thing
whichever way it read.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from store.gates import gate_of_reason
from store.graph import instance_waits, stage_of
from store.liveness import awaits_worker
from store.status import TERMINAL, SessionStatus, StageStatus

#: Log levels, lowest first.
LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def compute_progress(status: str, stages: Iterable[tuple[str, float]]) -> float:
    """Session progress, the one formula (docs/ARCHITECTURE.md §2): mean of the stages' progress
    with COMPLETED counting 100. A session without stages is 100 once COMPLETED, else 0."""
    values = [100.0 if st == StageStatus.COMPLETED else float(p or 0.0) for st, p in stages]
    if not values:
        return 100.0 if status == SessionStatus.COMPLETED else 0.0
    return round(sum(values) / len(values), 1)


def iso(ts: float | None) -> str | None:
    """Unix seconds -> ISO 8601 in UTC, the time format of every JSON document."""
    if ts is None:
        return None
    return dt.datetime.fromtimestamp(ts, tz=dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class StageView:
    id: int
    name: str
    stage_type: str
    status: str
    progress: float
    attempt: int
    exit_code: int | None
    error: str | None
    started_at: float | None
    finished_at: float | None
    config: dict[str, Any] = field(default_factory=dict)
    #: The last attempt's process (kept after it exits): what crash recovery looks at.
    pid: int | None = None
    pid_start: int | None = None
    host: str | None = None
    #: The row version when read: a writer can start from the view instead of re-reading.
    version: int | None = None
    #: What the stage reported with ``::output KEY=VALUE`` (its current attempt).
    outputs: dict[str, str] = field(default_factory=dict)
    #: When the stage last changed (for a PAUSED stage: when it was paused).
    updated_at: float | None = None

    @property
    def checklist(self) -> list[str]:
        """What to check before passing a manual gate (empty for a task)."""
        return [str(item) for item in self.config.get("checklist") or ()]

    @property
    def instance(self) -> dict[str, str] | None:
        """The matrix values of this instance of a stage (``{"size": "small"}``), or None
        for a stage without a matrix."""
        values = self.config.get("instance")
        return {str(k): str(v) for k, v in values.items()} if isinstance(values, dict) else None

    @property
    def stage(self) -> str:
        """The workflow stage this row is an instance of (its own name without a matrix)."""
        return stage_of(self.name, self.config)

    def to_json(self, needs: Sequence[str] = ()) -> dict[str, Any]:
        """The stage object of the JSON contract; ``needs`` are the names of the stage rows
        it waits for (the session knows them: :attr:`SessionView.stage_needs`)."""
        return {
            "name": self.name,
            "type": self.stage_type,
            "status": self.status,
            "progress": round(100.0 if self.status == "COMPLETED" else self.progress, 1),
            "attempt": self.attempt,
            "exit_code": self.exit_code,
            "error": self.error,
            "checklist": self.checklist,
            "outputs": self.outputs,
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "instance": self.instance,
            "needs": list(needs),
        }


@dataclass(frozen=True)
class EventView:
    at: float
    op: str
    from_status: str | None
    to_status: str | None
    actor: str
    host: str
    pid: int
    reason: str | None
    stage: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "at": iso(self.at),
            "op": self.op,
            "from": self.from_status,
            "to": self.to_status,
            "actor": self.actor,
            "host": self.host,
            "pid": self.pid,
            "reason": self.reason,
            "stage": self.stage,
        }


@dataclass(frozen=True)
class SessionView:
    id: str
    name: str
    workflow_id: str
    status: str
    reason: str | None
    version: int
    created_at: float
    updated_at: float
    started_at: float | None
    finished_at: float | None
    runner_host: str | None
    runner_pid: int | None
    heartbeat_at: float | None
    queued: bool
    metadata: dict[str, Any]
    stages: tuple[StageView, ...]
    orphaned: bool
    definition: dict[str, Any] | None = None
    #: The parameter values the session was created with.
    params: dict[str, Any] = field(default_factory=dict)
    #: The token of its runner's claim (store.changes.Lease), None without one.
    runner_lease: int | None = None

    @property
    def progress(self) -> float:
        return compute_progress(self.status, [(s.status, s.progress) for s in self.stages])

    @property
    def awaiting_worker(self) -> bool:
        """Queued work that no runner holds now (store.liveness.awaits_worker)."""
        return awaits_worker(self.status, self.queued, self.runner_pid)

    @property
    def waiting_gate(self) -> StageView | None:
        """The manual gate a PAUSED session waits at, which a resume passes: the session's
        reason names it (``waiting: <gate>``, as the resume reads it) and the gate stage is
        PAUSED. None otherwise: a session paused by hand while a gate waits beside its
        other stages is resumed by a resume, and its gate still needs an approve."""
        if self.status != "PAUSED":
            return None
        named = gate_of_reason(self.reason)
        return next((g for g in self.waiting_gates if g.name == named), None)

    @property
    def waiting_gates(self) -> list[StageView]:
        """Every manual gate waiting for its approval (PAUSED), in position order: while
        other stages run (the session ACTIVE) as well as when the session waits there. None
        in a session that has ended: nothing waits there, and approve refuses it."""
        if self.status in TERMINAL:
            return []
        return [s for s in self.stages if s.stage_type == "manual" and s.status == "PAUSED"]

    @property
    def running_stages(self) -> list[str]:
        """The task stages (instances) running or paused, in position order: several when
        stages run in parallel. A manual gate waiting is not among them."""
        return [
            s.name
            for s in self.stages
            if s.stage_type != "manual" and s.status in ("ACTIVE", "PAUSED")
        ]

    @property
    def current_stage(self) -> str | None:
        """The stage being worked on: the first of :attr:`running_stages`, else a manual
        gate waiting, else the first not yet done while the session is live; None before
        start and after the end. (A session running one stage at a time has one stage
        ACTIVE or PAUSED at most: that one.)"""
        running = self.running_stages
        if running:
            return running[0]
        for s in self.stages:
            if s.status in ("ACTIVE", "PAUSED"):
                return s.name
        if self.status in ("ACTIVE", "PAUSED") and self.started_at is not None:
            for s in self.stages:
                if s.status == "PENDING":
                    return s.name
        return None

    @cached_property
    def stage_needs(self) -> dict[str, list[str]]:
        """Per stage row, the names of the rows it waits for (:func:`store.graph.instance_waits`).
        Rows made before stages could run in parallel carry no ``waits_for``: theirs come
        from the definition snapshot, or, in a list (which does not read snapshots), from
        the rows' own configs, which are that snapshot's stages."""
        rows = [(s.name, s.config) for s in self.stages]
        snapshot = self.definition
        if snapshot is None:
            if all("waits_for" in config for _, config in rows):
                snapshot = {}
            else:
                snapshot = {"stages": [{**c, "name": stage_of(n, c)} for n, c in rows]}
        return instance_waits(rows, snapshot)

    def to_json(self) -> dict[str, Any]:
        """The session object of the JSON contract (the README's Commands)."""
        runner = None
        if self.runner_pid is not None:
            runner = {
                "host": self.runner_host,
                "pid": self.runner_pid,
                "heartbeat_at": iso(self.heartbeat_at),
            }
        needs = self.stage_needs
        return {
            "id": self.id,
            "name": self.name,
            "workflow_id": self.workflow_id,
            "status": self.status,
            "reason": self.reason,
            "progress": self.progress,
            "current_stage": self.current_stage,
            "running_stages": self.running_stages,
            "orphaned": self.orphaned,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "started_at": iso(self.started_at),
            "finished_at": iso(self.finished_at),
            "version": self.version,
            "queued": self.queued,
            "metadata": self.metadata,
            "params": self.params,
            "runner": runner,
            "stages": [s.to_json(needs.get(s.name, ())) for s in self.stages],
        } | self._parallel_json()

    def _parallel_json(self) -> dict[str, Any]:
        """How its stages run, where the definition snapshot was read (show, status; a
        list reads none): ``max_parallel`` (null: as many as its runner's machine has
        cores; 1 for a session made before stages ran in parallel) and ``fail_fast``."""
        snapshot = self.definition
        if snapshot is None:
            return {}
        from store.graph import fail_fast, is_legacy

        value = snapshot.get("max_parallel")
        return {
            "max_parallel": 1 if is_legacy(snapshot) else value if isinstance(value, int) else None,
            "fail_fast": fail_fast(snapshot),
        }


@dataclass(frozen=True)
class LogView:
    id: int
    at: float
    level: str
    category: str
    stage: str | None
    text: str

    def to_json(self) -> dict[str, Any]:
        """One line of `session logs --json`: the text exactly as stored (JSON escapes
        what a terminal would act on; the plain output removes it)."""
        return {
            "id": self.id,
            "at": iso(self.at),
            "level": self.level,
            "category": self.category,
            "stage": self.stage,
            "text": self.text,
        }


def status_report(view: SessionView, now: float) -> dict[str, Any]:
    """The session document plus a stage summary: what `vc flow status --json` prints."""
    counts = {s.value: 0 for s in SessionStatus}
    for stage in view.stages:
        counts[stage.status] += 1
    report = view.to_json()
    elapsed = None
    if view.started_at is not None:
        elapsed = round((view.finished_at or now) - view.started_at, 3)
    report["summary"] = {
        "stages_total": len(view.stages),
        "stages_by_status": counts,
        "elapsed_seconds": elapsed,
        "reported_at": iso(now),
    }
    return report


def status_report_text(report: dict[str, Any]) -> str:
    """The integration-log line of a status report."""
    return f"status report: {report['status']} {report['progress']}%"
