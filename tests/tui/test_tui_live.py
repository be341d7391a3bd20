"""Live updates: a change made by any process shows within 1 s, the cursor,
the selection and the scroll position stay where the user left them, and the log pane
follows new lines only while it is at the bottom. Also: the event loop stays free while
the store is busy."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import pytest

from tests.tui.tui_testkit import (
    add_logs,
    loaded,
    make_gated_session,
    make_session,
    manager,
    other_engine,
    row_of,
    screen_text,
    select,
    status,
    view,
    wait_for,
)
from widgets.help import HelpScreen

SIZE = (120, 30)


async def test_pause_by_another_process_shows_within_1s_keeping_cursor_and_scroll(
    ctx: Any, make_app: Any, vc: Any
) -> None:
    ids = [make_session(ctx, name=f"session {i:02d}") for i in range(14)]
    target = ids[3]  # newest first: row 10, below the first screenful
    app = make_app()
    async with app.run_test(size=(100, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("pagedown")
        await select(pilot, target)
        scroll_y = app.dashboard.table.scroll_offset.y
        cursor = app.dashboard.table.cursor_index
        assert scroll_y > 0, "the table should have scrolled to reach the row"
        result = await asyncio.to_thread(vc, "flow", "session", "pause", target[:8])
        assert result.returncode == 0, result.stderr
        done = time.monotonic()
        await wait_for(
            pilot,
            lambda: row_of(app, target).status == "PAUSED",
            timeout=1.0,
            what="the pause to show within 1 s",
        )
        assert time.monotonic() - done < 1.0
        assert app.dashboard.table.selected_id == target and app.dashboard.selected_id == target
        assert app.dashboard.table.cursor_index == cursor
        assert app.dashboard.table.scroll_offset.y == scroll_y
        assert "PAUSED" in screen_text(app)


async def test_change_on_another_engine_shows_within_1s(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    selected = make_session(ctx, name="selected")
    other = make_session(ctx, name="other")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, selected)
        with other_engine(store_url) as factory, factory() as db:
            manager(db).abort(other)
        done = time.monotonic()
        await wait_for(
            pilot,
            lambda: row_of(app, other).status == "FAILED",
            timeout=1.0,
            what="the abort to show within 1 s",
        )
        assert time.monotonic() - done < 1.0
        assert app.dashboard.table.selected_id == selected == app.dashboard.selected_id
        # A session created elsewhere lands above the cursor: the cursor stays on its row.
        with other_engine(store_url) as factory, factory() as db:
            new = manager(db).create_session("hello", name="brand new").id
        await wait_for(
            pilot,
            lambda: row_of(app, new) is not None,
            timeout=1.0,
            what="the new session to show within 1 s",
        )
        assert app.dashboard.table.selected_id == selected
        assert app.dashboard.table.rows[app.dashboard.table.cursor_index].id == selected


async def test_stage_progress_shows_live(ctx: Any, make_app: Any, store_url: str) -> None:
    from store import StageManager
    from store.status import StageStatus

    sid = make_session(ctx, state="ACTIVE")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        with other_engine(store_url) as factory, factory() as db:
            stages = StageManager(db)
            first = stages.list_stages(sid)[0]
            stages.update_stage_status(first.id, StageStatus.ACTIVE)
            stages.set_progress(first.id, 60)
        await wait_for(
            pilot,
            lambda: app.dashboard.stages.stages[0].progress == 60,
            timeout=1.0,
            what="the stage's progress within 1 s",
        )
        assert "60%" in screen_text(app)


async def summary_of(pilot: Any, session_id: str, showing: str) -> str:
    """The summary line above the stages of ``session_id``, once it shows ``showing``."""
    summary = pilot.app.dashboard.summary
    await select(pilot, session_id)
    await wait_for(pilot, lambda: showing in str(summary.render()), what="its summary")
    return str(summary.render())


async def test_a_session_waiting_at_a_gate_shows_the_gates_checklist(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    from store import StageManager
    from store.status import StageStatus

    sid = make_session(ctx, "gate", state="ACTIVE")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        with other_engine(store_url) as factory, factory() as db:  # what the runner writes
            gate = StageManager(db).list_stages(sid)[1]
            StageManager(db).move_stage(gate.id, StageStatus.PAUSED)
            manager(db).pause(sid, reason="waiting: approve")
        await wait_for(
            pilot,
            lambda: "check: changelog reviewed" in str(app.dashboard.summary.render()),
            timeout=1.0,
            what="the gate's checklist within 1 s",
        )
        assert str(app.dashboard.summary.render()) == (
            "PAUSED — waiting: approve (r resumes it) — check: changelog reviewed"
        )


async def test_the_summary_of_a_session_paused_at_one_of_two_gates_names_the_other(
    ctx: Any, make_app: Any
) -> None:
    sid = make_gated_session(ctx, ("qa", "legal"), paused_at="qa")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert await summary_of(pilot, sid, "waiting: qa") == (
            "PAUSED — waiting: qa (r resumes it) — also waiting: legal "
            "(g on a gate in the stages approves it)"
        )


async def test_r_is_said_to_pass_a_gate_only_when_the_session_waits_at_it(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    """A session paused by hand while its gate waits is resumed by ``r`` and its gate still
    needs ``g`` (the store's resume passes the gate its reason names, and only that one):
    the summary says so. One paused by hand whose reason merely reads like a gate's has
    no gate at all."""
    from store import StageManager
    from store.status import StageStatus

    beside = make_session(ctx, "gate", name="beside the gate", state="ACTIVE")
    by_hand = make_session(ctx, "hello", name="by hand", state="ACTIVE")
    with other_engine(store_url) as factory, factory() as db:
        gate = StageManager(db).list_stages(beside)[1]
        StageManager(db).move_stage(gate.id, StageStatus.PAUSED)
        manager(db).pause(beside, reason="held for the release window")
        manager(db).pause(by_hand, reason="waiting: nothing at all")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert await summary_of(pilot, beside, "held for") == (
            "PAUSED — held for the release window (r resumes it) — gate approve waits "
            "(g approves it) — "
            "check: changelog reviewed"
        )
        assert await summary_of(pilot, by_hand, "nothing at all") == (
            "PAUSED — waiting: nothing at all (r resumes it)"
        )
    with other_engine(store_url) as factory, factory() as db:
        manager(db).resume(beside)
        assert StageManager(db).get_stage(gate.id).status == StageStatus.PAUSED


async def test_log_follows_at_the_bottom_and_stays_when_scrolled_up(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    sid = make_session(ctx)
    add_logs(store_url, sid, [f"first {i}" for i in range(60)])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        pane = app.dashboard.log_pane
        await wait_for(
            pilot, lambda: any(ln.text == "first 59" for ln in pane.lines), what="the first lines"
        )
        await wait_for(
            pilot,
            lambda: pane.scroll_offset.y == pane.max_scroll_y > 0,
            what="the pane at its bottom",
        )
        add_logs(store_url, sid, ["second 0", "second 1"])
        await wait_for(
            pilot,
            lambda: pane.lines[-1].text == "second 1",
            timeout=1.0,
            what="new lines within 1 s",
        )
        await wait_for(
            pilot, lambda: pane.scroll_offset.y == pane.max_scroll_y, what="the view following them"
        )
        assert "second 1" in screen_text(app)

        pane.focus()
        await pilot.press("pageup")
        await wait_for(pilot, lambda: not pane.follow, what="follow off after scrolling up")
        assert "follow off" in screen_text(app)
        reading = pane.scroll_offset.y
        add_logs(store_url, sid, ["third 0", "third 1", "third 2"])
        await wait_for(
            pilot, lambda: pane.lines[-1].text == "third 2", timeout=1.0, what="more lines"
        )
        await pilot.pause(0.1)
        assert pane.scroll_offset.y == reading, "the view moved while the user was reading"
        await pilot.press("end")
        await wait_for(
            pilot,
            lambda: pane.follow and pane.scroll_offset.y == pane.max_scroll_y,
            what="follow on again at the bottom",
        )


async def test_a_burst_of_lines_is_shown_to_its_end_at_once_while_following(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    """One refresh reads a few thousand new lines: a burst bigger than that is not left
    half shown until the store changes again; the pane jumps to its newest lines."""
    sid = make_session(ctx)
    add_logs(store_url, sid, ["before"])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        pane = app.dashboard.log_pane
        await wait_for(pilot, lambda: pane.lines and pane.lines[-1].text == "before", what="it")
        add_logs(store_url, sid, [f"burst {i}" for i in range(20_000)])
        await wait_for(
            pilot,
            lambda: bool(pane.lines) and pane.lines[-1].text == "burst 19999",
            timeout=2.0,
            what="the burst's last line within 2 s",
        )
        assert pane.follow and pane.more_older


async def test_a_reader_scrolled_up_keeps_their_lines_while_a_stage_floods_the_pane(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    """The pane holds at most ``max_lines``: once full, newer lines wait rather than push
    out those being read (the header says so); following again shows the newest."""
    sid = make_session(ctx)
    add_logs(store_url, sid, [f"old {i}" for i in range(200)])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        pane = app.dashboard.log_pane
        await wait_for(
            pilot, lambda: bool(pane.lines) and pane.lines[-1].text == "old 199", what="it"
        )
        pane.focus()
        await pilot.press("pageup")
        await wait_for(pilot, lambda: not pane.follow, what="follow off")
        top = pane.lines[0].text
        reading = pane.scroll_offset.y
        for round_ in range(4):  # a stage keeps printing: more than the pane holds
            add_logs(store_url, sid, [f"flood {round_} {i}" for i in range(2000)])
            await pilot.pause(0.3)
        await wait_for(pilot, lambda: pane.line_count == pane.max_lines, what="a full pane")
        assert pane.lines[0].text == top and pane.scroll_offset.y == reading
        assert "newer lines held" in screen_text(app)
        await pilot.press("f")  # following again: the newest lines
        await wait_for(
            pilot,
            lambda: bool(pane.lines) and pane.lines[-1].text == "flood 3 1999",
            timeout=2.0,
            what="the newest line",
        )
        assert pane.follow and "newer lines held" not in screen_text(app)


async def test_log_pane_leaves_out_debug_records_as_session_logs_does(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    sid = make_session(ctx)
    add_logs(store_url, sid, ["notify 0 subscriber(s)"], stage=None, level="DEBUG")
    add_logs(store_url, sid, ["first line"])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        pane = app.dashboard.log_pane
        await wait_for(pilot, lambda: pane.lines, what="the first lines")
        add_logs(store_url, sid, ["notify 1 subscriber(s)"], stage=None, level="DEBUG")
        add_logs(store_url, sid, ["second line"])
        await wait_for(pilot, lambda: pane.lines[-1].text == "second line", what="the live line")
        assert all(line.level != "DEBUG" for line in pane.lines), pane.lines
        assert "subscriber" not in screen_text(app)


async def test_selected_session_deleted_elsewhere_moves_the_selection(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    older = make_session(ctx, name="older", state="FAILED")
    doomed = make_session(ctx, name="doomed", state="FAILED")
    make_session(ctx, name="newer", state="FAILED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, doomed)
        with other_engine(store_url) as factory, factory() as db:
            manager(db).delete(doomed)
        await wait_for(
            pilot, lambda: app.dashboard.table.total == 2, timeout=1.0, what="the row gone"
        )
        await wait_for(
            pilot,
            lambda: app.dashboard.selected_id == older and app.dashboard.stages.stages,
            what="the selection on the next row",
        )
        assert "doomed" not in screen_text(app)
        # The last one goes too: the table empties, the panes clear, nothing crashes.
        with other_engine(store_url) as factory, factory() as db:
            for v in list(app.dashboard.table.rows):
                manager(db).delete(v.id)
        await wait_for(pilot, lambda: app.dashboard.table.total == 0, timeout=1.0, what="empty")
        await wait_for(
            pilot,
            lambda: app.dashboard.selected_id is None and not app.dashboard.stages.stages,
            what="no selection",
        )
        assert "No sessions yet" in screen_text(app)
        assert app.is_running


async def test_event_loop_stays_free_while_the_store_is_locked(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    """A write waiting on a lock held by another process must not freeze the screen."""
    sid = make_session(ctx)
    path = store_url.removeprefix("sqlite:///")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        locker = sqlite3.connect(path, timeout=1)
        try:
            locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
            await pilot.press("p")
            await pilot.pause(0.3)
            # A frozen loop would answer only once the pause gives up on the lock, after
            # the whole busy timeout (10 s); half of it leaves room for a loaded machine.
            started = time.monotonic()
            await pilot.press("question_mark")
            await wait_for(
                pilot,
                lambda: isinstance(app.screen, HelpScreen),
                timeout=5.0,
                what="the help, while the pause waits for the lock",
            )
            assert time.monotonic() - started < 5.0
            assert status(ctx, sid) == "PENDING"  # the pause is still waiting
        finally:
            locker.rollback()
            locker.close()
        await wait_for(
            pilot,
            lambda: status(ctx, sid) == "PAUSED",
            timeout=5,
            what="the pause once the lock is gone",
        )


@pytest.fixture
def short_busy_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer gives up on a locked store after 0.5 s (set before ``ctx`` reads it)."""
    monkeypatch.setenv("VC_BUSY_TIMEOUT", "0.5")


async def test_an_operation_that_fails_on_a_locked_store_says_so_in_one_line(
    short_busy_timeout: None, ctx: Any, make_app: Any, store_url: str
) -> None:
    from tests.tui.tui_testkit import notifications

    sid = make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        locker = sqlite3.connect(store_url.removeprefix("sqlite:///"), timeout=1)
        try:
            locker.execute("BEGIN IMMEDIATE")  # another writer holds the database
            await pilot.press("p")

            def failed() -> list[str]:
                return [n for n in notifications(app) if n.startswith("pause failed")]

            await wait_for(pilot, lambda: bool(failed()), timeout=10, what="the failure")
        finally:
            locker.rollback()
            locker.close()
        (said,) = failed()
        assert "is locked" in said
        assert "\n" not in said and "SQL" not in said and "Error" not in said
        assert status(ctx, sid) == "PENDING"


async def test_store_errors_are_one_notification_and_the_app_recovers(
    ctx: Any, make_app: Any, store_url: str, monkeypatch: Any
) -> None:
    """Reads that fail (a database gone away: injected here, since a real SQLite file
    cannot be made to fail on demand under open connections) give one notification, keep
    the last picture and the app alive; once the store answers the dashboard catches up."""
    from sqlalchemy.exc import OperationalError

    from app.tui import data
    from tests.tui.tui_testkit import notifications

    sid = make_session(ctx, name="before")
    real = data.load_refresh
    failing = [False]

    def flaky(db: Any, request: Any) -> Any:
        if failing[0]:
            raise OperationalError("SELECT …", {}, sqlite3.OperationalError("disk I/O error"))
        return real(db, request)

    monkeypatch.setattr(data, "load_refresh", flaky)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        failing[0] = True
        with other_engine(store_url) as factory, factory() as db:
            manager(db).pause(sid)
        await wait_for(
            pilot,
            lambda: any(
                "store unavailable" in n and "disk I/O error" in n for n in notifications(app)
            ),
            what="the error",
        )
        await pilot.pause(0.5)  # five more polls fail: still one notification
        assert sum("store unavailable" in n for n in notifications(app)) == 1
        assert row_of(app, sid).status == "PENDING" and app.is_running
        failing[0] = False
        await wait_for(
            pilot,
            lambda: row_of(app, sid).status == "PAUSED",
            what="the change once the store answers",
        )
        # the notification is a message of its own: it may land just after the rows
        await wait_for(
            pilot,
            lambda: any("reachable again" in n for n in notifications(app)),
            what="the notification that the store answers again",
        )


async def test_changes_coming_faster_than_a_read_still_show(
    ctx: Any, make_app: Any, store_url: str, monkeypatch: Any
) -> None:
    """Reads slower than the commits that ask for them (a busy store, a far server): a
    read that has begun still shows its answer instead of being given up for the next
    change, so the screen keeps up, a read behind at most."""
    import threading

    from app.tui import data
    from store.log_ingest import append_logs

    sid = make_session(ctx, name="busy")
    real = data.load_refresh

    def slow(db: Any, request: Any) -> Any:
        time.sleep(0.3)  # three polls' worth of commits arrive meanwhile
        return real(db, request)

    stop = threading.Event()

    def keep_writing() -> None:
        with other_engine(store_url) as factory:
            while not stop.is_set():
                with factory() as db:
                    append_logs(
                        db,
                        [
                            {
                                "session_id": sid,
                                "at": time.time(),
                                "level": "INFO",
                                "category": "workflow.stage.integration",
                                "stage": "greet",
                                "text": "tick",
                            }
                        ],
                    )
                stop.wait(0.03)

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        monkeypatch.setattr(data, "load_refresh", slow)
        writer = threading.Thread(target=keep_writing)
        writer.start()
        try:
            await pilot.pause(0.5)
            with other_engine(store_url) as factory, factory() as db:
                manager(db).pause(sid)
            await wait_for(
                pilot,
                lambda: row_of(app, sid).status == "PAUSED",
                timeout=5.0,
                what="the pause, while log lines keep coming",
            )
        finally:
            stop.set()
            writer.join()


async def test_orphan_marks_appear_with_time_alone_without_any_write(
    ctx: Any, make_app: Any
) -> None:
    """The orphaned mark changes with nothing committed: a runner's heartbeat grows stale,
    or a runner on this host dies. The mark shows all the same, when it becomes true (the
    dashboard re-reads at that moment, not on a blind periodic full re-read)."""
    import os
    import subprocess
    import sys

    from sqlalchemy import text

    from store.identity import local_host
    from store.liveness import STALE_AFTER

    stale = make_session(ctx, name="heartbeat goes stale")
    dying = make_session(ctx, name="runner dies")
    runner = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with ctx.factory() as db:
            # A runner elsewhere (its pid means nothing here) that beat last almost
            # STALE_AFTER ago, and a runner on this host, alive and beating.
            manager(db).start_session(stale, runner_host="elsewhere", runner_pid=os.getpid())
            manager(db).start_session(dying, runner_host=local_host(), runner_pid=runner.pid)
            db.execute(
                text("UPDATE flow_sessions SET heartbeat_at = :at WHERE id = :id"),
                {"at": time.time() - STALE_AFTER + 2.0, "id": stale},
            )
            db.commit()
        versions = {sid: view(ctx, sid).version for sid in (stale, dying)}
        app = make_app()
        async with app.run_test(size=SIZE) as pilot:
            await loaded(pilot)
            assert not row_of(app, stale).orphaned and not row_of(app, dying).orphaned

            await wait_for(
                pilot,
                lambda: row_of(app, stale).orphaned,
                timeout=4.0,
                what="the orphan mark of a stale heartbeat",
            )
            assert not row_of(app, dying).orphaned
            runner.kill()
            runner.wait()
            await wait_for(
                pilot,
                lambda: row_of(app, dying).orphaned,
                timeout=3.0,
                what="the orphan mark of a dead local runner",
            )
            assert "⚠orphaned" in screen_text(app)
        assert {sid: view(ctx, sid).version for sid in (stale, dying)} == versions
    finally:
        runner.kill()
        runner.wait()
