"""What a pause, an abort or a delete does to a session whose runner is gone
(docs/ARCHITECTURE.md §2, "No runner left").

The front ends write the desired state and the session's runner enforces it. A runner
killed with SIGKILL (or lost with its machine's power) leaves its stages' processes
running, and nobody to enforce anything: a pause would say PAUSED while the stage runs on,
an abort FAILED while it runs on, and a delete would forget the only record of it. So the
command that made the change enforces it itself, on this host, with the takeover's safety
rules (``app.runner.groups``): a recorded group is signalled only while its leader still
has the recorded start time, and the processes the runner never recorded are found by
the ``VC_SESSION_ID`` their environment carries. A pause stops them (SIGSTOP: the session
holds no CPU; the runner that ``resume`` starts removes them and runs the stage again as a
new attempt); an abort and a delete remove them (SIGTERM, SIGKILL after the stage's
``kill_timeout``). A stage that ran on another host cannot be signalled from here: the
command says so.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from store.views import SessionView, StageView


#: The state a pause or an abort leaves a session in.
ENDS_IN = {"pause": "PAUSED", "abort": "FAILED"}


def enforce_again(db: Any, session_id: str, op: str, current: str) -> list[str]:
    """``op`` was refused because the session is already where it leads (``current``):
    a pause or an abort that committed while its runner lived, but the runner died before
    it stopped or removed the stage's processes. Asking again enforces it here, as if the
    runner had been gone from the start; [] when there was nothing left to do (the refusal
    stands, and nothing is changed)."""
    if ENDS_IN.get(op) != current:
        return []
    from store import FlowSessionManager

    full_id = FlowSessionManager(db).resolve_session_id(session_id)
    return enforce_if_no_runner(db, full_id, op, only_if_found=True)


def enforce_if_no_runner(
    db: Any, session_id: str, op: str, *, only_if_found: bool = False
) -> list[str]:
    """:func:`enforce_without_runner` on the session as ``db`` (a store session of the
    managers) reads it now, when a runner held it and none is alive. ``only_if_found``:
    an abort forgets the dead runner only when there was something to do."""
    import time

    from store.liveness import runner_lost, stale_after_of
    from store.queries import get_session_view

    view = get_session_view(db, session_id)
    db.commit()
    if view is None or not runner_lost(
        view.runner_host, view.runner_pid, view.heartbeat_at, time.time(), stale_after_of(db)
    ):
        return []
    done: list[str] = []
    lines = enforce_without_runner(view, op, done)
    if only_if_found and not done:
        return []
    from store.identity import local_host, pid_alive

    runner = view.runner_pid
    if (
        op == "abort"
        and runner is not None
        and view.runner_host == local_host()
        and not pid_alive(runner)
    ):
        # The ended session forgets its dead runner, as a live one forgets itself on its
        # way out: shown "runner: none", not a pid whose heartbeat only grows older. Only
        # a runner of this host is known dead (its pid): one elsewhere may only have lost
        # the store for a while, and on its return reads the abort and stops as aborted.
        from store import FlowSessionManager

        FlowSessionManager(db).release_runner(
            view.id, runner_host=view.runner_host, runner_pid=runner
        )
    return lines


def enforce_without_runner(view: SessionView, op: str, done: list[str] | None = None) -> list[str]:
    """Do to the leftover processes of ``view``'s unfinished stages what the runner would
    have done for ``op`` (``pause``: stop them; ``abort`` or ``delete``: remove them).
    Returns one line per thing done or not doable, for the user; ``done`` gets the lines
    of what was done (a pause of a group stopped already does nothing)."""
    from store.identity import local_host

    here = local_host()
    stages = [s for s in view.stages if s.stage_type != "manual" and s.status != "COMPLETED"]
    lines: list[str] = []
    elsewhere: dict[str, str] = {}
    told: set[tuple[str, int]] = set()  # (stage, group) whose removal was said
    local: list[StageView] = []
    for stage in stages:
        if not stage.pid:
            continue
        if stage.host and stage.host != here:
            if stage.status in ("ACTIVE", "PAUSED") or stage.error == "aborted":
                elsewhere[stage.name] = (
                    f"stage {stage.name} ran on host {stage.host} (pid {stage.pid}), where no "
                    "runner is left: it cannot be signalled from here"
                )
            continue
        local.append(stage)
    verb = "stopped" if op == "pause" else "removed"
    for stage, (enforced, job_groups) in zip(local, enforce_all(local, op), strict=True):
        said = [stage.pid or 0] if enforced else []
        for group in said + job_groups:
            line = f"{verb} the leftover process group {group} of stage {stage.name}"
            lines.append(_recorded_in_log(view.id, stage.name, op, line))
            told.add((stage.name, group))
            if done is not None:
                done.append(line)
    found = dict(_enforce_unrecorded(view.id, stages, op, told))
    if done is not None:
        done.extend(found.values())
    # A stage recorded on another host name whose processes were found here after all (one
    # machine known by two names) is told by what was done to them, not as out of reach.
    lines.extend(line for name, line in elsewhere.items() if name not in found)
    for name, line in found.items():
        lines.append(_recorded_in_log(view.id, name, op, line))
    return lines


def _recorded_in_log(session_id: str, stage: str, op: str, line: str) -> str:
    """The session's log keeps what was done to its processes, as it keeps a takeover's
    removals; a delete's are only said (the log goes with the session)."""
    if op != "delete":
        from loguru import logger

        from store.records import STAGE_CATEGORY

        text = f"{op} without a runner: {line}"
        logger.bind(category=STAGE_CATEGORY, session_id=session_id, stage=stage).warning(text)
    return line


def _enforce_recorded(stage: StageView, op: str) -> bool:
    from app.runner.attempt import kill_timeout_of
    from app.runner.groups import group_stopped, kill_leftover_group, stop_leftover_group

    if op == "pause":
        if group_stopped(stage.pid or 0):
            return False  # stopped already: nothing to do, nothing to say
        return stop_leftover_group(stage.pid or 0, stage.pid_start)
    return kill_leftover_group(stage.pid or 0, stage.pid_start, kill_timeout_of(stage.config))


def enforce_all(stages: Sequence[StageView], op: str) -> list[tuple[bool, list[int]]]:
    """``op`` on these stages' recorded groups and their jobs, all at once: per stage,
    whether its group was signalled and the jobs' groups that were."""
    from app.runner.groups import at_once

    jobs = jobs_of(stages)  # before their stages' groups go: found by the session they lead
    return at_once([partial(enforce_with_jobs, s, op, jobs) for s in stages])


def enforce_with_jobs(stage: StageView, op: str, jobs: Sequence[Any]) -> tuple[bool, list[int]]:
    """``op`` on the stage's recorded group and, at the same time, on its ``jobs``
    (:func:`jobs_of`): whether the group was signalled, and the jobs' groups that were."""
    import signal

    from app.runner.attempt import kill_timeout_of
    from app.runner.groups import at_once, group_stopped, kill_groups, killpg

    own = [j for j in jobs if j.stage == stage.name]
    if op == "pause":
        enforced = _enforce_recorded(stage, op)
        running = {j.pgid for j in own if not group_stopped(j.pgid)}
        return enforced, sorted(g for g in running if killpg(g, signal.SIGSTOP))
    if not own:
        return _enforce_recorded(stage, op), []

    removed: list[int] = []

    def remove_jobs() -> bool:
        removed.extend(kill_groups(own, kill_timeout_of(stage.config)))
        return bool(removed)

    calls: list[Callable[[], bool]] = [partial(_enforce_recorded, stage, op), remove_jobs]
    return at_once(calls)[0], removed


def jobs_of(stages: Sequence[StageView]) -> list[Any]:
    """The processes in the kernel sessions these stages' recorded processes lead, outside
    their groups (a job-control shell's jobs, found even with a cleared environment): only
    of a stage whose process still runs with its recorded start time."""
    from app.runner.groups import process_start_time, session_members

    leaders = {
        s.pid: (s.name, s.attempt)
        for s in stages
        if s.pid and s.pid_start is not None and process_start_time(s.pid) == s.pid_start
    }
    return session_members(leaders)


def _enforce_unrecorded(
    session_id: str, stages: Sequence[StageView], op: str, told: set[tuple[str, int]]
) -> list[tuple[str, str]]:
    """The processes of the stages that carry the session's id (the ones never recorded,
    and those that left their stage's group): (stage, what was done) per stage, all stages
    at once. A group in ``told`` is not told again (its line was said)."""
    import signal

    from app.runner.attempt import kill_timeout_of
    from app.runner.groups import (
        at_once,
        find_session_processes,
        group_stopped,
        kill_groups,
        killpg,
    )

    by_name = {s.name: s for s in stages}
    found = [p for p in find_session_processes(session_id) if p.stage in by_name]
    names = sorted({p.stage for p in found})

    def enforce(name: str) -> tuple[list[int], str]:
        procs = [p for p in found if p.stage == name]
        if op == "pause":
            running = {p.pgid for p in procs if not group_stopped(p.pgid)}
            return sorted(g for g in running if killpg(g, signal.SIGSTOP)), "stopped"
        return kill_groups(procs, kill_timeout_of(by_name[name].config)), "removed"

    lines = []
    for name, (groups, verb) in zip(
        names, at_once([partial(enforce, n) for n in names]), strict=True
    ):
        groups = [g for g in groups if (name, g) not in told]
        if groups:
            which = ", ".join(map(str, groups))
            lines.append((name, f"{verb} the leftover process group {which} of stage {name}"))
    return lines


__all__ = ["enforce_all", "enforce_if_no_runner", "enforce_without_runner", "jobs_of"]
