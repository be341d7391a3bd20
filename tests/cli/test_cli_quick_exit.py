"""The short commands leave without the interpreter's teardown (app.quick_exit), and lose
nothing by it: the real command runs in a subprocess, then the store's rows and the log
files are read back. Whether teardown ran is seen from a finalizer that only teardown
calls (a module-level object whose ``__del__`` writes a mark)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from .helpers import at_gates, create_session, env_for, session_json

LOGS = Path("logs") / "workflow" / "session"

#: Runs `vc ARGS…` the way the console script does (``vc_main.main``, no argv: the exit
#: is its own), with an object that only the interpreter's teardown finalizes.
WRAPPER = """
import os, sys

class Mark:
    def __del__(self, write=os.write):
        write(2, b"teardown ran\\n")

mark = Mark()
sys.argv = ["vc", *sys.argv[1:]]
from vc_main import main
main()
"""


def _vc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WRAPPER, *args],
        capture_output=True,
        text=True,
        env=env_for(),
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def _texts(path: Path) -> list[str]:
    return [line.split(" | ", 5)[-1] for line in path.read_text().splitlines()]


def test_a_pause_leaves_without_teardown_and_keeps_its_commit_and_log_lines(
    workspace: Path,
) -> None:
    sid = create_session(workspace)
    done = _vc("flow", "session", "pause", sid[:8])
    assert done.returncode == 0, done.stderr
    assert "teardown ran" not in done.stderr  # left with os._exit …
    doc = session_json(workspace, sid)  # … and the commit is there
    assert doc["status"] == "PAUSED"
    assert [e["op"] for e in doc["events"]] == ["create", "pause"]
    logs = workspace / LOGS
    assert any(t.startswith("pause PENDING -> PAUSED") for t in _texts(logs / "operations.log"))
    assert any(t.startswith("pause PENDING -> PAUSED") for t in _texts(logs / f"{sid}.log"))


def test_a_refusal_leaves_quickly_with_its_exit_code_and_its_line(workspace: Path) -> None:
    sid = create_session(workspace)
    done = _vc("flow", "session", "resume", sid[:8])  # PENDING: nothing to resume
    assert done.returncode == 1
    assert done.stderr.startswith("vc: error: cannot resume session")
    assert "teardown ran" not in done.stderr


def test_an_approve_leaves_without_teardown_and_keeps_its_commit(workspace: Path) -> None:
    sid = at_gates(workspace, "gate", ["approve"], paused_at="approve")
    done = _vc("flow", "session", "approve", sid[:8])
    assert done.returncode == 0, done.stderr
    assert "teardown ran" not in done.stderr
    doc = session_json(workspace, sid)
    assert doc["status"] == "ACTIVE"
    assert [e["op"] for e in doc["events"][-2:]] == ["approve", "resume"]


def test_a_run_leaves_quickly_with_every_line_stored_and_logged(workspace: Path) -> None:
    (workspace / "workflows" / "many.yaml").write_text(
        "stages:\n  - name: talk\n    run: seq 1 20000\n  - name: last\n    run: echo end\n"
    )
    done = _vc("flow", "run", "many")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("COMPLETED: ")
    assert "teardown ran" not in done.stderr
    from sqlalchemy import text

    from store.queries import get_session_view, list_sessions

    from .helpers import store

    with store(workspace) as db:
        (view,) = list_sessions(db)
        sid = view.id
        view = get_session_view(db, sid)
        assert view is not None
        assert view.status == "COMPLETED" and view.runner_pid is None  # released
        stored = [
            row[0]
            for row in db.connection().execute(
                text(
                    "SELECT text FROM log_records WHERE session_id = :sid AND stage = 'talk' "
                    "AND category = 'workflow.stage.integration' ORDER BY id"
                ),
                {"sid": sid},
            )
        ]
    expected = [str(i) for i in range(1, 20001)]
    assert stored == expected
    texts = _texts(workspace / LOGS / f"{sid}.log")
    lines = (workspace / LOGS / f"{sid}.log").read_text().splitlines()
    logged = [line.split(" | ", 5)[-1] for line in lines if "workflow.stage.integration" in line]
    assert logged == [*expected, "end"]
    assert texts[-1] == "session completed"  # the runner's last line, after the run


def test_other_commands_still_tear_down(workspace: Path) -> None:
    """The mark works: a command not in the list is torn down as before."""
    done = _vc("flow", "list")
    assert done.returncode == 0, done.stderr
    assert "teardown ran" in done.stderr


def test_leave_waits_for_a_non_daemon_thread_and_flushes_stdout() -> None:
    """Something teardown would wait for (a non-daemon thread) makes leave() exit the
    ordinary way; what was printed is flushed either way."""
    code = """
import sys, threading, time
from app.quick_exit import leave

def late():
    time.sleep(0.3)
    print("thread finished", flush=True)

sys.stdout.write("printed, not flushed")
if sys.argv[1] == "thread":
    threading.Thread(target=late).start()
leave(3)
"""
    for mode, out in (
        ("thread", "printed, not flushedthread finished\n"),
        ("alone", "printed, not flushed"),
    ):
        done = subprocess.run(
            [sys.executable, "-c", code, mode], capture_output=True, text=True, timeout=60
        )
        assert (done.returncode, done.stdout) == (3, out)
