"""The new-session form (`n`) of a workflow with parameters, driven with Pilot on a real
store: one field per parameter with its default filled in and its description shown, each
value checked as it is typed, Start refused while a value is refused, and the session
created with the values typed."""

from __future__ import annotations

import textwrap
from typing import Any

from app.tui.screens import NewSessionScreen
from tests.tui.tui_testkit import (
    loaded,
    make_session,
    notifications,
    pick_workflow,
    status,
    view,
    wait_for,
)

SIZE = (120, 40)
ETL = """
    name: ETL
    params:
      day: {default: latest, description: the day to load}
      target: {choices: [staging, prod], required: true}
      shards: {type: int, default: 4, min: 1, max: 64}
    stages:
      - name: load
        run: echo "load $VC_PARAM_DAY $VC_PARAM_TARGET $VC_PARAM_SHARDS"
"""


async def form_of_etl(pilot: Any) -> Any:
    """`n` pressed and the workflow etl highlighted: the form, its fields shown."""
    screen = await pick_workflow(pilot, "etl")
    await wait_for(pilot, lambda: bool(screen.query("#param-shards")), what="the fields")
    return screen


def note(screen: Any, key: str) -> str:
    return str(screen.query_one(f"#note-{key}").render())


async def test_n_fills_in_parameters_checks_them_as_typed_and_starts_with_them(
    ctx: Any, make_app: Any
) -> None:
    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        screen = await form_of_etl(pilot)
        fields = {f.id: f.value for f in screen.query(".param-value")}
        assert fields == {"param-day": "latest", "param-target": "", "param-shards": "4"}
        assert note(screen, "day") == "the day to load — accepts a string"
        assert note(screen, "shards") == "accepts an integer from 1 to 64"
        assert note(screen, "target") == "required: accepts one of staging, prod"

        await pilot.press("enter")  # picks etl: the name field has the focus
        await pilot.press(*"nightly", "enter")  # target is required and empty: refused
        await pilot.pause(0.2)
        assert isinstance(app.screen, NewSessionScreen)
        assert screen.focused is screen.query_one("#param-target")
        assert any("target: required: accepts one of staging" in n for n in notifications(app))
        assert note(screen, "target") == "required: accepts one of staging, prod"

        await pilot.press(*"prod", "tab", *"99")  # shards: selected on focus, replaced
        await wait_for(
            pilot,
            lambda: note(screen, "shards") == "refused: accepts an integer from 1 to 64",
            what="99 refused as typed",
        )
        assert screen.query_one("#param-shards").value == "99"
        await pilot.press("enter")
        await pilot.pause(0.2)
        assert isinstance(app.screen, NewSessionScreen)  # 99 is out of range
        await pilot.press("backspace", "backspace", "8", "enter")
        await wait_for(
            pilot, lambda: app.dashboard.table.total == 1, timeout=10, what="the new row"
        )
        sid = app.dashboard.table.rows[0].id
        created = view(ctx, sid)
        assert (created.name, created.workflow_id) == ("nightly", "etl")
        assert created.params == {"day": "latest", "target": "prod", "shards": 8}
        await wait_for(
            pilot, lambda: status(ctx, sid) == "COMPLETED", timeout=20, what="its runner"
        )


async def test_the_session_the_form_starts_is_selected(ctx: Any, make_app: Any) -> None:
    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    older = [make_session(ctx, name=f"older {i}") for i in range(3)]
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await pilot.press("down", "down")
        await wait_for(pilot, lambda: app.dashboard.selected_id == older[0], what="the oldest")
        await form_of_etl(pilot)
        await pilot.press("enter", *"fresh", "tab", "tab", *"prod", "enter")
        await wait_for(pilot, lambda: app.dashboard.table.total == 4, timeout=10, what="new row")
        await wait_for(
            pilot,
            lambda: app.dashboard.selected_id not in older and app.dashboard.selected_id,
            timeout=5,
            what="the new session selected",
        )
        assert view(ctx, app.dashboard.selected_id).name == "fresh"


async def test_the_session_the_form_starts_is_selected_from_far_down_the_table(
    ctx: Any, make_app: Any
) -> None:
    """The table holds only the rows around what is shown; the new session (the newest, at
    the top) is selected all the same, and the table scrolls to it."""
    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    for i in range(80):
        make_session(ctx, name=f"older {i}")
    app = make_app()
    async with app.run_test(size=(120, 24)) as pilot:
        await loaded(pilot)
        await pilot.press("end")
        await wait_for(pilot, lambda: app.dashboard.table.cursor_index == 79, what="the end")
        await form_of_etl(pilot)
        await pilot.press("enter", *"fresh", "tab", "tab", *"prod", "enter")
        await wait_for(
            pilot,
            lambda: (
                app.dashboard.selected_id is not None
                and view(ctx, app.dashboard.selected_id).name == "fresh"
            ),
            timeout=10,
            what="the new session selected",
        )
        assert app.dashboard.table.cursor_index == 0


async def test_the_note_under_a_field_says_why_a_value_is_refused(ctx: Any, make_app: Any) -> None:
    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot, selected=False)
        screen = await form_of_etl(pilot)
        field = screen.query_one("#param-shards")
        field.focus()
        await pilot.press(*"x")
        await wait_for(
            pilot,
            lambda: note(screen, "shards") == "refused: accepts an integer from 1 to 64",
            what="the refusal",
        )
        assert not field.is_valid
        screen.query_one("#param-target").focus()
        await pilot.press(*"dev")
        await wait_for(
            pilot,
            lambda: note(screen, "target") == "refused: accepts one of staging, prod",
            what="the target refused",
        )
        await pilot.press("backspace", "backspace", "backspace", *"prod")
        await wait_for(
            pilot,
            lambda: note(screen, "target") == "required: accepts one of staging, prod",
            what="the refusal gone",
        )


async def test_on_a_small_screen_every_field_and_start_can_be_reached_and_seen(
    ctx: Any, make_app: Any
) -> None:
    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    app = make_app()
    async with app.run_test(size=(90, 25)) as pilot:
        await loaded(pilot)
        screen = await form_of_etl(pilot)
        stops = ["new-name", "param-day", "param-target", "param-shards", "new-start"]
        for expected in stops:  # each Tab lands on the next field: no stop in between
            await pilot.press("tab")
            await pilot.pause(0.1)
            focused = screen.focused
            assert focused is not None and focused.id == expected
            assert screen.region.contains_region(focused.region), f"{expected} off screen"


async def test_a_name_that_shows_nothing_is_refused_as_the_cli_refuses_it(
    ctx: Any, make_app: Any
) -> None:
    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        screen = await form_of_etl(pilot)
        await pilot.press("enter")  # picks etl: the name field has the focus
        screen.query_one("#new-name").value = "\u200b\u200d"
        screen.query_one("#param-target").value = "prod"
        await pilot.press("enter")
        await wait_for(
            pilot,
            lambda: any("a session name cannot be blank" in n for n in notifications(app)),
            what="the refusal",
        )
        assert app.screen is screen and screen.focused is screen.query_one("#new-name")


async def test_the_dialogs_instructions_are_shown_whole(ctx: Any, make_app: Any) -> None:
    """Longer than the box is wide: wrapped onto a second line, not cut short."""
    from tests.tui.tui_testkit import screen_text

    (ctx.settings.workflows_dir / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await loaded(pilot)
        await form_of_etl(pilot)
        shown = " ".join(
            line.strip(" │╭╮╰╯─") for line in screen_text(app).splitlines() if "│" in line
        )
    assert "enter again starts it" in " ".join(shown.split())
