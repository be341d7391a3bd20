"""The served dashboard in a real browser: Debian's `chromium`, driven by Playwright through
``executable_path`` (never `playwright install`, which downloads a browser of its own).

The page draws the terminal on a canvas, so what it shows is read from what it received:
an init script keeps the text of every WebSocket frame the page gets (escape sequences
removed) in ``window.__vcScreen``, and the tests wait on that with ``wait_for_function``;
never a fixed sleep.

Skipped, saying why, when chromium or Playwright is missing (`.ci/run` installs chromium).
``VC_SCREENSHOT=PATH`` keeps the screenshot the pause test takes.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.processes import alive, describe, processes_of, state
from tests.serve.conftest import Served
from tests.waiting import wait_until

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"

#: Headless on a machine without a GPU, and quiet: without the background-networking flags
#: Chromium keeps trying to reach its update and sync services.
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


@pytest.fixture
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"no {CHROMIUM}: the browser tests need Debian's chromium (apt-get install chromium)"
        )
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("playwright is not installed: pip install -e '.[test]'")
    # Neither Playwright's driver nor the browser gets the workspace's environment: the
    # workspace's processes are told apart by their VC_HOME.
    saved = {k: os.environ.pop(k) for k in list(os.environ) if k.startswith("VC_")}
    try:
        manager = sync_playwright()
        playwright = manager.__enter__()
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
    finally:
        os.environ.update(saved)
    try:
        yield chromium
    finally:
        chromium.close()
        manager.__exit__(None, None, None)


def _page(browser: Any) -> Any:
    page = browser.new_page(viewport={"width": 1280, "height": 760})
    page.add_init_script(RECORD_SCREEN)
    return page


def _shown(page: Any, text: str, timeout: float = 30.0) -> None:
    page.wait_for_function(
        "(text) => window.__vcScreen.includes(text)", arg=text, timeout=timeout * 1000
    )


@contextmanager
def _another_local_site() -> Iterator[str]:
    """A page of another origin on this machine (another port: the same site, so the
    dashboard's cookie goes along, and only the Origin check stands in the way)."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>another local site</body></html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _stage_processes(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2 :].split()
        if int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def _view(session_id: str) -> Any:
    from store import get_session_factory, init_db
    from store.queries import get_session_view

    engine = init_db()
    try:
        with get_session_factory(engine)() as db:
            return get_session_view(db, session_id)
    finally:
        engine.dispose()


def test_a_running_session_is_paused_from_chromium(
    serve: Callable[..., Served], browser: Any, vc: Any, tmp_path: Path
) -> None:
    run = vc("flow", "run", "slow", "--detach", "--name", "browser-probe")
    assert run.returncode == 0, run.stderr
    sid = run.stdout.strip().splitlines()[-1]
    try:
        stage = wait_until(lambda: _view(sid).stages[0].pid or 0, "the stage to start", 20)
        served = serve()
        page = _page(browser)
        page.goto(served.url)
        _shown(page, "browser-probe")
        _shown(page, "ACTIVE 1")
        page.click(".textual-terminal")  # the terminal takes the keys
        page.keyboard.press("p")
        _shown(page, "PAUSED 1")
        assert _view(sid).status == "PAUSED"
        members = _stage_processes(stage)
        assert members

        def all_stopped() -> bool:  # the runner enforces the pause within its poll
            return all(state(pid) == "T" for pid in members)

        wait_until(all_stopped, f"every stage process stopped: {describe(members)}", 5)
        shot = Path(os.environ.get("VC_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        page.close()
    finally:
        vc("flow", "session", "abort", sid)
        wait_until(lambda: _view(sid).runner_pid is None, "the runner to exit", 20)


def test_chromium_without_the_token_or_from_another_origin_is_refused(
    serve: Callable[..., Served], browser: Any
) -> None:
    served = serve()
    stranger = browser.new_context()  # no cookie of the dashboard's
    response = stranger.new_page().goto(f"{served.base}/")
    assert response is not None and response.status == 403
    assert "needs the link with its token" in response.text()
    stranger.close()

    page = _page(browser)
    page.goto(served.url)  # the page's cookie, which same-site pages send along
    _shown(page, "vc flow")
    port = served.base.rsplit(":", 1)[1]
    with _another_local_site() as other:
        page.goto(f"{other}/")
        outcome = page.evaluate(
            """(url) => new Promise((resolve) => {
                const ws = new WebSocket(url);
                ws.onopen = () => resolve("opened");
                ws.onclose = (event) => resolve("closed " + event.code);
            })""",
            f"ws://127.0.0.1:{port}/ws?width=80&height=24",
        )
    assert outcome == "closed 1006"  # the handshake was refused
    served.stop(signal.SIGTERM)
    assert served.process.stderr is not None
    assert f"refused a WebSocket from origin {other}" in served.process.stderr.read()


def test_closing_the_tab_in_chromium_leaves_no_process(
    serve: Callable[..., Served], browser: Any, workspace: Path
) -> None:
    served = serve()
    page = _page(browser)
    page.goto(served.url)
    _shown(page, "vc flow")
    (tab,) = wait_until(served.tabs, "the tab's dashboard process", 20)
    page.close()
    wait_until(lambda: not alive(tab), "the tab's dashboard to exit", timeout=10)
    left = processes_of(str(workspace))
    assert left == [served.process.pid], describe(left)
    served.stop(signal.SIGTERM)
    left = processes_of(str(workspace))
    assert left == [], describe(left)
