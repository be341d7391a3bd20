"""Replaying a session's event history against the state machine of ``store.status``.

Each event must start where the previous one ended (``from`` == the replayed state), be an
edge the tables allow, and the replay must end in the state the store shows. Stage events
are replayed too, with the side effects of the session operations that move stages without
a stage event of their own (abort fails running and paused stages, retry resets every stage
that is not COMPLETED); ``approve`` is the event of the gate it passed; ``stage.retry``
(a failed attempt run again) leaves its stage ACTIVE.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from store.stage_moves import RETRY_OP
from store.status import (
    GATE_PASS,
    SESSION_TRANSITIONS,
    SessionOp,
    SessionStatus,
    stage_move_allowed,
)

#: ``approve`` is a session operation recorded as the move of the gate it passed.
SESSION_OPS = {op.value for op in SessionOp} - {"delete", "approve"}
STAGE_OPS = {
    "stage.start": "ACTIVE",
    "stage.pause": "PAUSED",
    "stage.complete": "COMPLETED",
    "stage.fail": "FAILED",
    "stage.reset": "PENDING",
    "approve": GATE_PASS[1],
}


def replay(
    events: Sequence[Any],
    stage_names: Iterable[str],
    final_status: str | None,
    final_stages: Mapping[str, str] | None,
) -> list[str]:
    """Problems found replaying ``events`` (rows with op, from_status, to_status, stage),
    oldest first; empty when the history is a valid path to the final state."""
    problems: list[str] = []
    status: str | None = None
    stages: dict[str, str] = {}
    created_stage_events = {e.stage for e in events if e.op == "stage.create"}
    initial = [n for n in stage_names if n not in created_stage_events]
    for i, e in enumerate(events):
        where = f"event {i} ({e.op} {e.stage or ''} {e.from_status}->{e.to_status})"
        if e.op == "create":
            if i != 0 or e.from_status is not None or e.to_status != "PENDING":
                problems.append(f"{where}: create must be the first event, None->PENDING")
            status = "PENDING"
            stages = {n: "PENDING" for n in initial}
            continue
        if status is None:
            problems.append(f"{where}: history does not start with create")
            status = e.from_status
        if e.op in SESSION_OPS:
            row = SESSION_TRANSITIONS[SessionOp(e.op)]
            if e.from_status != status:
                problems.append(f"{where}: from {e.from_status} but the session was {status}")
            if SessionStatus(e.from_status) not in row.sources:
                problems.append(f"{where}: {e.op} is not allowed from {e.from_status}")
            targets = {row.target, row.target_if_never_started} - {None}
            if e.to_status not in targets:
                problems.append(f"{where}: {e.op} cannot lead to {e.to_status}")
            status = e.to_status
            if e.op == "abort":
                for n, s in stages.items():
                    if s in ("ACTIVE", "PAUSED"):
                        stages[n] = "FAILED"
            elif e.op == "retry":
                for n, s in stages.items():
                    if s != "COMPLETED":
                        stages[n] = "PENDING"
        elif e.op == "stage.create":
            stages[e.stage] = "PENDING"
        elif e.op == "notify":
            continue  # a notification sent: history, not a state change
        elif e.op == RETRY_OP:  # a failed attempt run again: the stage stays ACTIVE
            current = stages.get(e.stage)
            if not (e.from_status == e.to_status == current == "ACTIVE"):
                problems.append(f"{where}: a retry keeps an ACTIVE stage ACTIVE, it was {current}")
        elif e.op in STAGE_OPS:
            current = stages.get(e.stage)
            if current is None:
                problems.append(f"{where}: unknown stage")
            elif e.from_status != current:
                problems.append(f"{where}: from {e.from_status} but the stage was {current}")
            if e.to_status != STAGE_OPS[e.op]:
                problems.append(f"{where}: {e.op} cannot lead to {e.to_status}")
            if e.op == "approve" and e.from_status != GATE_PASS[0]:
                problems.append(f"{where}: only a waiting ({GATE_PASS[0]}) gate is approved")
            same = e.from_status == e.to_status
            if not stage_move_allowed(e.from_status, e.to_status) or (
                same and e.op != "stage.start"
            ):
                problems.append(f"{where}: stage move not allowed")
            stages[e.stage] = e.to_status
        else:
            problems.append(f"{where}: unknown operation")
    if final_status is not None and status != final_status:
        problems.append(f"replay ends in {status}, the store says {final_status}")
    if final_stages is not None:
        for name, s in final_stages.items():
            if stages.get(name) != s:
                problems.append(
                    f"stage {name}: replay ends in {stages.get(name)}, the store says {s}"
                )
    return problems
