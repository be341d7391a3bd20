"""`vc flow session …`: the headless twin of the dashboard. Each command resolves the id,
calls one manager method and prints one line (or the JSON document the README's Commands describe).

Decisions the design leaves open, written down here:

- `resume` starts a runner only when the session goes back to ACTIVE without a live one
  (an orphan, or a session paused before its runner died). A session paused before it ever
  started goes back to PENDING and stays there, as before the pause. `approve` follows the
  same rule: a session it leaves ACTIVE without a live runner gets one.
- `retry` only resets the session to PENDING (the state table of docs/ARCHITECTURE.md §2);
  it prints how to run it again (`vc flow run WORKFLOW --session ID`), it does not start a
  runner itself.
- `delete` asks on a terminal; `--yes` skips the question, `--force` also aborts a session
  that a live runner is running. Without a terminal it refuses (exit 1) and changes nothing.
  Answering no prints ``not deleted: ID (NAME)``, not an error, and exits 1: nothing was
  deleted, so ``delete … && next-step`` stops there.
- `logs` prints whole lines even on a narrow terminal (the terminal wraps them); tables are
  fitted to the width instead.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from app.cli.common import (
    check_name,
    confirm,
    echo,
    error_line,
    fail,
    open_store,
    paint,
    parse_meta,
    parse_params,
    print_json,
    progress_text,
    render_table,
    terminal_width,
    translate_errors,
    use_color,
    warning_line,
)
from app.cli.operations import enforce_without_runner, note, operate
from app.console import age_text

if TYPE_CHECKING:
    from app.cli.direct import Reader
    from store.queries import LogView

app = typer.Typer(
    help="Create, inspect and control sessions.", no_args_is_help=True, rich_markup_mode=None
)

STATUSES = ("PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED")
#: --limit / --tail above this are taken as "all" (clamped): the databases bind a 32-bit
#: LIMIT happily everywhere, a 40-digit one nowhere.
MAX_ROWS = 2**31 - 1
IdArg = Annotated[
    str, typer.Argument(metavar="ID", help="Session id or a unique prefix (4+ characters).")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
ParamOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--param",
        "-p",
        metavar="KEY=VALUE",
        help="A value for a parameter of the workflow (repeatable; see 'vc flow show').",
    ),
]


def _status_option(values: list[str] | None) -> tuple[str, ...] | None:
    """``--status`` (repeatable): the statuses wanted, any of them."""
    if not values:
        return None
    wanted: list[str] = []
    for value in values:
        upper = value.strip().upper()
        if upper not in STATUSES:
            raise typer.BadParameter(f"{value!r} is not one of {', '.join(STATUSES)}")
        if upper not in wanted:
            wanted.append(upper)
    return tuple(wanted)


def _rows_option(value: int | None) -> int | None:
    """--limit / --tail: any count above what a database binds means "all of them"."""
    return None if value is None else min(value, MAX_ROWS)


#: Sessions the `list` table shows without --limit (--json gives all of them).
LIST_ROWS = 50


def parallel_text(snapshot: dict[str, Any]) -> str:
    """How the session runs its stages, as its definition snapshot (with a `run
    --max-parallel` in it) says: what `--max-parallel` a session got is seen here."""
    from store.graph import fail_fast, is_legacy, max_parallel

    if is_legacy(snapshot):
        return "one stage at a time, in order (made before stages ran in parallel)"
    failing = (
        "a failure stops the rest" if fail_fast(snapshot) else "branches finish after a failure"
    )
    if snapshot.get("max_parallel") is None:  # the cores of the machine whose runner runs it
        return f"up to the runner's cores ({max_parallel(snapshot)} here) at once; {failing}"
    at_once = max_parallel(snapshot)
    return f"up to {at_once} {'stage' if at_once == 1 else 'stages'} at once; {failing}"


def status_label(status: str, orphaned: bool, awaiting_worker: bool = False) -> str:
    if orphaned:
        return f"{status} (orphaned)"
    return f"{status} (queued)" if awaiting_worker else status


def params_text(params: dict[str, Any]) -> str:
    """A session's parameters on one line: ``day=latest, shards=4`` (cleaned for display)."""
    from store.names import param_text
    from store.text import clean_text

    return clean_text(", ".join(f"{k}={param_text(v)}" for k, v in params.items()))


def output_lines(stages: Any) -> list[str]:
    """``  STAGE.KEY = VALUE`` per output of each stage (cleaned for display)."""
    from store.text import clean_text

    return [
        clean_text(f"  {stage.name}.{key} = {value}")
        for stage in stages
        for key, value in stage.outputs.items()
    ]


def stage_cell(view: Any) -> str:
    """The STAGE cell of the session list: the current stage, ``+N`` when N more run
    alongside it (stages in parallel)."""
    running = view.running_stages
    more = f" +{len(running) - 1}" if len(running) > 1 else ""
    return f"{view.current_stage or '-'}{more}"


def checklist_lines(view: Any, label: str) -> list[str]:
    """The checklists of the gates waiting, ``label`` first: ``item; item`` when one gate
    waits, ``GATE: item; item`` per gate (one per line) when several do."""
    from store.text import clean_text

    gates = [g for g in view.waiting_gates if g.checklist]
    several = len(view.waiting_gates) > 1
    indent = " " * len(label)
    return [
        f"{label if i == 0 else indent}"
        + clean_text(f"{gate.name}: " * several + "; ".join(gate.checklist))
        for i, gate in enumerate(gates)
    ]


def running_lines(view: Any, label: str) -> list[str]:
    """When several stages of a session run at once (stages in parallel): ``label`` and
    each of them, one per line (so none is cut off), then any manual gate waiting
    meanwhile; with one stage running at most, only that gate's line (the current stage
    says the rest)."""
    from store.text import clean_text

    running = view.running_stages
    if view.status == "PAUSED":  # their processes are stopped: "running" would mislead
        label = ("paused" + label.removeprefix("running")).ljust(len(label))
    lines = []
    if len(running) > 1:
        indent = " " * len(label)
        lines = [f"{label if i == 0 else indent}{clean_text(n)}" for i, n in enumerate(running)]
    gates = [g.name for g in view.waiting_gates]
    # Said unless the session waits at the gate (its reason names it, and resume passes
    # it): beside running stages, or beside a pause by hand that a resume leaves waiting.
    if gates and (running or view.waiting_gate is None):
        word = "waiting:" if label.rstrip().endswith(":") else "waiting"
        lines.append(f"{word.ljust(len(label))}{clean_text(', '.join(gates))} (manual gate)")
    return lines


@app.command("list")
def list_cmd(
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            help="Only this status (repeat it for any of several).",
            callback=_status_option,
        ),
    ] = None,
    workflow: Annotated[
        str | None, typer.Option("--workflow", "-w", help="Only this workflow.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(
            "--limit",
            "-n",
            min=1,
            callback=_rows_option,
            help=f"At most N sessions (default: {LIST_ROWS} in the table, all with --json).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """List sessions, newest first. The table shows the newest 50 and says how many there
    are in all; --json prints every matching session unless --limit is given (a script gets
    what it asked for, never a silently shortened list)."""
    from app.cli.direct import reading

    wanted = (MAX_ROWS if limit is None else limit) if as_json else (limit or LIST_ROWS)
    statuses = tuple(status) if status else None  # checked and upper-cased (_status_option)
    with translate_errors(), reading() as reader:
        views = reader.list_sessions(status=statuses, workflow_id=workflow, limit=wanted)
        total = len(views)
        if not as_json and len(views) == wanted:
            total = reader.count_sessions(status=statuses, workflow_id=workflow)
    if as_json:
        print_json([v.to_json() for v in views])
        return
    if not views:
        from store.text import clean_text

        where = getattr(reader, "nowhere", None)  # no store there yet (app.cli.direct._NoStore)
        nowhere = f" ({clean_text(where)})" if where else ""
        echo(
            f"no sessions yet{nowhere}: create one with 'vc flow session create WORKFLOW' "
            "or 'vc flow run WORKFLOW'"
            if total == 0 and not (status or workflow)
            else f"no sessions match{nowhere}"
        )
        return
    width = terminal_width()
    bar = 0 if width is not None and width < 80 else 10
    rows = [
        [
            v.id[:8],
            v.name,
            v.workflow_id,
            status_label(v.status, v.orphaned, v.awaiting_worker),
            progress_text(v.progress, bar),
            stage_cell(v),
            v.runner_host or "-",
            age_text(v.created_at),
        ]
        for v in views
    ]
    table = render_table(
        ["ID", "NAME", "WORKFLOW", "STATUS", "PROGRESS", "STAGE", "HOST", "AGE"],
        rows,
        flexible=1,
        drop_order=(6, 2, 5, 7),
        status_column=3,
        width=width,
        min_flexible=16,
    )
    echo(table)
    if total > len(views):
        echo(f"({len(views)} of {total} sessions; --limit N shows more)")


@app.command("show")
def show_cmd(session_id: IdArg, as_json: JsonOpt = False) -> None:
    """Show one session: state, stages, runner and history."""
    from app.cli.direct import reading
    from app.console import moment_text, runner_text
    from store.text import clean_text

    with translate_errors(), reading() as reader:
        sid = reader.resolve_session_id(session_id)
        view = reader.session_view(sid)
        if view is None:
            raise fail(f"no session matches {session_id!r}")
        events = reader.events(sid)
    if as_json:
        doc = view.to_json()
        doc["events"] = [e.to_json() for e in events]
        print_json(doc)
        return
    width = terminal_width()
    bar = 0 if width is not None and width < 60 else 10
    runner = runner_text(view.runner_pid, view.runner_host, view.heartbeat_at, view.awaiting_worker)
    stage_lines = running_lines(view, "running:   ")
    if len(view.running_stages) <= 1:  # one line says which (and the gate waiting, if any)
        stage_lines.insert(0, f"stage:     {clean_text(view.current_stage or '-')}")
    lines = [
        f"id:        {view.id}",
        f"name:      {clean_text(view.name)}",
        f"workflow:  {clean_text(view.workflow_id)}",
        f"status:    "
        f"{paint(status_label(view.status, view.orphaned, view.awaiting_worker), view.status)}"
        + (f"  ({clean_text(view.reason)})" if view.reason else ""),
        f"progress:  {progress_text(view.progress)}",
        *stage_lines,
        f"runner:    {clean_text(runner)}",
        f"created:   {moment_text(view.created_at)}",
    ]
    lines += checklist_lines(view, "checklist: ")
    if view.metadata:
        meta = ", ".join(f"{k}={v}" for k, v in view.metadata.items())
        lines.append(f"metadata:  {clean_text(meta)}")
    if view.params:
        lines.append(f"params:    {params_text(view.params)}")
    if view.definition is not None and len(view.stages) > 1:
        lines.append(f"parallel:  {parallel_text(view.definition)}")
    stages = render_table(
        ["STAGE", "STATUS", "PROGRESS", "ATTEMPT", "EXIT", "ERROR"],
        [
            [
                s.name,
                s.status,
                progress_text(100.0 if s.status == "COMPLETED" else s.progress, bar),
                str(s.attempt),
                "-" if s.exit_code is None else str(s.exit_code),
                s.error or "",
            ]
            for s in view.stages
        ],
        flexible=(5, 0),
        drop_order=(5, 4, 3),
        status_column=1,
        width=width,
    )
    history = render_table(
        ["WHEN", "OP", "FROM", "TO", "BY", "REASON"],
        [
            [
                time.strftime("%H:%M:%S", time.localtime(e.at)),
                e.op + (f" {e.stage}" if e.stage else ""),
                e.from_status or "-",
                e.to_status or "-",
                f"{e.actor}@{e.host}:{e.pid}",
                e.reason or "",
            ]
            for e in events[-15:]
        ],
        flexible=(5, 1),
        drop_order=(4, 5, 2),
        width=width,
        min_flexible=10,
    )
    outputs = output_lines(view.stages)
    echo(*lines, "", stages, *(["", "outputs:", *outputs] if outputs else []), "", history)


@app.command("create")
def create_cmd(
    workflow_id: Annotated[
        str, typer.Argument(metavar="WORKFLOW_ID", help="Workflow id (see 'vc flow list').")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="A name for the session.", callback=check_name)
    ] = None,
    meta: Annotated[
        list[str] | None, typer.Option("--meta", help="KEY=VALUE metadata (repeatable).")
    ] = None,
    param: ParamOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a PENDING session of a workflow and print its id (on a terminal, also how to
    run it: 'vc flow run WORKFLOW --session ID', on stderr, so stdout stays the id)."""
    from app.cli import direct
    from app.settings import Settings
    from store.new_session import new_session
    from store.workflows import find_workflow

    check_workflow_id(workflow_id)
    metadata = parse_meta(meta or [])
    params = parse_params(param or [])
    settings = Settings.from_env()
    with translate_errors():
        definition = find_workflow(settings.workflows_dir, workflow_id)
        new = new_session(
            definition.id, name=name, metadata=metadata, definition=definition, params=params
        )
        written = direct.create(settings, new)
    if not written:
        with open_store() as ctx, ctx.session() as session:
            ctx.sessions(session).insert_session(new)
    if as_json:
        with translate_errors(), direct.reading(warned=True) as reader:
            view = reader.session_view(new.id)
        assert view is not None
        print_json(view.to_json())
        return
    print(new.id, flush=True)
    if sys.stdout.isatty():  # a person reads it; `id=$(vc flow session create W)` gets the id
        print(
            f"run it with 'vc flow run {definition.id} --session {new.id[:12]}' "
            "(--detach: in the background)",
            file=sys.stderr,
        )


def check_workflow_id(workflow_id: str) -> None:
    """A workflow id that could never name a file (a path, control characters …) is a usage
    error (exit 2); an unknown but well-formed one is a refusal (exit 1) found later."""
    from store.errors import WorkflowError
    from store.names import validate_identifier

    try:
        validate_identifier(workflow_id, "workflow id")
    except WorkflowError as exc:
        raise fail(str(exc), 2) from None


@app.command("pause")
def pause_cmd(session_id: IdArg) -> None:
    """Pause a session: its running stage is stopped (SIGSTOP) by its runner."""
    operate("pause", session_id)


@app.command("resume")
def resume_cmd(session_id: IdArg) -> None:
    """Resume a paused session (starts a runner if a started session has none, unless it
    is queued work: a worker claims that)."""
    operate("resume", session_id)


@app.command("approve")
def approve_cmd(
    session_id: IdArg,
    gate: Annotated[
        str | None,
        typer.Argument(
            metavar="GATE",
            help="The manual stage to pass; may be left out when only one gate waits.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Approve a waiting manual gate: it passes (COMPLETED). A session paused at a gate
    resumes (a runner is started if it has none); others go on as they were."""
    if gate is not None and not gate.strip():
        raise fail("GATE must name a gate (leave it out when only one gate waits)", 2)
    operate("approve", session_id, gate)


@app.command("abort")
def abort_cmd(session_id: IdArg) -> None:
    """Abort a session: FAILED with reason 'aborted'; its stage is terminated."""
    operate("abort", session_id)


@app.command("retry")
def retry_cmd(session_id: IdArg) -> None:
    """Retry a FAILED session: failed stages go back to PENDING, completed ones are kept."""
    operate("retry", session_id)


#: `wait`'s exit code when the timeout comes first (that of timeout(1)).
TIMEOUT_EXIT = 124


def _timeout_option(value: float | None) -> float | None:
    if value is not None and value != value:  # NaN passes the range check
        raise typer.BadParameter("expected a number of seconds >= 0")
    return value


@app.command("wait")
def wait_cmd(
    session_ids: Annotated[
        list[str],
        typer.Argument(metavar="ID...", help="Session ids or unique prefixes (4+ characters)."),
    ],
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            "-t",
            min=0,
            metavar="S",
            callback=_timeout_option,
            help="Give up after S seconds (exit 124).",
        ),
    ] = None,
) -> None:
    """Wait until every session has ended: exit 0 if all COMPLETED, 1 if any FAILED (or was
    deleted), 124 on timeout. A session waiting at a manual gate has not ended."""
    import shlex

    from app.console import result_line
    from store.queries import SessionState, session_states
    from store.text import clean_text
    from store.waiting import wait_for_end

    def report(sid: str, state: SessionState | None) -> None:
        short = sid[:12]
        if state is None:
            error_line(f"session {short} was deleted")
            return
        name = clean_text(state.name)
        if state.ended:
            failed = state.status == "FAILED" and state.reason
            why = f": {clean_text(state.reason or '')}" if failed else ""
            result_line(f"{state.status}: {short} ({name}){why}")
        elif state.gate is not None:
            from app.runner.notifications import action

            _, command = action("gate", sid, gate=state.gate)
            note(f"{short} ({name}) waits at the manual gate {clean_text(state.gate)}: {command}")
        elif state.status == "PAUSED":
            note(f"{short} ({name}) is PAUSED: 'vc flow session resume {short}' goes on")
        elif state.orphaned:
            note(
                f"{short} ({name}) has no live runner (orphaned): "
                f"'vc flow session resume {short}' starts one"
            )
        elif state.never_started:
            workflow = shlex.quote(state.workflow_id)
            note(
                f"{short} ({name}) is PENDING and nothing runs it: "
                f"'vc flow run {workflow} --session {short}' starts it"
            )
        elif state.awaits_worker:
            note(f"{short} ({name}) is queued: the next 'vc flow worker' runs it")

    def store_away(exc: BaseException) -> None:
        from store.engine import unavailable_message
        from store.location import resolve_database_url

        warning_line(f"{unavailable_message(exc, resolve_database_url())}; still waiting")

    from app.cli.direct import refuse_without_store

    with translate_errors():
        refuse_without_store(session_ids, postgresql=True)
    with open_store(writes=False) as ctx:
        with ctx.session() as db:
            manager = ctx.sessions(db)
            ids = list(dict.fromkeys(manager.resolve_session_id(given) for given in session_ids))
            found = session_states(db, ids)  # a full id is not looked up by the resolver
            for given, sid in zip(session_ids, ids, strict=False):
                if sid not in found:
                    raise fail(f"no session matches {given!r}")
        result = wait_for_end(
            ctx.engine,
            ids,
            timeout,
            on_state=report,
            on_store_error=store_away,
            factory=ctx.factory,
        )
        states = result.states
        if result.timed_out:
            # One last read that tests a runner's pid on this host too (the waiting only
            # goes by heartbeats): the line says orphaned as `list` would.
            with contextlib.suppress(Exception), ctx.session() as db:
                states = {**states, **session_states(db, list(states))}
    if result.timed_out:
        left = [
            f"{sid[:12]} {_waited_state(state)}"
            for sid, state in states.items()
            if state is None or not state.ended
        ]
        error_line(f"timed out after {timeout:g} s; not ended: {', '.join(left)}")
        raise typer.Exit(TIMEOUT_EXIT)
    if not result.all_completed:
        raise typer.Exit(1)


@app.command("delete")
def delete_cmd(
    session_id: IdArg,
    force: Annotated[
        bool, typer.Option("--force", help="Abort a running session first; do not ask.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a session with its stages, events and logs (asks first on a terminal)."""
    from app.cli.direct import refuse_without_store
    from store.text import clean_text

    with translate_errors():
        refuse_without_store([session_id], postgresql=True)
    with open_store() as ctx, ctx.session() as session:
        manager = ctx.sessions(session)
        sid = manager.resolve_session_id(session_id)
        obj = manager.get_session(sid)
        name, status = obj.name, obj.status
        session.rollback()  # hold no transaction while a human thinks
        if not (force or yes):
            if not sys.stdin.isatty():
                raise fail(
                    f"not deleted: session {sid[:12]} needs confirmation "
                    "(answer y on a terminal, or pass --yes or --force)"
                )
            if not confirm(f"delete session {sid[:12]} ({clean_text(name)}, {status})?"):
                print(f"not deleted: {sid[:12]} ({clean_text(name)})")
                raise typer.Exit(1)
        assert ctx.logging is not None
        enforce_without_runner(session, sid, "delete")
        from store.errors import InvalidTransition

        try:
            with ctx.logging.deleting(sid):
                manager.delete(sid, force=force)
        except InvalidTransition as exc:
            if exc.current != "ACTIVE":
                raise
            raise fail(f"{exc}, or use --force") from None  # the command line's own way
    print(f"deleted: {sid[:12]} ({clean_text(name)})")


def _waited_state(state: Any) -> str:
    """A session's state as `wait` found it last: ``ACTIVE (orphaned)`` as `list` says it,
    ``PAUSED (waiting: qa)`` at a gate."""
    if state is None:
        return "unknown"
    if state.orphaned:
        return f"{state.status} (orphaned)"
    if state.gate is not None:
        from store.text import clean_text

        return f"{state.status} (waiting: {clean_text(state.gate)})"
    return str(state.status)


@app.command("logs")
def logs_cmd(
    session_id: IdArg,
    level: Annotated[
        str | None,
        typer.Option(
            "--level",
            "-l",
            help="Minimum level: DEBUG INFO WARNING ERROR (default INFO: DEBUG is the "
            "store's own notification traffic).",
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option("--follow", "-f", help="Keep printing new lines until the session ends."),
    ] = False,
    stage: Annotated[str | None, typer.Option("--stage", help="Only this stage's lines.")] = None,
    tail: Annotated[
        int,
        typer.Option(
            "--tail", "-n", min=1, callback=_rows_option, help="Start with the last N lines."
        ),
    ] = 200,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json",
            help="One JSON object per line (id, at, level, category, stage, text), the text "
            "exactly as stored.",
        ),
    ] = False,
) -> None:
    """Print a session's log from the store (works from any host sharing the database)."""
    from app.cli.direct import reading
    from store.views import LEVELS

    if level is not None and level.upper() not in LEVELS:
        raise fail(f"invalid --level {level!r}: use one of {', '.join(LEVELS)}", 2)
    min_level = level.upper() if level else "INFO"
    if stage is not None:
        from store.stage_select import parse_stage

        with translate_errors():
            parse_stage(stage)  # a name no stage can have: a usage error, nothing opened
    color = use_color()
    with translate_errors(), reading() as reader:
        sid = reader.resolve_session_id(session_id)
        view = reader.session_view(sid)
        if view is None:  # a full id is not looked up by the resolver
            raise fail(f"no session matches {session_id!r}")
        if follow and reader.snapshot and view.status not in ("COMPLETED", "FAILED"):
            raise fail(
                f"cannot follow session {sid[:12]}: its store is on a read-only file system "
                "and is read as it was when opened, so no later line would show (leave out "
                "--follow)"
            )
        stages = None
        if stage is not None:  # a matrix stage's name means all its instances
            from store.graph import stage_of
            from store.stage_select import select_stage

            rows = [(s.name, s.config) for s in view.stages]
            # one instance is named as `run` names it, its keys in any order
            only = select_stage(stage, rows, f"session {sid[:12]}")
            stages = [name for name, config in rows if only in (name, stage_of(name, config))]
        records = reader.logs(sid, min_level=min_level, stages=stages, limit=tail + 1, newest=True)
        if len(records) > tail:  # one more than asked for: earlier lines exist
            records = records[1:]
            note(f"earlier lines left out: these are the last {tail} (--tail N shows more)")
        _print_logs(records, color, as_json)
        last_id = records[-1].id if records else 0
        if not follow:
            return
        from app.cli.follow import follow_logs

        def read(source: Reader, after_id: int) -> list[LogView]:
            return source.logs(
                sid, after_id=after_id, min_level=min_level, stages=stages, limit=5000
            )

        follow_logs(reader, sid, last_id, read, lambda rows: _print_logs(rows, color, as_json))


_LEVEL_COLORS = {"DEBUG": "2", "WARNING": "33", "ERROR": "31"}


def _print_logs(records: list[LogView] | Any, color: bool, as_json: bool = False) -> None:
    from store.text import clean_text, json_escaped

    if as_json:
        import json

        lines = [json_escaped(json.dumps(r.to_json(), ensure_ascii=False)) + "\n" for r in records]
        sys.stdout.write("".join(lines))
        sys.stdout.flush()
        return
    out = []
    for r in records:
        stamp = time.strftime("%H:%M:%S", time.localtime(r.at))
        stage = f" [{clean_text(r.stage)}]" if r.stage else ""
        text = clean_text(r.text)
        level = f"{r.level:<7}"
        if color and r.level in _LEVEL_COLORS:
            level = f"\x1b[{_LEVEL_COLORS[r.level]}m{level}\x1b[0m"
        out.append(f"{stamp} {level}{stage} {text}\n")
    sys.stdout.write("".join(out))
    sys.stdout.flush()
