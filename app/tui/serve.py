"""`vc flow tui --serve`: the dashboard in a browser, one dashboard process per tab.

textual-serve does the serving: its aiohttp server hands the page out, and each WebSocket
(one per tab) gets a process of its own running the dashboard with Textual's web driver
(``python -I -m app.tui.tab``: isolated, so nothing of the workspace or PYTHONPATH can stand
in for our modules). It has no notion of who may connect, so :class:`DashboardServer`
subclasses it to add, and only to add:

* **a token**: a random one in the printed link; every request needs it, in the link's
  query or, for what the page then loads (scripts, the WebSocket), in the cookie the page
  got with it (HttpOnly, SameSite=Strict, one per port);
* **an Origin check**: a WebSocket whose Origin is not the served page's is refused, so a
  page of another site open in the same browser cannot drive the dashboard;
* **a cap on open tabs** (``VC_SERVE_MAX_TABS``, 8 by default): each is a process;
* **a page served under the address the browser used** when bound to a wildcard address
  (``--host 0.0.0.0`` or ``::``) without ``--public-url``: its scripts, WebSocket and
  Origin check follow the request's Host, since no name printed at start is the one every
  browser reaches the machine by;
* **a page that shows nothing of the command line or environment** (the title is "vc
  flow", not the command textual-serve would show), sent with a Content-Security-Policy
  that lets it load only from this server (so it fetches no web font from elsewhere) and
  be framed by no other page;
* **an end that leaves nothing behind**: on SIGTERM, SIGINT or SIGHUP every tab is told to
  quit and given :data:`TAB_GRACE` seconds, then killed; the tab processes themselves exit
  when the server is gone however it ended (their stdin, the server's pipe, hangs up:
  see ``app.tui.lifeline``), and a served throw-away demo is stopped and removed by a
  small process of its own that outlives even a SIGKILL of the server
  (``app.tui.demo_reaper``).

The overrides are kept to hooks: ``_make_app`` (add the guard middleware), ``handle_index``
(add the cookie and headers to its answer), ``handle_websocket`` (count the tab, then
textual-serve's own handler), ``on_startup``/``on_shutdown``, and ``serve``, replaced because
textual-serve binds by host and port itself: here the socket is bound before anything
starts (a port in use is one line and exit 1, and ``--port 0`` takes a free one), and
aiohttp's shutdown wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web
from textual_serve.server import Server

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000

MAX_TABS_ENV = "VC_SERVE_MAX_TABS"
DEFAULT_MAX_TABS = 8

TAB_GRACE = 2.0
"""Seconds the tabs get to quit when the server stops, before they are killed."""

TAB_MODULE = "app.tui.tab"

log = logging.getLogger("vc.serve")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ServeError(Exception):
    """The server cannot start: one line for the user, and the exit code: 1 when it is
    refused (an address in use or not this machine's), 2 for a malformed value (a
    ``--public-url`` that is no URL, a ``VC_SERVE_MAX_TABS`` that is no number)."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


class DashboardServer(Server):
    """textual-serve's server, private: see the module's docstring."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        public_url: str,
        token: str,
        max_tabs: int = DEFAULT_MAX_TABS,
        on_started: Callable[[], None] | None = None,
        follow_host: bool = False,
    ) -> None:
        host, port = sock.getsockname()[:2]
        super().__init__(
            tab_command(), host=host, port=port, title="vc flow", public_url=public_url
        )
        self.sock = sock
        self.token = token
        self.max_tabs = max_tabs
        self.cookie = f"vc_token_{port}"
        self.tabs: set[asyncio.Task[Any]] = set()
        self._on_started = on_started
        #: Bound to a wildcard address without --public-url: the page is served under
        #: the address the browser used (its Host), which no name printed at start can be.
        self.follow_host = follow_host

    def base_for(self, request: web.Request) -> str:
        """The base URL of the page this request belongs to: the public URL, or, bound to
        a wildcard address, ``http://`` + the request's Host (a host name or an address,
        with its port; anything else is refused rather than written into the page)."""
        if not self.follow_host:
            return self.public_url
        host = request.headers.get("Host", "")
        base = f"http://{host}"
        try:
            parts = urlsplit(base)
            usable = _HOST_HEADER.fullmatch(host) is not None and bool(parts.hostname)
            _ = parts.port  # a port above 65535 raises
        except ValueError:
            usable = False
        if not usable:
            raise web.HTTPBadRequest(text="vc flow: a request without a usable Host header\n")
        return base

    # -- the guard ---------------------------------------------------------------------------

    def _token_ok(self, request: web.Request) -> bool:
        for given in (request.query.get("token"), request.cookies.get(self.cookie)):
            if given and hmac.compare_digest(given.encode(), self.token.encode()):
                return True
        return False

    @web.middleware
    async def guard(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not self._token_ok(request):
            if request.path == "/ws":
                log.warning(
                    "refused a WebSocket without the token (origin %s)",
                    request.headers.get("Origin") or "none",
                )
            raise web.HTTPForbidden(
                text="vc flow: this dashboard needs the link with its token "
                "(printed by `vc flow tui --serve`)\n"
            )
        if request.path == "/ws":
            origin = request.headers.get("Origin")
            if origin != url_origin(self.base_for(request)):
                log.warning("refused a WebSocket from origin %s", origin or "none")
                raise web.HTTPForbidden(text=f"vc flow: origin {origin} is not allowed\n")
        return await handler(request)

    async def _make_app(self) -> web.Application:
        app = await super()._make_app()
        app.middlewares.append(self.guard)
        return app

    async def handle_index(self, request: web.Request) -> web.StreamResponse:
        if len(self.tabs) >= self.max_tabs:
            # said here, where the browser shows it: a page whose WebSocket is refused
            # only says "Session ended."
            raise web.HTTPServiceUnavailable(text=self._full())
        base = self.base_for(request)
        # textual-serve writes its URLs from public_url: for this page, its base. Its
        # handler computes them before its first await, so no other request sees it.
        shared, self.public_url = self.public_url, base
        try:
            response: web.StreamResponse = await super().handle_index(request)
        finally:
            self.public_url = shared
        if isinstance(response, web.Response) and response.text is not None:
            # textual-serve's page links a web font; the policy below would block it, so
            # the page does not even ask (nothing is fetched from elsewhere, no console error)
            response.text = _WEB_FONT.sub("", response.text)
        response.set_cookie(
            self.cookie,
            self.token,
            httponly=True,
            samesite="Strict",
            secure=base.startswith("https:"),
            path="/",
        )
        origin = url_origin(base)
        ws_origin = "ws" + origin[4:] if origin.startswith("http") else origin
        response.headers["Content-Security-Policy"] = (
            "default-src 'none'; script-src 'self' 'unsafe-inline'; "
            "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
            f"connect-src 'self' {ws_origin}; frame-ancestors 'none'; base-uri 'none'; "
            "form-action 'none'"
        )
        response.headers["Referrer-Policy"] = "no-referrer"
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Cache-Control"] = "no-store"
        return response

    def _full(self) -> str:
        """The refusal of one tab more than the cap (logged too)."""
        log.warning("refused a tab: %d are open (%s)", len(self.tabs), MAX_TABS_ENV)
        return (
            f"vc flow: {len(self.tabs)} tabs are open, the most this server allows "
            f"({MAX_TABS_ENV}): close one and reload\n"
        )

    async def handle_websocket(self, request: web.Request) -> web.WebSocketResponse:
        if len(self.tabs) >= self.max_tabs:  # opened meanwhile by another page
            raise web.HTTPServiceUnavailable(text=self._full())
        task = asyncio.current_task()
        assert task is not None
        self.tabs.add(task)
        log.info("tab opened (%d open)", len(self.tabs))
        try:
            return await super().handle_websocket(request)
        finally:
            self.tabs.discard(task)
            log.info("tab closed (%d open)", len(self.tabs))

    # -- start and stop ----------------------------------------------------------------------

    def initialize_logging(self) -> None:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("vc: %(message)s"))
        for name, level in (("vc.serve", logging.INFO), ("textual-serve", logging.WARNING)):
            logger = logging.getLogger(name)
            logger.handlers[:] = [handler]
            logger.setLevel(level)
            logger.propagate = False

    async def on_startup(self, app: web.Application) -> None:
        if self._on_started is not None:
            self._on_started()

    async def on_shutdown(self, app: web.Application) -> None:
        """Every tab is told to quit (textual-serve's handler does that when cancelled)
        and given TAB_GRACE seconds; then a tab process still there is killed, and a
        handler still waiting for its browser to answer the closing handshake (a frozen or
        vanished client) is cancelled again, which drops the connection."""
        pending = set(self.tabs)
        for task in pending:
            task.cancel()
        if pending:
            _, pending = await asyncio.wait(pending, timeout=TAB_GRACE)
        for pid in tab_processes():
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        for _ in range(3):
            if not pending:
                break
            for task in pending:
                task.cancel()
            _, pending = await asyncio.wait(pending, timeout=0.5)
        # Let the loop reap them: a subprocess transport outliving the loop complains.
        deadline = time.monotonic() + 1.0
        while tab_processes(zombies=True) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def serve(self, debug: bool = False) -> None:
        self.debug = debug
        self.initialize_logging()
        loop = asyncio.new_event_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, self.request_exit)
        try:
            web.run_app(
                self._make_app(),
                sock=self.sock,
                handle_signals=False,
                loop=loop,
                print=None,
                access_log=None,
                shutdown_timeout=TAB_GRACE,
            )
        finally:
            with contextlib.suppress(Exception):
                loop.close()


def tab_command() -> str:
    """The shell command textual-serve runs for a tab (``exec``: the dashboard is the
    server's own child, so the tab's pipes are its stdin and stdout)."""
    return f"exec {shlex.quote(sys.executable)} -I -m {TAB_MODULE}"


def tab_processes(*, zombies: bool = False) -> list[int]:
    """This process's children that are tab dashboards (and, with ``zombies``, any child
    that has exited but is not reaped yet)."""
    me = os.getpid()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            fields = stat[stat.rfind(b")") + 2 :].split()
            if int(fields[1]) != me:
                continue
            if fields[0] == b"Z":
                if zombies:
                    found.append(int(entry))
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError, IndexError):
            continue
        if TAB_MODULE.encode() in argv:
            found.append(int(entry))
    return found


def url_origin(url: str) -> str:
    """``scheme://host[:port]`` of a URL, as a browser sends it in ``Origin``."""
    parts = urlsplit(url)
    default_port = {"http": 80, "https": 443}.get(parts.scheme)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    netloc = host if port in (None, default_port) else f"{host}:{port}"
    return f"{parts.scheme}://{netloc}"


def bind(host: str, port: int) -> socket.socket:
    """The listening socket, bound before anything else starts."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ServeError(f"cannot serve on {host}: {exc.strerror}") from None
    family, _, _, _, address = infos[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        hint = " (choose another with --port)" if exc.errno == 98 else ""
        raise ServeError(f"cannot serve on {host}:{port}: {exc.strerror or exc}{hint}") from None
    sock.setblocking(False)
    return sock


_WEB_FONT = re.compile(
    r"<link\s+rel=\"stylesheet\"\s+href=\"https://fonts\.googleapis\.com[^\"]*\"\s*/>"
)

#: A Host header the page may be served under: a name or IPv4 address, or a bracketed IPv6
#: address, with an optional port.
_HOST_HEADER = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?"
)


def is_wildcard(host: str) -> bool:
    """0.0.0.0 or ::, which name no host a browser could use."""
    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False


def is_loopback(sock: socket.socket) -> bool:
    address = sock.getsockname()[0]
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def public_url_for(sock: socket.socket, host: str, public_url: str | None) -> str:
    """The base URL the page is served under: ``--public-url`` when given (a reverse proxy
    in front), else this host as the user named it; a wildcard address bound (0.0.0.0 or
    ::, however written: ``--host 0`` too) names no host, so the machine's name stands for
    it, as the page's own URLs follow the browser's Host (``DashboardServer.base_for``)."""
    if public_url:
        if not _usable_public_url(public_url):
            from store.text import clean_text

            parts = urlsplit(public_url)
            host_part = parts.netloc.rpartition("@")[2]  # a user:password is never shown
            shown = clean_text(public_url.replace(parts.netloc, host_part, 1))
            raise ServeError(
                f"--public-url {shown!r} is not an http:// or https:// URL with a host (and a "
                "port from 1 to 65535, if any), without a user, a query or a fragment",
                2,
            )
        return public_url.rstrip("/")
    address, port = sock.getsockname()[:2]
    name = _host_name() if is_wildcard(address) else host
    if ":" in name:
        name = f"[{name}]"
    return f"http://{name}:{port}"


def _host_name() -> str:
    """This machine's name for a link others open: its fully qualified name, unless that
    is only a loopback name (``/etc/hosts`` often maps the host name to 127.0.0.1, and
    ``localhost`` in a link takes a teammate to their own machine): then the host name."""
    name = socket.getfqdn()
    if name == "localhost" or name.startswith("localhost.") or name.endswith(".localdomain"):
        return socket.gethostname() or name
    return name


def _usable_public_url(url: str) -> bool:
    """Can ``url`` be the base of the printed link (the link adds ``/?token=…``)? A query
    or a fragment would swallow the token, and a user:password in it would be printed for
    anyone to read."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:  # out of range, or not a number
        return False
    return (
        parts.scheme in ("http", "https")
        and bool(parts.hostname)
        and port != 0
        and not ("?" in url or "#" in url or "@" in parts.netloc)  # even an empty one
    )


def max_tabs_setting() -> int:
    raw = os.environ.get(MAX_TABS_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_TABS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise ServeError(f"{MAX_TABS_ENV}={raw!r} is not a whole number of tabs (1 or more)", 2)
    return value


def serve(*, demo: bool, host: str, port: int, public_url: str | None) -> int:
    """The command: bind, check the store (or make the demo), serve until stopped."""
    from app.console import warning_line
    from app.context import open_context
    from app.tui import demo as demo_mod

    max_tabs = max_tabs_setting()
    sock = bind(host, port)
    reaper: subprocess.Popen[bytes] | None = None
    try:
        base = public_url_for(sock, host, public_url)
        if not demo:
            from app.settings import no_workspace_here

            missing = no_workspace_here()
            if missing is not None:
                raise ServeError(missing, 1)
        throwaway = demo_mod.prepare_demo_environment() if demo else False
        with open_context(warn=warning_line) as ctx:
            if demo:
                if throwaway:
                    from app.tui.demo_reaper import start_reaper

                    reaper = start_reaper(ctx.settings.workspace)
                demo_mod.start_demo_sessions(ctx)
            workspace = ctx.settings.workspace
        token = secrets.token_urlsafe(24)
        link = f"{base}/?token={token}"

        def started() -> None:
            if demo:
                note = (
                    "stopped and removed when the server stops"
                    if throwaway
                    else "its sessions keep running"
                )
                print(f"demo workspace: {workspace} ({note})")
            if public_url:
                address = sock.getsockname()
                shown = f"[{address[0]}]" if ":" in address[0] else address[0]
                print(f"listening on {shown}:{address[1]} (behind {base})")
            # Printed whole, never fitted to the terminal's width: it is a link.
            print(f"serving the dashboard at {link}")
            print(
                "open it in a browser: anyone with this link can drive the dashboard. "
                "Ctrl-C stops the server."
            )
            if not is_loopback(sock):
                warning_line(
                    f"listening on {host}, not only this machine: the traffic is plain "
                    "HTTP, put a TLS proxy in front (see the README, 'In a browser')"
                )
            sys.stdout.flush()

        DashboardServer(
            sock,
            public_url=base,
            token=token,
            max_tabs=max_tabs,
            on_started=started,
            follow_host=public_url is None and is_wildcard(sock.getsockname()[0]),
        ).serve()
    finally:
        sock.close()
        if reaper is not None:
            finish_reaper(reaper)
    return 0


def finish_reaper(reaper: subprocess.Popen[bytes]) -> None:
    """Close the demo reaper's pipe: its signal to stop and remove the demo. The server
    does not wait for it (the demo's runners take a few seconds to stop their stages);
    the reaper runs on by itself, as it would after a SIGKILL of the server."""
    with contextlib.suppress(OSError):
        if reaper.stdin is not None:
            reaper.stdin.close()
