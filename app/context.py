"""The composition root of vc: settings, the store and the log sinks, opened once per
process and handed as one :class:`Context` to the CLI, the dashboard and the runner.

Free of Typer and Textual: each front end decides how a failure here reaches its user
(the CLI with one line and an exit code, see ``app.cli.common.open_store``; a runner in
its session log).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine
    from sqlalchemy.orm import sessionmaker
    from sqlmodel import Session

    from app.logging import Logging
    from app.settings import Settings
    from store import FlowSessionManager


@dataclass
class Context:
    """What a command, a dashboard or a runner works with."""

    settings: Settings
    engine: Engine
    factory: sessionmaker[Session]
    logging: Logging | None

    def session(self) -> Session:
        return self.factory()

    def sessions(self, db: Session) -> FlowSessionManager:
        """The session manager the commands use: its operations are published through a
        :class:`FlowStatusIntegration` (whose traffic is integration.log's content), and
        their log records are stored with them (``log_in_transaction``)."""
        from store import FlowSessionManager, FlowStatusIntegration

        return FlowSessionManager(
            db, integration=FlowStatusIntegration(db), log_in_transaction=True
        )


@contextmanager
def open_context(
    *,
    writes: bool = True,
    file_logs: bool = False,
    pool_size: int | None = None,
    warn: Callable[[str], None] | None = None,
) -> Iterator[Context]:
    """The store and (for a process that changes something) the log sinks.

    A process that writes checks first that its log directory is usable, before it opens
    (or creates) the database: a refusal then leaves everything as it was. ``file_logs``
    gives a read-only command best-effort file logging (no store mirror, so a read stays
    a read; an unusable log dir is then silently skipped). ``warn`` is told what is unsafe
    about the workspace (open to others); ``pool_size`` sizes the connection pool (see
    ``store.init_db``). Failures propagate as the store's and the system's own errors
    (``app.console.failure`` words them)."""
    from app.settings import Settings

    settings = Settings.from_env()
    if warn is not None:
        from app.settings import workspace_warnings

        for message in workspace_warnings(settings.workspace):
            warn(message)
    log = None
    if writes:
        from app.logging import check_log_dir

        check_log_dir(settings.log_dir)
    from store import get_session_factory, init_db

    engine = init_db(settings.database_url, pool_size=pool_size)
    factory = get_session_factory(engine, stale_after=settings.stale_after)
    try:
        if writes or file_logs:
            from app.logging import check_log_dir, setup_logging

            if writes:
                log = setup_logging(settings.log_dir, factory)
            else:
                try:
                    check_log_dir(settings.log_dir)
                except OSError:
                    pass
                else:
                    log = setup_logging(settings.log_dir, None)
        yield Context(settings, engine, factory, log)
    finally:
        if log is not None:
            log.close()
        engine.dispose()
