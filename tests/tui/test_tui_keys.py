"""Every key of the dashboard, driven with Pilot on a real store: each test
checks what the store says afterwards (through the managers' queries), not only the screen.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from textual import events as textual_events

from app.tui.app import FlowApp
from app.tui.dashboard import EMPTY_TEXT, NO_MATCH_TEXT, DashboardScreen
from app.tui.keys import help_lines, palette_entries
from app.tui.screens import DetailsScreen, NewSessionScreen
from tests.tui.tui_testkit import (
    events,
    loaded,
    make_gated_session,
    make_session,
    manager,
    notifications,
    pick_workflow,
    row_of,
    screen_text,
    select,
    status,
    view,
    wait_for,
)
from widgets.confirm import ConfirmScreen
from widgets.help import HelpScreen

SIZE = (120, 36)


async def test_p_pauses_the_selected_session(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, name="to pause")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        await wait_for(pilot, lambda: status(ctx, sid) == "PAUSED", what="PAUSED in the store")
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "PAUSED", what="PAUSED in the table"
        )
        assert "PAUSED" in screen_text(app)
        assert events(ctx, sid)[-1] == "pause"


async def test_r_resumes_a_paused_session(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, state="PAUSED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        # It never started, so resume takes it back to PENDING.
        await wait_for(pilot, lambda: status(ctx, sid) == "PENDING", what="PENDING")
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "PENDING", what="PENDING in the table"
        )
        assert events(ctx, sid)[-1] == "resume"


async def test_g_approves_the_gate_and_resumes_the_session_waiting_at_it(
    ctx: Any, make_app: Any
) -> None:
    sid = make_gated_session(ctx, ("qa",), paused_at="qa")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: status(ctx, sid) == "ACTIVE", what="ACTIVE in the store")
        stages = {s.name: s.status for s in view(ctx, sid).stages}
        assert (stages["qa"], stages["legal"]) == ("COMPLETED", "PENDING")
        assert events(ctx, sid)[-2:] == ["approve", "resume"]
        await wait_for(
            pilot,
            lambda: f"approve: ACTIVE: {sid[:12]}; gate qa approved" in notifications(app),
            what="the note",
        )


async def test_g_with_two_gates_waiting_approves_the_one_under_the_stage_cursor(
    ctx: Any, make_app: Any
) -> None:
    sid = make_gated_session(ctx, ("qa", "legal"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: len(app.dashboard.stages.stages) == 4, what="stages")
        app.dashboard.stages.focus()
        for _ in range(4):
            if (row := app.dashboard.stages.cursor_row) is not None and row.name == "legal":
                break
            await pilot.press("down")
        await pilot.press("g")
        await wait_for(pilot, lambda: notifications(app), what="the note")
        stages = {s.name: s.status for s in view(ctx, sid).stages}
        assert (stages["qa"], stages["legal"]) == ("PAUSED", "COMPLETED")


async def test_g_is_in_the_session_log_before_what_the_runner_did_after_it(
    ctx: Any, make_app: Any, vc: Any
) -> None:
    from store.queries import read_logs

    (ctx.settings.workflows_dir / "gated.yaml").write_text(
        "stages:\n  - {name: build, run: echo built}\n  - {name: qa}\n"
        "  - {name: ship, run: echo shipped}\n"
    )
    run = vc("flow", "run", "gated", "--detach")
    assert run.returncode == 0, run.stderr
    sid = run.stdout.strip().splitlines()[-1]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: status(ctx, sid) == "PAUSED", what="waiting at qa")
        await pilot.press("g")
        await wait_for(pilot, lambda: status(ctx, sid) == "COMPLETED", what="COMPLETED")
    with ctx.factory() as db:
        texts = [line.text for line in read_logs(db, sid)]
        db.commit()
    approved = next(i for i, text in enumerate(texts) if text.startswith("approve "))
    shipped = next(i for i, text in enumerate(texts) if "shipped" in text)
    assert approved < shipped, texts


async def test_g_with_two_gates_waiting_is_refused_saying_which_command_names_one(
    ctx: Any, make_app: Any
) -> None:
    sid = make_gated_session(ctx, ("qa", "legal"))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("g")
        await wait_for(pilot, lambda: notifications(app), what="the refusal")
        assert notifications(app) == [
            f"approve refused: session {sid[:12]} has 2 gates waiting: qa, legal; name the "
            f"one to approve with the stage cursor on it, or with "
            f"'vc flow session approve {sid[:12]} GATE'"
        ]
        stages = {s.name: s.status for s in view(ctx, sid).stages}
        assert (stages["qa"], stages["legal"]) == ("PAUSED", "PAUSED")


async def test_p_r_a_on_a_real_runner(ctx: Any, make_app: Any, vc: Any) -> None:
    """Pause, resume and abort a session whose runner really runs its stage."""
    run = vc("flow", "run", "slow", "--detach")
    assert run.returncode == 0, run.stderr
    sid = run.stdout.strip().splitlines()[-1]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(
            pilot,
            lambda: app.dashboard.stages.stages[0].status == "ACTIVE",
            what="the stage running",
        )
        await pilot.press("p")
        await wait_for(
            pilot,
            lambda: app.dashboard.stages.stages[0].status == "PAUSED",
            what="the runner pausing the stage",
        )
        assert status(ctx, sid) == "PAUSED"
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: app.dashboard.stages.stages[0].status == "ACTIVE",
            what="the runner resuming the stage",
        )
        assert status(ctx, sid) == "ACTIVE"
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: row_of(app, sid).status == "FAILED", what="FAILED")
        assert view(ctx, sid).reason == "aborted"


async def test_a_dialog_shows_its_own_keys_in_the_footer_not_the_dashboards_quit(
    ctx: Any, make_app: Any
) -> None:
    """q answers No in the question (it would quit the dashboard under it): the footer
    says what the dialog's keys do."""
    from textual.widgets import Footer
    from textual.widgets._footer import FooterKey

    make_session(ctx, state="PAUSED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.pause()
        footer = app.screen.query_one(Footer)
        shown = [(k.key_display, k.description) for k in footer.query(FooterKey)]
        assert shown == [("y", "Yes"), ("n", "No")]


async def test_a_on_a_failed_session_is_refused_without_asking(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, state="FAILED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: notifications(app), what="the refusal")
        assert not isinstance(app.screen, ConfirmScreen)
        assert notifications(app) == [
            f"abort refused: cannot abort session {sid[:12]}: it is FAILED; allowed: retry, delete"
        ]


async def test_p_on_a_session_waiting_at_a_gate_is_refused_offering_approve(
    ctx: Any, make_app: Any
) -> None:
    sid = make_gated_session(ctx, ("qa",), paused_at="qa")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("p")
        await wait_for(pilot, lambda: notifications(app), what="the refusal")
        assert notifications(app) == [
            f"pause refused: cannot pause session {sid[:12]}: it is PAUSED (waiting at gate qa); "
            "allowed: approve, resume, abort, delete"
        ]
        assert status(ctx, sid) == "PAUSED"


async def test_d_on_a_session_with_a_live_runner_is_refused_without_asking(
    ctx: Any, make_app: Any
) -> None:
    sid = make_session(ctx, state="ACTIVE")  # its runner is this process: alive
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("d")
        await wait_for(pilot, lambda: notifications(app), what="the refusal")
        assert not isinstance(app.screen, ConfirmScreen)
        (said,) = notifications(app)
        assert said.startswith(f"delete refused: cannot delete session {sid[:12]}")
        assert "pause or abort it first" in said and "--force" not in said
        assert status(ctx, sid) == "ACTIVE"


async def test_d_on_an_active_session_no_runner_holds_asks_first(ctx: Any, make_app: Any) -> None:
    import os

    from store.identity import local_host

    sid = make_session(ctx, state="ACTIVE")
    with ctx.factory() as db:  # its runner left it (a worker handing it back does this)
        manager(db).release_runner(sid, runner_host=local_host(), runner_pid=os.getpid())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")


async def test_a_asks_first_and_n_keeps_the_session(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, name="keep me [b]safe[/b]")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        assert "keep me [b]safe[/b]" in screen_text(app)  # the name, literally
        await pilot.press("n")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="closed")
        await pilot.pause(0.2)
        assert status(ctx, sid) == "PENDING"
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: status(ctx, sid) == "FAILED", what="FAILED")
        assert view(ctx, sid).reason == "aborted"
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "FAILED", what="FAILED in the table"
        )


async def test_d_asks_then_deletes_and_the_selection_moves(ctx: Any, make_app: Any) -> None:
    first = make_session(ctx, name="oldest", state="FAILED")
    middle = make_session(ctx, name="middle", state="FAILED")
    make_session(ctx, name="newest", state="FAILED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, middle)
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="closed")
        assert view(ctx, middle) is not None
        await pilot.press("d")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        await pilot.press("y")
        await wait_for(pilot, lambda: view(ctx, middle) is None, what="deleted in the store")
        await wait_for(pilot, lambda: app.dashboard.table.total == 2, what="two rows left")
        await wait_for(pilot, lambda: app.dashboard.selected_id == first, what="selection moved")
        assert "middle" not in screen_text(app)


async def test_s_starts_a_pending_session_and_its_runner_completes_it(
    ctx: Any, make_app: Any
) -> None:
    sid = make_session(ctx, "hello", name="created, never run")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert "PENDING (s starts it)" in screen_text(app)
        await pilot.press("s")
        await wait_for(pilot, lambda: status(ctx, sid) == "COMPLETED", timeout=20, what="COMPLETED")
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "COMPLETED", what="COMPLETED in the table"
        )
        assert any(n.startswith(f"start: started {sid[:12]}") for n in notifications(app))


async def test_s_on_a_paused_session_is_refused_saying_why(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, state="PAUSED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("s")
        await wait_for(pilot, lambda: notifications(app), what="the refusal")
        assert notifications(app) == [
            f"start refused: session {sid[:12]} is PAUSED: resume it with r"
        ]
        assert status(ctx, sid) == "PAUSED" and events(ctx, sid)[-1] == "pause"


async def test_r_on_a_pending_session_says_which_key_starts_it(ctx: Any, make_app: Any) -> None:
    make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: notifications(app), what="the refusal")
        (shown,) = notifications(app)
        assert shown.startswith("resume refused:") and shown.endswith("(s starts it)")


async def test_t_retries_a_failed_session_and_runs_it(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, "hello", state="FAILED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("t")
        await wait_for(pilot, lambda: "retry" in events(ctx, sid), what="the retry event")
        await wait_for(
            pilot,
            lambda: status(ctx, sid) == "COMPLETED",
            timeout=20,
            what="the runner completing the retried session",
        )
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "COMPLETED", what="COMPLETED in the table"
        )


async def test_n_picks_a_workflow_names_and_starts_it(ctx: Any, make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert EMPTY_TEXT.splitlines()[0] in screen_text(app)
        await pick_workflow(pilot, "hello")
        await pilot.press("enter")  # picks it: the name field takes the focus
        await pilot.press(*"tui", "enter")
        await wait_for(
            pilot, lambda: app.dashboard.table.total == 1, timeout=10, what="the new row"
        )
        sid = app.dashboard.table.rows[0].id
        created = view(ctx, sid)
        assert (created.name, created.workflow_id) == ("tui", "hello")
        await wait_for(
            pilot,
            lambda: status(ctx, sid) == "COMPLETED",
            timeout=20,
            what="its runner completing it",
        )
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "COMPLETED", what="COMPLETED in the table"
        )


async def test_enter_shows_metadata_definition_and_events(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, metadata={"owner": "ana", "ticket": "OPS-7"}, state="PAUSED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), what="details")
        text = screen_text(app)
        assert sid in text
        assert "owner = ana" in text and "ticket = OPS-7" in text
        assert "definition (snapshot taken at creation)" in text
        assert '"name": "greet"' in text
        details = app.screen.query_one("#details-text").render().plain
        assert "create  - -> PENDING" in details and "pause  PENDING -> PAUSED" in details
        await pilot.press("p")  # dashboard keys are off while a dialog is open
        await pilot.pause(0.2)
        assert status(ctx, sid) == "PAUSED" and events(ctx, sid)[-1] == "pause"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, DetailsScreen), what="closed")


def test_details_say_when_and_who_runs_in_words_as_session_show_does(ctx: Any) -> None:
    from app.tui.data import details_text

    sid = make_session(ctx, state="PAUSED")
    with ctx.factory() as db:
        text = details_text(db, sid) or ""
    moment = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    assert re.search(rf"^created   {moment} \(\d+s ago\)$", text, re.MULTILINE), text
    assert re.search(r"^runner    none$", text, re.MULTILINE), text
    assert re.search(rf"^  {moment}  create  - -> PENDING  by ", text, re.MULTILINE), text
    assert "+00:00" not in text  # no ISO stamps: local time, as in `session show`
    assert re.match(r"read at   \d\d:\d\d:\d\d \(not live: ", text), text


async def test_slash_filters_by_text_and_escape_clears(ctx: Any, make_app: Any) -> None:
    for name in ("alpha one", "beta two", "alpha three"):
        make_session(ctx, name=name)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert app.dashboard.table.total == 3
        await pilot.press("slash")
        await pilot.press(*"alp", "enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 2, what="two matches")
        assert all("alpha" in r.name for r in app.dashboard.table.rows)
        assert "filter: “alp”" in screen_text(app)
        await pilot.press("slash", "ctrl+u", *"zzz", "enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 0, what="no match")
        assert NO_MATCH_TEXT.splitlines()[0] in screen_text(app)
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.dashboard.table.total == 3, what="the filter cleared")


async def test_keys_arriving_with_the_slash_go_into_the_filter_not_to_the_session(
    ctx: Any, make_app: Any
) -> None:
    """A paste or fast typing delivers `/` and what follows in one read: `p` and `r` in
    the text must never pause or resume the selected session."""
    sid = make_session(ctx, name="prod job", state="ACTIVE")
    make_session(ctx, name="other")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, sid)
        for key in ("slash", "p", "r", "o", "d"):  # queued together, as one read gives them
            char = "/" if key == "slash" else key
            app.post_message(textual_events.Key(key, char))
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 1, what="one match")
        assert "filter: “prod”" in screen_text(app)
        assert status(ctx, sid) == "ACTIVE"
        assert "pause" not in events(ctx, sid)


async def test_a_slash_typed_into_the_filter_is_part_of_its_text(ctx: Any, make_app: Any) -> None:
    make_session(ctx, name="etl/nightly")
    make_session(ctx, name="etl weekly")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"etl", "slash", "enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 1, what="one match")
        assert [r.name for r in app.dashboard.table.rows] == ["etl/nightly"]


async def test_the_text_filter_matches_underscore_and_percent_literally(
    ctx: Any, make_app: Any
) -> None:
    for name in ("load_data", "load data", "100% done", "1000 done"):
        make_session(ctx, name=name)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", "_", "enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 1, what="one match")
        assert [r.name for r in app.dashboard.table.rows] == ["load_data"]
        await pilot.press("slash", "ctrl+u", *"0%", "enter")
        await wait_for(
            pilot,
            lambda: [r.name for r in app.dashboard.table.rows] == ["100% done"],
            what="the one name holding '0%'",
        )


async def test_a_long_text_filter_is_cut_in_the_header_which_keeps_its_counts(
    ctx: Any, make_app: Any
) -> None:
    make_session(ctx, name="alpha")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *("x" * 60), "enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 0, what="no match")
        header = screen_text(app).splitlines()[0]
        assert f"filter: “{'x' * 23}…”" in header
        assert "total 1" in header and "log: follow" in header


async def test_a_narrow_header_says_the_log_state_in_short_and_keeps_the_counts(
    ctx: Any, make_app: Any
) -> None:
    for i in range(3):
        make_session(ctx, name=f"slow {i}")
    app = make_app()
    async with app.run_test(size=(60, 20)) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"slow", "enter")
        await wait_for(pilot, lambda: "filter:" in screen_text(app), what="the filter shown")
        header = screen_text(app).splitlines()[0]
        assert "PEND 3" in header and "total 3" in header
        assert "filter: “slow”" in header and "log f:on w:off" in header


async def test_a_filter_that_still_shows_the_selected_session_keeps_the_cursor_on_it(
    ctx: Any, make_app: Any
) -> None:
    chosen = make_session(ctx, name="chosen", state="PAUSED")
    make_session(ctx, name="newer paused", state="PAUSED")  # above it under the filter
    for i in range(3):
        make_session(ctx, name=f"newer {i}")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, chosen)
        await pilot.press("3")
        await wait_for(pilot, lambda: app.dashboard.table.total == 2, what="the PAUSED ones")
        await pilot.pause()
        assert app.dashboard.table.selected_id == chosen
        await pilot.press("0")
        await wait_for(pilot, lambda: app.dashboard.table.total == 5, what="every session")
        await pilot.pause()
        assert app.dashboard.table.selected_id == chosen
        assert app.dashboard.selected_id == chosen


async def test_a_filter_that_hides_the_selected_session_puts_the_cursor_on_the_top_row(
    ctx: Any, make_app: Any
) -> None:
    paused = make_session(ctx, name="paused", state="PAUSED")
    make_session(ctx, name="older pending")
    newest = make_session(ctx, name="pending newest")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await select(pilot, paused)
        await pilot.press("1")
        await wait_for(pilot, lambda: app.dashboard.table.total == 2, what="the PENDING ones")
        await wait_for(
            pilot, lambda: app.dashboard.table.selected_id == newest, what="the top row selected"
        )


async def test_number_keys_filter_by_status(ctx: Any, make_app: Any) -> None:
    pending = make_session(ctx, name="p1")
    paused = make_session(ctx, name="p2", state="PAUSED")
    failed = make_session(ctx, name="p3", state="FAILED")
    active = make_session(ctx, name="p4", state="ACTIVE")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for key, expected in (
            ("1", [pending]),
            ("2", [active]),
            ("3", [paused]),
            ("4", []),
            ("5", [failed]),
        ):
            await pilot.press(key)
            await wait_for(
                pilot,
                lambda e=expected: [r.id for r in app.dashboard.table.rows] == e,
                what=f"key {key}",
            )
            assert (
                app.dashboard.filter.status is not None
                and app.dashboard.filter.status in screen_text(app)
            )
        await pilot.press("0")
        await wait_for(pilot, lambda: app.dashboard.table.total == 4, what="every status")


async def test_f_and_w_toggle_follow_and_wrap(ctx: Any, make_app: Any, store_url: str) -> None:
    from tests.tui.tui_testkit import add_logs

    sid = make_session(ctx)
    ctx.logging.flush()  # the "create" record of the operations log is in the store now
    add_logs(store_url, sid, ["x" * 300])
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: app.dashboard.log_pane.line_count == 2, what="the log lines")
        assert app.dashboard.log_pane.follow and not app.dashboard.log_pane.wrap
        await pilot.press("f")
        assert not app.dashboard.log_pane.follow
        await wait_for(pilot, lambda: "follow off" in screen_text(app), what="follow off")
        await pilot.press("f")
        assert app.dashboard.log_pane.follow
        await pilot.press("w")
        assert app.dashboard.log_pane.wrap
        await wait_for(pilot, lambda: app.dashboard.log_pane.visual_line_count > 2, what="wrapped")
        assert "wrap on" in screen_text(app)
        await pilot.press("w")
        assert not app.dashboard.log_pane.wrap and app.dashboard.log_pane.visual_line_count == 2


async def test_question_mark_shows_help_and_keys_are_inert_there(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen), what="help")
        text = screen_text(app)
        for key, description in help_lines():
            assert description in text, key
        await pilot.press("p", "d", "a")
        await pilot.pause(0.2)
        assert isinstance(app.screen, HelpScreen)
        assert status(ctx, sid) == "PENDING" and events(ctx, sid) == ["create"]
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, HelpScreen), what="closed")


async def test_q_quits(ctx: Any, make_app: Any) -> None:
    make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0


@pytest.mark.parametrize(
    ("key", "dialog"),
    [
        ("a", ConfirmScreen),
        ("question_mark", HelpScreen),
        ("enter", DetailsScreen),
        ("n", NewSessionScreen),  # its workflow list focused: no text field
    ],
    ids=["confirm", "help", "details", "new-session"],
)
async def test_ctrl_c_quits_from_any_dialog_and_changes_nothing(
    ctx: Any, make_app: Any, key: str, dialog: type
) -> None:
    sid = make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press(key)
        await wait_for(pilot, lambda: isinstance(app.screen, dialog), what="the dialog")
        await pilot.press("ctrl+c")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
    assert status(ctx, sid) == "PENDING" and events(ctx, sid) == ["create"]


async def test_ctrl_c_in_the_filter_with_nothing_selected_keeps_the_dashboard_and_the_text(
    ctx: Any, make_app: Any
) -> None:
    """In a text field Ctrl-C copies: with nothing selected it says how to leave instead
    of quitting (the help's promise)."""
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("slash", *"abc", "ctrl+c")
        await pilot.pause(0.2)
        assert app.is_running
        assert app.dashboard.filter_box.value == "abc"
        assert any("to quit, leave the field first" in n for n in notifications(app))
        await pilot.press("enter", "ctrl+c")  # out of the field (the filter applied): it quits
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")


async def test_ctrl_c_in_a_field_of_the_new_session_form_keeps_what_was_typed(
    ctx: Any, make_app: Any
) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        screen = await pick_workflow(pilot, "hello")
        await pilot.press("enter")  # picks it: the name field has the focus
        await wait_for(pilot, lambda: bool(screen.query("#new-name")), what="the name field")
        await pilot.press(*"nightly", "ctrl+c")
        await pilot.pause(0.2)
        assert app.is_running and app.screen is screen
        assert screen.query_one("#new-name").value == "nightly"


async def test_q_over_a_confirm_dialog_closes_it_and_destroys_nothing(
    ctx: Any, make_app: Any
) -> None:
    sid = make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("a")
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="confirm")
        # true of any session, a stage running or not
        question = app.screen.query_one("#confirm-message").render().plain
        assert question.endswith("? It ends FAILED (aborted); a running stage is terminated.")
        await pilot.press("q")
        await wait_for(pilot, lambda: not isinstance(app.screen, ConfirmScreen), what="closed")
        await pilot.pause(0.2)
        assert app.is_running  # the dashboard is still there; a second q quits it
        await pilot.press("q")
        await wait_for(pilot, lambda: not app.is_running, what="the app to exit")
    assert app.return_code == 0
    assert status(ctx, sid) == "PENDING" and events(ctx, sid) == ["create"]


async def test_palette_runs_an_operation(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"pause")
        await wait_for(pilot, lambda: "Pause session" in screen_text(app), what="the hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: status(ctx, sid) == "PAUSED", what="PAUSED")


async def test_palette_approves_a_gate(ctx: Any, make_app: Any) -> None:
    sid = make_gated_session(ctx, ("legal",))
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"approve")
        await wait_for(pilot, lambda: "Approve gate" in screen_text(app), what="the hit")
        await pilot.press("enter")
        await wait_for(pilot, lambda: events(ctx, sid)[-1] == "approve", what="the approve")
        assert {s.name: s.status for s in view(ctx, sid).stages}["legal"] == "COMPLETED"


def test_every_key_is_in_the_help_and_the_palette_and_every_entry_is_an_action() -> None:
    palette = {action for _, action, _ in palette_entries()}
    for title, action, help_text in palette_entries():
        name = action.split("(")[0]
        owner = FlowApp if name.startswith("app.") else DashboardScreen
        assert callable(getattr(owner, f"action_{name.removeprefix('app.')}", None)), title
        assert help_text.split(":")[0], title  # the key comes first
    bound = {b.action for b in DashboardScreen.BINDINGS}  # type: ignore[union-attr]
    assert bound <= palette, bound - palette
    app_keys = {b.key: b.action for b in FlowApp.BINDINGS}  # type: ignore[union-attr]
    assert app_keys == {"q": "quit", "ctrl+c": "interrupt"}

    in_help: set[str] = set()
    for key, _ in help_lines():
        first, dash, last = key.partition("-")
        if dash and first.isdigit() and last.isdigit():
            in_help |= {str(i) for i in range(int(first), int(last) + 1)}
        else:
            in_help.add(key)
    names = {"slash": "/", "question_mark": "?"}
    for binding in [*DashboardScreen.BINDINGS, *FlowApp.BINDINGS]:
        key = binding.key  # type: ignore[union-attr]
        assert names.get(key, key) in in_help, key


async def test_refused_operation_shows_the_managers_message(ctx: Any, make_app: Any) -> None:
    sid = make_session(ctx, state="FAILED")
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for key in ("p", "r"):
            await pilot.press(key)
        await wait_for(pilot, lambda: len(notifications(app)) >= 2, what="two refusals")
        shown = notifications(app)
        assert any(
            n.startswith("pause refused: cannot pause session") and "it is FAILED" in n
            for n in shown
        ), shown
        assert any(n.startswith("resume refused: cannot resume session") for n in shown)
        assert status(ctx, sid) == "FAILED" and app.is_running


async def test_keys_without_a_session_say_so(ctx: Any, make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        for key in ("p", "r", "a", "d", "t"):
            await pilot.press(key)
        app.dashboard.action_details()  # enter: the empty table keeps the key to itself
        await wait_for(pilot, lambda: len(notifications(app)) == 6, what="six notes")
        assert all("no session selected" in n for n in notifications(app))
        assert app.is_running and not isinstance(app.screen, ConfirmScreen)


async def test_r_starts_a_runner_for_an_orphaned_session(ctx: Any, make_app: Any) -> None:
    """Its runner died: resume (the CLI's rule, ``ensure_runner``) starts a new one."""
    import subprocess

    from tests.tui.tui_testkit import manager

    gone = subprocess.Popen(["true"])
    gone.wait()
    sid = make_session(ctx, "hello")
    with ctx.factory() as db:
        manager(db).start_session(sid, runner_pid=gone.pid)
        manager(db).pause(sid)
    assert view(ctx, sid).orphaned
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        assert "orphaned" in screen_text(app)
        await pilot.press("r")
        await wait_for(
            pilot,
            lambda: any("runner started" in n for n in notifications(app)),
            timeout=20,
            what="the note of the new runner",
        )
        await wait_for(
            pilot,
            lambda: status(ctx, sid) == "COMPLETED",
            timeout=20,
            what="the new runner completing the session",
        )
        await wait_for(
            pilot, lambda: row_of(app, sid).status == "COMPLETED", what="COMPLETED in the table"
        )


async def test_r_says_why_no_runner_started_and_the_session_is_paused_again(
    ctx: Any, make_app: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner that did not start is an error of its own, worded as the CLI's, shown
    before the note that points at it; the session is not left ACTIVE with no runner."""
    import subprocess

    from app.runner import launch
    from tests.tui.tui_testkit import manager

    gone = subprocess.Popen(["true"])
    gone.wait()
    sid = make_session(ctx, "hello")
    with ctx.factory() as db:
        manager(db).start_session(sid, runner_pid=gone.pid)
        manager(db).pause(sid)
    monkeypatch.setattr(launch, "_no_more_runners", True)
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("r")
        await wait_for(pilot, lambda: len(notifications(app)) == 2, what="two notifications")
        assert notifications(app) == [
            "error: could not start a runner: this process is closing: it starts no more runners",
            f"resume: PAUSED: {sid[:12]} (no runner could start, see the error above: "
            "paused again)",
        ]
    assert status(ctx, sid) == "PAUSED"


async def test_lines_printed_on_stderr_become_notifications(ctx: Any, make_app: Any) -> None:
    """Shared code reports some failures with a `vc: error:` line on stderr (the CLI's
    way); behind a full-screen app such a line would be lost."""
    import sys

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        print("vc: error: could not start a runner: [b]no[/b] \x1b[31mluck", file=sys.stderr)
        await wait_for(pilot, lambda: notifications(app), what="a notification")
        assert notifications(app) == ["error: could not start a runner: [b]no[/b] luck"]
