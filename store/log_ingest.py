"""Log ingestion: a stage's output lines into ``log_records``, in bulk.

The hot path of stage output (hundreds of thousands of lines per second): the log mirror
batches what stages print and hands it here, and a person's change its own lines, in its
transaction (``store.changes.ManagerBase``; on the driver path, ``store.direct_control``
writes them with the same columns).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.engine import Connection
from sqlmodel import Session

from store.models import FlowEvent, FlowSession, LogRecord
from store.records import LogLines
from store.status import SessionOp

_LOG = LogRecord.__table__  # type: ignore[attr-defined]
_T = FlowSession.__table__  # type: ignore[attr-defined]
#: The claims of the sessions whose rows a batch holds for their runners, locked FOR SHARE on
#: PostgreSQL (a takeover not committed yet is waited for, then seen; a later one waits
#: for the batch's commit), in one order. SQLite's batch holds the write lock already.
_CLAIMS = (
    select(_T.c.id, _T.c.runner_host, _T.c.runner_pid, _T.c.runner_lease)
    .where(_T.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(_T.c.id)
    .with_for_update(read=True)
)
_EV = FlowEvent.__table__  # type: ignore[attr-defined]
#: Every claim of the sessions, oldest first: each writes a ``start`` event, dated by the
#: claimer, with its host and pid.
_CLAIM_EVENTS = (
    select(_EV.c.session_id, _EV.c.at, _EV.c.host, _EV.c.pid)
    .where(
        _EV.c.session_id.in_(bindparam("ids", expanding=True)),
        _EV.c.op == SessionOp.START.value,
    )
    .order_by(_EV.c.session_id, _EV.c.at, _EV.c.id)
)
_LOG_COLUMNS = ("session_id", "at", "level", "category", "stage", "text")


_COPY_LOGS = f"COPY {_LOG.name} ({', '.join(_LOG_COLUMNS)}) FROM STDIN"


#: Below this many lines a group goes through executemany with the others; from it on, one
#: statement that expands a JSON array inside SQLite (no per-line binding from Python).
_JSON_GROUP_MIN = 8
#: SQLite's JSON1 ``json_each``: built in since 3.38, probed once per process before that.
_sqlite_json_each: bool | None = None


def _has_json_each(conn: Connection) -> bool:
    global _sqlite_json_each
    if _sqlite_json_each is None:
        try:
            conn.exec_driver_sql("SELECT count(*) FROM json_each('[1]')").scalar()
            _sqlite_json_each = True
        except Exception:
            _sqlite_json_each = False
    return _sqlite_json_each


def append_log_lines(session: Session, groups: Sequence[LogLines]) -> list[LogLines]:
    """Insert log records, one per text, in order, in one transaction; the batching writers
    (the log mirror) call this with what a stage printed.

    A group with a ``lease`` (a runner's claim) logged after another runner claimed its
    session from it is not stored: its runner was taken over (stalled, then woken), and
    what its stage printed into the pipe meanwhile, stamped when read, would sit among the
    new attempt's lines. Those groups are returned. What a runner logged before the next
    claim (its last lines before a hand-back, not stored yet) is stored, and so is anything
    while the row records the group's claim or none (released as its runner ended). The
    groups of a session deleted meanwhile that a leased group names are left out too, and
    not returned (no row outlives its session).

    The hot path of stage output (hundreds of thousands of lines per second). On SQLite a
    group of lines becomes one ``INSERT … SELECT … FROM json_each(?)``: the texts cross
    into SQLite as one JSON string and are expanded there, in array order, which is about
    2.5x the rate of ``executemany`` (whose per-row binding and statement reset from Python
    cost more than the insert itself). Small groups go through ``executemany`` as tuples.
    On PostgreSQL all rows go through one COPY, about three times the rate of executemany
    there.

    A NUL character is stored as the four characters ``\\x00``, on both stores: PostgreSQL
    text cannot hold it (and SQLite's JSON strings end at it); the stage output layer
    writes NUL bytes the same way, so a log reads the same from either store.
    """
    left_out: list[LogLines] = []
    while groups:
        conn = session.connection()
        insert_log_lines(conn, groups)  # first: it takes SQLite's write lock
        taken_over, deleted = _after_another_claim(conn, groups)
        if not taken_over and not deleted:
            session.commit()
            break
        session.rollback()
        left_out += taken_over
        gone = {id(g) for g in taken_over + deleted}
        groups = [g for g in groups if id(g) not in gone]
    return left_out


def _after_another_claim(
    conn: Connection, groups: Sequence[LogLines]
) -> tuple[list[LogLines], list[LogLines]]:
    """(The leased groups logged after their session was claimed by another runner, those
    of sessions with no row any more.)"""
    leased = [g for g in groups if g.lease is not None]
    if not leased:
        return [], []
    ids = sorted({g.session_id for g in leased})
    rows = {r.id: r for r in conn.execute(_CLAIMS, {"ids": ids})}
    gone = set(ids) - rows.keys()
    deleted = [g for g in groups if g.session_id in gone]  # a person's lines of it too
    other = [
        g
        for g in leased
        if g.lease is not None
        and (row := rows.get(g.session_id)) is not None
        and row.runner_lease is not None
        and not g.lease.held_by(g.session_id, row.runner_host, row.runner_pid, row.runner_lease)
    ]
    if not other:
        return [], deleted
    claims: dict[str, list[tuple[float, str, int]]] = {}
    sids = sorted({g.session_id for g in other})
    for sid, at, host, pid in conn.execute(_CLAIM_EVENTS, {"ids": sids}).all():
        claims.setdefault(sid, []).append((at, host, pid))
    taken_over = [g for g in other if _after_next_claim(g, claims.get(g.session_id, []))]
    return taken_over, deleted


def _after_next_claim(group: LogLines, claims: list[tuple[float, str, int]]) -> bool:
    """Was ``group`` logged once another process had claimed the session after its own
    runner's claim (the latest claim of its host and pid before the line: a runner's claim
    is written by its own process, a worker's runner's by the worker)? ``claims``: (time,
    host, pid), oldest first. Without such a claim to compare with (its own process claimed
    it again), it counts as after."""
    assert group.lease is not None
    runner = (group.lease.host, group.lease.pid)
    own = [at for at, host, pid in claims if (host, pid) == runner and at <= group.at]
    since = own[-1] if own else float("-inf")
    following = [at for at, host, pid in claims if at > since and (host, pid) != runner]
    return not following or group.at >= following[0]


def insert_log_lines(conn: Connection, groups: Sequence[LogLines]) -> None:
    """:func:`append_log_lines` inside the caller's transaction, which commits them (with
    the change they tell of, see ``store.changes.ManagerBase``)."""
    if conn.dialect.name == "postgresql":
        driver = conn.connection.driver_connection
        assert driver is not None
        with driver.cursor() as cursor, cursor.copy(_COPY_LOGS) as copy:
            for sid, at, level, category, stage, texts, _ in groups:
                copy.write(_copy_block(sid, at, level, category, stage, _without_nul(texts)))
        return
    marker = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    placeholders = ", ".join([marker] * (len(_LOG_COLUMNS) - 1))
    single: list[tuple[Any, ...]] = []
    use_json = conn.dialect.name == "sqlite" and _has_json_each(conn)
    for group in groups:
        sid, at, level, category, stage, texts, _ = group
        if use_json and len(texts) >= _JSON_GROUP_MIN:
            # ensure_ascii=False: a lone surrogate then fails to encode, as it does with
            # executemany, instead of being stored as bytes SQLite cannot give back.
            payload = json.dumps(
                texts if isinstance(texts, (list, tuple)) else list(texts), ensure_ascii=False
            )
            if "\\u0000" in payload:  # a NUL (or a text spelling one out: harmless)
                payload = json.dumps(_without_nul(texts), ensure_ascii=False)
            if single:  # keep the rows in the order they were given
                _insert_rows(conn, single, marker)
                single = []
            conn.exec_driver_sql(
                f"INSERT INTO {_LOG.name} ({', '.join(_LOG_COLUMNS)}) "
                f"SELECT {placeholders}, value FROM json_each({marker}) ORDER BY key",
                (sid, at, level, category, stage, payload),
            )
            continue
        single.extend((sid, at, level, category, stage, text) for text in _without_nul(texts))
    if single:
        _insert_rows(conn, single, marker)


def _copy_escape(value: str) -> str:
    """A value for COPY's text format: backslash, tab, newline and CR escaped."""
    return (
        value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    )


def _copy_block(
    sid: str, at: float, level: str, category: str, stage: str | None, texts: Sequence[str]
) -> str:
    """One group's rows as COPY text data, built with whole-block string operations: the
    texts (NUL-free) are joined with NUL, escaped at once, and every NUL becomes the end of
    a row plus the next row's shared columns. Writing row by row (``write_row``) cost about
    a microsecond of Python per line, which held the GIL against the stage's output reader."""
    if not texts:
        return ""
    head = "\t".join(
        (
            _copy_escape(sid),
            repr(float(at)),
            _copy_escape(level),
            _copy_escape(category),
            "\\N" if stage is None else _copy_escape(stage),
        )
    )
    head += "\t"
    body = _copy_escape("\x00".join(texts))
    return head + body.replace("\x00", "\n" + head) + "\n"


def _without_nul(texts: Sequence[str]) -> Sequence[str]:
    """``texts`` with each NUL character spelled ``\\x00`` (the same sequence when none)."""
    if any("\x00" in text for text in texts):
        return [text.replace("\x00", "\\x00") for text in texts]
    return texts


def _insert_rows(conn: Connection, rows: list[tuple[Any, ...]], marker: str) -> None:
    conn.exec_driver_sql(
        f"INSERT INTO {_LOG.name} ({', '.join(_LOG_COLUMNS)}) "
        f"VALUES ({', '.join([marker] * len(_LOG_COLUMNS))})",
        rows,
    )


def append_logs(session: Session, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert log records given as mappings (``session_id``, ``at``, ``level``,
    ``category``, ``stage``, ``text``), in order, in one transaction."""
    append_log_lines(
        session,
        [
            LogLines(r["session_id"], r["at"], r["level"], r["category"], r["stage"], (r["text"],))
            for r in rows
        ],
    )


__all__ = ["LogLines", "append_log_lines", "append_logs", "insert_log_lines"]
