"""PostgreSQL: NOTIFY on every session change.

A trigger sends ``NOTIFY vc_sessions, '<session id>'`` when a session is created, deleted,
or changes state (every state change bumps ``version``). NOTIFY is transactional: it is
delivered when the change commits, never for a change rolled back, and whoever wrote the
change (any vc version, any host) cannot forget it. Heartbeats and progress updates do not
touch ``version`` or ``status`` and stay silent. ``store.notify.SessionNotifier`` listens.

SQLite has no equivalent (its readers poll ``PRAGMA data_version``): nothing to do there.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

CHANNEL = "vc_sessions"  # store.migrations.NOTIFY_CHANNEL; frozen here with the revision


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(
        f"""
        CREATE OR REPLACE FUNCTION vc_notify_session_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' THEN
                PERFORM pg_notify('{CHANNEL}', OLD.id);
                RETURN OLD;
            END IF;
            PERFORM pg_notify('{CHANNEL}', NEW.id);
            RETURN NEW;
        END
        $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER vc_notify_session_change
        AFTER INSERT OR DELETE OR UPDATE OF status, version ON flow_sessions
        FOR EACH ROW EXECUTE PROCEDURE vc_notify_session_change()
        """
    )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("DROP TRIGGER IF EXISTS vc_notify_session_change ON flow_sessions")
    op.execute("DROP FUNCTION IF EXISTS vc_notify_session_change()")
