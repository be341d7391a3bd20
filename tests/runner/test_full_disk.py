"""A full disk, for real: the workspace, the store or the log directory on a small tmpfs
(``small_disk``) that a stage's output fills up, driven through the real `vc`.

What must hold: the store keeps its rows (log rows give way first, each gap noted), the
session ends soon after its last stage with a reason that says the disk is full, the
terminal says what could not be written, `vc` commands answer with one line, and once
there is room again the store is intact and the session can go on."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from store import get_session_factory, init_db
from store.queries import LogView, SessionView, get_session_view, list_sessions, read_logs

Vc = Callable[..., subprocess.CompletedProcess[str]]
SmallDisk = Callable[[str], Path]

#: 100,000 numbered lines of about 200 bytes: 20 MB, more than any small disk here holds.
LINES = 100_000
BIG = f"""
    stages:
      - {{name: first, run: echo first}}
      - name: big
        run: python3 -c "[print(f'line {{i}} ' + 'x' * 190) for i in range(1, {LINES + 1})]"
      - {{name: last, run: echo last}}
"""
NOTE = re.compile(r"^vc: (\d+) log line\(s\) are missing here: (.*)$")


class Workspace:
    """A workspace whose parts may live on small disks; reads its store from the test."""

    def __init__(self, root: Path, vc: Vc, env: dict[str, str]) -> None:
        self.root = root
        self._vc = vc
        self.env = {"VC_HOME": str(root), **env}
        (root / "workflows").mkdir(parents=True, exist_ok=True)
        (root / "workflows" / "big.yaml").write_text(textwrap.dedent(BIG).lstrip())
        (root / "workflows" / "hello.yaml").write_text("stages:\n  - {name: hi, run: echo hi}\n")
        url = env.get("VC_DATABASE_URL") or f"sqlite:///{root / '.vc' / 'flow.db'}"
        self.db_path = Path(url.removeprefix("sqlite:///"))
        self.log_dir = Path(env.get("VC_LOG_DIR") or root / "logs")

    def vc(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self._vc(*args, env=self.env, timeout=120)

    def _read(self, read: Callable[[Any], Any]) -> Any:
        engine = init_db(f"sqlite:///{self.db_path}")
        try:
            with get_session_factory(engine)() as db:
                return read(db)
        finally:
            engine.dispose()

    def newest(self) -> SessionView:
        view = self._read(lambda db: get_session_view(db, list_sessions(db, limit=1)[0].id))
        assert view is not None
        return view

    def logs(self, sid: str) -> list[LogView]:
        return list(self._read(lambda db: read_logs(db, sid, limit=10_000_000)))

    def session_log(self, sid: str) -> Path:
        return self.log_dir / "workflow" / "session" / f"{sid}.log"

    def integrity(self) -> str:
        conn = sqlite3.connect(self.db_path)
        try:
            return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
        finally:
            conn.close()


@pytest.fixture
def make_workspace(tmp_path: Path, vc: Vc) -> Iterator[Callable[..., Workspace]]:
    def make(root: Path | None = None, **env: str) -> Workspace:
        return Workspace(root or tmp_path / "ws", vc, env)

    yield make


def big_lines_accounted(ws: Workspace, sid: str) -> tuple[int, int]:
    """(lines of the big stage in the store, lines the store's notes say are missing)."""
    stored = noted = 0
    for row in ws.logs(sid):
        if row.stage != "big":
            continue
        match = NOTE.match(row.text)
        if match:
            noted += int(match.group(1))
        elif row.text.startswith("line "):
            stored += 1
    return stored, noted


def assert_failed_soon_for_the_full_store(ws: Workspace, result: Any) -> SessionView:
    assert result.returncode == 1, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("vc: error: session "), result.stderr
    assert f"the disk of the store {ws.db_path} is full" in last
    assert f"vc: warning: cannot write the store {ws.db_path}: the disk is full" in result.stderr
    view = ws.newest()
    assert view.status == "FAILED" and view.reason is not None
    assert view.reason.startswith(f"the disk of the store {ws.db_path} is full")
    assert [(s.name, s.status) for s in view.stages] == [
        ("first", "COMPLETED"),
        ("big", "COMPLETED"),
        ("last", "PENDING"),
    ]
    big = view.stages[1]
    assert view.finished_at is not None and big.finished_at is not None
    assert view.finished_at - big.finished_at < 5.0  # ended soon after its last stage
    assert ws.integrity() == "ok"
    return view


def test_a_full_workspace_fails_the_session_soon_saying_so_and_it_goes_on_later(
    small_disk: SmallDisk, make_workspace: Callable[..., Workspace]
) -> None:
    ws = make_workspace(small_disk("8m"))
    result = ws.vc("flow", "run", "big")
    view = assert_failed_soon_for_the_full_store(ws, result)
    stored, noted = big_lines_accounted(ws, view.id)
    assert stored + noted >= LINES  # every line of the stage is in the store or noted
    # Room again: the session log file (most of the disk) is removed by its owner.
    ws.session_log(view.id).unlink()
    assert ws.vc("flow", "session", "retry", view.id).returncode == 0
    again = ws.vc("flow", "run", "big", "--session", view.id)
    assert again.returncode == 0, again.stderr
    assert [(s.name, s.status) for s in ws.newest().stages][2] == ("last", "COMPLETED")
    assert ws.integrity() == "ok"


def test_a_full_store_disk_alone_fails_the_session_the_same_way(
    small_disk: SmallDisk, make_workspace: Callable[..., Workspace]
) -> None:
    """The log directory has room: its session file has every line the store could not
    take."""
    ws = make_workspace(VC_DATABASE_URL=f"sqlite:///{small_disk('4m') / 'flow.db'}")
    result = ws.vc("flow", "run", "big")
    view = assert_failed_soon_for_the_full_store(ws, result)
    stored, noted = big_lines_accounted(ws, view.id)
    assert stored + noted >= LINES
    text = ws.session_log(view.id).read_text()
    assert f"| big | line {LINES} " in text and "missing here" not in text


def test_a_full_log_disk_alone_completes_the_session_saying_what_the_file_misses(
    small_disk: SmallDisk, make_workspace: Callable[..., Workspace]
) -> None:
    """The store has every line; the session completes, its reason (and the terminal)
    saying how many lines the session log file misses."""
    ws = make_workspace(VC_LOG_DIR=str(small_disk("2m")))
    result = ws.vc("flow", "run", "big")
    assert result.returncode == 0, result.stderr
    assert "vc: warning: cannot write the log file " in result.stderr
    view = ws.newest()
    assert view.status == "COMPLETED"
    assert view.reason is not None
    assert re.fullmatch(
        rf"\d+ line\(s\) are missing from the session log file {ws.session_log(view.id)} "
        r"\(the disk was full\)",
        view.reason,
    ), view.reason
    assert view.reason in result.stdout
    assert big_lines_accounted(ws, view.id) == (LINES, 0)


def test_vc_commands_on_a_full_disk_answer_with_one_line(
    small_disk: SmallDisk, make_workspace: Callable[..., Workspace]
) -> None:
    ws = make_workspace(small_disk("4m"))
    assert ws.vc("flow", "run", "hello").returncode == 0
    filler = ws.root / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    for args in (("flow", "run", "hello"), ("flow", "session", "list")):
        result = ws.vc(*args)
        assert result.returncode == 1, (args, result.stdout)
        assert result.stderr.splitlines() == [
            f"vc: error: cannot use {ws.db_path}: the disk is full"
        ], args
    filler.unlink()
    assert ws.vc("flow", "run", "hello").returncode == 0
    assert ws.integrity() == "ok"
