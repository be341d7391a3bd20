"""Which store errors waiting cures, and which it does not.

A store that is away for now (server restarting or shutting down, network cut, a lock held
past the timeout) comes back by itself: a runner keeps its stage running and retries. One
that refuses us for good (authentication failed, the database or its schema missing, a
schema this code does not know, permission denied) never does: retrying would leave a
runner or a worker hanging forever while its session looks alive. :func:`classify` tells
them apart in one place, from the error alone (no I/O), for PostgreSQL (SQLSTATE, or the
server's message when a connection could not even be opened) and SQLite (its result code).
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from typing import Any, Literal

from store.errors import StoreUnavailable

Kind = Literal["transient", "permanent"]


@dataclass(frozen=True)
class StoreFailure:
    """What :func:`classify` found: ``kind``, and ``what`` (one line naming it)."""

    kind: Kind
    what: str
    #: The store's tables or columns are not what this code expects: its schema revision
    #: says whether it is newer or older (:func:`schema_note`).
    about_schema: bool = False

    @property
    def permanent(self) -> bool:
        return self.kind == "permanent"


class PermanentStoreError(StoreUnavailable):
    """The store refuses us for good (see :func:`classify`): a runner or a worker stops on
    it, with this one line, instead of retrying forever."""


#: PostgreSQL SQLSTATEs (or classes, two characters) that no wait cures, and what they mean.
_PG_PERMANENT = {
    "28": "authentication failed",  # invalid authorization specification, bad password
    "3D": "the database does not exist",
    "3F": "the database schema does not exist",
    "42501": "permission denied",
    "42P01": "a table of the store is missing (schema missing or newer than this code)",
    "42703": "a column of the store is missing (schema newer or older than this code)",
    "42883": "a function of the store is missing (schema newer or older than this code)",
}
#: What PostgreSQL says when it refuses a connection (psycopg gives no SQLSTATE then).
_PG_CONNECT_REFUSALS = (
    (re.compile(r"password authentication failed|authentication failed"), "authentication failed"),
    (re.compile(r"no pg_hba\.conf entry"), "authentication failed (no pg_hba.conf entry)"),
    (re.compile(r"is not permitted to log in"), "authentication failed (the role may not log in)"),
    (re.compile(r'role "[^"]*" does not exist'), "authentication failed (no such role)"),
    (re.compile(r'database "[^"]*" does not exist'), "the database does not exist"),
    (re.compile(r"permission denied for database"), "permission denied (CONNECT on the database)"),
)
#: SQLite primary result codes that no wait cures (SQLITE_BUSY, SQLITE_LOCKED, SQLITE_FULL,
#: SQLITE_IOERR and the rest stay transient).
_SQLITE_PERMANENT = {
    sqlite3.SQLITE_PERM: "permission denied",
    sqlite3.SQLITE_READONLY: "permission denied (the store is read-only)",
    sqlite3.SQLITE_CANTOPEN: "permission denied or missing (cannot open the store file)",
    sqlite3.SQLITE_AUTH: "permission denied (authorization)",
    sqlite3.SQLITE_NOTADB: "the store file is not a database",
    sqlite3.SQLITE_CORRUPT: "the store file is corrupt",
}
_SQLITE_SCHEMA = (
    ("no such table", "a table of the store is missing (schema missing or newer than this code)"),
    ("no such column", "a column of the store is missing (schema newer or older than this code)"),
)


def classify(exc: BaseException) -> StoreFailure | None:
    """Whether ``exc`` is the store being away for now (``transient``: retry) or refusing
    us for good (``permanent``: stop, naming it); None when it is neither (a refusal of
    the operation itself, a bug), which the caller handles as before. Pure: looks at the
    error only. SQLAlchemy's wrappers are looked through (``orig``)."""
    if isinstance(exc, PermanentStoreError):
        return StoreFailure("permanent", str(exc))
    if isinstance(exc, StoreUnavailable) and exc.__context__ is not None:
        # an open that failed (store.opening) words the driver's error, which says what it is
        found = classify(exc.__context__)
        if found is not None:
            return found
    orig = getattr(exc, "orig", None) or exc
    line = _first_line(orig)
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(sqlstate, str) and sqlstate:
        what = _PG_PERMANENT.get(sqlstate) or _PG_PERMANENT.get(sqlstate[:2])
        if what is not None:
            schema = sqlstate in ("42P01", "42703", "42883")
            return StoreFailure("permanent", f"{what}: {line} (SQLSTATE {sqlstate})", schema)
    elif _is_psycopg(orig) and "FATAL:" in line:
        for pattern, what in _PG_CONNECT_REFUSALS:
            if pattern.search(line):
                return StoreFailure("permanent", f"{what}: {_server_part(line)}")
    if isinstance(orig, sqlite3.Error):
        code = getattr(orig, "sqlite_errorcode", None)
        if isinstance(code, int):
            what = _SQLITE_PERMANENT.get(code & 0xFF)
            if what is not None:
                return StoreFailure("permanent", f"{what}: {line}")
        lowered = line.lower()
        for needle, what in _SQLITE_SCHEMA:
            if needle in lowered:
                return StoreFailure("permanent", f"{what}: {line}", about_schema=True)
        if isinstance(orig, sqlite3.OperationalError):  # locked, busy, I/O: for now
            return StoreFailure("transient", line)
    from store.errors import transient_errors

    if isinstance(exc, transient_errors()) or isinstance(orig, transient_errors()):
        return StoreFailure("transient", line)
    return None


def raise_if_refused(exc: BaseException, doing: str, engine: Any = None) -> None:
    """Raise :class:`PermanentStoreError` when ``exc`` is the store refusing ``doing`` for
    good (``the store refuses this wait (…); waiting will not cure it``), with the schema's
    revision when that is why and ``engine`` can read it; return otherwise. For a command
    that waits on the store (`wait`, `logs --follow`): a script's wait must not hang
    forever on what waiting will not cure."""
    failure = classify(exc)
    if failure is None or not failure.permanent:
        return
    what = failure.what
    if failure.about_schema and engine is not None:
        note = schema_note(engine)
        what = f"{note}; {what}" if note is not None else what
    raise PermanentStoreError(
        f"the store refuses {doing} ({what}); waiting will not cure it"
    ) from None


def schema_note(engine: Any) -> str | None:
    """After a failure ``about_schema``: the store's schema revision against this code's,
    as a line (None when they match or the revision cannot be read). Reads the store."""
    from store.revision import SCHEMA_VERSION

    try:
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                revision = int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)
            else:
                value = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                revision = int(value)
    except Exception:
        return None
    if revision > SCHEMA_VERSION:
        return (
            f"the store's schema is revision {revision:04d}, newer than this code's "
            f"({SCHEMA_VERSION:04d}): use the vc that upgraded it"
        )
    if revision < SCHEMA_VERSION:
        return (
            f"the store's schema is revision {revision:04d}, older than this code's "
            f"({SCHEMA_VERSION:04d}): run 'vc db upgrade'"
        )
    return None


def _is_psycopg(exc: BaseException) -> bool:
    return type(exc).__module__.split(".")[0] == "psycopg"


def _server_part(line: str) -> str:
    """'connection failed: connection to server at … failed: FATAL:  role "x" does not
    exist' -> 'role "x" does not exist'."""
    _, sep, tail = line.partition("FATAL:")
    return " ".join(tail.split()) if sep else line


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


__all__ = ["PermanentStoreError", "StoreFailure", "classify", "raise_if_refused", "schema_note"]
