"""Helpers of the dashboard tests: waiting for state, reading the screen, making sessions
through the managers, and a frozen store for deterministic snapshots.

(A plain module, not a conftest: pytest puts this directory on sys.path, as for
tests/widgets/widgets_testkit.py.)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from textual.app import App
from textual.pilot import Pilot

from tests.waiting import poll, wait_until_async

NOW = 1_700_000_000.0
"""The frozen "now" of the snapshots (2023-11-14 22:13:20 UTC)."""


def frozen_clock() -> float:
    return NOW


async def wait_for(
    pilot: Pilot[Any],
    predicate: Callable[[], object],
    *,
    timeout: float = 5.0,
    what: str = "the condition",
) -> None:
    """Let the app run until ``predicate()`` is true: polled every 50 ms, never a fixed
    long sleep, failing with ``what`` (and the notifications shown, which usually say
    why) after ``timeout`` seconds."""
    await wait_until_async(
        predicate,
        pilot.pause,
        what=what,
        timeout=timeout,
        details=lambda: f"notifications: {notifications(pilot.app)}",
    )


def screen_text(app: App[Any]) -> str:
    """The active screen as the terminal would show it now (dialogs and toasts included),
    one line per row."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


def notifications(app: App[Any]) -> list[str]:
    """Title and message of every notification still shown."""
    return [f"{n.title}: {n.message}" for n in app._notifications]


async def loaded(pilot: Pilot[Any], *, selected: bool = True) -> None:
    """Wait for the first window (and the selected session's stages) to be shown."""
    app: Any = pilot.app
    await wait_for(pilot, lambda: app.dashboard.table.loaded, what="the first window")
    if selected and app.dashboard.table.total:
        await wait_for(
            pilot,
            lambda: app.dashboard.selected_id is not None and bool(app.dashboard.stages.stages),
            what="the selected session's stages",
        )


async def pick_workflow(pilot: Pilot[Any], workflow_id: str) -> Any:
    """`n` pressed and ``workflow_id`` highlighted in the new-session form's list (not
    picked yet): the form."""
    from app.tui.screens import NewSessionScreen

    app: Any = pilot.app
    await pilot.press("n")
    await wait_for(pilot, lambda: isinstance(app.screen, NewSessionScreen), what="the form")
    screen = app.screen
    options = screen.query_one("#new-workflows")
    await wait_for(pilot, lambda: options.option_count > 0, what="the workflows listed")
    ids = [options.get_option_at_index(i).id for i in range(options.option_count)]
    for _ in range(ids.index(workflow_id)):
        await pilot.press("down")
    return screen


async def select(pilot: Pilot[Any], session_id: str) -> None:
    """Move the cursor with the arrow keys onto ``session_id`` (down first, then up; rows
    outside the loaded window arrive as the table asks for them) and wait for its stages."""
    app: Any = pilot.app
    table = app.dashboard.table
    for key in ("down", "up"):
        while table.selected_id != session_id:
            edge = table.total - 1 if key == "down" else 0
            if table.cursor_index == edge:
                break
            await pilot.press(key)
            await wait_for(pilot, lambda: table.selected_id is not None, what="the row loaded")
    await wait_for(
        pilot,
        lambda: app.dashboard.selected_id == session_id and app.dashboard.stages.stages,
        what=f"session {session_id[:8]} selected",
    )


def row_of(app: Any, session_id: str) -> Any:
    return next((r for r in app.dashboard.table.rows if r.id == session_id), None)


# -- the store, through the managers and queries --------------------------------------------


def manager(db: Any) -> Any:
    from store import FlowSessionManager

    return FlowSessionManager(db, actor="tester")


def make_session(
    ctx: Any,
    workflow: str = "hello",
    *,
    name: str | None = None,
    metadata: dict[str, Any] | None = None,
    state: str = "PENDING",
) -> str:
    """A session of a workspace workflow, brought to ``state`` by manager calls only
    (PAUSED by pause, FAILED by abort, ACTIVE by a start claimed by this process)."""
    from store.workflows import find_workflow

    definition = find_workflow(ctx.settings.workflows_dir, workflow)
    with ctx.factory() as db:
        mgr = manager(db)
        sid = mgr.create_session(
            definition.id, name=name, metadata=metadata, definition=definition
        ).id
        if state == "PAUSED":
            mgr.pause(sid)
        elif state == "FAILED":
            mgr.abort(sid)
        elif state == "ACTIVE":
            mgr.start_session(sid)
        elif state != "PENDING":
            raise ValueError(state)
    if ctx.logging is not None:
        # The operations' own log records reach the store through the batching mirror;
        # flushed here so that they come before whatever lines a test adds next.
        ctx.logging.flush()
    return sid


def make_gated_session(ctx: Any, gates: tuple[str, ...], *, paused_at: str | None = None) -> str:
    """A started session of :data:`tests.gates.TWO_GATES` held at its gates
    (:func:`tests.gates.hold_at_gates`). Its runner is this process (alive)."""
    from tests.gates import TWO_GATES, hold_at_gates

    (ctx.settings.workflows_dir / "twogates.yaml").write_text(TWO_GATES)
    sid = make_session(ctx, "twogates", name="release", state="ACTIVE")
    with ctx.factory() as db:
        hold_at_gates(db, sid, gates, paused_at)
    return sid


def view(ctx: Any, session_id: str) -> Any:
    """The session as the store has it now (None once deleted)."""
    from store.queries import get_session_view

    with ctx.factory() as db:
        result = get_session_view(db, session_id)
        db.commit()
    return result


def status(ctx: Any, session_id: str) -> str | None:
    v = view(ctx, session_id)
    return None if v is None else v.status


def events(ctx: Any, session_id: str) -> list[str]:
    from store.queries import list_events

    with ctx.factory() as db:
        result = [e.op for e in list_events(db, session_id)]
        db.commit()
    return result


def add_logs(
    url: str, session_id: str, texts: list[str], *, stage: str | None = "greet", level: str = "INFO"
) -> None:
    """Log records written the way runners write them (``append_logs``), on an engine of
    their own: another writer, as far as the dashboard can tell."""
    from store import get_session_factory, init_db
    from store.log_ingest import append_logs

    engine = init_db(url)
    try:
        with get_session_factory(engine)() as db:
            now = time.time()
            append_logs(
                db,
                [
                    {
                        "session_id": session_id,
                        "at": now,
                        "level": level,
                        "category": "workflow.stage.integration",
                        "stage": stage,
                        "text": text,
                    }
                    for text in texts
                ],
            )
    finally:
        engine.dispose()


@contextmanager
def other_engine(url: str) -> Iterator[Any]:
    """A session factory on a second engine: a writer that is not the dashboard's."""
    from store import get_session_factory, init_db

    engine = init_db(url)
    try:
        yield get_session_factory(engine)
    finally:
        engine.dispose()


def stop_everything(ctx: Any, timeout: float = 10.0) -> None:
    """Abort what still runs and wait for its runners to let go: no test leaves a process
    (the `slow` workflow spins a CPU for a minute)."""
    from store.errors import StoreError
    from store.identity import pid_alive
    from store.queries import SessionFilter, list_sessions

    deadline = time.monotonic() + timeout
    with ctx.factory() as db:
        live = [
            v
            for v in list_sessions(db, SessionFilter(), limit=10_000)
            if v.status in ("PENDING", "ACTIVE", "PAUSED")
        ]
        db.commit()
        for v in live:
            try:
                manager(db).abort(v.id)
            except StoreError:
                pass

    def let_go(session_id: str) -> bool:
        current = view(ctx, session_id)
        return (
            current is None
            or current.runner_pid in (None, os.getpid())
            or not pid_alive(current.runner_pid)
        )

    for v in live:
        poll(lambda sid=v.id: let_go(sid), max(0.0, deadline - time.monotonic()), 0.05)


# -- a frozen store for snapshots -----------------------------------------------------------

_T = NOW


FROZEN_IDS = {
    "train": "7a11ce5e" + "0" * 24,
    "release": "5e1ea5e0" + "0" * 24,
    "backup": "bac0fa11" + "0" * 24,
    "etl": "e7100d0e" + "0" * 24,
    "orphan": "0bfa7a1e" + "0" * 24,
    "queued": "9e9e9e90" + "0" * 24,
}


def seed_frozen_store(factory: Any) -> None:
    """Sessions in every state with fixed ids, times, hosts and log lines, written through
    the store's tables, so a snapshot shows the same thing on every run and machine."""
    from store.models import FlowEvent, FlowSession, LogRecord, StageInstance

    def session(
        key: str,
        name: str,
        workflow: str,
        status: str,
        age: float,
        *,
        reason: str | None = None,
        started: float | None = None,
        finished: float | None = None,
        host: str | None = None,
        pid: int | None = None,
        heartbeat: float | None = None,
        stages: list[tuple[str, str, float, int, int | None, str | None]],
        gates: tuple[str, ...] = (),
    ) -> list[Any]:
        sid = FROZEN_IDS[key]
        rows: list[Any] = [
            FlowSession(
                id=sid,
                name=name,
                workflow_id=workflow,
                status=status,
                reason=reason,
                definition={"id": workflow, "stages": [{"name": s[0]} for s in stages]},
                meta={"owner": "ops"},
                created_at=_T - age,
                updated_at=_T - 5,
                started_at=started,
                finished_at=finished,
                runner_host=host,
                runner_pid=pid,
                heartbeat_at=heartbeat,
            )
        ]
        for i, (stage, st, progress, attempt, code, error) in enumerate(stages):
            begun = None if st == "PENDING" else (started or _T - age) + 60 * i
            done = begun + 50 if st in ("COMPLETED", "FAILED") and begun else None
            rows.append(
                StageInstance(
                    session_id=sid,
                    position=i,
                    name=stage,
                    stage_type="manual" if stage in gates else "task",
                    status=st,
                    progress=progress,
                    attempt=attempt,
                    exit_code=code,
                    error=error,
                    started_at=begun,
                    finished_at=done,
                    updated_at=_T - 5,
                )
            )
        rows.append(
            FlowEvent(
                session_id=sid,
                op="create",
                to_status="PENDING",
                actor="ana",
                host="build-01",
                pid=4242,
                at=_T - age,
            )
        )
        return rows

    rows: list[Any] = []
    rows += session(
        "queued",
        "queued: weekly report",
        "report",
        "PENDING",
        60,
        stages=[("collect", "PENDING", 0, 0, None, None), ("render", "PENDING", 0, 0, None, None)],
    )
    rows += session(
        "train",
        "train: resnet run 7",
        "demo-train",
        "ACTIVE",
        900,
        started=_T - 754,
        host="build-01",
        stages=[
            ("prepare", "COMPLETED", 100, 1, 0, None),
            ("train", "ACTIVE", 42, 1, None, None),
            ("evaluate", "PENDING", 0, 0, None, None),
        ],
    )
    rows += session(
        "orphan",
        "ingest: clickstream",
        "ingest",
        "ACTIVE",
        1800,
        started=_T - 1790,
        host="build-02",
        pid=999_999,
        heartbeat=1.0,
        stages=[("fetch", "ACTIVE", 70, 2, None, None)],
    )
    rows += session(
        "release",
        "release v1.2.3",
        "demo-release",
        "PAUSED",
        2400,
        reason="waiting: approve",
        started=_T - 2390,
        host="build-01",
        stages=[
            ("build", "COMPLETED", 100, 1, 0, None),
            ("approve", "PAUSED", 0, 1, None, None),
            ("deploy", "PENDING", 0, 0, None, None),
        ],
        gates=("approve",),
    )
    rows += session(
        "backup",
        "backup: nightly",
        "demo-backup",
        "FAILED",
        5400,
        reason="stage upload failed: exit code 2",
        started=_T - 5390,
        finished=_T - 5200,
        stages=[
            ("snapshot", "COMPLETED", 100, 1, 0, None),
            ("upload", "FAILED", 30, 2, 2, "exit code 2"),
        ],
    )
    rows += session(
        "etl",
        "etl: daily import",
        "demo-etl",
        "COMPLETED",
        86_400,
        started=_T - 86_390,
        finished=_T - 86_100,
        stages=[
            ("extract", "COMPLETED", 100, 1, 0, None),
            ("transform", "COMPLETED", 100, 1, 0, None),
            ("load", "COMPLETED", 100, 1, 0, None),
        ],
    )
    logs = {
        "train": [
            ("INFO", "prepare", "loading dataset"),
            ("INFO", "prepare", "3 shards ready"),
            *[("INFO", "train", f"epoch {i} loss 0.{1000 - 37 * i}") for i in range(1, 9)],
            ("WARNING", "train", "learning rate warm-up still on"),
        ],
        "release": [
            ("INFO", "build", "building v1.2.3"),
            ("INFO", "approve", "waiting for approval: changelog reviewed"),
        ],
        "backup": [
            ("INFO", "snapshot", "snapshot of /srv taken"),
            ("INFO", "upload", "uploading to the backup host"),
            ("WARNING", "upload", "connection refused"),
            ("ERROR", "upload", "stage failed: exit code 2"),
        ],
    }
    for key, lines in logs.items():
        for i, (level, stage, text) in enumerate(lines):
            rows.append(
                LogRecord(
                    session_id=FROZEN_IDS[key],
                    at=_T - 600 + 7 * i,
                    level=level,
                    category="workflow.stage.integration",
                    stage=stage,
                    text=text,
                )
            )
    with factory() as db:
        for row in rows:
            db.add(row)
            if isinstance(row, FlowSession):
                db.flush()  # stages and events refer to it
        db.commit()


FROZEN_MATRIX_ID = "7b0b5000" + "0" * 24


def seed_frozen_matrix(factory: Any) -> None:
    """One more frozen session, the newest, with a matrix stage: ``resize`` in six
    instances (three COMPLETED, one running, one FAILED, one PENDING) between ``fetch`` and
    ``publish``, and log lines of its instances."""
    from store.models import FlowSession, LogRecord, StageInstance

    sid = FROZEN_MATRIX_ID
    rows: list[Any] = [
        FlowSession(
            id=sid,
            name="thumbs: spring catalogue",
            workflow_id="thumbs",
            status="ACTIVE",
            definition={"id": "thumbs", "fail_fast": False, "stages": []},
            meta={},
            created_at=_T - 30,
            updated_at=_T - 5,
            started_at=_T - 28,
            runner_host="build-01",
        )
    ]
    instances = [
        ("small", "png", "COMPLETED", 100, 0, None),
        ("small", "webp", "COMPLETED", 100, 0, None),
        ("medium", "png", "COMPLETED", 100, 0, None),
        ("medium", "webp", "FAILED", 35, 2, "exit code 2"),
        ("large", "png", "ACTIVE", 60, None, None),
        ("large", "webp", "PENDING", 0, None, None),
    ]
    stages: list[tuple[str, dict[str, Any], str, float, int | None, str | None]] = [
        ("fetch", {}, "COMPLETED", 100, 0, None),
        *(
            (
                f"resize[size={size},format={fmt}]",
                {"name": "resize", "instance": {"size": size, "format": fmt}},
                status,
                progress,
                code,
                error,
            )
            for size, fmt, status, progress, code, error in instances
        ),
        ("publish", {}, "PENDING", 0, None, None),
    ]
    for i, (name, config, status, progress, code, error) in enumerate(stages):
        begun = None if status == "PENDING" else _T - 25 + i
        rows.append(
            StageInstance(
                session_id=sid,
                position=i,
                name=name,
                config=config,
                status=status,
                progress=progress,
                attempt=0 if status == "PENDING" else 1,
                exit_code=code,
                error=error,
                started_at=begun,
                finished_at=begun + 9 if begun and status in ("COMPLETED", "FAILED") else None,
                updated_at=_T - 5,
            )
        )
    for i, (stage, text) in enumerate(
        [
            ("fetch", "fetched 240 images"),
            *(
                (f"resize[size={size},format={fmt}]", f"resized to {size} {fmt}")
                for size, fmt, status, *_ in instances
                if status != "PENDING"
            ),
            ("resize[size=medium,format=webp]", "webp encoder: out of memory"),
        ]
    ):
        rows.append(
            LogRecord(
                session_id=sid,
                at=_T - 25 + 2 * i,
                level="ERROR" if "memory" in text else "INFO",
                category="workflow.stage.integration",
                stage=stage,
                text=text,
            )
        )
    with factory() as db:
        db.add(rows[0])
        db.flush()
        for row in rows[1:]:
            db.add(row)
        db.commit()
