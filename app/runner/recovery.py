"""Taking a session over after a crash: whatever is left of the attempts a dead runner
started is removed before anything runs again (docs/ARCHITECTURE.md, "The runner").

:class:`Recovery` is a base of :class:`app.runner.runner.Runner` (whose ``__init__`` sets
what is declared here and in :class:`~app.runner.store_link.StoreLink`).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

from app.runner.attempt import kill_timeout_of
from app.runner.groups import at_once
from app.runner.orphans import enforce_all
from app.runner.process import find_session_processes, kill_groups
from app.runner.store_link import StoreLink
from store.errors import InvalidTransition
from store.graph import cancellation, fail_fast, first_failed
from store.queries import SessionView, StageView
from store.status import StageStatus


class Recovery(StoreLink):
    """Removes the leftovers of interrupted attempts (see the module doc)."""

    _started_before: bool
    _attempt_floor: dict[str, int]
    _tries: dict[str, int]

    def _cleanup_leftovers(self, view: SessionView) -> bool:
        """Taking over after a crash: whatever is left of an interrupted stage's process
        group is removed (only if its recorded start time still matches, so a reused pid is
        never signalled), and the stage goes back to PENDING to run again as a new attempt.
        A manual gate keeps its state: the gate logic knows whether it was passed. True if a
        stage was reset (the caller's view is then stale).

        In a ``fail_fast`` session with a stage already FAILED, the runner before was
        cancelling the others when it died: an interrupted stage, or a gate waiting, is
        recorded cancelled instead, as that runner would have (it never runs again in this
        run)."""
        changed = False
        removed = self._remove_recorded(view)
        first = first_failed(view.stages) if fail_fast(view.definition or {}) else None
        cancelled = None if first is None else cancellation(first.name)
        for stage in view.stages:
            if stage.status == StageStatus.COMPLETED:
                continue
            if stage.stage_type == "manual":
                if cancelled is not None and stage.status == StageStatus.PAUSED:
                    changed = True  # a gate waiting is cancelled like a running branch
                    try:
                        self.stages.move_stage(stage.id, StageStatus.FAILED, error=cancelled)
                    except InvalidTransition:
                        continue  # approved meanwhile: passed, not cancelled
                    self._say(f"stage {cancelled}", "WARNING", stage.name)
                continue
            interrupted = stage.status in (StageStatus.ACTIVE, StageStatus.PAUSED)
            if stage.pid and stage.host == self.host:
                group, jobs = removed.get(stage.id, (None, []))
                what = " and its ".join(
                    ([f"process group {stage.pid}"] if group else [])
                    + ([f"jobs' groups {', '.join(map(str, jobs))}"] if jobs else [])
                )
                if what:
                    self._say(
                        f"removed the leftover {what} of attempt {stage.attempt}",
                        "WARNING",
                        stage.name,
                    )
            elif stage.pid and stage.host and interrupted:
                self._say(
                    f"attempt {stage.attempt} ran on host {stage.host} (pid {stage.pid}); "
                    "its recorded pid is not signalled from here",
                    "WARNING",
                    stage.name,
                )
            if interrupted and cancelled is not None:
                # Its cancellation was under way when the runner before died: it stays
                # cancelled, and the session fails with the first failure (run()).
                changed = True
                self.stages.move_stage(stage.id, StageStatus.FAILED, error=cancelled)
                self._say(
                    f"attempt {stage.attempt} was interrupted; stage {cancelled}",
                    "WARNING",
                    stage.name,
                )
            elif interrupted:
                changed = True
                self.stages.move_stage(stage.id, StageStatus.PENDING)
                self._say(
                    f"attempt {stage.attempt} was interrupted; the stage runs again",
                    "WARNING",
                    stage.name,
                )
        if self._started_before:
            self._remove_unrecorded(view)
        return changed

    def _remove_recorded(self, view: SessionView) -> dict[int, tuple[bool | None, list[int]]]:
        """What is left of each task stage's recorded group on this host, with the jobs of
        a stage whose process still runs (:func:`jobs_of`), removed all at once as an abort
        without a runner removes them (``orphans.enforce_all``): per stage id, whether
        its group was signalled and the jobs' groups that were. Also for PENDING/FAILED
        stages: an aborted attempt whose runner died before it could kill it is still
        recorded (retry keeps the pid) and would run beside the new attempt. A process
        that finished fails the start-time check: no signal."""
        local = [
            s
            for s in view.stages
            if s.status != StageStatus.COMPLETED
            and s.stage_type != "manual"
            and s.pid
            and s.host == self.host
        ]
        return dict(zip((s.id for s in local), enforce_all(local, "abort"), strict=True))

    def _count_retries_used(self) -> None:
        """Taking over a session that ran before: the retries its stages used under the
        runners before this one count against their ``retries`` (store events
        ``stage.retry``), so a crash, a hand-back or a resume never renews the budget;
        only the session's ``retry`` does."""
        for name, used in self.stages.retries_used(self.session_id).items():
            self._tries[name] = max(self._tries.get(name, 0), used)

    def _remove_unrecorded(self, view: SessionView) -> None:
        """No stage may start while a process of an earlier attempt of it lives on this
        host. The recorded pid (above) does not cover everything: a runner killed between
        spawning a stage and recording its attempt leaves the stage PENDING with nothing
        recorded while its process runs on, and a stage's processes may leave its group.
        So every process of this user that carries the session's ``VC_SESSION_ID`` and
        the ``VC_STAGE`` of a stage that is not COMPLETED is removed with its group, and
        the next attempt is numbered above the one it carried.

        Why a search at takeover rather than recording the attempt before the spawn: the
        record-first order still leaves the window between the spawn and the pid write
        (so the search would be needed anyway), and it would cost every stage the write
        that now overlaps with its process' start-up. The search costs one pass over
        /proc, once per takeover, nothing per stage. A COMPLETED stage's processes are
        left alone (a stage may leave a service running on purpose). Processes on other
        hosts cannot be searched from here: an attempt a runner on another host started
        and never recorded is not found.
        """
        candidates = {
            s.name: s
            for s in view.stages
            if s.stage_type != "manual" and s.status != StageStatus.COMPLETED
        }
        for _ in range(3):  # again after a removal: a process caught mid-exec is not seen
            found = [p for p in find_session_processes(self.session_id) if p.stage in candidates]
            if not found:
                return
            self._remove_found(found, candidates)

    def _remove_found(self, found: list[Any], candidates: dict[str, StageView]) -> None:
        by_stage: dict[str, list[Any]] = {}
        for proc in found:
            by_stage.setdefault(proc.stage, []).append(proc)
        removals = at_once(
            [
                partial(kill_groups, procs, kill_timeout_of(candidates[name].config))
                for name, procs in by_stage.items()
            ]
        )
        for (name, procs), groups in zip(by_stage.items(), removals, strict=True):
            stage = candidates[name]
            attempts = sorted({p.attempt for p in procs if p.attempt is not None})
            if attempts:
                floor = self._attempt_floor.get(name, 0)
                self._attempt_floor[name] = max(attempts[-1], stage.attempt, floor)
            if not groups:
                continue  # gone by themselves before the signal
            unrecorded = [a for a in attempts if a > stage.attempt]
            which = ", ".join(str(a) for a in attempts) or "?"
            note = " (the attempt had not been recorded)" if unrecorded else ""
            self._say(
                f"removed the leftover process group {', '.join(map(str, groups))} of "
                f"attempt {which}{note}, found on this host by its VC_SESSION_ID",
                "WARNING",
                name,
            )


def failure_reason(stage: str, error: str) -> str:
    """The session's reason when ``stage`` failed for good with ``error``."""
    return "timeout" if error == "timeout" else f"stage {stage} failed: {error}"


def failure_before(stages: Sequence[StageView]) -> str | None:
    """The session's failure as a runner before this one left it (``fail_fast: false``: a
    stage FAILED, the others went on; ``fail_fast``: it died while cancelling the others):
    the reason a run fails the session with."""
    first = first_failed(stages)
    return None if first is None else failure_reason(first.name, first.error or "failed")
