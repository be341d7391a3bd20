"""Part 5, files and permissions.

The store and the logs hold commands, environments and output, so: ``.vc/`` is created
0700, the database (and its -wal/-shm files) 0600, the session log directory 0700 and every
log file 0600, whatever the umask; and no directory vc creates is writable by others (a
world-writable ``logs/workflow`` lets anyone swap the 0700 ``session`` directory for their
own). A workspace that is world-writable or owned by somebody else is reported, not used
silently (anyone who can write there can plant ``.vc/flow.db`` or ``workflows/*.yaml``).

``test_permissions`` checks everything and prints the part's figures line; it fails only on
what is not a reported bug (the umask-0 case included: logs/ and logs/workflow/ were once
created 0777). Each reported bug has its own strict-xfail test below.
"""

from __future__ import annotations

import os
import pwd
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.waiting import poll

from .harness import child_env, report

WORKFLOWS = {
    "good.yaml": "stages:\n  - name: one\n    run: echo one\n",
    "slow.yaml": "stages:\n  - name: wait\n    run: sleep 30\n",
}


def make_workspace(path: Path) -> Path:
    (path / "workflows").mkdir(parents=True)
    for name, text in WORKFLOWS.items():
        (path / "workflows" / name).write_text(text)
    return path


def vc_in(ws: Path, *args: str, umask: int = 0o022) -> subprocess.CompletedProcess[str]:
    env = child_env({"VC_HOME": str(ws)})
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        env.pop(var, None)
    return subprocess.run(
        [sys.executable, "-m", "app.main", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(ws),
        stdin=subprocess.DEVNULL,
        timeout=60,
        preexec_fn=lambda: os.umask(umask),
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def private_files_problems(ws: Path, umask: int) -> tuple[list[str], list[str], int]:
    """(problems with the documented modes, directories writable by others, calls)."""
    problems: list[str] = []
    calls = 0
    run = vc_in(ws, "flow", "run", "good", umask=umask)
    calls += 1
    if run.returncode != 0:
        problems.append(f"run failed: {run.stderr.strip()}")
    detached = vc_in(ws, "flow", "run", "slow", "--detach", umask=umask)
    calls += 1
    sid = detached.stdout.strip()
    db = ws / ".vc" / "flow.db"
    try:
        if detached.returncode != 0:
            problems.append(f"run --detach failed: {detached.stderr.strip()}")
        else:  # while the runner holds the store, the WAL files exist
            poll(lambda: (ws / ".vc" / "flow.db-wal").exists(), 5, 0.05)
            expected = {ws / ".vc": 0o700, db: 0o600}
            for suffix in ("-wal", "-shm"):
                extra = db.with_name(db.name + suffix)
                if extra.exists():
                    expected[extra] = 0o600
            session_dir = ws / "logs" / "workflow" / "session"
            expected[session_dir] = 0o700
            for log in session_dir.glob("*.log"):
                expected[log] = 0o600
            if len(list(session_dir.glob("*.log"))) < 3:
                problems.append("fewer log files than expected")
            for path, want in expected.items():
                if not path.exists():
                    problems.append(f"{path.relative_to(ws)} missing")
                elif mode(path) != want:
                    problems.append(f"{path.relative_to(ws)} is {mode(path):o}, expected {want:o}")
    finally:
        if sid:
            vc_in(ws, "flow", "session", "abort", sid)
            calls += 1
            poll(
                lambda: (
                    vc_in(ws, "flow", "status", sid, "--json").stdout.count('"runner": null') > 0
                ),
                15,
                0.3,
            )
    open_to_others = []
    for dirpath, dirnames, _files in os.walk(ws):
        for d in dirnames:
            p = Path(dirpath) / d
            if p.parent == ws and d == "workflows":
                continue  # made by the test
            if mode(p) & (stat.S_IWGRP | stat.S_IWOTH):
                open_to_others.append(f"{p.relative_to(ws)} is {mode(p):o}")
    return problems, open_to_others, calls


def reported(proc: subprocess.CompletedProcess[str]) -> bool:
    """Did vc say something about the workspace's ownership or permissions?"""
    text = proc.stderr.lower()
    return any(
        w in text for w in ("writable", "owned", "owner", "permission", "unsafe", "insecure")
    )


def world_writable_check(tmp: Path) -> tuple[bool, subprocess.CompletedProcess[str]]:
    ws = make_workspace(tmp / "open-ws")
    ws.chmod(0o777)
    proc = vc_in(ws, "flow", "session", "list")
    return reported(proc), proc


def foreign_owner_check(tmp: Path) -> tuple[bool, subprocess.CompletedProcess[str]]:
    ws = make_workspace(tmp / "foreign-ws")
    nobody = pwd.getpwnam("nobody")
    for p in (ws, ws / "workflows", *sorted((ws / "workflows").iterdir())):
        os.chown(p, nobody.pw_uid, nobody.pw_gid)
    proc = vc_in(ws, "flow", "session", "list")
    return reported(proc), proc


def open_store_dir_check(tmp: Path) -> tuple[bool, subprocess.CompletedProcess[str]]:
    """A .vc/ someone left 0777 with a 0666 database: fixed or reported?"""
    ws = make_workspace(tmp / "open-store")
    vc_in(ws, "flow", "session", "create", "good")  # the first write makes the store
    (ws / ".vc").chmod(0o777)
    (ws / ".vc" / "flow.db").chmod(0o666)
    proc = vc_in(ws, "flow", "session", "list")
    fixed = mode(ws / ".vc") == 0o700 and mode(ws / ".vc" / "flow.db") == 0o600
    return fixed or reported(proc), proc


def test_permissions(tmp_path: Path) -> None:
    start = time.monotonic()
    problems, open_dirs, calls = private_files_problems(make_workspace(tmp_path / "ws"), 0o022)
    problems0, open_dirs0, calls0 = private_files_problems(
        make_workspace(tmp_path / "ws-umask0"), 0o000
    )
    ww_ok, _ = world_writable_check(tmp_path)
    as_root = os.geteuid() == 0
    fo_ok = foreign_owner_check(tmp_path)[0] if as_root else None
    os_ok, _ = open_store_dir_check(tmp_path)
    known = {
        "world_writable_reported": ww_ok,
        "foreign_owner_reported": fo_ok,
        "open_store_dir_fixed_or_reported": os_ok,
    }
    failures = (
        problems
        + [f"umask 0: {p}" for p in problems0]
        + open_dirs
        + [f"umask 0: {p}" for p in open_dirs0]
    )
    report(
        "files-permissions",
        trials=6,
        operations=calls + calls0 + 4 + (1 if as_root else 0),
        failures=len(failures),
        known_bugs=sum([not ww_ok, fo_ok is False, not os_ok]),
        lost=0,
        **known,
        seconds=round(time.monotonic() - start, 1),
    )
    assert not failures, failures


def test_world_writable_workspace_is_reported(tmp_path: Path) -> None:
    ok, proc = world_writable_check(tmp_path)
    assert ok, f"exit {proc.returncode}, stderr {proc.stderr!r}"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown the workspace")
def test_foreign_owned_workspace_is_reported(tmp_path: Path) -> None:
    ok, proc = foreign_owner_check(tmp_path)
    assert ok, f"exit {proc.returncode}, stderr {proc.stderr!r}"


def test_open_store_directory_is_fixed_or_reported(tmp_path: Path) -> None:
    ok, proc = open_store_dir_check(tmp_path)
    assert ok, f"exit {proc.returncode}, stderr {proc.stderr!r}"
