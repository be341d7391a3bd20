"""Engine and session factory: one place that knows how to open the store.

SQLite (the embedded default) runs in WAL mode with a busy timeout and foreign keys on, so a
runner, the dashboard and any number of CLI calls can share one file. Any SQLAlchemy URL works
through ``VC_DATABASE_URL`` (PostgreSQL via psycopg 3 for teams).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.orm import sessionmaker
from sqlmodel import Session, create_engine

from store import models  # noqa: F401  (registers the tables on SQLModel.metadata)
from store.errors import StoreUnavailable, os_error_message
from store.location import (  # noqa: F401 (their old home)
    STORE_DIR_NAME,
    busy_timeout,
    resolve_database_url,
    workspace_dir,
)

#: libpq settings of every server connection: a server that does not answer in 5 s is
#: out of reach, and a connection cut without a word (a network partition: no reset ever
#: comes) is noticed within about 10 s instead of the system's two hours of keepalive, so
#: a runner cut off stops its stages in time (docs/ARCHITECTURE.md §6, "The store going
#: away"). A query that runs long is not affected: nothing is in flight unanswered.
SERVER_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 5,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 10_000,
}


def describe_url(url: str) -> str:
    """The URL without its password, for error messages."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def _prepare_sqlite_file(path: Path) -> None:
    """Create the store's directory 0700 and file 0600 (they hold commands, environment
    and output) before SQLite does, since SQLite gives its -wal/-shm files the same mode.

    Only a workspace's own store directory (named ``.vc``, as in the default URL) is
    created, with its parents; a URL naming any other directory that does not exist is
    refused: a mistyped ``VC_DATABASE_URL`` must not make a new, empty store somewhere.
    For the same reason a path that is a directory, or a file that is not a vc store (not
    SQLite, or another program's database), is refused before anything is changed: no
    mode, no journal, no reserve file. An existing store is made private again by taking
    group and other bits away, never by giving the owner a right it did not have (a store
    made read-only is refused as such), and only the ``.vc`` directory around it is
    tightened: another directory named in the URL is the user's, not ours."""
    if path.parent.name != STORE_DIR_NAME and not path.parent.exists():
        raise StoreUnavailable(
            f"cannot open the store {path}: directory {path.parent} does not exist "
            "(create it first, or check VC_DATABASE_URL)"
        )
    _refuse_what_is_not_a_store(path)
    try:
        if not path.parent.exists():
            # Several first starts may race to create it; a file in its place is
            # reported by the open below ("not a directory").
            with contextlib.suppress(FileExistsError):
                path.parent.mkdir(mode=0o700, parents=True)
        if not path.exists():
            _create_in_wal_mode(path)
        _remove_scratch_left_behind(path)
    except OSError as exc:
        raise StoreUnavailable(os_error_message(exc, path)) from None
    if not os.access(path, os.R_OK | os.W_OK) or not os.access(path.parent, os.W_OK):
        raise StoreUnavailable(f"cannot write {path}: {_why_not_writable(path)}")
    if path.parent.name == STORE_DIR_NAME:
        _tighten(path.parent, 0o700)
    for member in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        _tighten(member, 0o600)
    from store.space import StoreSpace

    StoreSpace(path).ensure_reserve()  # a stat when it is there (see store.space)


#: The first bytes of every SQLite database file.
_SQLITE_HEADER = b"SQLite format 3\x00"
#: The table every vc store has had since its first revision (``alembic_version`` alone
#: says nothing: other programs' databases have one too).
_OUR_TABLE = "flow_sessions"


def _refuse_what_is_not_a_store(path: Path) -> None:
    """Raise :class:`StoreUnavailable` when ``path`` exists and cannot be a vc store: a
    directory, a file that is not a SQLite database, or a database that holds tables
    and none of vc's (another program's: vc must not add its tables to it). An empty
    file or an empty database is a store yet to be made. Read without writing (the
    database is opened read-only and immutable); a check that cannot be made is left to
    the open."""
    try:
        if path.is_dir():
            raise StoreUnavailable(
                f"cannot open the store {path}: it is a directory "
                "(VC_DATABASE_URL names the database file, e.g. sqlite:///DIR/flow.db)"
            )
        with path.open("rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError:
        return  # missing (made next), or unreadable (the open says so)
    if not header:
        return
    if header != _SQLITE_HEADER:
        raise StoreUnavailable(f"cannot open the store {path}: the file is not a database")
    try:
        # immutable: no lock taken and no -wal/-shm made next to someone else's file. It
        # reads the main file only: a store whose tables are still in its WAL shows none,
        # which passes (only tables that are all someone else's are refused).
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            tables = {
                name
                for (name,) in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                )
                if not name.startswith("sqlite_")
            }
        finally:
            connection.close()
    except sqlite3.Error:
        return
    if tables and _OUR_TABLE not in tables:
        some = ", ".join(sorted(tables)[:3]) + (", …" if len(tables) > 3 else "")
        raise StoreUnavailable(
            f"cannot open the store {path}: it is another program's database (tables: "
            f"{some}); point VC_DATABASE_URL at a vc store or a new file"
        )


def _create_in_wal_mode(path: Path) -> None:
    """Make a new store file that is already in WAL mode, then put it in place atomically.

    Switching a new, empty file to WAL is SQLite's one write that does not wait for a busy
    handler: two first starts that both try it at once can see "database is locked" at once,
    however long the busy timeout. So the switch is done on a private file, and the first
    start to link it in place wins; the others find a WAL store already there."""
    import tempfile

    scratch: str | None = None
    try:
        fd, scratch = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new")
        os.close(fd)  # mkstemp made it 0600, the mode the store keeps
        connection = sqlite3.connect(scratch, isolation_level=None)
        try:
            connection.execute("PRAGMA journal_mode=WAL")
        finally:
            connection.close()
        os.link(scratch, path)
    except (OSError, sqlite3.Error) as exc:
        # Another first start won (FileExistsError), or: no hard links on this filesystem,
        # no room, no right to write here, a store path that is a dangling symlink. Then
        # an empty file as before (the race is back only there), made at the store's own
        # path, so the open that follows reports what is wrong in its own words.
        if not (isinstance(exc, FileExistsError) and path.exists()):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    finally:
        if scratch is not None:
            for leftover in (scratch, f"{scratch}-wal", f"{scratch}-shm"):
                with contextlib.suppress(OSError):
                    os.unlink(leftover)


#: A scratch file of :func:`_create_in_wal_mode` older than this was left by a first start
#: that was killed (making one takes milliseconds).
SCRATCH_STALE_AFTER = 60.0


def _remove_scratch_left_behind(path: Path) -> None:
    """Remove what a first start killed inside :func:`_create_in_wal_mode` left: a scratch
    file already linked as the store (a second name of it, which would keep its data when
    the store is deleted), or one never linked and older than :data:`SCRATCH_STALE_AFTER`;
    with their -wal and -shm files. A scratch being made right now is neither."""
    try:
        store_inode = path.stat().st_ino
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    prefix = f".{path.name}."
    now = time.time()
    for entry in entries:
        if not (entry.name.startswith(prefix) and entry.name.endswith(".new")):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if st.st_ino != store_inode and now - st.st_mtime < SCRATCH_STALE_AFTER:
                continue
            for member in (entry.path, f"{entry.path}-wal", f"{entry.path}-shm"):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(member)
        except OSError:
            continue  # not ours to remove: it stays, as before


def _tighten(path: Path, mode: int) -> None:
    """An existing store left open to others (by an old version, a copy, a umask of 0) is
    made private again, when it is ours to change: the bits ``mode`` lacks are taken
    away, none is added."""
    try:
        st = path.stat()
        current = st.st_mode & 0o777
        if st.st_uid == os.geteuid() and current & ~mode:
            path.chmod(current & mode)
    except OSError:
        pass


#: Connections a database server's pool sized with ``pool_size`` keeps open while idle:
#: the rest (up to twice ``pool_size``, as on SQLite) are opened for a burst and closed
#: when given back. A PostgreSQL server has ~100 connections for
#: the whole team; a worker whose ten runners mostly wait must not hold ten of them.
IDLE_CONNECTIONS = 1


def make_engine(url: str | None = None, *, pool_size: int | None = None) -> Engine:
    """An engine for ``url`` (default: :func:`resolve_database_url`), configured for
    several processes sharing the store (``pool_size``: see :func:`init_db`)."""
    pool: dict[str, Any] = {}
    if pool_size:
        pool = {"pool_size": pool_size, "max_overflow": pool_size}
    url = url or resolve_database_url()
    try:
        parsed = make_url(url)
    except ArgumentError:
        scheme = url.partition("://")[0][:40]  # the rest may hold a password
        raise StoreUnavailable(f"invalid database URL (scheme {scheme!r})") from None
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        path = _sqlite_path(url)
        if path is not None:
            _prepare_sqlite_file(path)
        # Every manager call ends in commit or rollback, so the pool's rollback-on-return
        # would be a wasted round trip per operation.
        engine = create_engine(
            url,
            connect_args={"timeout": busy_timeout(), "check_same_thread": False},
            pool_reset_on_return=None,
            **pool,
        )
        event.listen(engine, "connect", _on_sqlite_connect)
        if path is not None:
            _no_checkpoints_while_full(engine, path)
        return engine
    kwargs: dict[str, Any] = {}
    if pool_size:  # a server's connections are shared by the team: keep few while idle
        keep = min(IDLE_CONNECTIONS, pool_size)
        kwargs.update(pool_size=keep, max_overflow=2 * pool_size - keep)
    if backend == "postgresql":
        kwargs["connect_args"] = SERVER_CONNECT_ARGS
    try:
        engine = create_engine(url, **kwargs)
    except (ArgumentError, ImportError, ValueError) as exc:
        raise StoreUnavailable(f"cannot use database URL {describe_url(url)}: {exc}") from None
    _ping_idle_connections(engine)
    return engine


#: A pooled server connection idle for longer than this is pinged before it is used, so a
#: server restart or a dropped network path is found by the ping (and the pool reconnects)
#: rather than by the query. A connection used more recently is trusted: SQLAlchemy's
#: ``pool_pre_ping`` pings on every checkout, a round trip per transaction, which was about
#: nine per session a worker runs. A connection that broke within the window fails its
#: statement; the pool then drops it (and every connection older than the failure) and the
#: callers retry as they do for any outage.
PING_IDLE_AFTER = 1.0


def _ping_idle_connections(engine: Engine) -> None:
    # InvalidatePoolError (a DisconnectionError): the pool also drops every connection
    # older than this one, as pool_pre_ping does, instead of each failing its own ping.
    from sqlalchemy.exc import InvalidatePoolError

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["vc_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("vc_idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_IDLE_AFTER:
            return  # new, or in use a moment ago
        try:
            alive = engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:
            raise InvalidatePoolError(f"connection lost while idle: {exc}") from exc
        if not alive:
            raise InvalidatePoolError("connection lost while idle")


def _no_checkpoints_while_full(engine: Engine, path: Path) -> None:
    """Once a write of this process found the disk full, its connections stop
    checkpointing until there is room again (see :mod:`store.space`): each connection is
    set as it is checked out, which costs a set lookup when nothing changed."""
    from store.space import StoreSpace, is_disk_full

    space = StoreSpace(path)

    @event.listens_for(engine, "handle_error")
    def _full(context: Any) -> None:
        if is_disk_full(context.original_exception):
            space.mark_full()

    @event.listens_for(engine, "checkout")
    def _checkpoints(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        off = space.marked_full
        if record.info.get("vc_no_checkpoints", False) != off:
            dbapi_connection.execute(f"PRAGMA wal_autocheckpoint={0 if off else 1000}")
            record.info["vc_no_checkpoints"] = off


def _on_sqlite_connect(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout() * 1000)}")
    finally:
        cursor.close()


def _why_not_writable(path: Path) -> str:
    """Why the store file cannot be written: its file system mounted read-only (where even
    root cannot write), or its permissions."""
    try:
        read_only = bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "read-only file system" if read_only else "permission denied"


def unavailable_message(exc: BaseException, url: str) -> str:
    """One line for a database error that stops us from using the store at all."""
    text = str(getattr(exc, "orig", exc) or exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    path = _sqlite_path(url) if url.startswith("sqlite") else None
    lowered = first.lower()
    if path is not None and ("readonly" in lowered or "read-only" in lowered):
        return f"cannot write {path}: {_why_not_writable(path)}"
    from store.space import free_bytes, is_disk_full

    free = free_bytes(path.parent) if path is not None else None
    if is_disk_full(exc) or (
        # SQLite cannot even read a WAL store whose -shm file it cannot create
        ("disk i/o error" in lowered or "unable to open" in lowered)
        and free is not None
        and free < 64 * 1024
    ):
        where = path if path is not None else describe_url(url)
        return f"cannot use {where}: the disk is full"
    if "database is locked" in lowered:
        return (
            f"database {describe_url(url)} is locked: another process held it longer than "
            f"the busy timeout ({busy_timeout():g} s, VC_BUSY_TIMEOUT)"
        )
    if path is not None and "unable to open" in lowered:
        return f"cannot open {path}: {first}"
    return f"cannot use database {describe_url(url)}: {first}"


def get_session_factory(
    engine: Engine, *, stale_after: float | None = None
) -> sessionmaker[Session]:
    """Sessions that keep loaded objects usable after commit (managers commit per
    operation). ``stale_after``: seconds after which a runner's heartbeat is stale, for
    the managers and queries given these sessions (default
    :data:`store.liveness.STALE_AFTER`)."""
    from store.liveness import STALE_AFTER, STALE_AFTER_KEY

    limit = STALE_AFTER if stale_after is None else float(stale_after)
    return sessionmaker(
        bind=engine, class_=Session, expire_on_commit=False, info={STALE_AFTER_KEY: limit}
    )
