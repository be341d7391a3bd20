"""Session parameters and stage outputs.

``flow_sessions.params``: the values a session was created with (JSON, key -> value), handed
to its stages as ``VC_PARAM_<KEY>``. ``stage_instances.outputs``: what a stage reported with
``::output KEY=VALUE`` lines (JSON, key -> text), handed to later stages as
``VC_OUTPUT_<STAGE>_<KEY>``.

Both columns are nullable and added in place (no table is copied): on a store upgraded from
an older vc, existing sessions read as having no parameters and their stages no outputs,
which is what they had. Downgrading drops the two columns and what they held (SQLite drops
a column in place from 3.35 on; older ones copy the table, keeping its AUTOINCREMENT).

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("flow_sessions", "params"), ("stage_instances", "outputs"))


def upgrade() -> None:
    for table, column in COLUMNS:
        op.add_column(table, sa.Column(column, sa.JSON(), nullable=True))


def downgrade() -> None:
    old_sqlite = op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35)
    for table, column in COLUMNS:
        if not old_sqlite:
            op.drop_column(table, column)
            continue
        autoincrement = {"sqlite_autoincrement": table == "stage_instances"}
        with op.batch_alter_table(table, recreate="always", table_kwargs=autoincrement) as batch:
            batch.drop_column(column)
