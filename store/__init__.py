"""The store: tables, engine, state machine, managers and queries (the public API).

Imports nothing from ``app`` or ``widgets``. Library users get loguru records from the
``store`` modules only after ``logger.enable("store")`` (the application does that).
"""

from loguru import logger as _logger

from store.engine import get_session_factory, init_db, make_engine, resolve_database_url
from store.errors import (
    AmbiguousId,
    ConcurrentModification,
    InvalidId,
    InvalidTransition,
    RunnerConflict,
    SessionNotFound,
    StageNotFound,
    StoreError,
    StoreUnavailable,
    WorkflowError,
)
from store.integration import FlowStatusIntegration
from store.managers import (
    FlowSessionManager,
    SessionChange,
    StageInstanceManager,
    StageManager,
    compute_progress,
    is_orphaned,
)
from store.models import FlowEvent, FlowSession, LogRecord, StageInstance
from store.status import SessionStatus, StageStatus

_logger.disable("store")

__all__ = [
    "AmbiguousId",
    "ConcurrentModification",
    "FlowEvent",
    "FlowSession",
    "FlowSessionManager",
    "FlowStatusIntegration",
    "InvalidId",
    "InvalidTransition",
    "LogRecord",
    "RunnerConflict",
    "SessionChange",
    "SessionNotFound",
    "SessionStatus",
    "StageInstance",
    "StageInstanceManager",
    "StageManager",
    "StageNotFound",
    "StageStatus",
    "StoreError",
    "StoreUnavailable",
    "WorkflowError",
    "compute_progress",
    "get_session_factory",
    "init_db",
    "is_orphaned",
    "make_engine",
    "resolve_database_url",
]
