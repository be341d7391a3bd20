"""Fixtures of the served dashboard's tests: the real `vc flow tui --serve` as a process (on a
free port), a WebSocket client that behaves like textual-serve's page, and the checks that
nothing of a workspace is left running."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import vc_env
from tests.processes import alive, processes_of

URL = re.compile(r"(https?://\S+/\?token=(\S+))")
ANSI = re.compile(r"\x1b(\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])")


def tab_pids(server_pid: int) -> list[int]:
    """The server's children that are tab dashboards."""
    found = []
    try:
        children = Path(f"/proc/{server_pid}/task/{server_pid}/children").read_text().split()
    except OSError:
        return []
    for child in children:
        try:
            argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"app.tui.tab" in argv and alive(int(child)):
            found.append(int(child))
    return found


class Served:
    """A running `vc flow tui --serve` and what it printed."""

    def __init__(self, process: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
        self.process = process
        self.lines = lines
        self.printed: list[str] = []
        self.url = ""
        self.token = ""

    @property
    def base(self) -> str:
        return self.url.split("/?", 1)[0]

    def wait_for_url(self, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                if self.process.poll() is not None:
                    break
                continue
            self.printed.append(line)
            match = URL.search(line)
            if match:
                self.url, self.token = match.group(1), match.group(2)
                return self.url
        stderr = self.process.stderr.read() if self.process.poll() is not None else ""
        raise AssertionError(
            f"no URL printed by the server; stdout {self.printed!r}, stderr {stderr!r}"
        )

    def tabs(self) -> list[int]:
        return tab_pids(self.process.pid)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 15.0) -> float:
        """Signal the server; the seconds it took to exit."""
        started = time.monotonic()
        self.process.send_signal(signum)
        self.process.wait(timeout)
        return time.monotonic() - started


@pytest.fixture
def serve(workspace: Path) -> Iterator[Callable[..., Served]]:
    """Start `vc flow tui --serve --port 0 [ARGS…]` in the workspace; whatever was started
    is stopped afterwards, and its tab processes with it."""
    started: list[Served] = []

    def start(*args: str, env: dict[str, str] | None = None, unset: tuple[str, ...] = ()) -> Served:
        environment = {k: v for k, v in vc_env(env).items() if k not in unset}
        process = subprocess.Popen(
            [sys.executable, "-m", "app.main", "flow", "tui", "--serve", "--port", "0", *args],
            cwd=workspace,
            env=environment,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        served = Served(process, lines)
        started.append(served)
        served.wait_for_url()
        return served

    try:
        yield start
    finally:
        for served in started:
            if served.process.poll() is None:
                served.process.terminate()
                try:
                    served.process.wait(15)
                except subprocess.TimeoutExpired:
                    served.process.kill()
                    served.process.wait()
        # Whatever a failed test left of the workspace (an orphaned tab, a runner) goes too.
        for pid in processes_of(str(workspace)):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


class Tab:
    """A WebSocket client speaking textual-serve's page protocol: what a browser tab does,
    without the browser (the browser test covers the page itself)."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.raw = b""

    @property
    def text(self) -> str:
        return ANSI.sub("", self.raw.decode("utf-8", "replace"))

    async def read_until(self, needle: str, timeout: float = 30.0) -> str:

        import aiohttp

        deadline = time.monotonic() + timeout
        while needle not in self.text:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{needle!r} never shown; the tab showed {self.text!r}")
            try:
                message = await self.ws.receive(timeout=remaining)
            except TimeoutError:
                continue
            if message.type == aiohttp.WSMsgType.BINARY:
                self.raw += message.data
            elif message.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                raise AssertionError(f"the tab closed before {needle!r}; it showed {self.text!r}")
        return self.text

    async def keys(self, text: str) -> None:
        await self.ws.send_str(json.dumps(["stdin", text]))

    async def closed_by_server(self, timeout: float = 15.0) -> bool:

        import aiohttp

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                message = await self.ws.receive(timeout=deadline - time.monotonic())
            except TimeoutError:
                break
            if message.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
            ):
                return True
        return False


def client_session() -> Any:
    """An aiohttp client that keeps the server's cookie (its jar refuses cookies of an IP
    address unless told otherwise, a browser does not)."""
    import aiohttp

    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def open_tab(session: Any, served: Served, size: tuple[int, int] = (120, 36)) -> Tab:
    """Load the page (which sets the cookie) and open its WebSocket, as the page does."""
    async with session.get(served.url) as response:
        assert response.status == 200, await response.text()
    ws = await session.ws_connect(
        f"{served.base}/ws?width={size[0]}&height={size[1]}", headers={"Origin": served.base}
    )
    return Tab(ws)
