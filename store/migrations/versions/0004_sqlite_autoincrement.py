"""SQLite: ids of deleted rows are never given again.

stage_instances and flow_events were keyed by a plain ``INTEGER PRIMARY KEY``,
which SQLite fills with max(id) + 1: once the newest rows were deleted (``session delete``),
their ids came back for the next session's rows, and a runner or dashboard still holding a
stage id of the deleted session would update another session's stage. With ``AUTOINCREMENT``
SQLite keeps the highest id ever used in ``sqlite_sequence`` and never goes below it.

SQLite cannot add ``AUTOINCREMENT`` to a table in place, so each table is rebuilt in batch
mode: a copy with the same columns, constraints and indexes (reflected from the database,
so they are kept as they are) gets every row with its id, then takes the old table's place.
Copying the rows seeds ``sqlite_sequence`` with the highest id each table holds, so new ids
continue above every id still in use. The migration connection keeps foreign keys off (see
``store.migrations``): dropping the old stage and event tables cascades nowhere.

flow_sessions is keyed by a random string and stays as it is. log_records keeps its plain
key: no one holds a log id across a delete (readers follow one session's rows by id), and
AUTOINCREMENT would cost a third of the rate at which stage output is stored. PostgreSQL
(sequences never go back): nothing to do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op
from sqlalchemy.engine import Connection

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("stage_instances", "flow_events")


def _has_autoincrement(conn: Connection, table: str) -> bool:
    sql = conn.exec_driver_sql(
        "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (table,)
    ).scalar()
    return "AUTOINCREMENT" in (sql or "").upper()


def _rebuild(autoincrement: bool) -> None:
    conn = op.get_bind()
    if conn.dialect.name != "sqlite":
        return
    for table in TABLES:
        if _has_autoincrement(conn, table) == autoincrement:
            continue
        with op.batch_alter_table(
            table, recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
        ):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
