"""A new session written on the driver path (:mod:`store.direct`): the start of `vc flow run`
and `vc flow session create` without the ORM.

The rows are :func:`store.new_session.new_session`'s, the ones the managers'
``create_session`` inserts; the event rows and the log lines are those of
:mod:`store.records`. ``tests/store/test_direct_create.py`` creates sessions both ways and
compares every row and event.
"""

from __future__ import annotations

import os
from typing import Any

from store.direct import DirectStore
from store.direct_control import commit_once
from store.identity import local_host, local_user
from store.new_session import JSON_COLUMNS, NewSession
from store.records import EVENT_COLUMNS, SESSION_CATEGORY, SessionChange

_INSERT_EVENT = (
    f"INSERT INTO flow_events ({', '.join(EVENT_COLUMNS)}) "
    f"VALUES ({', '.join('?' for _ in EVENT_COLUMNS)})"
)


class DirectCreate:
    """Writes new sessions over one :class:`DirectStore`, as this user on this host."""

    def __init__(self, db: DirectStore) -> None:
        self.db = db
        self.actor = local_user()
        self.host = local_host()
        self.pid = os.getpid()

    def create(self, new: NewSession) -> list[tuple[SessionChange, str, str]]:
        """Insert ``new`` in one transaction; the changes to log, each with its category
        and actor, once committed. A commit whose answer never came raises
        :class:`~store.direct_control.CommitUnconfirmed` (never tried again: it may have
        landed)."""
        db = self.db
        db.write()
        try:
            self._insert("flow_sessions", [new.session])
            if new.stages:
                self._insert("stage_instances", new.stages)
            at = new.session["created_at"]
            for change, actor in new.changes:
                db.changed(
                    _INSERT_EVENT,
                    (
                        change.session_id,
                        change.stage,
                        str(change.op),
                        _text(change.from_status),
                        _text(change.to_status),
                        actor or self.actor,
                        self.host,
                        self.pid,
                        at,
                        change.reason,
                    ),
                )
            commit_once(db, f"the creation of session {new.id[:12]}", new.id)
        except BaseException:
            db.rollback()
            raise
        return [(change, SESSION_CATEGORY, actor or self.actor) for change, actor in new.changes]

    def _insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        """Insert ``rows`` (every row has the first row's columns)."""
        columns = list(rows[0])
        as_json = JSON_COLUMNS[table]
        statement = (
            f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
        )
        values = [
            tuple(self.db.json_param(row[c]) if c in as_json else row[c] for c in columns)
            for row in rows
        ]
        if len(values) == 1:
            self.db.changed(statement, values[0])
        else:
            self.db.insert_many(statement, values)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


__all__ = ["DirectCreate"]
