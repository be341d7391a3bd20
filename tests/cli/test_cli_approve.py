"""`vc flow session approve ID [GATE]`: passing a waiting manual gate from the command line,
its output, its exit codes and its refusals (which change nothing). The sessions are brought
to their gates through the managers, as a runner would, without running one; their runner is
this test process, alive, so no command starts another."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import at_gates, one_error_line, run, session_json, snapshot


def stage_statuses(workspace: Path, sid: str) -> dict[str, str]:
    return {s["name"]: s["status"] for s in session_json(workspace, sid)["stages"]}


def test_approve_passes_the_only_gate_and_resumes_the_session_waiting_at_it(
    store_workspace: Path, cli
) -> None:
    sid = at_gates(store_workspace, "gate", ["approve"], paused_at="approve")
    result = cli("flow", "session", "approve", sid[:6])
    assert result.code == 0, result.err
    assert result.out == f"ACTIVE: {sid[:12]} (release); gate approve approved\n"
    assert result.err == ""
    doc = session_json(store_workspace, sid)
    assert (doc["status"], doc["reason"]) == ("ACTIVE", None)
    assert stage_statuses(store_workspace, sid)["approve"] == "COMPLETED"
    assert [(e["op"], e["stage"]) for e in doc["events"][-2:]] == [
        ("approve", "approve"),
        ("resume", None),
    ]


def test_approve_of_a_named_gate_leaves_the_other_waiting_and_the_session_as_it_was(
    store_workspace: Path, cli
) -> None:
    sid = at_gates(store_workspace, "twogates", ["qa", "legal"], paused_at=None)
    result = cli("flow", "session", "approve", sid, "legal")
    assert result.code == 0, result.err
    assert result.out == f"ACTIVE: {sid[:12]} (release); gate legal approved\n"
    statuses = stage_statuses(store_workspace, sid)
    assert (statuses["qa"], statuses["legal"]) == ("PAUSED", "COMPLETED")


def test_approve_of_another_gate_resumes_a_session_paused_at_a_gate_which_still_waits(
    store_workspace: Path, cli
) -> None:
    sid = at_gates(store_workspace, "twogates", ["qa", "legal"], paused_at="qa")
    result = cli("flow", "session", "approve", sid, "legal")
    assert result.code == 0, result.err
    assert result.out == f"ACTIVE: {sid[:12]} (release); gate legal approved\n"
    doc = session_json(store_workspace, sid)
    assert (doc["status"], doc["reason"]) == ("ACTIVE", None)
    statuses = stage_statuses(store_workspace, sid)
    assert (statuses["qa"], statuses["legal"]) == ("PAUSED", "COMPLETED")


@pytest.mark.parametrize(
    ("gates", "args", "message"),
    [
        ([], [], "session {short} has no gate waiting"),
        (["qa"], ["legal"], "session {short} has no gate 'legal' waiting; waiting: qa"),
        (
            ["qa", "legal"],
            [],
            "session {short} has 2 gates waiting: qa, legal; name the one to approve",
        ),
    ],
    ids=["none-waiting", "not-waiting", "two-waiting"],
)
def test_a_refused_approve_exits_one_with_one_line_and_changes_nothing(
    store_workspace: Path, gates: list[str], args: list[str], message: str
) -> None:
    sid = at_gates(store_workspace, "twogates", gates, paused_at=None)
    before = snapshot(store_workspace)
    result = run("flow", "session", "approve", sid[:8], *args)
    assert result.code == 1
    assert one_error_line(result) == "vc: error: " + message.format(short=sid[:12])
    assert result.out == ""
    assert snapshot(store_workspace) == before


def test_approve_of_an_ended_session_is_refused_like_any_operation(
    store_workspace: Path, cli
) -> None:
    sid = at_gates(store_workspace, "gate", ["approve"], paused_at="approve")
    assert cli("flow", "session", "abort", sid).code == 0
    before = snapshot(store_workspace)
    result = cli("flow", "session", "approve", sid)
    assert result.code == 1
    assert one_error_line(result) == (
        f"vc: error: cannot approve session {sid[:12]}: it is FAILED; allowed: retry, delete"
    )
    assert snapshot(store_workspace) == before


@pytest.mark.parametrize("op", ["pause", "retry"])
def test_a_refusal_at_a_gate_says_the_session_waits_there_and_names_approve(
    store_workspace: Path, op: str
) -> None:
    sid = at_gates(store_workspace, "gate", ["approve"], paused_at="approve")
    before = snapshot(store_workspace)
    result = run("flow", "session", op, sid)
    assert result.code == 1
    assert one_error_line(result) == (
        f"vc: error: cannot {op} session {sid[:12]}: it is PAUSED (waiting at gate approve); "
        "allowed: approve, resume, abort, delete"
    )
    assert snapshot(store_workspace) == before


@pytest.mark.parametrize(
    "args",
    [["approve"], ["approve", "0123abcd", "qa", "legal"], ["approve", "--gate", "qa", "0123"]],
    ids=["no-id", "two-gates", "unknown-option"],
)
def test_approve_with_bad_arguments_is_a_usage_error(workspace: Path, cli, args: list[str]) -> None:
    result = cli("flow", "session", *args)
    assert result.code == 2
    line = one_error_line(result)
    assert line.endswith("(see 'vc flow session approve --help')")
    assert result.out == ""


@pytest.mark.parametrize("gate", ["", " "])
def test_approve_of_a_blank_gate_is_a_usage_error_and_changes_nothing(
    store_workspace: Path, gate: str
) -> None:
    sid = at_gates(store_workspace, "twogates", ["qa"], paused_at=None)
    before = snapshot(store_workspace)
    result = run("flow", "session", "approve", sid, gate)
    assert result.code == 2
    assert one_error_line(result) == (
        "vc: error: GATE must name a gate (leave it out when only one gate waits)"
    )
    assert snapshot(store_workspace) == before


TWO_CHECKLISTS = """\
stages:
  - {name: build, run: echo built}
  - {name: qa, needs: [build], checklist: [tests green]}
  - {name: legal, needs: [build], checklist: [licences ok, "[bold]no[/] markup"]}
  - {name: deploy, run: echo deployed, needs: [qa, legal]}
"""


@pytest.mark.parametrize(
    ("command", "label"),
    [(("flow", "session", "show"), "checklist: "), (("flow", "status"), "check    ")],
)
def test_show_and_status_give_the_checklist_of_every_gate_waiting(
    store_workspace: Path, cli, command: tuple[str, ...], label: str
) -> None:
    (store_workspace / "workflows" / "checks.yaml").write_text(TWO_CHECKLISTS)
    sid = at_gates(store_workspace, "checks", ["qa", "legal"], paused_at=None)  # ACTIVE
    out = cli(*command, sid).out
    indent = " " * len(label)
    assert f"{label}qa: tests green\n{indent}legal: licences ok; [bold]no[/] markup\n" in out
