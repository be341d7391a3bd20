"""Logging (docs/ARCHITECTURE.md §7) as the commands produce it: the files appear on demand and hold
the operations; `vc flow session logs` reads the store (not the files) and filters."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from .helpers import create_session, env_for, one_error_line, run, store

LOGS = Path("logs/workflow/session")


def add_logs(workspace: Path, sid: str, rows: list[tuple[str, str | None, str]]) -> None:
    from store.log_ingest import append_logs

    with store(workspace) as db:
        append_logs(
            db,
            [
                {
                    "session_id": sid,
                    "at": time.time(),
                    "level": level,
                    "category": "workflow.stage.integration",
                    "stage": stage,
                    "text": text,
                }
                for level, stage, text in rows
            ],
        )


def last_words(out: str) -> list[str]:
    """The last word of each printed log line: what the tests' lines say."""
    return [line.split()[-1] for line in out.splitlines()]


def test_log_files_are_created_on_demand_and_hold_the_operations(
    store_workspace: Path, cli
) -> None:
    logs = store_workspace / LOGS
    assert not (store_workspace / "logs").exists()
    assert cli("flow", "session", "list").code == 0
    assert not (store_workspace / "logs").exists()  # a read creates nothing
    sid = cli("flow", "session", "create", "hello", "--name", "n").out.strip()
    assert cli("flow", "session", "pause", sid).code == 0
    assert cli("flow", "session", "resume", sid).code == 0
    assert sorted(p.name for p in logs.iterdir()) == [
        f"{sid}.log",
        "integration.log",
        "operations.log",
    ]
    operations = (logs / "operations.log").read_text().splitlines()
    assert [line.split(" | ")[-1].split(" by ")[0] for line in operations] == [
        "create ∅ -> PENDING",
        "pause PENDING -> PAUSED",
        "resume PAUSED -> PENDING",
    ]
    for line in operations:
        _stamp, level, category, session, stage, _text = line.split(" | ")
        assert (level.strip(), category, session, stage) == (
            "INFO",
            "workflow.session.operations",
            sid,
            "-",
        )
    integration = (logs / "integration.log").read_text()
    assert "workflow.session.integration" in integration
    assert "pause PENDING -> PAUSED" in integration
    own = (logs / f"{sid}.log").read_text()
    assert "create ∅ -> PENDING" in own and "resume PAUSED -> PENDING" in own
    assert (logs.stat().st_mode & 0o777) == 0o700


def test_the_operations_are_also_in_the_store_log(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "session", "pause", sid).code == 0
    result = cli("flow", "session", "logs", sid)
    assert result.code == 0, result.err
    assert "pause PENDING -> PAUSED" in result.out


def test_status_reports_go_to_the_integration_log(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "status", sid).code == 0
    integration = (store_workspace / LOGS / "integration.log").read_text()
    assert f"| {sid} | - | status report: PENDING" in integration


def test_session_logs_reads_the_store_not_the_files(store_workspace: Path, cli) -> None:
    import shutil

    sid = create_session(store_workspace)
    add_logs(store_workspace, sid, [("INFO", "greet", "hello from greet")])
    shutil.rmtree(store_workspace / "logs", ignore_errors=True)
    result = cli("flow", "session", "logs", sid[:6])
    assert result.code == 0, result.err
    assert result.out.endswith(" INFO    [greet] hello from greet\n")


def test_session_logs_level_keeps_that_level_and_above(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    add_logs(
        store_workspace,
        sid,
        [
            ("DEBUG", None, "d"),
            ("INFO", "greet", "i"),
            ("WARNING", "greet", "w"),
            ("ERROR", "count", "e"),
        ],
    )
    out = cli("flow", "session", "logs", sid, "--level", "warning").out
    assert last_words(out) == ["w", "e"]
    out = cli("flow", "session", "logs", sid, "--level", "DEBUG").out
    assert last_words(out) == ["d", "i", "w", "e"]


def test_session_logs_says_when_earlier_lines_are_left_out(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    add_logs(store_workspace, sid, [("INFO", "greet", f"line {i}") for i in range(5)])
    cut = cli("flow", "session", "logs", sid, "--tail", "3")
    assert last_words(cut.out) == ["2", "3", "4"]
    assert "earlier lines left out: these are the last 3 (--tail N shows more)" in cut.err
    whole = cli("flow", "session", "logs", sid, "--tail", "10")
    assert "left out" not in whole.err
    assert whole.out.splitlines()[-5].endswith("line 0")


def test_session_logs_leave_debug_records_out_unless_asked(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    add_logs(store_workspace, sid, [("DEBUG", None, "d"), ("INFO", "greet", "i")])
    out = cli("flow", "session", "logs", sid).out
    assert last_words(out) == ["i"]


def test_the_notification_record_of_a_creation_shows_no_state_as_empty_set(
    store_workspace: Path, cli
) -> None:
    sid = cli("flow", "session", "create", "hello", "--name", "n").out.strip()
    out = cli("flow", "session", "logs", sid, "--level", "DEBUG").out
    assert "DEBUG   notify 0 subscriber(s): create ∅ -> PENDING\n" in out


def test_session_logs_stage_keeps_that_stage_only(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    add_logs(
        store_workspace,
        sid,
        [("INFO", "greet", "g1"), ("INFO", "count", "c1"), ("WARNING", "greet", "g2")],
    )
    out = cli("flow", "session", "logs", sid, "--stage", "greet").out
    assert last_words(out) == ["g1", "g2"]


def test_session_logs_stage_of_a_matrix_stage_keeps_all_its_instances(
    store_workspace: Path, thumbs: str, cli
) -> None:
    sid = create_session(store_workspace, thumbs)
    add_logs(
        store_workspace,
        sid,
        [
            ("INFO", "resize[size=small,format=png]", "r1"),
            ("INFO", "fetch", "f1"),
            ("INFO", "resize[size=large,format=webp]", "r2"),
        ],
    )
    out = cli("flow", "session", "logs", sid, "--stage", "resize").out
    assert last_words(out) == ["r1", "r2"]
    one = cli("flow", "session", "logs", sid, "--stage", "resize[size=large,format=webp]").out
    assert last_words(one) == ["r2"]


def test_session_logs_takes_an_instance_with_its_keys_in_any_order_as_run_does(
    store_workspace: Path, thumbs: str, cli
) -> None:
    sid = create_session(store_workspace, thumbs)
    add_logs(
        store_workspace,
        sid,
        [("INFO", "resize[size=small,format=png]", "r1"), ("INFO", "fetch", "f1")],
    )
    one = cli("flow", "session", "logs", sid, "--stage", "resize[format=png,size=small]").out
    assert last_words(one) == ["r1"]
    result = run("flow", "session", "logs", sid, "--stage", "resize[format=png]")
    assert result.code == 1
    assert "names no value for size" in one_error_line(result)


def test_session_logs_refuses_a_stage_the_session_does_not_have(
    store_workspace: Path,
) -> None:
    sid = create_session(store_workspace)
    result = run("flow", "session", "logs", sid, "--stage", "nope")
    assert result.code == 1
    assert "has no stage 'nope'; stages: greet, count, done" in one_error_line(result)


def test_session_logs_checks_the_stage_name_before_looking_for_the_session(
    store_workspace: Path,
) -> None:
    result = run("flow", "session", "logs", "abcd", "--stage", "")
    assert result.code == 2
    assert one_error_line(result) == "vc: error: invalid stage '': must not be empty"


@pytest.mark.parametrize("stage", ["", "a:b"])
def test_session_logs_refuses_a_name_no_stage_can_have_as_a_usage_error(
    store_workspace: Path, stage: str
) -> None:
    sid = create_session(store_workspace)
    result = run("flow", "session", "logs", sid, "--stage", stage)
    assert result.code == 2
    assert one_error_line(result) == f"vc: error: invalid stage {stage!r}: " + (
        "must not be empty"
        if not stage
        else "may contain only ASCII letters, digits, '.', '_' and '-', not ':'"
    )


def test_session_logs_refuses_an_unknown_level_as_a_usage_error(store_workspace: Path) -> None:
    sid = create_session(store_workspace)
    result = run("flow", "session", "logs", sid, "--level", "LOUD")
    assert result.code == 2
    assert "invalid --level 'LOUD'" in one_error_line(result)


def _following(
    workspace: Path, runner: tuple[str, int] = ("elsewhere", 1)
) -> tuple[str, subprocess.Popen[str]]:
    """A session whose runner is ``runner`` (host, pid: by default one running elsewhere)
    with one line logged, and `session logs --follow` of it."""
    from store import FlowSessionManager

    sid = create_session(workspace)
    host, pid = runner
    with store(workspace) as db:
        FlowSessionManager(db).start_session(sid, runner_pid=pid, runner_host=host)
    add_logs(workspace, sid, [("INFO", "greet", "before")])
    follower = subprocess.Popen(
        [sys.executable, "-m", "app.main", "flow", "session", "logs", sid, "--follow"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env_for(),
    )
    return sid, follower


def test_session_logs_follow_prints_new_lines_until_the_session_ends(
    store_workspace: Path,
) -> None:
    from store import FlowSessionManager, StageManager

    sid, follower = _following(store_workspace)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().endswith("[greet] before\n")
        add_logs(store_workspace, sid, [("WARNING", "count", "while running")])
        assert follower.stdout.readline().endswith("[count] while running\n")
        assert follower.poll() is None  # still following
        with store(store_workspace) as db:
            sessions, stages = FlowSessionManager(db), StageManager(db)
            for stage in stages.list_stages(sid):
                stages.update_stage_status(stage.id, "ACTIVE")
                stages.update_stage_status(stage.id, "COMPLETED")
            sessions.complete(sid)
        add_logs(store_workspace, sid, [("INFO", None, "the end")])
        out, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 0, err
    assert out.endswith(" the end\n")


def test_session_logs_follow_says_once_that_the_session_lost_its_runner(
    store_workspace: Path,
) -> None:
    from store.identity import local_host

    dead = subprocess.Popen(["true"])
    dead.wait()
    sid, follower = _following(store_workspace, runner=(local_host(), dead.pid))
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().endswith("[greet] before\n")
        time.sleep(1.5)  # several reads later
        assert follower.poll() is None  # still following
        follower.terminate()
        _, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    said = [line for line in err.splitlines() if "orphaned" in line]
    assert len(said) == 1, err
    assert "has no live runner (orphaned)" in said[0] and f"resume {sid[:12]}" in said[0]


def test_session_logs_follow_stopped_by_ctrl_c_exits_130_without_a_word(
    store_workspace: Path,
) -> None:
    import signal

    _, follower = _following(store_workspace)
    try:
        assert follower.stdout is not None
        assert follower.stdout.readline().endswith("[greet] before\n")
        time.sleep(0.6)  # in its loop of reads by now
        follower.send_signal(signal.SIGINT)
        _, err = follower.communicate(timeout=20)
    finally:
        if follower.poll() is None:
            follower.kill()
    assert follower.returncode == 130  # the session has not ended: not a success
    assert err == ""


def test_session_logs_of_a_real_run_show_the_stage_output(store_workspace: Path) -> None:
    result = run("flow", "run", "hello")
    assert result.code == 0, result.err
    sid = run("flow", "session", "list", "--json").json()[0]["id"]
    out = run("flow", "session", "logs", sid).out
    assert "[greet] hello from greet attempt 1" in out
    assert "WARNING [done] bye" in out
    own = (store_workspace / LOGS / f"{sid}.log").read_text()
    assert "hello from greet attempt 1" in own


@pytest.mark.parametrize("follow", [False, True])
def test_session_logs_of_a_deleted_session_is_unknown(
    store_workspace: Path, cli, follow: bool
) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "session", "delete", "--yes", sid).code == 0
    args = ["flow", "session", "logs", sid] + (["--follow"] if follow else [])
    result = cli(*args)
    assert result.code == 1
    assert "no session matches" in result.err


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_log_directories_and_files_are_private_whatever_the_umask(
    workspace: Path, umask: int
) -> None:
    import os
    import stat

    proc = subprocess.run(
        [sys.executable, "-m", "app.main", "flow", "session", "create", "hello"],
        capture_output=True,
        text=True,
        env=env_for(),
        stdin=subprocess.DEVNULL,
        preexec_fn=lambda: os.umask(umask),
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    sid = proc.stdout.strip()
    logs = workspace / "logs"
    for directory in (logs, logs / "workflow", logs / "workflow" / "session"):
        assert stat.S_IMODE(directory.stat().st_mode) == 0o700, directory
    for name in ("operations.log", "integration.log", f"{sid}.log"):
        path = logs / "workflow" / "session" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
