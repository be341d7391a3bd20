"""The driver path of the commands people type most (app.cli.direct): `session pause`,
`resume`, `abort`, `approve` and `list` run without the ORM, leave the same log lines as
the full path, and hand over to the full path whenever the store needs its care. (The
workspace fixture's store is SQLite: these tests read its files.)"""

from __future__ import annotations

import json
import re
import sqlite3
import stat
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url

from tests.conftest import PG_URL
from tests.receivers import Silent

from .helpers import at_gates, create_session, imported, one_error_line, run, start_stages

#: What the driver path must not import (issue: answer like a native tool).
HEAVY = {"sqlalchemy", "sqlmodel", "pydantic", "yaml", "loguru", "textual", "alembic"}


def _imported(workspace: Path, *args: str) -> tuple[int, set[str]]:
    """The exit code and the modules of `vc ARGS`, a heavy package named by its top."""
    code, modules = imported(workspace, *args)
    return code, {m.split(".")[0] if m.split(".")[0] in HEAVY else m for m in modules}


def test_pause_resume_abort_and_list_import_no_orm(workspace: Path) -> None:
    sid = create_session(workspace)
    start_stages(workspace, sid, {})
    for expected, *args in (
        (0, "flow", "session", "list"),
        (0, "flow", "session", "list", "--json"),
        (0, "flow", "session", "pause", sid[:8]),
        (0, "flow", "session", "resume", sid[:8]),
        (0, "flow", "session", "abort", sid[:8]),
        (1, "flow", "session", "pause", sid[:8]),  # refused: FAILED
    ):
        code, modules = _imported(workspace, *args)
        assert code == expected, args
        assert "store.direct" in modules, args
        assert not modules & HEAVY, (args, modules & HEAVY)


def test_approve_imports_no_orm(workspace: Path) -> None:
    sid = at_gates(workspace, "twogates", ["qa"], None)
    code, modules = _imported(workspace, "flow", "session", "approve", sid[:8], "qa")
    assert code == 0
    assert "store.direct" in modules
    assert not modules & HEAVY


#: What creating a session may import after all: the workflow file is read and validated.
NEEDED_TO_CREATE = {"pydantic", "yaml"}


def test_run_queue_detach_and_session_create_import_no_orm(workspace: Path) -> None:
    create_session(workspace)  # the store exists: the driver path takes it
    for args in (
        ("flow", "run", "hello", "--queue"),
        ("flow", "run", "hello", "--detach"),
        ("flow", "session", "create", "hello"),
        ("flow", "session", "create", "hello", "--json"),
    ):
        code, modules = _imported(workspace, *args)
        assert code == 0, args
        assert "store.direct_create" in modules, args
        assert not modules & (HEAVY - NEEDED_TO_CREATE), (args, modules & HEAVY)
    sessions = json.loads(run("flow", "session", "list", "--json").out)
    assert len(sessions) == 5
    detached = [s["id"] for s in sessions if s["status"] != "PENDING"]
    assert len(detached) == 1
    assert run("flow", "session", "wait", detached[0], "--timeout", "30").code == 0


def test_a_run_created_on_the_driver_path_logs_what_the_full_path_logs(workspace: Path) -> None:
    create_session(workspace)

    def queue(full_path: bool) -> str:
        if full_path:
            (workspace / ".vc" / "flow.db").chmod(0o644)  # only the full path repairs it
        result = run("flow", "run", "hello", "--queue")
        assert result.code == 0, result.err
        return result.out.strip()

    by_driver, by_full_path = _logged_both_ways(workspace, queue)
    assert len(by_driver[0]) == 2  # create: integration and operation lines
    assert by_driver == by_full_path


def _logged_both_ways(workspace: Path, act: Callable[[bool], str]) -> list[tuple[Any, ...]]:
    """What ``act(full_path)`` (which returns the session it changed; on the full path it
    opens the store to others before each command, which only the full path repairs) logs
    on the driver path, then on the full path: each time the session's file,
    operations.log and the store's rows, as ``_op_lines`` reads them."""
    db = workspace / ".vc" / "flow.db"
    twins = []
    for full_path in (False, True):
        sid = act(full_path)
        log = workspace / "logs" / "workflow" / "session"
        twins.append(
            (
                _op_lines((log / f"{sid}.log").read_text(), sid),
                _op_lines((log / "operations.log").read_text(), sid),
                _store_lines(db, sid),
            )
        )
    assert stat.S_IMODE(db.stat().st_mode) == 0o600  # the full path did run, and repaired
    return twins


def test_a_foreground_run_creates_its_session_claimed_by_its_runner(workspace: Path) -> None:
    """In the foreground the session is written through the managers (the runner needs the
    ORM anyway), with the same rows: created, and started by its runner, in one go."""
    create_session(workspace)
    result = run("flow", "run", "hello")
    assert result.code == 0, result.err
    assert result.out.startswith("COMPLETED: ")
    sid = result.out.split()[1]
    shown = json.loads(run("flow", "session", "show", sid, "--json").out)
    assert [e["op"] for e in shown["events"]][:2] == ["create", "start"]
    assert shown["events"][1]["actor"] == "runner"


def _op_lines(text: str, sid: str) -> list[str]:
    """The operation and integration lines of a session's log, without the clock and the
    acting process's pid."""
    found = []
    for line in text.splitlines():
        parts = line.split(" | ")
        if len(parts) == 6 and parts[3] in (sid, "-") and "workflow.session" in parts[2]:
            found.append(re.sub(r":\d+$", ":PID", " | ".join(parts[1:]).replace(sid, "SID")))
    return found


def test_the_driver_path_logs_what_the_full_path_logs(workspace: Path) -> None:
    db = workspace / ".vc" / "flow.db"

    def pause_resume_abort(full_path: bool) -> str:
        sid = create_session(workspace)
        start_stages(workspace, sid, {})
        for op in ("pause", "resume", "abort"):
            if full_path:
                db.chmod(0o644)  # a store open to others: the full path must repair it
            result = run("flow", "session", op, sid[:8])
            assert result.code == 0, result.err
        return sid

    by_driver, by_full_path = _logged_both_ways(workspace, pause_resume_abort)
    assert len(by_driver[0]) == 6  # pause, resume, abort: integration and operation lines
    assert by_driver == by_full_path


@pytest.mark.parametrize("full_path", [False, True], ids=["driver", "full"])
def test_the_resume_of_a_queued_session_says_the_workers_run_it_on_either_path(
    workspace: Path, full_path: bool
) -> None:
    queued = run("flow", "run", "hello", "--queue")
    sid = queued.out.strip()
    assert run("flow", "session", "pause", sid).code == 0
    if full_path:
        (workspace / ".vc" / "flow.db").chmod(0o644)  # only the full path repairs it
    result = run("flow", "session", "resume", sid)
    assert result.code == 0, result.err
    assert result.out.startswith(f"PENDING: {sid[:12]} (")
    assert result.out.endswith("(queued: the next 'vc flow worker' runs it)\n")


def _store_lines(db: Path, sid: str) -> list[tuple[str, str, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT level, category, text FROM log_records WHERE session_id = ? ORDER BY id",
            (sid,),
        ).fetchall()
    return [(lvl, cat, re.sub(r":\d+$", ":PID", text)) for lvl, cat, text in rows]


def test_a_store_at_another_revision_goes_the_full_path(workspace: Path) -> None:
    sid = create_session(workspace)
    db = workspace / ".vc" / "flow.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA user_version = 99")
    result = run("flow", "session", "pause", sid[:8])
    assert result.code == 1
    assert "newer" in result.err, result.err  # the full path's refusal, word for word


def test_a_refusal_on_the_driver_path_is_one_line_and_changes_nothing(workspace: Path) -> None:
    sid = create_session(workspace)
    result = run("flow", "session", "approve", sid[:8])
    assert result.code == 1
    assert result.err_lines == [f"vc: error: session {sid[:12]} has no gate waiting"]
    result = run("flow", "session", "resume", sid[:8])
    assert result.code == 1
    assert result.err.startswith(f"vc: error: cannot resume session {sid[:12]}: it is PENDING")
    assert len(result.err_lines) == 1


def test_an_unknown_or_ambiguous_id_is_refused_on_the_driver_path(workspace: Path) -> None:
    create_session(workspace)  # a store, for the driver path to open
    result = run("flow", "session", "pause", "ffff")
    assert result.code == 1
    assert result.err_lines == ["vc: error: no session matches 'ffff'"]
    result = run("flow", "session", "pause", "ab")
    assert result.code == 2
    assert "too short" in result.err


def test_a_locked_store_is_reported_after_one_busy_timeout_not_two(workspace: Path) -> None:
    sid = create_session(workspace)
    holder = sqlite3.connect(workspace / ".vc" / "flow.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        started = time.monotonic()
        result = run("flow", "session", "pause", sid[:8], env={"VC_BUSY_TIMEOUT": "2"})
        took = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.code == 1
    assert "locked" in one_error_line(result)
    assert took < 3.5, f"{took:.1f} s: the lock was waited for twice"


def test_the_workspace_warning_is_printed_once_when_resume_starts_a_runner(
    workspace: Path,
) -> None:
    from store import FlowSessionManager

    from .helpers import store

    sid = create_session(workspace)
    dead = subprocess.Popen(["true"])
    dead.wait()
    with store(workspace) as db:
        FlowSessionManager(db).start_session(sid, runner_pid=dead.pid)  # orphaned
    workspace.chmod(0o777)
    try:
        result = run("flow", "session", "resume", sid[:8])
    finally:
        workspace.chmod(0o700)
    assert result.code == 0, result.err
    assert "runner started" in result.out
    warnings = [line for line in result.err_lines if "writable by other users" in line]
    assert len(warnings) == 1, result.err
    run("flow", "session", "wait", sid[:8], "--timeout", "30")


def test_the_workspace_warning_is_printed_once_by_session_create_json(workspace: Path) -> None:
    workspace.chmod(0o777)
    try:
        result = run("flow", "session", "create", "hello", "--json")
    finally:
        workspace.chmod(0o700)
    assert result.code == 0, result.err
    assert json.loads(result.out)["status"] == "PENDING"
    warnings = [line for line in result.err_lines if "writable by other users" in line]
    assert len(warnings) == 1, result.err


def test_log_rows_wait_for_a_store_locked_for_a_moment(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The driver path stores a change's log rows through the full path's mirror: a lock
    held past the busy timeout is waited out, not reported as lost lines."""
    import threading

    from app.cli.direct import write_log
    from app.settings import Settings
    from store.direct import open_direct

    sid = create_session(workspace)
    monkeypatch.setenv("VC_BUSY_TIMEOUT", "0.2")
    settings = Settings.from_env()
    db = open_direct(settings.database_url)
    assert db is not None
    holder = sqlite3.connect(
        workspace / ".vc" / "flow.db", isolation_level=None, check_same_thread=False
    )
    holder.execute("BEGIN EXCLUSIVE")
    threading.Timer(1.0, lambda: (holder.execute("ROLLBACK"), holder.close())).start()
    try:
        write_log(settings, [("INFO", "workflow.session.operations", sid, None, "held")], db)
    finally:
        db.close()
    assert "cannot write log" not in capsys.readouterr().err
    assert _store_lines(workspace / ".vc" / "flow.db", sid) == [
        ("INFO", "workflow.session.operations", "held")
    ]


@pytest.mark.parametrize(
    "command",
    [
        ("flow", "session", "delete", "abcdef12", "--yes"),
        ("flow", "run", "hello", "--session", "abcdef12"),
    ],
)
def test_a_server_that_does_not_answer_is_waited_for_once_not_once_per_path(
    workspace: Path, silent_target: Silent, command: tuple[str, ...]
) -> None:
    """The driver path's look for vc's schema meets the silence first: it says so, rather
    than hand over to the full path, which would wait for the server a second time."""
    url = f"postgresql+psycopg://vc@127.0.0.1:{silent_target.port}/vc"
    result = run(*command, env={"VC_DATABASE_URL": url})
    assert result.code == 1
    assert one_error_line(result).endswith(": connection timeout expired")
    assert len(silent_target.accepted) == 1


def _several_servers_url() -> str:
    """The test server first, then a port nothing listens on, as SQLAlchemy's list."""
    base = make_url(PG_URL)
    url = base.set(host=None, port=None).update_query_pairs(
        [("host", f"{base.host}:{base.port or 5432}"), ("host", "127.0.0.1:1")]
    )
    return url.render_as_string(hide_password=False)


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL suite: set VC_TEST_DATABASE_URL to run it")
@pytest.mark.parametrize(
    "command",
    [
        ("flow", "session", "delete", "abcdef12", "--yes"),
        ("flow", "session", "pause", "abcdef12"),
        ("flow", "session", "show", "abcdef12"),
    ],
)
def test_a_url_naming_several_servers_is_left_to_the_full_path(
    workspace: Path, command: tuple[str, ...]
) -> None:
    """SQLAlchemy reads ``?host=A:PORT&host=B:PORT`` as a list of servers, the driver does
    not: the driver path's failure to read it is not the answer."""
    result = run(*command, env={"VC_DATABASE_URL": _several_servers_url()})
    assert result.code == 1
    assert one_error_line(result) == "vc: error: no session matches 'abcdef12'"


@pytest.mark.skipif(not PG_URL, reason="PostgreSQL suite: set VC_TEST_DATABASE_URL to run it")
def test_a_session_list_on_a_url_naming_several_servers_answers(workspace: Path) -> None:
    result = run("flow", "session", "list", env={"VC_DATABASE_URL": _several_servers_url()})
    assert (result.code, result.err) == (0, "")
