"""`vc flow …`: workflow definitions, status, run and worker (`vc flow tui`, the
dashboard, is added by :mod:`app.main`, which composes the front ends)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

import typer

from app.cli import session
from app.cli.common import (
    check_name,
    echo,
    error_line,
    fail,
    paint,
    print_json,
    progress_text,
    render_table,
    terminal_width,
    translate_errors,
)
from app.console import reader_may_leave

app = typer.Typer(help="Workflows and their sessions.", no_args_is_help=True, rich_markup_mode=None)
app.add_typer(session.app, name="session")


def _workflows_dir() -> Path:
    from app.settings import Settings

    return Settings.from_env().workflows_dir


@app.command("list")
def list_workflows(
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """List the workflow definitions in workflows/ (malformed files are reported too, one
    line each on stderr, and make the exit code 1; they never hide the good ones)."""
    with translate_errors():
        from store.workflows import discover_workflows

        found, errors = discover_workflows(_workflows_dir())
    if as_json:
        print_json(
            {
                "workflows": [
                    {
                        "id": w.id,
                        "name": w.name,
                        "description": w.description,
                        "stages": [s.name for s in w.stages],
                        "path": w.path,
                    }
                    for w in found
                ],
                # each placed as a script reads it, and whole as stderr says it
                "errors": [
                    {
                        "path": e.path,
                        "line": e.line,
                        "key": e.key,
                        "problem": e.problem,
                        "text": str(e),
                    }
                    for e in errors
                ],
            }
        )
    else:
        if found:
            echo(
                render_table(
                    ["ID", "NAME", "STAGES", "DESCRIPTION"],
                    [
                        [w.id, w.name, str(len(w.stages)), (w.description or "").strip()]
                        for w in found
                    ],
                    flexible=3,
                    drop_order=(1,),
                    min_flexible=16,
                )
            )
        elif not errors:
            echo(
                f"no workflows in {_workflows_dir()}: add a YAML file there "
                "(see README, 'Writing a workflow')"
            )
        for err in errors:
            error_line(str(err))
    if errors:
        raise typer.Exit(1)


@app.command("show")
def show_workflow(
    workflow_id: Annotated[str, typer.Argument(metavar="WORKFLOW", help="Workflow id.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """Show one workflow definition: its parameters and its stages in execution order."""
    from store.graph import matrix_size
    from store.names import param_text
    from store.text import clean_text, command_line

    session.check_workflow_id(workflow_id)
    with translate_errors():
        from store.workflows import find_workflow

        wf = find_workflow(_workflows_dir(), workflow_id)
        order = wf.execution_order()
    if as_json:
        from store.targets import masked_definition

        doc = masked_definition(wf.to_dict())  # a notification URL holds its secret
        # what each stage waits for, as a session's JSON says it: the stage written
        # before it when the file says nothing (`null` would read as "nothing")
        for stage_doc, needs in zip(doc["stages"], wf.stage_needs(), strict=True):
            stage_doc["needs"] = needs
        # every key of a parameter, null when unset, as a stage has (the snapshot keeps
        # only what the file wrote)
        doc["params"] = {name: p.model_dump(mode="json") for name, p in wf.params.items()}
        doc["path"] = wf.path
        doc["execution_order"] = order
        print_json(doc)
        return
    lines = [f"id:          {wf.id}", f"name:        {clean_text(wf.name)}"]
    if wf.description:
        lines.append(f"description: {clean_text(wf.description)}")
    lines.append(f"file:        {clean_text(wf.path)}")
    if wf.notify is not None:
        from store.targets import masked

        targets = ", ".join(masked(url) for url in wf.notify.to) or "VC_NOTIFY only"
        lines.append(f"notify:      on {', '.join(wf.notify.on)}: {clean_text(targets)}")
    at_once = wf.max_parallel or f"{os.cpu_count() or 1} (the machine's cores)"
    failing = "a failure stops the rest" if wf.fail_fast else "branches finish after a failure"
    stages = "stage" if at_once == 1 else "stages"
    lines.append(f"parallel:    up to {at_once} {stages} at once; {failing}")
    lines.append("")
    by_name = {s.name: s for s in wf.stages}
    waits = dict(zip((s.name for s in wf.stages), wf.stage_needs(), strict=True))
    if wf.params:
        lines += [
            render_table(
                ["PARAMETER", "ACCEPTS", "DEFAULT", "DESCRIPTION"],
                [
                    [
                        key,
                        p.accepts(),
                        "(required)"
                        if p.required
                        else "-"
                        if p.default is None
                        else param_text(p.default),
                        p.description or "",
                    ]
                    for key, p in wf.params.items()
                ],
                flexible=3,
                drop_order=(3,),
                min_flexible=16,
            ),
            "",
        ]
    echo(
        *lines,
        render_table(
            ["STAGE", "RUN", "NEEDS", "TIMEOUT", "RETRIES"],
            [
                [
                    s.name if not s.matrix else f"{s.name} (matrix x{matrix_size(s.matrix)})",
                    command_line(s.run) if s.run is not None else "(manual gate)",
                    ", ".join(waits[s.name]) or "-",
                    "-" if s.timeout is None else f"{s.timeout:g}s",
                    str(s.retries),
                ]
                for s in (by_name[name] for name in order)
            ],
            flexible=1,
            drop_order=(4, 3, 2),
            min_flexible=24,
        ),
    )


@app.command("schema")
def schema_cmd() -> None:
    """Print the JSON Schema of workflow files, for editors' completion and checks (see
    README, 'Writing a workflow')."""
    from store.definitions import json_schema

    print_json(json_schema())


@app.command("status")
def status_cmd(
    session_id: Annotated[
        str, typer.Argument(metavar="ID", help="Session id or a unique prefix (4+ characters).")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
    """A session's status report: state, progress, stages (exit 1 if it FAILED)."""
    import time

    from app.cli.direct import reading, status_log
    from store.errors import SessionNotFound
    from store.views import status_report, status_report_text

    with translate_errors(), reading() as reader:
        sid = reader.resolve_session_id(session_id)
        view = reader.session_view(sid)
        if view is None:
            raise SessionNotFound(f"no session matches {session_id!r}")
    report = status_report(view, time.time())
    status_log(sid, status_report_text(report))
    with reader_may_leave():
        _print_status(view, report, as_json)
    if report["status"] == "FAILED":
        raise typer.Exit(1)


def _print_status(view: Any, report: dict[str, Any], as_json: bool) -> None:
    from store.text import clean_text

    if as_json:
        print_json(report)
    else:
        width = terminal_width()
        bar = 0 if width is not None and width < 60 else 10
        status = session.status_label(report["status"], report["orphaned"], view.awaiting_worker)
        reason = [f"reason   {clean_text(report['reason'])}"] if report["reason"] else []
        reason += session.checklist_lines(view, "check    ")
        if view.params:
            reason.append(f"params   {session.params_text(view.params)}")
        outputs = session.output_lines(view.stages)
        stage = f"  stage {clean_text(report['current_stage'])}" if report["current_stage"] else ""
        running = report["running_stages"]
        if len(running) > 1:
            doing = "paused" if report["status"] == "PAUSED" else "running"
            stage = f"  {len(running)} stages {doing}"
        marks = {"COMPLETED": "✔", "FAILED": "✘", "ACTIVE": "▶", "PAUSED": "‖"}
        echo(
            f"{paint(status, report['status'])}  {report['id'][:12]}  {clean_text(report['name'])}",
            *reason,
            f"progress {progress_text(report['progress'], 20 if bar else 0)}{stage}",
            *session.running_lines(view, "running  "),
            render_table(
                ["", "STAGE", "STATUS", "PROGRESS", "ATTEMPT"],
                [
                    [
                        marks.get(st["status"], "·"),
                        st["name"],
                        st["status"],
                        progress_text(st["progress"], bar),
                        str(st["attempt"]),
                    ]
                    for st in report["stages"]
                ],
                flexible=1,
                drop_order=(4,),
                status_column=2,
                width=width,
                min_flexible=10,
            ),
            *(["outputs", *outputs] if outputs else []),
        )


@app.command("run")
def run_cmd(
    target: Annotated[
        str,
        typer.Argument(
            metavar="WORKFLOW[:STAGE]",
            help="Workflow id, optionally ':stage' or ':stage[key=value,…]' (one matrix instance).",
        ),
    ],
    session_id: Annotated[
        str | None, typer.Option("--session", help="Continue this session.")
    ] = None,
    detach: Annotated[bool, typer.Option("--detach", help="Run in the background.")] = False,
    queue: Annotated[bool, typer.Option("--queue", help="Queue for any worker.")] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="Name of a new session.", callback=check_name)
    ] = None,
    param: session.ParamOpt = None,
    max_parallel: Annotated[
        int | None,
        typer.Option(
            "--max-parallel",
            metavar="N",
            help="Stages of the new session running at once (default: the workflow's).",
        ),
    ] = None,
) -> None:
    """Run a session's remaining stages (a new session unless --session is given)."""
    from app.cli.common import parse_params
    from app.cli.run import run_command

    params = parse_params(param or [])
    code = run_command(
        target,
        session_id=session_id,
        detach=detach,
        queue=queue,
        name=name,
        params=params,
        max_parallel=max_parallel,
    )
    if code:
        raise typer.Exit(code)


@app.command("worker")
def worker_cmd(
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency", "-c", metavar="N", help="Sessions this worker runs at once (1-1024)."
        ),
    ] = 1,
    workflow: Annotated[
        str | None,
        typer.Option(
            "--workflow", "-w", metavar="W", help="Claim queued sessions of workflow W only."
        ),
    ] = None,
) -> None:
    """Claim and run queued sessions (see 'vc flow run --queue')."""
    from app.cli.worker import worker_command

    raise typer.Exit(worker_command(concurrency=concurrency, workflow=workflow))


__all__ = ["app", "fail"]
