"""`vc db upgrade | current`: schema operations for operators (docs/ARCHITECTURE.md §9).

Every command already brings the store to the current revision on its own (``init_db``);
these two make it explicit: ``upgrade`` migrates now (e.g. once, before rolling a new vc
out to every host) and ``current`` shows where a database stands without changing it. Both
print the revision first on stdout, so scripts can take the first word.
"""

from __future__ import annotations

import typer

from app.cli.common import translate_errors

app = typer.Typer(help="Database schema.", no_args_is_help=True, rich_markup_mode=None)


@app.command("upgrade")
def upgrade_cmd() -> None:
    """Bring the store's schema to the current revision (never drops data)."""
    with translate_errors():
        from store.engine import describe_url, make_engine
        from store.migrations import upgrade

        url = _database_url()
        engine = make_engine(url)
        try:
            before, after = _run(lambda: upgrade(engine, url, beside_other_tables=True), url)
        finally:
            engine.dispose()
    where = describe_url(url)
    if before == after:
        print(f"{after} (head): database {where} is up to date")
    elif before is None:
        print(f"{after} (head): schema created in database {where}")
    else:
        print(f"{after} (head): database {where} upgraded from {before}")


@app.command("current")
def current_cmd() -> None:
    """Print the store's schema revision (changes nothing)."""
    with translate_errors():
        from store.engine import _sqlite_path, describe_url, make_engine
        from store.migrations import HEAD, current_revision

        url = _database_url()
        path = _sqlite_path(url) if url.startswith("sqlite") else None
        if path is not None and not path.exists():
            print(f"none: no database at {path} yet (the first command that writes creates it)")
            return
        engine = make_engine(url)
        try:
            revision = _run(lambda: current_revision(engine), url)
        finally:
            engine.dispose()
    where = describe_url(url)
    if revision is None:
        print(f"none: database {where} is empty ('vc db upgrade' creates the schema)")
    elif revision == HEAD:
        print(f"{revision} (head)")
    elif revision == "unversioned":
        print(
            f"unversioned: database {where} predates migrations (schema 0001); "
            "'vc db upgrade' stamps and upgrades it"
        )
    elif revision < HEAD:
        print(f"{revision}: behind head {HEAD}; 'vc db upgrade' upgrades it")
    else:
        print(f"{revision}: newer than this vc knows (head {HEAD}): upgrade vc")


def _database_url() -> str:
    """The store's URL once every setting is checked, as for any other command: a value
    vc cannot use is refused (exit 2) before anything is opened."""
    from app.settings import Settings

    return Settings.from_env().database_url


def _run(action, url: str):  # type: ignore[no-untyped-def]
    """Database errors as the one-line refusal every command gives."""
    from sqlalchemy.exc import DBAPIError

    from store.engine import unavailable_message
    from store.errors import StoreUnavailable

    try:
        return action()
    except DBAPIError as exc:
        raise StoreUnavailable(unavailable_message(exc, url)) from None
