"""The `--json` documents of the README's Commands, key by key, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .helpers import THUMBS_ROWS, create_session, run, start_stages, store

SESSION_KEYS = {
    "id",
    "name",
    "workflow_id",
    "status",
    "reason",
    "progress",
    "current_stage",
    "orphaned",
    "created_at",
    "updated_at",
    "runner",
    "stages",
}
STAGE_KEYS = {"name", "status", "progress", "attempt", "exit_code"}
EVENT_KEYS = {"at", "op", "from", "to", "actor", "host", "pid", "reason"}


def check_session(doc: dict, *, workflow: str = "hello") -> None:
    assert doc.keys() >= SESSION_KEYS, SESSION_KEYS - doc.keys()
    assert isinstance(doc["id"], str) and len(doc["id"]) == 32
    assert doc["workflow_id"] == workflow
    assert doc["status"] in ("PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED")
    assert isinstance(doc["progress"], int | float) and 0 <= doc["progress"] <= 100
    assert isinstance(doc["orphaned"], bool)
    for key in ("created_at", "updated_at"):
        assert isinstance(doc[key], str) and doc[key].startswith("20")
    assert doc["runner"] is None or set(doc["runner"]) >= {"host", "pid", "heartbeat_at"}
    assert isinstance(doc["stages"], list) and doc["stages"]
    for stage in doc["stages"]:
        assert stage.keys() >= STAGE_KEYS, STAGE_KEYS - stage.keys()


def test_session_list_json_is_an_array_of_session_objects(store_workspace: Path, cli) -> None:
    first = create_session(store_workspace, name="one")
    second = create_session(store_workspace, "gate", name="two")
    result = cli("flow", "session", "list", "--json")
    assert result.code == 0, result.err
    docs = result.json()
    assert isinstance(docs, list)
    assert [d["id"] for d in docs] == [second, first]  # newest first
    check_session(docs[0], workflow="gate")
    check_session(docs[1])
    assert [s["name"] for s in docs[1]["stages"]] == ["greet", "count", "done"]
    assert docs[1]["stages"][0] == {
        **docs[1]["stages"][0],
        "status": "PENDING",
        "progress": 0.0,
        "attempt": 0,
        "exit_code": None,
    }


def test_session_list_json_of_an_empty_store_is_an_empty_array(store_workspace: Path, cli) -> None:
    result = cli("flow", "session", "list", "--json")
    assert (result.code, result.json()) == (0, [])


def test_session_list_json_filters_by_status_workflow_and_limit(store_workspace: Path, cli) -> None:
    a = create_session(store_workspace, name="a")
    b = create_session(store_workspace, "gate", name="b")
    c = create_session(store_workspace, name="c")
    assert cli("flow", "session", "pause", a).code == 0

    def ids(*args: str) -> list[str]:
        result = cli("flow", "session", "list", "--json", *args)
        assert result.code == 0, result.err
        return [d["id"] for d in result.json()]

    assert ids("--status", "paused") == [a]
    assert ids("--workflow", "gate") == [b]
    assert ids("--limit", "2") == [c, b]


def test_session_list_takes_several_statuses_as_any_of_them(store_workspace: Path, cli) -> None:
    a = create_session(store_workspace, name="a")
    b = create_session(store_workspace, name="b")
    create_session(store_workspace, name="c")
    assert cli("flow", "session", "pause", a).code == 0
    assert cli("flow", "session", "abort", b).code == 0

    def ids(*args: str) -> list[str]:
        result = cli("flow", "session", "list", "--json", *args)
        assert result.code == 0, result.err
        return [d["id"] for d in result.json()]

    assert ids("-s", "paused", "-s", "FAILED") == [b, a]  # both, not the last one only
    assert ids("-s", "paused", "-s", "paused") == [a]
    table = cli("flow", "session", "list", "-s", "paused", "-s", "failed")
    assert table.code == 0 and a[:8] in table.out and b[:8] in table.out


def test_session_list_json_gives_every_session_unless_limited(store_workspace: Path, cli) -> None:
    """The table shows the newest 50 and says so; the JSON is never silently shorter."""
    from store import FlowSessionManager

    with store(store_workspace) as db:
        manager = FlowSessionManager(db)
        for i in range(55):
            manager.create_session("hello", name=f"s{i}")
    everything = cli("flow", "session", "list", "--json")
    assert everything.code == 0 and everything.err == ""
    assert len(everything.json()) == 55
    assert len(cli("flow", "session", "list", "--json", "--limit", "3").json()) == 3
    table = cli("flow", "session", "list")
    lines = table.out.splitlines()
    assert len(lines) == 1 + 50 + 1  # header, rows, the note
    assert lines[-1] == "(50 of 55 sessions; --limit N shows more)"


def test_session_show_json_adds_events_newest_last(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "session", "pause", sid).code == 0
    assert cli("flow", "session", "resume", sid).code == 0
    assert cli("flow", "session", "abort", sid).code == 0
    result = cli("flow", "session", "show", sid[:8], "--json")
    assert result.code == 0, result.err
    doc = result.json()
    check_session(doc)
    assert doc["status"] == "FAILED" and doc["reason"] == "aborted"
    events = doc["events"]
    for event in events:
        assert event.keys() >= EVENT_KEYS, EVENT_KEYS - event.keys()
        assert event["pid"] > 0 and event["host"] and event["actor"]
    assert [(e["op"], e["from"], e["to"]) for e in events] == [
        ("create", None, "PENDING"),
        ("pause", "PENDING", "PAUSED"),
        ("resume", "PAUSED", "PENDING"),
        ("abort", "PENDING", "FAILED"),
    ]
    assert events[-1]["reason"] == "aborted"
    assert [e["at"] for e in events] == sorted(e["at"] for e in events)


def test_session_create_json_prints_the_created_session(store_workspace: Path, cli) -> None:
    result = cli(
        "flow",
        "session",
        "create",
        "hello",
        "--name",
        "nightly",
        "--meta",
        "k=v",
        "--meta",
        "empty=",
        "--json",
    )
    assert result.code == 0, result.err
    doc = result.json()
    check_session(doc)
    assert (doc["name"], doc["status"], doc["runner"]) == ("nightly", "PENDING", None)
    assert doc["metadata"] == {"k": "v", "empty": ""}
    listed = cli("flow", "session", "list", "--json").json()
    assert [d["id"] for d in listed] == [doc["id"]]


def test_runner_is_an_object_with_host_pid_and_heartbeat_once_claimed(
    store_workspace: Path, cli
) -> None:
    from store import FlowSessionManager

    sid = create_session(store_workspace)
    with store(store_workspace) as db:
        FlowSessionManager(db).start_session(sid, runner_host="host-a", runner_pid=4242)
    doc = cli("flow", "session", "show", sid, "--json").json()
    assert doc["status"] == "ACTIVE"
    assert doc["runner"]["host"] == "host-a" and doc["runner"]["pid"] == 4242
    assert isinstance(doc["runner"]["heartbeat_at"], str)
    assert doc["current_stage"] == "greet"
    assert doc["orphaned"] is False  # another host, fresh heartbeat
    listed = cli("flow", "session", "list", "--json").json()
    assert listed[0]["runner"] == doc["runner"]


def test_flow_status_json_is_the_session_object_with_a_summary(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    result = cli("flow", "status", sid[:6], "--json")
    assert result.code == 0, result.err
    doc = result.json()
    check_session(doc)
    assert doc["summary"]["stages_total"] == 3
    assert doc["summary"]["stages_by_status"]["PENDING"] == 3


def test_flow_list_json_places_each_bad_file(workspace: Path, cli) -> None:
    """A script reads where the mistake is without splitting the line stderr prints."""
    bad = workspace / "workflows" / "bad.yaml"
    bad.write_text("stages:\n  - name: a\n    run: [\n")
    listed = cli("flow", "list", "--json")
    assert listed.code == 1
    [error] = listed.json()["errors"]
    assert (error["path"], error["line"], error["key"]) == (str(bad), 3, None)
    assert error["problem"].startswith("invalid YAML")
    said = cli("flow", "list").err.strip().splitlines()
    assert said == [f"vc: error: {error['text']}"]


def test_flow_list_and_show_json(workspace: Path, cli) -> None:
    listed = cli("flow", "list", "--json")
    assert listed.code == 0, listed.err
    doc = listed.json()
    assert [w["id"] for w in doc["workflows"]] == ["broken", "gate", "hello", "slow"]
    assert doc["errors"] == []
    shown = cli("flow", "show", "hello", "--json")
    assert shown.code == 0, shown.err
    wf = shown.json()
    assert wf["id"] == "hello" and wf["execution_order"] == ["greet", "count", "done"]
    assert [s["name"] for s in wf["stages"]] == ["greet", "count", "done"]


def test_flow_show_json_gives_what_each_stage_waits_for_as_a_sessions_json_does(
    workspace: Path, cli
) -> None:
    shown = cli("flow", "show", "hello", "--json").json()
    assert [s["needs"] for s in shown["stages"]] == [[], ["greet"], ["count"]]
    sid = create_session(workspace, "hello")
    session = cli("flow", "session", "show", sid, "--json").json()
    assert [s["needs"] for s in session["stages"]] == [s["needs"] for s in shown["stages"]]


@pytest.mark.parametrize(
    "args",
    [
        ("flow", "session", "list", "--json"),
        ("flow", "session", "show", "{sid}", "--json"),
        ("flow", "session", "create", "gate", "--json", "--name", "x"),
        ("flow", "status", "{sid}", "--json"),
        ("flow", "list", "--json"),
        ("flow", "show", "hello", "--json"),
    ],
    ids=lambda a: " ".join(x for x in a if not x.startswith("{")),
)
def test_json_commands_print_nothing_but_json_on_stdout(
    store_workspace: Path, args: tuple[str, ...]
) -> None:
    sid = create_session(store_workspace)
    # colours and a narrow terminal must not leak into the JSON either
    result = run(*(a.format(sid=sid) for a in args), color=True, env={"COLUMNS": "40"})
    assert result.code == 0, result.err
    json.loads(result.out)  # the whole of stdout is one document
    assert "\x1b" not in result.out
    assert result.err == ""


def test_session_ids_in_json_are_full_ids(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    assert cli("flow", "session", "show", sid[:5], "--json").json()["id"] == sid
    assert os.environ["VC_DATABASE_URL"]  # the store under test is the parametrized one


# -- stages in parallel -------------------------------------------------------------------------


def test_each_stage_instance_carries_its_matrix_values_and_the_rows_it_needs(
    store_workspace: Path, thumbs: str, cli
) -> None:
    sid = create_session(store_workspace, thumbs)
    doc = cli("flow", "session", "show", sid, "--json").json()
    check_session(doc, workflow=thumbs)
    assert [s["name"] for s in doc["stages"]] == THUMBS_ROWS
    stages = {s["name"]: s for s in doc["stages"]}
    assert stages["fetch"]["instance"] is None and stages["fetch"]["needs"] == []
    assert stages["resize[size=large,format=png]"]["instance"] == {"size": "large", "format": "png"}
    assert stages["resize[size=large,format=png]"]["needs"] == ["fetch"]
    assert stages["review"]["needs"] == ["fetch"]
    assert stages["publish"]["needs"] == THUMBS_ROWS[1:6]  # every instance of resize, review


def test_list_and_status_json_give_the_same_stage_objects_as_show(
    store_workspace: Path, thumbs: str, cli
) -> None:
    sid = create_session(store_workspace, thumbs)
    shown = cli("flow", "session", "show", sid, "--json").json()["stages"]
    assert cli("flow", "session", "list", "--json").json()[0]["stages"] == shown
    assert cli("flow", "status", sid, "--json").json()["stages"] == shown


def test_running_stages_are_the_task_stages_running_or_paused_in_position_order(
    store_workspace: Path, thumbs: str, cli
) -> None:
    sid = create_session(store_workspace, thumbs)
    start_stages(
        store_workspace,
        sid,
        {
            "fetch": ["ACTIVE", "COMPLETED"],
            "review": ["PAUSED"],  # a gate waiting is not running
            "resize[size=large,format=webp]": ["ACTIVE"],
            "resize[size=small,format=webp]": ["ACTIVE", "PAUSED"],
        },
    )
    for args in (("flow", "session", "show", sid), ("flow", "status", sid)):
        doc = cli(*args, "--json").json()
        assert doc["running_stages"] == [
            "resize[size=small,format=webp]",
            "resize[size=large,format=webp]",
        ]
        assert doc["current_stage"] == "resize[size=small,format=webp]"
    assert cli("flow", "session", "list", "--json").json()[0]["running_stages"] == [
        "resize[size=small,format=webp]",
        "resize[size=large,format=webp]",
    ]


def test_a_session_at_a_manual_gate_runs_nothing_and_its_current_stage_is_the_gate(
    store_workspace: Path, cli
) -> None:
    from store import FlowSessionManager

    sid = create_session(store_workspace, "gate")
    start_stages(store_workspace, sid, {"build": ["ACTIVE", "COMPLETED"], "approve": ["PAUSED"]})
    with store(store_workspace) as db:
        FlowSessionManager(db, actor="runner").pause(sid, reason="waiting: approve")
    doc = cli("flow", "session", "show", sid, "--json").json()
    assert (doc["status"], doc["current_stage"], doc["running_stages"]) == (
        "PAUSED",
        "approve",
        [],
    )


def test_a_sequential_session_runs_one_stage_and_names_it_current(
    store_workspace: Path, cli
) -> None:
    sid = create_session(store_workspace)
    start_stages(store_workspace, sid, {"greet": ["ACTIVE", "COMPLETED"]})
    doc = cli("flow", "session", "show", sid, "--json").json()
    assert (doc["current_stage"], doc["running_stages"]) == ("count", [])  # next to run
    start_stages(store_workspace, sid, {"count": ["ACTIVE"]})
    doc = cli("flow", "session", "show", sid, "--json").json()
    assert (doc["current_stage"], doc["running_stages"]) == ("count", ["count"])
    assert [s["needs"] for s in doc["stages"]] == [[], ["greet"], ["count"]]


def test_stages_made_before_parallel_stages_get_their_needs_from_the_snapshot(
    store_workspace: Path, cli
) -> None:
    """A session stored by an older vc: the snapshot has no fail_fast, ``needs: []`` meant
    "nothing said", and the stage rows carry neither ``waits_for`` nor ``instance``."""
    from sqlalchemy import update

    from store import FlowSessionManager, StageInstance

    legacy = {
        "id": "old",
        "stages": [
            {"name": "a", "run": "true", "needs": []},
            {"name": "b", "run": "true", "needs": ["c"]},
            {"name": "c", "run": "true", "needs": []},
        ],
    }
    with store(store_workspace) as db:
        sid = FlowSessionManager(db).create_session("old", definition=legacy).id
        for stage in legacy["stages"]:
            db.execute(
                update(StageInstance)
                .where(StageInstance.session_id == sid, StageInstance.name == stage["name"])
                .values(config=stage)
            )
        db.commit()
    shown = cli("flow", "session", "show", sid, "--json").json()["stages"]
    assert [(s["name"], s["needs"], s["instance"]) for s in shown] == [
        ("a", [], None),
        ("b", ["c"], None),
        ("c", ["a"], None),  # follows the stage before it that does not wait for it
    ]
    assert cli("flow", "session", "list", "--json").json()[0]["stages"] == shown
