"""The runner's lease: the token of the claim a session's runner holds.

``flow_sessions.runner_lease``: the session's version right after the claim that made its
runner its runner (``start``, a worker's claim, a session created claimed). Every claim
writes a new one, so a runner that was taken over holds a token no row has any more, even
when the new claim was made under the same host and pid (a worker claiming again a session
its own stalled runner still runs). Every write of a runner is conditioned on its host, pid
and token in the write itself (docs/ARCHITECTURE.md §2, "Ownership").

The column is nullable and added in place (no table is copied): a session an older vc left
claimed has none, and its runner (an older vc) writes as it did; the next claim of the
session gives it one. Downgrading drops the column (SQLite drops a column in place from
3.35 on; older ones copy the table).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("flow_sessions", sa.Column("runner_lease", sa.Integer(), nullable=True))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite" and sqlite3.sqlite_version_info < (3, 35):
        with op.batch_alter_table("flow_sessions", recreate="always") as batch:
            batch.drop_column("runner_lease")
        return
    op.drop_column("flow_sessions", "runner_lease")
