"""Cheap change detection for the front ends (docs/ARCHITECTURE.md §2): poll this, re-read only on
change.

SQLite: ``PRAGMA data_version`` on one dedicated connection changes whenever another
connection commits; it costs microseconds and reads no table. Other databases: one
aggregate query over the sessions' versions and the newest log id (PostgreSQL's
LISTEN/NOTIFY can replace it without changing callers).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.engine import Connection, Engine

from store.models import FlowSession, LogRecord, StageInstance

_T = FlowSession.__table__  # type: ignore[attr-defined]
_ST = StageInstance.__table__  # type: ignore[attr-defined]
_LOG = LogRecord.__table__  # type: ignore[attr-defined]


class ChangeWatcher:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None
        self._last: Any = None

    def token(self) -> Any:
        if self._conn is None:
            self._conn = self.engine.connect()
        conn = self._conn
        try:
            if conn.dialect.name == "sqlite":
                # On the driver: this runs several times a second in every idle runner,
                # waiter and dashboard, and SQLAlchemy's statement and transaction
                # bookkeeping around it cost many times the pragma. The pragma opens no
                # transaction, so each call sees the latest commits.
                driver = conn.connection.driver_connection
                assert driver is not None
                return driver.execute("PRAGMA data_version").fetchone()[0]
            row = conn.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(_T.c.version), 0),
                    func.max(_T.c.updated_at),
                )
            ).one()
            stages = conn.execute(select(func.max(_ST.c.updated_at))).scalar()
            last_log = conn.execute(select(func.max(_LOG.c.id))).scalar()
            conn.commit()
            return (*tuple(row), stages, last_log)
        except Exception:
            self.close()
            raise

    def changed(self) -> bool:
        """True on the first call and whenever anything was committed since the last."""
        token = self.token()
        if token != self._last:
            self._last = token
            return True
        return False

    def close(self) -> None:
        # A new connection's data_version restarts from its own value, which may equal the
        # last one seen: forget it, so the first call after a reconnect says "changed".
        self._last = None
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None
