"""Telling people: a runner announces that its session failed, waits at a manual gate, or
completed, through Apprise, off the runner's own path.

The parts, each usable (and tested) on its own:

* :func:`compose` builds the message of an event: what happened (workflow, session name and
  id, host, stage, reason, a gate's checklist, how long it took) and the commands that act
  on it (:data:`ACTIONS`: the one place that says which command passes a gate).
* :class:`Sender` is one daemon thread per process (a worker's runners share it). For each
  event it asks the store whether the event was announced already, sends the message to
  every target at once (each in a thread of its own, waited for at most
  :func:`notify_timeout` seconds), logs one WARNING in the session log per target that
  failed or did not answer (its URL masked, Apprise's reason cleaned of the URL's secrets),
  and records the event as announced (a ``notify`` event in the session's history).
* :class:`SessionAnnouncer` is the runner's hook: given to the runner's managers as their
  ``integration``, it hears every change the runner commits (:meth:`publish`: a comparison
  and a queue put, nothing else) and hands the events ``notify.on`` asks for to the sender.
  No stage ever waits for a notification, and a notification that fails changes nothing
  about the session.
* :func:`drain` is what a process calls before it exits (`vc flow run`, a detached runner,
  a worker): the last event (a completion, a failure) is delivered before it goes, for at
  most the timeout plus :data:`DRAIN_MARGIN` seconds.

Targets are the workflow's ``notify.to`` plus ``VC_NOTIFY`` (space-separated URLs, read from
the runner's environment); the events are ``notify.on`` (default failure and gate, also when
only ``VC_NOTIFY`` is set). A ``VC_NOTIFY`` entry Apprise cannot use is one WARNING in the
session log (shown by scheme only), and the other targets are still told.

Once per event. An event is keyed by its kind and the version of the row it changed
(``failure #9`` for the session's ninth version, ``gate approve #2`` for the gate stage's);
the sender skips an event the store has a ``notify`` record of, and writes that record
after sending (conditionally: a second writer finds it and writes nothing). So an event is
never announced twice by runners that see it one after the other (a runner taking over a
session whose gate still waits does not announce the gate again), except in the window of a
crash between the first delivery and the record's commit: at most the slowest target's
answer (bounded by the timeout) plus one commit. The other order (record, then send) would
close that window but open a worse one: a crash after the record and before the delivery
would lose the announcement for good, and a lost alarm costs more than a repeated one. A
runner killed before its sender took an event up loses that event (the state change
committed a few milliseconds earlier); a runner that exits normally delivers first.

Apprise is imported by the sender thread at the first event that has targets: a runner whose
workflow tells nobody never imports it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from app.settings import NOTIFY_TIMEOUT, notify_timeout
from store.graph import first_failed, is_cancellation, stage_of

#: The command that acts on each kind of event, in one place: ``{id}`` is the session id (12
#: characters, as everywhere), ``{workflow}`` its workflow, ``{gate}`` the gate that waits
#: (named: with several gates waiting, a bare approve is refused, and a resume would pass
#: whichever waits first, not the one the message is about).
ACTIONS: dict[str, tuple[str, str]] = {
    "failure": (
        "Run it again",
        "vc flow session retry {id} && vc flow run {workflow} --session {id}",
    ),
    # queued work: the retry puts it back in the queue, and the next worker runs it (a
    # `run --session` after it would race the workers, and lose)
    "failure_queued": ("Run it again (the next worker takes it)", "vc flow session retry {id}"),
    "gate": ("Approve", "vc flow session approve {id} {gate}"),
    "success": ("Details", "vc flow session show {id}"),
}
LOGS_COMMAND = "vc flow session logs {id}"
#: Seconds a target may take to answer, unless ``VC_NOTIFY_TIMEOUT`` says otherwise.
DEFAULT_TIMEOUT = NOTIFY_TIMEOUT
#: Seconds :func:`drain` waits beyond the timeout (time to record what was sent).
DRAIN_MARGIN = 2.0
CATEGORY = "workflow.session.integration"
_NOTIFY_TYPES = {"failure": "failure", "gate": "warning", "success": "success"}


def action(
    kind: str, session_id: str, workflow_id: str = "", gate: str | None = None
) -> tuple[str, str]:
    """(label, command) acting on an event of ``kind`` of a session (``gate``: the gate of
    a gate event, quoted for a shell: a matrix instance's name has brackets)."""
    import shlex

    label, command = ACTIONS[kind]
    named = shlex.quote(gate) if gate else ""
    return label, command.format(id=session_id[:12], workflow=workflow_id, gate=named).rstrip()


def env_targets() -> list[str]:
    """The URLs of ``VC_NOTIFY`` (space-separated)."""
    return os.environ.get("VC_NOTIFY", "").split()


# -- the message ------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionFacts:
    """What a message says about its session, known when the runner starts."""

    session_id: str
    name: str
    workflow_id: str
    host: str
    started_at: float | None
    #: Queued work (`run --queue`): workers run it, its retry included.
    queued: bool = False


@dataclass(frozen=True)
class Event:
    """Something to announce. ``key`` identifies it in the session's history."""

    kind: str  # "failure" | "gate" | "success"
    key: str
    at: float
    stage: str | None = None
    reason: str | None = None
    checklist: tuple[str, ...] = ()


@dataclass(frozen=True)
class Message:
    title: str
    body: str
    notify_type: str


def _duration(seconds: float) -> str:
    from app.console import duration_text

    return duration_text(seconds)


def compose(event: Event, facts: SessionFacts) -> Message:
    """The message of ``event``: what happened, where, for how long, and what to type."""
    from store.text import clean_text

    name, workflow = clean_text(facts.name), clean_text(facts.workflow_id)
    sid = facts.session_id
    took = None if facts.started_at is None else _duration(event.at - facts.started_at)
    who = f'Session "{name}" ({sid}) of workflow {workflow}'
    lines: list[str] = []
    if event.kind == "failure":
        title = f"vc: {workflow} failed: {name}"
        after = f" after {took}" if took else ""
        lines.append(f"{who} FAILED on host {facts.host}{after}.")
        if event.stage:
            lines.append(f"Stage: {clean_text(event.stage)}")
        lines.append(f"Reason: {clean_text(event.reason or 'failed')}")
    elif event.kind == "gate":
        gate = clean_text(event.stage or "")
        title = f"vc: {workflow} waits for approval at {gate}: {name}"
        running = f" (running for {took})" if took else ""
        lines.append(f"{who} waits at the manual gate {gate} on host {facts.host}{running}.")
        if event.checklist:
            lines.append("Check before approving:")
            lines += [f"  - {clean_text(item)}" for item in event.checklist]
    else:
        title = f"vc: {workflow} completed: {name}"
        after = f" in {took}" if took else ""
        lines.append(f"{who} COMPLETED on host {facts.host}{after}.")
    kind = "failure_queued" if event.kind == "failure" and facts.queued else event.kind
    label, command = action(kind, sid, facts.workflow_id, event.stage)
    lines.append(f"{label}: {command}")
    lines.append(f"Its log: {LOGS_COMMAND.format(id=sid[:12])}")
    return Message(title, "\n".join(lines), _NOTIFY_TYPES[event.kind])


# -- delivery ---------------------------------------------------------------------------------


class _ApprisePerThread(logging.Handler):
    """Apprise's WARNING and ERROR lines, kept per thread: the reason a delivery failed
    (Apprise's ``notify`` only says True or False)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        lines = self.lines.get(record.thread or 0)
        if lines is not None:
            with contextlib.suppress(Exception):
                lines.append(record.getMessage())


_capture: _ApprisePerThread | None = None
_capture_lock = threading.Lock()


def _apprise_reasons() -> _ApprisePerThread:
    global _capture
    with _capture_lock:
        if _capture is None:
            from store.targets import apprise

            apprise()  # its logger quieted first
            _capture = _ApprisePerThread()
            logging.getLogger("apprise").addHandler(_capture)
    return _capture


@dataclass
class Delivery:
    """One target's outcome: ``error`` None when it took the message."""

    url: str
    error: str | None = None
    done: bool = False


def _deliver_one(delivery: Delivery, message: Message, timeout: float) -> None:
    from store.targets import instantiate, redact

    reasons = _apprise_reasons()
    me = threading.get_ident()
    reasons.lines[me] = []
    try:
        plugin = instantiate(delivery.url)
        if plugin is None:
            delivery.error = "Apprise cannot use this URL"
            return
        # One knob: Apprise's own socket timeouts (4 s by default, 15 s for e-mail) are
        # set just past ours, so a slow target gets the whole timeout, and a hung thread
        # ends soon after :func:`deliver` has stopped waiting for it ("did not answer").
        for attribute in ("socket_connect_timeout", "socket_read_timeout"):
            if isinstance(getattr(plugin, attribute, None), int | float):
                setattr(plugin, attribute, timeout + 1.0)
        try:
            ok = plugin.notify(
                body=message.body, title=message.title, notify_type=message.notify_type
            )
        except Exception as exc:
            ok, reasons.lines[me] = False, [*reasons.lines[me], f"{type(exc).__name__}: {exc}"]
        if not ok:
            said = [line.strip() for line in reasons.lines[me] if line.strip()]
            why = said[-1] if said else "Apprise reported a failure"
            delivery.error = redact(" ".join(why.split()), [delivery.url])[:300]
    finally:
        reasons.lines.pop(me, None)
        delivery.done = True


def deliver(urls: Iterable[str], message: Message, timeout: float) -> list[Delivery]:
    """Send ``message`` to every URL at once; each gets ``timeout`` seconds to answer. A
    target still busy then is left to finish in its (daemon) thread: reported as not
    having answered, it holds up nothing."""
    deliveries = [Delivery(url) for url in urls]
    threads = [
        threading.Thread(
            target=_deliver_one, args=(d, message, timeout), name="vc-notify-send", daemon=True
        )
        for d in deliveries
    ]
    for thread in threads:
        thread.start()
    until = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, until - time.monotonic()))
    for d in deliveries:
        if not d.done:
            d.error = f"did not answer within {timeout:g} s"
    return deliveries


# -- the process's sender ---------------------------------------------------------------------


class Sender:
    """One thread delivering the events of every announcer of the process, in order."""

    def __init__(self) -> None:
        self._queue: queue.Queue[tuple[SessionAnnouncer, Event]] = queue.Queue()
        self._lock = threading.Condition()
        self._pending = 0
        self._thread: threading.Thread | None = None

    def submit(self, announcer: SessionAnnouncer, event: Event) -> None:
        with self._lock:
            self._pending += 1
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="vc-notify", daemon=True)
                self._thread.start()
        self._queue.put((announcer, event))

    def _run(self) -> None:
        while True:
            announcer, event = self._queue.get()
            try:
                announcer.announce(event)
            except Exception as exc:  # a bug here must never reach the session
                announcer.say(f"notification of {event.key} not sent: {exc}", "WARNING")
            finally:
                with self._lock:
                    self._pending -= 1
                    self._lock.notify_all()

    def drain(self, timeout: float) -> bool:
        """Wait until every submitted event is done, at most ``timeout`` seconds; True if
        none is left."""
        until = time.monotonic() + timeout
        with self._lock:
            while self._pending:
                left = until - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True

    @property
    def pending(self) -> int:
        return self._pending


_sender = Sender()


def drain(timeout: float | None = None) -> bool:
    """Before the process exits: deliver what is still being announced, waiting at most
    ``timeout`` seconds (default: the notification timeout plus :data:`DRAIN_MARGIN`).
    Costs nothing when nothing was announced."""
    if not _sender.pending:
        return True
    try:
        return _sender.drain(notify_timeout() + DRAIN_MARGIN if timeout is None else timeout)
    except KeyboardInterrupt:  # Ctrl-C after the result was printed: stop waiting, quietly
        return False


# -- the runner's hook ------------------------------------------------------------------------


@dataclass
class _Config:
    events: frozenset[str]
    urls: list[str]
    from_env: list[str]
    gates: dict[str, tuple[str, ...]] = field(default_factory=dict)


class SessionAnnouncer:
    """Announces one session's events; see the module docstring. Inactive (``publish`` is
    a no-op) until :meth:`configure` finds targets."""

    def __init__(
        self,
        factory: Callable[[], Any],
        session_id: str,
        host: str,
        *,
        sender: Sender | None = None,
    ) -> None:
        self.factory = factory
        self.session_id = session_id
        self.host = host
        self._sender = sender or _sender
        self._config: _Config | None = None
        self._facts: SessionFacts | None = None
        self._failed_stage: tuple[str | None, str | None] = (None, None)
        self._bad_env_reported = False

    def configure(self, view: Any) -> None:
        """Take the session's notify settings (its definition snapshot) and the facts its
        messages state, from the runner's view of it; plus ``VC_NOTIFY``."""
        from store.definitions import DEFAULT_NOTIFY_ON, expand_events

        definition = view.definition or {}
        notify = definition.get("notify") or {}
        urls = [str(url) for url in notify.get("to") or ()]
        from_env = [url for url in env_targets() if url not in urls]
        if not urls and not from_env:
            self._config = None
            return
        gates = {
            str(stage.get("name")): tuple(str(i) for i in stage.get("checklist") or ())
            for stage in definition.get("stages") or ()
            if isinstance(stage, dict) and stage.get("run") is None
        }
        self._config = _Config(
            expand_events(notify.get("on") or DEFAULT_NOTIFY_ON), urls, from_env, gates
        )
        self._facts = SessionFacts(
            view.id, view.name, view.workflow_id, self.host, view.started_at, bool(view.queued)
        )
        # A runner taking over a session whose stage failed under the runner before: the
        # failure it announces names that stage, not one this runner records cancelled.
        first = first_failed(view.stages)
        if first is not None:
            self._failed_stage = (first.name, first.error)

    # -- FlowStatusIntegration's protocol: called by the managers after each commit ----------

    def publish(self, change: Any) -> None:
        config = self._config
        if config is None or change.session_id != self.session_id:
            return
        op = change.op
        if op == "stage.fail":
            # The stage that failed the session: the first real failure. The branches and
            # gates fail_fast cancels after it (``cancelled: <stage> failed``) fail later.
            first, why = self._failed_stage
            if first is None or (is_cancellation(why) and not is_cancellation(change.reason)):
                self._failed_stage = (change.stage, change.reason)
            return
        event: Event | None = None
        now = time.time()
        if op == "fail" and "failure" in config.events:
            stage, _ = self._failed_stage
            event = Event("failure", f"failure #{change.version}", now, stage, change.reason)
        elif op == "complete" and "success" in config.events:
            event = Event("success", f"success #{change.version}", now)
        elif op == "stage.pause" and "gate" in config.events and (gate := _gate_of(change, config)):
            checklist = config.gates[gate]
            key = f"gate {change.stage} #{change.version}"
            event = Event("gate", key, now, change.stage, f"waiting: {change.stage}", checklist)
        if event is not None:
            self._sender.submit(self, event)

    # -- in the sender's thread --------------------------------------------------------------

    def say(self, text: str, level: str = "INFO", stage: str | None = None) -> None:
        from loguru import logger

        logger.bind(category=CATEGORY, session_id=self.session_id, stage=stage).log(level, text)

    def targets(self) -> list[str]:
        """The URLs to tell: ``notify.to``, then the usable ``VC_NOTIFY`` ones (an unusable
        one is reported once, by scheme only)."""
        from store.targets import masked, problem

        config = self._config
        assert config is not None
        usable = list(config.urls)
        for position, url in enumerate(config.from_env, 1):
            if problem(url) is None:
                usable.append(url)
            elif not self._bad_env_reported:
                shown = masked(url)
                shown = shown if shown.startswith("(") else f"({shown})"
                self.say(
                    f"VC_NOTIFY entry {position} {shown} is not a URL Apprise can "
                    "use; it is skipped, the other targets are still told",
                    "WARNING",
                )
        self._bad_env_reported = True
        return usable

    def announce(self, event: Event) -> None:
        """Send ``event`` unless it was announced already; log what happened; record it."""
        from store import FlowSessionManager
        from store.targets import masked

        assert self._facts is not None
        try:
            with self.factory() as db:
                if FlowSessionManager(db, actor="runner").notified(self.session_id, event.key):
                    self.say(f"{event.key} was announced already: not sent again", "DEBUG")
                    return
        except Exception:
            pass  # cannot tell: telling twice beats telling nobody
        urls = self.targets()
        if not urls:
            return
        timeout = notify_timeout()
        deliveries = deliver(urls, compose(event, self._facts), timeout)
        for d in deliveries:
            if d.error is not None:
                self.say(
                    f"notification ({event.kind}) to {masked(d.url)} failed: {d.error}",
                    "WARNING",
                    event.stage,
                )
        told = sum(d.error is None for d in deliveries)
        summary = f"sent to {told} of {len(deliveries)} target(s)"
        self.say(f"notification ({event.kind}) {summary}", stage=event.stage)
        try:
            # Without the runner's lease, on purpose: the message is sent, and the change
            # it tells of was committed under the lease (docs/ARCHITECTURE.md §2).
            with self.factory() as db:
                FlowSessionManager(db, actor="runner").record_notified(
                    self.session_id, event.key, summary, stage=event.stage
                )
        except Exception as exc:
            why = str(getattr(exc, "orig", None) or exc).strip().splitlines() or [repr(exc)]
            self.say(f"could not record the notification of {event.key}: {why[0]}", "WARNING")


def _gate_of(change: Any, config: _Config) -> str:
    """The gate of the workflow a waiting stage row is (``review`` for each of its matrix
    instances ``review[region=eu]``), or "" when it is none."""
    stage = stage_of(change.stage or "", {})
    return stage if stage in config.gates else ""


__all__ = [
    "ACTIONS",
    "DEFAULT_TIMEOUT",
    "Delivery",
    "Event",
    "Message",
    "Sender",
    "SessionAnnouncer",
    "SessionFacts",
    "action",
    "compose",
    "deliver",
    "drain",
    "env_targets",
    "notify_timeout",
]
