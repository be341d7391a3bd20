"""`vc flow tui` in a real terminal: tmux runs it, send-keys types, capture-pane reads.

The one test that exercises what Pilot cannot: the console script, terminal input
parsing and rendering to a real pty. It runs a real session (`vc flow run slow --detach`),
pauses it with `p` and checks both the store and the screen, then quits with `q`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import readme_sh_block
from tests.waiting import wait_until

pytestmark = pytest.mark.tmux

TMUX = shutil.which("tmux")


class Terminal:
    """One tmux server of our own (its own socket), one window running one command."""

    def __init__(self, socket: str) -> None:
        self.socket = socket

    def tmux(self, *args: str) -> str:
        assert TMUX is not None
        result = subprocess.run(
            [TMUX, "-L", self.socket, *args], capture_output=True, text=True, timeout=10
        )
        if result.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {result.stderr.strip()}")
        return result.stdout

    def start(
        self, command: str, *, cwd: Path, env: dict[str, str], size: tuple[int, int] = (120, 36)
    ) -> None:
        env_args = [arg for key, value in env.items() for arg in ("-e", f"{key}={value}")]
        self.tmux(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            "e2e",
            "-x",
            str(size[0]),
            "-y",
            str(size[1]),
            "-c",
            str(cwd),
            *env_args,
            command,
        )

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "e2e")  # -J: wrapped lines joined

    def keys(self, *keys: str) -> None:
        self.tmux("send-keys", "-t", "e2e", *keys)

    def kill(self) -> None:
        if TMUX is not None:
            subprocess.run(
                [TMUX, "-L", self.socket, "kill-server"], capture_output=True, timeout=10
            )


@pytest.fixture
def terminal() -> Iterator[Terminal]:
    if TMUX is None:
        pytest.skip("tmux is not installed: the real-terminal test of `vc flow tui` needs it")
    term = Terminal(f"vc-e2e-{uuid.uuid4().hex[:12]}")
    try:
        yield term
    finally:
        term.kill()


def test_pause_in_a_real_terminal(workspace: Path, vc: Any, terminal: Terminal) -> None:
    run = vc("flow", "run", "slow", "--detach")
    assert run.returncode == 0, run.stderr
    sid = run.stdout.strip().splitlines()[-1]

    from store import get_session_factory, init_db
    from store.queries import get_session_view

    engine = init_db()
    factory = get_session_factory(engine)

    def stored() -> Any:
        with factory() as db:
            return get_session_view(db, sid)

    def stored_status() -> str:
        return str(stored().status)

    try:
        env = {"VC_HOME": str(workspace), "TERM": "xterm-256color"}
        terminal.start(
            f"{sys.executable} -m app.main flow tui; echo TUI-EXITED=$?; sleep 60",
            cwd=workspace,
            env=env,
        )
        row = wait_until(
            lambda: next(
                (
                    line
                    for line in terminal.screen().splitlines()
                    if sid[:8] in line and "ACTIVE" in line
                ),
                None,
            ),
            "the running session on screen",
        )
        assert "slow" in row
        terminal.keys("p")
        wait_until(lambda: stored_status() == "PAUSED", "PAUSED in the store")
        wait_until(
            lambda: any(
                sid[:8] in line and "PAUSED" in line for line in terminal.screen().splitlines()
            ),
            "PAUSED on screen",
            timeout=5,
        )
        terminal.keys("q")
        wait_until(lambda: "TUI-EXITED=0" in terminal.screen(), "`vc flow tui` to exit 0")
        assert stored_status() == "PAUSED"  # quitting the dashboard leaves sessions alone
    finally:
        vc("flow", "session", "abort", sid)
        wait_until(lambda: stored().runner_pid is None, "the runner to exit", timeout=20)
        engine.dispose()


def test_demo_starts_shows_its_sessions_and_cleans_up(
    tmp_path: Path, terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`vc flow tui --demo`, the README's first command: a throw-away workspace with live
    sessions. Quitting stops every session of it, the one started with `n` too, and
    removes the workspace: no process of it is left, no folder piles up."""
    for var in ("VC_HOME", "VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        monkeypatch.delenv(var, raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    terminal.start(
        f"{sys.executable} -m app.main flow tui --demo; echo TUI-EXITED=$?; sleep 60",
        cwd=tmp_path,
        env={"TMPDIR": str(temp), "TERM": "xterm-256color"},
    )
    try:
        names = ("train: resnet run 7", "release v1.2.3", "backup: nightly", "etl: daily import")
        wait_until(lambda: all(name in terminal.screen() for name in names), "the demo sessions")
        (workspace,) = temp.glob("vc-demo-*")
        demo_ids = {v.id for v in _sessions(workspace)}
        terminal.keys("n")
        wait_until(lambda: "Model training (demo)" in terminal.screen(), "the workflows listed")
        terminal.keys("Down", "Down", "Down", "Enter")  # demo-train: a ten-minute stage
        # Enter picks it and moves to the name field; keys typed before the focus has moved
        # still go to the list (which ignores letters), so type until the name shows.
        wait_until(
            lambda: "from-n" in terminal.screen() or terminal.keys("from-n"), "the name typed"
        )
        terminal.keys("Enter")
        started = wait_until(
            lambda: next((v for v in _sessions(workspace) if v.id not in demo_ids), None),
            "the session started with n",
        )
        wait_until(lambda: _live_stages(workspace, started.id), "its stage running", timeout=20)
        processes = _processes_of(workspace)
        assert len(processes) >= 4, processes  # two runners and a stage each, at least
        terminal.keys("q")
        screen = wait_until(
            lambda: "TUI-EXITED=" in terminal.screen() and terminal.screen(),
            "the demo to exit",
            timeout=30,
        )
        assert "TUI-EXITED=0" in screen, screen
        assert [p for p in processes if _still_running(p)] == []
        assert _processes_of(workspace) == []
        assert not workspace.exists() and list(temp.iterdir()) == []
        assert f"its workspace {workspace} removed" in screen.replace("\n", "")
    finally:
        terminal.kill()
        for workspace in temp.glob("vc-demo-*"):  # a failure above must leave no runner
            _abort_all(workspace)


def test_demo_closed_with_its_terminal_cleans_up_too(
    tmp_path: Path, terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing the terminal window (SIGHUP) is how many people leave a demo."""
    for var in ("VC_HOME", "VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        monkeypatch.delenv(var, raising=False)
    temp = tmp_path / "tmp"
    temp.mkdir()
    terminal.start(
        f"{sys.executable} -m app.main flow tui --demo",
        cwd=tmp_path,
        env={"TMPDIR": str(temp), "TERM": "xterm-256color"},
    )
    try:
        wait_until(lambda: "train: resnet run 7" in terminal.screen(), "the demo sessions")
        (workspace,) = temp.glob("vc-demo-*")
        wait_until(lambda: len(_processes_of(workspace)) >= 3, "its runners and a stage")
        processes = _processes_of(workspace)
        terminal.kill()  # the terminal goes away: SIGHUP
        wait_until(lambda: not workspace.exists(), "the demo workspace removed", timeout=30)
        assert list(temp.iterdir()) == []
        assert [p for p in processes if _still_running(p)] == []
    finally:
        for workspace in temp.glob("vc-demo-*"):
            _abort_all(workspace)


def _processes_of(workspace: Path) -> list[tuple[int, int | None]]:
    """(pid, start time) of every process working in ``workspace`` (runners and stages
    run there), found in /proc: what must be gone once the demo has quit."""
    from app.runner.process import process_start_time

    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if (
            cwd == str(workspace)
            or cwd.startswith(f"{workspace}/")
            or cwd.startswith(f"{workspace} ")
        ):
            found.append((int(entry.name), process_start_time(int(entry.name))))
    return found


def _still_running(process: tuple[int, int | None]) -> bool:
    """The same process (pid and start time) is there and not a zombie (nobody may reap
    orphans in a container)."""
    from app.runner.process import process_start_time

    pid, start = process
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    state = stat[stat.rfind(b")") + 2 :].split()[0]
    return state not in (b"Z", b"X") and start is not None and process_start_time(pid) == start


def _live_stages(workspace: Path, sid: str) -> bool:
    view = next((v for v in _sessions(workspace) if v.id == sid), None)
    return view is not None and any(s.status == "ACTIVE" for s in view.stages)


def _sessions(workspace: Path) -> list[Any]:
    from store import get_session_factory, init_db
    from store.queries import SessionFilter, list_sessions

    engine = init_db(f"sqlite:///{workspace / '.vc' / 'flow.db'}")
    try:
        with get_session_factory(engine)() as db:
            return list_sessions(db, SessionFilter())
    finally:
        engine.dispose()


def _abort_all(workspace: Path) -> None:
    from store import FlowSessionManager, get_session_factory, init_db
    from store.errors import StoreError

    engine = init_db(f"sqlite:///{workspace / '.vc' / 'flow.db'}")
    try:
        with get_session_factory(engine)() as db:
            for v in _sessions(workspace):
                if v.status in ("PENDING", "ACTIVE", "PAUSED"):
                    try:
                        FlowSessionManager(db, actor="test cleanup").abort(v.id)
                    except StoreError:
                        pass
    finally:
        engine.dispose()


def test_readme_walkthrough_runs_verbatim_in_a_fresh_workspace(
    tmp_path: Path, terminal: Terminal, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every line of the walkthrough, pasted in order into a shell of a fresh account (its
    own HOME, `vc` on PATH as the README installs it), succeeds; its last line, the
    dashboard, shows the session and quits with q."""
    for var in ("VC_HOME", "VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR", "PYTHONPATH"):
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    script = tmp_path / "walkthrough.sh"
    script.write_text("set -e\n" + readme_sh_block("## Writing a workflow"))
    path = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    # PATH set in the command: tmux 3.3 gives the window its server's PATH, not -e's
    terminal.start(
        f"PATH={shlex.quote(path)} bash {script}; echo WALKTHROUGH-EXIT=$?; sleep 60",
        cwd=tmp_path,
        env={"HOME": str(home), "TERM": "xterm-256color"},
    )
    workspace = home / "etl"
    try:

        def dashboard_shows_it_completed() -> bool:
            screen = terminal.screen()  # the header's counts ("DONE 1" when narrow)
            return "log: follow" in screen and ("COMPLETED 1" in screen or "DONE 1" in screen)

        wait_until(dashboard_shows_it_completed, "the dashboard, the session done", timeout=90)
        terminal.keys("q")
        screen = wait_until(
            lambda: "WALKTHROUGH-EXIT=" in terminal.screen() and terminal.screen(),
            "the walkthrough to end",
        )
        assert "WALKTHROUGH-EXIT=0" in screen, screen
        (session,) = _sessions(workspace)
        assert session.status == "COMPLETED"
        assert [s.status for s in session.stages] == ["COMPLETED"] * 4
        assert (workspace / "rows.txt").read_text() == "extracted 1200 rows\n"
    finally:
        terminal.kill()
        if (workspace / ".vc").exists():
            _abort_all(workspace)
