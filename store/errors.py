"""Typed errors of the store. Each message is one line fit to show a user as is."""

from __future__ import annotations

import errno
import os
from typing import Any


class StoreError(Exception):
    """Base of every refusal the store makes; the CLI maps it to exit code 1."""

    exit_code = 1


class SettingError(Exception):
    """A setting of the environment (``VC_STALE_AFTER`` …) that vc cannot use: one line
    naming the variable and what it accepts, exit code 2 (a usage error), raised before
    anything is read or changed."""

    exit_code = 2


class SessionNotFound(StoreError):
    pass


class StageNotFound(StoreError):
    pass


class InvalidStageName(StoreError):
    """A stage named in a form no stage can have (``run 'WF:resize[size'``): a usage
    error, exit code 2."""

    exit_code = 2


class AmbiguousId(StoreError):
    def __init__(self, message: str, candidates: list[str]) -> None:
        super().__init__(message)
        self.candidates = candidates


class InvalidId(StoreError):
    """A malformed id (too short, bad characters): a usage error, exit code 2."""

    exit_code = 2


class InvalidTransition(StoreError):
    def __init__(self, message: str, current: str, allowed: list[str]) -> None:
        super().__init__(message)
        self.current = current
        self.allowed = allowed


class GateRefused(InvalidTransition):
    """``approve`` found no gate to pass (none waits, not the one named, or several and
    none named); ``waiting``: the gates that do wait, in position order."""

    def __init__(self, message: str, current: str, allowed: list[str], waiting: list[str]) -> None:
        super().__init__(message, current, allowed)
        self.waiting = waiting


class ConcurrentModification(StoreError):
    pass


class RunnerConflict(StoreError):
    """A live runner already owns the session."""


class LeaseLost(RunnerConflict):
    """A write of a runner that does not hold the session any more: another runner took
    it over, its claim was released or handed back, or the session was deleted. The store
    refused it in the write itself (store.changes.Lease): nothing changed. ``holder``: the
    (host, pid) that holds the session now, None if no runner does; ``deleted``: the
    session is gone."""

    def __init__(
        self, message: str, *, holder: tuple[str, int] | None = None, deleted: bool = False
    ) -> None:
        super().__init__(message)
        self.holder = holder
        self.deleted = deleted

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_lease_lost, (str(self), self.holder, self.deleted))


def _rebuild_lease_lost(message: str, holder: tuple[str, int] | None, deleted: bool) -> LeaseLost:
    return LeaseLost(message, holder=holder, deleted=deleted)


def transient_errors() -> tuple[type[BaseException], ...]:
    """The errors of a store that is away for now (server restarting, network cut, SQLite
    locked past the busy timeout): worth retrying, never a reason to stop a running stage.
    SQLAlchemy's, plus psycopg's own when it is loaded (COPY talks to the driver directly);
    psycopg is never imported here."""
    import sys

    from sqlalchemy.exc import InterfaceError, OperationalError

    errors: tuple[type[BaseException], ...] = (OperationalError, InterfaceError)
    psycopg = sys.modules.get("psycopg")
    if psycopg is None:
        return errors
    return (*errors, psycopg.OperationalError, psycopg.InterfaceError)


def os_error_message(exc: OSError, path: object = None) -> str:
    """'cannot write PATH: permission denied' and the like, for a file we failed to use."""
    where = exc.filename or path
    what = os.strerror(exc.errno).lower() if exc.errno else str(exc)
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        what = "permission denied" if exc.errno != errno.EROFS else "read-only file system"
    return f"cannot write {where}: {what}" if where is not None else f"cannot write: {what}"


class StoreUnavailable(StoreError):
    """The database cannot be opened, written or reached. ``transient``: the server is
    there but cannot take a connection for now (full, starting up, shutting down:
    :func:`store.opening.server_busy`); a long-lived process (a worker) waits for it
    instead of stopping."""

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WorkflowError(Exception):
    """A workflow definition (or id) that cannot be used, located as precisely as possible.

    ``str(error)`` is the whole user-facing line; ``problem`` is the bare description, for
    callers that place ``path``/``line``/``key`` themselves (a table, JSON output). It lives
    here, with the other errors, so that catching it costs no YAML or model import.
    ``exit_code`` is 1 (a file to fix), or 2 for a parameter value given on the command
    line that the workflow does not accept (:class:`ParamError`).
    """

    exit_code = 1  # the CLI maps errors to exit codes through this attribute

    def __init__(
        self,
        problem: str,
        *,
        path: str | None = None,
        line: int | None = None,
        key: str | None = None,
        exit_code: int | None = None,
    ) -> None:
        self.problem = problem
        self.path = path
        self.line = line
        self.key = key or None
        if exit_code is not None:
            self.exit_code = exit_code
        super().__init__(self._render())

    def _render(self) -> str:
        parts: list[str] = []
        if self.path is not None:
            location = printable(self.path)
            parts.append(f"{location}:{self.line}" if self.line is not None else location)
        elif self.line is not None:
            parts.append(f"line {self.line}")
        if self.key:
            parts.append(printable(self.key))
        parts.append(printable(self.problem))
        return ": ".join(parts)

    def __reduce__(self) -> tuple[Any, ...]:
        # Exceptions pickle as cls(*args); keep the location across processes (workers).
        return (
            _rebuild_workflow_error,
            (type(self), self.problem, self.path, self.line, self.key, self.exit_code),
        )


def _rebuild_workflow_error(
    cls: type[WorkflowError],
    problem: str,
    path: str | None,
    line: int | None,
    key: str | None,
    exit_code: int = 1,
) -> WorkflowError:
    return cls(problem, path=path, line=line, key=key, exit_code=exit_code)


class ParamError(WorkflowError):
    """A parameter value the workflow does not accept (unknown, missing, wrong type, out of
    range, not a choice): a usage error, exit code 2. The message names the parameter and
    what it accepts."""

    exit_code = 2


def printable(text: str) -> str:
    """Escape what a terminal would interpret (newlines, ESC, bidi controls …) the way repr()
    does, without quotes, so an error stays one line and shows the text literally."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


__all__ = [
    "AmbiguousId",
    "ConcurrentModification",
    "GateRefused",
    "InvalidId",
    "InvalidTransition",
    "LeaseLost",
    "ParamError",
    "RunnerConflict",
    "SessionNotFound",
    "SettingError",
    "StageNotFound",
    "StoreError",
    "StoreUnavailable",
    "WorkflowError",
    "os_error_message",
    "transient_errors",
]
