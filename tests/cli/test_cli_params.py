"""Parameters on the command line (`--param KEY=VALUE` on `run`, `run --queue` and `session
create`), what `show`, `status` and `flow show` say about them, and `vc flow schema`.

Every bad input is one line on stderr naming the parameter and what it accepts, exit code 2,
and no session created."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from .helpers import create_session, one_error_line, run, snapshot, store

ETL = """
    name: ETL
    params:
      day: {type: str, default: latest, description: the day to load}
      target: {choices: [staging, prod], required: true}
      shards: {type: int, default: 4, min: 1, max: 64}
    stages:
      - name: build-image
        run: |
          echo "::output tag=v-$VC_PARAM_SHARDS"
      - name: deploy
        run: echo "deploying $VC_OUTPUT_BUILD_IMAGE_TAG to $VC_PARAM_TARGET"
"""


@pytest.fixture
def etl(store_workspace: Path) -> Path:
    (store_workspace / "workflows" / "etl.yaml").write_text(textwrap.dedent(ETL).lstrip())
    return store_workspace


def no_sessions(workspace: Path) -> bool:
    return snapshot(workspace)["flow_sessions"] == []


# (extra arguments, fragment of the error line)
BAD: list[tuple[str, list[str], str]] = [
    (
        "unknown-lists-the-known",
        ["-p", "target=prod", "-p", "shard=2"],
        "unknown parameter 'shard' (did you mean 'shards'?); workflow etl takes: day, target, "
        "shards",
    ),
    ("missing-required", [], "missing required parameter 'target': it accepts one of staging"),
    (
        "wrong-type",
        ["-p", "target=prod", "-p", "shards=four"],
        "parameter 'shards' accepts an integer from 1 to 64, got 'four'",
    ),
    (
        "out-of-range",
        ["-p", "target=prod", "-p", "shards=0"],
        "parameter 'shards' accepts an integer from 1 to 64, got '0'",
    ),
    ("not-a-choice", ["-p", "target=dev"], "parameter 'target' accepts one of staging, prod"),
    ("without-equals", ["-p", "target"], "--param: expected KEY=VALUE, got 'target'"),
    (
        "key-not-an-identifier",
        ["-p", "target=prod", "-p", "batch-size=3"],
        "invalid parameter name 'batch-size'",
    ),
    ("given-twice", ["-p", "target=prod", "-p", "target=staging"], "'target' given twice"),
]
COMMANDS = {
    "run": ["flow", "run", "etl"],
    "queue": ["flow", "run", "etl", "--queue"],
    "create": ["flow", "session", "create", "etl"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize(
    ("extra", "fragment"), [case[1:] for case in BAD], ids=[case[0] for case in BAD]
)
def test_a_bad_parameter_is_one_line_exit_2_and_creates_nothing(
    etl: Path, command: str, extra: list[str], fragment: str
) -> None:
    result = run(*COMMANDS[command], *extra)
    assert result.code == 2, result.err
    assert fragment in one_error_line(result)
    assert result.out == ""
    assert no_sessions(etl)


def test_a_default_that_breaks_its_type_is_reported_at_the_file_line_exit_1(etl: Path) -> None:
    """A file to fix, as any other mistake in it (exit 1, `flow list` too), not a usage
    error: only a value given on the command line is (exit 2)."""
    path = etl / "workflows" / "etl.yaml"
    path.write_text(path.read_text().replace("default: 4,", "default: lots,"))
    for command in [*COMMANDS.values(), ("flow", "show", "etl")]:
        result = run(*command, "-p", "target=prod") if command[1] != "show" else run(*command)
        assert result.code == 1, result.err
        line = one_error_line(result)
        assert f"{path}:5: params.shards.default: expected an integer, got 'lots'" in line
    assert no_sessions(etl)
    listed = run("flow", "list")
    assert listed.code == 1 and f"{path}:5:" in listed.err  # the others stay listed
    assert "hello" in listed.out


def test_param_with_an_existing_session_is_refused(etl: Path) -> None:
    sid = create_session(etl, "hello")
    result = run("flow", "run", "hello", "--session", sid, "-p", "x=1")
    assert result.code == 2
    assert "--param gives values to a new session" in one_error_line(result)


def test_name_with_an_existing_session_is_refused_and_changes_nothing(etl: Path) -> None:
    sid = create_session(etl, "hello")
    before = snapshot(etl)
    result = run("flow", "run", "hello", "--session", sid, "--name", "renamed")
    assert result.code == 2
    assert "a session keeps the name it was created with" in one_error_line(result)
    assert snapshot(etl) == before


def test_session_create_stores_the_values_and_json_has_them(etl: Path) -> None:
    result = run("flow", "session", "create", "etl", "--param", "target=prod", "-p", "shards=8")
    assert result.code == 0, result.err
    sid = result.out.strip()
    shown = run("flow", "session", "show", sid, "--json").json()
    assert shown["params"] == {"day": "latest", "target": "prod", "shards": 8}
    assert [s["outputs"] for s in shown["stages"]] == [{}, {}]
    created = run("flow", "session", "create", "etl", "-p", "target=staging", "--json").json()
    assert created["params"]["target"] == "staging"
    listed = run("flow", "session", "list", "--json").json()
    assert sorted(s["params"]["target"] for s in listed) == ["prod", "staging"]


def test_run_queue_stores_the_values_for_a_worker(etl: Path) -> None:
    result = run("flow", "run", "etl", "--queue", "-p", "target=prod", "-p", "day=2024-01-02")
    assert result.code == 0, result.err
    shown = run("flow", "session", "show", result.out.strip(), "--json").json()
    assert shown["queued"] is True
    assert shown["params"] == {"day": "2024-01-02", "target": "prod", "shards": 4}


def test_show_and_status_print_the_parameters_and_the_outputs(etl: Path) -> None:
    result = run("flow", "run", "etl", "-p", "target=prod", "-p", "shards=8")
    assert result.code == 0, result.err
    with store(etl) as db:
        from store.queries import list_sessions

        sid = list_sessions(db, limit=1)[0].id
    shown = run("flow", "session", "show", sid)
    assert "params:    day=latest, target=prod, shards=8" in shown.out
    assert "outputs:\n  build-image.tag = v-8\n" in shown.out
    status = run("flow", "status", sid)
    assert "params   day=latest, target=prod, shards=8" in status.out
    assert "  build-image.tag = v-8" in status.out
    doc = run("flow", "status", sid, "--json").json()
    assert doc["params"]["shards"] == 8
    assert [s["outputs"] for s in doc["stages"]] == [{"tag": "v-8"}, {}]
    logs = run("flow", "session", "logs", sid).out
    assert "::output tag=v-8" in logs  # the output line is logged like any line
    assert "deploying v-8 to prod" in logs


def test_flow_show_lists_the_parameters(etl: Path) -> None:
    shown = run("flow", "show", "etl")
    assert shown.code == 0, shown.err
    lines = shown.out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("PARAMETER"))
    assert lines[header].split() == ["PARAMETER", "ACCEPTS", "DEFAULT", "DESCRIPTION"]
    assert lines[header + 1].split() == ["day", "a", "string", "latest", "the", "day", "to", "load"]
    assert "(required)" in lines[header + 2] and "one of staging, prod" in lines[header + 2]
    assert "an integer from 1 to 64" in lines[header + 3]
    doc = run("flow", "show", "etl", "--json").json()
    assert doc["params"]["target"]["choices"] == ["staging", "prod"]


def test_flow_show_json_gives_every_parameter_every_key(etl: Path) -> None:
    """As a stage object has every key: a script reads ``p["required"]`` of any parameter."""
    params = run("flow", "show", "etl", "--json").json()["params"]
    keys = ["type", "default", "required", "choices", "min", "max", "description"]
    assert all(list(p) == keys for p in params.values()), params
    assert params["day"] == {
        "type": "str",
        "default": "latest",
        "required": False,
        "choices": None,
        "min": None,
        "max": None,
        "description": "the day to load",
    }
    assert (params["target"]["type"], params["target"]["required"]) == ("str", True)


def test_flow_schema_prints_the_json_schema_of_workflow_files(workspace: Path) -> None:
    result = run("flow", "schema")
    assert result.code == 0, result.err
    schema = json.loads(result.out)
    assert schema["title"] == "vc workflow"
    assert {"stages", "params"} <= set(schema["properties"])
    assert "ParamDefinition" in schema["$defs"]


def _imported(workspace: Path, *args: str) -> set[str]:
    """The modules `vc ARGS` imports."""
    from .helpers import imported

    code, modules = imported(workspace, *args)
    assert code == 0, args
    return modules


def test_session_commands_never_load_the_workflow_model(etl: Path) -> None:
    sid = create_session(etl, "hello")
    for args in (
        ("flow", "session", "list"),
        ("flow", "session", "show", sid),
        ("flow", "status", sid),
    ):
        modules = _imported(etl, *args)
        assert modules & {"store.queries", "store.direct_reads"}  # it did read the store
        assert not modules & {"store.definitions", "store.workflows", "yaml", "textual"}, args


def test_flow_list_never_loads_the_database_layer(etl: Path) -> None:
    modules = _imported(etl, "flow", "list")
    assert "store.definitions" in modules
    assert not modules & {"sqlalchemy", "sqlmodel", "store.models", "store.engine"}
