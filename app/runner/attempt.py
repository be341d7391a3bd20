"""One attempt of a task stage while it runs: its process, its output on the way to the log,
and the bookkeeping of its supervision (running time against ``timeout``, paused or not,
coalesced progress writes). The runner's scheduler holds one per running instance and asks
it what happened since the last look; the store writes stay in the runner.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.logging import UNSAFE_IN_FILE, Logging, escape_for_file, format_line
from app.runner.lines import parse_progress
from app.runner.outputs import OUTPUT_TAG, OutputRecorder
from app.runner.process import StageProcess, signal_strays, strays_of
from store.changes import Lease
from store.definition_base import DEFAULT_KILL_TIMEOUT
from store.log_ingest import LogLines
from store.queries import StageView

OUTPUT_CATEGORY = "workflow.stage.integration"
_PROGRESS_TAG = "::progress"
#: Progress writes are coalesced to at most one per this many seconds per stage.
PROGRESS_INTERVAL = 0.3


@dataclass
class AttemptResult:
    """How one attempt of a task stage ended."""

    kind: str  # "completed" | "failed"
    error: str | None = None
    exit_code: int | None = None
    #: What the attempt reported with ``::output`` lines (stored before it is returned).
    outputs: dict[str, str] = field(default_factory=dict)
    #: When the stage's process exited (unix time), and the store mirror's mark of its
    #: last output lines (see :meth:`~app.runner.supervision.Supervision._try_complete`).
    ended_at: float | None = None
    output_mark: int = 0


class StageOutput:
    """Turns a stage's output batches into log records, at the speed a stage can print.

    Called from the process' reader threads with one chunk's lines at a time (StageProcess
    gives every line of a batch the same time and stream). Per batch it does one write to
    the session's log file and one hand-over to the store mirror (the texts as one
    ``LogLines`` group), and no per-line Python work. The file lines of a batch share one
    prefix (time, level, category, session, stage), so the batch is formatted with a single
    ``str.replace``. Valid ``::progress`` lines are left out of the log (the progress bar
    shows them); the check costs one substring search per batch. Texts are kept as the
    process layer decoded them (invalid UTF-8 as ``\\xNN``, NUL as ``\\x00``); in the file
    control characters are written out (``\\r``, ``\\x1b``), as
    :func:`app.logging.format_line` does, so a stage can neither forge a record nor drive
    the terminal of whoever reads the file.
    """

    #: Most output held back before the attempt is recorded, in about bytes (characters
    #: plus 64 per line): a store that does not answer must not make it pile up in memory.
    #: Past it, what was held is written and lines go through as they come.
    HOLD_MAX = 4 * 1024 * 1024

    def __init__(
        self,
        logging: Logging,
        session_id: str,
        stage: str,
        outputs: OutputRecorder | None = None,
        lease: Lease | None = None,
    ) -> None:
        self._files = logging.files
        #: The runner's claim: its lines are stored only while it holds (store.log_ingest).
        self._lease = lease
        self.outputs = outputs
        self._mirror = logging.mirror
        self._forgotten = logging.forgotten
        self.session_id = session_id
        self.stage = stage
        self.last_line: str | None = None
        self.last_stderr: str | None = None
        self.lines = 0
        #: The store mirror's mark of the last lines handed to it (0: none yet): they are
        #: in the store once ``mirror.stored(mirror_mark)``.
        self.mirror_mark = 0
        #: The first error writing held output (e.g. a full disk): written from the
        #: runner's thread, it is kept here instead of raised there.
        self.error: Exception | None = None
        #: Output read before :meth:`release`: the stage starts before its attempt is
        #: recorded (the write overlaps its start-up), and its first lines must not come
        #: before "attempt N" in the log.
        self._held: list[list[tuple[float, str, str]]] | None = []
        self._held_cost = 0
        self._lock = threading.Lock()

    def release(self) -> None:
        """Write what was held back, then write as it comes. Idempotent."""
        with self._lock:
            self._write_held()

    def _write_held(self) -> None:
        """Under the lock: write the held batches, then stop holding. Holding stops only
        once they are written, so a batch the reader brings meanwhile waits on the lock
        and comes after them."""
        held = self._held
        if held is None:
            return
        try:
            for lines in held:
                try:
                    self._write(lines)
                except Exception as exc:
                    self.error = self.error or exc
        finally:
            self._held = None

    def __call__(self, lines: list[tuple[float, str, str]]) -> None:
        if not lines:
            return
        if self._held is not None:
            with self._lock:
                if self._held is not None:
                    self._held.append(lines)
                    self._held_cost += sum(len(text) + 64 for _, _, text in lines)
                    if self._held_cost > self.HOLD_MAX:
                        self._write_held()
                    return
        self._write(lines)

    def _write(self, lines: list[tuple[float, str, str]]) -> None:
        if self.session_id in self._forgotten:
            return  # deleted: no file, no rows outlive it (Logging.forget)
        at, stream, _ = lines[0]
        texts = [text for _, _, text in lines]
        body = "\n".join(texts)
        outputs = self.outputs if self.outputs is not None and OUTPUT_TAG in body else None
        if _PROGRESS_TAG in body:
            texts = [t for t in texts if parse_progress(t) is None]
            if not texts:
                return
            body = "\n".join(texts)
        level = "WARNING" if stream == "stderr" else "INFO"
        sid, stage = self.session_id, self.stage
        prefix = format_line(at, level, OUTPUT_CATEGORY, sid, stage, "")[:-1]
        if UNSAFE_IN_FILE.search(body):
            body = escape_for_file(body)
        self._files.write_session(sid, prefix + body.replace("\n", "\n" + prefix) + "\n")
        if self._mirror is not None:
            self.mirror_mark = self._mirror.add(
                LogLines(sid, at, level, OUTPUT_CATEGORY, stage, texts, self._lease),
                wait_for_room=True,
            )
        self.lines += len(texts)
        self.last_line = texts[-1]
        if stream == "stderr":
            self.last_stderr = texts[-1]
        if outputs is not None:
            outputs.scan(texts)  # logged above like any line, warnings after it


class RunningAttempt:
    """A started attempt of one instance, from its spawn until its end is recorded."""

    def __init__(
        self,
        stage: StageView,
        attempt: int,
        proc: StageProcess,
        output: StageOutput,
        recorder: OutputRecorder,
        *,
        timeout: float | None,
        kill_timeout: float,
    ) -> None:
        self.stage = stage
        self.attempt = attempt
        self.proc = proc
        self.output = output
        self.recorder = recorder
        self.timeout = timeout
        self.kill_timeout = kill_timeout
        self.paused = False
        #: Stopped because the store was out of reach (:func:`hold_all`), not by a pause:
        #: only :func:`release_all` continues it.
        self.held = False
        self.active_time = 0.0
        self._last_tick = time.monotonic()
        self._progress_at = 0.0
        self.progress_written: float | None = None
        #: Set once the process exited 0: the attempt waits for its output to be in the
        #: store before it is recorded COMPLETED.
        self.finished: AttemptResult | None = None

    @property
    def name(self) -> str:
        return self.stage.name

    def tick(self, now: float) -> None:
        """Count running time (a paused stage is not timed out)."""
        if not self.paused:
            self.active_time += now - self._last_tick
        self._last_tick = now

    def timed_out(self) -> bool:
        return self.timeout is not None and not self.paused and self.active_time > self.timeout

    def progress_due(self, now: float, exited: bool) -> float | None:
        """The progress value to write now, if any (one write per PROGRESS_INTERVAL, and the
        last value when the process has exited)."""
        value = self.proc.progress
        if value is None or value == self.progress_written:
            return None
        if not exited and now - self._progress_at < PROGRESS_INTERVAL:
            return None
        self._progress_at = now
        return value

    def pause(self) -> bool:
        """SIGSTOP the group; False if it had exited already (its exit is handled next)."""
        if self.paused or not self.proc.pause():
            return False
        self.paused = True
        return True

    @property
    def resumable(self) -> bool:
        return self.paused and not self.held

    def resume(self) -> bool:
        if not self.resumable:
            return False
        self.proc.resume()
        self.paused = False
        self._last_tick = time.monotonic()
        return True

    def terminate(
        self, hurry: threading.Event | None = None, between: Callable[[], bool] | None = None
    ) -> int:
        return self.proc.terminate(self.kill_timeout, hurry, between)

    def continue_leftovers(self) -> None:
        """The attempt ended while paused (its main process killed): what it left, in its
        group or out of it, was stopped by the pause and is continued, as what an attempt
        leaves running is (nothing of an ended attempt stays stopped for ever)."""
        self.proc.resume()
        signal_strays(strays_of([self.proc]), signal.SIGCONT)
        self.paused = False


@dataclass
class Leftovers:
    """What a failed attempt left in its group, being removed before its retry: SIGTERM
    sent, SIGKILL at ``deadline`` (monotonic). A pause stops them (SIGSTOP) and holds the
    deadline, as it holds everything of the session: ``stopped_at`` is when."""

    attempt: RunningAttempt
    deadline: float
    stopped_at: float | None = None


def pause_leftovers(items: Iterable[Leftovers]) -> None:
    """SIGSTOP the leftovers not stopped yet; their deadlines wait."""
    now = time.monotonic()
    for item in items:
        if item.stopped_at is None:
            with contextlib.suppress(Exception):  # gone meanwhile: nothing to stop
                item.attempt.proc.pause_leftovers()
            item.stopped_at = now


def resume_leftovers(items: Iterable[Leftovers]) -> None:
    """SIGCONT the stopped leftovers; their deadlines move by the time they were stopped."""
    now = time.monotonic()
    for item in items:
        if item.stopped_at is not None:
            with contextlib.suppress(Exception):
                item.attempt.proc.resume()
            item.deadline += now - item.stopped_at
            item.stopped_at = None


def pause_all(attempts: Iterable[RunningAttempt]) -> list[RunningAttempt]:
    """SIGSTOP every running attempt's group, then what left those groups (one pass over
    /proc for all, after every group is stopped); the attempts paused now."""
    paused = [a for a in attempts if a.finished is None and a.pause()]
    if paused:
        signal_strays(strays_of(a.proc for a in paused), signal.SIGSTOP)
    return paused


def resume_all(attempts: Iterable[RunningAttempt]) -> list[RunningAttempt]:
    """SIGCONT what left every paused attempt's group, then the group; the attempts resumed
    now. In that order: a job-control shell continued while its job is still stopped may
    end (its ``wait`` is over), and the kernel hangs up a stopped group that is orphaned."""
    waking = [a for a in attempts if a.resumable]
    if waking:
        signal_strays(strays_of(a.proc for a in waking), signal.SIGCONT)
    return [a for a in waking if a.resume()]


def hold_all(attempts: Iterable[RunningAttempt]) -> list[RunningAttempt]:
    """Stop the running attempts for a store outage (as :func:`pause_all`), marked held: a
    resume read meanwhile does not continue them, only :func:`release_all` does. Called
    from the heartbeat thread as well as the loop's."""
    held = []
    for attempt in attempts:
        if attempt.finished is None and not attempt.paused:
            attempt.held = True  # first: a resume read meanwhile must not continue it
            if attempt.pause():
                held.append(attempt)
            else:
                attempt.held = False
    if held:
        signal_strays(strays_of(a.proc for a in held), signal.SIGSTOP)
    return held


def release_all(attempts: Iterable[RunningAttempt]) -> list[RunningAttempt]:
    """Continue what :func:`hold_all` stopped (a pause read since stops them again)."""
    held = [a for a in attempts if a.held]
    for attempt in held:
        attempt.held = False
    return resume_all(held)


def terminate_all(
    attempts: list[RunningAttempt],
    hurry: threading.Event | None = None,
    between: Callable[[], bool] | None = None,
) -> list[int | None]:
    """Stop every attempt at once (TERM, then KILL after each one's ``kill_timeout``, or
    as soon as ``hurry`` is set): the waits overlap, so stopping eight stages takes one
    ``kill_timeout``, not eight. ``between`` is :meth:`StageProcess.terminate`'s (paused?),
    called by one stop at a time. Returns each one's exit code, in order (None if it could
    not be stopped)."""
    codes: list[int | None] = [None] * len(attempts)
    one_at_a_time = threading.Lock()

    def look() -> bool:
        assert between is not None
        with one_at_a_time:
            return between()

    def stop(index: int) -> None:
        with contextlib.suppress(Exception):
            codes[index] = attempts[index].terminate(hurry, look if between else None)

    if len(attempts) == 1:
        stop(0)
        return codes
    threads = [threading.Thread(target=stop, args=(i,), daemon=True) for i in range(len(attempts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return codes


def config_seconds(value: Any) -> float | None:
    """A duration from a stage's config (validated > 0 when the workflow was loaded)."""
    if value is None or value == "":
        return None
    return float(value)


def kill_timeout_of(config: Mapping[str, Any]) -> float:
    """Seconds a stage's processes get between SIGTERM and SIGKILL: its ``kill_timeout``,
    else the default."""
    return config_seconds(config.get("kill_timeout")) or DEFAULT_KILL_TIMEOUT
