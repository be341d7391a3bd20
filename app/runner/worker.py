"""`vc flow worker [--concurrency N] [--workflow W]`: run queued sessions (docs/ARCHITECTURE.md §9).

A worker claims queued sessions (`vc flow run WORKFLOW --queue`) one at a time through
:meth:`store.FlowSessionManager.claim_queued` — atomic across processes and hosts, so two
workers never run one session — and runs each under a :class:`~app.runner.runner.Runner`
in a thread of its own, up to ``--concurrency`` at once. The runners share the worker's
pid: the claim records the worker as the session's runner (host, pid, heartbeat), which
the runner adopts, so a session gets exactly one ``start`` event per claim.

Queued sessions keep ``queued`` set while a worker runs them; it marks them as queue work:

* a worker that dies (SIGKILL, crash, host lost) leaves its sessions orphaned (dead pid on
  its host, stale heartbeat everywhere); any worker then takes them over (the new runner
  removes what is left of the interrupted stage on its own host, and re-runs that stage as
  a new attempt), and so can ``vc flow session resume``;
* SIGTERM, SIGINT or SIGHUP stop a worker cleanly: it claims nothing more, interrupts its
  runners (each terminates its stage's process group; the stage goes back to PENDING) and
  hands their sessions back to the queue (``requeue``: ACTIVE again, no runner, reason
  ``requeued: …``), where the next worker claims them. A session a user had paused stays
  paused. Nothing is lost either way.

Waiting for work costs little: on PostgreSQL the worker LISTENs for session changes
(:class:`store.notify.SessionNotifier`) and looks at the queue when something happened
(and every few seconds, for orphans); on SQLite it looks twice a second (one indexed read).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
from typing import Any

#: Seconds between two looks at the queue without notifications (SQLite).
POLL_INTERVAL = 0.5
#: With LISTEN (PostgreSQL): how often the loop checks its wake-ups, and how long silence
#: is trusted before looking at the queue anyway (orphans appear without a notification).
NOTIFY_TICK = 0.1
RESYNC_INTERVAL = 3.0
#: Back-off bounds while the database is unreachable.
RETRY_MIN, RETRY_MAX = 0.5, 5.0
CATEGORY = "workflow.session.operations"


class Worker:
    def __init__(
        self,
        factory: Any,
        engine: Any,
        logging: Any,
        workspace: Any,
        *,
        concurrency: int = 1,
        workflow_id: str | None = None,
    ) -> None:
        from store.identity import local_host

        self.factory = factory
        self.engine = engine
        self.logging = logging
        self.workspace = workspace
        self.concurrency = concurrency
        self.workflow_id = workflow_id
        self.host = local_host()
        self.pid = os.getpid()
        #: Sessions whose run ended (COMPLETED or FAILED) here: one handed back at a gate,
        #: or interrupted, counts once it ends, not at each claim of it.
        self.finished = 0
        #: Claims made (a session handed back at a gate and claimed again counts twice).
        self.claims = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        #: Set by a SIGTERM or SIGINT while stopping (:meth:`hurry`); said once it is over.
        self._hurried = threading.Event()
        self._lock = threading.Lock()
        self._threads: dict[str, threading.Thread] = {}
        self._runners: dict[str, Any] = {}
        self._stop_reason = ""
        #: Set once the store refused us for good (store.failures): the one line naming
        #: it, with which the worker stops.
        self.store_failure: str | None = None

    # -- output --------------------------------------------------------------------------------

    def say(self, text: str, *, session_id: str | None = None, level: str = "INFO") -> None:
        """One line on stderr (the worker's console) and, for a session, its log."""
        from store.text import clean_text

        stamp = time.strftime("%H:%M:%S")
        print(
            f"{stamp} worker {self.host}:{self.pid}: {clean_text(text)}",
            file=sys.stderr,
            flush=True,
        )
        if session_id is not None:
            from loguru import logger

            logger.bind(category=CATEGORY, session_id=session_id).log(level, text)

    # -- signals -------------------------------------------------------------------------------

    def stop(self, why: str = "stop requested") -> None:
        """Claim nothing more; the main loop then interrupts the running sessions and hands
        them back. Safe in a signal handler: it only sets events (no lock, no output)."""
        if not self._stop.is_set():
            self._stop_reason = why
        self._stop.set()
        self._wake.set()

    def hurry(self) -> None:
        """A second SIGTERM or SIGINT while stopping: the stages being stopped get SIGKILL
        now instead of the rest of their ``kill_timeout``, as a foreground run's second
        Ctrl-C. Signal-handler safe (sets events only); SIGHUP never hurries (a closed
        terminal sends it more than once)."""
        self._hurried.set()
        try:
            runners = tuple(self._runners.values())
        except RuntimeError:  # changed as it was read: the next signal finds it settled
            return
        for runner in runners:
            runner.hurry()

    #: A stop signal came already (a SIGTERM, SIGINT or SIGHUP; not a store failure's stop).
    _signalled = False

    def _on_signal(self, signum: int) -> None:
        """A stop; a SIGTERM or SIGINT that comes while a signal's stop goes on (whatever
        began it, a SIGHUP too) hurries it."""
        if signum != signal.SIGHUP and self._signalled:
            self.hurry()
        self._signalled = True
        self.stop(signal.Signals(signum).name)

    def signals(self) -> Any:
        """Install SIGTERM/SIGINT/SIGHUP handlers for the duration of a ``with`` block."""
        worker = self

        class _Signals:
            def __enter__(self) -> None:
                self.previous = {}
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    self.previous[sig] = signal.signal(
                        sig, lambda signum, _frame: worker._on_signal(signum)
                    )

            def __exit__(self, *exc: object) -> None:
                for sig, handler in self.previous.items():
                    signal.signal(sig, handler)

        return _Signals()

    # -- main loop -----------------------------------------------------------------------------

    def run(self) -> int:
        from store.notify import SessionNotifier

        what = f", workflow {self.workflow_id}" if self.workflow_id else ""
        self.say(f"started: up to {self.concurrency} session(s) at a time{what}")
        notifier = SessionNotifier(self.engine, resync=RESYNC_INTERVAL)
        delay = RETRY_MIN
        try:
            with self.factory() as db:
                from store import FlowSessionManager

                manager = FlowSessionManager(db, actor="worker")
                look = True
                while not self._stop.is_set():
                    look |= self._wake.is_set()
                    self._wake.clear()
                    self._reap()
                    # drained every tick, even with every slot busy: a listener that never
                    # reads would hold PostgreSQL's notification queue back
                    look |= notifier.changed()
                    if look and self._free_slots():
                        look = False
                        try:
                            self._fill(manager)
                            delay = RETRY_MIN
                            self._store_back()
                        except Exception as exc:
                            with contextlib.suppress(Exception):
                                db.rollback()
                            if self._stop_if_permanent(exc):
                                break
                            look = True
                            self._report_store_error(exc, delay)
                            self._stop.wait(delay)
                            delay = min(delay * 2, RETRY_MAX)
                            continue
                    tick = NOTIFY_TICK if notifier.listening else POLL_INTERVAL
                    self._wake.wait(tick)
        finally:
            notifier.close()
            self._shutdown()
        if self.store_failure is not None:
            self.say(
                f"stopped: the store refuses this worker ({self.store_failure}); waiting will "
                f"not cure it: fix it, then start the worker again ({self._tally()}; "
                "those it was running are left to the next worker or "
                "'vc flow session resume')",
                level="ERROR",
            )
            return 1
        self.say(f"stopped ({self._tally()})")
        return 0

    def _tally(self) -> str:
        """What the worker did: a claim ends a session, or hands it back (at a gate, or
        at the worker's stop), for the next claim to go on with."""
        return f"{self.claims} claim(s), {self.finished} session(s) finished"

    def _stop_if_permanent(self, exc: BaseException) -> bool:
        """A store error that waiting will not cure (store.failures) stops the worker
        instead of a backoff that would never end; True if it did."""
        from store.failures import classify

        failure = classify(exc)
        if failure is None or not failure.permanent:
            return False
        what = failure.what
        if failure.about_schema:
            from store.failures import schema_note

            note = schema_note(self.engine)
            what = f"{note}; {what}" if note is not None else what
        self._store_failed(what)
        return True

    def _store_failed(self, what: str) -> None:
        """Stop, once, for a store that refuses us for good (said at the end, one line)."""
        with self._lock:
            if self.store_failure is None:
                self.store_failure = what
        self.stop("the store refuses this worker")

    def _free_slots(self) -> int:
        with self._lock:
            return self.concurrency - len(self._threads)

    def _fill(self, manager: Any) -> None:
        """Claim sessions while there are free slots and queued work."""
        while self._free_slots() > 0 and not self._stop.is_set():
            change = manager.claim_queued(
                runner_host=self.host, runner_pid=self.pid, workflow_id=self.workflow_id
            )
            if change is None:
                return
            self._start(change)

    def _start(self, change: Any) -> None:
        sid = change.session_id
        # Handed back at a gate or a pause, or left by a runner that died: it goes on.
        taken = (
            " (it ran before: going on from where it stopped)"
            if change.from_status == "ACTIVE"
            else ""
        )
        self.say(f"claimed {sid[:12]}{taken}", session_id=sid)
        self.claims += 1
        thread = threading.Thread(
            target=self._run_session, args=(sid,), name=f"vc-worker-{sid[:8]}", daemon=True
        )
        with self._lock:
            self._threads[sid] = thread
        thread.start()

    def _reap(self) -> None:
        with self._lock:
            done = [sid for sid, t in self._threads.items() if not t.is_alive()]
            for sid in done:
                self._threads.pop(sid).join()

    def _shutdown(self) -> None:
        """Interrupt every runner and wait for them (each ends within its stage's
        kill_timeout, then hands its session back)."""
        self._stop.set()
        with self._lock:
            runners = list(self._runners.values())
            threads = list(self._threads.values())
        if threads and self.store_failure is None:
            self.say(
                f"{self._stop_reason or 'stopping'}: interrupting {len(threads)} running "
                "session(s); they go back to the queue once their stages are stopped (a "
                "stage that ignores SIGTERM gets its kill_timeout: a SIGTERM or SIGINT from now "
                "on kills it at once)"
            )
        elif self._stop_reason and self.store_failure is None:
            self.say(f"{self._stop_reason}: stopping")
        for runner in runners:
            runner.interrupt_once()
        for thread in threads:
            thread.join()
        if self._hurried.is_set() and threads:
            self.say("asked again while stopping: the stages still stopping got SIGKILL at once")
        self._reap()

    _last_error = ""

    def _store_back(self) -> None:
        """The store answers again after trouble was said: said too (whoever tails the log
        would take the last "retrying" for the state of things), and the next trouble is
        said again, even with the same words."""
        if self._last_error:
            self._last_error = ""
            self.say("the store answers again: claiming queued sessions")

    def _report_store_error(self, exc: BaseException, delay: float) -> None:
        from store.engine import unavailable_message
        from store.errors import StoreError
        from store.location import resolve_database_url

        if isinstance(exc, StoreError):
            message = str(exc)
        else:
            message = unavailable_message(exc, resolve_database_url())
        if message != self._last_error:  # say it once per distinct trouble
            self._last_error = message
            self.say(f"{message}; retrying", level="WARNING")

    # -- one session ---------------------------------------------------------------------------

    def _run_session(self, sid: str) -> None:
        from app.runner.runner import Runner
        from store.errors import StoreError
        from store.failures import PermanentStoreError

        outcome: Any = None
        ended = False
        try:
            runner = Runner(
                self.factory,
                self.logging,
                sid,
                workspace=self.workspace,
                flush_at_end=False,
                hand_back_when_idle=True,
            )
            with self._lock:
                self._runners[sid] = runner
            if self._stop.is_set():  # stopped since the claim
                runner.interrupt_once()  # a second interrupt would SIGKILL its stages
            outcome = runner.run()
        except PermanentStoreError as exc:  # before its run began (its claim's read)
            self._store_failed(str(exc))
        except StoreError as exc:  # deleted or taken over meanwhile: nothing left to do
            self.say(f"{sid[:12]}: {exc}", session_id=sid, level="WARNING")
        except Exception as exc:
            self.say(
                f"{sid[:12]}: runner crashed: {type(exc).__name__}: {exc}",
                session_id=sid,
                level="ERROR",
            )
            self._fail(sid, f"runner crashed: {type(exc).__name__}: {exc}")
            ended = True
        finally:
            with self._lock:
                self._runners.pop(sid, None)
        try:
            if outcome is not None and outcome.store_failure is not None:
                # said in the session's log by the runner; the worker says it once, at its end
                self._store_failed(outcome.store_failure)
            elif outcome is not None:
                if outcome.code == 130:
                    self._hand_back(sid)
                else:
                    said = str(outcome.status or "ended")
                    if outcome.message.lower() != said.lower():  # not "COMPLETED: completed"
                        said += f": {outcome.message}"
                    self.say(f"{sid[:12]} {said}")
        finally:
            from store.status import TERMINAL

            if ended or (outcome is not None and outcome.status in TERMINAL):
                with self._lock:
                    self.finished += 1
            self._forget_log_file(sid)
            self._wake.set()

    def _hand_back(self, sid: str) -> None:
        """After an interrupt: back to the queue, unless a user paused it meanwhile."""
        from store import FlowSessionManager
        from store.errors import StoreError

        try:
            with self.factory() as db:
                manager = FlowSessionManager(db, actor="worker")
                state = manager.state(sid)
                if state is None or state[0] != "PAUSED" or state[2] != "interrupted":
                    status = state[0] if state else "deleted"
                    self.say(f"{sid[:12]} left {status}", session_id=sid)
                    return
                manager.requeue(
                    sid,
                    reason=f"requeued: worker {self.host}:{self.pid} "
                    f"stopped ({self._stop_reason or 'interrupted'})",
                    runner_host=self.host,
                    runner_pid=self.pid,
                )
            self.say(f"{sid[:12]} handed back to the queue", session_id=sid)
        except StoreError as exc:  # resumed or changed by someone meanwhile: theirs now
            self.say(f"{sid[:12]} not handed back: {exc}", session_id=sid, level="WARNING")

    def _fail(self, sid: str, reason: str) -> None:
        """A runner that crashed must not leave its session to be claimed (and crash) again
        and again: fail it, visibly."""
        from store import FlowSessionManager

        try:
            with self.factory() as db:
                FlowSessionManager(db, actor="worker").fail(sid, reason)
        except Exception:
            pass

    def _forget_log_file(self, sid: str) -> None:
        """Close the finished session's log file: a worker runs any number of sessions and
        must not keep a descriptor per session it ever ran."""
        files = getattr(self.logging, "files", None)
        lock = getattr(files, "_lock", None)
        fds = getattr(files, "_fds", None)
        if files is None or lock is None or fds is None:
            return
        try:
            name = files.session_path(sid).name
        except ValueError:
            return
        with lock:
            fd = fds.pop(name, None)
            if fd is not None:
                os.close(fd)


__all__ = ["Worker"]
