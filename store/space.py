"""Room for the SQLite store's state on a full disk.

When the disk of a SQLite store fills up, every write fails, a one-row UPDATE as much as a
batch of ten thousand log rows: a runner could then neither record that its stage ended
nor end its session, and would wait for space for ever. So the store keeps a reserve: a
file of :data:`RESERVE_BYTES` next to the database (``<db>-reserve``), created while there
is room. A runner whose state write fails because the disk is full releases it (deletes
it) and writes again, into the room it made; log rows never do: they give way first (the
log mirror holds them back while the disk is full, and writes a note where they are
missing; a person's change that writes its records itself drops them to a savepoint and
hands them to the mirror, ``store.changes.ManagerBase._rows_stored``). Whoever opens the
store later, or the log mirror once there is room again, creates the reserve anew.

Log writers resume only once :func:`has_room` (:data:`ROOM_AGAIN` free), so that what
they write next cannot at once eat the room the reserve needs. For the same reason, once a
write of this process found the disk full, its connections stop checkpointing the WAL
(:meth:`StoreSpace.mark_full`, applied by the engine): a checkpoint copies every page
committed since the last one into the database file, which then grows, and on a full disk
it took the room just released for the state, page by page, until nothing could be
committed at all. Checkpoints resume once the reserve could be made again.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

#: The reserve: room for the state writes after the disk filled up, about a hundred (a
#: write appends 8-20 KiB to the WAL, which is not checkpointed meanwhile): the running
#: stage's end and its session's, and minutes of heartbeats while the stage runs on.
RESERVE_BYTES = 2 << 20
#: Free space from which writers held back by a full disk write again: the reserve can be
#: created again, and as much room is left beyond it.
ROOM_AGAIN = 2 * RESERVE_BYTES

#: SQLite's primary result code for "database or disk is full".
_SQLITE_FULL = 13
#: PostgreSQL's SQLSTATE ``disk_full`` (the server's disk).
_PG_DISK_FULL = "53100"


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` (an ``OSError``, a driver error or SQLAlchemy's wrapper of one)
    says the disk is full: ENOSPC or EDQUOT, SQLite's SQLITE_FULL, PostgreSQL's
    ``disk_full``."""
    orig = getattr(exc, "orig", None) or exc
    if isinstance(orig, OSError) and orig.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    code = getattr(orig, "sqlite_errorcode", None)
    if isinstance(code, int) and code & 0xFF == _SQLITE_FULL:
        return True
    if getattr(orig, "sqlstate", None) == _PG_DISK_FULL:
        return True
    return "database or disk is full" in str(orig)


def free_bytes(path: Path) -> int | None:
    """Bytes available to us on the file system of ``path`` (None if it cannot tell)."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def has_room(path: Path) -> bool:
    """Whether writers held back by a full disk may write to ``path``'s file system
    again (:data:`ROOM_AGAIN` free, or it cannot tell)."""
    free = free_bytes(path)
    return free is None or free >= ROOM_AGAIN


#: Databases a write of this process found on a full disk, with room not found since.
_FULL: set[Path] = set()


class StoreSpace:
    """The reserve of one SQLite store (see the module doc)."""

    def __init__(self, database: Path) -> None:
        self.database = database
        self.reserve = Path(f"{database}-reserve")

    def mark_full(self) -> None:
        """A write found the disk full: no checkpoints from here until there is room."""
        _FULL.add(self.database)

    @property
    def marked_full(self) -> bool:
        return self.database in _FULL

    @classmethod
    def of(cls, engine: Any) -> StoreSpace | None:
        """The store's space, for a SQLite file store; None for any other store (a
        server's disk is the server's business)."""
        url = engine.url
        if url.get_backend_name() != "sqlite" or url.database in (None, "", ":memory:"):
            return None
        return cls(Path(url.database))

    def has_room(self) -> bool:
        return has_room(self.database.parent)

    def ensure_reserve(self) -> bool:
        """Create the reserve if it is missing and there is room for it and more (never
        on an almost full disk: that would only make it full). True if it exists."""
        if self.reserve.exists():
            if self.marked_full and self.has_room():
                _FULL.discard(self.database)
            return True
        free = free_bytes(self.database.parent)
        if free is not None and free < ROOM_AGAIN:
            return False
        part = Path(f"{self.reserve}.{os.getpid()}")
        try:
            fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                try:
                    os.posix_fallocate(fd, 0, RESERVE_BYTES)
                except OSError as exc:
                    if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                        raise
                    os.write(fd, bytes(RESERVE_BYTES))  # no fallocate here: real blocks
            finally:
                os.close(fd)
            os.replace(part, self.reserve)  # whole or not at all, whoever races us
        except OSError:
            part.unlink(missing_ok=True)
            return False
        _FULL.discard(self.database)
        return True

    def release_reserve(self) -> bool:
        """Delete the reserve, making its room available; True if this call freed it."""
        try:
            self.reserve.unlink()
        except OSError:
            return False
        return True
