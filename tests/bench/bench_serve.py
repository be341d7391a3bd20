"""The served dashboard's benchmarks (`vc flow tui --serve`). Ratios and figures, never a
pass/fail.

* first paint in the browser against first paint in a terminal, on the same workspace
  (target <= 1.5x): in Chromium, from opening the link in a new tab (the server already
  running, the browser already open, as a user's would be) to the newest session's row
  received by the page and one more animation frame drawn; in tmux, from starting
  `vc flow tui` to that row on the screen (capture-pane). Both start a dashboard process of
  their own, so the ratio is what the browser path adds: page, scripts, WebSocket,
  textual-serve's relay. Rounds alternate so that machine noise hits both alike;
* idle CPU of a served dashboard with one tab open, the server and the tab's process
  together (target < 2% of a core), next to the same dashboard idle in tmux (the floor).

Needs Debian's chromium (and Playwright) and tmux; a figure whose tool is missing says so.
Run: `python -m tests.bench.bench_serve [--small]`.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench.bench_store import fill_sessions
from tests.bench.common import precompile, report

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RECORD_SCREEN = r"""
(() => {
  const Native = window.WebSocket;
  const ansi = /\x1b(\[[0-?]*[ -\/]*[@-~]|\][^\x07\x1b]*(\x07|\x1b\\)|[@-Z\\-_])/g;
  const decoder = new TextDecoder();
  window.__vcScreen = "";
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener("message", (event) => {
        if (event.data instanceof ArrayBuffer) {
          window.__vcScreen += decoder.decode(event.data, {stream: true}).replace(ansi, "");
        }
      });
    }
  };
})();
"""
SIZE = (140, 40)


def _env(ws: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VC_")}
    env["VC_HOME"] = str(ws)
    return env


def _cpu(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _pane_process(socket: str) -> int:
    """The process the tmux pane runs (the pane's shell may exec it or fork it)."""
    out = subprocess.run(
        ["tmux", "-L", socket, "list-panes", "-F", "#{pane_pid}"], capture_output=True, text=True
    ).stdout.split()
    pid = int(out[0])
    while children := _children(pid):
        pid = children[0]
    return pid


@contextmanager
def _tmux_dashboard(ws: Path, socket: str) -> Iterator[float]:
    """`vc flow tui` started in a fresh tmux terminal; yields when it started."""
    command = f"{sys.executable} -m app.main flow tui"
    started = time.perf_counter()
    size = ["-x", str(SIZE[0]), "-y", str(SIZE[1])]
    env = ["-e", f"VC_HOME={ws}", "-e", "TERM=xterm-256color"]
    new_session = ["new-session", "-d", *size, "-c", str(ws), *env, command]
    subprocess.run(
        ["tmux", "-L", socket, "-f", "/dev/null", *new_session], check=True, env=_env(ws)
    )
    try:
        yield started
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True)


def _tmux_first_paint(ws: Path, needle: str, round_no: int) -> float:
    socket = f"vc-bench-serve-{os.getpid()}-{round_no}"
    with _tmux_dashboard(ws, socket) as started:
        deadline = started + 60
        while time.perf_counter() < deadline:
            screen = subprocess.run(
                ["tmux", "-L", socket, "capture-pane", "-p"], capture_output=True, text=True
            ).stdout
            if needle in screen:
                return time.perf_counter() - started
            time.sleep(0.005)
    raise TimeoutError("the dashboard never showed its rows in tmux")


@contextmanager
def _server(ws: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.main", "flow", "tui", "--serve", "--port", "0"],
        cwd=ws,
        env=_env(ws),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"(https?://\S+/\?token=\S+)", line)
            if match:
                yield process, match.group(1)
                break
        else:
            raise RuntimeError("the server printed no link")
    finally:
        process.terminate()
        process.wait(15)


@contextmanager
def _chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()


def _browser_first_paint(browser: Any, url: str, needle: str) -> float:
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.add_init_script(RECORD_SCREEN)
    started = time.perf_counter()
    page.goto(url)
    page.wait_for_function("(text) => window.__vcScreen.includes(text)", arg=needle, timeout=60_000)
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done()))")
    elapsed = time.perf_counter() - started
    page.close()
    return elapsed


def first_paint(ws: Path, needle: str, rounds: int) -> tuple[float, float]:
    """Medians of (browser, tmux) first paint, alternated, after one warm-up each."""
    browser_times, tmux_times = [], []
    with _server(ws) as (_, url), _chromium() as browser:
        _browser_first_paint(browser, url, needle)
        _tmux_first_paint(ws, needle, 0)
        for i in range(rounds):
            browser_times.append(_browser_first_paint(browser, url, needle))
            tmux_times.append(_tmux_first_paint(ws, needle, i + 1))
            time.sleep(0.5)  # the closed tab's process exits meanwhile
    return statistics.median(browser_times), statistics.median(tmux_times)


def _share(pids: list[int], seconds: float) -> float:
    """Percent of one core the processes use together over ``seconds``."""
    before, started = sum(_cpu(p) for p in pids), time.monotonic()
    time.sleep(seconds)
    return (sum(_cpu(p) for p in pids) - before) / (time.monotonic() - started) * 100


def idle_served(ws: Path, needle: str, seconds: float) -> float:
    with _server(ws) as (server, url), _chromium() as browser:
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.add_init_script(RECORD_SCREEN)
        page.goto(url)
        page.wait_for_function("(t) => window.__vcScreen.includes(t)", arg=needle)
        time.sleep(3)  # start-up work settles
        pids = [server.pid, *_children(server.pid)]
        share = _share(pids, seconds)
        page.close()
        return share


def idle_terminal(ws: Path, seconds: float) -> float:
    socket = f"vc-bench-serve-idle-{os.getpid()}"
    with _tmux_dashboard(ws, socket):
        time.sleep(4)
        return _share([_pane_process(socket)], seconds)


def main(small: bool = False) -> list[str]:
    precompile()
    lines: list[str] = []
    missing = [
        what
        for what, present in (
            ("Debian's chromium", os.access(CHROMIUM, os.X_OK)),
            ("tmux", shutil.which("tmux") is not None),
            ("playwright", _importable("playwright")),
        )
        if not present
    ]
    if missing:
        reason = f"skipped: {', '.join(missing)} not installed"
        return [report("first paint in a browser", reason), report("idle served", reason)]
    count = 100 if small else 1_000
    ws = Path(tempfile.mkdtemp(prefix="vc-bench-serve-"))
    try:
        fill_sessions(ws, count)
        needle = f"session {count - 1}"  # the newest: the table's first row
        b, t = first_paint(ws, needle, 1 if small else 5)
        lines.append(
            report(
                "first paint in a browser",
                f"Chromium {b * 1000:.0f} ms vs tmux {t * 1000:.0f} ms with {count:,} "
                f"sessions: ratio {b / t:.2f} (target <= 1.5)",
            )
        )
        seconds = 3 if small else 15
        served = idle_served(ws, needle, seconds)
        floor = idle_terminal(ws, seconds)
        lines.append(
            report(
                "idle served",
                f"server and tab {served:.2f}% of a core; the same dashboard in tmux "
                f"{floor:.2f}% (target < 2%)",
            )
        )
    finally:
        shutil.rmtree(ws, ignore_errors=True)
    return lines


def _importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


if __name__ == "__main__":
    main(small="--small" in sys.argv)
