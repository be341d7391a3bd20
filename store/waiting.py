"""Waiting for sessions to end (``vc flow session wait``), from any host, without a busy loop.

The states are read only when something may have changed, the way a runner follows its own
session: on SQLite when ``PRAGMA data_version`` moves (checked every :data:`CHECK_EVERY`
seconds on a connection of its own: microseconds, no table read), on PostgreSQL when the
session trigger NOTIFYs (a blocking LISTEN: the process sleeps until a state changes on any
host, or :data:`PROBE_EVERY` seconds pass). Then a one-row probe (how many of the sessions
exist, the sum of their versions) says whether any of *them* changed; other sessions'
commits and every heartbeat cost that probe only, and only a change of theirs costs a read
of their states. Those are also read every :data:`RESYNC` seconds regardless, because a
session turns orphaned by its runner's heartbeat growing stale, which commits nothing.

A session has ended when it is COMPLETED or FAILED. A session waiting at a manual gate, a
paused one and an orphaned one have not: they are reported (so a person watching knows
why nothing happens) and waited for. Orphaned here means a heartbeat older than the
stale limit (see :mod:`store.liveness`): the quicker test of a dead runner pid on this host
would read /proc once per session at every read.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from store.errors import transient_errors
from store.failures import raise_if_refused
from store.queries import SessionState, session_states, sessions_fingerprint

#: SQLite: seconds between two ``PRAGMA data_version`` checks (the runner's idle poll).
CHECK_EVERY = 0.2
#: Seconds after which the probe runs even if nothing was committed or notified (a lost
#: notification, a store that was away).
PROBE_EVERY = 1.0
#: Seconds after which the states are read again whatever the probe says (orphans).
RESYNC = 5.0
#: Least seconds between two reads of the states: when many of the sessions end in a burst,
#: one read sees several ends (a lone end after a quiet spell is read at once).
READ_GAP = 0.4


@dataclass(frozen=True)
class WaitResult:
    """How the wait ended: the last state of each session (None: deleted meanwhile), in
    the order asked, and whether the timeout came first."""

    states: dict[str, SessionState | None]
    timed_out: bool

    @property
    def all_completed(self) -> bool:
        return all(s is not None and s.status == "COMPLETED" for s in self.states.values())


class _Changes:
    """``wait(seconds)``: return once something may have changed, or after ``seconds``."""

    def __init__(self, engine: Engine) -> None:
        self._watcher: Any = None
        self._notifier: Any = None
        if engine.dialect.name == "postgresql":
            from store.notify import SessionNotifier

            self._notifier = SessionNotifier(engine, resync=RESYNC)
        else:
            from store.watch import ChangeWatcher

            self._watcher = ChangeWatcher(engine)

    def wait(self, seconds: float) -> None:
        if self._notifier is not None:
            self._notifier.wait(seconds)
            return
        deadline = time.monotonic() + seconds
        while True:
            try:
                if self._watcher.changed():
                    return
            except Exception:
                return  # cannot tell: let the read say what is wrong
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(CHECK_EVERY, left))

    def close(self) -> None:
        for source in (self._notifier, self._watcher):
            if source is not None:
                try:
                    source.close()
                except Exception:
                    pass


def _shown(state: SessionState | None) -> tuple[Any, ...]:
    """What a report says about a state: a new report only when this changes."""
    if state is None:
        return ("deleted",)
    return (state.status, state.gate, state.orphaned, state.reason if state.ended else None)


def wait_for_end(
    engine: Engine,
    ids: Sequence[str],
    timeout: float | None = None,
    *,
    on_state: Callable[[str, SessionState | None], None] | None = None,
    on_store_error: Callable[[BaseException], None] | None = None,
    factory: Callable[[], Any] | None = None,
    stale_after: float | None = None,
) -> WaitResult:
    """Wait until every session of ``ids`` (full ids) has ended, was deleted, or
    ``timeout`` seconds have passed (None: no limit).

    ``on_state(id, state)`` is called with each session's first state and whenever what it
    says changes (its status, the gate it waits at, being orphaned; None once deleted).
    A store that is away for a while is retried once per :data:`PROBE_EVERY` seconds,
    calling ``on_store_error`` once per outage; one that refuses us for good raises
    :class:`~store.failures.PermanentStoreError`. ``stale_after``: the stale limit of
    runners' heartbeats, for the sessions of the default ``factory``."""
    if factory is None:
        from store.engine import get_session_factory

        factory = get_session_factory(engine, stale_after=stale_after)
    deadline = None if timeout is None else time.monotonic() + timeout
    wanted = list(dict.fromkeys(ids))
    last: dict[str, SessionState | None] = {}
    shown: dict[str, tuple[Any, ...]] = {}
    changes = _Changes(engine)
    failing = False
    fingerprint: tuple[int, int] | None = None
    read_at = 0.0
    transient = transient_errors()
    open_ids = wanted  # those not known to have ended (or gone)
    db = factory()
    try:
        while True:
            states = None
            pause = 0.0
            try:
                probe = sessions_fingerprint(db, open_ids)
                since = time.monotonic() - read_at
                if probe != fingerprint or since >= RESYNC:
                    if since >= READ_GAP:
                        states = session_states(db, open_ids, check_pids=False)
                        read_at = time.monotonic()
                    else:
                        pause = READ_GAP - since
                db.commit()
            except transient as exc:
                with contextlib.suppress(Exception):
                    db.rollback()
                raise_if_refused(exc, "this wait", engine)
                if not failing and on_store_error is not None:
                    on_store_error(exc)
                failing, fingerprint, states = True, None, None
            else:
                failing = False
            if states is not None:
                for sid in open_ids:
                    state = states.get(sid)
                    last[sid] = state
                    seen = _shown(state)
                    if shown.get(sid) != seen:
                        shown[sid] = seen
                        if on_state is not None:
                            on_state(sid, state)
                open_ids = [sid for sid in open_ids if _open(last[sid])]
                if not open_ids:
                    return WaitResult({sid: last[sid] for sid in wanted}, False)
                # What the next probe (of the sessions still open) finds if nothing changes.
                fingerprint = (len(open_ids), sum(_version(last[sid]) for sid in open_ids))
            left = PROBE_EVERY if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return WaitResult({sid: last.get(sid) for sid in wanted}, True)
            if pause:
                time.sleep(min(left, pause))  # a change is known: read it after the gap
            else:
                changes.wait(min(left, PROBE_EVERY))
    finally:
        changes.close()
        with contextlib.suppress(Exception):
            db.close()


def _version(state: SessionState | None) -> int:
    return 0 if state is None else state.version


def _open(state: SessionState | None) -> bool:
    return state is not None and not state.ended


__all__ = ["CHECK_EVERY", "RESYNC", "WaitResult", "wait_for_end"]
