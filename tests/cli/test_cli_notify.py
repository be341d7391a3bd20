"""The command line around notifications: the commands that must stay cheap never load
Apprise, `flow show` shows a workflow's notify settings with its URLs masked, and a bad
notify section is one error line naming file, line and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .helpers import imported, run

SECRET = "hunter2secret"


@pytest.fixture
def told(workspace: Path) -> Path:
    (workspace / "workflows" / "told.yaml").write_text(
        "notify:\n"
        "  on: [failure, success]\n"
        f"  to: ['json://ops:{SECRET}@127.0.0.1:9/hook?+X-Token={SECRET}2']\n"
        "stages:\n"
        "  - {name: a, run: 'true'}\n"
    )
    return workspace


def test_session_list_show_and_status_never_import_apprise(told: Path) -> None:
    created = run("flow", "session", "create", "told")
    assert created.code == 0, created.err
    sid = created.out.strip()
    for args in (
        ("flow", "session", "list"),
        ("flow", "session", "show", sid),
        ("flow", "status", sid),
    ):
        _, modules = imported(told, *args)
        assert "app.cli.session" in modules, args  # the measurement worked
        assert not any(m.split(".")[0] == "apprise" for m in modules), args


def test_flow_show_names_the_events_and_masks_the_urls(told: Path) -> None:
    shown = run("flow", "show", "told")
    assert shown.code == 0, shown.err
    [line] = [line for line in shown.out.splitlines() if line.startswith("notify:")]
    assert line == "notify:      on failure, success: json://ops:****@127.0.0.1:9/hook"
    doc = run("flow", "show", "told", "--json").json()
    assert doc["notify"] == {
        "on": ["failure", "success"],
        "to": ["json://ops:****@127.0.0.1:9/hook"],
    }
    assert SECRET not in shown.out + json.dumps(doc)


def test_a_bad_notify_section_is_one_error_line_with_file_line_and_key(
    workspace: Path,
) -> None:
    (workspace / "workflows" / "bad.yaml").write_text(
        "stages:\n  - {name: a, run: 'true'}\nnotify:\n  on: [failure, succes]\n"
    )
    result = run("flow", "show", "bad")
    assert result.code == 1
    [line] = result.err_lines
    assert line.startswith(f"vc: error: {workspace / 'workflows' / 'bad.yaml'}:4: notify.on[1]:")
    assert "unknown event 'succes' (did you mean 'success'?)" in line
