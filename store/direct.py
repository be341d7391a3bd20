"""The driver path: the store through its database driver (``sqlite3``, ``psycopg``), without
SQLAlchemy, SQLModel or pydantic (docs/ARCHITECTURE.md §2, "Two ways in").

The commands people type most (pause, resume, abort, approve, list) spend most of their
time importing the ORM to run a handful of statements. They open the store here instead,
and run the statements of :mod:`store.direct_control` and :mod:`store.direct_reads`, which
apply the same rules (the state table of :mod:`store.status`, the words of
:mod:`store.records`); a parity test drives both ways through the whole table.

Only the common case is taken: :func:`open_direct` returns None, and the caller uses
:func:`store.init_db` instead, for anything that needs the full path's care: a store
that does not exist yet or is not at this code's schema revision (it migrates or
refuses), a SQLite file open to other users or without its reserve (it repairs them),
a URL this module does not read. A PostgreSQL server that refuses the connection or does
not answer raises the driver's error, which the CLI words as the full path does.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any

from store.location import STORE_DIR_NAME, busy_timeout
from store.revision import SCHEMA_VERSION

SQLITE = "sqlite"
POSTGRESQL = "postgresql"


class DirectStore:
    """One connection of the driver, outside any transaction between operations.

    Statements are written with ``?`` placeholders; on PostgreSQL they become ``%s``.
    :meth:`write` begins a transaction that holds the write lock from its start on SQLite
    (``BEGIN IMMEDIATE``: the reads that decide an operation see what its write will
    change), and a plain one on PostgreSQL, where the operation's conditional UPDATE locks
    the session row."""

    def __init__(self, connection: Any, dialect: str, path: Path | None = None) -> None:
        self.connection = connection
        self.dialect = dialect
        #: The SQLite file (None on a server): its reserve is what a full disk releases.
        self.path = path
        #: Read as it was when opened, no later change seen (:func:`open_read_only`).
        self.snapshot = False
        self._sql: dict[str, str] = {}

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The driver's error classes (anything a statement or commit may raise)."""
        if self.dialect == SQLITE:
            import sqlite3

            return (sqlite3.Error,)
        import psycopg

        return (psycopg.Error,)

    @property
    def transient_errors(self) -> tuple[type[BaseException], ...]:
        """The driver's errors of a store that is away for now (locked, connection lost)."""
        if self.dialect == SQLITE:
            import sqlite3

            return (sqlite3.OperationalError,)
        import psycopg

        return (psycopg.OperationalError, psycopg.InterfaceError)

    def sql(self, statement: str) -> str:
        if self.dialect == SQLITE:
            return statement
        text = self._sql.get(statement)
        if text is None:
            text = self._sql[statement] = statement.replace("%", "%%").replace("?", "%s")
        return text

    def execute(self, statement: str, params: tuple[Any, ...] = ()) -> Any:
        cursor = self.connection.cursor()
        cursor.execute(self.sql(statement), params)
        return cursor

    def rows(self, statement: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        cursor = self.execute(statement, params)
        try:
            return list(cursor.fetchall())
        finally:
            cursor.close()

    def one(self, statement: str, params: tuple[Any, ...] = ()) -> tuple[Any, ...] | None:
        cursor = self.execute(statement, params)
        try:
            row = cursor.fetchone()
            return None if row is None else tuple(row)
        finally:
            cursor.close()

    def changed(self, statement: str, params: tuple[Any, ...] = ()) -> int:
        """Run a write; the number of rows it changed."""
        cursor = self.execute(statement, params)
        try:
            return int(cursor.rowcount)
        finally:
            cursor.close()

    def insert_many(self, statement: str, rows: list[tuple[Any, ...]]) -> None:
        cursor = self.connection.cursor()
        try:
            cursor.executemany(self.sql(statement), rows)
        finally:
            cursor.close()

    def write(self) -> None:
        """Begin a transaction that will write (see the class doc)."""
        if self.dialect == SQLITE:
            self.connection.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.connection.commit()

    def rollback(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.rollback()

    def end_read(self) -> None:
        """End the transaction a read began (PostgreSQL opens one on the first statement)."""
        if self.dialect != SQLITE:
            self.rollback()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()

    def json_param(self, value: Any) -> Any:
        """A value for a JSON column, bound as SQLAlchemy's JSON type binds it (text of
        ``json.dumps``; on PostgreSQL wrapped for psycopg, which sends it typed)."""
        if self.dialect == SQLITE:
            import json

            return json.dumps(value)
        from psycopg.types.json import Json

        return Json(value)

    def json(self, value: Any) -> Any:
        """A JSON column's value as Python data: SQLite hands over its text, psycopg has
        parsed it already. (SQLAlchemy stores a None as JSON ``null``.)"""
        if self.dialect == SQLITE and isinstance(value, str):
            import json

            return json.loads(value)
        return value


def open_direct(url: str) -> DirectStore | None:
    """The store at ``url`` through its driver, or None when the full path must open it
    (the module doc says when)."""
    if url.startswith("sqlite:///"):
        return _open_sqlite(url.removeprefix("sqlite:///"))
    if url.startswith("postgresql+psycopg://"):
        return _open_postgresql("postgresql://" + url.removeprefix("postgresql+psycopg://"))
    return None


def _plain_file(database: str) -> bool:
    """A SQLite URL's database that the driver opens as SQLAlchemy does: a file named
    plainly (no query, no %-escapes, not in memory)."""
    return bool(database) and database != ":memory:" and not {"?", "%"} & set(database)


def _open_sqlite(database: str) -> DirectStore | None:
    if not _plain_file(database):
        return None
    path = Path(database)
    try:
        st = path.stat()
        directory = path.parent.stat()
    except OSError:
        return None
    mine = os.geteuid()
    if (st.st_uid == mine and st.st_mode & 0o077) or (
        path.parent.name == STORE_DIR_NAME
        and directory.st_uid == mine
        and directory.st_mode & 0o077
    ):
        return None  # the full path makes it private again
    if not os.access(path, os.R_OK | os.W_OK) or not os.path.exists(f"{path}-reserve"):
        return None
    import sqlite3

    try:
        connection = sqlite3.connect(
            path, timeout=busy_timeout(), isolation_level=None, check_same_thread=False
        )
    except sqlite3.Error:
        return None
    try:
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            connection.close()
            return None
        # As store.engine sets every connection of the full path.
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.execute("PRAGMA foreign_keys=ON")
        connection.execute(f"PRAGMA busy_timeout={int(busy_timeout() * 1000)}")
    except sqlite3.Error:
        connection.close()
        return None
    return DirectStore(connection, SQLITE, path)


def open_read_only(url: str) -> DirectStore | None:
    """A SQLite store on a file system mounted read-only (a backup, a snapshot, another
    machine's disk mounted for inspection), opened for reading: the full path refuses it,
    since it cannot keep the file private, migrate it or keep its reserve. Read with its
    WAL when SQLite can use it there (its ``-shm`` is present: the WAL's own index, which
    also shows what a writer elsewhere commits). Without it, the database file alone, as an
    immutable snapshot (:attr:`DirectStore.snapshot`: what it held when opened, no later
    change), and only when no WAL holds changes it would miss: those are refused with
    :class:`StoreUnavailable`. None for anything else (a URL the driver path does not read
    as SQLAlchemy does, a writable file system), or a file that is not a store at this
    code's schema revision."""
    if not url.startswith("sqlite:///"):
        return None
    database = url.removeprefix("sqlite:///")
    if not _plain_file(database):
        return None
    path = Path(database)
    try:
        if not os.statvfs(path.parent).f_flag & os.ST_RDONLY or not path.is_file():
            return None
    except OSError:
        return None
    import sqlite3

    uri = path.resolve().as_uri()
    for snapshot in (False, True):
        if snapshot and _holds_changes(Path(f"{path}-wal")):
            from store.errors import StoreUnavailable

            raise StoreUnavailable(
                f"cannot read {path} on a read-only file system: its latest changes are in "
                f"{path.name}-wal, which SQLite reads only beside its -shm file; copy the "
                "directory somewhere writable to read it"
            )
        options = "mode=ro&immutable=1" if snapshot else "mode=ro"
        try:
            connection = sqlite3.connect(
                f"{uri}?{options}", uri=True, isolation_level=None, check_same_thread=False
            )
        except sqlite3.Error:
            continue
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
        except sqlite3.Error:
            connection.close()
            continue  # without -shm the WAL cannot be used here: the file alone, next
        if version != SCHEMA_VERSION:
            connection.close()
            return None
        store = DirectStore(connection, SQLITE, path)
        store.snapshot = snapshot
        return store
    return None


def _holds_changes(wal: Path) -> bool:
    try:
        return wal.stat().st_size > 0
    except OSError:
        return False


_NO_VC_SCHEMA = """
SELECT to_regclass('flow_sessions') IS NULL AND NOT EXISTS (
    SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = 'flow_sessions' AND NOT has_schema_privilege(n.oid, 'USAGE')
), current_database()
"""


def postgresql_without_schema(url: str) -> str | None:
    """A PostgreSQL ``url`` whose database holds nothing of vc yet (no sessions table where
    its search path looks, and none in a schema this role may not use, which the search
    path skips without a word): the database's name, so that a read answers as an empty
    store would and creates nothing (a mistyped URL names another program's database,
    whose own ``alembic_version`` says nothing of vc). None for any other URL or a vc
    schema. A server that does not answer or refuses the connection raises the driver's
    error (psycopg.OperationalError), which the CLI words as the full path does: the
    full path would only wait for the server a second time to say the same."""
    if not url.startswith(("postgresql+psycopg://", "postgresql://")):
        return None
    try:
        import psycopg
    except ImportError:
        return None
    conninfo = "postgresql://" + url.split("://", 1)[1]
    try:
        connection = psycopg.connect(conninfo, connect_timeout=5)
    except ValueError:  # a URL the driver cannot read: the full path words it
        return None
    except psycopg.Error as exc:
        if isinstance(exc, psycopg.OperationalError) and _read_alike(conninfo):
            raise
        return None  # the full path reads such a URL its own way (several hosts …)
    try:
        row = connection.execute(_NO_VC_SCHEMA).fetchone()
    except psycopg.Error:
        return None
    finally:
        connection.close()
    return str(row[1]) if row is not None and row[0] else None


def _read_alike(conninfo: str) -> bool:
    """The driver reads this URL's server as SQLAlchemy does: no ``host``, ``hostaddr`` or
    ``port`` in its query, which SQLAlchemy turns into a list of servers of its own."""
    from urllib.parse import parse_qsl, urlsplit

    keys = {key for key, _ in parse_qsl(urlsplit(conninfo).query)}
    return not keys & {"host", "hostaddr", "port"}


def _open_postgresql(conninfo: str) -> DirectStore | None:
    if not _read_alike(conninfo):
        return None  # several servers, say: the full path reads the URL as SQLAlchemy does
    try:
        import psycopg
    except ImportError:
        return None
    try:
        connection = psycopg.connect(conninfo, connect_timeout=5)
    except ValueError:  # a URL libpq reads otherwise than SQLAlchemy: the full path's
        return None
    # A server that refuses or does not answer raises here: the full path would only wait
    # for the same answer again.
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
        connection.rollback()
    except psycopg.Error:
        connection.close()
        return None
    if row is None or row[0] != f"{SCHEMA_VERSION:04d}":
        connection.close()
        return None
    return DirectStore(connection, POSTGRESQL)
