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


def pick_gate(short_id: str, waiting: Sequence[str], gate: str | None) -> int | str:
    """Which of session ``short_id``'s ``waiting`` gates (position order) ``approve`` of
    ``gate`` passes, as its index; else why none, as text. ``gate`` None names the only
    one waiting; a matrix gate's name names its only instance waiting (``qa`` for
    ``qa[env=prod]``), as ``logs --stage`` takes it for all its instances."""
    if not waiting:
        return f"session {short_id} has no gate waiting"
    listed = ", ".join(waiting)
    if gate is None:
        if len(waiting) > 1:
            return (
                f"session {short_id} has {len(waiting)} gates waiting: {listed}; "
                "name the one to approve"
            )
        return 0
    if gate in waiting:
        return waiting.index(gate)
    instances = [i for i, name in enumerate(waiting) if name.startswith(gate + "[")]
    if len(instances) == 1:
        return instances[0]
    if instances:
        named = ", ".join(waiting[i] for i in instances)
        return (
            f"session {short_id} has {len(instances)} instances of gate {gate!r} waiting: "
            f"{named}; name the one to approve"
        )
    return f"session {short_id} has no gate {gate!r} waiting; waiting: {listed}"


__all__ = ["WAITING_PREFIX", "approval_resumes", "gate_of_reason", "pick_gate", "waiting_reason"]
