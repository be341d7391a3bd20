"""Developer entry point, no alembic.ini needed:

    python -m store.migrations revision -m "add a column" [--autogenerate]
    python -m store.migrations upgrade | current | history

``revision`` numbers the new file after the head (0004, 0005, ...), as
:mod:`store.migrations` requires; remember to bump ``store.revision.SCHEMA_VERSION``.
``upgrade`` and ``current`` act on ``VC_DATABASE_URL`` (or the workspace store), like
``vc db upgrade`` / ``vc db current``.
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    from alembic import command

    from store.engine import make_engine
    from store.location import resolve_database_url
    from store.migrations import HEAD, alembic_config, current_revision
    from store.opening import init_db

    parser = argparse.ArgumentParser(prog="python -m store.migrations")
    sub = parser.add_subparsers(dest="cmd", required=True)
    rev = sub.add_parser("revision", help="write a new revision file")
    rev.add_argument("-m", "--message", required=True)
    rev.add_argument(
        "--autogenerate", action="store_true", help="diff the models against an up-to-date database"
    )
    sub.add_parser("upgrade", help="bring the database to head")
    sub.add_parser("current", help="print the database's revision")
    sub.add_parser("history", help="list the revisions")
    args = parser.parse_args(argv)

    url = resolve_database_url()
    if args.cmd == "history":
        command.history(alembic_config())
        return 0
    if args.cmd == "upgrade":
        init_db(url).dispose()
        print(HEAD)
        return 0
    engine = make_engine(url)
    try:
        if args.cmd == "current":
            print(current_revision(engine) or "none")
            return 0
        new_id = f"{int(HEAD) + 1:04d}"
        if args.autogenerate:
            init_db(url).dispose()  # autogenerate compares against a database at head
        with engine.begin() as conn:
            command.revision(
                alembic_config(conn),
                message=args.message,
                autogenerate=args.autogenerate,
                rev_id=new_id,
            )
        print(f"wrote revision {new_id}: bump store.revision.SCHEMA_VERSION to {int(new_id)}")
        return 0
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
