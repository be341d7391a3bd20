"""The runner's link to the store: every read and write it makes goes through here, so
what an outage, a full disk, a permanent refusal or a takeover does to a runner is in one
place (docs/ARCHITECTURE.md, "The runner").

* writes are retried with a backoff while the store is away (:meth:`StoreLink._persist`);
  the stages run on meanwhile, their output goes to the log file;
* the desired state is read only when something may have changed (a NOTIFY on
  PostgreSQL, ``PRAGMA data_version`` on SQLite): :meth:`StoreLink._desired`;
* the heartbeat thread keeps the claim; a refused beat, a fence after an outage or a write
  the store refused for the runner's lease (:class:`store.errors.LeaseLost`: every write of
  the runner's managers is conditioned on its claim, in the write itself) means another
  runner took over, and nothing more is written;
* an error that waiting will not cure stops the runner with one line
  (:meth:`StoreLink._stop_for_good`).

:class:`StoreLink` is the base of :class:`app.runner.runner.Runner`: it holds no state of
its own (the runner's ``__init__`` sets what is declared below).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.logging import Logging
from store import FlowSessionManager
from store.changes import Lease
from store.errors import (
    InvalidTransition,
    LeaseLost,
    SessionNotFound,
    StoreUnavailable,
    transient_errors,
)
from store.failures import PermanentStoreError, StoreFailure, classify, schema_note
from store.liveness import HEARTBEAT_INTERVAL, STALE_AFTER, stale_after_of
from store.queries import SessionView, StageView, get_session_view, last_session_change
from store.space import StoreSpace, is_disk_full
from store.status import SessionStatus

#: Poll period when no stage runs (paused between stages, waiting at a manual gate): still
#: well under the 250 ms the design allows, and cheap enough for an idle runner (< 1% CPU).
IDLE_POLL_INTERVAL = 0.2
#: While the store is unreachable, reads and writes are retried with a backoff from the
#: first to the second value (seconds); the stage keeps running meanwhile.
STORE_RETRY = (0.25, 5.0)
#: After Ctrl-C with the store unreachable: how long to keep trying to record the pause.
INTERRUPTED_STORE_WAIT = 10.0
#: On PostgreSQL the runner LISTENs for changes of its session and reads its state only
#: when notified, or after this many quiet seconds (a safety net for a silent connection).
#: On SQLite it reads its state only when ``PRAGMA data_version`` says another connection
#: committed (microseconds, no table read): a state read costs a millisecond or two on a
#: slow machine, which five times a second kept an idle runner near 1% of a core.
NOTIFY_RESYNC = 1.0
LISTEN_AFTER = 1.0
STAGE_CATEGORY = "workflow.stage.operations"
SESSION_CATEGORY = "workflow.session.operations"


_T = TypeVar("_T")


#: Errors that mean "the store is away for now": retried, never fatal to a running stage.
_STORE_ERRORS = transient_errors()


def _permanent(exc: BaseException) -> StoreFailure | None:
    """The store failure ``exc`` is, if waiting will not cure it (see store.failures)."""
    failure = classify(exc)
    return failure if failure is not None and failure.permanent else None


class Interrupted(Exception):
    """Ctrl-C / SIGTERM on the runner: pause the session so the user can resume it later."""


class _TakenOver(Exception):
    """The session is not this runner's any more (a refused heartbeat, or a write the store
    refused for the runner's lease): stop without touching it."""


@dataclass
class Outcome:
    """How a run ended: the exit code of `vc flow run` and a line for the user."""

    code: int
    message: str
    status: str | None = None
    #: Set when the run stopped because the store refuses it for good: what it refuses
    #: with (store.failures). Nothing more could be recorded; the session is left for
    #: ``resume``.
    store_failure: str | None = None


class StoreLink:
    """What the runner does with the store (see the module doc)."""

    factory: Callable[[], Any]
    log: Logging
    session_id: str
    host: str
    pid: int
    on_update: Callable[[Any], None] | None
    _db: Any
    _raw_sessions: FlowSessionManager
    sessions: Any
    stages: Any
    _lease: Lease | None
    _space: StoreSpace | None
    _store_full: bool
    _stop: threading.Event
    _lost: threading.Event
    _interrupted: threading.Event
    _wake: threading.Event
    _notifier: Any
    _read_next: bool
    _listen_at: float
    _last_desired: tuple[str, str | None] | None
    _down_since: float | None
    _holding: bool
    _beat_ok_at: float
    _hold_lock: threading.Lock
    _failure: StoreFailure | None
    _store_errors: int
    _retry_at: float
    _backoff: float
    _state_read: bool
    control_notes: list[str]
    paused_by: str | None

    def _say(self, text: str, level: str = "INFO", stage: str | None = None) -> None:
        from loguru import logger

        category = STAGE_CATEGORY if stage else SESSION_CATEGORY
        logger.bind(
            category=category, session_id=self.session_id, stage=stage, lease=self._lease
        ).log(level, text)

    def _notify(self) -> None:
        if self.on_update is not None:
            try:
                self.on_update(self)
            except Exception:
                pass  # a display problem must never stop the session

    def _listen(self) -> Any:
        """Something whose ``changed()`` says when the state must be read again. On
        PostgreSQL: LISTEN for changes of this session (another host's pause arrives as a
        notification instead of waiting for a poll). On SQLite: ``PRAGMA data_version`` on
        a connection of its own, which moves whenever any connection commits. Opened once
        the session has run for LISTEN_AFTER seconds: a quick session (a worker drains
        thousands) is done before a connection of its own would pay off."""
        self._listen_at = float("inf")  # one try
        bind = self._db.get_bind()
        if bind.dialect.name == "sqlite":
            from store.watch import ChangeWatcher

            self._notifier = ChangeWatcher(bind)
            return self._notifier
        if bind.dialect.name != "postgresql":
            return None
        from store.notify import SessionNotifier

        try:
            self._notifier = SessionNotifier(bind, self.session_id, resync=NOTIFY_RESYNC)
        except Exception:
            self._notifier = None  # polling works without it
        return self._notifier

    def _hold(self, lease: Lease) -> None:
        """The claim succeeded: from now on every write of the runner's managers is
        conditioned on ``lease`` in the write itself (store.changes), so once another runner
        holds the session nothing of this one lands, whatever the timing."""
        self._lease = lease
        self._raw_sessions.lease = lease
        self.stages.raw.lease = lease

    def _beat(self) -> None:
        """Heartbeat thread: refresh ``heartbeat_at`` every HEARTBEAT_INTERVAL seconds on a
        connection of its own, so a long SIGKILL wait or a big log flush never makes a live
        runner look orphaned. A refused beat means another runner took over: stop."""
        with self.factory() as db:
            manager = FlowSessionManager(db, actor="runner", lease=self._lease)
            while not self._stop.wait(HEARTBEAT_INTERVAL):
                try:
                    if not manager.heartbeat(
                        self.session_id, runner_host=self.host, runner_pid=self.pid
                    ):
                        if not self._stop.is_set():
                            self._lost.set()
                            self._wake.set()
                        return
                    self._beat_ok_at = time.monotonic()
                except Exception as exc:
                    self._maybe_hold()
                    with contextlib.suppress(Exception):
                        # away for a moment: try again next beat, on a new connection (a
                        # store that changed under the old one is seen as it is now)
                        db.invalidate()
                    failure = _permanent(exc)
                    if failure is not None:  # the loop stops on it, see _check_flags
                        self._failure = self._failure or failure
                        self._wake.set()
                        return
                    if self._space is not None and is_disk_full(exc):
                        self._space.release_reserve()  # the claim must stay recorded

    # -- reading the store -----------------------------------------------------------------------

    def _view(self) -> SessionView:
        def read() -> SessionView | None:
            self._db.commit()
            return get_session_view(self._db, self.session_id)

        view = self._persist(read)
        if view is None:
            raise SessionNotFound(f"session {self.session_id[:12]} was deleted")
        return view

    # -- the store going away ----------------------------------------------------------------------

    def _persist(self, call: Callable[[], _T]) -> _T:
        """Run a store call, retrying with a backoff while the store is unreachable: what
        the runner records (a stage's start and end, the session's end) is never dropped,
        it waits for the store. The stage's process is not touched meanwhile; its output
        goes to the session log file and is mirrored to the store when it is back. After
        Ctrl-C it gives up after INTERRUPTED_STORE_WAIT seconds."""
        delay = STORE_RETRY[0]
        give_up_at: float | None = None
        while True:
            if self._lost.is_set():
                raise self._lost_error()
            if self._failure is not None:  # seen by the heartbeat meanwhile
                raise PermanentStoreError(self._failure.what)
            try:
                if self._down_since is not None:
                    self._fence()
                result = call()
            except _STORE_ERRORS as exc:
                if self._disk_full(exc):
                    continue  # the reserve made room: write again at once
                self._store_lost(exc)  # raises PermanentStoreError if waiting won't cure it
                if self._interrupted.is_set():
                    now = time.monotonic()
                    give_up_at = give_up_at or now + INTERRUPTED_STORE_WAIT
                    if now > give_up_at:
                        raise StoreUnavailable(
                            f"the store is unreachable: {_first_line(exc)}"
                        ) from None
                time.sleep(delay)
                delay = min(delay * 2, STORE_RETRY[1])
                continue
            except LeaseLost as exc:
                taken_over = self._taken_over(exc)  # first: held stages stay stopped
                self._store_back()  # the store answered: not ours any more
                raise taken_over from None
            except BaseException as exc:
                self._raise_if_permanent(exc)  # e.g. permission denied on a table
                self._store_back()  # the store answered (with a refusal)
                raise
            self._store_back()
            return result

    def _taken_over(self, exc: LeaseLost) -> _TakenOver:
        """A write refused for the lease: the session is another runner's (or deleted);
        the loop stops, terminating its stages, and writes nothing more."""
        self._lost.set()
        self._wake.set()
        if exc.deleted:
            self.log.forget(self.session_id)  # as the delete did (Logging.forget)
        return _TakenOver(str(exc))

    #: Whether the session was found deleted once the lease was lost (read once).
    _found_deleted: bool | None = None

    def _lost_error(self, when: str = "") -> _TakenOver:
        """The lease is lost (a refused heartbeat): the session was deleted, which one
        read tells (then forgotten, as the delete did: its stages' stop writes no file of
        it), or another runner took it over (``when``: said after it)."""
        if self._found_deleted is None:
            try:
                self._found_deleted = self._raw_sessions.state(self.session_id) is None
            except Exception:
                self._found_deleted = False  # cannot tell: the usual words
        if self._found_deleted:
            self.log.forget(self.session_id)
            return _TakenOver(f"session {self.session_id[:12]} was deleted")
        return _TakenOver(f"another runner took over session {self.session_id[:12]}{when}")

    def _flush_logs(self) -> None:
        """Before the session ends: its log lines are in the store first, so whoever sees
        COMPLETED or FAILED (a script, `session logs`) sees the whole log too."""
        if self._down_since is None:
            self.log.flush()

    def _fence(self) -> None:
        """Before the first read or write after an outage: is the session still ours? Its
        heartbeat went stale meanwhile, so another host may have taken it over; then this
        runner must not write anything more (the heartbeat is refreshed otherwise)."""
        if not self._raw_sessions.heartbeat(
            self.session_id, runner_host=self.host, runner_pid=self.pid
        ):
            self._lost.set()
            raise self._lost_error(" while the store was unreachable")

    def _landed(self, errors_before: int, stage: StageView, status: str, attempt: int) -> bool:
        """A write refused after the store went away in the middle of it: did its first
        try commit before the connection broke (the stage is as we wanted it)?"""
        if self._store_errors == errors_before:
            return False
        row = self.stages.get_stage(stage.id)
        return bool(row.status == status and row.attempt == attempt)

    def _disk_full(self, exc: BaseException) -> bool:
        """A write of ours failed because the store's disk is full: release the store's
        reserve (see :mod:`store.space`) so that the session's state can still be recorded
        (True: write again now). Log rows have given way already (the mirror holds them
        back); the session stops before its next stage (:meth:`_stop_on_full_disk`).
        False when there is no reserve left to release: then it is waited for like an
        unreachable store."""
        if self._space is None or not is_disk_full(exc):
            return False
        with contextlib.suppress(Exception):
            self._db.rollback()
        first, self._store_full = not self._store_full, True
        released = self._space.release_reserve()
        if released:
            self._say(
                f"the disk of the store {self._space.database} is full: its reserve is "
                "released so that this session's state can still be recorded; log lines "
                "give way, and no further stage starts",
                "WARNING",
            )
        elif first:
            self._say(f"the disk of the store {self._space.database} is full", "WARNING")
        return released

    def _store_is_full(self) -> bool:
        mirror = self.log.mirror
        return self._store_full or (mirror is not None and mirror.full)

    def _stop_on_full_disk(self) -> Outcome | None:
        """Before a stage (or a retry) starts: a store whose disk is full cannot keep
        the session's log, and its state lives on the reserve, so the session fails here,
        saying so, instead of running stage after stage unrecorded; once there is room,
        `retry` goes on from here (its COMPLETED stages are kept)."""
        if not self._store_is_full():
            return None
        reason = self._full_disk_reason()
        self._say(f"the session stops: {reason}", "ERROR")
        return self._fail_session(reason)

    def _fail_session(self, reason: str) -> Outcome:
        """Fail the session with ``reason``, its log in the store first; an abort or a
        delete that came first stands."""
        try:
            self._flush_logs()
            self.sessions.fail(self.session_id, reason)
        except InvalidTransition:
            return self._stopped_outcome()
        return Outcome(1, reason, SessionStatus.FAILED)

    def _full_disk_reason(self) -> str:
        where = f" {self._space.database}" if self._space is not None else ""
        mirror = self.log.mirror
        lost = mirror.dropped_by_session.get(self.session_id, 0) if mirror is not None else 0
        missing = f", {lost} log line(s) of this session could not be stored" if lost else ""
        return (
            f"the disk of the store{where} is full{missing}; free some space, then retry "
            "the session"
        )

    def _log_losses(self) -> str | None:
        """What of this session's log could not be written (None: nothing), for the
        reason of a session that completed all the same."""
        parts = []
        mirror = self.log.mirror
        stored = mirror.dropped_by_session.get(self.session_id, 0) if mirror is not None else 0
        if stored:
            parts.append(f"{stored} log line(s) are missing from the store")
        files = self.log.files
        name = files.session_path(self.session_id).name
        in_file = files.lost.get(name, 0)
        if in_file:
            why = files.last_error.get(name, "it could not be written")
            parts.append(
                f"{in_file} line(s) are missing from the session log file "
                f"{files.root / name} ({why})"
            )
        return "; ".join(parts) or None

    def _raise_if_permanent(self, exc: BaseException) -> None:
        """A store error that waiting will not cure (see store.failures) ends the run with
        :class:`PermanentStoreError`, instead of a backoff that would never end."""
        if isinstance(exc, PermanentStoreError):
            raise exc
        failure = _permanent(exc)
        if failure is None:
            return
        self._failure = self._failure or failure
        with contextlib.suppress(Exception):
            self._db.rollback()
        raise PermanentStoreError(failure.what) from None

    def _stop_for_good(self, failure: StoreFailure) -> Outcome:
        """The store refuses this runner for good: nothing more can be recorded, so the
        session stays as the store last saw it (ACTIVE, its runner gone: orphaned), for
        ``vc flow session resume`` once the cause is fixed. The running stage's processes
        were terminated on the way here (:meth:`_attempt`), so nothing of it runs on
        unsupervised. One line names the cause, in the session log and to the caller."""
        short = self.session_id[:12]
        if failure.about_schema:
            note = schema_note(self._db.get_bind())
            if note is not None:
                failure = StoreFailure("permanent", f"{note}; {failure.what}", True)
        line = (
            f"stopped: the store refuses this runner ({failure.what}); waiting will not "
            f"cure it: fix it, then 'vc flow session resume {short}'"
        )
        self._say(line, "ERROR")
        return Outcome(1, line, None, store_failure=failure.what)

    def _store_lost(self, exc: BaseException) -> None:
        """A store call failed for a reason a wait may cure: back off. Raises
        :class:`PermanentStoreError` when waiting will not cure it."""
        self._raise_if_permanent(exc)
        self._store_errors += 1
        with contextlib.suppress(Exception):
            # The connection is not trusted any more: the next try opens a new one (a
            # server connection is invalidated by the driver anyway), so a store that
            # changed under it (a SQLite file made read-only, its database dropped) is
            # seen as it is now instead of through a connection opened before.
            self._db.invalidate()
        now = time.monotonic()
        self._retry_at = now + self._backoff
        self._backoff = min(self._backoff * 2, STORE_RETRY[1])
        if self._down_since is None:
            self._down_since = now
            what = (
                "the store's disk is full"
                if is_disk_full(exc)
                else f"store unreachable ({_first_line(exc)})"
            )
            self._say(f"{what}; running stages go on, retrying", "WARNING")
        self._maybe_hold()

    def _maybe_hold(self) -> None:
        """Once no heartbeat has landed for half the stale limit (:meth:`_hold_after`: at
        most half the default one), stop the running stages until the store answers:
        another host may take the session over when its heartbeat is stale, and its
        takeover cannot reach this host's processes, so they must be stopped by then.
        Counted from the last beat that landed (what other hosts judge by), and asked both
        by the loop's retries and by the heartbeat thread's own failures, every 2 s, so a
        loop waiting on a slow retry does not delay it. Only where another host can take
        over: a SQLite store is taken over on this host alone, where the takeover removes
        the old processes (docs/ARCHITECTURE.md §6)."""
        if self._holding or time.monotonic() - self._beat_ok_at < self._hold_after():
            return
        with self._hold_lock:
            if self._holding or self._lost.is_set():
                return
            self._holding = True
            away = time.monotonic() - self._beat_ok_at
            self._say(
                f"no heartbeat has reached the store for {away:.0f} s: running stages "
                "stopped (SIGSTOP) until it answers, so that a host that takes the session "
                "over meanwhile does not run them beside their copy",
                "WARNING",
            )
            self._hold_stages()

    def _hold_after(self) -> float:
        """Half the stale limit, and no later than half the default one: the host that
        takes the session over judges it stale by its own ``VC_STALE_AFTER``, which may be
        the default where this host raised its own."""
        if self._db.get_bind().dialect.name == "sqlite":
            return math.inf
        return min(stale_after_of(self._db), STALE_AFTER) / 2

    def _hold_stages(self) -> None:
        """Stop the running stages for an outage (the supervisor knows them)."""

    def _release_stages(self, paused: bool = False) -> None:
        """Continue what :meth:`_hold_stages` stopped; ``paused`` (the session was paused
        meanwhile): they stay stopped, recorded paused."""

    def _store_back(self) -> None:
        if self._holding:
            # The held stages go on, or stay stopped, as the state says: read it next
            # (_desired), before any SIGCONT, so a pause written meanwhile never lets
            # them run for a moment.
            self._read_next = True
        if self._down_since is None:
            return
        away = time.monotonic() - self._down_since
        self._down_since = None
        self._backoff = STORE_RETRY[0]
        self._say(f"store reachable again after {away:.1f} s")

    def _release_held(self, paused: bool) -> None:
        """The store answered with the session's state: what :meth:`_maybe_hold` stopped
        goes on, or, the session ``paused`` meanwhile, stays stopped as paused (taken
        over, it stays stopped until the loop removes it)."""
        with self._hold_lock:
            if not self._holding or self._lost.is_set():
                return
            self._holding = False
            self._beat_ok_at = time.monotonic()  # the store answered: a beat follows
            if not paused:
                self._release_stages()
        if paused:
            self._say(
                "the session was paused while the store was out of reach: the stages "
                "stopped meanwhile stay stopped"
            )
            self._release_stages(paused=True)  # writes: out of the lock the beat takes
            return
        self._say("stages stopped while the store was out of reach continued (SIGCONT)")

    def _desired(self, fresh: bool = False) -> tuple[str, str | None] | None:
        """(status, reason) the front ends want, None if the session was deleted. Raises
        :class:`Interrupted` after Ctrl-C and :class:`_TakenOver` when another runner owns
        the session now."""
        self._check_flags()
        if self._down_since is not None and time.monotonic() < self._retry_at:
            return self._last_desired
        notifier = self._notifier
        if notifier is None and time.monotonic() >= self._listen_at:
            notifier = self._listen()
        fresh, self._read_next = self._read_next or fresh, False
        if (
            not fresh
            and notifier is not None
            and self._down_since is None
            and not self._maybe_changed(notifier)
        ):
            return self._last_desired
        try:
            if self._down_since is not None:
                self._fence()
            state = self._raw_sessions.state(self.session_id)
        except _STORE_ERRORS as exc:
            self._store_lost(exc)
            return self._last_desired
        except Exception as exc:
            self._raise_if_permanent(exc)
            raise
        self._store_back()
        self._state_read = True
        desired = None if state is None else (state[0], state[2])
        if desired is None:
            self.log.forget(self.session_id)
        if self._holding:
            self._release_held(paused=desired is not None and desired[0] == SessionStatus.PAUSED)
        previous, self._last_desired = self._last_desired, desired
        if self.on_update is not None and (
            desired is None or previous is None or desired[0] != previous[0]
        ):
            self._seen_change(desired)
        return desired

    def _seen_change(self, desired: tuple[str, str | None] | None) -> None:
        """The session changed state under this runner: who did it, for the foreground
        display ("paused by ana on build-02"). Its own changes (a gate's pause, its claim)
        are no news; one read of the newest event into that state, only on a change."""
        if desired is None:
            self.paused_by = None
            self.control_notes.append("session deleted")
            self._notify()
            return
        status, _ = desired
        try:
            event = last_session_change(self._db, self.session_id, status)
            self._db.commit()
        except _STORE_ERRORS:
            with contextlib.suppress(Exception):
                self._db.rollback()
            event = None
        if event is not None and (event.host, event.pid) == (self.host, self.pid):
            return
        who = f"{event.actor} on {event.host}" if event is not None else "someone"
        self.paused_by = who if status == SessionStatus.PAUSED else None
        what = _DONE.get(event.op if event is not None else "", status.lower())
        self.control_notes.append(f"session {what} by {who}")
        self._notify()

    @staticmethod
    def _maybe_changed(notifier: Any) -> bool:
        try:
            return bool(notifier.changed())
        except Exception:
            return True  # cannot tell: read the state (whose errors are handled)

    def _check_flags(self) -> None:
        mirror = self.log.mirror
        failure = self._failure or (mirror.failure if mirror is not None else None)
        if failure is not None:
            self._failure = failure
            raise PermanentStoreError(failure.what)
        if self._interrupted.is_set():
            raise Interrupted
        if self._lost.is_set():
            raise self._lost_error()

    def _idle(self) -> None:
        """Sleep one idle poll; Ctrl-C or a lost heartbeat wakes it at once."""
        self._wake.wait(IDLE_POLL_INTERVAL)
        self._wake.clear()

    def _stopped_outcome(self) -> Outcome:
        desired = self._desired(fresh=True)
        if desired is None:
            return Outcome(1, "session deleted", None)
        status, reason = desired
        return Outcome(1, f"session {reason or status.lower()}", status)


#: How an operation on the session reads in the foreground display's notes.
_DONE = {"pause": "paused", "resume": "resumed", "abort": "aborted", "fail": "failed"}


class _Persistent:
    """A manager whose calls go through :meth:`Runner._persist` (retried while the store
    is unreachable); ``raw`` is the manager itself, for calls that must not wait."""

    def __init__(self, manager: Any, runner: StoreLink) -> None:
        self.raw = manager
        self._runner = runner

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.raw, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return self._runner._persist(lambda: method(*args, **kwargs))

        return call


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
