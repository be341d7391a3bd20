"""Bad input: an empty store, a store that cannot be opened, odd terminal sizes, huge and
hostile text. Text users or stages wrote is shown literally (never as markup) with its
terminal control sequences removed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.tui.dashboard import EMPTY_TEXT
from app.tui.screens import DetailsScreen
from tests.tui.tui_testkit import add_logs, loaded, make_session, screen_text, wait_for


async def test_empty_store_says_how_to_create_a_session(ctx: Any, make_app: Any) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await loaded(pilot, selected=False)
        text = screen_text(app)
        for line in EMPTY_TEXT.splitlines():
            assert line.strip() in text
        assert "total 0" in text
        assert app.dashboard.selected_id is None and app.is_running


def test_store_that_cannot_be_opened_is_one_line_and_exit_1(workspace: Path) -> None:
    from tests.cli.helpers import run_on_tty

    blocker = workspace / "a-file"
    blocker.write_text("not a directory")
    code, screen = run_on_tty(
        "flow", "tui", env={"VC_DATABASE_URL": f"sqlite:///{blocker}/sub/flow.db"}, timeout=30
    )
    assert code == 1
    lines = screen.strip().splitlines()
    assert len(lines) == 1, screen
    assert lines[0].startswith("vc: error: ") and str(blocker) in lines[0]
    assert "Traceback" not in screen


@pytest.mark.parametrize("demo", [[], ["--demo"]])
def test_without_a_terminal_on_stdout_it_refuses_at_once(
    workspace: Path, tmp_path: Path, demo: list[str]
) -> None:
    """`vc flow tui | tail` wrote escape sequences into the pipe until killed."""
    from tests.cli.helpers import run

    env: dict[str, str | None] = {"TMPDIR": str(tmp_path)}
    if demo:
        env["VC_HOME"] = None  # the demo's own throw-away workspace
    result = run("flow", "tui", *demo, env=env, timeout=30)
    assert (result.code, result.out) == (2, "")
    assert result.err == (
        "vc: error: the dashboard needs a terminal and stdout is not one; for scripts use "
        "'vc flow session list' or 'vc flow status ID'\n"
    )
    assert not (workspace / ".vc").exists()  # nothing was opened, created or started
    assert not list(tmp_path.glob("vc-demo-*"))


def test_with_stderr_not_a_terminal_it_refuses_too(workspace: Path) -> None:
    """Textual draws on stderr: `vc flow tui 2>log` would fill the file instead."""
    import os
    import pty
    import subprocess
    import sys

    from tests.cli.helpers import env_for

    master, slave = pty.openpty()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "app.main", "flow", "tui"],
            stdin=slave,
            stdout=slave,
            stderr=subprocess.PIPE,
            env=env_for(),
            timeout=30,
        )
    finally:
        os.close(slave)
        os.close(master)
    assert proc.returncode == 2
    assert proc.stderr.decode() == (
        "vc: error: the dashboard needs a terminal and stderr is not one; for scripts use "
        "'vc flow session list' or 'vc flow status ID'\n"
    )
    assert not (workspace / ".vc").exists()


@pytest.mark.parametrize("size", [(80, 24), (300, 80)])
async def test_small_and_huge_terminals(
    ctx: Any, make_app: Any, store_url: str, size: tuple[int, int]
) -> None:
    make_session(ctx, name="other", state="FAILED")
    sid = make_session(ctx, name="sized", state="PAUSED")  # the newest: selected
    add_logs(store_url, sid, ["log ok"])
    expected = ("sized", "other", "PAUSED", "FAILED", "greet", "count", "done", "log ok")
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await loaded(pilot)
        await wait_for(
            pilot,
            lambda: all(e in screen_text(app) for e in expected),
            what=f"all of {expected} on screen",
        )
        await wait_for(
            pilot, lambda: "Pause" in screen_text(app).splitlines()[-1], what="the footer's keys"
        )
        assert len(screen_text(app).splitlines()) == size[1]
        await pilot.press("question_mark")
        await wait_for(
            pilot, lambda: "pause the selected session" in screen_text(app), what="the help"
        )


async def test_stage_names_are_not_cut_at_130_columns(
    ctx: Any, make_app: Any, workspace: Path
) -> None:
    (workspace / "workflows" / "named.yaml").write_text(
        "stages:\n"
        "  - {name: prepare-dataset, run: 'true'}\n"
        "  - {name: evaluate-model, run: 'true'}\n"
    )
    make_session(ctx, "named")
    app = make_app()
    async with app.run_test(size=(130, 36)) as pilot:
        await loaded(pilot)
        await wait_for(pilot, lambda: "evaluate-model" in screen_text(app), what="stages")
        text = screen_text(app)
        assert "prepare-dataset" in text and "evaluate-model" in text
        header = next(line for line in text.splitlines() if "STAGE" in line and "TRY" in line)
        assert "TIME" in header


async def test_a_1mb_log_line(ctx: Any, make_app: Any, store_url: str) -> None:
    sid = make_session(ctx)
    add_logs(store_url, sid, ["start " + "x" * 1_000_000 + " end", "after the big one"])
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        await wait_for(
            pilot,
            lambda: "after the big one" in screen_text(app),
            what="the lines after the 1 MB one",
        )
        big = next(line for line in app.dashboard.log_pane.lines if line.text.startswith("start "))
        assert len(big.text) > 1_000_000  # held whole, rendered cut
        await pilot.press("w")  # wrapping it must stay cheap too
        await wait_for(
            pilot, lambda: app.dashboard.log_pane.visual_line_count > 100, what="wrapped"
        )
        app.dashboard.log_pane.scroll_to(y=0, animate=False)
        await wait_for(pilot, lambda: "start xxx" in screen_text(app), what="its start")
        assert app.is_running


async def test_a_name_of_the_longest_length_allowed(ctx: Any, make_app: Any) -> None:
    name = "n" * 97 + "MIDDLE" + "e" * 97
    assert len(name) == 200  # store.new_session.MAX_NAME
    make_session(ctx, name=name)
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await loaded(pilot)
        text = screen_text(app)
        row = next(line for line in text.splitlines() if "nnnnnnnn" in line)
        assert "…" in row and len(row) == 120  # cut to its column, the row intact
        assert "PENDING" in row
        await pilot.press("a")  # the question quotes the name, shortened
        await wait_for(pilot, lambda: "Abort session" in screen_text(app), what="confirm")
        await pilot.press("n")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), what="details")
        details = app.screen.query_one("#details-text").render().plain
        assert name in details  # whole, in the details


HOSTILE_NAME = "[bold red]boom[/] \x1b[31mred\x1b[0m \x1b]0;pwned\x07[link=http://x]y[/link]"
HOSTILE_META = {"[i]key[/i]": "\x1b[2Jvalue [/]", "bell": "ding\x07dong"}
HOSTILE_LOG = "[blink]log[/blink] \x1b[1mbold\x1b[0m \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ ok"


async def test_markup_and_escape_sequences_are_shown_literally(
    ctx: Any, make_app: Any, store_url: str
) -> None:
    sid = make_session(ctx, name=HOSTILE_NAME, metadata=HOSTILE_META)
    add_logs(store_url, sid, [HOSTILE_LOG], stage="[red]stage[/red]")
    app = make_app()
    async with app.run_test(size=(160, 30)) as pilot:
        await loaded(pilot)
        await wait_for(
            pilot,
            lambda: "ok" in screen_text(app) and "[blink]" in screen_text(app),
            what="the hostile log line",
        )
        text = screen_text(app)
        assert "[bold red]boom[/] red [link=http://x]y[/link]" in text  # name: literal
        assert "[blink]log[/blink] bold link ok" in text  # log line: literal, no escapes
        assert "[[red]stage[/red]]" in text  # the stage of a log line
        assert "pwned" not in text and "\x1b" not in text and "\x07" not in text
        await pilot.press("slash", *"[b]", "enter")  # a filter text is not markup either
        await wait_for(pilot, lambda: "“[b]”" in screen_text(app), what="the filter label")
        await pilot.press("escape")
        await wait_for(pilot, lambda: app.dashboard.table.total == 1, what="the filter cleared")
        await pilot.press("enter")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), what="details")
        details = screen_text(app)
        assert "[i]key[/i] = value [/]" in details
        assert "bell = dingdong" in details
        assert "\x1b" not in details and "\x07" not in details
