"""The dashboard's operations: plain functions that run in worker threads.

Each one is the manager call the CLI makes for the same command (``vc flow session pause``
…), so the two front ends cannot drift apart. Each returns a short note for a
notification, or raises the manager's typed error, whose message is fit to show a user as
is: the app shows it as a "refused" notification and nothing else happens.

Where the dashboard has to go one step further than the CLI command, it is because the
dashboard has no second command to finish the job with:

* ``new_session`` creates the session and starts its runner detached (``vc flow run
  WORKFLOW --detach``), as the product asks for ``n``;
* ``retry`` puts a FAILED session back to PENDING and starts a runner for it, since the
  dashboard has no ``run --session`` key: ``t`` means "run it again";
* ``resume`` is exactly the CLI's (a runner is started when a started session has none);
  refused on a PENDING session, it says which key starts one;
* ``approve`` passes the only gate waiting (the dashboard has no way to name one: with
  several waiting, the refusal says which command does);
* ``start`` runs a PENDING session, as ``vc flow run WORKFLOW --session ID --detach``
  (the same refusals: nothing left to run, paused, a live runner).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from store.errors import InvalidTransition


class RunnerError(Exception):
    """A runner could not be started; the session itself was changed as the message says."""


@dataclass(frozen=True)
class Done:
    """An operation's note, with an error to show as well: what went wrong on the way
    although the operation itself happened (a resumed session whose runner did not
    start)."""

    note: str
    error: str | None = None
    #: A session the table's cursor goes to (the one the operation made).
    select: str | None = None


def manager(db: Any) -> Any:
    """The session manager of every dashboard operation: events say it came from the TUI,
    transitions are published like the CLI's (integration.log), and their log records are
    stored with them, as the CLI's are."""
    from store import FlowSessionManager, FlowStatusIntegration
    from store.identity import local_user

    return FlowSessionManager(
        db,
        actor=f"{local_user()} (tui)",
        integration=FlowStatusIntegration(db),
        log_in_transaction=True,
    )


@contextmanager
def _changing(ctx: Any) -> Iterator[Any]:
    """A store session for a change, once what this process logged before it is stored:
    the change writes its own log records with it (``store.changes``), so a line still
    queued from the key before (a runner-gone warning) would otherwise land after it."""
    if ctx.logging is not None:
        ctx.logging.flush(timeout=5.0)
    with ctx.factory() as db:
        yield db


def _short(session_id: str) -> str:
    return session_id[:12]


def pause(ctx: Any, session_id: str) -> str:
    with _changing(ctx) as db:
        try:
            change = manager(db).pause(session_id)
        except InvalidTransition as refused:
            return _again(db, session_id, "pause", refused)
        done = _without_runner(db, change.session_id, "pause")
    return f"{change.to_status}: {_short(session_id)}{done}"


def _again(db: Any, session_id: str, op: str, refused: InvalidTransition) -> str:
    """As the CLI: a pause or abort asked again of a session already there, whose runner
    died before it enforced the first, enforces it now (app.runner.orphans.enforce_again);
    else the refusal stands."""
    from app.runner.orphans import enforce_again

    lines = enforce_again(db, session_id, op, refused.current)
    if not lines:
        raise refused
    done = "; ".join(lines)
    return f"already {refused.current}: {_short(session_id)} (its runner is gone: {done})"


def _without_runner(db: Any, session_id: str, op: str) -> str:
    """As the CLI: a session whose runner is gone has its leftover processes stopped or
    removed by the operation itself (app.runner.orphans); what was done, for the note."""
    from app.runner.orphans import enforce_if_no_runner

    lines = enforce_if_no_runner(db, session_id, op)
    return f" (its runner is gone: {'; '.join(lines)})" if lines else ""


def resume(ctx: Any, session_id: str) -> str | Done:
    """As ``vc flow session resume``: a session ACTIVE again without a live runner gets
    one (:func:`_with_runner`)."""
    from store.errors import InvalidTransition

    with _changing(ctx) as db:
        try:
            change = manager(db).resume(session_id)
        except InvalidTransition as exc:
            if exc.current != "PENDING":
                raise
            raise InvalidTransition(f"{exc} (s starts it)", exc.current, exc.allowed) from None
    return _with_runner(ctx, session_id, change.to_status, _short(session_id))


def approve(ctx: Any, session_id: str, under_cursor: str | None = None) -> str | Done:
    """As ``vc flow session approve ID [GATE]``: the session's only waiting gate passes (it
    resumes if it waits there), and a session left ACTIVE without a live runner gets one.
    With several gates waiting, the one under the stage list's cursor (``under_cursor``)
    passes; with the cursor on none of them it is refused, naming them."""
    from store.errors import GateRefused

    with _changing(ctx) as db:
        mgr = manager(db)
        try:
            change = mgr.approve(session_id)
        except GateRefused as exc:
            if len(exc.waiting) < 2:
                raise
            if under_cursor not in exc.waiting:
                how = (
                    "with the stage cursor on it, or with "
                    f"'vc flow session approve {_short(session_id)} GATE'"
                )
                raise GateRefused(f"{exc} {how}", exc.current, exc.allowed, exc.waiting) from None
            change = mgr.approve(session_id, under_cursor)
    note = f"{_short(session_id)}; gate {change.stage} approved"
    return _with_runner(ctx, session_id, change.to_status, note)


def _with_runner(ctx: Any, session_id: str, status: str | None, note: str) -> str | Done:
    """After a resume or an approve (``STATUS: note``): a session ACTIVE without a live
    runner gets one (``ensure_runner``, the CLI's own rule). A failure to start it is an
    error shown besides the note, worded as the CLI's error line; the session is PAUSED
    again."""
    from app.runner.launch import ensure_runner

    started = ensure_runner(ctx, session_id)
    if started is None:
        return f"{status}: {note}"
    if started.outcome in ("queued", "taken"):
        return f"{status}: {note} ({started.message})"
    if not started.started:
        return Done(
            f"PAUSED: {note} (no runner could start, see the error above: paused again)",
            f"could not start a runner: {started.message}",
        )
    return f"{status}: {note} (runner started: pid {started.pid})"


def start(ctx: Any, session_id: str) -> str:
    """Run a session that has not started (PENDING), or an orphan, under a detached
    runner: ``vc flow run WORKFLOW --session ID --detach``."""
    from app.runner.launch import run_refusal, start_runner
    from store.errors import InvalidTransition, SessionNotFound
    from store.queries import get_session_view
    from store.status import allowed_session_ops

    with ctx.factory() as db:
        view = get_session_view(db, session_id)
        db.commit()
    if view is None:
        raise SessionNotFound(f"no session matches {session_id[:12]!r}")
    why = run_refusal(view, keys=True)
    if why is not None:
        raise InvalidTransition(why, view.status, allowed_session_ops(view.status))
    started = start_runner(ctx, session_id)
    if not started.started:
        raise RunnerError(
            f"session {_short(session_id)}: its runner did not start: {started.message}"
        )
    return f"started {_short(session_id)} (runner pid {started.pid})"


def abort(ctx: Any, session_id: str) -> str:
    with _changing(ctx) as db:
        try:
            change = manager(db).abort(session_id)
        except InvalidTransition as refused:
            return _again(db, session_id, "abort", refused)
        done = _without_runner(db, change.session_id, "abort")
    return f"{change.to_status} (aborted): {_short(session_id)}{done}"


def retry(ctx: Any, session_id: str) -> str:
    """As ``vc flow session retry``, with its note on the workflow's file (changed, gone
    or broken since the session's copy was taken), then the runner started."""
    from app.runner.launch import start_runner
    from store.workflows import copy_note

    with _changing(ctx) as db:
        mgr = manager(db)
        change = mgr.retry(session_id)
        obj = mgr.get_session(change.session_id)
        said = copy_note(ctx.settings.workflows_dir, obj.workflow_id, obj.definition)
    started = start_runner(ctx, session_id)
    if not started.started:
        raise RunnerError(
            f"session {_short(session_id)} is PENDING again, but its runner did not start: "
            f"{started.message}"
        )
    return f"retrying {_short(session_id)} (runner pid {started.pid})" + (
        f"; {said}" if said else ""
    )


def delete(ctx: Any, session_id: str) -> str:
    """As ``vc flow session delete``: the session's log file goes with it, and its last
    records go to operations.log only."""
    with _changing(ctx) as db:
        mgr = manager(db)
        session_id = mgr.resolve_session_id(session_id)
        done = _without_runner(db, session_id, "delete")
        if ctx.logging is not None:
            with ctx.logging.deleting(session_id):
                mgr.delete(session_id)
        else:
            mgr.delete(session_id)
    return f"deleted {_short(session_id)}{done}"


def new_session(
    ctx: Any, workflow_id: str, name: str | None, params: Mapping[str, str] | None = None
) -> Done:
    """Create a session of ``workflow_id`` (snapshot of its current definition) with the
    parameter values of the form and start it detached, like ``vc flow run WORKFLOW
    --detach --name NAME --param KEY=VALUE…``."""
    from app.runner.launch import start_runner
    from store.workflows import find_workflow

    definition = find_workflow(ctx.settings.workflows_dir, workflow_id)
    with _changing(ctx) as db:
        session_id = (
            manager(db)
            .create_session(definition.id, name=name, definition=definition, params=params)
            .id
        )
    started = start_runner(ctx, session_id)
    if not started.started:
        raise RunnerError(
            f"session {_short(session_id)} was created (PENDING), but its runner did not "
            f"start: {started.message}"
        )
    return Done(f"started {_short(session_id)} (runner pid {started.pid})", select=session_id)
