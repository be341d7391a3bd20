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
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy.engine import Engine

from store.migrations import NOTIFY_CHANNEL

#: Seconds between two attempts to re-open a lost LISTEN connection.
RECONNECT_INTERVAL = 5.0


class SessionNotifier:
    """Wake-ups on session changes committed by any process on any host.

    ``session_id`` limits :meth:`changed` and :meth:`wait` to one session (None: any).
    ``resync`` bounds how long :meth:`changed` trusts silence: after that many seconds it
    says True once anyway (a safety net that costs one read). Not thread-safe: one
    notifier per thread."""

    def __init__(
        self, engine: Engine, session_id: str | None = None, *, resync: float = 5.0
    ) -> None:
        self.engine = engine
        self.session_id = session_id
        self.resync = resync
        self.native = engine.dialect.name == "postgresql"
        self._conn: Any = None
        self._retry_at = 0.0
        self._pending = True  # nothing is known yet: the first call must read
        self._last_true = 0.0
        if self.native:
            self._connect()

    # -- connection ----------------------------------------------------------------------------

    def _connect(self) -> bool:
        if self._conn is not None:
            return True
        now = time.monotonic()
        if now < self._retry_at:
            return False
        self._retry_at = now + RECONNECT_INTERVAL
        try:
            import psycopg

            cargs, cparams = self.engine.dialect.create_connect_args(self.engine.url)
            cparams.pop("context", None)
            cparams.setdefault("connect_timeout", 5)
            conn = psycopg.connect(*cargs, autocommit=True, **cparams)
            conn.execute(f"LISTEN {NOTIFY_CHANNEL}")
        except Exception:
            return False
        self._conn = conn
        self._pending = True  # changes may have been missed while we were not listening
        return True

    def _lost(self) -> None:
        conn, self._conn = self._conn, None
        self._pending = True
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    @property
    def listening(self) -> bool:
        """True while notifications are being received (PostgreSQL, connection up)."""
        return self._conn is not None

    def _drain(self, timeout: float) -> None:
        """Collect notifications, waiting up to ``timeout`` for the first relevant one."""
        if not self._connect():
            return
        deadline = time.monotonic() + timeout
        try:
            while True:
                remaining = max(0.0, deadline - time.monotonic())
                for note in self._conn.notifies(timeout=remaining, stop_after=1):
                    if self.session_id is None or note.payload == self.session_id:
                        self._pending = True
                # whatever else is queued already, without waiting
                for note in self._conn.notifies(timeout=0):
                    if self.session_id is None or note.payload == self.session_id:
                        self._pending = True
                if self._pending or time.monotonic() >= deadline:
                    return
        except Exception:
            self._lost()

    # -- API -----------------------------------------------------------------------------------

    def changed(self) -> bool:
        """Non-blocking: may the session (any session) have changed since the last True?
        Always True without LISTEN, so callers then simply poll."""
        if not self.native or not self._connect():
            return True
        self._drain(0.0)
        now = time.monotonic()
        if self._pending or now - self._last_true >= self.resync:
            self._pending = False
            self._last_true = now
            return True
        return False

    def wait(self, timeout: float) -> bool:
        """Block until a (relevant) change is notified or ``timeout`` passes; True if
        something may have changed. Without LISTEN it sleeps ``timeout`` and says True."""
        if not self.native or not self._connect():
            time.sleep(max(0.0, timeout))
            return True
        if not self._pending:
            self._drain(timeout)
        if not self.listening:  # lost while waiting: wait out the rest quietly
            return True
        result = self._pending
        self._pending = False
        if result:
            self._last_true = time.monotonic()
        return result

    def fileno(self) -> int | None:
        """The LISTEN socket (readable when a notification may have arrived), for callers
        that multiplex it with other descriptors via ``select``; None without LISTEN."""
        if self._conn is None:
            return None
        return int(self._conn.fileno())

    def close(self) -> None:
        self._lost()

    def __enter__(self) -> SessionNotifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["RECONNECT_INTERVAL", "SessionNotifier"]
