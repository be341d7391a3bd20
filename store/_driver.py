"""The raw-driver fast path of the store's hot statements: private to the store.

For the runner's stage moves, the session transitions, a worker's claim and the view a
runner reads as it starts (each a few statements, run thousands of times by a worker),
SQLAlchemy's execution path costs about 0.1 ms per statement on top of the
database's own work, as much as the statement itself. :func:`execute_on_driver` runs a
prebuilt statement on the driver's cursor instead; :func:`rows_on_driver` reads its rows.
"""

from __future__ import annotations

import json
from collections import namedtuple
from collections.abc import Mapping
from enum import Enum
from typing import Any

from sqlalchemy import JSON
from sqlalchemy.engine import Connection

_DRIVER_SQL: dict[tuple[Any, ...], tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}


def _plain(value: Any) -> Any:
    """A value the drivers take as it is: an enum member's value (psycopg would write an
    enum's name)."""
    return value.value if isinstance(value, Enum) else value


def execute_on_driver(conn: Connection, statement: Any, params: Mapping[str, Any]) -> Any:
    """Run a prebuilt statement on the driver's cursor, inside the session's transaction,
    and return the cursor (the caller closes it).

    The statement is compiled once per dialect; parameters must be plain values (str, int,
    float, bool, None: no type processing happens here). The cursor is run through
    SQLAlchemy's own way of executing on a cursor (``Connection._cursor_execute``, which it
    uses for sequences and defaults), so everything around the statement is as for
    ``conn.execute``: the engine's cursor events fire (tracing, the tests that stage a
    race between two writers), driver errors are raised as SQLAlchemy's
    (``OperationalError`` …) after the ``handle_error`` listeners saw them (the full-disk
    watch of store.engine), and a lost connection is invalidated."""
    dialect = conn.dialect
    key = (statement, dialect.name, dialect.driver, dialect.paramstyle)
    entry = _DRIVER_SQL.get(key)
    if entry is None:
        entry = _DRIVER_SQL[key] = _compile(statement, dialect)
    sql, names, constants = entry
    if constants:
        params = {**constants, **params}
    args = params if names is None else tuple(params[n] for n in names)
    cursor = conn.connection.cursor()
    conn._cursor_execute(cursor, sql, args)  # closes the cursor if it raises
    return cursor


def rows_changed(
    conn: Connection, statement: Any, params: Mapping[str, Any], *, on_driver: bool
) -> int:
    """How many rows a prebuilt write changed: run on the driver, or through SQLAlchemy
    when a value needs its type processing (JSON)."""
    if not on_driver:
        return int(conn.execute(statement, params).rowcount)
    cursor = execute_on_driver(conn, statement, params)
    try:
        return int(cursor.rowcount)
    finally:
        cursor.close()


def _compile(statement: Any, dialect: Any) -> tuple[str, tuple[str, ...] | None, dict[str, Any]]:
    """(SQL, parameter names in order for a positional driver, the values the statement
    carries itself, such as the ``'COMPLETED'`` of ``status != 'COMPLETED'``). Refuses what
    needs SQLAlchemy at each call: parameters rendered per call (``IN`` a list, literal
    execution), computed ones, and constants of a type that processes its values."""
    compiled = statement.compile(dialect=dialect)
    if compiled.post_compile_params or compiled.literal_execute_params:
        raise ValueError("a statement with list or literal parameters cannot run on the driver")
    constants = {}
    for bind in set(compiled.binds.values()):
        if bind.required:
            continue
        if bind.callable is not None or bind.type.dialect_impl(dialect).bind_processor(dialect):
            raise ValueError(f"the constant {bind.key!r} needs SQLAlchemy to be bound")
        constants[compiled.bind_names[bind]] = _plain(bind.value)
    names = tuple(compiled.positiontup or ()) if compiled.positional else None
    return compiled.string, names, constants


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
