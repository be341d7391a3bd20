"""The session commands' state changes (pause, resume, approve, abort, retry): on the
driver path when it can, else through the managers, with the same output either way; and
what a change needs around it (a runner started, leftovers enforced when the runner is
gone, docs/ARCHITECTURE.md §2 "No runner left"). The commands themselves are in
:mod:`app.cli.session`.
"""

from __future__ import annotations

import sys
from typing import Any

from app.cli.common import error_line, open_store, translate_errors
from app.console import to_stderr, warning_line


def note(text: str) -> None:
    """A line for the person watching (stderr: stdout says only how sessions ended)."""
    to_stderr(f"vc: {text}\n")


def operate(op: str, session_id: str, gate: str | None = None) -> None:
    """One state change: on the driver path when it can (:mod:`app.cli.direct`), else
    through the managers; the same output either way."""
    from app.cli.direct import refuse_without_store
    from store.errors import InvalidTransition

    with translate_errors():
        refuse_without_store([session_id])

    if op != "retry":
        from app.cli.direct import operation

        with translate_errors():
            try:
                outcome = operation(op, session_id, gate)
            except InvalidTransition as refused:
                if not _enforced_again(op, session_id, refused.current):
                    raise
                return
        if outcome is not None:
            change, name, workflow_id = outcome.change, outcome.name, outcome.workflow_id
            if outcome.runner_gone and op in ("pause", "abort"):
                with open_store(warned=True) as ctx, ctx.session() as session:
                    enforce_without_runner(session, change.session_id, op)
            elif op in ("pause", "abort"):
                _say_if_the_runner_does_not_answer(op, *outcome.runner)
            extra = _approved(op, change.stage)
            status, failed = change.to_status, False
            if outcome.needs_runner:
                with open_store(warned=True) as ctx:
                    status, started, failed = _start_runner(ctx, change.session_id, status)
                    extra += started
            elif outcome.for_workers:
                from app.runner.launch import FOR_WORKERS

                extra += f" ({FOR_WORKERS})"
            _report(op, status, change.session_id, name, workflow_id, extra, failed=failed)
            return
    with translate_errors():  # the full path would make a schema to say "no session"
        refuse_without_store([session_id], postgresql=True)
    with open_store() as ctx, ctx.session() as session:
        manager = ctx.sessions(session)
        args = (gate,) if op == "approve" else ()
        try:
            change = getattr(manager, op)(session_id, *args)
        except InvalidTransition as refused:
            if not _enforced_again(op, session_id, refused.current):
                raise
            return
        obj = manager.get_session(change.session_id)
        name, workflow_id = obj.name, obj.workflow_id
        if op == "retry":  # it runs its own copy: the user hears when the file differs
            from store.workflows import copy_note

            said = copy_note(ctx.settings.workflows_dir, workflow_id, obj.definition)
            if said is not None:
                note(said)
        if op in ("pause", "abort"):
            enforce_without_runner(session, change.session_id, op)
        extra = _approved(op, change.stage)
        status, failed = change.to_status, False
        if op in ("resume", "approve") and change.to_status == "ACTIVE":
            status, started, failed = _start_runner(ctx, change.session_id, status)
            extra += started
        elif op in ("resume", "approve") and _awaits_worker(change.to_status, obj):
            from app.runner.launch import FOR_WORKERS

            extra += f" ({FOR_WORKERS})"  # as the driver path says it
    queued = op == "retry" and bool(obj.queued)
    _report(op, status, change.session_id, name, workflow_id, extra, failed=failed, queued=queued)


def _awaits_worker(status: str, obj: Any) -> bool:
    from store.liveness import awaits_worker

    return awaits_worker(status, bool(obj.queued), obj.runner_pid)


def _enforced_again(op: str, session_id: str, current: str) -> bool:
    """A pause or an abort refused because the session is already there, whose runner
    died before it enforced the first one: enforced now, here (app.runner.orphans), and
    said. False when there was nothing left to do: the refusal stands."""
    from app.runner.orphans import ENDS_IN, enforce_again

    if ENDS_IN.get(op) != current or not _runner_lost(session_id):
        return False  # the common refusal stays on the driver path
    with open_store(warned=True) as ctx, ctx.session() as session:
        lines = enforce_again(session, session_id, op, current)
        if not lines:
            return False
        for line in lines:
            note(f"its runner is gone: {line}")
        obj = ctx.sessions(session).get_session(session_id)
        name, workflow_id, full_id = obj.name, obj.workflow_id, obj.id
    _report(op, current, full_id, name, workflow_id, " (it was already; done now)")
    return True


def _runner_lost(session_id: str) -> bool:
    """Did a runner hold the session, and is none alive (``store.liveness.runner_lost``)?
    Read by the driver path when it can."""
    import time

    from app.cli.direct import reading
    from app.settings import Settings
    from store.liveness import runner_lost

    with reading(warned=True) as reader:
        view = reader.session_view(reader.resolve_session_id(session_id))
    if view is None:
        return False
    stale = Settings.from_env().stale_after
    return runner_lost(view.runner_host, view.runner_pid, view.heartbeat_at, time.time(), stale)


def enforce_without_runner(session: Any, session_id: str, op: str) -> None:
    """No live runner holds the session: its leftover stage processes on this host are
    stopped (pause) or removed (abort, delete) here (app.runner.orphans), each said."""
    from app.runner.orphans import enforce_if_no_runner

    for line in enforce_if_no_runner(session, session_id, op):
        note(f"its runner is gone: {line}")


def _say_if_the_runner_does_not_answer(
    op: str, host: str | None, pid: int | None, heartbeat_at: float | None
) -> None:
    """The change is committed, and the runner enforces it when it reads it: a runner
    that is stopped (state T, on this host) or, on another host, whose heartbeat is late
    will not, for now. The user hears it rather than take the stage for stopped."""
    import time

    from app.runner.groups import process_state
    from app.settings import Settings
    from store.identity import local_host
    from store.liveness import HEARTBEAT_INTERVAL

    if pid is None:
        return
    why = None
    stale = Settings.from_env().stale_after
    if host == local_host():
        if process_state(pid) in ("T", "t"):
            why = f"its runner (pid {pid}) is stopped (state T)"
    elif heartbeat_at is not None:
        # another host's clock: late only past half the stale limit, clock skew allowed for
        age = time.time() - heartbeat_at
        if age > max(2.5 * HEARTBEAT_INTERVAL, stale / 2):
            why = f"its runner (pid {pid} on {host}) has not answered for {age:.0f} s"
    if why is None:
        return
    warning_line(
        f"{why}: its stages run on until it reads the {op}; if it never does, "
        f"the session shows orphaned {stale:g} s after its last heartbeat, and '{op}' "
        "again enforces it from here"
    )


def _approved(op: str, gate: str | None) -> str:
    from store.text import clean_text

    return f"; gate {clean_text(gate or '')} approved" if op == "approve" else ""


def _start_runner(ctx: Any, session_id: str, status: str | None) -> tuple[str | None, str, bool]:
    """A runner for a session left ACTIVE without one: the session's status now, what to
    add to the output line, and whether none could start (then the session is PAUSED
    again by ``ensure_runner``, the error is said, and the command exits 1)."""
    from app.runner.launch import ensure_runner

    started = ensure_runner(ctx, session_id)
    if started is not None and started.started:
        return status, f" (runner started: pid {started.pid})", False
    if started is not None and started.outcome in ("queued", "taken"):
        return status, f" ({started.message})", False
    if started is not None:
        error_line(f"could not start a runner: {started.message}")
        return "PAUSED", " (no runner could start, see the error above: paused again)", True
    return status, "", False


def _report(
    op: str,
    status: str | None,
    session_id: str,
    name: str,
    workflow_id: str,
    extra: str,
    *,
    failed: bool = False,
    queued: bool = False,
) -> None:
    """The command's line on stdout; exit 1 after it when ``failed`` (the change was made,
    what had to follow it was not). A retried session says on stderr how it runs again
    (stdout keeps the one line every control command prints): queued work goes back to the
    workers (a `run --session` would race them)."""
    from store.text import clean_text

    short = session_id[:12]
    print(f"{status}: {short} ({clean_text(name)}){extra}", flush=True)
    if op == "retry" and queued:
        from app.runner.launch import FOR_WORKERS

        print(FOR_WORKERS, file=sys.stderr)
    elif op == "retry":
        print(f"run it again with 'vc flow run {workflow_id} --session {short}'", file=sys.stderr)
    if failed:
        import typer

        raise typer.Exit(1)
