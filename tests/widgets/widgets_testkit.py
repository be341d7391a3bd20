"""Shared helpers for the widget tests: row factories and text extraction from renders.

(A plain module, not a conftest: the suite's conftest belongs to the whole tests tree.)
"""

from __future__ import annotations

from textual.app import App
from textual.geometry import Region
from textual.widget import Widget

from widgets.data import STATUSES, LogLine, SessionRow, StageRow

NOW = 1_700_000_000.0


def clock() -> float:
    """A frozen 'now' so durations in renders are deterministic."""
    return NOW


def session_row(n: int, **changes: object) -> SessionRow:
    """Session number ``n``; the status cycles through the five states."""
    status = STATUSES[n % 5]
    values: dict[str, object] = {
        "id": f"{n:08d}-0000-4000-8000-000000000000" if n >= 0 else f"new{-n:05d}-0000",
        "name": f"session {n}",
        "workflow_id": "nightly-etl",
        "status": status,
        "reason": None,
        "orphaned": False,
        "progress": float((n * 7) % 101),
        "current_stage": "extract",
        "host": "host-a",
        "created_at": NOW - 7200,
        "updated_at": NOW - 5,
        "finished_at": NOW - 60 if status in ("COMPLETED", "FAILED") else None,
        "started_at": NOW - 125,
    }
    values.update(changes)
    return SessionRow(**values)  # type: ignore[arg-type]


def stage_row(name: str, **changes: object) -> StageRow:
    values: dict[str, object] = {
        "name": name,
        "status": "PENDING",
        "progress": 0.0,
        "attempt": 1,
        "exit_code": None,
        "started_at": None,
        "finished_at": None,
        "error": None,
    }
    values.update(changes)
    return StageRow(**values)  # type: ignore[arg-type]


def log_line(i: int, text: str | None = None, level: str = "INFO", stage: str | None = "build"):
    return LogLine(id=i, at=NOW + i, level=level, stage=stage, text=text or f"line {i}")


def widget_lines(widget: Widget) -> list[str]:
    """The widget's content as rendered now, one string per screen line."""
    width, height = widget.size
    return [strip.text for strip in widget.render_lines(Region(0, 0, width, height))]


def screen_lines(app: App) -> list[str]:
    """The whole active screen as rendered now."""
    return [strip.text for strip in app.screen._compositor.render_strips()]
