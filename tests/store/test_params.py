"""Workflow parameters in the store: declarations in workflow files (checked by the typed
model, errors at the file's line with exit code 2), the values of a new session (parsed and
checked, one line naming the parameter and what it accepts), and what a session keeps."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from store import FlowSessionManager, ParamError, WorkflowError
from store.definitions import ParamDefinition, WorkflowDefinition, json_schema
from store.models import FlowSession
from store.queries import get_session_view
from store.workflows import load_workflow_file, load_workflow_text

DECLARED = """\
params:
  day: {type: str, default: latest, description: the day to load}
  target: {choices: [staging, prod], required: true}
  shards: {type: int, default: 4, min: 1, max: 64}
  rate: {type: float, default: 1e-3}
  dry: {type: bool, default: no}
  note: {}
stages:
  - name: load
    run: ./load.sh
"""

HOSTILE_VALUE = "$(touch pwned); x'\"; rm -rf ~"


def load(text: str) -> WorkflowDefinition:
    return load_workflow_text(textwrap.dedent(text), path="etl.yaml", default_id="etl")


def refusal(text: str) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load(text)
    return info.value


@pytest.fixture
def etl() -> WorkflowDefinition:
    return load(DECLARED)


# -- declarations -----------------------------------------------------------------------------


def test_declared_parameters_load_with_typed_defaults(etl: WorkflowDefinition) -> None:
    assert list(etl.params) == ["day", "target", "shards", "rate", "dry", "note"]
    p = etl.params
    assert (p["day"].type, p["day"].default, p["day"].description) == (
        "str",
        "latest",
        "the day to load",
    )
    assert (p["target"].type, p["target"].choices, p["target"].required) == (
        "str",
        ("staging", "prod"),
        True,
    )
    assert (p["shards"].default, p["shards"].min, p["shards"].max) == (4, 1, 64)
    assert p["rate"].default == 0.001 and isinstance(p["rate"].default, float)
    assert p["dry"].default is False
    assert p["note"] == ParamDefinition()


def test_a_str_default_is_taken_as_written(tmp_path: Path) -> None:
    wf = load("params:\n  day: {default: 2024-01-02}\n  n: {default: 007}\nstages:\n  - name: a\n")
    assert (wf.params["day"].default, wf.params["n"].default) == ("2024-01-02", "007")


def test_parameters_survive_the_snapshot_a_session_keeps(etl: WorkflowDefinition) -> None:
    snapshot = json.loads(json.dumps(etl.to_dict()))
    assert WorkflowDefinition.from_dict(snapshot) == etl
    assert snapshot["params"]["shards"] == {"type": "int", "default": 4, "min": 1, "max": 64}


def test_a_snapshot_whose_choices_fall_outside_its_bounds_still_loads() -> None:
    """Made before choices were checked against min and max: its session must still load."""
    snapshot = {
        "id": "w",
        "name": "w",
        "params": {"n": {"type": "int", "choices": [0, 5], "min": 1}},
        "stages": [{"name": "a", "run": "true"}],
    }
    assert WorkflowDefinition.from_dict(snapshot).params["n"].choices == (0, 5)


def test_a_snapshot_from_before_parameters_has_none() -> None:
    snapshot = {"id": "w", "name": "w", "stages": [{"name": "a"}]}
    assert WorkflowDefinition.from_dict(snapshot).params == {}


# (file text, line, key, fragment of the problem)
BAD_DECLARATIONS: list[tuple[str, str, int, str, str]] = [
    (
        "default-of-the-wrong-type",
        "params:\n  shards: {type: int, default: four}\n",
        2,
        "params.shards.default",
        "expected an integer, got 'four'",
    ),
    (
        "default-out-of-range",
        "params:\n  shards:\n    type: int\n    max: 64\n    default: 100\n",
        5,
        "params.shards.default",
        "default 100 does not fit: the parameter accepts an integer <= 64",
    ),
    (
        "default-not-a-choice",
        "params:\n  target:\n    choices: [staging, prod]\n    default: dev\n",
        4,
        "params.target.default",
        "accepts one of staging, prod",
    ),
    (
        "bool-default-quoted",
        "params:\n  dry: {type: bool, default: 'no'}\n",
        2,
        "params.dry.default",
        "expected true or false",
    ),
    (
        "key-not-an-identifier",
        "params:\n  batch-size: {type: int}\n",
        2,
        "params.batch-size",
        "invalid parameter name 'batch-size'",
    ),
    (
        "keys-differing-in-case",
        "params:\n  day: {}\n  DAY: {}\n",
        3,
        "params.DAY",
        "both would be VC_PARAM_DAY",
    ),
    (
        "unknown-type",
        "params:\n  n: {type: integer}\n",
        2,
        "params.n.type",
        "expected one of 'str', 'int', 'float' or 'bool', got 'integer'",
    ),
    (
        "unknown-key-with-suggestion",
        "params:\n  n:\n    type: int\n    defualt: 3\n",
        4,
        "params.n.defualt",
        "unknown key 'defualt' (did you mean 'default'?) in a parameter",
    ),
    ("bounds-on-a-string", "params:\n  n: {min: 1}\n", 2, "params.n.min", "not str"),
    (
        "min-above-max",
        "params:\n  n: {type: int, min: 5, max: 1}\n",
        2,
        "params.n.min",
        "min 5 is above max 1",
    ),
    (
        "required-with-default",
        "params:\n  n:\n    required: true\n    default: x\n",
        4,
        "params.n.default",
        "a required parameter takes no default",
    ),
    (
        "choice-of-the-wrong-type",
        "params:\n  n:\n    type: int\n    choices: [1, two]\n",
        4,
        "params.n.choices[1]",
        "expected an integer, got 'two'",
    ),
    (
        "choice-below-min",
        "params:\n  n:\n    type: int\n    choices: [1, 2]\n    min: 3\n",
        4,
        "params.n.choices[0]",
        "choice 1 is below min 3",
    ),
    (
        "choice-above-max",
        "params:\n  n:\n    type: float\n    max: 1\n    choices: [0.5, 2.5]\n",
        5,
        "params.n.choices[1]",
        "choice 2.5 is above max 1",
    ),
    ("params-a-list", "params: [day]\n", 1, "params", "expected a mapping of NAME"),
    (
        "choice-with-an-escape-sequence",
        'params:\n  p:\n    choices: [ok, "\\e[31mc"]\n',
        3,
        "params.p.choices[1]",
        "holds a control or invisible format character",
    ),
    (
        "choice-with-a-bidi-override",
        'params:\n  p:\n    choices: ["a\\u202eb"]\n',
        3,
        "params.p.choices[0]",
        "holds a control or invisible format character",
    ),
    (
        "int-default-with-a-leading-zero",  # YAML 1.1: octal, 10
        "params:\n  shards: {type: int, default: 012}\n",
        2,
        "params.shards.default",
        "write the integer in plain decimal digits, got 012 (YAML would read it as 10)",
    ),
    (
        "int-default-in-hex",
        "params:\n  shards: {type: int, default: 0x10}\n",
        2,
        "params.shards.default",
        "in plain decimal digits, got 0x10 (YAML would read it as 16)",
    ),
    (
        "int-bound-in-sexagesimal",  # YAML 1.1: 1*60 + 30
        "params:\n  minutes:\n    type: int\n    max: 1:30\n",
        4,
        "params.minutes.max",
        "in plain decimal digits, got 1:30 (YAML would read it as 90)",
    ),
    (
        "float-choice-with-underscores",
        "params:\n  rate:\n    type: float\n    choices: [0.5, 1_000.5]\n",
        4,
        "params.rate.choices[1]",
        "write the number in plain decimal digits, got 1_000.5",
    ),
    (
        "int-default-with-a-point",  # refused as before: not an integer, whatever the digits
        "params:\n  shards: {type: int, default: 1.5}\n",
        2,
        "params.shards.default",
        "expected an integer, got 1.5",
    ),
    (
        "float-default-past-what-a-float-holds",  # was an internal error (OverflowError)
        "params:\n  rate: {type: float, default: 1" + "0" * 400 + "}\n",
        2,
        "params.rate.default",
        "expected a finite number, got 1000",
    ),
    (
        "a-choice-listed-twice",
        "params:\n  target:\n    choices: [staging, prod, staging]\n",
        3,
        "params.target.choices[2]",
        "choice staging is listed twice",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [case[1:] for case in BAD_DECLARATIONS],
    ids=[case[0] for case in BAD_DECLARATIONS],
)
def test_a_bad_declaration_is_reported_at_its_line_with_exit_code_1(
    tmp_path: Path, text: str, line: int, key: str, fragment: str
) -> None:
    path = tmp_path / "etl.yaml"
    path.write_text(text + "stages:\n  - name: a\n")
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(path)
    err = info.value
    assert (err.path, err.line, err.key, err.exit_code) == (str(path), line, key, 1)
    assert str(err).startswith(f"{path}:{line}: {key}: ")
    assert fragment in str(err)


def test_an_error_outside_params_has_exit_code_1_too() -> None:
    assert refusal("stages:\n  - name: a\n    retries: x\n").exit_code == 1


def test_a_misspelt_params_key_suggests_params() -> None:
    assert "(did you mean 'params'?)" in str(refusal("parms: {}\nstages:\n  - name: a\n"))


# -- the values of a session ------------------------------------------------------------------


def test_values_given_as_text_are_parsed_by_type_and_defaults_fill_the_rest(
    etl: WorkflowDefinition,
) -> None:
    values = etl.resolve_params(
        {"target": "prod", "shards": "+8", "rate": "2.5e-4", "dry": "YES", "day": " x "}
    )
    assert values == {
        "day": " x ",
        "target": "prod",
        "shards": 8,
        "rate": 0.00025,
        "dry": True,
    }
    assert "note" not in values  # optional, no default, no value: not set


@pytest.mark.parametrize("given", ["-9223372036854775808", "9223372036854775807"])
def test_an_int_parameter_takes_the_whole_64_bit_range(given: str) -> None:
    definition = ParamDefinition(type="int")
    assert definition.parse(given) == int(given)
    assert definition.coerce(int(given)) == int(given)


@pytest.mark.parametrize("given", ["-9223372036854775809", "9223372036854775808"])
def test_an_int_parameter_refuses_what_64_bits_cannot_hold(given: str) -> None:
    definition = ParamDefinition(type="int")
    with pytest.raises(ValueError):
        definition.parse(given)
    with pytest.raises(ValueError):
        definition.coerce(int(given))


def test_typed_values_are_accepted_from_the_python_api(etl: WorkflowDefinition) -> None:
    values = etl.resolve_params({"target": "staging", "shards": 64, "rate": 1, "dry": False})
    assert (values["shards"], values["rate"], values["dry"]) == (64, 1.0, False)
    assert isinstance(values["rate"], float)


def test_a_string_value_is_kept_byte_for_byte(etl: WorkflowDefinition) -> None:
    values = etl.resolve_params({"target": "prod", "day": HOSTILE_VALUE, "note": ""})
    assert (values["day"], values["note"]) == (HOSTILE_VALUE, "")


# (given values, fragment of the one-line message)
BAD_VALUES: list[tuple[str, dict[str, Any], str]] = [
    ("missing-required", {}, "missing required parameter 'target': it accepts one of staging"),
    (
        "unknown",
        {"target": "prod", "shard": "2"},
        "unknown parameter 'shard' (did you mean 'shards'?); workflow etl takes: day, target, "
        "shards, rate, dry, note",
    ),
    (
        "wrong-type",
        {"target": "prod", "shards": "four"},
        "parameter 'shards' accepts an integer from 1 to 64, got 'four'",
    ),
    (
        "out-of-range",
        {"target": "prod", "shards": "65"},
        "parameter 'shards' accepts an integer from 1 to 64, got '65'",
    ),
    (
        "not-a-choice",
        {"target": "dev"},
        "parameter 'target' accepts one of staging, prod, got 'dev'",
    ),
    ("not-a-bool", {"target": "prod", "dry": "maybe"}, "'dry' accepts true or false"),
    ("float-nan", {"target": "prod", "rate": "nan"}, "'rate' accepts a number, got 'nan'"),
    ("int-for-float-api", {"target": "prod", "shards": 2.5}, "'shards' accepts an integer"),
    ("bool-for-int-api", {"target": "prod", "shards": True}, "'shards' accepts an integer"),
    ("int-beyond-float-api", {"target": "prod", "rate": 10**400}, "'rate' accepts a number"),
    (
        "key-not-an-identifier",
        {"target": "prod", "a-b": "1"},
        "invalid parameter name 'a-b': use letters, digits and '_'",
    ),
    ("nul-in-a-value", {"target": "prod", "day": "a\x00b"}, "'day' accepts a string (without NUL"),
    (
        "lone-surrogate",
        {"target": "prod", "day": "a\ud800b"},
        "'day' accepts a string (without NUL",
    ),
]


@pytest.mark.parametrize(
    ("given", "fragment"),
    [case[1:] for case in BAD_VALUES],
    ids=[case[0] for case in BAD_VALUES],
)
def test_a_bad_value_is_one_line_naming_the_parameter_with_exit_code_2(
    etl: WorkflowDefinition, given: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ParamError) as info:
        etl.resolve_params(given)
    assert fragment in str(info.value)
    assert info.value.exit_code == 2
    assert "\n" not in str(info.value) and str(info.value).isprintable()


def test_a_workflow_without_parameters_says_it_takes_none() -> None:
    wf = load("stages:\n  - name: a\n")
    with pytest.raises(ParamError, match="unknown parameter 'x': workflow etl takes no parameters"):
        wf.resolve_params({"x": "1"})


# -- sessions ---------------------------------------------------------------------------------


def _count(db: Any) -> int:
    return int(db.connection().execute(select(func.count()).select_from(FlowSession)).scalar())


def test_a_session_stores_its_typed_values(db: Any, etl: WorkflowDefinition) -> None:
    sid = (
        FlowSessionManager(db)
        .create_session("etl", definition=etl, params={"target": "prod", "shards": "8"})
        .id
    )
    view = get_session_view(db, sid)
    assert view is not None
    expected = {"day": "latest", "target": "prod", "shards": 8, "rate": 0.001, "dry": False}
    assert view.params == expected
    assert view.to_json()["params"] == expected


def test_a_refused_value_creates_nothing(db: Any, etl: WorkflowDefinition) -> None:
    with pytest.raises(ParamError):
        FlowSessionManager(db).create_session("etl", definition=etl, params={"target": "dev"})
    assert _count(db) == 0


def test_a_session_created_from_a_snapshot_checks_its_parameters(
    db: Any, etl: WorkflowDefinition
) -> None:
    manager = FlowSessionManager(db)
    snapshot = etl.to_dict()
    with pytest.raises(ParamError, match="missing required parameter 'target'"):
        manager.create_session("etl", definition=snapshot)
    sid = manager.create_session("etl", definition=snapshot, params={"target": "prod"}).id
    view = get_session_view(db, sid)
    assert view is not None and view.params["target"] == "prod"
    with pytest.raises(ParamError, match="takes no parameters"):
        manager.create_session("other", params={"x": "1"})
    assert _count(db) == 1


def test_retry_keeps_the_parameters(db: Any, etl: WorkflowDefinition) -> None:
    manager = FlowSessionManager(db)
    sid = manager.create_session("etl", definition=etl, params={"target": "prod"}).id
    manager.start_session(sid)
    manager.fail(sid, "stage load failed: exit code 1")
    manager.retry(sid)
    view = get_session_view(db, sid)
    assert view is not None and view.status == "PENDING"
    assert view.params["target"] == "prod"


# -- the schema -------------------------------------------------------------------------------


def test_the_json_schema_documents_every_key_a_file_may_use() -> None:
    schema = json_schema()
    assert schema["$schema"].startswith("https://json-schema.org/")
    assert schema["required"] == ["stages"]  # the id defaults to the file name
    assert set(schema["properties"]) == {
        "id",
        "name",
        "description",
        "stages",
        "params",
        "notify",
        "max_parallel",
        "fail_fast",
    }
    assert schema["additionalProperties"] is False
    stage = schema["$defs"]["StageDefinition"]
    assert set(stage["properties"]) == {
        "checklist",
        "cwd",
        "description",
        "env",
        "kill_timeout",
        "matrix",
        "name",
        "needs",
        "retries",
        "run",
        "stderr",
        "timeout",
    }
    assert stage["properties"]["stderr"]["enum"] == ["warning", "merged"]
    assert stage["required"] == ["name"] and stage["additionalProperties"] is False
    param = schema["$defs"]["ParamDefinition"]
    assert param["properties"]["type"]["enum"] == ["str", "int", "float", "bool"]
    assert all(p.get("description") for p in stage["properties"].values())
    notify = schema["$defs"]["NotifyDefinition"]
    assert set(notify["properties"]) == {"on", "to"} and notify["additionalProperties"] is False
    assert notify["properties"]["on"]["anyOf"][0]["enum"] == ["failure", "gate", "success", "any"]


def test_the_json_schema_states_every_bound_in_json_schema_keywords() -> None:
    schema = json_schema()
    stage = schema["$defs"]["StageDefinition"]["properties"]
    assert schema["properties"]["max_parallel"]["minimum"] == 1
    assert stage["retries"]["minimum"] == 0
    assert stage["kill_timeout"]["exclusiveMinimum"] == 0
    text = json.dumps(schema)
    for pydantic_name in ('"ge"', '"le"', '"gt"', '"lt"'):
        assert pydantic_name not in text
