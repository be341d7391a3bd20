"""The store: tables, engine, state machine, managers and queries (the public API).

Imports nothing from ``app`` or ``widgets``. Names are imported on first use (PEP 562), so
`from store.status import SessionStatus` or `from store.text import clean_text` stays cheap
and a CLI command pays only for what it touches. The managers log their operations through
loguru once :func:`store.changes.enable_logging` is called (the application does that);
a library user gets silence by default.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "get_session_factory": "store.engine",
    "init_db": "store.opening",
    "make_engine": "store.engine",
    "resolve_database_url": "store.location",
    "AmbiguousId": "store.errors",
    "ConcurrentModification": "store.errors",
    "InvalidId": "store.errors",
    "InvalidTransition": "store.errors",
    "LeaseLost": "store.errors",
    "ParamError": "store.errors",
    "RunnerConflict": "store.errors",
    "SessionNotFound": "store.errors",
    "StageNotFound": "store.errors",
    "StoreError": "store.errors",
    "StoreUnavailable": "store.errors",
    "WorkflowError": "store.errors",
    "FlowStatusIntegration": "store.integration",
    "FlowSessionManager": "store.managers",
    "Lease": "store.changes",
    "SessionChange": "store.changes",
    "StageInstanceManager": "store.managers",
    "StageManager": "store.managers",
    "compute_progress": "store.views",
    "is_orphaned": "store.liveness",
    "enable_logging": "store.changes",
    "FlowEvent": "store.models",
    "FlowSession": "store.models",
    "LogRecord": "store.models",
    "StageInstance": "store.models",
    "SessionStatus": "store.status",
    "StageStatus": "store.status",
}

# Written out (not computed) so type checkers and readers see the public names; a test keeps it
# equal to the table above.
__all__ = [
    "AmbiguousId",
    "ConcurrentModification",
    "FlowEvent",
    "FlowSession",
    "FlowSessionManager",
    "FlowStatusIntegration",
    "InvalidId",
    "InvalidTransition",
    "Lease",
    "LeaseLost",
    "LogRecord",
    "ParamError",
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
    "enable_logging",
    "get_session_factory",
    "init_db",
    "is_orphaned",
    "make_engine",
    "resolve_database_url",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'store' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:
    from store.changes import Lease, SessionChange, enable_logging
    from store.engine import get_session_factory, make_engine
    from store.errors import (
        AmbiguousId,
        ConcurrentModification,
        InvalidId,
        InvalidTransition,
        LeaseLost,
        ParamError,
        RunnerConflict,
        SessionNotFound,
        StageNotFound,
        StoreError,
        StoreUnavailable,
        WorkflowError,
    )
    from store.integration import FlowStatusIntegration
    from store.liveness import is_orphaned
    from store.location import resolve_database_url
    from store.managers import FlowSessionManager, StageInstanceManager, StageManager
    from store.models import FlowEvent, FlowSession, LogRecord, StageInstance
    from store.opening import init_db
    from store.status import SessionStatus, StageStatus
    from store.views import compute_progress
