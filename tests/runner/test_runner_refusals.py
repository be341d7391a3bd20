"""What the runner and `vc flow run` refuse or fail, with a clear reason: a missing command or
cwd, a stage without `run`, a session that cannot run (completed, failed, of another
workflow, held by another runner, paused under a live runner or at a gate, a stage
already completed)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

from store import FlowSessionManager, StageManager
from tests.runner.runner_testkit import (
    Store,
    Vc,
    covered_on_postgresql_by_another,
    foreground,
    newest_session,
    sqlite_only,
    start_detached,
    write_workflow,
)
from tests.waiting import wait_until


def refused(vc: Vc, store: Store, sid: str, *args: str) -> str:
    """`vc ARGS…` refused (exit 1) with the session as it was: its one stderr line. What
    a refusal could change is compared; a live runner may still touch the row's time."""

    def state() -> tuple[object, ...]:
        view = store.view(sid)
        stages = tuple((s.name, s.status, s.version, s.attempt) for s in view.stages)
        return (view.status, view.reason, view.version, view.runner_pid, stages)

    before = state()
    result = vc(*args)
    assert result.returncode == 1, result.stdout
    assert state() == before
    return result.stderr


# ---- bad input ----------------------------------------------------------------------------------


@sqlite_only
def test_missing_command_records_exit_127_with_a_clear_reason(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "typo",
        """
        stages:
          - {name: typo, run: no-such-command-xyz --flag}
    """,
    )
    result = vc("flow", "run", "typo")
    assert result.returncode == 1
    assert "command not found" in result.stderr
    view = store.view(newest_session(store))
    stage = view.stages[0]
    assert (stage.status, stage.exit_code) == ("FAILED", 127)
    assert view.reason is not None and "command not found" in view.reason
    assert "no-such-command-xyz" in view.reason


@sqlite_only
def test_missing_cwd_fails_the_stage_with_a_clear_error(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "nowhere",
        """
        stages:
          - {name: nowhere, cwd: does/not/exist, run: echo never}
    """,
    )
    result = vc("flow", "run", "nowhere")
    assert result.returncode == 1
    missing = str(workspace / "does" / "not" / "exist")
    assert f"cwd does not exist: {missing}" in result.stderr
    stage = store.view(newest_session(store)).stages[0]
    assert stage.status == "FAILED" and stage.error == f"cwd does not exist: {missing}"


@covered_on_postgresql_by_another
def test_a_task_stage_without_run_fails_naming_what_is_missing(vc: Vc, store: Store) -> None:
    """A stage made through the API with no command: never the shell command `None`."""
    from app.runner.runner import NO_COMMAND

    with store.factory() as db:
        sid = FlowSessionManager(db).create_session("api-made").id
        StageManager(db).create_stage(sid, stage_type="task", config={"timeout": 3600})
    result = vc("flow", "run", "api-made", "--session", sid)
    assert result.returncode == 1
    assert NO_COMMAND in result.stderr
    assert "command not found" not in result.stderr
    view = store.view(sid)
    assert (view.status, view.stages[0].status) == ("FAILED", "FAILED")
    assert view.stages[0].error == NO_COMMAND
    assert view.reason == f"stage stage-1 failed: {NO_COMMAND}"
    assert not any("command not found" in r.text for r in store.logs(sid))


def test_run_on_a_completed_session_is_refused_and_mentions_retry(vc: Vc, store: Store) -> None:
    assert vc("flow", "run", "hello").returncode == 0
    sid = newest_session(store)
    result = vc("flow", "run", "hello", "--session", sid)
    assert result.returncode == 1
    assert "COMPLETED" in result.stderr and "retry" in result.stderr
    assert result.stderr.count("\n") == 1  # one line, no traceback
    assert [s.attempt for s in store.view(sid).stages] == [1, 1, 1]


def test_run_of_a_stage_the_workflow_does_not_have_is_refused_and_creates_nothing(
    vc: Vc, store: Store
) -> None:
    result = vc("flow", "run", "hello:nostage")
    assert result.returncode == 1
    assert result.stderr == (
        "vc: error: workflow 'hello' has no stage 'nostage'; stages: greet, count, done\n"
    )
    assert json.loads(vc("flow", "session", "list", "--json").stdout) == []


def test_run_session_of_another_workflow_is_refused_and_runs_nothing(vc: Vc, store: Store) -> None:
    sid = vc("flow", "run", "hello", "--queue").stdout.strip()
    result = vc("flow", "run", "broken", "--session", sid)
    assert result.returncode == 1
    assert result.stderr == (
        f"vc: error: session {sid[:12]} belongs to workflow 'hello', not 'broken'\n"
    )
    assert store.view(sid).status == "PENDING"


@covered_on_postgresql_by_another
def test_a_queued_session_no_runner_holds_is_labelled_queued(vc: Vc, store: Store) -> None:
    sid = vc("flow", "run", "hello", "--queue").stdout.strip()
    assert f"{sid[:8]}  " in vc("flow", "session", "list").stdout
    assert "PENDING (queued)" in vc("flow", "session", "list").stdout
    show = vc("flow", "session", "show", sid).stdout.splitlines()
    assert "status:    PENDING (queued)" in show
    assert "runner:    none (queued: the next 'vc flow worker' claims it)" in show
    assert vc("flow", "status", sid).stdout.startswith(f"PENDING (queued)  {sid[:12]}")


@covered_on_postgresql_by_another
def test_a_stage_failure_is_logged_before_the_session_fails(vc: Vc, store: Store) -> None:
    assert vc("flow", "run", "broken").returncode == 1
    texts = [r.text for r in store.logs(newest_session(store))]
    stage_failed = texts.index("stage failed: exit code 3")
    session_failed = next(i for i, t in enumerate(texts) if t.startswith("fail ACTIVE -> FAILED"))
    assert stage_failed < session_failed


# on PostgreSQL: test_run_on_a_completed_session_is_refused_and_mentions_retry
@covered_on_postgresql_by_another
def test_run_on_a_failed_session_is_refused_and_says_to_retry(vc: Vc, store: Store) -> None:
    assert vc("flow", "run", "broken").returncode == 1
    sid = newest_session(store)
    result = vc("flow", "run", "broken", "--session", sid)
    assert result.returncode == 1
    assert f"vc flow session retry {sid[:12]}" in result.stderr


def test_retry_then_run_session_carries_on_without_rerunning_completed_stages(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "fixable",
        """
        stages:
          - {name: ok, run: echo ok >> runs.txt}
          - {name: bad, run: echo bad >> runs.txt; test -e fixed}
          - {name: last, run: echo last >> runs.txt}
    """,
    )
    assert vc("flow", "run", "fixable").returncode == 1
    sid = newest_session(store)
    (workspace / "fixed").touch()
    assert vc("flow", "session", "retry", sid).returncode == 0
    assert store.view(sid).status == "PENDING"
    result = vc("flow", "run", "fixable", "--session", sid)
    assert result.returncode == 0, result.stderr
    view = store.view(sid)
    assert view.status == "COMPLETED"
    assert [(s.name, s.attempt) for s in view.stages] == [("ok", 1), ("bad", 2), ("last", 1)]
    assert (workspace / "runs.txt").read_text().split() == ["ok", "bad", "bad", "last"]


def test_run_of_a_completed_stage_of_a_session_is_refused_and_touches_nothing(
    vc: Vc, store: Store
) -> None:
    sid = vc("flow", "session", "create", "hello").stdout.strip()
    assert vc("flow", "run", "hello:greet", "--session", sid).returncode == 0
    assert refused(vc, store, sid, "flow", "run", "hello:greet", "--session", sid) == (
        f"vc: error: stage greet of session {sid[:12]} is COMPLETED: a stage never runs "
        "twice (start a new session to run it again)\n"
    )


def test_run_of_a_failed_stage_of_a_paused_session_is_refused_and_touches_nothing(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Without fail_fast a failed stage leaves the session going; a run of that stage
    could only fail the session, running nothing."""
    write_workflow(
        workspace,
        "nofast",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'exit 1'}
          - {name: other, needs: [], run: 'sleep 60'}
    """,
    )
    with foreground("nofast") as proc:  # Ctrl-C once bad has failed: PAUSED, no runner
        sid = newest_session(store)
        store.wait_stage(sid, "bad", "FAILED")
        os.killpg(proc.pid, signal.SIGINT)
        proc.communicate(timeout=15)
    assert store.view(sid).status == "PAUSED" and store.stage(sid, "bad").status == "FAILED"
    assert refused(vc, store, sid, "flow", "run", "nofast:bad", "--session", sid) == (
        f"vc: error: stage bad of session {sid[:12]} has FAILED: it runs again after the "
        f"session's retry, once the session has failed ('vc flow session retry {sid[:12]}')\n"
    )


def test_run_of_a_session_waiting_at_a_gate_is_refused_naming_the_approval(
    vc: Vc, store: Store
) -> None:
    sid = start_detached(vc, "gate")
    store.wait_status(sid, "PAUSED")
    assert refused(vc, store, sid, "flow", "run", "gate", "--session", sid) == (
        f"vc: error: session {sid[:12]} is PAUSED waiting at gate approve: pass it with "
        f"'vc flow session approve {sid[:12]} approve'\n"
    )


def test_run_of_a_session_paused_under_its_live_runner_is_refused_naming_resume(
    vc: Vc, store: Store, nap: str
) -> None:
    sid = start_detached(vc, nap)
    assert vc("flow", "session", "pause", sid).returncode == 0
    store.wait_status(sid, "PAUSED")
    wait_until(
        lambda: store.view(sid).stages[0].status == "PAUSED", what="the runner to pause its stage"
    )
    assert refused(vc, store, sid, "flow", "run", nap, "--session", sid) == (
        f"vc: error: session {sid[:12]} is PAUSED: resume it with "
        f"'vc flow session resume {sid[:12]}'\n"
    )


def test_second_runner_is_refused_naming_host_and_pid(vc: Vc, store: Store, nap: str) -> None:
    sid = start_detached(vc, nap)
    view = store.view(sid)
    for extra in ((), ("--detach",)):
        result = vc("flow", "run", nap, "--session", sid, *extra)
        assert result.returncode == 1
        assert f"pid {view.runner_pid} on {view.runner_host}" in result.stderr
    assert store.view(sid).runner_pid == view.runner_pid  # the first runner keeps it
