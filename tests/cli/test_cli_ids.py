"""Session ids on the command line: full ids, unique prefixes of 4+ characters, and every
way a given id can be wrong (each refused with one line, the right exit code, and the store
left as it was)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .helpers import create_session, one_error_line, run, snapshot, store


def make_sessions_with_ids(
    workspace: Path, monkeypatch: pytest.MonkeyPatch, ids: list[str]
) -> None:
    """Sessions with chosen ids, created through the store's manager."""
    import store.new_session as sessions
    from store import FlowSessionManager
    from store.workflows import find_workflow

    chosen = iter(ids)
    monkeypatch.setattr(sessions, "new_session_id", lambda: next(chosen))
    definition = find_workflow(workspace / "workflows", "hello")
    with store(workspace) as db:
        for i, _ in enumerate(ids):
            FlowSessionManager(db).create_session("hello", name=f"s{i}", definition=definition)


def test_a_unique_prefix_of_four_characters_names_the_session(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    result = cli("flow", "session", "pause", sid[:4])
    assert result.code == 0, result.err
    assert result.out.startswith(f"PAUSED: {sid[:12]}")


def test_a_full_id_names_the_session(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "session", "show", sid, "--json").json()["id"] == sid


def test_an_ambiguous_prefix_lists_the_candidates_and_changes_nothing(
    store_workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = ["abcd" + "1" * 28, "abcd" + "2" * 28, "abce" + "3" * 28]
    make_sessions_with_ids(store_workspace, monkeypatch, ids)
    before = snapshot(store_workspace)
    result = run("flow", "session", "pause", "abcd")
    assert result.code == 1
    line = one_error_line(result)
    assert "ambiguous" in line
    assert ids[0][:12] in line and ids[1][:12] in line and ids[2][:12] not in line
    assert result.out == ""
    assert snapshot(store_workspace) == before
    # one more character makes it unique
    assert run("flow", "session", "pause", "abcd1").code == 0


@pytest.mark.parametrize("command", ["show", "pause", "delete", "logs"])
def test_a_prefix_shorter_than_four_characters_is_a_usage_error(
    store_workspace: Path, command: str
) -> None:
    sid = create_session(store_workspace)
    before = snapshot(store_workspace)
    result = run("flow", "session", command, sid[:3])
    assert result.code == 2
    assert "at least 4 characters" in one_error_line(result)
    assert snapshot(store_workspace) == before


@pytest.mark.parametrize(
    "args",
    [
        ("flow", "session", "show", "ffffffff"),
        ("flow", "session", "show", "f" * 32, "--json"),
        ("flow", "session", "resume", "ffff"),
        ("flow", "session", "delete", "--force", "ffff"),
        ("flow", "status", "ffffff"),
        ("flow", "session", "logs", "ffff"),
    ],
    ids=lambda a: " ".join(x[:8] for x in a),
)
def test_an_unknown_id_is_refused_with_exit_code_one(
    store_workspace: Path, args: tuple[str, ...]
) -> None:
    create_session(store_workspace)
    before = snapshot(store_workspace)
    result = run(*args)
    assert result.code == 1
    assert "no session matches" in one_error_line(result)
    assert result.out == ""
    assert snapshot(store_workspace) == before


@pytest.mark.parametrize("command", ["show", "pause", "logs"])
def test_an_id_that_is_not_hexadecimal_is_a_usage_error_whatever_the_store_holds(
    store_workspace: Path, command: str
) -> None:
    create_session(store_workspace)
    before = snapshot(store_workspace)
    result = run("flow", "session", command, "zzzz")
    assert result.code == 2
    assert "ids are hexadecimal" in one_error_line(result)
    assert snapshot(store_workspace) == before


def test_an_id_typed_in_upper_case_names_the_session(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "session", "show", sid[:8].upper(), "--json").json()["id"] == sid
    assert cli("flow", "session", "pause", sid.upper()).code == 0


@pytest.mark.parametrize(
    "bad_id",
    [
        "../x",
        "../../etc/passwd",
        "/etc/passwd",
        "abcd/../..",
        "ab%d",
        "a b c d",
        "abcd\x1b[31m",
        "abcd\\x",
    ],
)
def test_an_id_that_could_escape_the_log_directory_is_refused(
    store_workspace: Path, bad_id: str, cli
) -> None:
    sid = create_session(store_workspace)
    before = snapshot(store_workspace)
    for command in ("show", "pause", "delete", "logs"):
        args = ["flow", "session", command, "--", bad_id]
        result = cli(*args)
        assert result.code == 2, (command, result.err)
        line = one_error_line(result)
        assert "\x1b" not in line
    assert snapshot(store_workspace) == before
    logs = store_workspace / "logs" / "workflow" / "session"
    allowed = re.compile(r"^([0-9a-f]{32}|operations|integration)\.log$")
    for path in (store_workspace / "logs").rglob("*"):
        assert path.is_dir() or (path.parent == logs and allowed.match(path.name)), path
    assert not list(store_workspace.parent.rglob("x.log"))
    assert not list(store_workspace.parent.rglob("*passwd*"))
    assert sid


def test_an_id_with_a_nul_byte_is_refused(store_workspace: Path, cli) -> None:
    create_session(store_workspace)
    before = snapshot(store_workspace)
    result = cli("flow", "session", "abort", "abcd\x00efgh")
    assert result.code == 2
    assert "\x00" not in one_error_line(result)
    assert snapshot(store_workspace) == before
