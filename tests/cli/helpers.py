"""Helpers of the CLI tests: running `vc` for real (subprocess, optionally on a pseudo
terminal or as another user), running it in-process, and reading the store directly to
check what a command did or did not change."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ESC = "\x1b"

#: A workflow whose stages run in parallel (the ``thumbs`` fixture writes it).
THUMBS = """\
name: Thumbnails
max_parallel: 4
stages:
  - name: fetch
    run: echo fetched
  - name: resize
    needs: [fetch]
    matrix: {size: [small, large], format: [png, webp]}
    run: echo "$VC_MATRIX_SIZE $VC_MATRIX_FORMAT"
  - name: review
    needs: [fetch]
  - name: publish
    needs: [resize, review]
    run: echo published
"""
#: The stage rows of a session of ``thumbs``, in position order.
THUMBS_ROWS = [
    "fetch",
    "resize[size=small,format=png]",
    "resize[size=small,format=webp]",
    "resize[size=large,format=png]",
    "resize[size=large,format=webp]",
    "review",
    "publish",
]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


def env_for(extra: dict[str, str | None] | None = None, *, color: bool = False) -> dict[str, str]:
    """The test's environment for a `vc` subprocess; ``None`` values remove a variable.
    NO_COLOR is set unless ``color`` (so plain output is the default under test)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.pop("COLUMNS", None)
    env.pop("LINES", None)
    if color:
        env.pop("NO_COLOR", None)
    else:
        env.setdefault("NO_COLOR", "1")
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run(
    *args: str,
    env: dict[str, str | None] | None = None,
    color: bool = False,
    input: str | None = None,
    timeout: float = 60,
    user: int | None = None,
    cwd: str | Path | None = None,
) -> Result:
    """The real `vc` in a subprocess (stdin not a terminal unless ``input`` is given)."""
    preexec = None
    if user is not None:

        def preexec() -> None:
            os.setgroups([])
            os.setgid(user)
            os.setuid(user)

    proc = subprocess.run(
        [sys.executable, "-m", "app.main", *args],
        capture_output=True,
        text=True,
        env=env_for(env, color=color),
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        timeout=timeout,
        preexec_fn=preexec,
        cwd=cwd,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


def run_on_tty(
    *args: str,
    env: dict[str, str | None] | None = None,
    color: bool = False,
    answer: str | None = None,
    columns: int = 200,
    timeout: float = 30,
) -> tuple[int, str]:
    """The real `vc` with stdin, stdout and stderr on a pseudo terminal of ``columns``
    columns; ``answer`` is typed once something was printed (a prompt). Returns the exit
    code and everything the terminal showed."""
    import fcntl
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    environment = env_for(env, color=color)
    environment["TERM"] = "xterm-256color"
    proc = subprocess.Popen(
        [sys.executable, "-m", "app.main", *args],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=environment,
        close_fds=True,
        start_new_session=True,
    )
    os.close(slave)
    output = b""
    answered = answer is None
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([master], [], [], 0.05)
            if ready:
                try:
                    chunk = os.read(master, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                output += chunk
                if not answered and b"?" in output:
                    os.write(master, answer.encode() + b"\n")  # type: ignore[union-attr]
                    answered = True
            elif proc.poll() is not None:
                break
        code = proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
    return code, output.decode("utf-8", "replace")


# -- the store, read and written directly ---------------------------------------------------


def database_url(workspace: Path) -> str:
    return os.environ.get("VC_DATABASE_URL") or f"sqlite:///{workspace / '.vc' / 'flow.db'}"


@contextmanager
def store(workspace: Path) -> Iterator[Any]:
    """A SQLModel session on the workspace's store."""
    from store import get_session_factory, init_db

    engine = init_db(database_url(workspace))
    try:
        with get_session_factory(engine)() as db:
            yield db
    finally:
        engine.dispose()


def snapshot(workspace: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, for 'nothing changed' checks."""
    from sqlalchemy import text

    tables = {
        "flow_sessions": "id, name, status, reason, version, updated_at, metadata",
        "stage_instances": "id, session_id, name, status, progress, attempt, version",
        "flow_events": "id, session_id, op, from_status, to_status",
        "log_records": "id, session_id, level, text",
    }
    with store(workspace) as db:
        conn = db.connection()
        return {
            name: [
                tuple(str(v) for v in row)
                for row in conn.execute(text(f"SELECT {cols} FROM {name} ORDER BY 1"))
            ]
            for name, cols in tables.items()
        }


def create_session(
    workspace: Path,
    workflow: str = "hello",
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """A PENDING session created through the managers (faster than the CLI)."""
    from store import FlowSessionManager
    from store.workflows import find_workflow

    definition = find_workflow(workspace / "workflows", workflow)
    with store(workspace) as db:
        return (
            FlowSessionManager(db)
            .create_session(workflow, name=name, metadata=metadata, definition=definition)
            .id
        )


def start_stages(workspace: Path, sid: str, moves: dict[str, list[str]]) -> None:
    """Start the session (a runner on another host) and walk its stages through states as
    a runner would: ``{"fetch": ["ACTIVE", "COMPLETED"], "review": ["PAUSED"]}``."""
    from store import FlowSessionManager, StageManager

    with store(workspace) as db:
        FlowSessionManager(db).start_session(sid, runner_host="build-02", runner_pid=4242)
        stages = StageManager(db)
        ids = {s.name: s.id for s in stages.list_stages(sid)}
        for name, statuses in moves.items():
            for status in statuses:
                stages.update_stage_status(ids[name], status)


def at_gates(workspace: Path, workflow: str, gates: list[str], paused_at: str | None) -> str:
    """A started session of ``workflow`` (``twogates``: :data:`tests.gates.TWO_GATES`) held
    at its gates (:func:`tests.gates.hold_at_gates`). Its runner is this process (alive), so
    no command starts another."""
    from store import FlowSessionManager
    from tests.gates import TWO_GATES, hold_at_gates

    if workflow == "twogates":
        (workspace / "workflows" / "twogates.yaml").write_text(TWO_GATES)
    sid = create_session(workspace, workflow, name="release")
    with store(workspace) as db:
        FlowSessionManager(db).start_session(sid)
        hold_at_gates(db, sid, tuple(gates), paused_at)
    return sid


def session_json(workspace: Path, sid: str) -> dict[str, Any]:
    """The session document straight from the store's query layer."""
    from store.queries import get_session_view, list_events

    with store(workspace) as db:
        view = get_session_view(db, sid)
        assert view is not None, sid
        doc = view.to_json()
        doc["events"] = [e.to_json() for e in list_events(db, sid)]
        return doc


def one_error_line(result: Result) -> str:
    """The single 'vc: error: …' line a refused command must print, and nothing else."""
    lines = result.err_lines
    assert len(lines) == 1, result.err
    assert lines[0].startswith("vc: error: "), result.err
    assert "Traceback" not in result.err
    return lines[0]


def imported(workspace: Path, *args: str) -> tuple[int, set[str]]:
    """`vc ARGS` in the workspace: its exit code and every module it imported
    (``python -X importtime``)."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "app.main", *args],
        capture_output=True,
        text=True,
        env=env_for({"VC_HOME": str(workspace)}),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    modules = {
        line.rsplit("|", 1)[1].strip()
        for line in proc.stderr.splitlines()
        if line.startswith("import time:") and "|" in line
    }
    return proc.returncode, modules
