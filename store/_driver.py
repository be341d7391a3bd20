"""The raw-driver fast path of the store's hot statements: private to the store.

For the runner's stage moves (two per stage, each a few statements), SQLAlchemy's execution
path costs about 0.1 ms per statement on top of SQLite's own work, as much as the statement
itself. :func:`execute_on_driver` runs a prebuilt statement on the driver's cursor instead.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

_DRIVER_SQL: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None]] = {}


def execute_on_driver(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run a prebuilt statement on the driver's cursor, inside the session's transaction,
    and return the cursor (the caller closes it).

    The statement is compiled once per dialect; parameters must be plain values (str, int,
    float, None: no type processing happens here). Driver errors are raised as
    SQLAlchemy's (``OperationalError`` …), as ``conn.execute`` would, and a lost connection
    is invalidated, so callers handle them exactly as errors of ``conn.execute``."""
    dialect = conn.dialect
    key = (statement, dialect.name, dialect.driver, dialect.paramstyle)
    entry = _DRIVER_SQL.get(key)
    if entry is None:
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ()) if compiled.positional else None
        entry = _DRIVER_SQL[key] = (compiled.string, names)
    sql, names = entry
    args = params if names is None else tuple(params[n] for n in names)
    dbapi_error = dialect.loaded_dbapi.Error
    cursor = None
    try:
        cursor = conn.connection.cursor()
        cursor.execute(sql, args)
    except dbapi_error as exc:
        lost = False
        with contextlib.suppress(Exception):
            lost = bool(dialect.is_disconnect(exc, conn.connection.dbapi_connection, cursor))
        if cursor is not None:
            with contextlib.suppress(Exception):
                cursor.close()
        if lost:
            with contextlib.suppress(Exception):
                conn.invalidate(exc)
        raise DBAPIError.instance(
            sql, args, exc, dbapi_error, connection_invalidated=lost, dialect=dialect
        ) from exc
    return cursor
