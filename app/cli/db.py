"""`vc db upgrade | current`: schema operations for operators."""

from __future__ import annotations

import typer

from app.cli.common import translate_errors

app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)


@app.command("upgrade")
def upgrade_cmd() -> None:
    """Bring the store's schema to the current version (never drops data)."""
    with translate_errors():
        from store.engine import SCHEMA_VERSION, init_db, resolve_database_url

        engine = init_db()
        engine.dispose()
    print(f"database {resolve_database_url()} is at schema {SCHEMA_VERSION}")


@app.command("current")
def current_cmd() -> None:
    """Print the store's schema version."""
    with translate_errors():
        from store.engine import SCHEMA_VERSION, init_db

        engine = init_db()
        engine.dispose()
    print(SCHEMA_VERSION)
