"""A stage's output on its way to the log file and the store: a deleted log file, a million
lines, bytes that are not UTF-8, a stage that closes its stdout early."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from store.queries import (
    read_logs,
)
from tests.runner.runner_testkit import (
    Store,
    Vc,
    covered_on_postgresql_by_another,
    gone,
    log_file,
    newest_session,
    sqlite_only,
    start_detached,
    write_workflow,
)
from tests.waiting import wait_until

# ---- output -------------------------------------------------------------------------------------


@sqlite_only
def test_a_session_deleted_while_its_stage_takes_its_kill_timeout_leaves_no_log_file(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """`delete --force` removes the session and its file at once, while its runner stops the
    stage: what the stage says meanwhile (its TERM clean-up) does not create the file again
    (with a note that "the store has" lines of a session that is gone)."""
    write_workflow(
        workspace,
        "stubborn",
        """
        stages:
          - name: slow
            kill_timeout: 2
            run: trap 'echo got TERM' TERM; echo started; while true; do sleep 0.05; done
    """,
    )
    sid = start_detached(vc, "stubborn")
    path = log_file(workspace, sid)
    wait_until(lambda: path.exists() and "| slow | started" in path.read_text(), what="started")
    runner = store.view(sid).runner_pid
    assert runner is not None
    deleted = vc("flow", "session", "delete", sid, "--force", "--yes")
    assert deleted.returncode == 0, deleted.stderr
    wait_until(lambda: gone(runner), timeout=20, what="the runner's end")
    assert not path.exists()


@sqlite_only
def test_logs_deleted_while_a_session_runs_are_created_again_and_the_store_says_so(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "gap",
        """
        stages:
          - name: one
            run: echo before; while [ ! -e go ]; do sleep 0.02; done; echo after
          - {name: two, run: echo two}
    """,
    )
    sid = start_detached(vc, "gap")
    path = log_file(workspace, sid)
    wait_until(lambda: path.exists() and "| one | before" in path.read_text(), what="before")
    shutil.rmtree(workspace / "logs")
    (workspace / "go").touch()
    store.wait_status(sid, "COMPLETED")
    lines = path.read_text().splitlines()
    note = (
        f"vc: the log file {path} was deleted while in use and is created again: the lines "
        "before this one are gone from it (the store has them)"
    )
    assert lines[0].endswith(f"| WARNING | workflow.session.operations | {sid} | - | {note}")
    assert any(line.endswith("| one | after") for line in lines)
    assert any(line.endswith("| two | two") for line in lines)
    warnings = [r.text for r in store.logs(sid) if r.level == "WARNING"]
    assert note.removeprefix("vc: ") in warnings
    assert (workspace / "logs" / "workflow" / "session" / "operations.log").exists()


# PostgreSQL takes the million rows about five times slower (~50 s, most of this file's
# PostgreSQL time): its rate is measured by tests/bench/bench_hosts.py instead.
@covered_on_postgresql_by_another
def test_a_million_output_lines_reach_the_log_file_and_the_store(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "big",
        """
        stages:
          - {name: lines, run: seq 1 1000000}
    """,
    )
    started = time.monotonic()
    result = vc("flow", "run", "big", timeout=120)
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    sid = newest_session(store)
    assert store.count_output(sid, "lines") == 1_000_000
    with log_file(workspace, sid).open("rb") as fh:
        in_file = sum(1 for line in fh if b" | lines | " in line and b"stage.integration" in line)
    assert in_file == 1_000_000
    with store.factory() as db:
        last = read_logs(db, sid, stages=["lines"], limit=1, newest=True)
        tail = [r.text for r in read_logs(db, sid, stages=["lines"], limit=10, newest=True)]
    assert last and "1000000" in tail
    rate = 1_000_000 / elapsed
    print(f"\n1,000,000 lines stored in {elapsed:.2f}s (whole command): {rate:,.0f} lines/s")


def test_non_utf8_and_nul_bytes_are_kept_and_shown_safely(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "binary",
        r"""
        stages:
          - name: binary
            run: |
              printf 'bad \377\376 end\n'
              printf 'nul \000 here\n'
              printf 'esc \033[31mred\033[0m\n'
    """,
    )
    assert vc("flow", "run", "binary").returncode == 0
    sid = newest_session(store)
    texts = [r.text for r in store.logs(sid, stage="binary")]
    assert "bad \\xff\\xfe end" in texts and "nul \\x00 here" in texts
    shown = vc("flow", "session", "logs", sid, "--stage", "binary")
    assert shown.returncode == 0
    assert "bad \\xff\\xfe end" in shown.stdout and "nul \\x00 here" in shown.stdout
    assert "\x1b" not in shown.stdout and "esc red" in shown.stdout
    assert "bad \\xff\\xfe end" in log_file(workspace, sid).read_text()


@sqlite_only
def test_stage_closing_stdout_early_still_runs_to_completion(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "closer",
        """
        stages:
          - name: closer
            run: |
              echo before
              exec 1>&-
              sleep 0.3
              echo after-close >&2
    """,
    )
    assert vc("flow", "run", "closer").returncode == 0
    sid = newest_session(store)
    logs = [
        (r.level, r.text)
        for r in store.logs(sid, stage="closer")
        if r.category == "workflow.stage.integration"
    ]
    assert logs == [("INFO", "before"), ("WARNING", "after-close")]
    assert store.view(sid).status == "COMPLETED"
