"""`vc flow tui --demo`: a workspace with sample workflows and live sessions to look at.

Without VC_HOME the demo makes a throw-away workspace in the temp directory (``vc-demo-*``,
embedded SQLite, whatever VC_DATABASE_URL says). When the dashboard closes, every session
of it that is not over is aborted, the demo's own sessions and those started from the
dashboard (``n``, ``s``, ``t``, ``r``) alike; once their runners and stages are gone, the
workspace is removed, so nothing keeps running or piles up behind the user's back. With
VC_HOME it uses that workspace, adds the sample workflows that are missing, and leaves
everything running and in place.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

#: Seconds a closing demo waits for its runners to stop their stages and exit (a stage
#: gets its kill_timeout, 10 s by default, to end after SIGTERM) before it kills them.
STOP_TIMEOUT = 15.0

DEMO_WORKFLOWS = {
    "demo-train.yaml": """
        name: Model training (demo)
        description: a long stage reporting progress
        stages:
          - name: prepare
            run: echo "loading dataset"; sleep 1; echo "3 shards ready"
          - name: train
            run: |
              for i in $(seq 1 600); do
                echo "::progress $i/600"
                echo "epoch $i loss 0.$((1000 - i))"
                sleep 1
              done
          - name: evaluate
            run: echo "accuracy 0.93"
    """,
    "demo-release.yaml": """
        name: Release with approval (demo)
        description: stops at a manual gate until someone resumes it
        stages:
          - name: build
            run: echo "building v1.2.3"; echo "::progress 100"
          - name: approve
            description: a human looks at the changelog, then resumes the session
            checklist: [changelog reviewed, staging smoke test green]
          - name: deploy
            run: echo "deployed"
    """,
    "demo-backup.yaml": """
        name: Nightly backup (demo)
        description: fails on upload; retry it with t
        stages:
          - name: snapshot
            run: echo "snapshot of /srv taken"
          - name: upload
            run: echo "uploading to the backup host"; echo "connection refused" >&2; exit 2
    """,
    "demo-etl.yaml": """
        name: Small ETL (demo)
        stages:
          - name: extract
            run: echo "extracted 1200 rows"
          - name: transform
            run: for i in 1 2 3 4; do echo "::progress $i/4"; done; echo "transformed"
          - name: load
            run: echo "loaded"
    """,
}


def prepare_demo_environment() -> Path | None:
    """Point the process at the demo workspace; the workspace when it is a throw-away one
    (made here), None when it is VC_HOME's."""
    if os.environ.get("VC_HOME"):
        return None
    workspace = Path(tempfile.mkdtemp(prefix="vc-demo-"))
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        os.environ.pop(var, None)
    os.environ["VC_HOME"] = str(workspace)
    return workspace


def write_demo_workflows(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in DEMO_WORKFLOWS.items():
        path = directory / name
        if not path.exists():
            path.write_text(textwrap.dedent(text).lstrip())


def start_demo_sessions(ctx: Any) -> list[str]:
    """One session of each demo workflow, each under its own detached runner: one
    completes, one fails, one waits at a manual gate, one keeps running with progress."""
    from app.runner.launch import LaunchError, start_runner
    from store import FlowSessionManager
    from store.workflows import find_workflow

    write_demo_workflows(ctx.settings.workflows_dir)
    started = []
    names = {
        "demo-etl": "etl: daily import",
        "demo-backup": "backup: nightly",
        "demo-release": "release v1.2.3",
        "demo-train": "train: resnet run 7",
    }
    for workflow_id, name in names.items():
        definition = find_workflow(ctx.settings.workflows_dir, workflow_id)
        with ctx.factory() as db:
            sid = (
                FlowSessionManager(db)
                .create_session(
                    definition.id, name=name, definition=definition, metadata={"demo": "yes"}
                )
                .id
            )
        runner = start_runner(ctx, sid)
        if not runner.started:
            raise LaunchError(runner.message)
        started.append(sid)
    return started


def stop_demo_sessions(ctx: Any, timeout: float = STOP_TIMEOUT) -> None:
    """Stop everything of a throw-away demo workspace: abort every session that is not
    over and wait until the runners this process started have exited and the store names
    no live runner of this host; after ``timeout`` seconds, SIGKILL the runners this
    process started (only those: a pid the store names may have been reused) and remove
    what they left of their stages (checked by pid and start time)."""
    from app.runner.launch import stop_starting_runners
    from store.identity import local_host, pid_alive

    children = stop_starting_runners()  # nothing new starts from here on
    deadline = time.monotonic() + timeout
    while True:
        try:
            live, named = _abort_live_sessions(ctx)
        except Exception:  # the store is away: the runners cannot be told; kill them below
            live, named = False, []
        running = [c for c in children if c.returncode is None]
        others = [
            pid
            for host, pid in named
            if host == local_host() and pid != os.getpid() and pid_alive(pid)
        ]
        if not (live or running or others) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    for child in running:
        try:
            child.kill()
        except OSError:
            pass
    if running:
        for child in running:
            try:
                child.wait(5)
            except Exception:
                pass
        try:
            _remove_leftover_stages(ctx)
        except Exception:
            pass


def _abort_live_sessions(ctx: Any) -> tuple[bool, list[tuple[str, int]]]:
    """Abort the sessions that are not over; (whether there were any, the runners the
    store names as (host, pid))."""
    from store import FlowSessionManager
    from store.errors import StoreError
    from store.queries import SessionFilter, list_sessions

    with ctx.factory() as db:
        views = list_sessions(db, SessionFilter(), limit=2**31 - 1)
        db.commit()
        manager = FlowSessionManager(db, actor="demo")
        live = [v for v in views if v.status in ("PENDING", "ACTIVE", "PAUSED")]
        for view in live:
            try:
                manager.abort(view.id, reason="aborted")
            except StoreError:
                pass
    runners = [(v.runner_host or "", v.runner_pid) for v in views if v.runner_pid is not None]
    return bool(live), runners


def _remove_leftover_stages(ctx: Any) -> None:
    """The process groups of stages whose runner had to be killed (never anybody else's:
    :func:`kill_leftover_group` checks the recorded start time)."""
    from sqlalchemy import select

    from app.runner.process import kill_leftover_group
    from store.identity import local_host
    from store.models import StageInstance

    table = StageInstance.__table__  # type: ignore[attr-defined]
    with ctx.factory() as db:
        rows = (
            db.connection()
            .execute(
                select(table.c.pid, table.c.pid_start).where(
                    table.c.pid.is_not(None), table.c.host == local_host()
                )
            )
            .all()
        )
        db.commit()
    for pid, start in rows:
        kill_leftover_group(pid, start, 1.0)


def remove_demo_workspace(workspace: Path) -> str:
    """Remove a throw-away demo workspace; the line that tells the user what happened."""
    try:
        shutil.rmtree(workspace)
    except OSError as exc:
        return (
            f"demo: its sessions were stopped; its workspace {workspace} is left in place "
            f"(cannot remove it: {exc.strerror or exc})"
        )
    return f"demo: its sessions were stopped and its workspace {workspace} removed"
