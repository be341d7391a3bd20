"""Stops a runner's stages when the runner dies without stopping them (SIGKILL, the OOM killer).

A stage runs in a process group of its own, so a runner killed outright used to leave its
stages running on, reparented. A takeover on the same host removes them, but one from another
host cannot reach them, and would run the stage a second time while the first still ran
(docs/ARCHITECTURE.md §6). So every process that runs stages (a runner, a worker and its runner
threads) starts this small process beside it, the first time it starts a stage: ``python -I -S``
with nothing of vc but :mod:`app.runner.groups`, in a session of its own (a Ctrl-C in the
runner's terminal, or a signal to the runner's process group, does not reach it), holding the
read end of a pipe whose write end only the runner holds. The runner tells it each stage group
it starts (``+ PGID START_TIME KILL_TIMEOUT``) and each one it reaped (``- PGID``); what a stage
leaves running after it exited is left alone, as the runner itself leaves it.

The end of that pipe is the signal: the kernel closes it when the runner dies, however it
died. The groups still registered then get what an abort gives them, at once and all in
parallel: SIGTERM and SIGCONT, SIGKILL after their ``kill_timeout``, under the rules of
:func:`~app.runner.groups.kill_leftover_group` (a pid is signalled only while its start time
matches). A runner that ends normally has reaped its stages, so its guard ends with nothing to
do. A guard that died is started again at the runner's next start or reap, and told every
group still registered.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

from app.runner.groups import kill_leftover_group

#: The directory holding the ``app`` package: the guard imports vc's own code from there only.
_INSTALLED_IN = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
_BOOT = (
    f"import sys; sys.path.insert(0, {_INSTALLED_IN!r}); "
    "import app.runner.stage_guard as guard; guard.main()"
)
#: Marks the guard's command line, so a test can find (and kill) the guard of a runner.
MARK = "app.runner.stage_guard"


class StageGuard:
    """The runner's side: one per process (:data:`GUARD`), shared by its runner threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        #: The line registering each group still running, by pgid.
        self._groups: dict[int, bytes] = {}

    def watch(self, pgid: int, start_time: int | None, kill_timeout: float) -> None:
        """Have the group removed if this process dies while it runs. Without a start time
        nothing could be proven about the pid later, so nothing is registered."""
        if start_time is None:
            return
        line = f"+ {pgid} {start_time} {max(0.0, kill_timeout)!r}\n".encode()
        with self._lock:
            self._groups[pgid] = line
            self._send(line)

    def release(self, pgid: int) -> None:
        """The group's main process was reaped: its leftovers are no longer the guard's."""
        with self._lock:
            if self._groups.pop(pgid, None) is not None:
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
                os.write(proc.stdin.fileno(), line)
                return
            except OSError:  # it died since the poll: a new one is told everything
                pass
        self._restart()

    def _restart(self) -> None:
        """Start a guard and tell it every group registered; without one (no process could
        be started) the stages run unguarded, as a takeover on this host still finds them."""
        old = self._proc
        self._proc = None
        if old is not None:
            if old.stdin is not None:
                old.stdin.close()
            old.poll()
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
            return
        assert proc.stdin is not None
        try:
            if self._groups:
                os.write(proc.stdin.fileno(), b"".join(self._groups.values()))
        except OSError:
            return
        self._proc = proc


#: This process' guard.
GUARD = StageGuard()


def _read_groups() -> dict[int, tuple[int, float]]:
    """Follow the runner's lines until the pipe ends; the groups registered then."""
    groups: dict[int, tuple[int, float]] = {}
    for raw in sys.stdin.buffer:
        parts = raw.split()
        try:
            if parts[0] == b"+":
                groups[int(parts[1])] = (int(parts[2]), float(parts[3]))
            elif parts[0] == b"-":
                groups.pop(int(parts[1]), None)
        except (IndexError, ValueError):
            continue
    return groups


def main() -> None:
    """The guard process: wait for the runner's end, then stop what it left running."""
    for sig in (signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)
    groups = _read_groups()
    stoppers = [
        threading.Thread(target=kill_leftover_group, args=(pgid, start, kill_timeout))
        for pgid, (start, kill_timeout) in groups.items()
    ]
    for stopper in stoppers:
        stopper.start()
    for stopper in stoppers:
        stopper.join()
