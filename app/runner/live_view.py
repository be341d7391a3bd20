"""What the foreground display (``vc flow run`` on a terminal) reads of a runner: the
running instances, their progress and last lines. Reads of the runner's own state only,
from the display's thread; never a store call.

:class:`LiveView` is a base of :class:`app.runner.runner.Runner`, whose ``__init__`` sets
what is declared here.
"""

from __future__ import annotations

from app.runner.attempt import RunningAttempt
from app.runner.schedule import Schedule


class LiveView:
    """The running instances as the display shows them (see the module doc)."""

    _schedule: Schedule
    _running: dict[str, RunningAttempt]

    @property
    def running_stages(self) -> list[str]:
        """The instances running now, in the workflow's order (a look at the running ones
        only: the display asks at every change, and a session may have thousands)."""
        position = self._schedule.position
        return sorted(self._running, key=lambda name: position.get(name, len(position)))

    def running_view(self) -> list[tuple[str, float | None, str | None]]:
        """Per running instance: (name, progress, last output line)."""
        return [
            (name, a.proc.progress, a.output.last_line)
            for name in self.running_stages
            if (a := self._running.get(name)) is not None
        ]

    def _first_running(self) -> RunningAttempt | None:
        running = self.running_stages
        return self._running.get(running[0]) if running else None

    @property
    def current_progress(self) -> float | None:
        attempt = self._first_running()
        return attempt.proc.progress if attempt is not None else None

    @property
    def last_line(self) -> str | None:
        attempt = self._first_running()
        return attempt.output.last_line if attempt is not None else None
