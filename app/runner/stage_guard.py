"""Stops a runner's stages when the runner dies without stopping them (SIGKILL, the OOM killer).

A stage runs in a process group of its own, so a runner killed outright would leave its
stages running on, reparented. A takeover on the same host removes them, but one from another
host cannot reach them, and would run the stage a second time while the first still ran
(docs/ARCHITECTURE.md §6). So every process that runs stages (a runner, a worker and its runner
threads) starts this small process beside it once it holds a session: ``python -I -S``
(:mod:`app.runner.stage_guard_main`, builtins only until it must act), in a session of its
own (a Ctrl-C in the runner's terminal, or a signal to the runner's process group, does not
reach it), holding the read end of a pipe whose write end only the runner holds. The runner
tells it each stage group it starts (a line: :meth:`Guarded.line`) and each one it reaped,
and before each spawn the stage's attempt to expect (:meth:`StageGuard.expect`), which covers
a runner killed between the spawn and the group's line; what a stage leaves running after it
exited is left alone, as the runner itself leaves it.

The end of that pipe is the signal: the kernel closes it when the runner dies, however it
died. The groups still registered then get what an abort gives them, at once and all in
parallel: SIGTERM and SIGCONT, SIGKILL after their ``kill_timeout``, under the rules of
:func:`~app.runner.groups.kill_leftover_group` (a pid is signalled only while its start time
matches), and so do the processes that left those groups. A runner that ends normally has
reaped its stages, so its guard ends with nothing to do. A guard killed while its runner
lives is started again at once (one thread per process waits on it) and told every group
still registered; so is one that is stopped (SIGSTOP), and a write never waits on a guard
that reads nothing for more than :data:`WRITE_TIMEOUT`.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

from app.runner.groups import (
    SessionProcess,
    find_session_processes,
    kill_groups,
    kill_leftover_group,
    process_start_time,
    session_members,
)

#: The directory holding the ``app`` package: the guard imports vc's own code from there only.
_INSTALLED_IN = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOT = (
    f"import sys; sys.path.append({_INSTALLED_IN!r}); "
    "import app.runner.stage_guard_main as guard; guard.main()"
)
#: Marks the guard's command line, so a test can find (and kill) the guard of a runner.
MARK = "app.runner.stage_guard"
#: Seconds before a guard that could not be started is tried again (not at every stage).
RESTART_PAUSE = 30.0
#: Seconds a write waits for room in the guard's pipe. A guard that reads nothing for that
#: long (stopped with SIGSTOP) is replaced, rather than let it block the runner.
WRITE_TIMEOUT = 1.0
#: A guard killed this many seconds after its start died young (see _replace_when_killed).
YOUNG = 1.0


@dataclass(frozen=True)
class Guarded:
    """A stage group the guard removes if its runner dies, and what the group's processes
    that left it carry in their environment (``VC_SESSION_ID``, ``VC_STAGE``,
    ``VC_ATTEMPT``), by which the guard finds them too, as an abort does."""

    pgid: int
    start_time: int
    kill_timeout: float
    session: str | None = None
    stage: str | None = None
    attempt: str | None = None

    def line(self, op: str = "+") -> bytes:
        """``+ PGID START KILL_TIMEOUT SESSION STAGE ATTEMPT``, each text hex-encoded (a
        matrix instance's name may hold spaces) and ``-`` for none: plain fields, which
        the guard keeps with builtins alone until it must act. An expectation
        (:meth:`StageGuard.expect`) is the same line after ``?``, its token for PGID."""
        texts = (self.session, self.stage, self.attempt)
        encoded = [b"-" if t is None else t.encode().hex().encode() for t in texts]
        head = f"{op} {self.pgid} {self.start_time} {self.kill_timeout!r} ".encode()
        return head + b" ".join(encoded) + b"\n"

    @classmethod
    def parse(cls, fields: list[bytes]) -> Guarded:
        pgid, start, kill_timeout, *texts = fields
        session, stage, attempt = (
            None if t == b"-" else bytes.fromhex(t.decode()).decode() for t in texts
        )
        return cls(int(pgid), int(start), float(kill_timeout), session, stage, attempt)


class StageGuard:
    """The runner's side: one per process (:data:`GUARD`), shared by its runner threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed_at: float | None = None
        #: When the last guard killed young (see :meth:`_replace_when_killed`) died.
        self._died_young_at: float | None = None
        #: Each group still running, by pgid.
        self._groups: dict[int, Guarded] = {}
        #: Each stage about to be spawned, by token (see :meth:`expect`).
        self._expected: dict[int, Guarded] = {}
        self._tokens = 0

    def prepare(self) -> None:
        """Start the guard now on a thread of its own, while the runner claims its session,
        rather than in the first stage's start (its spawn costs a few milliseconds). A
        worker's next sessions find it running."""
        if self.pid is not None:
            return
        threading.Thread(target=self._prepare, name="vc-stage-guard", daemon=True).start()

    def _prepare(self) -> None:
        with self._lock:
            if self.pid is None:
                self._restart()

    def watch(self, group: Guarded) -> None:
        """Have the group removed if this process dies while it runs. To be told before
        anything may reap the group's leader (else its release could come first)."""
        with self._lock:
            self._groups[group.pgid] = group
            self._send(group.line())

    def expect(self, kill_timeout: float, session: str, stage: str, attempt: str) -> int:
        """Before a stage's spawn: if this process dies before :meth:`watch` is told the
        group (a runner killed between the spawn and that line), the guard removes every
        process carrying this session, stage and attempt in its environment that had
        started when the pipe ended, as it does what left a registered group. Nothing an
        earlier attempt left running matches, nor a takeover's spawn on this host, which
        may number its attempt the same (none was recorded). The token is for
        :meth:`forget`."""
        with self._lock:
            self._tokens += 1
            expected = Guarded(self._tokens, 0, kill_timeout, session, stage, attempt)
            self._expected[self._tokens] = expected
            self._send(expected.line("?"))
            return self._tokens

    def forget(self, token: int) -> None:
        """The spawn ``token`` announced was watched, or failed."""
        with self._lock:
            if self._expected.pop(token, None) is not None:
                self._send(f"! {token}\n".encode())

    def release(self, pgid: int, start_time: int | None) -> None:
        """The group's leader was reaped: what it left is no longer the guard's. Only the
        group registered with that start time: a pid reused since is another stage's."""
        with self._lock:
            group = self._groups.get(pgid)
            if group is not None and group.start_time == start_time:
                del self._groups[pgid]
                self._send(f"- {pgid}\n".encode())

    @property
    def pid(self) -> int | None:
        """The guard's pid while one runs."""
        proc = self._proc
        return None if proc is None or proc.poll() is not None else proc.pid

    def _send(self, line: bytes) -> None:
        proc = self._proc
        if proc is not None and proc.poll() is None:
            assert proc.stdin is not None
            try:
                _write_all(proc.stdin.fileno(), line)
                return
            except OSError:  # it died since the poll, or reads nothing: a new one is told all
                pass
        self._restart()

    def _restart(self) -> None:
        """Start a guard and tell it every group registered. Without one (no process could
        be started) the stages run unguarded, as a takeover on this host still finds them;
        another start is tried after :data:`RESTART_PAUSE` (also when the last one exited
        by itself with an error rather than by a signal: it would again)."""
        old = self._proc
        _close(old)
        self._proc = None
        now = time.monotonic()
        if old is not None and (old.returncode or 0) > 0:
            self._failed_at = now  # it failed by itself (not killed): it would again
        if self._failed_at is not None and now - self._failed_at < RESTART_PAUSE:
            return
        try:
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _BOOT],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                cwd="/",
                env={k: v for k, v in os.environ.items() if not k.startswith("VC_")},
            )
        except (OSError, ValueError):
            self._failed_at = now
            return
        assert proc.stdin is not None
        fd = proc.stdin.fileno()
        os.set_blocking(fd, False)
        try:
            told = [g.line() for g in self._groups.values()]
            told += [e.line("?") for e in self._expected.values()]
            _write_all(fd, b"".join(told))
        except OSError:
            _close(proc)
            self._failed_at = now
            return
        self._failed_at = None
        self._proc = proc
        waiter = threading.Thread(
            target=self._replace_when_gone,
            args=(proc, now),
            name="vc-stage-guard-wait",
            daemon=True,
        )
        try:
            waiter.start()
        except RuntimeError:  # no thread to be had: the guard works, replaced at a write
            pass

    def _replace_when_gone(self, proc: subprocess.Popen[bytes], started: float) -> None:
        """Wait for this guard to stop (SIGSTOP: it would act on nothing until continued)
        or end. Stopped, or killed by a signal, while it is still this process' guard: a
        new one starts at once, told every group still registered, so a long stage never
        runs unguarded until the next start or reap. One that exited by itself (its pipe
        ended, or an error) is left to :meth:`_send`. Guards that keep dying as they
        start (two deaths within :data:`YOUNG` seconds of their start, the second within
        :data:`RESTART_PAUSE` of the first: a crash, not a kill) are given up for
        :data:`RESTART_PAUSE`, not started again in a loop; a write tries again after it."""
        try:
            seen = os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WSTOPPED | os.WNOWAIT)
        except ChildProcessError:  # reaped by _close: replaced already
            return
        if seen is not None and seen.si_code == os.CLD_STOPPED:
            with self._lock:
                if self._proc is proc:
                    self._restart()  # _close kills it (SIGKILL ends a stopped process)
            return
        proc.wait()
        with self._lock:
            if (
                self._proc is not proc
                or proc.returncode >= 0
                or not (self._groups or self._expected)
            ):
                return
            now = time.monotonic()
            if now - started < YOUNG:
                if self._died_young_at is not None and now - self._died_young_at < RESTART_PAUSE:
                    _close(proc)
                    self._proc = None
                    self._failed_at = now
                    return
                self._died_young_at = now
            self._restart()


def _write_all(fd: int, data: bytes) -> None:
    """Write all of ``data`` to the guard's (non-blocking) pipe, which may take it in
    parts; raise TimeoutError (an OSError) when the pipe stays full for
    :data:`WRITE_TIMEOUT`: the guard reads nothing."""
    view = memoryview(data)
    deadline = time.monotonic() + WRITE_TIMEOUT
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            left = deadline - time.monotonic()
            writable = select.poll()
            writable.register(fd, select.POLLOUT)
            if left <= 0 or not writable.poll(left * 1000):
                raise TimeoutError("the stage guard reads nothing") from None


def _close(proc: subprocess.Popen[bytes] | None) -> None:
    """Let a guard that is being replaced go: the end of its pipe makes it act on what it
    was told (nothing, or the groups of a runner that is still alive: hence the kill)."""
    if proc is None:
        return
    if proc.poll() is None:
        proc.kill()
    if proc.stdin is not None:
        proc.stdin.close()
    proc.wait()


#: This process' guard.
GUARD = StageGuard()


def _carrying(entries: list[Guarded]) -> list[tuple[SessionProcess, Guarded]]:
    """The live processes whose environment carries the session, stage and attempt of one
    of ``entries`` (registered groups or expected stages), each with its entry."""
    wanted = {(e.session, e.stage, e.attempt): e for e in entries if e.session}
    found = []
    for session in {e.session for e in wanted.values() if e.session}:
        for proc in find_session_processes(session):
            attempt = None if proc.attempt is None else str(proc.attempt)
            entry = wanted.get((session, proc.stage, attempt))
            if entry is not None:
                found.append((proc, entry))
    return found


def _strays(groups: dict[int, Guarded]) -> list[tuple[SessionProcess, float]]:
    """The processes that left the registered groups (``setsid``, a daemon's double fork,
    a job-control shell's jobs), found by the stage and attempt their environment carries
    or by the kernel session their stage still leads, each with its group's
    ``kill_timeout``."""
    found = [
        (proc, group.kill_timeout)
        for proc, group in _carrying(list(groups.values()))
        if proc.pgid != group.pgid
    ]
    seen = {proc.pid for proc, _ in found}
    leading = {  # the stage's main process alive still: its pid is its session's id
        g.pgid: g for g in groups.values() if process_start_time(g.pgid) == g.start_time
    }
    members = session_members({pgid: (g.stage or "", None) for pgid, g in leading.items()})
    found.extend(
        (p, leading[p.kernel_session].kill_timeout)
        for p in members
        if p.pid not in seen and p.kernel_session in leading
    )
    return found


def _spawned(expected: list[Guarded], ended: int | None) -> list[tuple[SessionProcess, float]]:
    """The processes of the stages expected (spawned, perhaps, but never watched) that had
    started by ``ended`` (ticks since boot; None: whenever): a runner that took the session
    over on this host since may have numbered its attempt the same, as none was recorded."""
    return [
        (proc, match.kill_timeout)
        for proc, match in _carrying(expected)
        if ended is None or (proc.start_time is not None and proc.start_time <= ended + 1)
    ]


#: Seconds after which the guard looks again for the processes of stages it expected: a
#: child forked as its runner died carries the stage's environment only once it has exec'd.
EXEC_GRACE = 0.2


def _parsed(lines: list[list[bytes]]) -> dict[int, Guarded]:
    parsed: dict[int, Guarded] = {}
    for fields in lines:
        try:
            entry = Guarded.parse(fields)
        except (ValueError, UnicodeDecodeError):
            continue
        parsed[entry.pgid] = entry
    return parsed


def stop_registered(
    registrations: list[list[bytes]],
    expectations: list[list[bytes]] | None = None,
    ended: int | None = None,
) -> None:
    """What the guard does once the runner's pipe ended (``stage_guard_main``, at
    ``ended``, ticks since boot): each group it was told of, and what left it, and the
    processes of each stage it was told to expect but not of its group, as an abort
    stops them, all at once. Each group is signalled once."""
    groups = _parsed(registrations)
    watched = {(g.session, g.stage, g.attempt) for g in groups.values()}
    expected = [
        e
        for e in _parsed(expectations or []).values()
        if (e.session, e.stage, e.attempt) not in watched
    ]
    spawned = _spawned(expected, ended)
    stoppers = [
        threading.Thread(target=kill_leftover_group, args=(g.pgid, g.start_time, g.kill_timeout))
        for g in groups.values()
    ] + [
        threading.Thread(target=kill_groups, args=(procs, kill_timeout))
        for kill_timeout, procs in _by_kill_timeout(_strays(groups) + spawned).items()
    ]
    if expected:
        signalled = {g.pgid for g in groups.values()} | {proc.pgid for proc, _ in spawned}
        late = threading.Thread(target=_stop_late_spawns, args=(expected, ended, signalled))
        stoppers.append(late)
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()


def _by_kill_timeout(
    found: list[tuple[SessionProcess, float]],
) -> dict[float, list[SessionProcess]]:
    """The processes to stop, by the time their groups get between SIGTERM and SIGKILL:
    one :func:`kill_groups` each, which signals every group once (several processes of
    one group are one group to signal, not one SIGTERM each)."""
    grouped: dict[float, list[SessionProcess]] = {}
    for proc, kill_timeout in found:
        grouped.setdefault(kill_timeout, []).append(proc)
    return grouped


def _stop_late_spawns(expected: list[Guarded], ended: int | None, signalled: set[int]) -> None:
    """The second look, :data:`EXEC_GRACE` later, for groups the first did not signal."""
    time.sleep(EXEC_GRACE)
    late = [(p, t) for p, t in _spawned(expected, ended) if p.pgid not in signalled]
    for kill_timeout, procs in sorted(_by_kill_timeout(late).items()):
        kill_groups(procs, kill_timeout)
