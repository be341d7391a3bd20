"""store.failures.classify on real errors: made by real SQLite files and, with
VC_TEST_DATABASE_URL, by a real PostgreSQL server (a throwaway role and database)."""

from __future__ import annotations

import os
import sqlite3
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy
from sqlalchemy import make_url, text

from store.failures import PermanentStoreError, classify

PG_URL = os.environ.get("VC_TEST_DATABASE_URL")


def _raised(action: Callable[[], object]) -> BaseException:
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError("no error raised")


def _kind(exc: BaseException) -> str | None:
    failure = classify(exc)
    return None if failure is None else failure.kind


# -- SQLite ----------------------------------------------------------------------------------


def test_sqlite_locked_past_the_busy_timeout_is_transient(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    other = sqlite3.connect(path, timeout=0.05)
    exc = _raised(lambda: other.execute("INSERT INTO t VALUES (1)"))
    assert "database is locked" in str(exc)
    assert _kind(exc) == "transient"
    holder.rollback()


def test_sqlite_through_sqlalchemy_is_looked_through(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    engine = sqlalchemy.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN IMMEDIATE")
    try:
        with engine.begin() as conn:
            exc = _raised(lambda: conn.execute(text("INSERT INTO t VALUES (1)")))
        assert isinstance(exc, sqlalchemy.exc.OperationalError)
        assert _kind(exc) == "transient"
        exc = _raised(lambda: engine.connect().execute(text("SELECT * FROM missing")))
        failure = classify(exc)
        assert failure is not None and failure.permanent
        assert "table of the store is missing" in failure.what
        assert "no such table: missing" in failure.what
    finally:
        holder.rollback()
        engine.dispose()


def test_sqlite_missing_table_and_column_are_permanent(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("CREATE TABLE t (x)")
    assert _kind(_raised(lambda: conn.execute("SELECT * FROM nope"))) == "permanent"
    assert _kind(_raised(lambda: conn.execute("SELECT nope FROM t"))) == "permanent"


def test_sqlite_cannot_open_and_not_a_database_are_permanent(tmp_path: Path) -> None:
    exc = _raised(lambda: sqlite3.connect(tmp_path / "missing" / "a.db").execute("SELECT 1"))
    assert _kind(exc) == "permanent"
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"x" * 4096)
    exc = _raised(lambda: sqlite3.connect(junk).execute("SELECT * FROM sqlite_master"))
    failure = classify(exc)
    assert failure is not None and failure.permanent
    assert "not a database" in failure.what


def test_sqlite_read_only_store_is_permanent(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    setup = sqlite3.connect(path)
    setup.execute("CREATE TABLE t (x)")
    setup.commit()
    setup.close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)  # as a file we may not write
    exc = _raised(lambda: conn.execute("INSERT INTO t VALUES (1)"))
    assert "readonly" in str(exc)
    failure = classify(exc)
    assert failure is not None and failure.permanent
    assert "permission denied" in failure.what


def test_other_errors_are_neither() -> None:
    conn = sqlite3.connect(":memory:")
    conn.execute("CREATE TABLE t (x UNIQUE)")
    conn.execute("INSERT INTO t VALUES (1)")
    assert classify(_raised(lambda: conn.execute("INSERT INTO t VALUES (1)"))) is None
    assert classify(ValueError("x")) is None
    failure = classify(PermanentStoreError("authentication failed: x"))
    assert failure is not None and failure.what == "authentication failed: x"


# -- PostgreSQL ------------------------------------------------------------------------------

pg = pytest.mark.skipif(not PG_URL, reason="set VC_TEST_DATABASE_URL")


def _with(**parts: object) -> str:
    assert PG_URL is not None
    return make_url(PG_URL).set(**parts).render_as_string(hide_password=False)


def _connect_error(url: str) -> BaseException:
    engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": 5})
    try:
        return _raised(lambda: engine.connect().close())
    finally:
        engine.dispose()


@pytest.fixture
def admin():  # type: ignore[no-untyped-def]
    assert PG_URL is not None
    engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    yield engine
    engine.dispose()


@pg
def test_pg_missing_database_and_role_are_permanent() -> None:
    exc = _connect_error(_with(database=f"vc_missing_{uuid.uuid4().hex[:8]}"))
    failure = classify(exc)
    assert failure is not None and failure.permanent, exc
    assert failure.what.startswith("the database does not exist: database")
    exc = _connect_error(_with(username=f"vc_nobody_{uuid.uuid4().hex[:8]}"))
    failure = classify(exc)
    assert failure is not None and failure.permanent, exc
    assert failure.what.startswith("authentication failed")


@pg
def test_pg_role_that_may_not_log_in_and_missing_rights_are_permanent(admin) -> None:  # type: ignore[no-untyped-def]
    role = f"vc_probe_{uuid.uuid4().hex[:8]}"
    table = f"vc_probe_t_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE ROLE {role} LOGIN")
        conn.exec_driver_sql(f"CREATE TABLE {table} (x int)")
    engine = sqlalchemy.create_engine(_with(username=role))
    try:
        with engine.connect() as conn:
            exc = _raised(lambda: conn.execute(text(f"SELECT * FROM {table}")))
        failure = classify(exc)
        assert failure is not None and failure.permanent
        assert "permission denied" in failure.what and "42501" in failure.what
        with engine.connect() as conn:
            exc = _raised(lambda: conn.execute(text("SELECT * FROM vc_no_such_table")))
        assert _kind(exc) == "permanent"
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER ROLE {role} NOLOGIN")
        failure = classify(_connect_error(_with(username=role)))
        assert failure is not None and failure.permanent
        assert "may not log in" in failure.what
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP TABLE {table}")
            conn.exec_driver_sql(f"DROP ROLE {role}")


@pg
def test_pg_connection_refused_and_terminated_are_transient(admin) -> None:  # type: ignore[no-untyped-def]
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exc = _connect_error(_with(host="127.0.0.1", port=port))
    assert _kind(exc) == "transient", exc
    engine = sqlalchemy.create_engine(PG_URL or "")
    try:
        with engine.connect() as conn:
            pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
            with admin.connect() as other:  # as a server shutting down does
                other.exec_driver_sql(f"SELECT pg_terminate_backend({pid})")
            exc = _raised(lambda: conn.execute(text("SELECT 1")))
        assert _kind(exc) == "transient", exc
    finally:
        engine.dispose()


def test_schema_note_compares_the_store_revision_with_the_code(tmp_path: Path) -> None:
    from store import init_db
    from store.failures import schema_note
    from store.revision import SCHEMA_VERSION

    engine = init_db(f"sqlite:///{tmp_path / '.vc' / 'flow.db'}")
    try:
        assert schema_note(engine) is None
        with engine.begin() as conn:
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        note = schema_note(engine)
        assert note is not None and "newer than this code's" in note
        with engine.begin() as conn:
            conn.exec_driver_sql(f"PRAGMA user_version = {SCHEMA_VERSION - 1}")
        note = schema_note(engine)
        assert note is not None and "older than this code's" in note and "vc db upgrade" in note
    finally:
        engine.dispose()
    conn = sqlite3.connect(tmp_path / "a.db")
    conn.execute("CREATE TABLE t (x)")
    failure = classify(_raised(lambda: conn.execute("SELECT nope FROM t")))
    assert failure is not None and failure.about_schema
