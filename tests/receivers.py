"""Real notification targets for the tests, on 127.0.0.1: an HTTP server that Apprise's
``json://`` posts to (it records every message, or refuses them all with a status), and a
socket that accepts connections and never answers."""

from __future__ import annotations

import http.server
import json
import socket
import threading
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Received:
    path: str
    body: dict[str, Any]
    headers: dict[str, str]

    @property
    def title(self) -> str:
        return str(self.body.get("title", ""))

    @property
    def message(self) -> str:
        return str(self.body.get("message", ""))

    @property
    def type(self) -> str:
        return str(self.body.get("type", ""))


class Receiver:
    """An HTTP server on 127.0.0.1 that answers every POST with ``status`` and keeps what
    was posted (a JSON body, as Apprise's ``json://`` sends)."""

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self.received: list[Received] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {"raw": raw.decode("utf-8", "replace")}
                with receiver._lock:
                    receiver.received.append(Received(self.path, body, dict(self.headers)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def url(self, path: str = "hook", secret: str | None = None) -> str:
        """``json://`` URL of this server; ``secret`` goes in as the password."""
        auth = f"user:{secret}@" if secret else ""
        return f"json://{auth}127.0.0.1:{self.port}/{path}"

    def messages(self, path: str | None = None) -> list[Received]:
        with self._lock:
            return [r for r in self.received if path is None or r.path == f"/{path}"]

    def wait_for(
        self, count: int, timeout: float = 20.0, path: str | None = None
    ) -> list[Received]:
        """At least ``count`` messages (to ``path``), waiting up to ``timeout`` seconds."""
        from tests.waiting import poll

        poll(lambda: len(self.messages(path)) >= count, timeout)
        got = self.messages(path)
        if len(got) < count:
            raise AssertionError(f"{len(got)} of {count} notifications after {timeout}s")
        return got

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Silent:
    """A target that accepts connections and never answers (a hung webhook)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted.append(conn)

    def url(self, path: str = "hang") -> str:
        return f"json://127.0.0.1:{self.port}/{path}"

    def close(self) -> None:
        self._stop.set()
        self._thread.join(1)
        for conn in self.accepted:
            conn.close()
        self.sock.close()
