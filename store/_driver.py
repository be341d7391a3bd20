"""The raw-driver fast path of the store's hot statements: private to the store.

For the runner's stage moves (two per stage, each a few statements), SQLAlchemy's execution
path costs about 0.1 ms per statement on top of SQLite's own work, as much as the statement
itself. :func:`execute_on_driver` runs a prebuilt statement on the driver's cursor instead.
"""

from __future__ import annotations

import contextlib
import json
from collections import namedtuple
from collections.abc import Mapping
from enum import Enum
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

_DRIVER_SQL: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def _plain(value: Any) -> Any:
    """A value the drivers take as it is: an enum member's value (psycopg would write an
    enum's name)."""
    return value.value if isinstance(value, Enum) else value


def execute_on_driver(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run a prebuilt statement on the driver's cursor, inside the session's transaction,
    and return the cursor (the caller closes it).

    The statement is compiled once per dialect; parameters must be plain values (str, int,
    float, None: no type processing happens here). Driver errors are raised as
    SQLAlchemy's (``OperationalError`` …), as ``conn.execute`` would, and a lost connection
    is invalidated, so callers handle them exactly as errors of ``conn.execute``. The
    engine's cursor events (``before_cursor_execute``, ``after_cursor_execute``) fire as
    for ``conn.execute``, without an execution context: what listens to the statements
    (tracing, the tests that stage a race between two writers) sees these too."""
    dialect = conn.dialect
    key = (statement, dialect.name, dialect.driver, dialect.paramstyle)
    entry = _DRIVER_SQL.get(key)
    if entry is None:
        compiled = statement.compile(dialect=dialect)
        if compiled.post_compile_params:  # `IN` a list: rendered per call, by SQLAlchemy
            raise ValueError("a statement with list parameters cannot run on the driver")
        names = tuple(compiled.positiontup or ()) if compiled.positional else None
        # values written into the statement itself (``status != 'COMPLETED'``)
        constants = {
            compiled.bind_names[bind]: _plain(bind.value)
            for bind in set(compiled.binds.values())
            if not bind.required
        }
        entry = _DRIVER_SQL[key] = (compiled.string, names, constants)
    sql, names, constants = entry
    if constants:
        params = {**constants, **params}
    args = params if names is None else tuple(params[n] for n in names)
    dbapi_error = dialect.loaded_dbapi.Error
    dispatch = conn.dispatch
    cursor = None
    try:
        cursor = conn.connection.cursor()
        if dispatch.before_cursor_execute:
            dispatch.before_cursor_execute(conn, cursor, sql, args, None, False)
        cursor.execute(sql, args)
        if dispatch.after_cursor_execute:
            dispatch.after_cursor_execute(conn, cursor, sql, args, None, False)
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


#: Named-tuple row types of the reads below, one per column-name set.
_ROW_TYPES: dict[tuple[str, ...], Any] = {}


def rows_on_driver(conn: Connection, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    """The rows of a prebuilt read, run on the driver (:func:`execute_on_driver`), as named
    tuples of the statement's column names: read like SQLAlchemy's rows (``row.status``),
    without their result processing, so for plain columns (text, numbers) and JSON ones
    (decoded here where the driver does not). The statement must have no list parameters
    (``IN`` a list)."""
    cursor = execute_on_driver(conn, statement, params)
    try:
        rows = cursor.fetchall()
        names = tuple(column[0] for column in cursor.description)
    finally:
        cursor.close()
    row_type = _ROW_TYPES.get(names)
    if row_type is None:
        row_type = _ROW_TYPES[names] = namedtuple("DriverRow", names)
    dialect = conn.dialect
    decode = None if dialect.supports_native_json_deserialization else _json_at(statement)
    if not decode:
        return [row_type(*row) for row in rows]
    loads = getattr(dialect, "_json_deserializer", None) or json.loads
    return [
        row_type(
            *(
                loads(value) if i in decode and isinstance(value, str) else value
                for i, value in enumerate(row)
            )
        )
        for row in rows
    ]


#: Positions of the JSON columns of a read, per statement.
_JSON_AT: dict[Any, frozenset[int]] = {}


def _json_at(statement: Any) -> frozenset[int]:
    """Where a read returns JSON columns, which a driver without JSON types of its own
    (sqlite3) hands over as text."""
    at = _JSON_AT.get(statement)
    if at is None:
        columns = statement.selected_columns
        at = _JSON_AT[statement] = frozenset(
            i for i, column in enumerate(columns) if isinstance(column.type, JSON)
        )
    return at


def first_row_on_driver(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """The first row of :func:`rows_on_driver` (None when there is none): for reads of
    one row by key."""
    rows = rows_on_driver(conn, statement, params)
    return rows[0] if rows else None
