"""A ``VC_DATABASE_URL`` naming what is not a vc store (a directory, a text file, another
program's database) is refused in one line before anything there changes: no mode, no
journal mode, no table, no reserve file. A store's own files are made private by taking
bits away, never by adding one, and a directory the user named keeps its mode."""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest

from tests.conftest import run_vc

READ_AND_WRITE = [("flow", "session", "list"), ("flow", "session", "create", "hello")]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _one_line_refusal(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 1, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("vc: error: "), result.stderr
    return lines[0]


def _listing(directory: Path) -> dict[str, int]:
    return {p.name: _mode(p) for p in directory.iterdir()}


def _foreign_database(directory: Path, name: str, *statements: str) -> Path:
    """Another program's SQLite file, made by ``statements`` in a directory of its own,
    readable by all (0644 in a 0755 directory)."""
    directory.mkdir()
    directory.chmod(0o755)
    path = directory / name
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
    path.chmod(0o644)
    return path


@pytest.mark.parametrize("args", READ_AND_WRITE, ids=" ".join)
def test_a_directory_named_as_the_store_is_refused_and_keeps_its_mode(
    workspace: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    project = tmp_path / "me" / "project"
    project.mkdir(parents=True)
    (project / "file").write_text("mine")
    for directory in (project.parent, project):
        directory.chmod(0o755)
    result = run_vc(*args, env={"VC_DATABASE_URL": f"sqlite:///{project}"})
    assert "it is a directory" in _one_line_refusal(result)
    assert _mode(project.parent) == 0o755 and _mode(project) == 0o755
    assert _listing(project) == {"file": _mode(project / "file")}


@pytest.mark.parametrize("args", READ_AND_WRITE, ids=" ".join)
def test_another_programs_database_is_refused_and_left_as_it_was(
    workspace: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    app_db = _foreign_database(
        tmp_path / "data", "app.db", "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)"
    )
    data = app_db.parent
    before = (app_db.read_bytes(), _listing(data), _mode(data))
    result = run_vc(*args, env={"VC_DATABASE_URL": f"sqlite:///{app_db}"})
    assert "another program's database (tables: users)" in _one_line_refusal(result)
    assert (app_db.read_bytes(), _listing(data), _mode(data)) == before


def test_another_programs_alembic_managed_database_is_refused_and_left_as_it_was(
    workspace: Path, tmp_path: Path
) -> None:
    app_db = _foreign_database(
        tmp_path / "mlflow",
        "mlflow.db",
        "CREATE TABLE experiments (id INTEGER PRIMARY KEY)",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL)",
        "INSERT INTO alembic_version VALUES ('ae1027a6acf')",
    )
    data = app_db.parent
    before = (app_db.read_bytes(), _listing(data))
    result = run_vc("flow", "session", "list", env={"VC_DATABASE_URL": f"sqlite:///{app_db}"})
    assert "another program's database" in _one_line_refusal(result)
    assert (app_db.read_bytes(), _listing(data)) == before


def test_a_file_that_is_not_a_database_is_refused_and_left_as_it_was(
    workspace: Path, tmp_path: Path
) -> None:
    notes = tmp_path / "notes"
    notes.mkdir()
    todo = notes / "todo.txt"
    todo.write_text("buy milk\n")
    todo.chmod(0o644)
    before = _listing(notes)
    result = run_vc("flow", "status", "abcd", env={"VC_DATABASE_URL": f"sqlite:///{todo}"})
    assert "the file is not a database" in _one_line_refusal(result)
    assert _listing(notes) == before and todo.read_text() == "buy milk\n"


def test_a_store_in_a_directory_of_the_users_keeps_that_directorys_mode(
    workspace: Path, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    url = f"sqlite:///{shared / 'flow.db'}"
    created = run_vc("flow", "session", "create", "hello", env={"VC_DATABASE_URL": url})
    assert created.returncode == 0, created.stderr
    assert _mode(shared) == 0o755
    assert _mode(shared / "flow.db") == 0o600


def test_making_a_store_private_never_gives_its_owner_write_access(workspace: Path) -> None:
    assert run_vc("flow", "session", "create", "hello").returncode == 0
    db = workspace / ".vc" / "flow.db"
    db.chmod(0o444)
    run_vc("flow", "session", "list")
    assert _mode(db) & 0o222 == 0, oct(_mode(db))


def _read_only_mount_works() -> bool:
    import os
    import shutil
    import subprocess

    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount --bind / /mnt && mount -o remount,bind,ro /mnt"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.skipif(
    not _read_only_mount_works(),
    reason="needs root and mount namespaces (unshare -m) to mount the workspace read-only",
)
def test_a_change_to_a_store_on_a_read_only_file_system_is_refused_naming_it_not_permissions(
    workspace: Path,
) -> None:
    """Root cannot write there either: 'permission denied' would send the user to chmod.
    (Reads of such a store answer: tests/cli/test_cli_read_only.py.)"""
    import shlex
    import subprocess
    import sys

    from tests.conftest import vc_env

    assert run_vc("flow", "session", "create", "hello").returncode == 0
    ws = shlex.quote(str(workspace))
    vc = " ".join(shlex.quote(a) for a in (sys.executable, "-m", "app.main"))
    script = (
        f"mount --bind {ws} {ws} && mount -o remount,bind,ro {ws} && {vc} flow session create hello"
    )
    result = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        env=vc_env(None),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    line = _one_line_refusal(result)
    assert line.endswith(": read-only file system"), line


def test_a_worker_where_there_is_no_workspace_is_refused_and_makes_nothing(
    workspace: Path, tmp_path: Path
) -> None:
    """A mistyped VC_HOME: the worker would make a new, empty store there and wait on it
    for ever, its log saying it had started."""
    nowhere = tmp_path / "no-such-workspace"
    result = run_vc("flow", "worker", env={"VC_HOME": str(nowhere)}, timeout=30)
    line = _one_line_refusal(result)
    assert f"no workspace in {nowhere}" in line
    assert not nowhere.exists()


def test_a_worker_on_a_store_named_on_purpose_starts_though_its_file_is_new(
    workspace: Path, tmp_path: Path
) -> None:
    """VC_DATABASE_URL names a file to be made: no mistyped VC_HOME, so the worker starts."""
    import signal
    import subprocess
    import sys

    from tests.conftest import vc_env
    from tests.waiting import wait_until

    fresh = tmp_path / "team" / "flow.db"
    fresh.parent.mkdir()
    env = vc_env({"VC_HOME": str(tmp_path / "nowhere"), "VC_DATABASE_URL": f"sqlite:///{fresh}"})
    err = tmp_path / "worker.err"
    with err.open("wb") as sink:
        worker = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "worker"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=sink,
        )
    try:
        wait_until(lambda: "started" in err.read_text(), timeout=20, what="the worker started")
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=20) == 0
    assert fresh.exists()
