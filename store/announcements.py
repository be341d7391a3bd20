"""Which session events were announced already (docs/ARCHITECTURE.md §6: notifications).

A runner tells people of a failure or a gate once, whichever runner or host notices it:
each announcement is recorded as a ``notify`` event in the session's history, written only
if no record of it exists yet. Not a state change: no version bump, no from/to state.
"""

from __future__ import annotations

import time

from sqlalchemy import String, insert, literal, select

from store.changes import EVENT_COLUMNS, ManagerBase, holds
from store.models import FlowEvent, FlowSession

#: The event op of a notification sent (see :meth:`AnnouncementRecords.record_notified`).
NOTIFY_OP = "notify"

_T = FlowSession.__table__  # type: ignore[attr-defined]
_EV = FlowEvent.__table__  # type: ignore[attr-defined]


class AnnouncementRecords(ManagerBase):
    """The announcement records of sessions: asked and written by runners."""

    def notified(self, session_id: str, key: str) -> bool:
        """Has the session's event ``key`` (``"failure #9"``: the kind and the session
        version the event made) been announced already, by any runner?"""
        found = (
            self._conn()
            .execute(
                select(_EV.c.id)
                .where(
                    _EV.c.session_id == session_id,
                    _EV.c.op == NOTIFY_OP,
                    _EV.c.reason.startswith(f"{key}:", autoescape=True),
                )
                .limit(1)
            )
            .first()
        )
        self.session.commit()
        return found is not None

    def record_notified(
        self, session_id: str, key: str, summary: str, *, stage: str | None = None
    ) -> bool:
        """Record that the event ``key`` was announced: a ``notify`` event in the session's
        history whose reason is ``"KEY: summary"``. Written only if no such record exists
        (one statement on SQLite; the session row locked first on PostgreSQL, so two
        writers cannot both insert); False when it was there already or the session is
        gone. Not a state change: no version bump, no from/to state. With a lease, written
        only while the session's row records it (LeaseLost otherwise; the runner's announcer
        writes without one, see app.runner.notifications)."""
        conn = self._conn()
        fence = [holds(self.lease)] if self.lease is not None else []
        if conn.dialect.name == "postgresql":
            conn.execute(select(_T.c.id).where(_T.c.id == session_id, *fence).with_for_update())
        already = (
            select(_EV.c.id)
            .where(
                _EV.c.session_id == session_id,
                _EV.c.op == NOTIFY_OP,
                _EV.c.reason.startswith(f"{key}:", autoescape=True),
            )
            .exists()
        )
        row = select(
            _T.c.id,
            literal(stage, String()),
            literal(NOTIFY_OP),
            literal(None, String()),
            literal(None, String()),
            literal(self.actor),
            literal(self.host),
            literal(self.pid),
            literal(time.time()),
            literal(f"{key}: {summary}"),
        ).where(_T.c.id == session_id, ~already, *fence)
        written = conn.execute(
            insert(_EV)
            .from_select([_EV.c[name] for name in EVENT_COLUMNS], row)
            .returning(_EV.c.id)  # INSERT … SELECT reports no row count on psycopg
        ).all()
        if not written and self.lease is not None:
            self._check_lease(session_id)
            return False
        self.session.commit()
        return len(written) == 1
