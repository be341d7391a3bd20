"""Low-level supervision of one stage process: spawn, stream output, pause, resume, kill.

This layer knows nothing about the store (docs/ARCHITECTURE.md §6: the database sits above it): it
turns a shell command into a process group it can signal safely, and turns the group's output into
batches of decoded lines. The runner wires those batches and the exit code to the store.

Safety rules this module keeps, because a runner signals processes long after it started them:

* A stage runs in its own session (``start_new_session=True``), so its pgid equals its pid and
  one ``killpg`` reaches the stage and everything it spawned, and nothing else.
* A pid is never signalled once it may have been reused. Only one thread (the watcher) reaps
  the stage, and it does so under the same lock the signal methods hold, so "not reaped yet"
  guarantees the pid (and the group id) still belong to our process. After the reap, the group
  is signalled only if it still exists *and* no other process owns the pid (Linux does not
  hand out a pid that is still in use as a process-group id).
* After a crash, :func:`kill_leftover_group` (:mod:`app.runner.groups`, with the other
  helpers that find and remove process groups) compares the recorded process start time
  (/proc/PID/stat field 22) before it signals anything.
* A stage process that was never recorded (its runner died between the spawn and the
  record) is found by the ``VC_SESSION_ID``/``VC_STAGE`` its environment carries
  (:func:`find_session_processes`), and its group removed with :func:`kill_groups`.

Output is read in raw chunks and delivered in batches, and a fast writer's output is read
by one thread and split by another, so a stage that prints a million lines runs about as fast
as with its output redirected to a file (see :class:`StageProcess`).
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import select
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from itertools import repeat
from typing import IO

from app.runner.groups import (
    POLL_SLICE,
    SessionProcess,
    find_session_processes,
    group_has_live_members,
    kill_groups,
    kill_leftover_group,
    killpg,
    process_start_time,
    session_members,
)
from app.runner.lines import (
    HANDOFF_BYTES,
    MAX_LINE_BYTES,
    Backlog,
    LineBatch,
    decode,
    last_progress_in,
    pieces,
    split_block,
    utf8_cut,
)
from app.runner.stage_guard import GUARD, Guarded

__all__ = [
    "MAX_LINE_BYTES",
    "READER_GRACE",
    "LineBatch",
    "SessionProcess",
    "StageProcess",
    "StageStartError",
    "find_session_processes",
    "kill_groups",
    "kill_leftover_group",
    "process_start_time",
]

#: Bytes asked of ``os.read`` per call: a whole pipe's worth (:data:`PIPE_SIZE`), so a
#: fast writer's output is taken in a few big gulps rather than many small ones.
READ_CHUNK = 1 << 20
#: Most output (bytes) read but not split yet; past it the reader waits, and so, once its
#: pipe is full, does the stage. A million short lines are about 7 MB.
MAX_BACKLOG = 64 << 20
#: While a stage writes fast, the reader waits this long between two reads, so that it
#: takes the output in big reads rather than one small read per write (the pipe holds
#: :data:`PIPE_SIZE` meanwhile).
BURST_NAP = 0.001
#: Seconds the readers may keep reading after the stage's main process exited. A background
#: grandchild that inherited stdout/stderr keeps the pipe open; without this bound, ``wait``
#: would hang for as long as that grandchild lives.
READER_GRACE = 2.0
#: Pipe capacity requested (best effort) so that bursts of output do not stall the stage while
#: the reader thread is busy decoding the previous chunk.
PIPE_SIZE = 1 << 20


def keep_draining(pipes: list[IO[bytes]]) -> None:
    """Hand the read ends of a stage's pipes, still held open by what the stage left
    running (a service it started, a daemon), to a ``cat`` of their own that throws what
    comes away: the runner stops reading them, but closing them would kill that service at
    its next write (SIGPIPE), and the README promises it is left alone. The ``cat`` is
    outside the runner (reparented by a shell that exits at once, in a session of its own:
    no Ctrl-C of the runner's terminal reaches it) and ends when the last writer closes the
    pipe. If it cannot be started, the leftover's later writes fail, as with any closed
    pipe."""
    for pipe in pipes:
        with contextlib.suppress(OSError, ValueError, subprocess.SubprocessError):
            os.set_blocking(pipe.fileno(), True)  # a flag the cat shares: it must wait
            subprocess.run(
                # An asynchronous command's stdin is /dev/null unless redirected: hence 3.
                ["/bin/sh", "-c", "exec 3<&0; cat <&3 >/dev/null 2>&1 3<&- &"],
                stdin=pipe,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
                timeout=5,
                check=False,
            )


class StageStartError(Exception):
    """The stage command could not be started; the message is one line fit for a user."""


class _Deadline:
    """A moment on the monotonic clock that ``hurry`` (when given and set) brings forward
    to now."""

    def __init__(self, at: float, hurry: threading.Event | None) -> None:
        self.at = at
        self.hurry = hurry

    def left(self) -> float:
        """Seconds until the deadline, 0 once passed or hurried."""
        if self.hurry is not None and self.hurry.is_set():
            return 0.0
        return max(0.0, self.at - time.monotonic())


def wait_any(procs: Iterable[StageProcess], timeout: float) -> None:
    """Return once one of ``procs`` has exited, or after ``timeout`` seconds: one poll over
    their pidfds, so a runner waits on any number of stages from its own thread. Without
    pidfds (or when one has exited but its output is still being read) it waits in short
    slices instead."""
    poller = select.poll()
    watched = 0
    for proc in procs:
        fd = proc._pidfd
        if proc._exited.is_set() or fd is None:
            timeout = min(timeout, POLL_SLICE)
            continue
        poller.register(fd, select.POLLIN)
        watched += 1
    if watched:
        poller.poll(math.ceil(max(0.0, timeout) * 1000))
    else:
        time.sleep(max(0.0, timeout))


def _shell() -> str:
    """bash when available (stages are written for it), else the POSIX sh."""
    return "/bin/bash" if os.access("/bin/bash", os.X_OK) else "/bin/sh"


class StageProcess:
    """One stage command running in its own process group, with its output streamed.

    Output: one thread polls both pipes and reads raw chunks (``os.read``, never line
    iteration), splits them into lines (a partial last line waits for the next chunk; an
    over-long one is cut into :data:`MAX_LINE_BYTES` pieces), decodes them (UTF-8, invalid
    bytes as ``\\xNN``, NUL as ``\\x00``, one trailing ``\\r`` removed) and hands each chunk's
    lines to ``on_lines`` as one list of ``(unix time of the read, stream, text)``. Once the
    stage has written :data:`HANDOFF_BYTES`, splitting and ``on_lines`` move to a splitter
    thread fed in the order read (:class:`Backlog`), and the reader only reads: a stage
    that writes faster than its lines can be logged is not held up by the log, up to
    :data:`MAX_BACKLOG` bytes read ahead. ``on_lines`` is called from one thread at a time,
    in the order read, and should be quick. Order is kept within a stream; the two streams
    are separate pipes, so their relative order is only approximate. An exception raised by
    ``on_lines`` is kept in :attr:`output_error` and reading goes on, so a failing consumer
    can never freeze the stage on a full pipe.

    The latest ``::progress`` value seen on either stream is kept in :attr:`progress`; the
    check costs one substring search per chunk, not per line.

    Exit: the waiting caller polls a pidfd of the process (or, without pidfd support, a
    watcher thread blocks in ``waitid(WNOWAIT)``) and reaps it under the lock that the signal
    methods hold, so a signal is never sent to a reaped (reusable) pid.
    """

    def __init__(
        self,
        command: str,
        *,
        env: dict[str, str],
        cwd: str | None,
        on_lines: Callable[[LineBatch], None],
        kill_timeout: float,
        merge_stderr: bool = False,
    ) -> None:
        self.command = command
        #: stderr into stdout's pipe: one stream, in the order written (the stage's
        #: ``stderr: merged``). Two pipes cannot tell which of two quick writes came first.
        self.merge_stderr = merge_stderr
        #: What the guard gives the group between SIGTERM and SIGKILL if this process dies.
        self.kill_timeout = kill_timeout
        self.env = env
        self.cwd = cwd
        self._on_lines = on_lines
        self._popen: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self._exited = threading.Event()
        self._exited_at: float | None = None
        self._pidfd: int | None = None
        self._stop_readers = threading.Event()
        self._readers: list[threading.Thread] = []
        #: Per stream, the unterminated end of the output read so far.
        self._pending: dict[str, bytearray] = {}
        #: Set by the reader thread when it hands splitting over (see :meth:`_read`).
        self._backlog: Backlog | None = None
        self._splitter: threading.Thread | None = None
        self._read_bytes = 0
        self._progress: float | None = None
        self.pid: int | None = None
        self.start_time: int | None = None
        #: When the main process was found exited (unix time), once it was.
        self.ended_at: float | None = None
        self.output_error: Exception | None = None
        self.readers_abandoned = False
        #: Set by :meth:`terminate`: the guard keeps the group until it is done.
        self._stopping = False

    # ---- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Spawn the command under bash (or sh) in a new session, stdin from /dev/null.

        The cwd is checked first so the most common mistake gets a precise message instead of
        the child's generic exec failure; any other OS error is wrapped in
        :class:`StageStartError` with a one-line message.
        """
        if self._popen is not None:
            raise RuntimeError("stage process already started")
        if self.cwd is not None:
            if not os.path.exists(self.cwd):
                raise StageStartError(f"cwd does not exist: {self.cwd}")
            if not os.path.isdir(self.cwd):
                raise StageStartError(f"cwd is not a directory: {self.cwd}")
        expected = self._expect()
        try:
            popen = self._spawn()
        finally:
            self._forget(expected)  # watched by now, or never spawned, or stopped by the caller
        try:
            self._pidfd = os.pidfd_open(popen.pid)
        except (AttributeError, OSError):  # kernel < 5.3: a thread waits instead
            watcher = threading.Thread(
                target=self._watch, name=f"vc-stage-{popen.pid}-wait", daemon=True
            )
            watcher.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        """The stage's process, its output readers started, and the guard told its group."""
        try:
            popen = subprocess.Popen(
                self.command,
                shell=True,
                executable=_shell(),
                start_new_session=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if self.merge_stderr else subprocess.PIPE,
                cwd=self.cwd,
                env=self.env,
            )
        except OSError as exc:
            detail = exc.strerror or str(exc)
            where = f": {exc.filename}" if exc.filename else ""
            raise StageStartError(f"cannot start stage: {detail}{where}") from exc
        except (ValueError, TypeError) as exc:  # e.g. NUL in the command or the environment
            raise StageStartError(f"cannot start stage: {exc}") from exc
        self._popen = popen
        self.pid = popen.pid
        assert popen.stdout is not None
        pipes = [(popen.stdout, "stdout")]
        if popen.stderr is not None:
            pipes.append((popen.stderr, "stderr"))
        for pipe, _ in pipes:
            fd = pipe.fileno()
            with contextlib.suppress(OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_SIZE)
            os.set_blocking(fd, False)
        reader = threading.Thread(
            target=self._read, args=(pipes,), name=f"vc-stage-{popen.pid}-output", daemon=True
        )
        self._readers.append(reader)
        reader.start()
        # Reading /proc waits for the child's exec to finish, which the reader thread's
        # start-up has overlapped. The guard is told before anything may reap the stage.
        self.start_time = process_start_time(popen.pid)
        self._guard()
        return popen

    def _watch(self) -> None:
        """Wait for the exit without reaping, then reap under the lock (see class doc)."""
        popen = self._popen
        assert popen is not None
        try:
            os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # reaped elsewhere (e.g. SIGCHLD ignored): poll() below copes
        while True:
            with self._lock:
                if popen.poll() is not None:
                    break
            time.sleep(0.01)  # only reachable if waitid returned early; not expected
        self._exited_at = time.monotonic()
        self.ended_at = time.time()
        self._exited.set()
        self._release_guard()

    def _await_exit(self, timeout: float | None) -> bool:
        """Wait up to ``timeout`` (None: for ever) for the main process to exit; True once
        it has been reaped. With a pidfd (Linux >= 5.3) the caller's own thread waits on it
        and reaps under the lock, which spares a thread per stage; otherwise the watcher
        thread does it."""
        if self._exited.is_set():
            return True
        pidfd = self._pidfd
        if pidfd is None:
            return self._exited.wait(timeout)
        poller = select.poll()
        poller.register(pidfd, select.POLLIN)
        ms = None if timeout is None else math.ceil(max(0.0, timeout) * 1000)
        if not poller.poll(ms):
            return False
        popen = self._popen
        assert popen is not None
        with self._lock:
            if popen.returncode is None and popen.poll() is None:
                return False  # not expected: a readable pidfd means the process exited
            if not self._exited.is_set():
                self._exited_at = time.monotonic()
                self.ended_at = time.time()
                self._exited.set()
                self._pidfd = None
                os.close(pidfd)
        self._release_guard()
        return True

    def _expect(self) -> int | None:
        """Before the spawn: the guard removes what carries this stage's attempt if this
        process dies before :meth:`_guard` told it the group (the stage guard's doc)."""
        env = self.env
        session, stage, attempt = (
            env.get("VC_SESSION_ID"),
            env.get("VC_STAGE"),
            env.get("VC_ATTEMPT"),
        )
        if session is None or stage is None or attempt is None:
            return None
        return GUARD.expect(self.kill_timeout, session, stage, attempt)

    @staticmethod
    def _forget(token: int | None) -> None:
        if token is not None:
            GUARD.forget(token)

    def _guard(self) -> None:
        """Have the guard remove the group (and what left it) if this process dies."""
        if self._popen is not None and self.start_time is not None:
            GUARD.watch(
                Guarded(
                    self._popen.pid,
                    self.start_time,
                    self.kill_timeout,
                    self.env.get("VC_SESSION_ID"),
                    self.env.get("VC_STAGE"),
                    self.env.get("VC_ATTEMPT"),
                )
            )

    def _release_guard(self) -> None:
        """The leader's exit hands what it left to nobody (a service stays), unless the
        runner is stopping the stage: then the guard keeps it until :meth:`terminate` is
        done with the group, so a runner killed in that wait leaves nothing running."""
        if not self._stopping and self._popen is not None:
            GUARD.release(self._popen.pid, self.start_time)

    def _read(self, pipes: list[tuple[IO[bytes], str]]) -> None:
        """Reader thread body: both pipes, chunks in, batches of lines out (see class doc).
        One thread for both streams: a stage costs one thread start, not two.

        The first :data:`HANDOFF_BYTES` are split and delivered right here. Past them,
        this thread only reads, into :class:`Backlog`, and a second thread (started then,
        so a quiet stage never pays for it) splits and delivers in the order read. The
        stage then runs at the speed of the pipe, not of the log; the backlog is bounded
        (:data:`MAX_BACKLOG`), past which the stage waits again."""
        poller = select.poll()
        streams: dict[int, tuple[IO[bytes], str]] = {}
        for pipe, stream in pipes:
            fd = pipe.fileno()
            poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
            streams[fd] = (pipe, stream)
            self._pending[stream] = bytearray()
        stop = self._stop_readers
        try:
            while streams and not stop.is_set():
                backlog = self._backlog
                if backlog is not None:
                    backlog.wait_for_room(stop)
                for fd, _ in poller.poll(100):
                    entry = streams.get(fd)
                    if entry is None:
                        continue
                    pipe, stream = entry
                    if not self._drain(fd, stream):
                        poller.unregister(fd)
                        del streams[fd]
                        with contextlib.suppress(OSError):
                            pipe.close()
                        self._handle(stream, time.time(), None)
                if backlog is not None and backlog.bursting():
                    # Read again in a moment, not at the next write: a fast writer's small
                    # writes then come in one read instead of a wake-up each.
                    time.sleep(BURST_NAP)
        finally:
            if streams and self.readers_abandoned:
                keep_draining([pipe for pipe, _ in streams.values()])
            for pipe, stream in streams.values():
                with contextlib.suppress(OSError):
                    pipe.close()
                self._handle(stream, time.time(), None)
            if self._backlog is not None:
                self._backlog.close()

    def _drain(self, fd: int, stream: str) -> bool:
        """Read what one pipe has now (at most a few chunks, so the other stream gets its
        turn) and hand it on; False at end of file."""
        for _ in range(4):
            try:
                data = os.read(fd, READ_CHUNK)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                return False
            self._read_bytes += len(data)
            if self._backlog is None and self._read_bytes >= HANDOFF_BYTES:
                self._start_splitter()
            self._handle(stream, time.time(), data)
            if len(data) < READ_CHUNK:
                return True  # drained: back to poll
        return True

    def _handle(self, stream: str, at: float, data: bytes | None) -> None:
        """Split and deliver now, or queue for the splitter thread once there is one
        (``data`` None: the end of ``stream``)."""
        backlog = self._backlog
        if backlog is None:
            self._split(stream, at, data)
        else:
            backlog.put(stream, at, data)

    def _start_splitter(self) -> None:
        """From the reader thread, between two chunks: what was read so far is delivered
        already, so the splitter's first chunk is the next one and the order holds."""
        self._backlog = backlog = Backlog(MAX_BACKLOG)
        splitter = threading.Thread(
            target=self._split_backlog,
            args=(backlog,),
            name=f"vc-stage-{self.pid}-split",
            daemon=True,
        )
        splitter.start()
        self._splitter = splitter

    def _split_backlog(self, backlog: Backlog) -> None:
        """Splitter thread body: the backlog's chunks, in the order read, to lines."""
        while True:
            chunk = backlog.take()
            if chunk is None:
                return
            stream, at, data = chunk
            self._split(stream, at, data)
            backlog.done(len(data) if data is not None else 0)

    def _split(self, stream: str, at: float, data: bytes | None) -> None:
        """One chunk of ``stream`` to complete lines, delivered; the unterminated rest
        waits for the next chunk. ``data`` None: the stream ended, its last line goes
        out without a terminator."""
        pending = self._pending[stream]
        if data is None:
            if pending:
                self._deliver(stream, at, pieces(pending), pending)
                pending.clear()
            return
        if pending:
            start = len(pending)
            pending += data
            nl = pending.rfind(b"\n", start)
            if nl < 0:
                if len(pending) > MAX_LINE_BYTES:
                    self._deliver(stream, at, self._overflow(pending), b"")
                return
            block = bytes(pending[: nl + 1])
            del pending[: nl + 1]
        else:
            nl = data.rfind(b"\n")
            if nl < 0:
                pending += data
                if len(pending) > MAX_LINE_BYTES:
                    self._deliver(stream, at, self._overflow(pending), b"")
                return
            block = data[: nl + 1] if nl + 1 < len(data) else data
            if nl + 1 < len(data):
                pending += memoryview(data)[nl + 1 :]
        self._deliver(stream, at, split_block(block), block)

    @staticmethod
    def _overflow(pending: bytearray) -> list[str]:
        """Cut full pieces off an unterminated line that outgrew the limit; keep the rest."""
        out: list[str] = []
        while len(pending) > MAX_LINE_BYTES:
            cut = utf8_cut(pending, MAX_LINE_BYTES)
            out.append(decode(pending[:cut]))
            del pending[:cut]
        return out

    def _deliver(self, stream: str, at: float, lines: list[str], raw: bytes | bytearray) -> None:
        """Hand one batch to ``on_lines``; keep the latest progress value; never raise."""
        if not lines:
            return
        if b"::progress" in raw:
            value = last_progress_in(reversed(lines))
            if value is not None:
                self._progress = value
        try:
            self._on_lines(list(zip(repeat(at), repeat(stream), lines)))
        except Exception as exc:  # a consumer bug must not stall the stage
            if self.output_error is None:
                self.output_error = exc

    # ---- waiting ---------------------------------------------------------------------------

    def wait(self, timeout: float | None = None) -> int | None:
        """Exit code once the process exited and its output was read; None on timeout.

        The code is Popen's: negative for a signal. A stage that closes its stdout early and
        goes on running is simply still running. If the main process exited but a leftover
        background process still holds stdout/stderr open, the readers get
        :data:`READER_GRACE` seconds (counted from the exit) to finish; after that they are
        told to stop, hand the pipe to :func:`keep_draining` (the leftover writes on, into
        nothing) and :attr:`readers_abandoned` becomes True. Clean the leftovers up with
        :meth:`terminate`.
        """
        if self._popen is None:
            raise RuntimeError("stage process not started")
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        if not self._await_exit(timeout):
            return None
        assert self._exited_at is not None
        grace_end = self._exited_at + READER_GRACE
        limit = grace_end if deadline is None else min(grace_end, deadline)
        for reader in self._readers:
            reader.join(max(0.0, limit - time.monotonic()))
        if any(r.is_alive() for r in self._readers):
            if time.monotonic() < grace_end:
                return None  # the caller's timeout ran out first; the grace has not
            self.readers_abandoned = True
            self._stop_readers.set()
            for reader in self._readers:
                reader.join(0.5)
        splitter = self._splitter
        if splitter is not None:
            # What was read is delivered whatever the grace: it is out of the pipe already.
            splitter.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if splitter.is_alive():
                return None
        return self._popen.returncode

    @property
    def returncode(self) -> int | None:
        """Exit code (negative for a signal) once the process was reaped, else None."""
        return None if self._popen is None else self._popen.returncode

    @property
    def exited(self) -> bool:
        """The main process has exited and been reaped (its output may still be read)."""
        return self._exited.is_set()

    @property
    def running(self) -> bool:
        """True from start() until the main process has exited (and been reaped)."""
        return self._popen is not None and not self._await_exit(0)

    @property
    def progress(self) -> float | None:
        """The last ``::progress`` value printed by the stage on either stream, or None."""
        return self._progress

    # ---- signals ---------------------------------------------------------------------------

    def drop_leftovers(self, sig: int) -> bool:
        """``sig`` (SIGTERM with a SIGCONT, or SIGKILL) to what the exited stage left in its
        group, without waiting; False when nothing is left. The guard keeps the group until
        :meth:`leftovers_gone`, so a runner killed meanwhile leaves nothing running."""
        if not (self.exited and self._leftovers_alive()):
            return False
        self._stopping = True
        self._guard()
        if self._signal(sig, leftovers=True) and sig == signal.SIGTERM:
            self._signal(signal.SIGCONT, leftovers=True)
        return True

    def pause_leftovers(self) -> bool:
        """SIGSTOP what the exited stage left in its group (a pause while it is removed)."""
        return self._signal(signal.SIGSTOP, leftovers=True)

    def leftovers_gone(self) -> bool:
        """Nothing is left of the exited stage's group (and the guard let go of it)."""
        if self._popen is None or self._leftovers_alive():
            return False
        GUARD.release(self._popen.pid, self.start_time)
        return True

    def _leftovers_alive(self) -> bool:
        """After the reap: does our group still have live members (and the pid no new owner)?"""
        assert self._popen is not None
        pid = self._popen.pid
        return process_start_time(pid) is None and group_has_live_members(pid)

    def _signal(self, sig: int, *, leftovers: bool) -> bool:
        """Signal the group while it is provably ours; True if a signal was sent.

        Before the reap the pid and pgid are held by our (possibly zombie) child, so the
        group is ours. After it, only with ``leftovers``: the group must still have live
        members and the pid must not belong to a new process (see the module doc).
        """
        popen = self._popen
        if popen is None:
            raise RuntimeError("stage process not started")
        self._await_exit(0)  # an exit not noticed yet is reaped first, as a watcher would
        with self._lock:
            if popen.returncode is None:
                return killpg(popen.pid, sig)
        if not leftovers or not self._leftovers_alive():
            return False
        return killpg(popen.pid, sig)

    def leads_its_session(self) -> bool:
        """Does the stage's pid still name its kernel session (:func:`session_members`)?
        Yes while its main process is not reaped. Once reaped (a job-control shell may end
        while its jobs are stopped), as long as no process has the pid: Linux hands a pid
        out again only once no session uses it, and a process that took it (a login shell
        leads a session whose jobs are groups of their own) would show. What this misses,
        a pid taken by a process that has ended too, needs the pids to wrap around meanwhile."""
        popen = self._popen
        if popen is None:
            return False
        with self._lock:
            if popen.returncode is None:
                return True
        return not os.path.exists(f"/proc/{popen.pid}")

    def pause(self) -> bool:
        """SIGSTOP the whole group: the stage and its children hold no CPU while paused
        (what left the group: :func:`strays_of`). A no-op (False) once the stage has exited.
        """
        return self._signal(signal.SIGSTOP, leftovers=False)

    def resume(self) -> bool:
        """SIGCONT the whole group (also what is left of it after the main process exited,
        so no stopped orphan is left behind). False if nothing was signalled."""
        return self._signal(signal.SIGCONT, leftovers=True)

    def terminate(
        self,
        kill_timeout: float,
        hurry: threading.Event | None = None,
        between: Callable[[], bool] | None = None,
    ) -> int:
        """Stop the stage for good and return its exit code (after its output was read).

        SIGTERM then SIGCONT to the group (a paused group must run to act on the TERM); after
        ``kill_timeout`` seconds, SIGKILL to whatever of the group is still alive: the main
        process or grandchildren that survived it. ``hurry``, once set (a second Ctrl-C),
        ends that wait at once; ``between``, called between its slices, returns True while
        the session is paused, which moves the deadline on. Safe on a stage that already
        exited: then only its leftover group members, if any, are signalled. Raises
        PermissionError rather than hang if the main process can be signalled by neither
        TERM nor KILL (a setuid program as the stage's main process) and does not exit."""
        popen = self._popen
        if popen is None:
            raise RuntimeError("stage process not started")
        self._stopping = True
        if self._await_exit(0) and self._leftovers_alive():
            self._guard()  # released at the exit; this stop removes what it left
        try:
            return self._terminate(popen, kill_timeout, hurry, between)
        finally:
            GUARD.release(popen.pid, self.start_time)

    def _terminate(
        self,
        popen: subprocess.Popen[bytes],
        kill_timeout: float,
        hurry: threading.Event | None,
        between: Callable[[], bool] | None,
    ) -> int:
        deadline = _Deadline(time.monotonic() + max(0.0, kill_timeout), hurry)
        # Its processes that left the group while it runs go with it (told at once,
        # removed below); once it exited, what it left running is left alone (a service).
        strays = [] if self._await_exit(0) else strays_of([self])
        signal_strays(strays, signal.SIGTERM)
        signal_strays(strays, signal.SIGCONT)
        sent = self._signal(signal.SIGTERM, leftovers=True)
        if sent:
            self._signal(signal.SIGCONT, leftovers=True)
            last = time.monotonic()
            while not self._await_exit(min(POLL_SLICE * 5, deadline.left())):
                if between is not None and between():  # paused: the deadline waits
                    deadline.at += time.monotonic() - last
                last = time.monotonic()
                if deadline.left() <= 0:
                    break
            while self._exited.is_set() and self._leftovers_alive():
                remaining = deadline.left()
                if remaining <= 0:
                    break
                time.sleep(min(POLL_SLICE, remaining))
                if between is not None:  # the others paused meanwhile; these go at the deadline
                    between()
        killed = self._signal(signal.SIGKILL, leftovers=True)
        if not (sent or killed) and not self._await_exit(deadline.left()):
            raise PermissionError(f"cannot signal the process group of pid {popen.pid}")
        self._await_exit(None)
        if killed:  # give SIGKILLed leftovers a moment to be gone before reporting
            end = time.monotonic() + 1.0
            while self._leftovers_alive() and time.monotonic() < end:
                time.sleep(POLL_SLICE)
        if strays:  # what is left of them once the group's time is up
            kill_groups(strays, deadline.left(), deadline.hurry)
        code = self.wait()
        assert code is not None
        return code


def strays_of(procs: Iterable[StageProcess]) -> list[SessionProcess]:
    """The processes of these attempts that left their group (``setsid``, a daemon's double
    fork, a job-control shell's jobs), which a signal to the group misses: found by the
    ``VC_SESSION_ID``, ``VC_STAGE`` and ``VC_ATTEMPT`` they inherited, and by the kernel
    session their stage leads (``app.runner.groups``), which also finds those that cleared
    their environment. A few passes over /proc, so only on a pause, a resume and a stop,
    never per line or per turn."""
    groups: dict[tuple[str, str | None, str | None], int] = {}
    leaders: dict[int, tuple[str, int | None]] = {}
    for proc in procs:
        session_id = proc.env.get("VC_SESSION_ID")
        if session_id and proc.pid is not None:
            stage, attempt = proc.env.get("VC_STAGE"), proc.env.get("VC_ATTEMPT")
            groups[(session_id, stage, attempt)] = proc.pid
            if proc.leads_its_session():
                number = int(attempt) if attempt and attempt.isdigit() else None
                leaders[proc.pid] = (stage or "", number)
    found: list[SessionProcess] = []
    for session_id in {key[0] for key in groups}:
        for other in find_session_processes(session_id):
            attempt = None if other.attempt is None else str(other.attempt)
            group = groups.get((session_id, other.stage, attempt))
            if group is not None and other.pgid != group:
                found.append(other)
    seen = {p.pid for p in found}
    found.extend(p for p in session_members(leaders) if p.pid not in seen)
    return found


def signal_strays(strays: Iterable[SessionProcess], sig: int) -> None:
    """Signal the groups of :func:`strays_of`'s processes (never this process' own)."""
    own = os.getpgrp()
    for group in sorted({p.pgid for p in strays}):
        if group > 1 and group != own:
            killpg(group, sig)
