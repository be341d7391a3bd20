"""Typed errors of the store. Each message is one line fit to show a user as is."""

from __future__ import annotations

from typing import Any


class StoreError(Exception):
    """Base of every refusal the store makes; the CLI maps it to exit code 1."""

    exit_code = 1


class SessionNotFound(StoreError):
    pass


class StageNotFound(StoreError):
    pass


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


class ConcurrentModification(StoreError):
    pass


class RunnerConflict(StoreError):
    """A live runner already owns the session."""


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


class StoreUnavailable(StoreError):
    """The database cannot be opened, written or reached."""


def __getattr__(name: str) -> Any:
    """``WorkflowError`` lives with the YAML loader; imported from here on demand so that
    reading the store does not pay for PyYAML."""
    if name == "WorkflowError":
        from store.workflows import WorkflowError

        return WorkflowError
    raise AttributeError(name)


__all__ = [
    "AmbiguousId",
    "ConcurrentModification",
    "InvalidId",
    "InvalidTransition",
    "RunnerConflict",
    "SessionNotFound",
    "StageNotFound",
    "StoreError",
    "StoreUnavailable",
    "transient_errors",
]
