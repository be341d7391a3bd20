"""Starting a detached runner: what :func:`app.runner.launch.start_runner` answers, for
each front end to put in its words. Real runner processes on a real SQLite store."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.runner import launch
from tests.runner.runner_testkit import gone
from tests.waiting import wait_until


@pytest.fixture
def ctx(workspace: Path) -> Iterator[Any]:
    from app.context import open_context
    from store.changes import enable_logging

    with open_context() as context:
        yield context
    enable_logging(False)  # open_context switched operation logging on for this process


def _new_session(ctx: Any, workflow_id: str = "hello") -> str:
    from store.workflows import find_workflow

    definition = find_workflow(ctx.settings.workflows_dir, workflow_id)
    with ctx.factory() as db:
        return str(ctx.sessions(db).create_session(definition.id, definition=definition).id)


def _orphan(ctx: Any) -> str:
    """A session started by a runner that is gone (its pid exited): an orphan."""
    import subprocess

    from store.identity import local_host

    sid = _new_session(ctx)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with ctx.factory() as db:
        ctx.sessions(db).start_session(sid, runner_host=local_host(), runner_pid=dead.pid)
    return sid


def _status(ctx: Any, session_id: str) -> str:
    from store.queries import get_session_view

    with ctx.factory() as db:
        view = get_session_view(db, session_id)
    assert view is not None
    return str(view.status)


def test_a_runner_that_claims_its_session_is_started(ctx: Any) -> None:
    sid = _new_session(ctx)
    started = launch.start_runner(ctx, sid)
    assert started.outcome == "started" and started.started
    assert started.pid is not None and started.message == "" and started.exit_code is None
    wait_until(lambda: _status(ctx, sid) == "COMPLETED", "the session completed", 20)
    wait_until(lambda: gone(started.pid), "the runner to exit", 5)


def test_a_refused_claim_is_refused_with_the_runners_own_reason(ctx: Any) -> None:
    started = launch.start_runner(ctx, "f" * 32)  # no such session: the claim says so
    assert started.outcome == "refused" and not started.started
    assert started.pid is None and started.exit_code is None
    assert started.message == f"session {'f' * 12} was deleted"


def test_a_closing_process_refuses_to_start_one(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    sid = _new_session(ctx)
    monkeypatch.setattr(launch, "_no_more_runners", True)
    started = launch.start_runner(ctx, sid)
    assert (started.outcome, started.message) == (
        "refused",
        "this process is closing: it starts no more runners",
    )
    assert _status(ctx, sid) == "PENDING"


def test_a_runner_that_cannot_be_executed_failed(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    missing = tmp_path / "no-python"
    monkeypatch.setattr(launch.sys, "executable", str(missing))
    started = launch.start_runner(ctx, _new_session(ctx))
    assert started.outcome == "failed" and started.pid is None
    assert started.message == f"cannot start {missing}: No such file or directory"


def test_ensure_runner_starts_none_for_a_session_that_is_not_active(ctx: Any) -> None:
    assert launch.ensure_runner(ctx, _new_session(ctx)) is None


def test_ensure_runner_is_content_when_another_runner_took_the_session_meanwhile(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker claims the orphan between the check and the runner's own claim: the
    runner started for it is refused, and the session runs all the same, under the
    runner named (the command that asked says whose)."""
    import os

    from store.identity import local_host

    sid = _orphan(ctx)

    def worker_wins(ctx: Any, session_id: str, **_: Any) -> launch.RunnerStart:
        with ctx.factory() as db:  # the worker's claim, as the runner started here loses it
            ctx.sessions(db).start_session(
                session_id, runner_host=local_host(), runner_pid=os.getpid()
            )
        return launch.RunnerStart("refused", message="it has a live runner")

    monkeypatch.setattr(launch, "start_runner", worker_wins)
    assert launch.ensure_runner(ctx, sid) == launch.RunnerStart(
        "taken", message=f"its runner: pid {os.getpid()} on {local_host()}, started meanwhile"
    )


def test_ensure_runner_names_no_runner_when_the_session_was_aborted_meanwhile(
    ctx: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner started for an orphan fails, and the session was aborted meanwhile:
    nothing runs it, as asked, and the dead runner is not named as its runner."""
    sid = _orphan(ctx)

    def aborted_meanwhile(ctx: Any, session_id: str, **_: Any) -> launch.RunnerStart:
        with ctx.factory() as db:
            ctx.sessions(db).abort(session_id)
        return launch.RunnerStart("failed", message="it could not start")

    monkeypatch.setattr(launch, "start_runner", aborted_meanwhile)
    assert launch.ensure_runner(ctx, sid) is None
    assert _status(ctx, sid) == "FAILED"
