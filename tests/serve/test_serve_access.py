"""`vc flow tui --serve` is private by default: the link's token, the page's own Origin, a cap
on open tabs, nothing of the command line or environment in the page; and its command-line
errors are one line each. A real server process, a real HTTP and WebSocket client."""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.serve.conftest import Served, client_session, open_tab


async def test_the_page_is_refused_without_the_token(serve: Callable[..., Served]) -> None:
    served = serve()
    async with aiohttp.ClientSession() as session:
        for url in (f"{served.base}/", f"{served.base}/?token=wrong{served.token[5:]}"):
            async with session.get(url) as response:
                assert response.status == 403, url
                assert "needs the link with its token" in await response.text()
        async with session.get(served.url) as response:
            assert response.status == 200
            assert "vc flow" in await response.text()


async def test_what_the_page_loads_needs_the_token_or_its_cookie(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    script = f"{served.base}/static/js/textual.js"
    async with aiohttp.ClientSession() as stranger, stranger.get(script) as response:
        assert response.status == 403
    async with client_session() as session:
        async with session.get(served.url) as response:
            cookie = response.cookies[f"vc_token_{served.base.rsplit(':', 1)[1]}"]
            assert cookie["httponly"] and cookie["samesite"] == "Strict"
        async with session.get(script) as response:
            assert response.status == 200


async def test_a_websocket_from_another_origin_is_refused(serve: Callable[..., Served]) -> None:
    served = serve()
    async with client_session() as session:
        async with session.get(served.url) as response:
            assert response.status == 200
        for headers in ({"Origin": "http://evil.example"}, {"Origin": "null"}, {}):
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await session.ws_connect(f"{served.base}/ws?width=80&height=24", headers=headers)
            assert refused.value.status == 403, headers
    assert served.tabs() == []  # nothing was started for them


async def test_a_websocket_without_the_token_is_refused(serve: Callable[..., Served]) -> None:
    served = serve()
    async with aiohttp.ClientSession() as session:  # no cookie: it never loaded the page
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(
                f"{served.base}/ws?width=80&height=24", headers={"Origin": served.base}
            )
        assert refused.value.status == 403


async def test_a_tab_gets_a_live_dashboard(serve: Callable[..., Served], vc: Any) -> None:
    created = vc("flow", "session", "create", "hello", "--name", "served-probe")
    assert created.returncode == 0, created.stderr
    served = serve()
    async with client_session() as session:
        tab = await open_tab(session, served)
        await tab.read_until("served-probe")
        assert len(served.tabs()) == 1
        await tab.ws.close()


async def test_a_tab_beyond_the_cap_is_refused_even_when_its_page_loaded_first(
    serve: Callable[..., Served],
) -> None:
    """Two pages loaded while no tab was open: the second one's WebSocket is refused."""
    served = serve(env={"VC_SERVE_MAX_TABS": "1"})
    async with client_session() as early, client_session() as session:
        async with early.get(served.url) as response:
            assert response.status == 200
        first = await open_tab(session, served)
        await first.read_until("vc flow")
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await early.ws_connect(
                f"{served.base}/ws?width=80&height=24", headers={"Origin": served.base}
            )
        assert refused.value.status == 503
        await first.ws.close()


async def test_a_page_beyond_the_cap_says_why_and_is_served_again_once_a_tab_closes(
    serve: Callable[..., Served],
) -> None:
    """The browser shows this page's text; a page whose WebSocket is refused would only
    show textual-serve's "Session ended."."""
    served = serve(env={"VC_SERVE_MAX_TABS": "1"})
    async with client_session() as session:
        first = await open_tab(session, served)
        await first.read_until("vc flow")
        async with session.get(served.url) as response:
            assert response.status == 503
            assert "1 tabs are open, the most this server allows" in await response.text()
        await first.ws.close()
        assert await _page_status_once_free(session, served) == 200


async def _page_status_once_free(session: aiohttp.ClientSession, served: Served) -> int:
    """The page's status, asked again while the closed tab is still being let go (10 s)."""
    import asyncio

    for _ in range(100):
        async with session.get(served.url) as response:
            if response.status != 503:
                return response.status
        await asyncio.sleep(0.1)
    return 503


async def test_the_page_shows_no_command_line_or_environment(
    serve: Callable[..., Served], workspace: Path
) -> None:
    served = serve(env={"VC_SECRET_PROBE": "s3cr3t-value"})
    async with client_session() as session, session.get(served.url) as response:
        page = await response.text()
        policy = response.headers["Content-Security-Policy"]
    for leak in (sys.executable, "app.tui.tab", "s3cr3t-value", str(workspace), "exec "):
        assert leak not in page
    assert "<div>vc flow</div>" in page
    assert "frame-ancestors 'none'" in policy and "default-src 'none'" in policy


def test_it_prints_one_link_with_a_fresh_token(serve: Callable[..., Served]) -> None:
    first, second = serve(), serve()
    assert first.url.startswith("http://127.0.0.1:")
    assert len(first.token) >= 32 and first.token != second.token


def test_a_port_in_use_is_one_line_and_exit_1(vc: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = vc("flow", "tui", "--serve", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.startswith(f"vc: error: cannot serve on 127.0.0.1:{port}: ")
    assert "--port" in result.stderr and len(result.stderr.splitlines()) == 1


@pytest.mark.parametrize(
    "args", [["--host", "0.0.0.0"], ["--port", "8000"], ["--public-url", "https://x.example"]]
)
def test_serve_options_without_serve_are_a_usage_error(vc: Any, args: list[str]) -> None:
    result = vc("flow", "tui", *args)
    assert result.returncode == 2
    assert result.stderr == f"vc: error: {args[0]} needs --serve (see 'vc flow tui --help')\n"


@pytest.mark.parametrize("host", ["", "  "])
def test_a_blank_host_is_a_usage_error(vc: Any, host: str) -> None:
    result = vc("flow", "tui", "--serve", "--port", "0", "--host", host)
    assert result.returncode == 2
    assert result.stderr == (
        "vc: error: --host must name an address to listen on, e.g. 127.0.0.1\n"
    )


def test_a_bad_public_url_is_refused(vc: Any) -> None:
    result = vc("flow", "tui", "--serve", "--port", "0", "--public-url", "ftp://x")
    assert result.returncode == 2
    assert result.stderr.startswith("vc: error: --public-url 'ftp://x' is not an http")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://x.example/path?q=1", "https://x.example/path?q=1"),  # the token would join q
        ("https://x.example#frag", "https://x.example#frag"),  # it would be in the fragment
        ("https://x.example/?", "https://x.example/?"),  # an empty query swallows it too
        ("https://x.example#", "https://x.example#"),
        ("https://x.example:99999", "https://x.example:99999"),
        ("https://x.example:0", "https://x.example:0"),
        ("https://ana:s3cret@x.example", "https://x.example"),  # never printed back
    ],
)
def test_a_public_url_the_link_cannot_be_built_on_is_refused(vc: Any, url: str, shown: str) -> None:
    result = vc("flow", "tui", "--serve", "--port", "0", "--public-url", url)
    assert result.returncode == 2
    assert result.stderr.startswith(f"vc: error: --public-url {shown!r} is not an http")
    assert "s3cret" not in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_bad_tab_cap_is_refused(vc: Any) -> None:
    result = vc("flow", "tui", "--serve", "--port", "0", env={"VC_SERVE_MAX_TABS": "none"})
    assert result.returncode == 2
    assert result.stderr.startswith("vc: error: VC_SERVE_MAX_TABS='none' is not a whole")


async def test_another_address_must_be_named_warns_and_still_needs_the_token(
    serve: Callable[..., Served],
) -> None:
    served = serve("--host", "0.0.0.0", "--public-url", "http://127.0.0.1:1")
    assert served.process.stderr is not None
    served.process.terminate()
    served.process.wait(15)
    assert "listening on 0.0.0.0, not only this machine" in served.process.stderr.read()


async def test_on_a_wildcard_address_the_link_names_this_machine_not_a_loopback_name(
    serve: Callable[..., Served],
) -> None:
    """A teammate opens the link on their own machine: ``localhost`` (what the fully
    qualified name often is, the host name mapped to 127.0.0.1) would take them there."""
    import socket

    served = serve("--host", "0.0.0.0")
    host = served.base.split("://", 1)[1].rsplit(":", 1)[0]
    assert host not in ("localhost", "127.0.0.1", "0.0.0.0")
    assert host in (socket.getfqdn(), socket.gethostname())


async def test_a_wildcard_address_still_needs_the_token(serve: Callable[..., Served]) -> None:
    served = serve("--host", "0.0.0.0")
    port = served.base.rsplit(":", 1)[1]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/") as response:
            assert response.status == 403
        async with session.get(f"http://127.0.0.1:{port}/?token={served.token}") as response:
            assert response.status == 200


async def test_on_a_wildcard_address_the_page_speaks_the_address_the_browser_used(
    serve: Callable[..., Served],
) -> None:
    """Bound to 0.0.0.0, the machine is reached by any of its addresses: the page's script,
    WebSocket and policy name the one the request came to, and the WebSocket from that
    page's origin is let in (another origin still is not)."""
    served = serve("--host", "0.0.0.0")
    port = served.base.rsplit(":", 1)[1]
    here = f"http://127.0.0.1:{port}"
    async with client_session() as session:
        async with session.get(f"{here}/?token={served.token}") as response:
            page = await response.text()
            policy = response.headers["Content-Security-Policy"]
        assert f'data-session-websocket-url="ws://127.0.0.1:{port}/ws"' in page
        assert f'src="{here}/static/js/textual.js"' in page
        assert f"connect-src 'self' ws://127.0.0.1:{port}" in policy
        assert "fonts.googleapis.com" not in page
        ws = f"{here}/ws?width=80&height=24"
        tab = await session.ws_connect(ws, headers={"Origin": here})
        await tab.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(ws, headers={"Origin": f"http://localhost:{port}"})


async def test_a_wildcard_written_another_way_is_a_wildcard_too(
    serve: Callable[..., Served],
) -> None:
    served = serve("--host", "0")  # binds 0.0.0.0
    assert "://0:" not in served.url
    port = served.base.rsplit(":", 1)[1]
    async with client_session() as session:
        async with session.get(f"http://127.0.0.1:{port}/?token={served.token}") as response:
            page = await response.text()
        assert f'data-session-websocket-url="ws://127.0.0.1:{port}/ws"' in page


async def test_on_a_wildcard_address_a_host_that_names_no_address_is_a_bad_request(
    serve: Callable[..., Served],
) -> None:
    served = serve("--host", "0.0.0.0")
    port = served.base.rsplit(":", 1)[1]
    async with client_session() as session:
        for host in ("h:99999", "[1.2.3.4]", "a b"):
            url = f"http://127.0.0.1:{port}/?token={served.token}"
            async with session.get(url, headers={"Host": host}) as response:
                assert response.status == 400, host


async def test_on_a_named_address_the_host_header_changes_nothing(
    serve: Callable[..., Served],
) -> None:
    served = serve()
    async with client_session() as session:
        headers = {"Host": "elsewhere.example:1"}
        async with session.get(served.url, headers=headers) as response:
            page = await response.text()
        assert f'src="{served.base}/static/js/textual.js"' in page
        assert "elsewhere.example" not in page


async def test_behind_a_tls_proxy_the_page_speaks_the_public_url(
    serve: Callable[..., Served],
) -> None:
    served = serve("--public-url", "https://dash.example.org/")
    assert served.url.startswith("https://dash.example.org/?token=")
    listening = next(line for line in served.printed if line.startswith("listening on "))
    local = "http://" + listening.split()[2]  # where the proxy forwards to
    async with client_session() as session:
        async with session.get(f"{local}/?token={served.token}") as response:
            page = await response.text()
            assert "Secure" in response.headers["Set-Cookie"]
        assert 'data-session-websocket-url="wss://dash.example.org/ws"' in page
        assert "https://dash.example.org/static/" in page
        # A Secure cookie goes over HTTPS only: the token in the query stands in for it.
        ws = f"{local}/ws?token={served.token}&width=80&height=24"
        tab = await session.ws_connect(ws, headers={"Origin": "https://dash.example.org"})
        await tab.close()
        with pytest.raises(aiohttp.WSServerHandshakeError):
            await session.ws_connect(ws, headers={"Origin": local})
