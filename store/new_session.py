"""What a new session is made of, decided once for both ways in (docs/ARCHITECTURE.md §2).

:meth:`store.sessions.SessionOperations.create_session` (the managers) and
:func:`store.direct_create.create_session` (the driver path of `vc flow run` and `vc flow
session create`) insert exactly the rows this module decides: the session row, one row per
stage instance, the ``create`` event and, for a session created claimed by its runner, the
runner's ``start``. Neither adds a value of its own, so the two cannot drift apart.

Nothing here imports SQLAlchemy, SQLModel or pydantic: the driver path must not pay for
them.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from store.graph import expand
from store.names import validate_identifier
from store.records import SessionChange
from store.status import SessionOp, SessionStatus, StageStatus

if TYPE_CHECKING:
    from store.definitions import WorkflowDefinition

#: The JSON columns of each table (the driver path serializes them as SQLAlchemy does).
JSON_COLUMNS = {
    "flow_sessions": frozenset({"definition", "metadata", "params"}),
    "stage_instances": frozenset({"config", "metadata", "outputs"}),
}

#: The actor of a claim's ``start`` event (what a runner records as).
RUNNER_ACTOR = "runner"


#: The longest session name, in characters: a name is a label people read in a table
#: and type a filter for, not a document (a 100,000-character one widened every list).
MAX_NAME = 200


def name_too_long(name: str) -> str:
    return f"a session name holds at most {MAX_NAME} characters, got {len(name):,}"


#: Letters that draw nothing (Hangul fillers, the braille blank): a name of them is blank.
_BLANK_LETTERS = frozenset("\u115f\u1160\u2800\u3164\uffa0")


def is_blank_name(name: str) -> bool:
    """Whether ``name`` shows as nothing: only spaces, controls, format characters
    (zero-width joiners, soft hyphens, bidi marks, tags), combining marks and letters that
    draw nothing. No list or table could tell such a session apart."""
    import unicodedata

    from store.text import clean_text

    return all(  # once escape sequences are gone, as every front end shows it
        c.isspace()
        or c in _BLANK_LETTERS
        or unicodedata.category(c) in ("Cc", "Cf", "Mn", "Me", "Zs", "Zl", "Zp")
        for c in clean_text(name)
    )


#: The refusal of a blank name, the same from the Python API, the CLI and the dashboard.
BLANK_NAME = "a session name cannot be empty or blank (control characters do not show)"


def new_session_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class NewSession:
    """The rows of one new session, as they are inserted.

    ``session``: every column of ``flow_sessions`` (the user's metadata under its column
    name, ``metadata``). ``stages``: per stage instance, in position order, the columns a
    new stage sets (the others are NULL). ``changes``: the events to write, in order, each
    with the actor that makes it: the ``create`` and, created claimed, the runner's
    ``start``."""

    session: dict[str, Any]
    stages: list[dict[str, Any]]
    changes: list[tuple[SessionChange, str | None]]

    @property
    def id(self) -> str:
        return str(self.session["id"])

    @property
    def name(self) -> str:
        return str(self.session["name"])


def new_session(
    workflow_id: str,
    *,
    name: str | None = None,
    metadata: Mapping[str, Any] | None = None,
    definition: WorkflowDefinition | Mapping[str, Any] | None = None,
    queued: bool = False,
    params: Mapping[str, object] | None = None,
    runner: tuple[str, int] | None = None,
    max_parallel: int | None = None,
) -> NewSession:
    """The rows of a new session (the arguments are those of ``create_session``, which
    documents them). Bad input raises before anything is decided: an invalid workflow id
    (:class:`~store.errors.WorkflowError`), parameter values the workflow does not accept
    (:class:`~store.errors.ParamError`), a ``max_parallel`` a workflow file could not hold
    or a name that is too long or blank (ValueError)."""
    validate_identifier(workflow_id, "workflow id")
    if name is not None and len(name) > MAX_NAME:
        raise ValueError(name_too_long(name))
    if name is not None and is_blank_name(name):
        raise ValueError(BLANK_NAME)
    if max_parallel is not None:
        from store.definitions import MAX_PARALLEL

        if (
            isinstance(max_parallel, bool)
            or not isinstance(max_parallel, int)
            or not 1 <= max_parallel <= MAX_PARALLEL
        ):
            raise ValueError(
                f"max_parallel must be an integer from 1 to {MAX_PARALLEL}, got {max_parallel!r}"
            )
    if definition is None or isinstance(definition, Mapping):
        snapshot: dict[str, Any] = dict(definition or {})
        values: dict[str, Any] = {}
        if params or snapshot.get("params"):
            from store.definitions import params_of, resolve_params

            values = resolve_params(params_of(snapshot), params, workflow_id)
    else:
        snapshot = definition.to_dict()
        values = definition.resolve_params(params)
    if max_parallel is not None:
        snapshot["max_parallel"] = max_parallel
    now = time.time()
    sid = new_session_id()
    session: dict[str, Any] = {
        "id": sid,
        "name": name if name is not None else f"{workflow_id} {time.strftime('%Y-%m-%d %H:%M')}",
        "workflow_id": workflow_id,
        "status": str(SessionStatus.PENDING),
        "reason": None,
        "definition": snapshot,
        "metadata": dict(metadata or {}),
        "params": values,
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "started_at": None,
        "finished_at": None,
        "queued": queued,
        "runner_host": None,
        "runner_pid": None,
        "runner_lease": None,
        "heartbeat_at": None,
    }
    stages = [
        {
            "session_id": sid,
            "position": i,
            **row,
            "status": str(StageStatus.PENDING),
            "progress": 0.0,
            "attempt": 0,
            "updated_at": now,
            "version": 1,
        }
        for i, row in enumerate(expand(snapshot))  # a matrix stage: one row per instance
    ]
    pending, active = str(SessionStatus.PENDING), str(SessionStatus.ACTIVE)
    changes: list[tuple[SessionChange, str | None]] = [
        (SessionChange(sid, SessionOp.CREATE, None, pending, 1), None)
    ]
    if runner is not None:
        # Claimed in the same transaction, as a claim right after would leave it: ACTIVE,
        # the claim's token the version it writes, started when created (no runner ran it
        # before), no longer queue work.
        session.update(
            status=active,
            version=2,
            runner_host=runner[0],
            runner_pid=runner[1],
            runner_lease=2,
            heartbeat_at=now,
            queued=False,
            started_at=now,
        )
        changes.append((SessionChange(sid, SessionOp.START, pending, active, 2), RUNNER_ACTOR))
    return NewSession(session, stages, changes)


__all__ = ["JSON_COLUMNS", "RUNNER_ACTOR", "NewSession", "new_session", "new_session_id"]
