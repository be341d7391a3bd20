"""Alembic environment of the store, configured in code (see ``store.migrations``).

The caller hands over a connection already inside a transaction
(``config.attributes["connection"]``): Alembic then runs every migration in that one
transaction and leaves commit or rollback to the caller. Run standalone (``python -m
store.migrations``), it opens ``VC_DATABASE_URL`` (or the workspace store) itself.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlmodel import SQLModel

from store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.migrations import MIGRATION_ONLY_INDEXES


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate: keep objects that only migrations declare (see MIGRATION_ONLY_INDEXES)."""
    return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)


def _configure(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=SQLModel.metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_object=include_object,
    )


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from store.engine import make_engine
    from store.location import resolve_database_url

    engine = make_engine(context.config.get_main_option("sqlalchemy.url") or resolve_database_url())
    try:
        with engine.begin() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run them on a database")
run_migrations_online()
