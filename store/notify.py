"""Session change notifications across processes and hosts (docs/ARCHITECTURE.md §2, §9).

On PostgreSQL a trigger (migration 0003) sends ``NOTIFY vc_sessions, '<session id>'`` in
the transaction of every session change: creation, deletion, and every state change
(``status`` or ``version`` written). :class:`SessionNotifier` LISTENs on a dedicated
connection, so a pause typed on host B reaches the runner on host A as soon as it commits,
and a runner or worker can poll the store rarely instead of ten times a second.

Elsewhere (SQLite: one machine, where a state read costs microseconds) there is nothing to
listen to: the notifier says "maybe changed" every time and callers poll as before. A lost
connection degrades the same way until it is re-established, so a caller never misses a
change; it only polls more.

How a runner uses it (the loop keeps its structure; the notifier only decides whether the
state read is needed)::

    notifier = SessionNotifier(engine, session_id)       # engine: the runner's store
    ...
    if notifier.changed():                               # non-blocking, ~µs
        state = sessions.state(session_id)               # re-read only on a change
    ...
    notifier.wait(2.0)   # instead of time.sleep(...) while paused: wakes on a change
    ...
    notifier.close()

and a worker waits for queued work with ``SessionNotifier(engine).wait(timeout)``.

Every notifier of a process on one database shares one LISTEN connection and the thread
that reads it (:class:`_Hub`): a worker's ten runners and the worker itself hold one
connection for notifications, not eleven.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from typing import Any, ClassVar

from sqlalchemy.engine import Engine

from store.migrations import NOTIFY_CHANNEL

#: Seconds between two attempts to re-open a lost LISTEN connection.
RECONNECT_INTERVAL = 5.0
#: How long the listening thread blocks on the connection before it looks whether it
#: should stop.
_TICK = 0.5


class _Hub:
    """One LISTEN connection for every notifier of a process on one database: a worker
    running ten sessions holds one, not eleven (issue: connections at team scale). A
    thread of its own reads the notifications and hands each to the notifiers it
    concerns; it ends, and the connection closes, with the last notifier."""

    _hubs: ClassVar[dict[str, _Hub]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, engine: Engine, key: str) -> None:
        self.engine = engine
        self.key = key
        self.subscribers: set[SessionNotifier] = set()
        self.lock = threading.Lock()
        self.conn: Any = None
        self._connecting = threading.Lock()
        self.retry_at = 0.0
        self.thread: threading.Thread | None = None

    @classmethod
    def join(cls, engine: Engine, notifier: SessionNotifier) -> _Hub:
        key = engine.url.render_as_string(hide_password=False)
        with cls._registry_lock:
            hub = cls._hubs.get(key)
            if hub is None:
                hub = cls._hubs[key] = _Hub(engine, key)
            with hub.lock:
                hub.subscribers.add(notifier)
            hub.connect()  # at once, in the caller: a new notifier is listening on return
            if hub.thread is None or not hub.thread.is_alive():
                hub.thread = threading.Thread(target=hub.run, name="vc-listen", daemon=True)
                hub.thread.start()
        return hub

    def leave(self, notifier: SessionNotifier) -> None:
        with self._registry_lock:
            with self.lock:
                self.subscribers.discard(notifier)
                last = not self.subscribers
            if last and self._hubs.get(self.key) is self:
                del self._hubs[self.key]  # the thread sees it and closes the connection

    @property
    def listening(self) -> bool:
        return self.conn is not None

    def connect(self) -> bool:
        with self._connecting:  # the thread after a loss, a new notifier: one connection
            return self._connect()

    def _connect(self) -> bool:
        if self.conn is not None:
            return True
        now = time.monotonic()
        if now < self.retry_at:
            return False
        self.retry_at = now + RECONNECT_INTERVAL
        try:
            import psycopg

            cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
            cparams.pop("context", None)
            cparams.setdefault("connect_timeout", 5)
            conn = psycopg.connect(*cargs, autocommit=True, **cparams)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception:
            return False
        self.conn = conn
        self._tell_all()  # changes may have been missed while nobody listened
        return True

    def lost(self) -> None:
        conn, self.conn = self.conn, None
        self._tell_all()
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()

    def _tell_all(self) -> None:
        with self.lock:
            subscribers = list(self.subscribers)
        for notifier in subscribers:
            notifier._signal()

    def _deliver(self, payload: str) -> None:
        with self.lock:
            subscribers = list(self.subscribers)
        for notifier in subscribers:
            if notifier.session_id is None or notifier.session_id == payload:
                notifier._signal()

    def run(self) -> None:
        while self._hubs.get(self.key) is self:
            if not self.connect():
                time.sleep(min(_TICK, max(0.0, self.retry_at - time.monotonic())))
                continue
            try:
                # Wait on the socket ourselves: psycopg's own wait wakes every 0.1 s (to
                # see Ctrl-C), which is most of what an idle runner costs; this thread
                # only needs to wake for a notification, or each _TICK to see whether
                # it should stop. Then read what came, without waiting.
                poller = select.poll()
                poller.register(self.conn.fileno(), select.POLLIN)
                if poller.poll(_TICK * 1000):
                    for note in self.conn.notifies(timeout=0):
                        self._deliver(note.payload)
            except Exception:
                self.lost()
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class SessionNotifier:
    """Wake-ups on session changes committed by any process on any host.

    ``session_id`` limits :meth:`changed` and :meth:`wait` to one session (None: any).
    ``resync`` bounds how long :meth:`changed` trusts silence: after that many seconds it
    says True once anyway (a safety net that costs one read). The notifiers of a process
    share one LISTEN connection (:class:`_Hub`); each is for one thread."""

    def __init__(
        self, engine: Engine, session_id: str | None = None, *, resync: float = 5.0
    ) -> None:
        self.engine = engine
        self.session_id = session_id
        self.resync = resync
        self.native = engine.dialect.name == "postgresql"
        self._event = threading.Event()
        self._event.set()  # nothing is known yet: the first call must read
        self._last_true = 0.0
        self._hub: _Hub | None = _Hub.join(engine, self) if self.native else None

    def _signal(self) -> None:
        self._event.set()

    @property
    def listening(self) -> bool:
        """True while notifications are being received (PostgreSQL, connection up)."""
        return self._hub is not None and self._hub.listening

    @property
    def backend_pid(self) -> int | None:
        """The server process of the LISTEN connection (None without one)."""
        conn = None if self._hub is None else self._hub.conn
        return None if conn is None else int(conn.info.backend_pid)

    # -- API -----------------------------------------------------------------------------------

    def changed(self) -> bool:
        """Non-blocking: may the session (any session) have changed since the last True?
        Always True without LISTEN, so callers then simply poll."""
        if not self.listening:
            return True
        now = time.monotonic()
        if self._event.is_set() or now - self._last_true >= self.resync:
            self._event.clear()
            self._last_true = now
            return True
        return False

    def wait(self, timeout: float) -> bool:
        """Block until a (relevant) change is notified or ``timeout`` passes; True if
        something may have changed. Without LISTEN it sleeps ``timeout`` and says True."""
        if not self.listening:
            time.sleep(max(0.0, timeout))
            return True
        result = self._event.wait(max(0.0, timeout))
        if not self.listening:  # lost while waiting: changes may have been missed
            return True
        if result:
            self._event.clear()
            self._last_true = time.monotonic()
        return result

    def close(self) -> None:
        hub, self._hub = self._hub, None
        if hub is not None:
            hub.leave(self)

    def __enter__(self) -> SessionNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RECONNECT_INTERVAL", "SessionNotifier"]
