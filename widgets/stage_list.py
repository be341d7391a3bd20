"""The selected session's stages, one row each with a progress bar.

A session has a handful of stages (its workflow's definition), so unlike the sessions table this
is an ordinary container of small widgets: one ``StageRowView`` per stage with a Textual
``ProgressBar``. The app calls ``set_stages`` on every refresh (several times a second while a
session runs); when the stage names are unchanged the rows are updated in place, field by field,
so nothing is remounted and nothing flickers. Only another session (other names) rebuilds.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import ProgressBar, Static

from widgets.data import PAUSED, StageRow
from widgets.formatting import clamp_progress, clean, human_duration, paused_duration
from widgets.styles import status_style


def stage_duration(stage: StageRow, now: float) -> float | None:
    """Seconds the stage has run: to its end if finished, to ``now`` if running, else None."""
    if stage.started_at is None:
        return None
    end = stage.finished_at if stage.finished_at is not None else now
    return max(0.0, end - stage.started_at)


def stage_time(stage: StageRow, now: float) -> str:
    """The TIME cell: :func:`stage_duration`, except for a PAUSED stage (stopped, or a gate
    waiting), whose clock stops: how long it has been paused, marked ``‖`` (``‖3m``)."""
    if stage.status == PAUSED and stage.finished_at is None and stage.updated_at is not None:
        return paused_duration(now - stage.updated_at)
    return human_duration(stage_duration(stage, now))


def _ticking(stage: StageRow) -> bool:
    """Whether the stage's TIME moves with the clock (running, or paused)."""
    return stage.finished_at is None and (stage.started_at is not None or stage.status == PAUSED)


def _cell(text: str, classes: str) -> Static:
    return Static(Text(text), markup=False, classes=classes)


class StageRowView(Vertical):
    """One stage: name, status, progress bar, attempt, duration, and its error if any."""

    def __init__(self, stage: StageRow, clock: Callable[[], float]) -> None:
        super().__init__(classes="stage-row")
        self._stage = stage
        self._clock = clock
        self._shown: StageRow | None = None
        self._time_shown: str | None = None
        self._name_cell = _cell("", "stage-name")
        self._status = _cell("", "stage-status")
        self._bar = ProgressBar(total=100, show_eta=False, classes="stage-bar")
        self._attempt = _cell("", "stage-attempt")
        self._time = _cell("", "stage-time")
        self._error = _cell("", "stage-error")

    @property
    def stage(self) -> StageRow:
        """The stage shown."""
        return self._stage

    def compose(self) -> ComposeResult:
        with Horizontal(classes="stage-line"):
            yield self._name_cell
            yield self._status
            yield self._bar
            yield self._attempt
            yield self._time
        yield self._error

    def on_mount(self) -> None:
        self._apply()

    def update_stage(self, stage: StageRow) -> None:
        """Show new values for the same stage; unchanged fields are not touched."""
        self._stage = stage
        if self.is_mounted:
            self._apply()

    def tick(self) -> None:
        """Refresh the running duration (repainted only when its text moved on)."""
        if self.is_mounted:
            self._show_time()

    def _show_time(self) -> None:
        text = stage_time(self._stage, self._clock())
        if text != self._time_shown:
            self._time_shown = text
            self._time.update(Text(text), layout=False)

    def _apply(self) -> None:
        new, old = self._stage, self._shown
        if old is None or new.name != old.name:
            self._name_cell.update(Text(clean(new.name), no_wrap=True, overflow="ellipsis"))
        if old is None or (new.status, new.exit_code) != (old.status, old.exit_code):
            label = Text(clean(new.status), style=status_style(new.status), no_wrap=True)
            if new.status == "FAILED" and new.exit_code is not None:
                label.append(f" ({new.exit_code})")
            self._status.update(label, layout=False)
            for cls in list(self.classes):
                if cls.startswith("status-"):
                    self.remove_class(cls)
            self.add_class(f"status-{new.status.lower()}")
        if old is None or new.progress != old.progress:
            self._bar.update(progress=clamp_progress(new.progress))
        if old is None or new.attempt != old.attempt:
            self._attempt.update(Text(str(new.attempt)), layout=False)
        self._show_time()
        if old is None or new.error != old.error:
            if new.error:
                self._error.update(
                    Text(
                        "↳ " + clean(new.error),
                        style=status_style("FAILED"),
                        no_wrap=True,
                        overflow="ellipsis",
                    )
                )
            self._error.display = bool(new.error)
        self._shown = new


class StageList(VerticalScroll):
    """Stages of the selected session; feed it with ``set_stages``."""

    DEFAULT_CSS = """
    StageList {
        height: 1fr;
        & .stage-line { height: 1; }
        & .stage-row { height: auto; }
        & .stage-name { width: 1fr; min-width: 6; }
        & .stage-status { width: 14; padding: 0 1; }
        & .stage-bar { width: 22; }
        & .stage-bar Bar { width: 1fr; }
        & .stage-attempt { width: 5; text-align: right; }
        & .stage-time { width: 6; text-align: right; }
        & .stage-error { height: 1; padding-left: 2; display: none; }
        & .stage-header { height: 1; text-style: bold; }
        & .stage-empty { width: 1fr; content-align: center middle; height: 3; }
    }
    """

    def __init__(
        self,
        *,
        empty_text: str | Text = "No session selected.",
        clock: Callable[[], float] = time.time,
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        """Create an empty list.

        Args:
            empty_text: Shown when there are no stages (rendered literally).
            clock: Source of "now" for running durations (injectable for tests).
        """
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._clock = clock
        self._stages: tuple[StageRow, ...] = ()
        self._views: list[StageRowView] = []
        self._empty = Static(
            Text(empty_text) if isinstance(empty_text, str) else empty_text,
            markup=False,
            classes="stage-empty",
        )
        self._header = Horizontal(
            _cell("STAGE", "stage-name"),
            _cell("STATUS", "stage-status"),
            _cell("PROGRESS", "stage-bar"),
            _cell("TRY", "stage-attempt"),
            _cell("TIME", "stage-time"),
            classes="stage-line stage-header",
        )
        self._header.display = False

    @property
    def stages(self) -> tuple[StageRow, ...]:
        """The stages shown, in order."""
        return self._stages

    @property
    def row_views(self) -> tuple[StageRowView, ...]:
        """The row widgets, in order (stable across in-place updates)."""
        return tuple(self._views)

    def compose(self) -> ComposeResult:
        yield self._header
        yield self._empty
        yield from self._views  # stages given before the list was mounted

    def on_mount(self) -> None:
        self.set_interval(1.0, self._tick)

    def set_stages(self, stages: Sequence[StageRow]) -> None:
        """Show ``stages``; same names in the same order update the rows in place."""
        stages = tuple(stages)
        same_names = [s.name for s in stages] == [s.name for s in self._stages]
        self._stages = stages
        if same_names and len(self._views) == len(stages):
            for view, stage in zip(self._views, stages, strict=True):
                if view.stage != stage:
                    view.update_stage(stage)
            return
        old_views = self._views
        self._views = [StageRowView(stage, self._clock) for stage in stages]
        if not self.is_mounted:
            self._empty.display = not stages
            self._header.display = bool(stages)
            return
        with self.app.batch_update():
            for view in old_views:
                view.remove()
            if self._views:
                self.mount_all(self._views)
            self._empty.display = not stages
            self._header.display = bool(stages)

    def _tick(self) -> None:
        for view in self._views:
            if _ticking(view.stage):
                view.tick()


__all__ = ["StageList", "StageRowView", "stage_duration", "stage_time"]
