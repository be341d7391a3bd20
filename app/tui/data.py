"""Store work of the dashboard: plain functions run in worker threads, returning the plain
data the widgets take. Nothing here touches Textual; nothing in the widgets touches the store.
Every text that users or stages wrote is cleaned of control sequences here."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from store.identity import local_host, pid_alive
from store.liveness import stale_after_of
from store.queries import (
    LogView,
    SessionFilter,
    SessionView,
    count_sessions,
    get_session_view,
    list_events,
    list_sessions,
    paused_since,
    read_logs,
    status_counts,
)
from store.text import clean_text
from widgets.data import LogLine, SessionRow, StageRow, StatusCounts

LOG_PAGE = 500
#: Most new lines one refresh reads; a refresh that gets this many is behind (see
#: ``Dashboard._catch_up``).
NEW_LOGS_LIMIT = 5 * LOG_PAGE

#: The lowest level the log pane shows, as `vc flow session logs` by default: DEBUG records
#: are the store's own notification traffic ("notify 0 subscriber(s)" …), not the session's
#: story (the log files keep them).
LOG_MIN_LEVEL = "INFO"

#: Seconds past a heartbeat's staleness before the dashboard re-reads: the store's test is
#: "older than", so a re-read exactly at the edge could still find the session alive.
STALE_MARGIN = 0.05


@dataclass(frozen=True)
class Watch:
    """What can change on screen while nothing is committed: a session whose runner stops
    beating turns "orphaned" when its heartbeat grows stale (at ``stale_at``, the earliest
    over the sessions shown), or at once when its runner on this host dies (``pids``).
    The dashboard re-reads at that moment instead of on a blind timer."""

    stale_at: float | None = None
    pids: frozenset[int] = frozenset()

    def __or__(self, other: Watch) -> Watch:
        stale = [t for t in (self.stale_at, other.stale_at) if t is not None]
        return Watch(min(stale) if stale else None, self.pids | other.pids)

    def due(self, now: float) -> bool:
        """Has the heartbeat deadline passed (``now`` is wall-clock time, as heartbeats)?"""
        return self.stale_at is not None and now >= self.stale_at

    def dead_pid(self) -> bool:
        """Has one of the watched local runners died (microseconds per pid, no store)?"""
        from store.identity import pid_alive

        return any(not pid_alive(pid) for pid in self.pids)


def watch_of(views: Iterable[SessionView], stale_after: float) -> Watch:
    """The ``Watch`` of sessions that are live under a runner but not orphaned yet (the same
    test as ``store.liveness.is_orphaned``, turned into "when could it become true")."""
    from store.identity import local_host

    host = local_host()
    stale_at: float | None = None
    pids: set[int] = set()
    for v in views:
        if v.status not in ("ACTIVE", "PAUSED") or v.runner_pid is None or v.orphaned:
            continue
        if v.heartbeat_at is not None:
            at = v.heartbeat_at + stale_after + STALE_MARGIN
            stale_at = at if stale_at is None else min(stale_at, at)
        if v.runner_host == host:
            pids.add(v.runner_pid)
    return Watch(stale_at, frozenset(pids))


@dataclass(frozen=True)
class Window:
    offset: int
    rows: list[SessionRow]
    total: int
    counts: StatusCounts
    watch: Watch = field(default_factory=Watch)


@dataclass(frozen=True)
class Detail:
    session_id: str
    stages: list[StageRow]
    status: str
    reason: str | None
    orphaned: bool = False
    watch: Watch = field(default_factory=Watch)
    #: Paused at a manual gate (the store's ``SessionView.waiting_gate``): ``r`` passes it.
    waiting_at_gate: bool = False
    #: The checklist of that gate (cleaned), or of the only other gate waiting, if any.
    checklist: tuple[str, ...] = ()
    #: The other manual gates waiting (cleaned names), beside that gate or beside running
    #: stages or a pause by hand, each approved with ``g`` (``r`` does not pass them).
    other_gates: tuple[str, ...] = ()
    #: The checklists of those other gates but the one ``checklist`` shows (name, items).
    other_checklists: tuple[tuple[str, tuple[str, ...]], ...] = ()
    #: Orphaned by a stale heartbeat while its runner's pid is alive on this host: a
    #: runner stopped (Ctrl-Z, a debugger) or unable to write (the store locked).
    silent_runner_pid: int | None = None

    def summary(self) -> str:
        """One line above the stages: the state and why (a manual gate waiting, the error
        that failed it, a runner gone), which the table has no room for."""
        text = self.status
        if self.orphaned and self.silent_runner_pid is not None:
            text += (
                f" (orphaned: its runner, pid {self.silent_runner_pid} on this host, is alive"
                " but silent: stopped, or the store busy; r takes the session over)"
            )
        elif self.orphaned:
            text += " (orphaned: its runner is gone; r starts a new one)"
        if self.reason:
            text += f" — {self.reason}"
        if self.waiting_at_gate or (self.status == "PAUSED" and not self.orphaned):
            text += " (r resumes it)"  # an orphan's line says what r does already
        if self.status == "PENDING":
            text += " (s starts it)"
        if self.status == "FAILED":
            text += " (t retries it)"
        check = f" — check: {'; '.join(self.checklist)}" if self.checklist else ""
        gates = ", ".join(self.other_gates)
        if self.waiting_at_gate:  # the checklist is the gate r passes
            text += check + (f" — also waiting: {gates} ({_APPROVE_ONE})" if gates else "")
        elif len(self.other_gates) == 1:  # the checklist is that gate's
            text += f" — gate {gates} waits (g approves it){check}"
        elif gates:
            text += f" — gates waiting: {gates} ({_APPROVE_ONE})"
        for name, items in self.other_checklists:
            text += f" — {name}: check {'; '.join(items)}"
        return text


#: With several gates waiting, `g` needs to know which: the one at the stage cursor.
_APPROVE_ONE = "g on a gate in the stages approves it"


@dataclass(frozen=True)
class RefreshRequest:
    """What the UI wants re-read, captured on the event loop when a refresh starts, so the
    worker never reads widget state and a late answer can be recognised as stale."""

    filter: SessionFilter
    offset: int
    limit: int
    session_id: str | None
    after_log_id: int | None
    log_generation: int
    #: The newest event already looked at for alerts (None: none yet, start from now).
    after_event_id: int | None = None
    #: False while the log pane holds its lines for a reader (see Dashboard._logs_held).
    read_logs: bool = True


@dataclass(frozen=True)
class Alert:
    """A session somewhere in the store that failed or reached a manual gate: what the
    dashboard pops up once (texts cleaned)."""

    session_id: str
    kind: str  # "failure" | "gate"
    title: str
    text: str


@dataclass(frozen=True)
class Refresh:
    """Everything one refresh read, in one transaction's worth of queries."""

    window: Window
    detail: Detail | None
    logs: list[LogLine]
    alerts: list[Alert] = field(default_factory=list)
    #: Where the next refresh's alerts start.
    last_event_id: int | None = None

    @property
    def watch(self) -> Watch:
        """When the picture this refresh gave can change with no commit (see ``Watch``)."""
        return self.window.watch | self.detail.watch if self.detail else self.window.watch


def session_row(view: SessionView, paused_at: float | None = None) -> SessionRow:
    return SessionRow(
        id=view.id,
        name=clean_text(view.name),
        workflow_id=clean_text(view.workflow_id),
        status=view.status,
        reason=clean_text(view.reason) if view.reason else None,
        orphaned=view.orphaned,
        progress=view.progress,
        current_stage=clean_text(view.current_stage) if view.current_stage else None,
        host=clean_text(view.runner_host) if view.runner_host else None,
        created_at=view.created_at,
        updated_at=view.updated_at,
        finished_at=view.finished_at,
        started_at=view.started_at,
        queued=view.awaiting_worker,
        also_running=max(0, len(view.running_stages) - 1),
        paused_at=paused_at,
    )


def log_line(record: LogView) -> LogLine:
    return LogLine(
        id=record.id,
        at=record.at,
        level=record.level,
        stage=clean_text(record.stage) if record.stage else None,
        text=clean_text(record.text),
    )


def load_window(db: Any, filt: SessionFilter, offset: int, limit: int) -> Window:
    """One windowed page of sessions plus the total and per-status counts."""
    counts = status_counts(db)
    everything = sum(counts.values())
    if filt.status and not (filt.workflow_id or filt.text):
        total = counts.get(filt.status, 0)
    elif filt.status or filt.workflow_id or filt.text:
        total = count_sessions(db, filt)
    else:
        total = everything  # one scan of the status index answers both
    offset = max(0, min(offset, max(total - 1, 0)))
    views = list_sessions(db, filt, limit=limit, offset=offset)
    paused = paused_since(db, [v.id for v in views if v.status == "PAUSED"])
    db.commit()
    return Window(
        offset,
        [session_row(v, paused.get(v.id)) for v in views],
        total,
        StatusCounts(counts, everything),
        watch_of(views, stale_after_of(db)),
    )


def load_detail(db: Any, session_id: str) -> Detail | None:
    view = get_session_view(db, session_id)
    db.commit()
    if view is None:
        return None
    silent = None
    lost_at = None  # a dead runner ran its ACTIVE stages until its last beat at most
    if view.orphaned and view.runner_pid is not None and view.runner_host == local_host():
        if pid_alive(view.runner_pid):
            silent = view.runner_pid  # stopped, or locked out: its stages may run on
        else:
            lost_at = view.heartbeat_at
    stages = [
        StageRow(
            name=clean_text(s.name),
            status=s.status,
            progress=100.0 if s.status == "COMPLETED" else s.progress,
            attempt=s.attempt,
            exit_code=s.exit_code,
            started_at=s.started_at,
            finished_at=s.finished_at,
            error=clean_text(s.error) if s.error else None,
            updated_at=s.updated_at,
            group=clean_text(s.stage) if s.instance is not None else None,
            known_until=lost_at if s.status == "ACTIVE" else None,
        )
        for s in view.stages
    ]
    reason = clean_text(view.reason) if view.reason else None
    gate = view.waiting_gate
    others = [g for g in view.waiting_gates if g is not gate]
    shown = gate if gate is not None else (others[0] if len(others) == 1 else None)
    listed = [g for g in others if g is not shown]
    return Detail(
        session_id,
        stages,
        view.status,
        reason,
        view.orphaned,
        watch_of([view], stale_after_of(db)),
        waiting_at_gate=gate is not None,
        checklist=tuple(clean_text(item) for item in shown.checklist) if shown else (),
        other_gates=tuple(clean_text(g.name) for g in others),
        other_checklists=tuple(
            (clean_text(g.name), tuple(clean_text(item) for item in g.checklist))
            for g in listed
            if g.checklist
        ),
        silent_runner_pid=silent,
    )


def load_refresh(db: Any, request: RefreshRequest) -> Refresh:
    """The visible window, the selected session's stages and its log lines after
    ``request.after_log_id`` (the tail when None)."""
    window = load_window(db, request.filter, request.offset, request.limit)
    detail = None
    logs: list[LogLine] = []
    if request.session_id is not None:
        detail = load_detail(db, request.session_id)
        if detail is not None and request.read_logs:
            logs = load_new_logs(db, request.session_id, request.after_log_id)
    last_event_id, alerts = load_alerts(db, request.after_event_id)
    return Refresh(window, detail, logs, alerts, last_event_id)


def load_alerts(db: Any, after_event_id: int | None) -> tuple[int, list[Alert]]:
    """Sessions anywhere in the store that failed or reached a manual gate since the event
    ``after_event_id`` (None: from now on), and where to look from next time. One indexed
    read of the new events: a refresh pays for what happened since the last one."""
    from app.runner.notifications import action
    from store.queries import alerts_after

    last, found = alerts_after(db, after_event_id)
    db.commit()
    alerts = []
    for a in found:
        name = clean_text(a.name)
        where = f"{name} ({a.session_id[:12]}, {clean_text(a.workflow_id)})"
        if a.kind == "failure":
            text = f"{where} failed: {clean_text(a.reason or 'failed')}"
            alerts.append(Alert(a.session_id, a.kind, "session failed", text))
            continue
        checks = f"; check: {'; '.join(clean_text(c) for c in a.checklist)}" if a.checklist else ""
        _, command = action("gate", a.session_id, gate=a.stage)
        text = f"{where} waits at the manual gate {clean_text(a.stage or '')}{checks} ({command})"
        alerts.append(Alert(a.session_id, a.kind, "waiting at a gate", text))
    return last, alerts


def load_new_logs(db: Any, session_id: str, after_id: int | None) -> list[LogLine]:
    """The tail on first load (after_id None), then everything newer than after_id."""
    level = LOG_MIN_LEVEL
    if after_id is None:
        records = read_logs(db, session_id, min_level=level, limit=LOG_PAGE, newest=True)
    else:
        records = read_logs(
            db, session_id, after_id=after_id, min_level=level, limit=NEW_LOGS_LIMIT
        )
    db.commit()
    return [log_line(r) for r in records]


def load_older_logs(db: Any, session_id: str, before_id: int) -> list[LogLine]:
    records = read_logs(
        db, session_id, before_id=before_id, min_level=LOG_MIN_LEVEL, limit=LOG_PAGE, newest=True
    )
    db.commit()
    return [log_line(r) for r in records]


def details_text(db: Any, session_id: str) -> str | None:
    """The details screen: metadata, parameters, stage outputs, the definition snapshot and
    the event history, as they were when read (the screen says when: it is not live)."""
    import json
    import time

    from app.console import clock_text, moment_text, runner_text
    from store.names import param_text

    view = get_session_view(db, session_id)
    if view is None:
        return None
    events = list_events(db, session_id)
    db.commit()
    doc = view.to_json()
    lines = [
        f"read at   {time.strftime('%H:%M:%S')} (not live: close it and press enter again for now)",
        "",
        f"id        {view.id}",
        f"name      {clean_text(view.name)}",
        f"workflow  {clean_text(view.workflow_id)}",
        f"status    {view.status}"
        + (" (orphaned)" if view.orphaned else "")
        + (f"  reason: {clean_text(view.reason)}" if view.reason else ""),
        f"progress  {doc['progress']}%",
        f"created   {moment_text(view.created_at)}",
        "runner    "
        + clean_text(
            runner_text(view.runner_pid, view.runner_host, view.heartbeat_at, view.awaiting_worker)
        ),
        "",
        "metadata",
    ]
    lines += [f"  {clean_text(k)} = {clean_text(v)}" for k, v in view.metadata.items()] or [
        "  (none)"
    ]
    if view.params:
        lines += ["", "params"]
        for key, value in view.params.items():
            lines.append(f"  {clean_text(key)} = {clean_text(param_text(value))}")
    outputs = [
        f"  {clean_text(s.name)}.{clean_text(k)} = {clean_text(v)}"
        for s in view.stages
        for k, v in s.outputs.items()
    ]
    if outputs:
        lines += ["", "outputs (::output lines of the stages)", *outputs]
    lines += ["", "definition (snapshot taken at creation)"]
    from store.targets import masked_definition

    shown = masked_definition(view.definition or {})  # notification URLs hold secrets
    snapshot = json.dumps(shown, indent=2, ensure_ascii=False)
    lines += ["  " + clean_text(line) for line in snapshot.splitlines()]
    lines += ["", "events"]
    for e in events:
        stage = f" {clean_text(e.stage)}" if e.stage else ""
        reason = f"  ({clean_text(e.reason)})" if e.reason else ""
        lines.append(
            f"  {clock_text(e.at)}  {e.op}{stage}  "
            f"{e.from_status or '-'} -> "
            f"{e.to_status or '-'}  by {clean_text(e.actor)}@{clean_text(e.host)}:{e.pid}"
            f"{reason}"
        )
    return "\n".join(lines)
