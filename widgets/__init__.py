"""Reusable, presentation-only Textual widgets of the dashboard.

Nothing here imports ``store`` or ``app``: widgets are fed the plain dataclasses of
``widgets.data`` and post the messages of ``widgets.messages``. Names are exported lazily, so
``from widgets.data import SessionRow`` (or ``import widgets``) does not import Textual.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "SessionRow": "widgets.data",
    "StageRow": "widgets.data",
    "LogLine": "widgets.data",
    "StatusCounts": "widgets.data",
    "STATUSES": "widgets.data",
    "STATUS_STYLES": "widgets.styles",
    "LEVEL_STYLES": "widgets.styles",
    "SessionTable": "widgets.session_table",
    "StageList": "widgets.stage_list",
    "LogPane": "widgets.log_pane",
    "StatusCountsBar": "widgets.counts",
    "ConfirmScreen": "widgets.confirm",
    "HelpScreen": "widgets.help",
    "SessionSummary": "widgets.summary",
}

__all__ = [
    "LEVEL_STYLES",
    "STATUSES",
    "STATUS_STYLES",
    "ConfirmScreen",
    "HelpScreen",
    "LogLine",
    "LogPane",
    "SessionRow",
    "SessionSummary",
    "SessionTable",
    "StageList",
    "StageRow",
    "StatusCounts",
    "StatusCountsBar",
]

if TYPE_CHECKING:
    from widgets.confirm import ConfirmScreen
    from widgets.counts import StatusCountsBar
    from widgets.data import STATUSES, LogLine, SessionRow, StageRow, StatusCounts
    from widgets.help import HelpScreen
    from widgets.log_pane import LogPane
    from widgets.session_table import SessionTable
    from widgets.stage_list import StageList
    from widgets.styles import LEVEL_STYLES, STATUS_STYLES
    from widgets.summary import SessionSummary


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'widgets' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
