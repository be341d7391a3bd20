"""The driver path of the commands people type most (docs/ARCHITECTURE.md §2, "Two ways in").

`session pause|resume|abort|approve|list|show|logs` and `flow status` first try the store
through its database driver (:mod:`store.direct`): no SQLAlchemy, SQLModel, pydantic,
PyYAML or loguru is imported, which is most of what such a command used to cost. When that
path cannot serve the command (a store to create, migrate or repair, a URL it does not
read) the command takes its full path instead. A store that answers with an error (locked
past the busy timeout, a server that cannot be reached) is reported at once, in the full
path's words (``app.console.failure``), not asked a second time.

What a command leaves behind is the same either way: the rows and events (a parity test
compares them), the log lines in the log files and in the store's log table, its output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from app.console import warning_line
from app.settings import missing_store

if TYPE_CHECKING:
    from app.settings import Settings
    from store.direct import DirectStore
    from store.direct_control import Outcome
    from store.new_session import NewSession
    from store.records import LogLine
    from store.views import EventView, LogView, SessionView


class Reader(Protocol):
    """The reads of the session commands, by either path. ``snapshot``: the store is read
    as it was when opened (a read-only file system, :func:`store.direct.open_read_only`):
    nothing later will be seen."""

    @property
    def snapshot(self) -> bool: ...

    def resolve_session_id(self, session_id: str) -> str: ...

    def list_sessions(
        self,
        *,
        status: str | tuple[str, ...] | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
    ) -> list[SessionView]: ...

    def count_sessions(
        self, *, status: str | tuple[str, ...] | None = None, workflow_id: str | None = None
    ) -> int: ...

    def session_view(self, session_id: str) -> SessionView | None: ...

    def events(self, session_id: str) -> list[EventView]: ...

    def logs(
        self,
        session_id: str,
        *,
        after_id: int | None = None,
        min_level: str | None = None,
        stages: Sequence[str] | None = None,
        limit: int = 1000,
        newest: bool = False,
    ) -> list[LogView]: ...


class _OrmReads:
    """:class:`Reader` through the managers and :mod:`store.queries` (the full path)."""

    snapshot = False

    def __init__(self, ctx: Any, session: Any) -> None:
        self.ctx = ctx
        self.session = session

    def resolve_session_id(self, session_id: str) -> str:
        return str(self.ctx.sessions(self.session).resolve_session_id(session_id))

    def list_sessions(
        self,
        *,
        status: str | tuple[str, ...] | None = None,
        workflow_id: str | None = None,
        limit: int = 50,
    ) -> list[SessionView]:
        from store.queries import list_sessions

        return list_sessions(self.session, _filter(status, workflow_id), limit=limit)

    def count_sessions(
        self, *, status: str | tuple[str, ...] | None = None, workflow_id: str | None = None
    ) -> int:
        from store.queries import count_sessions

        return count_sessions(self.session, _filter(status, workflow_id))

    def session_view(self, session_id: str) -> SessionView | None:
        from store.queries import get_session_view

        self.session.commit()  # a poll sees what was committed since the last one
        return get_session_view(self.session, session_id)

    def events(self, session_id: str) -> list[EventView]:
        from store.queries import list_events

        return list_events(self.session, session_id)

    def logs(self, session_id: str, **options: Any) -> list[LogView]:
        from store.queries import read_logs

        self.session.commit()
        return read_logs(self.session, session_id, **options)


def _filter(status: str | tuple[str, ...] | None, workflow_id: str | None) -> Any:
    from store.queries import SessionFilter

    if isinstance(status, tuple):
        return SessionFilter(workflow_id=workflow_id, statuses=status)
    return SessionFilter(status, workflow_id)


class _NoStore:
    """:class:`Reader` of a SQLite store that does not exist yet: a read (a session list,
    a status) answers as an empty store would, and creates nothing (a command run in the
    wrong directory, or with a mistyped ``VC_HOME``, leaves no ``.vc`` behind)."""

    snapshot = False

    def __init__(self, path: str, nowhere: str | None = None) -> None:
        self.path = path
        #: Where it looked, for the answer: ``no store at PATH`` (SQLite), ``no vc schema
        #: in database NAME yet`` (PostgreSQL).
        self.nowhere = nowhere or f"no store at {path}"

    def resolve_session_id(self, session_id: str) -> str:
        from store.errors import SessionNotFound
        from store.records import checked_id
        from store.text import clean_text

        raise SessionNotFound(
            f"no session matches {checked_id(session_id)!r} ({clean_text(self.nowhere)})"
        )

    def list_sessions(self, **_: Any) -> list[SessionView]:
        return []

    def count_sessions(self, **_: Any) -> int:
        return 0

    def session_view(self, session_id: str) -> SessionView | None:
        return None

    def events(self, session_id: str) -> list[EventView]:
        return []

    def logs(self, session_id: str, **_: Any) -> list[LogView]:
        return []


def refuse_without_store(session_ids: Sequence[str], *, postgresql: bool = False) -> None:
    """A command about given sessions with no SQLite store yet: none of them can exist, so
    it is refused as for an unknown id, and no store is made just to say so. With
    ``postgresql``, a PostgreSQL database without vc's schema likewise (one connection
    more: asked where the driver path could not serve the command)."""
    from app.settings import Settings

    if not session_ids:
        return
    settings = Settings.from_env()
    missing = missing_store(settings)
    if missing is not None:
        _NoStore(missing).resolve_session_id(session_ids[0])
    if postgresql:
        from store.direct import postgresql_without_schema

        database = postgresql_without_schema(settings.database_url)
        if database is not None:
            _NoStore(database, f"no vc schema in database {database} yet").resolve_session_id(
                session_ids[0]
            )


def _open(settings: Settings) -> DirectStore | None:
    from store.direct import open_direct

    return open_direct(settings.database_url)


def _warn_about(settings: Settings) -> None:
    from app.settings import workspace_warnings

    for message in workspace_warnings(settings.workspace):
        warning_line(message)


@contextmanager
def reading(*, warned: bool = False, translate: bool = True) -> Iterator[Reader]:
    """The store opened for reading, by the driver path when it can; the full path's
    warnings (unless the command ``warned`` already) and failures either way: as one line
    and an exit code, or (``translate=False``, for a caller that retries) raised as they
    come."""
    from app.settings import Settings

    settings = Settings.from_env()
    missing = missing_store(settings)
    if missing is not None:
        if not warned:
            _warn_about(settings)  # an unsafe workspace is said whether it has a store or not
        yield _NoStore(missing)
        return
    with _opened(settings, warn=not warned) as db:
        if db is not None:
            from store.direct_reads import DirectReads

            yield DirectReads(db, stale_after=settings.stale_after)
            return
    from store.direct import open_read_only, postgresql_without_schema

    read_only = open_read_only(settings.database_url)
    if read_only is not None:  # the full path refuses a store it cannot write
        try:
            if not warned:
                _warn_about(settings)
            from store.direct_reads import DirectReads

            yield DirectReads(read_only, stale_after=settings.stale_after)
            return
        finally:
            read_only.close()
    database = postgresql_without_schema(settings.database_url)
    if database is not None:  # as a SQLite store not made yet: nothing is created to answer
        yield _NoStore(database, f"no vc schema in database {database} yet")
        return
    from app.cli.common import open_store
    from app.context import open_context

    opened = (
        open_store(writes=False, warned=warned)
        if translate
        else open_context(writes=False, warn=None if warned else warning_line)
    )
    with opened as ctx, ctx.session() as session:
        yield _OrmReads(ctx, session)


def operation(op: str, session_id: str, gate: str | None = None) -> Outcome | None:
    """Run ``op`` (pause, resume, abort, approve) on the driver path and log it; None
    when the full path must do it (nothing was tried then). Refusals raise the store's
    errors, as the managers do."""
    from app.settings import Settings
    from store.direct_control import DirectControl

    settings = Settings.from_env()
    with _opened(settings, warn=True, writes=True) as db:
        if db is None:
            return None
        control = DirectControl(db, stale_after=settings.stale_after, log_in_transaction=True)
        plain = {"pause": control.pause, "resume": control.resume, "abort": control.abort}
        # A driver error from here on is the store's answer (locked past the busy timeout,
        # the server gone): the full path would wait for the same answer again, so it is
        # reported as it is (app.console.failure words it as the full path does).
        outcome = control.approve(session_id, gate) if op == "approve" else plain[op](session_id)
        _log_changes(settings, db, outcome, control.actor, control.host, control.pid)
        return outcome


def create(settings: Settings, new: NewSession) -> bool:
    """Write the new session ``new`` on the driver path, and log it; False when the full
    path must (nothing was tried then)."""
    from store.direct_create import DirectCreate
    from store.records import change_lines

    with _opened(settings, warn=True, writes=True) as db:
        if db is None:
            return False
        creator = DirectCreate(db)
        logged = creator.create(new)
        lines = [
            line
            for change, category, actor in logged
            for line in change_lines([(change, category)], actor, creator.host, creator.pid)
        ]
        write_log(settings, lines, db)
        return True


@contextmanager
def _opened(
    settings: Settings, *, warn: bool, writes: bool = False
) -> Iterator[DirectStore | None]:
    """The store on the driver path, or None (nothing said) when the full path must open
    it; once open, the workspace's warnings (``warn``) and, for a change, the log
    directory's check come first, as on the full path. Closed on the way out."""
    db = _open(settings)
    if db is None:
        yield None
        return
    try:
        if warn:
            _warn_about(settings)
        if writes:
            from app.logging import check_log_dir

            check_log_dir(settings.log_dir)
        yield db
    finally:
        db.close()


def _log_changes(
    settings: Settings, db: DirectStore, outcome: Outcome, actor: str, host: str, pid: int
) -> None:
    """The lines the full path's loguru sinks write for these changes (in the files only
    when the change stored them itself)."""
    from store.records import change_lines

    lines = change_lines(outcome.logged, actor, host, pid)
    write_log(settings, lines, None if outcome.stored else db)


def write_log(settings: Settings, records: Sequence[LogLine], db: DirectStore | None) -> None:
    """Write ``records`` where the full path's sinks do (app.logging): the shared file of
    their category, the session's file and, given ``db``, the store's log table. A log
    that cannot be written is one warning, never a failure: the change has committed."""
    import time

    from app.logging import LogFiles, format_line

    files = LogFiles(settings.log_dir)
    files.on_event = lambda _name, level, text: warning_line(text) if level == "WARNING" else None
    rows = []
    for level, category, sid, stage, text in records:
        at = time.time()
        line = format_line(at, level, category, sid, stage, text)
        shared = "operations.log" if category.endswith("operations") else "integration.log"
        files.write(shared, line)
        with contextlib.suppress(ValueError):  # an id no file may be named after
            files.write_session(sid, line)
        rows.append((sid, at, level, category, stage, text))
    files.close()
    if db is not None:
        _mirror(db, rows)


def _mirror(db: DirectStore, rows: Sequence[tuple[str, float, str, str, str | None, str]]) -> None:
    """Store the rows through the full path's own mirror (app.log_mirror): a store that is
    away for a moment is retried, a full disk gives way to the state and leaves a note
    saying how many lines are missing, and what cannot be stored is one warning."""
    from app.log_mirror import StoreMirror
    from store.records import INSERT_LOGS, LogLines

    def write_batch(groups: Sequence[LogLines]) -> None:
        try:
            db.write()
            db.insert_many(
                INSERT_LOGS,
                [
                    (g.session_id, g.at, g.level, g.category, g.stage, t.replace("\x00", "\\x00"))
                    for g in groups
                    for t in g.texts
                ],
            )
            db.commit()
        except BaseException:
            db.rollback()
            raise

    warned: list[bool] = []

    def warn_once(exc: BaseException) -> None:
        if not warned:
            warned.append(True)
            warning_line(f"cannot write log: {exc}")

    space = None
    if db.path is not None:
        from store.space import StoreSpace

        space = StoreSpace(db.path)
    mirror = StoreMirror(
        write_batch, on_error=warn_once, space=space, transient=db.transient_errors
    )
    for sid, at, level, category, stage, text in rows:
        mirror.add(LogLines(sid, at, level, category, stage, (text,)))
    mirror.close()


def status_log(session_id: str, text: str) -> None:
    """The status report's integration line, where `flow status` writes it: the log files
    only, and only when the log directory is usable (a read stays a read)."""
    from app.logging import check_log_dir
    from app.settings import Settings
    from store.records import INTEGRATION_CATEGORY

    settings = Settings.from_env()
    try:
        check_log_dir(settings.log_dir)
    except OSError:
        return
    write_log(settings, [("DEBUG", INTEGRATION_CATEGORY, session_id, None, text)], None)
