"""A dashboard process always exits: when its terminal or its input is gone, when it is sent
SIGTERM or SIGHUP, and when a browser tab is resized and closed before its first frame.

Real processes on real ptys and pipes (a pty whose master closes without hanging the
dashboard up is what a terminal emulator, tmux or a web terminal does when its window is
closed under a process it did not start as its session leader). Before the fix each of these
left a process spinning at full speed that only SIGKILL ended (see app.tui.lifeline).
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import vc_env
from tests.processes import processes_of
from tests.waiting import poll, wait_until

ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")

#: Generous: the dashboard's own deadline is 5 s plus 2 s, and the machine may be busy.
EXIT_WITHIN = 15.0


def _resize(fd: int, columns: int, rows: int) -> None:
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _exits(process: subprocess.Popen[bytes], what: str) -> int:
    """The exit code, once the process has exited; fails (with how busy it was) if it does
    not within EXIT_WITHIN seconds."""
    try:
        return process.wait(EXIT_WITHIN)
    except subprocess.TimeoutExpired:
        before = _cpu_seconds(process.pid)
        time.sleep(1)
        busy = _cpu_seconds(process.pid) - before
        process.kill()
        process.wait()
        raise AssertionError(
            f"the dashboard did not exit after {what} (it was using {busy:.0%} of a core)"
        ) from None


class PtyDashboard:
    """`vc flow tui` on a pty of its own, not as the pty's session leader: closing the master
    hangs the terminal up without sending it SIGHUP."""

    def __init__(
        self,
        workspace: Path,
        *,
        stdin: str = "pty",
        args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        unset: tuple[str, ...] = (),
    ) -> None:
        self.master, slave = pty.openpty()
        _resize(slave, 120, 36)
        self.output = b""
        self._lock = threading.Lock()
        stdin_arg: int | None = slave
        self.pipe_w: int | None = None
        if stdin == "devnull":
            stdin_arg = subprocess.DEVNULL
        elif stdin == "pipe":
            stdin_arg, self.pipe_w = os.pipe()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "tui", *args],
            stdin=stdin_arg,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            cwd=workspace,
            env={
                k: v
                for k, v in vc_env({"TERM": "xterm-256color", **(env or {})}).items()
                if k not in unset
            },
        )
        os.close(slave)
        if stdin == "pipe":
            assert isinstance(stdin_arg, int)
            os.close(stdin_arg)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.output += data

    @property
    def text(self) -> str:
        with self._lock:
            return ANSI.sub("", self.output.decode("utf-8", "replace"))

    def wait_for(self, needle: str, timeout: float = 30.0) -> None:
        poll(lambda: needle in self.text or self.process.poll() is not None, timeout, 0.05)
        if needle not in self.text:
            raise AssertionError(f"{needle!r} never shown; the terminal got {self.text!r}")

    def close_terminal(self) -> None:
        os.close(self.master)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for fd in (self.master, self.pipe_w):
            if fd is not None:
                try:
                    os.close(fd)
                except OSError:
                    pass


@pytest.fixture
def dashboards(workspace: Path) -> Iterator[list[PtyDashboard]]:
    started: list[PtyDashboard] = []
    yield started
    for dashboard in started:
        dashboard.stop()


def test_a_dashboard_whose_terminal_closes_exits(
    workspace: Path, dashboards: list[PtyDashboard]
) -> None:
    dashboard = PtyDashboard(workspace)
    dashboards.append(dashboard)
    dashboard.wait_for("vc flow")
    dashboard.close_terminal()
    assert _exits(dashboard.process, "its terminal closed") == 1


def test_a_dashboard_whose_terminal_closes_before_its_first_frame_exits(
    workspace: Path, dashboards: list[PtyDashboard]
) -> None:
    dashboard = PtyDashboard(workspace)
    dashboards.append(dashboard)
    _resize(dashboard.master, 70, 20)
    dashboard.close_terminal()
    assert _exits(dashboard.process, "its terminal was resized and closed at once") == 1


def test_a_dashboard_started_on_a_terminal_already_closed_exits_1_not_as_a_usage_error(
    workspace: Path,
) -> None:
    """The window was closed between the start of `vc flow tui` and its look at the
    terminal: the hung-up terminal is no usage error (exit 2), the dashboard just ends."""
    master, slave = pty.openpty()
    os.close(master)
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "tui"],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            start_new_session=True,
            cwd=workspace,
            env=vc_env({"TERM": "xterm-256color"}),
        )
    finally:
        os.close(slave)
    assert _exits(process, "it started on a closed terminal") == 1


def test_a_dashboard_whose_input_pipe_closes_exits(
    workspace: Path, dashboards: list[PtyDashboard]
) -> None:
    dashboard = PtyDashboard(workspace, stdin="pipe")
    dashboards.append(dashboard)
    dashboard.wait_for("vc flow")
    assert dashboard.pipe_w is not None
    os.close(dashboard.pipe_w)
    dashboard.pipe_w = None
    assert _exits(dashboard.process, "its input pipe closed") == 1
    assert "vc: error: the dashboard's input closed (its terminal or pipe is gone)" in (
        dashboard.text
    )


def test_a_dashboard_whose_input_is_at_its_end_exits_saying_so(
    workspace: Path, dashboards: list[PtyDashboard]
) -> None:
    dashboard = PtyDashboard(workspace, stdin="devnull")
    dashboards.append(dashboard)
    assert _exits(dashboard.process, "it started with /dev/null as input") == 1
    assert "vc: error: the dashboard's input is at its end (stdin is a file or /dev/null)" in (
        dashboard.text
    )


def test_q_leaves_at_once_while_a_pause_waits_for_a_locked_store(
    workspace: Path, dashboards: list[PtyDashboard]
) -> None:
    import sqlite3

    made = subprocess.run(
        [sys.executable, "-m", "app.main", "flow", "session", "create", "hello"],
        cwd=workspace,
        env=vc_env({}),
        capture_output=True,
        text=True,
        check=True,
    )
    sid = made.stdout.strip()
    dashboard = PtyDashboard(workspace, env={"VC_BUSY_TIMEOUT": "30"})
    dashboards.append(dashboard)
    dashboard.wait_for("greet")  # the session is selected: its stages are shown
    locker = sqlite3.connect(workspace / ".vc" / "flow.db", timeout=1)
    try:
        locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
        os.write(dashboard.master, b"p")
        time.sleep(0.5)  # the pause is waiting for the lock
        started = time.monotonic()
        os.write(dashboard.master, b"q")
        assert _exits(dashboard.process, "q") == 0
        assert time.monotonic() - started < 5.0  # not the busy timeout, not the deadline
    finally:
        locker.rollback()
        locker.close()
    assert "quit before pause finished" in " ".join(dashboard.text.split())
    with sqlite3.connect(workspace / ".vc" / "flow.db") as db:
        (status,) = db.execute("SELECT status FROM flow_sessions WHERE id = ?", (sid,)).fetchone()
    assert status == "PENDING"  # the abandoned pause wrote nothing


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["TERM", "HUP"])
def test_a_signal_ends_a_dashboard_like_q(
    workspace: Path, dashboards: list[PtyDashboard], signum: int
) -> None:
    dashboard = PtyDashboard(workspace)
    dashboards.append(dashboard)
    dashboard.wait_for("vc flow")
    dashboard.process.send_signal(signum)
    assert _exits(dashboard.process, f"signal {signum}") == 128 + signum
    with dashboard._lock:
        assert b"\x1b[?1049l" in dashboard.output  # it left the alternate screen: restored


def test_ctrl_c_quits_a_dashboard_like_q(workspace: Path, dashboards: list[PtyDashboard]) -> None:
    """Typed on its terminal (a key, not a signal: the dashboard reads the terminal raw)."""
    dashboard = PtyDashboard(workspace)
    dashboards.append(dashboard)
    dashboard.wait_for("vc flow")
    os.write(dashboard.master, b"\x03")
    assert _exits(dashboard.process, "ctrl+c") == 0
    with dashboard._lock:
        assert b"\x1b[?1049l" in dashboard.output  # it left the alternate screen: restored


def test_closing_the_terminal_of_a_demo_stops_its_sessions(
    workspace: Path, dashboards: list[PtyDashboard], tmp_path: Path
) -> None:
    """The hang-up a closing terminal sends: the demo's sessions are stopped as on `q`."""
    temp = tmp_path / "tmp"
    temp.mkdir()
    dashboard = PtyDashboard(
        workspace, args=("--demo",), env={"TMPDIR": str(temp)}, unset=("VC_HOME",)
    )
    dashboards.append(dashboard)
    dashboard.wait_for("train: resnet run 7")
    runners = [pid for pid in processes_of(str(temp)) if pid != dashboard.process.pid]
    assert runners, "the demo runs sessions"
    try:
        dashboard.process.send_signal(signal.SIGHUP)
        dashboard.close_terminal()
        _exits(dashboard.process, "its terminal hung up")
        wait_until(lambda: not processes_of(str(temp)), "the demo's runners to exit", 20)
    finally:
        for pid in processes_of(str(temp)):
            os.kill(pid, signal.SIGKILL)


class WebDashboard:
    """A tab's dashboard as `vc flow tui --serve` runs it (Textual's web driver, textual-serve's
    pipes), driven by this test the way textual-serve drives it."""

    def __init__(self, workspace: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-m", "app.tui.tab"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=workspace,
            env=vc_env(
                {
                    "TEXTUAL_DRIVER": "textual.drivers.web_driver:WebDriver",
                    "COLUMNS": "120",
                    "ROWS": "36",
                }
            ),
        )
        self.received = b""
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        while chunk := self.process.stdout.read1(65536):
            self.received += chunk

    def meta(self, message: dict[str, object]) -> None:
        assert self.process.stdin is not None
        data = json.dumps(message).encode()
        self.process.stdin.write(b"M" + len(data).to_bytes(4, "big") + data)
        self.process.stdin.flush()

    def wait_for(self, needle: bytes, timeout: float = 30.0) -> None:
        poll(lambda: needle in self.received or self.process.poll() is not None, timeout, 0.05)
        if needle not in self.received:
            raise AssertionError(f"{needle!r} never received")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def web_dashboards(workspace: Path) -> Iterator[list[WebDashboard]]:
    started: list[WebDashboard] = []
    yield started
    for dashboard in started:
        dashboard.stop()


@pytest.mark.parametrize("after", [0.0, 0.2, 0.5])
def test_a_tab_resized_and_closed_before_its_first_frame_exits(
    workspace: Path, web_dashboards: list[WebDashboard], after: float
) -> None:
    """What textual-serve sends when a tab is resized and closed at once: a resize, then
    "quit". The exit used to reach the app before its first layout, and the screen then
    flipped between the two sizes forever at full speed, deaf to SIGTERM."""
    dashboard = WebDashboard(workspace)
    web_dashboards.append(dashboard)
    time.sleep(after)
    dashboard.meta({"type": "resize", "width": 70, "height": 20})
    dashboard.meta({"type": "quit"})
    assert _exits(dashboard.process, f"a resize and a quit {after}s after its start") == 0


def test_a_tab_whose_server_is_gone_exits(
    workspace: Path, web_dashboards: list[WebDashboard]
) -> None:
    dashboard = WebDashboard(workspace)
    web_dashboards.append(dashboard)
    dashboard.wait_for(b"__GANGLION__")
    dashboard.wait_for(b"vc flow")
    assert dashboard.process.stdin is not None
    dashboard.process.stdin.close()  # what the kernel does when the server dies
    assert _exits(dashboard.process, "its server's pipe closed") == 1
