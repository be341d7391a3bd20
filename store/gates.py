"""Manual gates: which waiting gate an ``approve`` passes, and why it refuses (pure).

A manual gate is a stage without ``run`` (``stage_type`` ``manual``). It waits PAUSED; a
session whose every other branch is done is PAUSED with the reason ``waiting: <gate>``.
Passing a gate is the stage edge :data:`store.status.GATE_PASS` (PAUSED -> COMPLETED) with
an event of op ``approve``, done by :meth:`SessionOperations.approve
<store.sessions.SessionOperations.approve>` or by the ``resume`` of a session PAUSED at it
(docs/ARCHITECTURE.md §3).
"""

from __future__ import annotations

from collections.abc import Sequence

from store.status import SessionStatus

#: The session's reason while it waits at a gate and nothing else can run.
WAITING_PREFIX = "waiting: "


def waiting_reason(gate: str) -> str:
    """The reason of a session PAUSED at ``gate``."""
    return f"{WAITING_PREFIX}{gate}"


def gate_of_reason(reason: str | None) -> str | None:
    """The gate a session's reason says it waits at, else None."""
    if reason is None or not reason.startswith(WAITING_PREFIX):
        return None
    return reason[len(WAITING_PREFIX) :] or None


def approval_resumes(status: str, reason: str | None) -> bool:
    """Whether approving a waiting gate resumes the session: it does when the session is
    PAUSED at a gate (reason ``waiting: <gate>``), whichever gate is approved. That pause
    stands only because nothing else could run; the approved gate's branch can now, and
    the runner pauses again, at a gate still waiting, once nothing else can. A session
    paused by hand stays paused."""
    return status == SessionStatus.PAUSED and gate_of_reason(reason) is not None


def gate_refusal(short_id: str, waiting: Sequence[str], gate: str | None) -> str | None:
    """Why ``approve`` of ``gate`` (None: the only one waiting) cannot pass it in session
    ``short_id``, whose ``waiting`` gates are these (position order); None when it can."""
    if not waiting:
        return f"session {short_id} has no gate waiting"
    listed = ", ".join(waiting)
    if gate is None and len(waiting) > 1:
        return (
            f"session {short_id} has {len(waiting)} gates waiting: {listed}; "
            "name the one to approve"
        )
    if gate is not None and gate not in waiting:
        return f"session {short_id} has no gate {gate!r} waiting; waiting: {listed}"
    return None


__all__ = ["WAITING_PREFIX", "approval_resumes", "gate_of_reason", "gate_refusal", "waiting_reason"]
