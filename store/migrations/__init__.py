"""Schema migrations (Alembic), shipped inside the package and configured in code: no
``alembic.ini`` is needed at runtime.

:func:`store.opening.init_db` calls :func:`upgrade` only when its cheap check says the
database is not at :data:`HEAD` (SQLite: ``PRAGMA user_version``; PostgreSQL: one read of
``alembic_version``), so an up-to-date store never imports Alembic.

Rules for revisions (``versions/NNNN_*.py``):

* revision ids are zero-padded sequence numbers ("0001", "0002", ...), one linear history;
  ``store.engine.SCHEMA_VERSION`` is the number of the head, and SQLite's
  ``PRAGMA user_version`` is set to it in the transaction that reaches the head;
* a migration never drops data; on SQLite, table changes go through ``op.batch_alter_table``
  (env.py turns batch mode on), which copies the table: the migration connection keeps
  foreign keys OFF so that dropping the old copy cannot cascade, and the upgrade refuses to
  commit if ``PRAGMA foreign_key_check`` finds a dangling reference afterwards;
* everything runs in one transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL with an
  advisory lock), so concurrent first starts on several hosts migrate once and a failed
  migration leaves the database as it was.

A database created before migrations existed (``create_all`` with ``user_version`` 1 and
no ``alembic_version`` table) holds exactly the schema of revision 0001: it is stamped
0001, never re-created, and upgraded from there. A database at a revision this code does
not know (written by a newer vc) is refused.

Developers: ``python -m store.migrations revision -m "what" [--autogenerate]`` writes a new
revision file; ``python -m store.migrations upgrade|current`` act on ``VC_DATABASE_URL``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from store.engine import describe_url
from store.errors import StoreUnavailable
from store.revision import SCHEMA_VERSION

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.engine import Connection, Engine

MIGRATIONS_DIR = Path(__file__).resolve().parent
#: The newest revision this code knows.
HEAD = f"{SCHEMA_VERSION:04d}"
#: The revision whose schema ``create_all`` produced before migrations existed.
BASELINE = "0001"
BASELINE_TABLES = ("flow_sessions", "stage_instances", "flow_events", "log_records")
#: Objects created by migrations that the models do not declare: autogenerate must not
#: propose to drop them.
MIGRATION_ONLY_INDEXES = frozenset({"ix_flow_sessions_queue"})
#: PostgreSQL: NOTIFY channel of the session-change trigger (revision 0003).
NOTIFY_CHANNEL = "vc_sessions"
_PG_LOCK_KEY = "vc-flow-schema"


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic configuration built in code; ``connection`` is handed to env.py."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if connection is not None:
        cfg.attributes["connection"] = connection
    return cfg


def newer_message(url: str, revision: str) -> str:
    return (
        f"database {describe_url(url)} is at schema revision {revision}, newer than this "
        f"vc knows (head {HEAD}): upgrade vc"
    )


def _known(revision: str) -> bool:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    script = ScriptDirectory(
        str(MIGRATIONS_DIR), version_locations=[str(MIGRATIONS_DIR / "versions")]
    )
    try:
        return script.get_revision(revision) is not None
    except CommandError:
        return False


def _migration_engine(engine: Engine) -> Engine:
    """The engine migrations run on. SQLite: a separate one whose transactions really are
    transactions (``BEGIN IMMEDIATE``, DDL included) and whose connections keep foreign keys
    OFF; PostgreSQL (transactional DDL already): the engine itself."""
    if engine.dialect.name != "sqlite" or engine.url.database in (None, "", ":memory:"):
        return engine
    from sqlalchemy import create_engine, event
    from sqlalchemy.pool import NullPool

    from store.location import busy_timeout

    mig = create_engine(
        engine.url,
        connect_args={"timeout": busy_timeout(), "isolation_level": None},
        poolclass=NullPool,
    )

    @event.listens_for(mig, "connect")
    def _connect(dbapi_connection: Any, _record: object) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout() * 1000)}")
        finally:
            cursor.close()

    @event.listens_for(mig, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return mig


def _lock(conn: Connection) -> None:
    """PostgreSQL: one migrator per schema at a time; a DDL lock that cannot be had within
    30 s (a long transaction elsewhere) fails the upgrade rather than hanging it."""
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL lock_timeout = '30s'")
        conn.exec_driver_sql(
            "SELECT pg_advisory_xact_lock(hashtext(%(key)s || coalesce(current_schema(), '')))",
            {"key": _PG_LOCK_KEY},
        )


def _refuse_other_programs_tables(conn: Connection, url: str) -> None:
    """A PostgreSQL schema with tables and none of vc's is another program's."""
    if conn.dialect.name != "postgresql" or _has_table(conn, "flow_sessions"):
        return
    from sqlalchemy import inspect

    others = sorted(set(inspect(conn).get_table_names()) - {"alembic_version"})
    if others:
        some = ", ".join(others[:3]) + (", …" if len(others) > 3 else "")
        raise StoreUnavailable(
            f"database {describe_url(url)} holds another program's tables ({some}) and no vc "
            "store: point VC_DATABASE_URL at a vc store or a new database (or run 'vc db "
            "upgrade' to add vc's tables beside them)"
        )


def _has_table(conn: Connection, name: str) -> bool:
    from sqlalchemy import inspect

    return bool(inspect(conn).has_table(name))


def _read_heads(conn: Connection) -> tuple[str, ...]:
    from alembic.runtime.migration import MigrationContext

    return tuple(MigrationContext.configure(conn).get_current_heads())


def current_revision(engine: Engine) -> str | None:
    """The database's revision; ``"unversioned"`` for a store created before migrations,
    None for an empty database."""
    with engine.connect() as conn:
        heads = _read_heads(conn)
        if heads:
            return heads[0]
        return "unversioned" if _has_table(conn, "flow_sessions") else None


def upgrade(
    engine: Engine, url: str | None = None, *, beside_other_tables: bool = False
) -> tuple[str | None, str]:
    """Bring the database to :data:`HEAD` in one transaction. Returns (revision before,
    revision after); before is None for an empty database. Raises
    :class:`StoreUnavailable` for a database newer than this code, and for a PostgreSQL
    schema that holds another program's tables and nothing of vc's, unless
    ``beside_other_tables`` (`vc db upgrade`, asked for by name): a mistyped URL must not
    get vc's tables added to someone else's database by the first `run` or worker (SQLite:
    ``store.engine``, before the file is opened)."""
    from alembic import command

    url = url or engine.url.render_as_string(hide_password=False)
    mig = _migration_engine(engine)
    try:
        with mig.begin() as conn:
            _lock(conn)
            if not beside_other_tables:
                _refuse_other_programs_tables(conn, url)
            heads = _read_heads(conn)
            for rev in heads:
                if not _known(rev):
                    raise StoreUnavailable(newer_message(url, rev))
            before: str | None = heads[0] if heads else None
            cfg = alembic_config(conn)
            if before is None and _has_table(conn, "flow_sessions"):
                missing = [t for t in BASELINE_TABLES if not _has_table(conn, t)]
                if missing:
                    raise StoreUnavailable(
                        f"database {describe_url(url)} has an incomplete vc schema without "
                        f"a revision (missing tables: {', '.join(missing)}); restore it or "
                        "start from an empty database"
                    )
                command.stamp(cfg, BASELINE)
                before = BASELINE
            if heads != (HEAD,):
                command.upgrade(cfg, "head")
            after = _read_heads(conn)
            if after != (HEAD,):  # pragma: no cover - a broken revision chain
                raise StoreUnavailable(
                    f"schema upgrade of {describe_url(url)} ended at {after}, not {HEAD}"
                )
            if conn.dialect.name == "sqlite":
                dangling = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if dangling:
                    raise StoreUnavailable(
                        f"schema upgrade of {describe_url(url)} would leave {len(dangling)} "
                        "dangling references; nothing was changed"
                    )
                conn.exec_driver_sql(f"PRAGMA user_version={SCHEMA_VERSION}")
    finally:
        if mig is not engine:
            mig.dispose()
    return before, HEAD


__all__ = [
    "BASELINE",
    "HEAD",
    "MIGRATIONS_DIR",
    "MIGRATION_ONLY_INDEXES",
    "NOTIFY_CHANNEL",
    "alembic_config",
    "current_revision",
    "newer_message",
    "upgrade",
]
