"""Alerts: the dashboard pops up a notification when any session in the store fails or
reaches a manual gate, whichever session is selected, once per event; what happened before
it opened is not news, nor is an abort (somebody's own decision). The changes come from
another engine, as another process's would, and from a real runner."""

from __future__ import annotations

import asyncio
from typing import Any

from tests.tui.tui_testkit import (
    loaded,
    make_session,
    notifications,
    other_engine,
    screen_text,
    select,
    wait_for,
)

SIZE = (140, 36)


def alerts(app: Any) -> list[str]:
    return [n for n in notifications(app) if n.startswith(("session failed", "waiting at a gate"))]


def fail(factory: Any, sid: str, reason: str = "stage bad failed: exit code 3") -> None:
    from store import FlowSessionManager

    with factory() as db:
        manager = FlowSessionManager(db, actor="runner")
        manager.start_session(sid)
        manager.fail(sid, reason)


def reach_gate(factory: Any, sid: str) -> None:
    """What a runner commits at the gate of the `gate` workflow."""
    from store import FlowSessionManager, StageManager

    with factory() as db:
        sessions = FlowSessionManager(db, actor="runner")
        stages = StageManager(db, actor="runner")
        sessions.start_session(sid)
        by_name = {s.name: s.id for s in stages.list_stages(sid)}
        stages.move_stage(by_name["build"], "ACTIVE")
        stages.move_stage(by_name["build"], "COMPLETED")
        stages.move_stage(by_name["approve"], "PAUSED")
        sessions.pause(sid, reason="waiting: approve")


async def test_a_session_failing_anywhere_pops_up_once(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    watched = make_session(ctx, name="the one I look at")
    other = make_session(ctx, "broken", name="nightly [red]import")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, watched)
        with other_engine(store_url) as factory:
            await asyncio.to_thread(fail, factory, other)
            await wait_for(pilot, lambda: alerts(app), what="the failure to pop up")
            expected = (
                f"session failed: nightly [red]import ({other[:12]}, broken) failed: "
                "stage bad failed: exit code 3"
            )
            assert alerts(app) == [expected]
            await asyncio.to_thread(reach_gate, factory, make_session(ctx, "gate", name="g"))
            await wait_for(pilot, lambda: len(alerts(app)) == 2, what="the next alert")
        assert alerts(app)[0] == expected  # the failure was not announced again
        assert app.dashboard.selected_id == watched  # nobody's selection moved


async def test_a_gate_reached_pops_up_with_its_checklist_and_how_to_pass_it(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    sid = make_session(ctx, "gate", name="release 1.2")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        with other_engine(store_url) as factory:
            await asyncio.to_thread(reach_gate, factory, sid)
        await wait_for(pilot, lambda: alerts(app), what="the gate to pop up")
        assert alerts(app) == [
            f"waiting at a gate: release 1.2 ({sid[:12]}, gate) waits at the manual gate "
            f"approve; check: changelog reviewed (vc flow session approve {sid[:12]} approve)"
        ]


async def test_a_runner_failing_a_session_pops_up(ctx: Any, make_app: Any, vc: Any) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, selected=False)
        result = await asyncio.to_thread(vc, "flow", "run", "broken", "--detach")
        sid = result.stdout.strip()
        await wait_for(pilot, lambda: alerts(app), timeout=15, what="the failure to pop up")
        [alert] = alerts(app)
        assert f"({sid[:12]}, broken) failed: stage bad failed: exit code 3" in alert


async def test_what_failed_before_the_dashboard_opened_and_aborts_do_not_pop_up(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    with other_engine(store_url) as factory:
        fail(factory, make_session(ctx, "broken", name="old failure"))
    aborted = make_session(ctx, name="to abort")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        with other_engine(store_url) as factory:
            from store import FlowSessionManager

            with factory() as db:
                FlowSessionManager(db).abort(aborted)
            marker = make_session(ctx, "broken", name="marker")
            await asyncio.to_thread(fail, factory, marker)
        await wait_for(pilot, lambda: alerts(app), what="the marker's failure")
        [alert] = alerts(app)  # not the old failure, not the abort
        assert "marker" in alert


def _refresh_of(app: Any, first: int, count: int) -> Any:
    """A refresh's answer holding ``count`` failures (``job first``, …), as a real
    refresh reads them (fed to the app directly: a real one would split them whenever a
    poll falls between the commits)."""
    from app.tui.data import Alert, Refresh, Window
    from widgets.data import StatusCounts

    found = [
        Alert(f"s{i}", "failure", "session failed", f"job {i} failed")
        for i in range(first, first + count)
    ]
    window = Window(0, [], 0, StatusCounts({}, 0))
    return Refresh(window, None, [], found, app.dashboard._last_event_id + count)


def _jobs(app: Any) -> list[str]:
    return [n for n in notifications(app) if "job" in n or n.startswith("more alerts")]


async def test_many_alerts_in_one_refresh_fill_the_room_and_the_last_place_counts_the_rest(
    ctx: Any, make_app: Any
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, selected=False)
        answer = _refresh_of(app, 0, 8)
        app.dashboard._show_alerts(answer)
        app.dashboard._show_alerts(answer)  # the same answer again
        await pilot.pause()
        assert _jobs(app) == [
            *(f"session failed: job {i} failed" for i in range(4)),
            "more alerts: and 4 more sessions failed or reached a gate (filter with 5 or 3)",
        ]


async def test_every_alert_pop_up_is_drawn_inside_the_screen_however_long_its_text(
    ctx: Any, make_app: Any
) -> None:
    """Gate alerts carry a checklist and a command: on an 80x24 screen each takes eight
    rows and more; the ones shown all fit, the rest are counted."""
    from app.tui.data import Alert, Refresh, Window
    from widgets.data import StatusCounts

    text = (
        "release 1.2 ({sid}, release) waits at the manual gate approve; check: changelog "
        "reviewed; staging smoke test green ('vc flow session approve {sid} approve')"
    )
    found = [
        Alert(f"s{i}", "gate", "waiting at a gate", text.format(sid=f"{i:012d}")) for i in range(4)
    ]
    app = make_app()
    async with app.run_test(size=(80, 24), notifications=True) as pilot:
        await loaded(pilot, selected=False)
        window = Window(0, [], 0, StatusCounts({}, 0))
        last = app.dashboard._last_event_id + 4
        app.dashboard._show_alerts(Refresh(window, None, [], found, last))
        await pilot.pause(0.3)
        toasts = list(app.screen.query("Toast"))
        assert toasts, "something pops up"
        assert all(toast.region.y >= 1 for toast in toasts), [
            t.region for t in toasts
        ]  # below the header
        assert any(n.startswith("more alerts") for n in notifications(app))


async def test_alerts_of_later_refreshes_wait_for_room_instead_of_leaving_the_screen(
    ctx: Any, make_app: Any, monkeypatch: Any
) -> None:
    """Pop-ups that do not fit are drawn above the screen's top, unseen: the ones on
    screen are bounded by its height, and what waits pops up as the oldest go."""
    from app.tui import alerts as popups

    monkeypatch.setattr(popups, "FAILURE_SECONDS", 1.0)
    app = make_app()
    async with app.run_test(size=(120, 15)) as pilot:  # room for two
        await loaded(pilot, selected=False)
        for first in (0, 1, 2):  # three refreshes, one failure each
            app.dashboard._show_alerts(_refresh_of(app, first, 1))
        await pilot.pause()
        assert _jobs(app) == ["session failed: job 0 failed", "session failed: job 1 failed"]
        await wait_for(
            pilot,
            lambda: _jobs(app) == ["session failed: job 2 failed"],
            timeout=5,
            what="the third once the first two went",
        )


async def test_the_help_says_failures_and_gates_pop_up(ctx: Any, make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, selected=False)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: "Alerts:" in screen_text(app), what="the help")
        text = " ".join(screen_text(app).split())
        assert "any session in the store fails, or reaches a manual gate" in text
