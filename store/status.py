"""States and the state machine: the single source of what is allowed (docs/ARCHITECTURE.md §2).

Every manager consults these tables; nothing else in the code base decides whether an
operation may happen. Sessions and stages share the five states of the seed.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SessionStatus(StrEnum):
    PENDING = "PENDING"
    ACTIVE = "ACTIVE"
    PAUSED = "PAUSED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


#: Stages share the session states (the seed's five).
StageStatus = SessionStatus

TERMINAL: frozenset[SessionStatus] = frozenset({SessionStatus.COMPLETED, SessionStatus.FAILED})


class SessionOp(StrEnum):
    """Operations on a session; their value is what the event history records."""

    CREATE = "create"
    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    ABORT = "abort"
    COMPLETE = "complete"
    FAIL = "fail"
    RETRY = "retry"
    DELETE = "delete"
    APPROVE = "approve"


@dataclass(frozen=True)
class Transition:
    """One row of the session state machine.

    ``target_if_never_started`` covers the one conditional edge of the design: resuming a
    session that was paused before it ever started puts it back to PENDING, not ACTIVE.
    ``target`` is None where the operation sets no state of the session's own: delete (the
    session is gone afterwards) and approve (it moves a manual gate, see :data:`GATE_PASS`).
    """

    sources: frozenset[SessionStatus]
    target: SessionStatus | None
    target_if_never_started: SessionStatus | None = None


_S = SessionStatus

#: docs/ARCHITECTURE.md §2, one row per operation. START from ACTIVE is only granted by the managers
#: when the session is orphaned (its runner's heartbeat is stale): that is a property of the runner,
#: not of the state, so the manager checks it in addition to this table; so is RESUME from ACTIVE
#: (taking over an orphan, docs/ARCHITECTURE.md §2). Likewise COMPLETE needs every stage COMPLETED,
#: and DELETE of an ACTIVE session needs no live runner. APPROVE passes a waiting manual gate
#: (:data:`GATE_PASS`): the session keeps its state, except a session PAUSED at a gate (reason
#: ``waiting: <gate>``, :func:`store.gates.approval_resumes`), which resumes by RESUME's row in
#: the same transaction.
SESSION_TRANSITIONS: dict[SessionOp, Transition] = {
    SessionOp.START: Transition(frozenset({_S.PENDING, _S.ACTIVE}), _S.ACTIVE),
    SessionOp.PAUSE: Transition(frozenset({_S.PENDING, _S.ACTIVE}), _S.PAUSED),
    SessionOp.RESUME: Transition(frozenset({_S.PAUSED, _S.ACTIVE}), _S.ACTIVE, _S.PENDING),
    SessionOp.ABORT: Transition(frozenset({_S.PENDING, _S.ACTIVE, _S.PAUSED}), _S.FAILED),
    SessionOp.COMPLETE: Transition(frozenset({_S.ACTIVE}), _S.COMPLETED),
    SessionOp.FAIL: Transition(frozenset({_S.ACTIVE, _S.PAUSED}), _S.FAILED),
    SessionOp.RETRY: Transition(frozenset({_S.FAILED}), _S.PENDING),
    SessionOp.DELETE: Transition(frozenset(_S), None),
    SessionOp.APPROVE: Transition(frozenset({_S.PENDING, _S.ACTIVE, _S.PAUSED}), None),
}

#: Stage edges: from -> the states a stage may move to. A same-state "move" is a progress or
#: metadata update and is always allowed for non-terminal stages. FAILED -> PENDING is the
#: reset done by a session retry; ACTIVE -> ACTIVE is a new attempt (timeout retry, orphan).
STAGE_TRANSITIONS: dict[SessionStatus, frozenset[SessionStatus]] = {
    _S.PENDING: frozenset({_S.ACTIVE, _S.PAUSED, _S.COMPLETED, _S.FAILED}),
    _S.ACTIVE: frozenset({_S.ACTIVE, _S.PAUSED, _S.COMPLETED, _S.FAILED, _S.PENDING}),
    _S.PAUSED: frozenset({_S.ACTIVE, _S.COMPLETED, _S.FAILED, _S.PENDING}),
    _S.COMPLETED: frozenset(),
    _S.FAILED: frozenset({_S.PENDING}),
}

#: A manual gate (a stage without ``run``) waits PAUSED; approving it (``approve``, or the
#: ``resume`` of a session PAUSED at it) is this edge of the stage table, with an event of
#: op ``approve``.
GATE_PASS: tuple[StageStatus, StageStatus] = (_S.PAUSED, _S.COMPLETED)


def allowed_session_ops(status: SessionStatus | str) -> list[str]:
    """The operations a user may request in ``status``, for error messages and help."""
    current = SessionStatus(status)
    # APPROVE needs a gate waiting, which the state alone does not tell: its refusals name
    # the gates that wait instead.
    internal = (SessionOp.COMPLETE, SessionOp.FAIL, SessionOp.START, SessionOp.APPROVE)
    ops = [
        op.value
        for op, row in SESSION_TRANSITIONS.items()
        if current in row.sources and op not in internal
    ]
    if current in SESSION_TRANSITIONS[SessionOp.START].sources:
        ops.insert(0, "run")
    if current == SessionStatus.ACTIVE:
        ops = [op for op in ops if op not in ("resume", "run")]
    return ops


def session_target(op: SessionOp, status: SessionStatus | str, started: bool) -> SessionStatus:
    """Target state of ``op`` from ``status`` (caller has checked that it is allowed)."""
    row = SESSION_TRANSITIONS[op]
    if not started and row.target_if_never_started is not None:
        return row.target_if_never_started
    assert row.target is not None
    return row.target


def stage_move_allowed(current: SessionStatus | str, target: SessionStatus | str) -> bool:
    current, target = SessionStatus(current), SessionStatus(target)
    if current == target:
        return current not in TERMINAL
    return target in STAGE_TRANSITIONS[current]
