"""Opening a store: the engine, with its schema brought to the current revision.

Apart from :mod:`store.engine` because it needs both the engine and the migrations, and the
migrations need the engine: this module sits above both, so neither imports the other back.
"""

from __future__ import annotations

from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from store.engine import make_engine, unavailable_message
from store.errors import StoreUnavailable
from store.location import resolve_database_url
from store.migrations import newer_message, upgrade
from store.revision import SCHEMA_VERSION


def init_db(url: str | None = None, *, pool_size: int | None = None) -> Engine:
    """Open the store and bring its schema to the current revision (docs/ARCHITECTURE.md §9): an
    empty database gets the whole schema, an older one is migrated (never dropping data), one newer
    than this code is refused. The check costs one query when nothing is to do: ``PRAGMA
    user_version`` on SQLite, a read of ``alembic_version`` elsewhere; Alembic is imported only when
    there is work (see :mod:`store.migrations`). ``pool_size`` sizes the connection pool for a
    process with many threads (``vc flow worker``)."""
    url = url or resolve_database_url()
    engine = make_engine(url, pool_size=pool_size)
    try:
        if _schema_is_current(engine, url):
            return engine
        upgrade(engine, url)
    except (OperationalError, DBAPIError) as exc:
        engine.dispose()
        busy = server_busy(exc)
        raise StoreUnavailable(unavailable_message(exc, url), transient=busy) from None
    except BaseException:
        engine.dispose()
        raise
    return engine


def _schema_is_current(engine: Engine, url: str) -> bool:
    """The fast path of :func:`init_db`. SQLite's ``user_version`` is the number of the
    head revision, written by the upgrade that reached it (a store from before migrations
    has 1 and no ``alembic_version`` table: the upgrade stamps it)."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            current = conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
            if current > SCHEMA_VERSION:
                raise StoreUnavailable(newer_message(url, f"{current:04d}"))
            return bool(current == SCHEMA_VERSION)
        try:
            revision = conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
        except ProgrammingError:  # no alembic_version table yet: empty or unversioned
            conn.rollback()
            return False
        conn.rollback()
        return revision == f"{SCHEMA_VERSION:04d}"


#: What a PostgreSQL server says while it cannot take a connection for a while: full
#: (``too_many_connections``, 53300) or starting up / shutting down (``cannot_connect_now``,
#: 57P03). A refused connection or an unknown host stays an error at once: it is as often
#: a wrong URL as a server that is down.
_SERVER_BUSY = (
    "too many clients",
    "too many connections",
    "remaining connection slots",
    "is starting up",
    "shutting down",
)


def server_busy(exc: BaseException) -> bool:
    """Does ``exc`` say the server exists but cannot take this connection for now?"""
    orig = getattr(exc, "orig", None) or exc
    if getattr(orig, "sqlstate", None) in ("53300", "57P03"):
        return True
    text = str(orig).lower()
    return any(phrase in text for phrase in _SERVER_BUSY)
