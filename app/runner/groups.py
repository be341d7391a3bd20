"""Process groups seen from outside: their start times, the leftovers of a crashed runner,
and removing them. Apart from :mod:`app.runner.process` (which runs a stage) because a
takeover uses these without running anything; the safety rules they keep are that
module's (its doc).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

_STATE_ZOMBIE = ("Z", "X", "x")
_T = TypeVar("_T")
POLL_SLICE = 0.02  # seconds between checks while waiting for a group to disappear

# --------------------------------------------------------------------------------------------
# /proc helpers


def _read_stat(pid: int) -> list[str] | None:
    """Fields 3.. of /proc/PID/stat (index 0 is the state), or None if there is no such process.

    The comm field (2) may hold spaces and parentheses, so the line is split at the *last* ')'.
    """
    if pid <= 0:
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read()
    except OSError:  # FileNotFoundError, or ESRCH when the process died during the read
        return None
    end = raw.rfind(b")")
    if end < 0:
        return None
    fields = raw[end + 1 :].split()
    if len(fields) < 20:
        return None
    return [f.decode("ascii", "replace") for f in fields]


def process_state(pid: int) -> str | None:
    """The state letter of /proc/PID/stat (R, S, T, Z …), None when there is no such
    process."""
    fields = _read_stat(pid)
    return None if fields is None else fields[0]


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (/proc/PID/stat field 22), or None.

    Together with the pid it identifies a process across pid reuse: a recorded (pid, start
    time) pair that no longer matches means the pid now belongs to somebody else.
    """
    fields = _read_stat(pid)
    if fields is None:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def group_has_live_members(pgid: int) -> bool:
    """True while process group ``pgid`` has a member that is not a zombie.

    ``killpg(pgid, 0)`` alone also succeeds for a group of zombies (a leader whose parent has
    not reaped it yet, or children of a PID 1 that never reaps), which would make every kill
    wait its full timeout; so a positive answer is confirmed from /proc.
    """
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, but some member is not ours to signal: look closer
    leader = _read_stat(pgid)
    if leader is not None and leader[2] == str(pgid) and leader[0] not in _STATE_ZOMBIE:
        return True
    wanted = str(pgid)
    pids = _proc_pids()
    if pids is None:
        return True
    for pid in pids:
        fields = _read_stat(pid)
        if fields is not None and fields[2] == wanted and fields[0] not in _STATE_ZOMBIE:
            return True
    return False


def _proc_pids() -> list[int] | None:
    """Every process on the host, by pid; None when /proc cannot be listed."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return None
    return [int(name) for name in names if name.isdigit()]


def killpg(pgid: int, sig: int) -> bool:
    """Signal a group, treating "already gone" and "not ours" as nothing sent."""
    if pgid <= 1 or pgid == os.getpgrp():  # never our own group, never "every process"
        return False
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _wait_group_gone(pgid: int, deadline: float) -> bool:
    """Poll until the group has no live member or ``deadline`` (monotonic) passes."""
    while group_has_live_members(pgid):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(POLL_SLICE, remaining))
    return True


def kill_leftover_group(pid: int, start_time: int | None, kill_timeout: float) -> bool:
    """After a crash, remove the process group an interrupted stage left behind.

    The stage was started with ``start_new_session`` so its pgid is ``pid``. The group is
    signalled only when it is provably the recorded one:

    * the leader still runs with the recorded ``start_time`` (a different start time means the
      pid was reused: nothing is signalled), or
    * the leader is gone but the group still has members: Linux never reuses a pid that is
      still a process-group id, so the group is what the stage left.

    SIGTERM (plus SIGCONT, so a paused group can act on it) goes first; whatever is still
    alive after ``kill_timeout`` seconds gets SIGKILL. Without a recorded start time nothing
    can be proven, so nothing is signalled. Returns True if a signal was sent.
    """
    if not _is_recorded_group(pid, start_time):
        return False
    if not killpg(pid, signal.SIGTERM):
        return False
    killpg(pid, signal.SIGCONT)
    if not _wait_group_gone(pid, time.monotonic() + max(0.0, kill_timeout)):
        killpg(pid, signal.SIGKILL)
        _wait_group_gone(pid, time.monotonic() + 2.0)
    return True


def at_once(calls: Sequence[Callable[[], _T]]) -> list[_T]:
    """Run ``calls`` each in a thread of its own and return their results in order; once
    every call has ended, the first error raised, if any, is raised. Removing a stage's
    processes waits out its ``kill_timeout``: so stopping N stages' groups takes one
    ``kill_timeout``, not N of them in turn."""
    if len(calls) == 1:
        return [calls[0]()]
    results: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []

    def call(index: int) -> None:
        try:
            results[index] = calls[index]()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(i,), daemon=True) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return results


def group_stopped(pgid: int) -> bool:
    """Is every live member of process group ``pgid`` stopped (state T)? False for a group
    with none: there is nothing stopped to speak of."""
    wanted = str(pgid)
    states = [
        fields[0]
        for pid in _proc_pids() or ()
        if (fields := _read_stat(pid)) is not None
        and fields[2] == wanted
        and fields[0] not in _STATE_ZOMBIE
    ]
    return bool(states) and all(state in ("T", "t") for state in states)


def stop_leftover_group(pid: int, start_time: int | None) -> bool:
    """SIGSTOP the process group an interrupted stage left behind, under the rules of
    :func:`kill_leftover_group` (the group is provably the recorded one). True if sent."""
    return _is_recorded_group(pid, start_time) and killpg(pid, signal.SIGSTOP)


def _is_recorded_group(pid: int, start_time: int | None) -> bool:
    """Is group ``pid`` provably the one a stage recorded with ``start_time``? (See
    :func:`kill_leftover_group`.)"""
    if pid <= 1 or start_time is None:
        return False
    current = process_start_time(pid)
    if current is not None:
        return current == start_time
    return group_has_live_members(pid)


@dataclass(frozen=True)
class SessionProcess:
    """A live process whose environment says it belongs to a stage of a session."""

    pid: int
    pgid: int
    stage: str
    #: ``VC_ATTEMPT`` as the runner gave it (None if it is not a number).
    attempt: int | None
    #: Start time in clock ticks since boot (:func:`process_start_time`), when read.
    start_time: int | None = None
    #: The kernel session it is in (the pid of the session's leader), when read.
    kernel_session: int | None = None


def _ancestors() -> set[int]:
    """This process and its ancestors: never "leftovers", whatever their environment says
    (a runner started from inside a stage of the session it runs)."""
    seen = {os.getpid()}
    pid = os.getppid()
    while pid > 1 and pid not in seen:
        seen.add(pid)
        fields = _read_stat(pid)
        if fields is None:
            break
        try:
            pid = int(fields[1])
        except ValueError:
            break
    return seen


def _environ_value(environ: bytes, name: bytes) -> bytes | None:
    start = environ.find(b"\0" + name + b"=")
    if start < 0:
        return None
    start += len(name) + 2
    end = environ.find(b"\0", start)
    return environ[start : end if end >= 0 else len(environ)]


def find_session_processes(session_id: str) -> list[SessionProcess]:
    """The live processes of this user on this host that carry ``VC_SESSION_ID`` =
    ``session_id`` in their environment, with the stage and attempt they carry too.

    Every stage process gets these variables from its runner, and its children inherit
    them, so this finds what a dead runner left running even when it never recorded the
    process (killed between the spawn and the write), and members that left the stage's
    process group. A process that cleared its environment (``env -i``) is not found here;
    the recorded pid and start time (:func:`kill_leftover_group`) still cover the stage's
    own group. Only processes of our own uid are looked at (their environment is readable
    and theirs to signal); this process and its ancestors are never listed. Costs one
    ``stat`` per process on the host and one small read per process of ours: a
    millisecond or two for a few hundred processes.
    """
    needle = b"\0VC_SESSION_ID=" + session_id.encode() + b"\0"
    uid = os.getuid()
    exclude = _ancestors()
    found: list[SessionProcess] = []
    for pid in _proc_pids() or ():
        if pid in exclude:
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            with open(f"/proc/{pid}/environ", "rb") as fh:
                environ = b"\0" + fh.read()
        except OSError:  # gone meanwhile, or not readable
            continue
        if needle not in environ + b"\0":
            continue
        fields = _read_stat(pid)
        if fields is None or fields[0] in _STATE_ZOMBIE:
            continue
        stage = _environ_value(environ, b"VC_STAGE")
        if stage is None:
            continue
        attempt = _environ_value(environ, b"VC_ATTEMPT")
        found.append(
            SessionProcess(
                pid=pid,
                pgid=int(fields[2]),
                stage=stage.decode("utf-8", "surrogateescape"),
                attempt=int(attempt) if attempt and attempt.isdigit() else None,
                start_time=int(fields[19]) if fields[19].isdigit() else None,
            )
        )
    return found


def session_members(leaders: Mapping[int, tuple[str, int | None]]) -> list[SessionProcess]:
    """The live processes of this user in the kernel sessions that these stage processes
    lead (each started with ``start_new_session``, so its pid is its session's id: given
    as pid -> (stage, attempt)) that are outside the leader's own group: a job-control
    shell's (``set -m``) or a program's ``setpgid`` children, which a signal to the group
    misses. Unlike :func:`find_session_processes`, this finds them when they cleared
    their environment (``env -i``); only leaving the session too (``setsid``) escapes
    both. Linux hands out no pid still in use as a session id, so while a member is alive
    its session id is its stage's. One ``stat`` per process on the host, one small read
    per process of ours: only on a pause, a resume and a stop."""
    if not leaders:
        return []
    uid = os.getuid()
    exclude = _ancestors()
    wanted = {str(pid): pid for pid in leaders}
    found: list[SessionProcess] = []
    for pid in _proc_pids() or ():
        if pid in exclude or pid in leaders:
            continue
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
        except OSError:
            continue
        fields = _read_stat(pid)
        if fields is None or fields[0] in _STATE_ZOMBIE:
            continue
        leader = wanted.get(fields[3])
        if leader is None or fields[2] == fields[3]:
            continue
        stage, attempt = leaders[leader]
        found.append(
            SessionProcess(
                pid=pid,
                pgid=int(fields[2]),
                stage=stage,
                attempt=attempt,
                start_time=int(fields[19]) if fields[19].isdigit() else None,
                kernel_session=leader,
            )
        )
    return found


def kill_groups(
    processes: Iterable[SessionProcess],
    kill_timeout: float,
    hurry: threading.Event | None = None,
) -> list[int]:
    """Remove the process groups of ``processes`` (found by :func:`find_session_processes`):
    SIGTERM and SIGCONT to every group at once, SIGKILL to what is still alive after
    ``kill_timeout`` seconds. A process whose group cannot be signalled safely (our own
    group, or none) is signalled alone. Returns the groups (or lone pids) signalled.
    SIGKILL goes only to the groups and pids still alive at the last look: one that was
    gone meanwhile may name somebody else's process by then. ``hurry``, once set (a
    second Ctrl-C), ends the wait for SIGTERM at once.

    The groups are theirs to remove: a process can only join a group of its own session,
    and the session of a stage process was created by its stage (``start_new_session``)
    or by one of its processes (``setsid``).
    """
    own = os.getpgrp()
    groups: set[int] = set()
    lone: set[int] = set()
    for proc in processes:
        if proc.pgid > 1 and proc.pgid != own:
            groups.add(proc.pgid)
        else:
            lone.add(proc.pid)

    def alive() -> bool:
        """Whether anything is left, forgetting each group and pid seen gone: a group
        that emptied frees its number, which a process started later may take as its
        own group (pid reuse), so it must never be signalled again. Looked at every
        POLL_SLICE, far shorter than the system takes to hand a pid out again."""
        groups.intersection_update([g for g in groups if group_has_live_members(g)])
        lone.intersection_update(
            [p for p in lone if (f := _read_stat(p)) is not None and f[0] not in _STATE_ZOMBIE]
        )
        return bool(groups or lone)

    def send(sig: int) -> list[int]:
        sent = [g for g in sorted(groups) if killpg(g, sig)]
        for pid in sorted(lone):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
                sent.append(pid)
        return sent

    if not alive():  # found a while ago: a group gone since frees its number for another
        return []
    signalled = send(signal.SIGTERM)
    send(signal.SIGCONT)
    deadline = time.monotonic() + max(0.0, kill_timeout)
    while alive() and time.monotonic() < deadline and not (hurry and hurry.is_set()):
        time.sleep(POLL_SLICE)
    if alive():
        send(signal.SIGKILL)
        end = time.monotonic() + 2.0
        while alive() and time.monotonic() < end:
            time.sleep(POLL_SLICE)
    return signalled


__all__ = [
    "POLL_SLICE",
    "SessionProcess",
    "at_once",
    "find_session_processes",
    "group_has_live_members",
    "kill_groups",
    "kill_leftover_group",
    "killpg",
    "process_start_time",
    "process_state",
    "session_members",
    "stop_leftover_group",
]
