"""`vc flow tui --demo`: a workspace with sample workflows and live sessions to look at.

Without VC_HOME the demo makes a throw-away workspace in the temp directory (embedded
SQLite, whatever VC_DATABASE_URL says) and aborts its still-running sessions when the
dashboard closes, so nothing keeps running behind the user's back. With VC_HOME it uses that
workspace, adds the sample workflows that are missing, and leaves everything running.
"""

from __future__ import annotations

import os
import tempfile
import textwrap
from pathlib import Path
from typing import Any

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


def prepare_demo_environment() -> bool:
    """Point the process at the demo workspace; True when it is a throw-away one."""
    if os.environ.get("VC_HOME"):
        return False
    workspace = Path(tempfile.mkdtemp(prefix="vc-demo-"))
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        os.environ.pop(var, None)
    os.environ["VC_HOME"] = str(workspace)
    return True


def write_demo_workflows(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in DEMO_WORKFLOWS.items():
        path = directory / name
        if not path.exists():
            path.write_text(textwrap.dedent(text).lstrip())


def start_demo_sessions(ctx: Any) -> list[str]:
    """One session of each demo workflow, each under its own detached runner: one
    completes, one fails, one waits at a manual gate, one keeps running with progress."""
    from app.runner.launch import spawn_runner
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
        spawn_runner(ctx, sid)
        started.append(sid)
    return started


def stop_demo_sessions(ctx: Any, session_ids: list[str]) -> None:
    """Abort what still runs in a throw-away demo workspace."""
    from store import FlowSessionManager
    from store.errors import StoreError

    with ctx.factory() as db:
        manager = FlowSessionManager(db, actor="demo")
        for sid in session_ids:
            try:
                manager.abort(sid, reason="aborted")
            except StoreError:
                pass
