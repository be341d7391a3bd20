"""A store on a file system mounted read-only (a backup, a snapshot, a disk mounted to be
inspected): the reading commands answer from it as from the workspace itself, and every
change is refused with one line naming the read-only file system, nothing written. The
read-only file system is real: a read-only bind mount of the workspace."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .helpers import create_session, one_error_line, run


def _mount_read_only(source: Path, view: Path) -> None:
    """``source`` seen through ``view``, a read-only bind mount (which needs root to make:
    CI runs as root; elsewhere the test is skipped, saying why)."""
    if os.geteuid() != 0:
        pytest.skip("a read-only file system is made with a bind mount, which needs root")
    view.mkdir()
    for command in (
        ["mount", "--bind", str(source), str(view)],
        ["mount", "-o", "remount,bind,ro", str(view)],
    ):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(view)], capture_output=True)
            pytest.skip(f"cannot make a read-only file system: {done.stderr.strip()}")


@pytest.fixture
def read_only_view(workspace: Path, tmp_path: Path) -> Iterator[Path]:
    """The workspace, seen through a read-only bind mount."""
    view = tmp_path / "read-only"
    _mount_read_only(workspace, view)
    yield view
    subprocess.run(["umount", "-l", str(view)], capture_output=True)


def _completed_session(workspace: Path) -> str:
    ran = run("flow", "run", "hello")
    assert ran.code == 0, ran.err
    listed = run("flow", "session", "list", "--json").json()
    return str(listed[0]["id"])


def _dump_digest(workspace: Path) -> str:
    connection = sqlite3.connect(workspace / ".vc" / "flow.db")
    try:
        return hashlib.sha256("\n".join(connection.iterdump()).encode()).hexdigest()
    finally:
        connection.close()


@pytest.mark.parametrize(
    "command",
    [
        ("flow", "session", "list", "--json"),
        ("flow", "session", "show", "{sid}", "--json"),
        ("flow", "session", "logs", "{sid}"),
        ("flow", "status", "{sid}"),
    ],
)
def test_a_read_of_a_store_on_a_read_only_file_system_answers_as_from_the_workspace(
    workspace: Path, read_only_view: Path, command: tuple[str, ...]
) -> None:
    sid = _completed_session(workspace)
    args = [part.format(sid=sid) for part in command]
    writable = run(*args)
    assert writable.code == 0, writable.err
    read_only = run(*args, env={"VC_HOME": str(read_only_view)})
    assert (read_only.code, read_only.err) == (0, "")
    assert read_only.out == writable.out


@pytest.mark.parametrize(
    "command",
    [
        ("flow", "session", "pause", "{sid}"),
        ("flow", "session", "retry", "{sid}"),
        ("flow", "session", "delete", "{sid}", "--yes"),
        ("flow", "run", "hello"),
    ],
)
def test_a_change_to_a_store_on_a_read_only_file_system_is_refused_naming_it(
    workspace: Path, read_only_view: Path, command: tuple[str, ...]
) -> None:
    sid = _completed_session(workspace)
    before = _dump_digest(workspace)
    refused = run(*(part.format(sid=sid) for part in command), env={"VC_HOME": str(read_only_view)})
    assert refused.code == 1
    assert "read-only file system" in one_error_line(refused)
    assert _dump_digest(workspace) == before


def test_a_store_whose_wal_cannot_be_read_there_is_refused_not_read_without_its_changes(
    workspace: Path, tmp_path: Path
) -> None:
    """A copy that kept the WAL but not its -shm (SQLite reads a WAL only beside it, and
    cannot make one on a read-only file system): the database file alone would answer
    without the latest changes."""
    sid = _completed_session(workspace)
    copy = tmp_path / "copy"
    (copy / ".vc").mkdir(parents=True)
    (copy / "workflows").mkdir()
    writer = sqlite3.connect(workspace / ".vc" / "flow.db")
    try:
        writer.execute("PRAGMA wal_autocheckpoint=0")
        writer.execute("UPDATE flow_sessions SET name = 'renamed' WHERE id = ?", (sid,))
        writer.commit()
        for name in ("flow.db", "flow.db-wal"):
            shutil.copy(workspace / ".vc" / name, copy / ".vc" / name)
    finally:
        writer.close()
    view = tmp_path / "copy-read-only"
    _mount_read_only(copy, view)
    try:
        refused = run("flow", "session", "list", env={"VC_HOME": str(view)})
    finally:
        subprocess.run(["umount", "-l", str(view)], capture_output=True)
    assert refused.code == 1
    assert "its latest changes are in flow.db-wal" in one_error_line(refused)


def test_following_a_running_session_of_a_store_read_as_a_snapshot_is_refused(
    workspace: Path, read_only_view: Path
) -> None:
    """Without its -shm a read-only store is read as it was when opened: a follow would
    wait for lines that can never show."""
    sid = create_session(workspace)
    refused = run("flow", "session", "logs", sid, "--follow", env={"VC_HOME": str(read_only_view)})
    assert refused.code == 1
    assert "cannot follow session" in one_error_line(refused)
    ended = _completed_session(workspace)
    followed = run(
        "flow", "session", "logs", ended, "--follow", env={"VC_HOME": str(read_only_view)}
    )
    assert followed.code == 0, followed.err
