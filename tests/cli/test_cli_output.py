"""Human output: readable tables that respect NO_COLOR, pipes and narrow terminals, and
user-written text (names, metadata, log lines) printed literally and safely."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from .helpers import (
    create_session,
    env_for,
    run,
    run_on_tty,
    session_json,
    start_stages,
    store,
)

ANSI = re.compile(r"\x1b")
HUMAN_COMMANDS = [
    ("flow", "session", "list"),
    ("flow", "session", "show", "{sid}"),
    ("flow", "status", "{sid}"),
    ("flow", "list"),
    ("flow", "show", "hello"),
    ("flow", "session", "logs", "{sid}"),
]
TABLE_COMMANDS = HUMAN_COMMANDS[:5]


def cells(line: str) -> int:
    """Terminal cells a line takes (wide characters count two), computed independently."""
    return sum(
        2 if unicodedata.east_asian_width(c) in "WF" else 0 if unicodedata.combining(c) else 1
        for c in line
    )


def busy_session(workspace: Path, name: str = "a session") -> str:
    """A session with some history, a long reason and log lines, so every table has rows."""
    from store import FlowSessionManager, StageManager
    from store.log_ingest import append_logs

    sid = create_session(workspace, name=name, metadata={"ticket": "OPS-1234" * 5})
    with store(workspace) as db:
        sessions, stages = FlowSessionManager(db), StageManager(db)
        sessions.start_session(sid, runner_host="build-host-with-a-long-name", runner_pid=1)
        first = stages.list_stages(sid)[0]
        stages.update_stage_status(first.id, "ACTIVE", metadata={"progress": 40})
        stages.update_stage_status(first.id, "FAILED", error="exit 3: " + "x" * 200, exit_code=3)
        sessions.fail(sid, "stage greet failed: " + "y" * 150)
        append_logs(
            db,
            [
                {
                    "session_id": sid,
                    "at": 1.0,
                    "level": "WARNING",
                    "category": "workflow.stage.integration",
                    "stage": "greet",
                    "text": "careful",
                }
            ],
        )
    return sid


def fill(args: tuple[str, ...], sid: str) -> list[str]:
    return [a.format(sid=sid) for a in args]


@pytest.mark.parametrize("args", HUMAN_COMMANDS, ids=" ".join)
def test_no_ansi_escapes_when_stdout_is_not_a_terminal(workspace: Path, args) -> None:
    sid = busy_session(workspace)
    result = run(*fill(args, sid), color=True)  # NO_COLOR unset, stdout a pipe
    assert result.code in (0, 1), result.err  # status of a FAILED session exits 1
    assert result.out.strip()
    assert not ANSI.search(result.out)


@pytest.mark.parametrize("args", HUMAN_COMMANDS, ids=" ".join)
def test_no_ansi_escapes_on_a_terminal_with_no_color(workspace: Path, args) -> None:
    sid = busy_session(workspace)
    code, screen = run_on_tty(*fill(args, sid), env={"NO_COLOR": "1"})
    assert code in (0, 1), screen
    assert "a session" in screen or "hello" in screen or "careful" in screen
    assert not ANSI.search(screen)


def test_statuses_are_coloured_on_a_terminal_without_no_color(workspace: Path) -> None:
    sid = busy_session(workspace)
    code, screen = run_on_tty("flow", "session", "list", color=True)
    assert code == 0, screen
    assert "\x1b[31mFAILED" in screen
    code, screen = run_on_tty("flow", "session", "logs", sid, color=True)
    assert "\x1b[33mWARNING" in screen


@pytest.mark.parametrize("args", TABLE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("columns", [60, 40])
def test_no_line_is_longer_than_a_narrow_terminal(workspace: Path, args, columns: int) -> None:
    wide = "夜間バッチ処理の長い名前" * 3  # wide characters: two cells each
    sid = busy_session(workspace, name="nightly export of every table " * 4)
    busy_session(workspace, name=wide)
    result = run(*fill(args, sid), env={"COLUMNS": str(columns)})
    assert result.code in (0, 1), result.err
    lines = result.out.splitlines()
    assert len(lines) >= 3
    too_long = [line for line in lines if cells(line) > columns]
    assert not too_long, too_long


def test_a_narrow_terminal_keeps_the_id_status_and_progress_of_each_session(
    workspace: Path,
) -> None:
    sid = busy_session(workspace, name="a rather long session name " * 3)
    result = run("flow", "session", "list", env={"COLUMNS": "60"})
    header, row = result.out.splitlines()[:2]
    assert header.split()[:2] == ["ID", "NAME"] and "STATUS" in header
    assert row.startswith(sid[:8]) and "FAILED" in row and "%" in row


def test_show_shortens_a_long_stage_name_before_it_hides_the_stage_status(
    workspace: Path,
) -> None:
    long_stage = "convert_every_partition_of_the_warehouse_" * 3
    (workspace / "workflows" / "long.yaml").write_text(
        f"stages:\n  - name: {long_stage}\n    run: 'true'\n"
    )
    sid = create_session(workspace, workflow="long")
    start_stages(workspace, sid, {long_stage: ["ACTIVE"]})
    result = run("flow", "session", "show", sid, env={"COLUMNS": "100"})
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    stage_header = next(line for line in lines if line.startswith("STAGE"))
    stage_row = lines[lines.index(stage_header) + 1]
    assert stage_header.split()[1:4] == ["STATUS", "PROGRESS", "ATTEMPT"]
    assert stage_row.startswith("convert_every_partition") and "…" in stage_row
    assert "ACTIVE" in stage_row and "0.0%" in stage_row
    history_header = next(line for line in lines if line.startswith("WHEN"))
    assert history_header.split()[:4] == ["WHEN", "OP", "FROM", "TO"]
    start_row = next(line for line in lines if "stage.start" in line)
    assert "PENDING  ACTIVE" in start_row
    assert all(cells(line) <= 100 for line in lines)


@pytest.mark.parametrize("args", TABLE_COMMANDS, ids=" ".join)
def test_a_narrow_real_terminal_gets_fitted_output(workspace: Path, args) -> None:
    sid = busy_session(workspace, name="nightly export of every table " * 4)
    code, screen = run_on_tty(*fill(args, sid), columns=60)
    assert code in (0, 1), screen
    lines = screen.replace("\r\n", "\n").splitlines()
    assert all(cells(line) <= 60 for line in lines), [ln for ln in lines if cells(ln) > 60]


def test_a_pipe_without_columns_gets_whole_names(workspace: Path) -> None:
    name = "a name long enough to be cut on any terminal " * 4
    busy_session(workspace, name=name)
    result = run("flow", "session", "list")
    assert name.strip() in result.out


MARKUP = "[bold red]x[/] [link=http://e.com]y[/link] :warning:"


def test_rich_markup_in_a_name_is_stored_and_printed_verbatim(workspace: Path, cli) -> None:
    created = cli("flow", "session", "create", "hello", "--name", MARKUP, "--json").json()
    sid = created["id"]
    assert created["name"] == MARKUP
    assert MARKUP in cli("flow", "session", "list").out
    assert f"name:      {MARKUP}" in cli("flow", "session", "show", sid).out
    assert MARKUP in cli("flow", "status", sid).out
    assert cli("flow", "session", "pause", sid).out == f"PAUSED: {sid[:12]} ({MARKUP})\n"


HOSTILE = "ok\u202e\x1b[31mred\u2066\ufeff\x1b[0m\x1b]0;pwned\x07\x1b]8;;http://evil\x1b\\link\x9b2J\x07\rback\x08"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a\x9d0;title\x9cb", "ab"),  # 8-bit OSC, ended by 8-bit ST
        ("a\x9d8;;http://evil\x07link\x9d8;;\x07b", "alinkb"),  # a link, ended by BEL
        ("a\x90q#1;2\x9cb", "ab"),  # 8-bit DCS
        ("a\x9d0;unterminated", "a"),  # as the 7-bit one: to the end
    ],
)
def test_eight_bit_string_sequences_go_with_their_payload(text: str, shown: str) -> None:
    """Removing only the C1 controls left the title or URL they carried on show."""
    from store.text import clean_text

    assert clean_text(text) == shown


@pytest.mark.parametrize("args", HUMAN_COMMANDS, ids=" ".join)
def test_escape_sequences_in_user_text_never_reach_stdout(workspace: Path, args) -> None:
    from store.log_ingest import append_logs

    sid = create_session(workspace, name=HOSTILE, metadata={"k": HOSTILE})
    with store(workspace) as db:
        append_logs(
            db,
            [
                {
                    "session_id": sid,
                    "at": 1.0,
                    "level": "INFO",
                    "category": "workflow.stage.integration",
                    "stage": "greet",
                    "text": HOSTILE,
                }
            ],
        )
    result = run(*fill(args, sid), color=True, env={"COLUMNS": "200"})
    assert result.code == 0, result.err
    for bad in ("\x1b", "\x07", "\x9b", "\x08", "\r", "\u202e", "\u2066", "\ufeff"):
        assert bad not in result.out, (bad, result.out)
    if args[:3] == ("flow", "session", "list") or "{sid}" in args:
        assert "okredlink back" in result.out  # the text itself survives, cleaned


def test_names_with_control_characters_are_stored_as_given(workspace: Path, cli) -> None:
    result = cli("flow", "session", "create", "hello", "--name", HOSTILE)
    assert result.code == 0, result.err
    sid = result.out.strip()
    assert session_json(workspace, sid)["name"] == HOSTILE
    shown = cli("flow", "session", "show", sid, "--json").json()
    assert shown["name"] == HOSTILE  # JSON escapes it; nothing raw reaches the terminal
    raw = cli("flow", "session", "show", sid, "--json").out
    assert "\x1b" not in raw and "\\u001b" in raw
    for bad in ("\x9b", "\u202e", "\u2066", "\ufeff"):  # escaped too, not only C0
        assert bad not in raw, bad
    assert "\\u009b" in raw and "\\u202e" in raw


def test_logs_json_gives_each_line_exactly_as_stored_and_nothing_raw(workspace: Path) -> None:
    from store.log_ingest import append_logs

    sid = create_session(workspace)
    texts = [HOSTILE, "bin:\\x00\\xff\x01ok", "a\rb", "[bold]x[/]"]
    with store(workspace) as db:
        append_logs(
            db,
            [
                {
                    "session_id": sid,
                    "at": 1.0 + i,
                    "level": "INFO",
                    "category": "workflow.stage.integration",
                    "stage": "greet",
                    "text": text,
                }
                for i, text in enumerate(texts)
            ],
        )
    result = run("flow", "session", "logs", sid, "--json", "--stage", "greet")
    assert result.code == 0, result.err
    lines = [json.loads(line) for line in result.out.splitlines()]
    assert [line["text"] for line in lines] == texts
    assert {line["stage"] for line in lines} == {"greet"}
    for bad in ("\x1b", "\x9b", "\x01", "\r", "\u202e"):
        assert bad not in result.out, bad


def test_escape_sequences_in_errors_never_reach_stderr(workspace: Path) -> None:
    result = run("flow", "session", "create", "hello\x1b[31m")
    assert result.code == 2
    assert "\x1b" not in result.err and "\\x1b" in result.err


def test_list_says_how_to_start_when_there_are_no_sessions(workspace: Path, cli) -> None:
    result = cli("flow", "session", "list")
    assert result.code == 0
    assert "no sessions yet" in result.out and "vc flow session create" in result.out
    assert cli("flow", "session", "list", "--status", "FAILED").code == 0


# -- stages in parallel -------------------------------------------------------------------------


def parallel_session(workspace: Path) -> str:
    """A session of ``thumbs`` with three instances of resize running (one of them paused)
    while the gate review waits."""
    sid = create_session(workspace, "thumbs")
    start_stages(
        workspace,
        sid,
        {
            "fetch": ["ACTIVE", "COMPLETED"],
            "resize[size=small,format=png]": ["ACTIVE"],
            "resize[size=small,format=webp]": ["ACTIVE", "PAUSED"],
            "resize[size=large,format=webp]": ["ACTIVE"],
            "review": ["PAUSED"],
        },
    )
    return sid


def test_show_lists_every_running_stage_one_per_line_and_the_gate_waiting(
    workspace: Path, thumbs: str, cli
) -> None:
    sid = parallel_session(workspace)
    out = cli("flow", "session", "show", sid).out
    assert (
        "running:   resize[size=small,format=png]\n"
        "           resize[size=small,format=webp]\n"
        "           resize[size=large,format=webp]\n"
        "waiting:   review (manual gate)\n"
    ) in out
    assert "stage:" not in out


def test_show_of_a_session_running_one_stage_names_it_as_before(workspace: Path, cli) -> None:
    sid = create_session(workspace)
    start_stages(workspace, sid, {"greet": ["ACTIVE"]})
    out = cli("flow", "session", "show", sid).out
    assert "stage:     greet\n" in out and "running:" not in out


def test_status_lists_every_running_stage_and_the_gate_waiting(
    workspace: Path, thumbs: str, cli
) -> None:
    sid = parallel_session(workspace)
    out = cli("flow", "status", sid).out
    assert "3 stages running\n" in out
    assert (
        "running  resize[size=small,format=png]\n"
        "         resize[size=small,format=webp]\n"
        "         resize[size=large,format=webp]\n"
        "waiting  review (manual gate)\n"
    ) in out


def test_status_of_a_paused_session_counts_its_stages_paused_not_running(
    workspace: Path, thumbs: str, cli
) -> None:
    sid = parallel_session(workspace)
    assert cli("flow", "session", "pause", sid).code == 0
    out = cli("flow", "status", sid).out
    assert "3 stages paused\n" in out and "stages running" not in out
    assert "paused   resize[size=small,format=png]\n" in out and "running " not in out
    shown = cli("flow", "session", "show", sid).out
    assert "paused:    resize[size=small,format=png]\n" in shown and "running:" not in shown


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("flow", "session", "show"), "stage:     fetch\nwaiting:   review (manual gate)\n"),
        (("flow", "status"), "stage fetch\nwaiting  review (manual gate)\n"),
    ],
)
def test_a_gate_waiting_beside_one_running_stage_is_shown(
    workspace: Path, thumbs: str, cli, args: tuple[str, ...], expected: str
) -> None:
    sid = create_session(workspace, "thumbs")
    start_stages(workspace, sid, {"fetch": ["ACTIVE"], "review": ["PAUSED"]})
    assert expected in cli(*args, sid).out


@pytest.mark.parametrize(
    ("reason", "shown"),
    [("held for the release window", True), ("waiting: review", False)],
    ids=["paused-by-hand", "paused-at-the-gate"],
)
def test_a_gate_waiting_beside_a_pause_by_hand_is_shown_as_the_reason_shows_one_at_it(
    workspace: Path, thumbs: str, cli, reason: str, shown: bool
) -> None:
    """A resume passes only the gate the session waits at (its reason names it): a gate
    waiting beside a pause by hand is said, since the resume will leave it waiting."""
    from store import FlowSessionManager

    sid = create_session(workspace, "thumbs")
    start_stages(workspace, sid, {"fetch": ["ACTIVE", "COMPLETED"], "review": ["PAUSED"]})
    with store(workspace) as db:
        FlowSessionManager(db).pause(sid, reason=reason)
    out = cli("flow", "session", "show", sid).out
    assert ("waiting:   review (manual gate)\n" in out) is shown, out
    assert f"({reason})" in out


@pytest.mark.parametrize("args", [("flow", "session", "show"), ("flow", "status")])
def test_a_gate_never_passed_in_a_session_that_failed_is_not_shown_waiting(
    workspace: Path, thumbs: str, cli, args: tuple[str, ...]
) -> None:
    """Nothing waits in an ended session (approve refuses it): a gate left waiting when a
    failure ended the run (``fail_fast: false``) is not offered."""
    from store import FlowSessionManager

    sid = create_session(workspace, "thumbs")
    start_stages(workspace, sid, {"fetch": ["ACTIVE", "FAILED"], "review": ["PAUSED"]})
    with store(workspace) as db:
        FlowSessionManager(db).fail(sid, "stage fetch failed: exit code 1")
    out = cli(*args, sid).out
    assert "FAILED" in out
    assert "waiting" not in out and "(manual gate)" not in out, out


def test_status_shows_each_stage_instance_as_a_row(workspace: Path, thumbs: str, cli) -> None:
    sid = parallel_session(workspace)
    rows = [line.split() for line in cli("flow", "status", sid).out.splitlines()]
    table = [row[1:3] for row in rows if len(row) > 2 and row[0] in "✔✘▶‖·"]
    assert table == [
        ["fetch", "COMPLETED"],
        ["resize[size=small,format=png]", "ACTIVE"],
        ["resize[size=small,format=webp]", "PAUSED"],
        ["resize[size=large,format=png]", "PENDING"],
        ["resize[size=large,format=webp]", "ACTIVE"],
        ["review", "PAUSED"],
        ["publish", "PENDING"],
    ]


def test_list_names_the_first_running_stage_and_how_many_more_run(
    workspace: Path, thumbs: str, cli
) -> None:
    parallel_session(workspace)
    assert "resize[size=small,format=png] +2" in cli("flow", "session", "list").out


@pytest.mark.parametrize(
    "args", [("flow", "session", "show"), ("flow", "status"), ("flow", "session", "list")]
)
def test_running_stages_fit_a_narrow_terminal(
    workspace: Path, thumbs: str, cli, args: tuple[str, ...]
) -> None:
    sid = parallel_session(workspace)
    argv = (*args, sid) if args[-1] != "list" else args
    lines = cli(*argv, env={"COLUMNS": "40"}).out.splitlines()
    assert len(lines) >= 2
    assert all(cells(line) <= 40 for line in lines), [ln for ln in lines if cells(ln) > 40]


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [
        (59.7, "59s"),
        (119.7, "1m59s"),
        (120.0, "2m00s"),
        (3599.9, "59m59s"),
        (7199.5, "1h59m"),
        (86399.9, "23h59m"),
        (90000.0, "1d01h"),
        (-3.0, "0s"),
        (None, "-"),
    ],
)
def test_a_duration_never_shows_a_unit_full_to_its_next(seconds: float | None, shown: str) -> None:
    from app.console import duration_text

    assert duration_text(seconds) == shown


def _into_a_closed_pipe(command: str) -> subprocess.CompletedProcess[str]:
    """``command`` with its stdout into a reader that is gone before it writes: the exit
    code of ``command`` itself, and its stderr."""
    script = f'{command} 2>err.txt | true; echo "${{PIPESTATUS[0]}}"'
    return subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env_for(), timeout=120
    )


@pytest.mark.parametrize(
    "args",
    [("flow", "session", "list", "--json"), ("flow", "session", "list"), ("flow", "list")],
    ids=" ".join,
)
def test_a_reader_that_went_away_is_not_an_error(workspace: Path, args) -> None:
    for i in range(3):
        create_session(workspace, name=f"s{i}")
    vc = " ".join([shlex.quote(sys.executable), "-m", "app.main", *args])
    result = _into_a_closed_pipe(vc)
    assert result.stdout.strip() == "0"
    assert (workspace / "err.txt").read_text() == ""


@pytest.mark.parametrize(("workflow", "code"), [("hello", "0"), ("broken", "1")])
def test_a_run_into_a_closed_pipe_exits_with_its_sessions_code(
    workspace: Path, workflow: str, code: str
) -> None:
    vc = " ".join([shlex.quote(sys.executable), "-m", "app.main", "flow", "run", workflow])
    result = _into_a_closed_pipe(vc)
    assert result.stdout.strip() == code
    assert "Traceback" not in (workspace / "err.txt").read_text()


@pytest.mark.parametrize("command", ["status", "session wait"])
def test_a_failed_sessions_exit_code_survives_a_closed_pipe(workspace: Path, command: str) -> None:
    assert run("flow", "run", "broken").code == 1
    sid = run("flow", "session", "list", "--json").json()[0]["id"]
    vc = " ".join([shlex.quote(sys.executable), "-m", "app.main", "flow", *command.split(), sid])
    result = _into_a_closed_pipe(vc)
    assert result.stdout.strip() == "1"
    assert "Traceback" not in (workspace / "err.txt").read_text()


def _both_into_a_closed_pipe(command: str) -> str:
    """The exit code of ``command`` with stdout and stderr into a reader that is gone
    before it writes (``2>&1 | true``, as ``2>&1 | head -1`` is soon after)."""
    script = f'{command} 2>&1 | true; echo "${{PIPESTATUS[0]}}"'
    done = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, env=env_for(), timeout=120
    )
    return done.stdout.strip()


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("flow", "run", "broken"), "1"),  # the session failed
        (("flow", "run", "hello"), "0"),
        (("flow", "run", "no-such-workflow"), "1"),  # refused: its one line is lost, not its code
        (("flow", "status", "ffff"), "1"),
        (("flow", "session", "pause", "zz"), "2"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, tuple) else v,
)
def test_stderr_into_a_closed_pipe_keeps_the_commands_exit_code(
    workspace: Path, args: tuple[str, ...], code: str
) -> None:
    vc = " ".join([shlex.quote(sys.executable), "-m", "app.main", *args])
    assert _both_into_a_closed_pipe(vc) == code


def test_flow_show_marks_the_line_breaks_of_a_script_stage(workspace: Path, cli) -> None:
    """Joined with a space, two lines would read as one command with more arguments."""
    (workspace / "workflows" / "script.yaml").write_text(
        "stages:\n  - name: two\n    run: |\n      echo one\n\n      echo two\n"
    )
    out = cli("flow", "show", "script").out
    assert "two    echo one ⏎ echo two  " in out


def test_the_log_line_of_an_attempt_marks_the_line_breaks_of_its_script(
    workspace: Path, cli
) -> None:
    (workspace / "workflows" / "script.yaml").write_text(
        "stages:\n  - name: two\n    run: |\n      echo one\n      echo two\n"
    )
    assert cli("flow", "run", "script").code == 0
    sid = json.loads(cli("flow", "session", "list", "--json").out)[0]["id"]
    logs = cli("flow", "session", "logs", sid).out
    assert re.search(r"\[two\] attempt 1 \(pid \d+\): echo one ⏎ echo two\n", logs), logs
