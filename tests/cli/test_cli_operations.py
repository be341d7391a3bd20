"""The session operations of docs/ARCHITECTURE.md §2 through `vc flow session …`: what each does to
the store, what it prints, its exit code, and the refusals."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .helpers import create_session, one_error_line, run, run_on_tty, session_json, snapshot, store


def status_of(workspace: Path, sid: str) -> tuple[str, str | None]:
    doc = session_json(workspace, sid)
    return doc["status"], doc["reason"]


def test_create_prints_the_id_alone_to_a_script(store_workspace: Path, cli) -> None:
    result = cli("flow", "session", "create", "hello")
    assert result.code == 0 and result.err == ""
    (sid,) = result.out.split()
    assert status_of(store_workspace, sid) == ("PENDING", None)


def test_create_on_a_terminal_also_says_how_to_run_it(store_workspace: Path) -> None:
    code, screen = run_on_tty("flow", "session", "create", "hello")
    assert code == 0, screen
    sid, hint = screen.splitlines()
    assert len(sid) == 32
    assert hint == (
        f"run it with 'vc flow run hello --session {sid[:12]}' (--detach: in the background)"
    )


def test_pause_moves_a_pending_session_to_paused(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace, name="nightly")
    result = cli("flow", "session", "pause", sid[:6])
    assert result.code == 0, result.err
    assert result.out == f"PAUSED: {sid[:12]} (nightly)\n"
    assert status_of(store_workspace, sid) == ("PAUSED", None)


def test_resume_of_a_session_that_never_started_returns_it_to_pending_without_a_runner(
    store_workspace: Path, cli
) -> None:
    sid = create_session(store_workspace)
    cli("flow", "session", "pause", sid)
    result = cli("flow", "session", "resume", sid)
    assert result.code == 0, result.err
    assert result.out.startswith(f"PENDING: {sid[:12]}")
    doc = session_json(store_workspace, sid)
    assert (doc["status"], doc["runner"]) == ("PENDING", None)


def test_abort_fails_the_session_with_reason_aborted(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    result = cli("flow", "session", "abort", sid)
    assert result.code == 0, result.err
    assert status_of(store_workspace, sid) == ("FAILED", "aborted")
    event = session_json(store_workspace, sid)["events"][-1]
    assert (event["op"], event["reason"], event["pid"]) == ("abort", "aborted", os.getpid())


def test_retry_resets_a_failed_session_to_pending_and_says_how_to_run_it(
    store_workspace: Path, cli
) -> None:
    from store import FlowSessionManager, StageManager

    sid = create_session(store_workspace, "broken")
    with store(store_workspace) as db:
        sessions, stages = FlowSessionManager(db), StageManager(db)
        sessions.start_session(sid)
        ok, bad, _never = stages.list_stages(sid)
        stages.update_stage_status(ok.id, "ACTIVE")
        stages.update_stage_status(ok.id, "COMPLETED")
        stages.update_stage_status(bad.id, "ACTIVE")
        stages.update_stage_status(bad.id, "FAILED", error="exit 3", exit_code=3)
        sessions.fail(sid, "stage bad failed")
    result = cli("flow", "session", "retry", sid)
    assert result.code == 0, result.err
    assert result.out.splitlines() == [
        f"PENDING: {sid[:12]} ({session_json(store_workspace, sid)['name']})"
    ]  # one line, as every control command's: `out=$(vc flow session retry ID)` gets it
    assert f"run it again with 'vc flow run broken --session {sid[:12]}'" in result.err
    doc = session_json(store_workspace, sid)
    assert doc["status"] == "PENDING" and doc["runner"] is None
    assert [(s["name"], s["status"], s["attempt"]) for s in doc["stages"]] == [
        ("ok", "COMPLETED", 1),
        ("bad", "PENDING", 1),
        ("never", "PENDING", 0),
    ]


def test_retry_of_queued_work_says_the_workers_run_it_again(store_workspace: Path, cli) -> None:
    """A `run --session` after it would race the workers that claim it, and lose."""
    from store import FlowSessionManager
    from store.workflows import find_workflow

    definition = find_workflow(store_workspace / "workflows", "broken")
    with store(store_workspace) as db:
        sessions = FlowSessionManager(db)
        sid = sessions.create_session("broken", definition=definition, queued=True).id
        sessions.abort(sid)  # still queued work, as a worker's failed session is
    result = cli("flow", "session", "retry", sid)
    assert result.code == 0, result.err
    assert len(result.out.splitlines()) == 1
    assert "queued: the next 'vc flow worker' runs it" in result.err
    assert session_json(store_workspace, sid)["status"] == "PENDING"


def _failed_broken_session(workspace: Path) -> str:
    from store import FlowSessionManager, StageManager

    sid = create_session(workspace, "broken")
    with store(workspace) as db:
        sessions, stages = FlowSessionManager(db), StageManager(db)
        sessions.start_session(sid)
        bad = stages.list_stages(sid)[1]
        stages.update_stage_status(bad.id, "ACTIVE")
        stages.update_stage_status(bad.id, "FAILED", error="exit 3", exit_code=3)
        sessions.fail(sid, "stage bad failed")
    return sid


def test_retry_says_when_the_workflow_file_changed_since_the_session_was_made(
    store_workspace: Path, cli
) -> None:
    """The fix a user made in the file is not in the session's own copy: they hear it."""
    sid = _failed_broken_session(store_workspace)
    path = store_workspace / "workflows" / "broken.yaml"
    path.write_text(path.read_text().replace("exit 3", "exit 0"))
    result = cli("flow", "session", "retry", sid)
    assert result.code == 0, result.err
    assert "workflow 'broken' has changed since this session was created" in result.err
    assert "start a new session to run the file as it is now" in result.err


@pytest.mark.parametrize(
    ("change", "why"),
    [("delete", "unknown workflow 'broken'"), ("break", "broken.yaml")],
)
def test_retry_says_when_the_workflow_file_is_gone_or_no_longer_loads(
    store_workspace: Path, cli, change: str, why: str
) -> None:
    sid = _failed_broken_session(store_workspace)
    path = store_workspace / "workflows" / "broken.yaml"
    if change == "delete":
        path.unlink()
    else:
        path.write_text(path.read_text() + "  - bad: [\n")
    result = cli("flow", "session", "retry", sid)
    assert result.code == 0, result.err
    assert result.out.startswith(f"PENDING: {sid[:12]}")
    [line] = [x for x in result.err.splitlines() if not x.startswith("run it again with")]
    assert line.startswith("vc: the workflow file of 'broken' does not load now (")
    assert why in line
    assert line.endswith("the session runs its own copy as it was when the session was created")


def test_the_dashboards_retry_says_it_too(store_workspace: Path, cli) -> None:
    """`t` in the dashboard is the same retry, and tells the same of the file."""
    from app import context
    from app.tui import operations
    from store.changes import enable_logging

    sid = _failed_broken_session(store_workspace)
    path = store_workspace / "workflows" / "broken.yaml"
    path.write_text(path.read_text().replace("exit 3", "exit 0"))
    try:
        with context.open_context() as ctx:
            said = operations.retry(ctx, sid)
    finally:
        enable_logging(False)  # open_context switched operation logging on for this process
    assert said.startswith(f"retrying {sid[:12]} (runner pid ")
    assert "; workflow 'broken' has changed since this session was created" in said
    assert cli("flow", "session", "wait", sid, "--timeout", "30").code == 1  # its own copy


def test_retry_of_a_session_whose_file_is_unchanged_says_nothing_more(
    store_workspace: Path, cli
) -> None:
    sid = _failed_broken_session(store_workspace)
    result = cli("flow", "session", "retry", sid)
    assert result.code == 0
    assert result.err.splitlines() == [
        f"run it again with 'vc flow run broken --session {sid[:12]}'"
    ]


@pytest.mark.parametrize(
    ("setup", "op", "current"),
    [
        ([], "resume", "PENDING"),
        ([], "retry", "PENDING"),
        (["pause"], "pause", "PAUSED"),
        (["abort"], "abort", "FAILED"),
        (["abort"], "pause", "FAILED"),
        (["abort"], "resume", "FAILED"),
    ],
)
def test_an_invalid_transition_is_refused_with_one_line_and_changes_nothing(
    store_workspace: Path, cli, setup: list[str], op: str, current: str
) -> None:
    sid = create_session(store_workspace)
    for step in setup:
        assert cli("flow", "session", step, sid).code == 0
    before = snapshot(store_workspace)
    result = run("flow", "session", op, sid[:8])
    assert result.code == 1
    line = one_error_line(result)
    assert f"cannot {op} session {sid[:12]}: it is {current}" in line
    assert "allowed:" in line
    assert result.out == ""
    assert snapshot(store_workspace) == before


def test_delete_without_force_refuses_without_a_terminal_and_changes_nothing(
    store_workspace: Path,
) -> None:
    sid = create_session(store_workspace)
    before = snapshot(store_workspace)
    result = run("flow", "session", "delete", sid)  # stdin is /dev/null, not a terminal
    assert result.code == 1
    assert "needs confirmation" in one_error_line(result)
    assert result.out == ""
    assert snapshot(store_workspace) == before


def test_delete_asks_on_a_terminal_and_deletes_when_the_answer_is_yes(
    store_workspace: Path,
) -> None:
    sid = create_session(store_workspace, name="old run")
    keep = create_session(store_workspace)
    code, screen = run_on_tty("flow", "session", "delete", sid[:8], answer="y")
    assert code == 0, screen
    assert f"delete session {sid[:12]} (old run, PENDING)? [y/N]" in screen
    assert f"deleted: {sid[:12]} (old run)" in screen
    remaining = snapshot(store_workspace)
    assert [row[0] for row in remaining["flow_sessions"]] == [keep]
    assert all(row[1] == keep for row in remaining["stage_instances"])
    assert all(row[1] == keep for row in remaining["flow_events"])


@pytest.mark.parametrize("answer", ["n", "", "maybe"])
def test_delete_on_a_terminal_changes_nothing_unless_the_answer_is_yes(
    store_workspace: Path, answer: str
) -> None:
    """Answering no is the user's choice, not an error: a plain line (exit 1: nothing was
    deleted, so `delete … && next-step` stops)."""
    sid = create_session(store_workspace, name="keep me")
    before = snapshot(store_workspace)
    code, screen = run_on_tty("flow", "session", "delete", sid, answer=answer)
    assert code == 1, screen
    assert screen.splitlines()[-1] == f"not deleted: {sid[:12]} (keep me)"
    assert "error" not in screen
    assert snapshot(store_workspace) == before


def test_delete_force_removes_the_session_with_its_stages_events_logs_and_log_file(
    store_workspace: Path, cli
) -> None:
    from store.log_ingest import append_logs

    sid = create_session(store_workspace)
    keep = create_session(store_workspace)
    assert cli("flow", "session", "pause", sid).code == 0  # writes its log file
    with store(store_workspace) as db:
        append_logs(
            db,
            [
                {
                    "session_id": sid,
                    "at": 1.0,
                    "level": "INFO",
                    "category": "workflow.stage.integration",
                    "stage": "greet",
                    "text": "hello",
                }
            ],
        )
    log_file = store_workspace / "logs" / "workflow" / "session" / f"{sid}.log"
    assert log_file.exists()
    result = cli("flow", "session", "delete", "--force", sid[:8])
    assert result.code == 0, result.err
    assert result.out.startswith(f"deleted: {sid[:12]}")
    rows = snapshot(store_workspace)
    for table, column in (
        ("flow_sessions", 0),
        ("stage_instances", 1),
        ("flow_events", 1),
        ("log_records", 1),
    ):
        assert all(row[column] != sid for row in rows[table]), table
    assert [row[0] for row in rows["flow_sessions"]] == [keep]
    assert not log_file.exists()
    operations = (log_file.parent / "operations.log").read_text()
    assert f"| {sid} | - | delete PAUSED -> ∅" in operations


def test_delete_refuses_a_session_running_under_a_live_runner_without_force(
    store_workspace: Path,
) -> None:
    from store import FlowSessionManager

    sid = create_session(store_workspace)
    with store(store_workspace) as db:  # this test process plays the live runner
        FlowSessionManager(db).start_session(sid, runner_pid=os.getpid())
    before = snapshot(store_workspace)
    result = run("flow", "session", "delete", "--yes", sid)
    assert result.code == 1
    assert "live runner" in one_error_line(result)
    assert snapshot(store_workspace) == before


def test_delete_force_aborts_a_running_session_first(store_workspace: Path, cli) -> None:
    from store import FlowSessionManager

    sid = create_session(store_workspace)
    with store(store_workspace) as db:
        FlowSessionManager(db).start_session(sid, runner_pid=os.getpid())
    result = cli("flow", "session", "delete", "--force", sid)
    assert result.code == 0, result.err
    assert snapshot(store_workspace)["flow_sessions"] == []
    ops = (store_workspace / "logs/workflow/session/operations.log").read_text()
    assert "abort ACTIVE -> FAILED (aborted)" in ops and "delete FAILED -> ∅" in ops


def test_status_exits_one_for_a_failed_session(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "status", sid).code == 0
    cli("flow", "session", "abort", sid)
    result = cli("flow", "status", sid)
    assert result.code == 1
    assert result.out.startswith(f"FAILED  {sid[:12]}  ")
    assert "\nreason   aborted\n" in result.out


def test_a_real_run_then_show_reports_completed_stages(store_workspace: Path) -> None:
    result = run("flow", "run", "hello", "--name", "real")
    assert result.code == 0, result.err
    doc = run("flow", "session", "list", "--json").json()[0]
    assert (doc["name"], doc["status"], doc["progress"]) == ("real", "COMPLETED", 100.0)
    assert [(s["status"], s["attempt"], s["exit_code"]) for s in doc["stages"]] == [
        ("COMPLETED", 1, 0)
    ] * 3


def test_resume_of_an_orphaned_session_starts_a_runner_that_finishes_it(
    store_workspace: Path,
) -> None:
    import subprocess
    import time

    from store import FlowSessionManager
    from store.identity import local_host

    dead = subprocess.Popen(["true"])
    dead.wait()
    sid = create_session(store_workspace, name="orphan")
    with store(store_workspace) as db:  # a runner on this host that died
        FlowSessionManager(db).start_session(sid, runner_host=local_host(), runner_pid=dead.pid)
    assert session_json(store_workspace, sid)["orphaned"] is True
    result = run("flow", "session", "resume", sid)
    assert result.code == 0, result.err
    assert result.out.startswith(f"ACTIVE: {sid[:12]} (orphan) (runner started: pid ")
    deadline = time.monotonic() + 30
    while session_json(store_workspace, sid)["status"] != "COMPLETED":
        assert time.monotonic() < deadline, session_json(store_workspace, sid)
        time.sleep(0.1)
    doc = session_json(store_workspace, sid)
    assert [s["status"] for s in doc["stages"]] == ["COMPLETED"] * 3
    assert doc["orphaned"] is False


def test_a_resume_whose_runner_cannot_start_pauses_the_session_again_and_exits_1(
    store_workspace: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not left ACTIVE with no runner, which nothing would ever show as orphaned: the
    session is PAUSED again with the reason, and the command says so and fails."""
    import subprocess

    from app.runner import launch
    from store import FlowSessionManager
    from store.identity import local_host

    dead = subprocess.Popen(["true"])
    dead.wait()
    sid = create_session(store_workspace, name="stuck")
    with store(store_workspace) as db:  # interrupted: paused, its runner gone
        FlowSessionManager(db).start_session(sid, runner_host=local_host(), runner_pid=dead.pid)
        FlowSessionManager(db).pause(sid)
    monkeypatch.setattr(launch, "_no_more_runners", True)  # as in a process that is closing
    result = cli("flow", "session", "resume", sid)
    assert result.code == 1
    assert result.err == (
        "vc: error: could not start a runner: this process is closing: it starts no more runners\n"
    )
    assert result.out == (
        f"PAUSED: {sid[:12]} (stuck) (no runner could start, see the error above: paused again)\n"
    )
    doc = session_json(store_workspace, sid)
    assert (doc["status"], doc["reason"]) == (
        "PAUSED",
        "no runner could start: this process is closing: it starts no more runners",
    )


def test_a_detached_run_of_a_paused_session_whose_runner_cannot_start_pauses_it_again(
    store_workspace: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run --session --detach` resumed it to run it: with no runner it is PAUSED again,
    not left ACTIVE with nothing to run it."""
    from app.runner import launch
    from store import FlowSessionManager

    sid = create_session(store_workspace, name="stepped")
    with store(store_workspace) as db:  # as after `run hello:greet --session`: PAUSED
        FlowSessionManager(db).pause(sid)
    monkeypatch.setattr(launch, "_no_more_runners", True)
    result = cli("flow", "run", "hello", "--session", sid, "--detach")
    assert result.code == 1
    doc = session_json(store_workspace, sid)
    assert (doc["status"], doc["reason"]) == (
        "PAUSED",
        "no runner could start: this process is closing: it starts no more runners",
    )


def test_a_session_claimed_since_it_was_read_is_not_paused_back(store_workspace: Path) -> None:
    """The pause back after a runner failed to start is for a session nobody runs: a
    runner that claimed it meanwhile (one that started late, another run) keeps it."""
    import os

    from app.context import open_context
    from app.runner.launch import pause_without_runner
    from store import FlowSessionManager
    from store.identity import local_host

    sid = create_session(store_workspace, name="late")
    read = session_json(store_workspace, sid)["version"]
    with store(store_workspace) as db:  # a runner claims it after the read
        FlowSessionManager(db).start_session(sid, runner_host=local_host(), runner_pid=os.getpid())
    with open_context() as ctx:
        pause_without_runner(ctx, sid, "the runner did not start", read)
    assert session_json(store_workspace, sid)["status"] == "ACTIVE"
