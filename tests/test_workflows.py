"""Workflow definitions: loading, validation errors (path, line, key), discovery, snapshots."""

from __future__ import annotations

import json
import pickle
import textwrap
from pathlib import Path

import pytest
import yaml

from store import workflows
from store.workflows import (
    StageDefinition,
    WorkflowDefinition,
    WorkflowError,
    discover_workflows,
    find_workflow,
    load_workflow_file,
    load_workflow_text,
    validate_identifier,
)

VALID = """\
id: nightly-etl
name: Nightly ETL
description: pulls, checks, loads
stages:
  - name: extract
    run: ./extract.sh --since yesterday
    timeout: 3600
    retries: 2
    kill_timeout: 5.5
    env: {REGION: eu-west-1, BATCH: 500, DRY_RUN: no}
    cwd: data
    description: fetch the raw dumps
  - name: review
    needs: extract
    checklist: [row counts look sane, no PII columns]
  - name: load
    run: ./load.sh
    needs: [review, extract]
"""


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def error_of(path: Path) -> WorkflowError:
    with pytest.raises(WorkflowError) as info:
        load_workflow_file(path)
    return info.value


@pytest.fixture(params=["libyaml", "pure-python"])
def yaml_loader(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test with both YAML back ends: libyaml when installed, and the pure-Python
    fallback, so the errors and lines are the same wherever vc is installed."""
    if request.param == "libyaml":
        if not hasattr(yaml, "CSafeLoader"):
            pytest.skip("PyYAML built without libyaml")
        monkeypatch.setattr(workflows, "_YAML_LOADER", yaml.CSafeLoader)
    else:
        monkeypatch.setattr(workflows, "_YAML_LOADER", yaml.SafeLoader)
    return str(request.param)


# -- valid definitions ------------------------------------------------------------------------


def test_valid_file_loads_every_field(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    extract = wf.stage("extract")
    assert (wf.id, wf.name, wf.description) == (
        "nightly-etl",
        "Nightly ETL",
        "pulls, checks, loads",
    )
    assert wf.path == str(tmp_path / "etl.yaml")
    assert extract == StageDefinition(
        name="extract",
        run="./extract.sh --since yesterday",
        timeout=3600.0,
        retries=2,
        kill_timeout=5.5,
        env={"REGION": "eu-west-1", "BATCH": "500", "DRY_RUN": "no"},
        cwd="data",
        needs=None,
        checklist=(),
        description="fetch the raw dumps",
    )
    assert wf.stage("review").checklist == ("row counts look sane", "no PII columns")


def test_valid_file_round_trips_through_to_dict_and_from_dict(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    snapshot = json.loads(json.dumps(wf.to_dict()))  # what a session stores
    assert WorkflowDefinition.from_dict(snapshot) == wf


def test_a_display_name_over_200_characters_is_refused_in_a_file_not_in_a_snapshot(
    tmp_path: Path,
) -> None:
    stages = "stages:\n  - name: a\n    run: 'true'\n"
    err = error_of(write(tmp_path, "wide.yaml", f"name: {'x' * 201}\n{stages}"))
    assert "name: a display name holds at most 200 characters, got 201" in str(err)
    assert load_workflow_file(write(tmp_path, "ok.yaml", f"name: {'x' * 200}\n{stages}")).name
    snapshot = {"id": "w", "name": "x" * 300, "stages": [{"name": "a", "run": "true"}]}
    assert len(WorkflowDefinition.from_dict(snapshot).name) == 300  # made before the limit


@pytest.mark.parametrize(
    "name",
    [
        "VC_PARAM_X",
        "VC_OUTPUT_A_B",
        "VC_SESSION_ID",
        "VC_STAGE",
        "VC_ATTEMPT",
        "VC_NOTIFY",
    ],
)
def test_a_stage_env_naming_a_variable_vc_sets_is_refused_at_its_line(
    tmp_path: Path, name: str
) -> None:
    text = f"stages:\n  - name: a\n    run: env\n    env:\n      OK: 1\n      {name}: x\n"
    err = error_of(write(tmp_path, "e.yaml", text))
    assert (err.line, err.key) == (6, f"stages[0].env.{name}")
    assert f"{name} is set by vc itself" in str(err)
    snapshot = {"id": "e", "stages": [{"name": "a", "run": "env", "env": {name: "x"}}]}
    assert WorkflowDefinition.from_dict(snapshot).stages[0].env == {name: "x"}  # made before


def test_env_names_of_the_users_own_are_kept(tmp_path: Path) -> None:
    text = (
        "stages:\n  - name: a\n    run: env\n"
        "    env: {VC_HOME: x, VCS: y, MY_VC_PARAM_X: z, VC_MATRIX_R: eu}\n"
    )
    env = load_workflow_file(write(tmp_path, "w.yaml", text)).stages[0].env
    assert env == {"VC_HOME": "x", "VCS": "y", "MY_VC_PARAM_X": "z", "VC_MATRIX_R": "eu"}


def test_a_stage_env_naming_a_key_of_its_own_matrix_is_refused(tmp_path: Path) -> None:
    text = (
        "stages:\n  - name: a\n    run: env\n    matrix: {size: [s, m]}\n"
        "    env: {VC_MATRIX_REGION: eu, VC_MATRIX_SIZE: xl}\n"
    )
    err = error_of(write(tmp_path, "m.yaml", text))
    assert (err.line, err.key) == (5, "stages[0].env.VC_MATRIX_SIZE")
    assert "the stage's matrix gives each instance its value" in str(err)


def test_definitions_built_in_code_are_taken_as_they_are() -> None:
    stage = StageDefinition("a", run="make", env={"VC_STAGE": "x"}, checklist=("y",))
    assert stage.env == {"VC_STAGE": "x"} and stage.checklist == ("y",)


def test_a_checklist_on_a_task_stage_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "stages:\n  - name: a\n    run: make\n    checklist: [tests green]\n"
    err = error_of(write(tmp_path, "c.yaml", text))
    assert (err.line, err.key) == (4, "stages[0].checklist")
    assert "checklist belongs to a manual gate (a stage without 'run')" in str(err)
    snapshot = {"id": "c", "stages": [{"name": "a", "run": "make", "checklist": ["x"]}]}
    assert WorkflowDefinition.from_dict(snapshot).stages[0].checklist == ("x",)


@pytest.mark.parametrize(
    ("setting", "why"),
    [
        ("timeout: 3", "a manual gate waits for approve with no deadline"),
        ("retries: 2", "a manual gate runs nothing, so nothing would apply it"),
        ("env: {A: b}", "a manual gate runs nothing"),
        ("cwd: build", "a manual gate runs nothing"),
        ("kill_timeout: 5", "a manual gate runs nothing"),
        ("stderr: merged", "a manual gate runs nothing"),
    ],
)
def test_a_setting_only_a_task_uses_is_refused_on_a_manual_gate_at_its_line(
    tmp_path: Path, setting: str, why: str
) -> None:
    text = f"stages:\n  - name: approve\n    checklist: [ok]\n    {setting}\n"
    err = error_of(write(tmp_path, "g.yaml", text))
    key = setting.split(":")[0]
    assert (err.line, err.key) == (4, f"stages[0].{key}")
    assert f"{key} belongs to a task stage (a stage with 'run'): {why}" in str(err)


def test_a_stages_stderr_is_warning_unless_merged(tmp_path: Path) -> None:
    text = "stages:\n  - name: a\n    run: make\n  - name: b\n    run: make\n    stderr: merged\n"
    wf = load_workflow_file(write(tmp_path, "s.yaml", text))
    assert [s.stderr for s in wf.stages] == ["warning", "merged"]


def test_an_unknown_stderr_mode_is_refused_at_its_line(tmp_path: Path) -> None:
    text = "stages:\n  - name: a\n    run: make\n    stderr: both\n"
    err = error_of(write(tmp_path, "s.yaml", text))
    assert (err.line, err.key) == (4, "stages[0].stderr")
    assert "expected one of 'warning' or 'merged', got 'both'" in str(err)


def test_a_gate_from_a_snapshot_keeps_what_it_was_given() -> None:
    snapshot = {"id": "g", "stages": [{"name": "approve", "kill_timeout": 5, "retries": 1}]}
    gate = WorkflowDefinition.from_dict(snapshot).stages[0]
    assert (gate.stage_type, gate.kill_timeout, gate.retries) == ("manual", 5, 1)


def test_stage_round_trips_through_to_dict_and_from_dict(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    for stage in wf.stages:
        assert StageDefinition.from_dict(json.loads(json.dumps(stage.to_dict()))) == stage


def test_definitions_are_hashable_despite_env_dict(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    assert len({wf, WorkflowDefinition.from_dict(wf.to_dict())}) == 1


def test_id_defaults_to_file_stem(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "backup.v2.yml", "stages:\n  - name: dump\n"))
    assert wf.id == "backup.v2"


def test_name_defaults_to_id(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "backup.yaml", "stages:\n  - name: dump\n"))
    assert wf.name == "backup"
    assert wf.description is None


def test_stage_defaults(tmp_path: Path) -> None:
    stage = load_workflow_file(write(tmp_path, "w.yaml", "stages:\n  - name: a\n")).stages[0]
    assert stage == StageDefinition(name="a")
    assert (stage.retries, stage.kill_timeout, stage.env, stage.needs) == (0, 10.0, {}, None)


def test_stage_without_run_is_a_manual_gate(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    assert [s.stage_type for s in wf.stages] == ["task", "manual", "task"]


def test_null_optional_values_mean_not_set(tmp_path: Path) -> None:
    text = "stages:\n  - name: a\n    timeout: ~\n    retries:\n    env:\n    needs:\n"
    assert load_workflow_file(write(tmp_path, "w.yaml", text)).stages[0] == StageDefinition("a")


def test_run_keeps_the_command_as_written_even_when_yaml_would_make_it_a_bool(
    tmp_path: Path,
) -> None:
    text = "stages:\n  - name: a\n    run: true\n  - name: b\n    run: 0x10\n"
    wf = load_workflow_file(write(tmp_path, "w.yaml", text))
    assert [s.run for s in wf.stages] == ["true", "0x10"]


def test_env_values_are_stringified_as_written(tmp_path: Path) -> None:
    text = (
        "stages:\n  - name: a\n    run: env\n"
        "    env: {A: yes, B: 007, C: 1.50, D: '', E: 2024-01-02}\n"
    )
    env = load_workflow_file(write(tmp_path, "w.yaml", text)).stages[0].env
    assert env == {"A": "yes", "B": "007", "C": "1.50", "D": "", "E": "2024-01-02"}


def test_needs_accepts_a_single_stage_name(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    assert wf.stage("review").needs == ("extract",)


def test_markup_in_names_and_descriptions_is_kept_literally(tmp_path: Path) -> None:
    text = 'name: "[bold red]Deploy[/]"\ndescription: "[link=x]y[/link]"\nstages:\n  - name: a\n'
    wf = load_workflow_file(write(tmp_path, "w.yaml", text))
    assert (wf.name, wf.description) == ("[bold red]Deploy[/]", "[link=x]y[/link]")


def test_merge_keys_share_settings_between_stages(tmp_path: Path) -> None:
    text = """\
        stages:
          - &defaults
            name: a
            run: make a
            timeout: 60
            retries: 3
          - <<: *defaults
            name: b
            run: make b
        """
    b = load_workflow_file(write(tmp_path, "w.yaml", text)).stage("b")
    assert (b.run, b.timeout, b.retries) == ("make b", 60.0, 3)


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"\xef\xbb\xbfstages:\n  - name: a\n")
    assert load_workflow_file(path).stages[0].name == "a"


def test_stage_lookup_raises_key_error_for_unknown_name(tmp_path: Path) -> None:
    wf = load_workflow_file(write(tmp_path, "etl.yaml", VALID))
    with pytest.raises(KeyError):
        wf.stage("nope")


# -- execution order --------------------------------------------------------------------------


def test_execution_order_honours_needs(tmp_path: Path) -> None:
    text = """\
        stages:
          - {name: report, needs: [load, audit]}
          - {name: load, needs: transform}
          - {name: extract}
          - {name: transform, needs: extract}
          - {name: audit}
        """
    wf = load_workflow_file(write(tmp_path, "w.yaml", text))
    order = wf.execution_order()
    assert order == ["extract", "transform", "load", "audit", "report"]
    for stage in wf.stages:
        assert all(order.index(need) < order.index(stage.name) for need in stage.needs or ())


def test_execution_order_without_needs_is_file_order(tmp_path: Path) -> None:
    text = "stages:\n  - name: c\n  - name: a\n  - name: b\n"
    assert load_workflow_file(write(tmp_path, "w.yaml", text)).execution_order() == ["c", "a", "b"]


def test_execution_order_of_a_hand_built_cycle_raises() -> None:
    wf = WorkflowDefinition(
        id="w",
        name="w",
        stages=(StageDefinition("a", needs=("b",)), StageDefinition("b", needs=("a",))),
    )
    with pytest.raises(WorkflowError, match="a -> b -> a"):
        wf.execution_order()


def test_long_dependency_chain_does_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    lines = ["stages:", "  - name: s0"]
    lines += [f"  - {{name: s{i}, needs: s{i - 1}}}" for i in range(1, 3000)]
    wf = load_workflow_file(write(tmp_path, "w.yaml", "\n".join(lines) + "\n"))
    assert wf.execution_order()[-1] == "s2999"


# -- errors: one line with path, line and key -------------------------------------------------

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
stages: [*i]
"""

# (id, file text, expected line, expected key, fragment of the problem)
HOSTILE: list[tuple[str, str, int | None, str | None, str]] = [
    (
        "retries-not-an-integer",
        "stages:\n  - name: a\n  - name: b\n    retries: three\n",
        4,
        "stages[1].retries",
        "expected an integer >= 0, got 'three'",
    ),
    (  # a command commented out must not turn the stage into a manual gate
        "run-left-empty",
        "stages:\n  - name: a\n    run:  # make build\n",
        3,
        "stages[0].run",
        "expected a shell command, got nothing (a manual gate has no 'run')",
    ),
    ("run-null", "stages:\n  - name: a\n    run: ~\n", 3, "stages[0].run", "got nothing"),
    ("retries-negative", "stages:\n  - name: a\n    retries: -1\n", 3, "stages[0].retries", ">= 0"),
    ("retries-yes", "stages:\n  - name: a\n    retries: yes\n", 3, "stages[0].retries", "boolean"),
    ("retries-float", "stages:\n  - name: a\n    retries: 1.5\n", 3, "stages[0].retries", "1.5"),
    ("retries-huge", "stages:\n  - name: a\n    retries: 100000\n", 3, "stages[0].retries", "most"),
    # YAML 1.1 reads these as other numbers than written: refused, as in a parameter
    (
        "retries-with-a-leading-zero",  # octal: 10
        "stages:\n  - name: a\n    retries: 012\n",
        3,
        "stages[0].retries",
        "write the integer in plain decimal digits, got 012 (YAML would read it as 10)",
    ),
    (
        "timeout-in-sexagesimal",  # 1*60 + 30
        "stages:\n  - name: a\n    timeout: 1:30\n",
        3,
        "stages[0].timeout",
        "write the number in plain decimal digits, got 1:30 (YAML would read it as 90)",
    ),
    (
        "kill-timeout-in-hex",
        "stages:\n  - name: a\n    kill_timeout: 0x10\n",
        3,
        "stages[0].kill_timeout",
        "got 0x10 (YAML would read it as 16)",
    ),
    (
        "max-parallel-with-a-leading-zero",
        "max_parallel: 04\nstages:\n  - name: a\n",
        1,
        "max_parallel",
        "got 04 (YAML would read it as 4)",
    ),
    (
        "retries-too-many-digits",
        "stages:\n  - name: a\n    retries: " + "9" * 5000 + "\n",
        3,
        "stages[0].retries",
        "too large",
    ),
    ("timeout-negative", "stages:\n  - name: a\n    timeout: -1\n", 3, "stages[0].timeout", "> 0"),
    ("timeout-zero", "stages:\n  - name: a\n    timeout: 0\n", 3, "stages[0].timeout", "> 0"),
    ("timeout-yes", "stages:\n  - name: a\n    timeout: yes\n", 3, "stages[0].timeout", "boolean"),
    ("timeout-quoted", 'stages:\n  - name: a\n    timeout: "60"\n', 3, "stages[0].timeout", "'60'"),
    ("timeout-nan", "stages:\n  - name: a\n    timeout: .nan\n", 3, "stages[0].timeout", "> 0"),
    ("timeout-inf", "stages:\n  - name: a\n    timeout: .inf\n", 3, "stages[0].timeout", "at most"),
    (
        "kill-timeout-0",
        "stages:\n  - {name: a, kill_timeout: 0}\n",
        2,
        "stages[0].kill_timeout",
        ">",
    ),
    ("env-a-list", "stages:\n  - name: a\n    env: [1]\n", 3, "stages[0].env", "got a list"),
    (
        "env-value-a-mapping",
        "stages:\n  - name: a\n    env:\n      A: {b: 1}\n",
        4,
        "stages[0].env.A",
        "got a mapping",
    ),
    ("env-value-null", "stages:\n  - name: a\n    env: {A: }\n", 3, "stages[0].env.A", "null"),
    (
        "env-name-equals",
        "stages:\n  - name: a\n    env: {A=B: 1}\n",
        3,
        "stages[0].env.A=B",
        "name",
    ),
    ("stages-a-mapping", "id: w\nstages: {}\n", 2, "stages", "expected a list of stages"),
    ("stages-empty", "stages: []\n", 1, "stages", "at least one stage"),
    ("stages-null", "name: x\nstages:\n", 2, "stages", "got null"),
    ("stages-missing", "name: x\n", 1, None, "missing required key 'stages'"),
    ("stage-a-string", "stages:\n  - extract\n", 2, "stages[0]", "- name: extract"),
    ("stage-a-list", "stages:\n  - [a]\n", 2, "stages[0]", "got a list"),
    ("stage-without-name", "stages:\n  - run: x\n", 2, "stages[0]", "missing required key 'name'"),
    (
        "unknown-stage-key",
        "stages:\n  - name: a\n    retry: 2\n",
        3,
        "stages[0].retry",
        "unknown key 'retry' (did you mean 'retries'?) in a stage; allowed: checklist, cwd,",
    ),
    (
        "unknown-top-level-key",
        "stages:\n  - name: a\nowner: me\n",
        3,
        "owner",
        "unknown key 'owner' at the top level; allowed: description, id, name, stages",
    ),
    (
        "needs-unknown-stage",
        "stages:\n  - name: load\n  - name: a\n    needs: [load, lod]\n",
        4,
        "stages[1].needs[1]",
        "unknown stage 'lod'",
    ),
    ("needs-itself", "stages:\n  - name: a\n    needs: a\n", 3, "stages[0].needs", "needs itself"),
    (
        "needs-cycle",
        "stages:\n  - {name: a, needs: c}\n  - {name: b, needs: a}\n  - {name: c, needs: b}\n",
        2,
        "stages[0].needs",
        "dependency cycle: a -> c -> b -> a",
    ),
    ("needs-a-mapping", "stages:\n  - {name: a, needs: {b: 1}}\n", 2, "stages[0].needs", "mapping"),
    (
        "needs-cycle-through-an-implicit-order",
        "stages:\n  - name: a\n    needs: [c]\n  - name: b\n    needs: a\n  - name: c\n"
        "    needs: [b]\n",
        3,
        "stages[0].needs[0]",
        "dependency cycle: a -> c -> b -> a",
    ),
    (
        "matrix-values-empty",
        "stages:\n  - name: a\n    matrix: {size: []}\n",
        3,
        "stages[0].matrix.size",
        "expected a non-empty list of values, got an empty list",
    ),
    (
        "matrix-values-a-scalar",
        "stages:\n  - name: a\n    matrix: {size: small}\n",
        3,
        "stages[0].matrix.size",
        "expected a non-empty list of values, got 'small'",
    ),
    (
        "matrix-value-a-mapping",
        "stages:\n  - name: a\n    matrix:\n      size: [small, {x: 1}]\n",
        4,
        "stages[0].matrix.size[1]",
        "expected a string, number or boolean, got a mapping",
    ),
    (
        "matrix-value-null",
        "stages:\n  - name: a\n    matrix:\n      size: [small, ~]\n",
        4,
        "stages[0].matrix.size[1]",
        "expected a string, number or boolean, got null",
    ),
    (
        "matrix-value-a-list",
        "stages:\n  - name: a\n    matrix:\n      size: [[1]]\n",
        4,
        "stages[0].matrix.size[0]",
        "got a list",
    ),
    (
        "matrix-a-list",
        "stages:\n  - name: a\n    matrix: [small, large]\n",
        3,
        "stages[0].matrix",
        "expected a mapping of key: [values], got a list",
    ),
    (
        "matrix-over-256-instances",
        "stages:\n  - name: a\n    matrix:\n      a: [1, 2, 3, 4, 5, 6, 7, 8]\n"
        "      b: [1, 2, 3, 4, 5, 6, 7, 8]\n      c: [1, 2, 3, 4, 5]\n",
        4,
        "stages[0].matrix",
        "the matrix makes more than 256 instances (8 x 8 x 5 so far)",
    ),
    (
        "matrix-key-not-an-identifier",
        "stages:\n  - name: a\n    matrix:\n      img-size: [a]\n",
        4,
        "stages[0].matrix.img-size",
        "matrix key 'img-size' is not an identifier",
    ),
    (
        "matrix-key-starting-with-a-digit",
        "stages:\n  - name: a\n    matrix:\n      1size: [a]\n",
        4,
        "stages[0].matrix.1size",
        "matrix key '1size' is not an identifier",
    ),
    (
        "matrix-value-with-a-comma",
        "stages:\n  - name: a\n    matrix:\n      size: [small, 'a,b']\n",
        4,
        "stages[0].matrix.size[1]",
        "matrix value 'a,b' must be non-empty, without '[', ']', ',', '='",
    ),
    (
        "matrix-value-with-an-equals-sign",
        "stages:\n  - name: a\n    matrix:\n      size: [small, a=b]\n",
        4,
        "stages[0].matrix.size[1]",
        "matrix value 'a=b' must be",
    ),
    (
        "matrix-keys-the-same-upper-cased",
        "stages:\n  - name: a\n    matrix:\n      size: [a]\n      SIZE: [b]\n",
        5,
        "stages[0].matrix.SIZE",
        "matrix keys 'size' and 'SIZE' are the same variable VC_MATRIX_SIZE",
    ),
    (
        "matrix-value-twice",
        "stages:\n  - name: a\n    matrix:\n      size: [a, b, a]\n",
        4,
        "stages[0].matrix.size[2]",
        "duplicate matrix value 'a'",
    ),
    ("max-parallel-0", "max_parallel: 0\nstages:\n  - name: a\n", 1, "max_parallel", ">= 1, got 0"),
    (
        "max-parallel-quoted",
        'max_parallel: "4"\nstages:\n  - name: a\n',
        1,
        "max_parallel",
        "got '4'",
    ),
    (
        "fail-fast-quoted",
        'fail_fast: "yes"\nstages:\n  - name: a\n',
        1,
        "fail_fast",
        "expected true or false, got 'yes'",
    ),
    (
        "duplicate-stage-names",
        "stages:\n  - name: a\n  - name: b\n  - name: a\n",
        4,
        "stages[2].name",
        "duplicate stage name 'a'; already used by stages[0] at line 2",
    ),
    (
        "duplicate-key",
        "stages:\n  - name: a\n    retries: 1\n    retries: 2\n",
        4,
        "stages[0].retries",
        "duplicate key (first at line 3)",
    ),
    ("stage-name-traversal", "stages:\n  - name: ../x\n", 2, "stages[0].name", "'../x'"),
    ("stage-name-space", "stages:\n  - name: a b\n", 2, "stages[0].name", "invalid stage name"),
    ("id-absolute-path", "id: /etc/passwd\nstages:\n  - name: a\n", 1, "id", "not a path"),
    ("id-empty-string", "id: ''\nstages:\n  - name: a\n", 1, "id", "must not be empty"),
    ("id-a-list", "id: [a]\nstages:\n  - name: a\n", 1, "id", "expected a string"),
    (
        "checklist-a-mapping",
        "stages:\n  - {name: a, checklist: {x: 1}}\n",
        2,
        "stages[0].checklist",
        "list",
    ),
    ("cwd-a-list", "stages:\n  - {name: a, cwd: [x]}\n", 2, "stages[0].cwd", "expected a string"),
    ("run-empty", "stages:\n  - {name: a, run: ''}\n", 2, "stages[0].run", "non-empty"),
    ("top-level-a-list", "- name: a\n", 1, None, "expected a mapping at the top level"),
    ("top-level-a-scalar", "just text\n", 1, None, "expected a mapping at the top level"),
    ("empty-file", "", None, None, "empty file"),
    # told where the unclosed [ or " began, never past the last line
    ("yaml-syntax-error", "stages:\n  - name: a\n    run: [x\n", 3, None, "invalid YAML"),
    ("yaml-unclosed-quote", 'stages:\n  - name: a\n    run: "x\n', 3, None, "invalid YAML"),
    (
        "yaml-tab-indent",
        "stages:\n  - name: a\n\trun: x\n",
        3,
        None,
        "a tab where YAML expects spaces",
    ),
    (
        "two-documents",
        "stages: [{name: a}]\n---\nstages: [{name: b}]\n",
        2,
        None,
        "single document",
    ),
    ("undefined-alias", "stages:\n  - name: *nope\n", 2, None, "undefined alias"),
    (
        "python-tag",
        "stages:\n  - name: a\n    run: !!python/object/apply:os.system [id]\n",
        3,
        "stages[0].run",
        "unsupported YAML tag",
    ),
    ("custom-tag", "stages:\n  - name: !shout a\n", 2, "stages[0].name", "unsupported YAML tag"),
    ("nul-escape", 'stages:\n  - name: a\n    run: "echo \\0"\n', 3, "stages[0].run", "NUL"),
    ("control-char-in-file", "stages:\n  - name: a\x1b[31m\n", 2, None, "'\\x1b'"),
    ("recursive-alias", "stages: &s\n  - name: a\n  - *s\n", 1, "stages[1]", "recursive alias"),
    ("merge-a-scalar", "stages:\n  - name: a\n    <<: 1\n", 3, "stages[0]", "merge"),
    ("key-a-list", "stages:\n  - name: a\n    [x]: 1\n", 3, "stages[0]", "key must be"),
    ("billion-laughs", BILLION_LAUGHS, 6, "f", "counting what aliases repeat"),
    ("nested-100-deep", "stages: " + "[" * 100 + "]" * 100 + "\n", 1, "stages[0][0]…", "nested"),
    ("nested-5000-deep", "stages: " + "[" * 5000 + "]" * 5000 + "\n", 1, None, "nest"),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [case[1:] for case in HOSTILE],
    ids=[case[0] for case in HOSTILE],
)
def test_hostile_file_gives_one_line_error_with_path_line_and_key(
    tmp_path: Path, yaml_loader: str, text: str, line: int | None, key: str | None, fragment: str
) -> None:
    path = tmp_path / "workflows" / "etl.yaml"
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    err = error_of(path)
    message = str(err)
    assert (err.path, err.line) == (str(path), line)
    if key is not None and key.endswith("…"):  # a fuse blows deep inside: check the start
        assert err.key is not None and err.key.startswith(key[:-1])
        key = err.key
    assert err.key == key
    prefix = f"{path}:{line}: " if line is not None else f"{path}: "
    assert message.startswith(prefix + (f"{key}: " if key else ""))
    assert fragment in message
    assert "\n" not in message and message.isprintable()


def test_error_shows_control_characters_escaped_never_raw(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "w.yaml", 'id: "a\\x1b[2Jb\\nc"\nstages:\n  - name: a\n'))
    assert str(err) == (
        f"{tmp_path / 'w.yaml'}:1: id: invalid workflow id 'a\\x1b[2Jb\\nc': may contain only "
        "ASCII letters, digits, '.', '_' and '-', not '\\x1b', '[', '\\n'"
    )


def test_a_stage_name_with_bad_characters_names_each_of_them(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "w.yaml", "stages:\n  - name: 'deploy: prod/eu'\n"))
    assert str(err) == (
        f"{tmp_path / 'w.yaml'}:2: stages[0].name: invalid stage name 'deploy: prod/eu': may "
        "contain only ASCII letters, digits, '.', '_' and '-', not ':', ' ', '/' "
        "(a name, not a path)"
    )


def test_unknown_key_with_a_newline_stays_one_line(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "w.yaml", '"bad\\nkey": 1\nstages:\n  - name: a\n'))
    assert "\n" not in str(err)
    assert "'bad\\nkey'" in str(err)


def test_invalid_file_name_stem_is_reported_when_no_id_is_set(tmp_path: Path) -> None:
    err = error_of(write(tmp_path, "my flow.yaml", "stages:\n  - name: a\n"))
    assert (err.key, err.line) == ("id", None)
    assert "invalid workflow id 'my flow'" in str(err)
    assert "file name" in str(err)


def test_nul_byte_in_file_is_refused_with_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"stages:\n  - name: a\x00\n")
    err = error_of(path)
    assert (err.path, err.line) == (str(path), 2)
    assert "NUL byte" in str(err)


def test_invalid_utf8_is_refused_with_path_and_line(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_bytes(b"name: ok\nstages:\n  - name: caf\xe9\n")
    err = error_of(path)
    assert (err.path, err.line) == (str(path), 3)
    assert "invalid UTF-8" in str(err)


def test_file_over_1_mib_is_refused_without_parsing(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    # Invalid YAML on line 1: had it been parsed, the error would be a syntax error instead.
    path.write_bytes(b"[: :\n" + b"# padding\n" * (2 * 1024 * 1024 // 10))
    err = error_of(path)
    assert path.stat().st_size > 2 * 1024 * 1024 - 100
    assert err.path == str(path)
    assert "file too large" in str(err)


def test_text_over_1_mib_is_refused() -> None:
    with pytest.raises(WorkflowError, match="file too large"):
        load_workflow_text("#" * (1024 * 1024 + 1), path="x.yaml", default_id="x")


def test_100_kb_alias_bomb_is_refused_by_the_node_fuse(tmp_path: Path, yaml_loader: str) -> None:
    # Four levels of 5,000 aliases each would expand to 10 * 5000**4 values.
    levels = ["l0: &l0 [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]"]
    for level in range(1, 5):
        levels.append(f"l{level}: &l{level} [" + ", ".join([f"*l{level - 1}"] * 5000) + "]")
    text = "stages:\n  - name: a\n" + "\n".join(levels) + "\n"
    path = write(tmp_path, "bomb.yaml", text)
    assert 80_000 < path.stat().st_size < 1024 * 1024
    err = error_of(path)
    assert f"more than {workflows.MAX_NODES:,} values, counting what aliases repeat" in str(err)


def test_fifo_is_refused_instead_of_blocking(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    err = error_of(fifo)
    assert "not a regular file" in str(err)


def test_text_without_id_or_default_id_is_refused() -> None:
    with pytest.raises(WorkflowError, match="missing required key 'id'"):
        load_workflow_text("stages:\n  - name: a\n")


# -- the error type ---------------------------------------------------------------------------


def test_workflow_error_renders_path_line_key_and_problem() -> None:
    err = WorkflowError(
        "expected an integer >= 0, got 'three'",
        path="workflows/etl.yaml",
        line=7,
        key="stages[1].retries",
    )
    assert (
        str(err) == "workflows/etl.yaml:7: stages[1].retries: expected an integer >= 0, got 'three'"
    )
    assert str(WorkflowError("boom")) == "boom"
    assert str(WorkflowError("boom", line=3, key="id")) == "line 3: id: boom"


def test_workflow_error_survives_pickling_with_its_location() -> None:
    err = WorkflowError("boom", path="w.yaml", line=2, key="stages")
    copy = pickle.loads(pickle.dumps(err))
    assert (str(copy), copy.path, copy.line, copy.key) == (str(err), "w.yaml", 2, "stages")


# -- snapshots (from_dict) --------------------------------------------------------------------


def test_from_dict_rejects_a_corrupt_snapshot_with_the_key_path() -> None:
    snapshot = {"id": "w", "name": "w", "stages": [{"name": "a", "retries": "x"}]}
    with pytest.raises(WorkflowError) as info:
        WorkflowDefinition.from_dict(snapshot)
    assert (info.value.key, info.value.line) == ("stages[0].retries", None)


def test_from_dict_ignores_keys_written_by_a_newer_version() -> None:
    snapshot = {"id": "w", "name": "w", "future": 1, "stages": [{"name": "a", "gpu": True}]}
    assert WorkflowDefinition.from_dict(snapshot).stages == (StageDefinition("a"),)


# -- identifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["a", "nightly-etl", "v1.2_final", "0", "A" * 128])
def test_validate_identifier_accepts_safe_names(value: str) -> None:
    assert validate_identifier(value, "workflow id") == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "../x",
        "..",
        "a..b",
        "/etc/passwd",
        "a/b",
        "a\\b",
        ".hidden",
        "-flag",
        "a b",
        "a\x00b",
        "a\nb",
        "a\x1b[31m",
        "caf\u00e9",
        "a\u202eb",
        "a" * 129,
    ],
)
def test_validate_identifier_rejects_unsafe_names_showing_them_escaped(value: str) -> None:
    with pytest.raises(WorkflowError) as info:
        validate_identifier(value, "session id")
    message = str(info.value)
    assert message.startswith("invalid session id ")
    assert message.isprintable()
    assert repr(value)[1:-1][:60] in message


# -- discovery --------------------------------------------------------------------------------


def test_discovery_keeps_good_files_when_one_is_bad(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "stages:\n  - name: x\n")
    bad = write(tmp_path, "b.yaml", "stages:\n  - name: x\n    retries: lots\n")
    write(tmp_path, "c.yml", "stages:\n  - name: x\n")
    definitions, errors = discover_workflows(tmp_path)
    assert [d.id for d in definitions] == ["a", "c"]
    assert [(e.path, e.line, e.key) for e in errors] == [(str(bad), 3, "stages[0].retries")]


def test_discovery_reads_yaml_and_yml_sorted_by_name_and_skips_other_files(tmp_path: Path) -> None:
    for name in ("zeta.yml", "alpha.yaml", "mid.yaml"):
        write(tmp_path, name, "stages:\n  - name: x\n")
    write(tmp_path, "notes.txt", "not a workflow")
    write(tmp_path, ".#alpha.yaml", "editor lock file")
    (tmp_path / "dir.yaml").mkdir()
    definitions, errors = discover_workflows(tmp_path)
    assert [d.id for d in definitions] == ["alpha", "mid", "zeta"]
    assert errors == []


def test_discovery_of_a_missing_directory_is_empty(tmp_path: Path) -> None:
    assert discover_workflows(tmp_path / "nope") == ([], [])


def test_discovery_lists_no_file_of_a_duplicate_id_and_names_the_others_in_each_error(
    tmp_path: Path,
) -> None:
    """Which one would win depends on nothing the user chose (file names), and running
    that id is refused: none is listed as usable."""
    first = write(tmp_path, "a.yaml", "id: etl\nstages:\n  - name: x\n")
    second = write(tmp_path, "b.yaml", "name: other\nid: etl\nstages:\n  - name: y\n")
    write(tmp_path, "c.yaml", "stages:\n  - name: z\n")
    definitions, errors = discover_workflows(tmp_path)
    assert [d.id for d in definitions] == ["c"]
    assert [(e.path, e.line, e.key) for e in errors] == [
        (str(first), 1, "id"),
        (str(second), 2, "id"),
    ]
    assert f"duplicate workflow id 'etl': also defined in {second}" in str(errors[0])
    assert f"duplicate workflow id 'etl': also defined in {first}" in str(errors[1])


def test_discovery_reads_an_extension_written_in_capitals(tmp_path: Path) -> None:
    write(tmp_path, "Upper.YML", "stages:\n  - name: x\n")
    definitions, errors = discover_workflows(tmp_path)
    assert ([d.id for d in definitions], errors) == (["Upper"], [])
    assert find_workflow(tmp_path, "Upper").id == "Upper"


def test_discovery_does_not_list_a_workflow_whose_id_a_broken_file_claims_too(
    tmp_path: Path,
) -> None:
    """Running that id answers with the broken file's error: listing it as usable would
    contradict the run."""
    good = write(tmp_path, "etl.yaml", "stages:\n  - name: x\n")
    broken = write(tmp_path, "etl.yml", "stages: [\n")
    definitions, errors = discover_workflows(tmp_path)
    assert definitions == []
    assert {e.path for e in errors} == {str(good), str(broken)}
    assert f"duplicate workflow id 'etl': also defined in {broken}" in " ".join(map(str, errors))
    with pytest.raises(WorkflowError):
        find_workflow(tmp_path, "etl")


def test_discovery_treats_same_stem_yaml_and_yml_as_duplicates(tmp_path: Path) -> None:
    write(tmp_path, "etl.yaml", "stages:\n  - name: x\n")
    write(tmp_path, "etl.yml", "stages:\n  - name: x\n")
    definitions, errors = discover_workflows(tmp_path)
    assert definitions == [] and len(errors) == 2
    assert all("duplicate workflow id 'etl'" in str(e) for e in errors)


# -- find_workflow ----------------------------------------------------------------------------


def test_find_workflow_returns_the_definition_with_that_id(tmp_path: Path) -> None:
    write(tmp_path, "etl.yaml", VALID)
    write(tmp_path, "other.yaml", "stages:\n  - name: x\n")
    assert find_workflow(tmp_path, "nightly-etl").stage("load").needs == ("review", "extract")


def test_find_unknown_workflow_lists_the_known_ones(tmp_path: Path) -> None:
    write(tmp_path, "b.yaml", "stages:\n  - name: x\n")
    write(tmp_path, "a.yaml", "stages:\n  - name: x\n")
    with pytest.raises(WorkflowError) as info:
        find_workflow(tmp_path, "nope")
    assert str(info.value) == "unknown workflow 'nope'; known: a, b"


def test_find_unknown_workflow_suggests_the_close_id(tmp_path: Path) -> None:
    write(tmp_path, "pipeline.yaml", "stages:\n  - name: x\n")
    with pytest.raises(WorkflowError) as info:
        find_workflow(tmp_path, "pipline")
    assert (
        str(info.value) == "unknown workflow 'pipline' (did you mean 'pipeline'?); known: pipeline"
    )


def test_find_unknown_workflow_names_the_file_of_that_name_declaring_another_id(
    tmp_path: Path,
) -> None:
    write(tmp_path, "x.yaml", "id: other\nstages:\n  - name: x\n")
    with pytest.raises(WorkflowError) as info:
        find_workflow(tmp_path, "x")
    assert str(info.value).endswith("known: other (x.yaml declares id 'other')")


def test_find_unknown_workflow_says_how_many_files_do_not_load(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "stages:\n  - name: x\n")
    write(tmp_path, "b.yaml", "stages: [\n")
    write(tmp_path, "c.yaml", "stages: 3\n")
    with pytest.raises(WorkflowError) as info:
        find_workflow(tmp_path, "nope")
    assert str(info.value) == (
        "unknown workflow 'nope'; known: a; 2 files in the workflows directory do not load "
        "('vc flow list' shows why)"
    )


def test_find_workflow_validates_the_id_first(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"invalid workflow id '\.\./etc'"):
        find_workflow(tmp_path, "../etc")


def test_find_workflow_raises_the_matching_files_own_error(tmp_path: Path) -> None:
    bad = write(tmp_path, "etl.yaml", "stages:\n  - name: a\n    timeout: soon\n")
    write(tmp_path, "other.yaml", "stages:\n  - name: x\n")
    with pytest.raises(WorkflowError) as info:
        find_workflow(tmp_path, "etl")
    assert (info.value.path, info.value.line, info.value.key) == (str(bad), 3, "stages[0].timeout")


def test_find_workflow_matches_a_malformed_file_by_its_declared_id(tmp_path: Path) -> None:
    bad = write(tmp_path, "file.yaml", "id: declared\nstages: {}\n")
    with pytest.raises(WorkflowError) as info:
        find_workflow(tmp_path, "declared")
    assert (info.value.path, info.value.key) == (str(bad), "stages")


def test_find_workflow_refuses_to_pick_between_two_files_with_the_same_id(tmp_path: Path) -> None:
    write(tmp_path, "a.yaml", "id: etl\nstages:\n  - name: x\n")
    write(tmp_path, "b.yaml", "id: etl\nstages:\n  - name: y\n")
    with pytest.raises(WorkflowError, match="duplicate workflow id 'etl'"):
        find_workflow(tmp_path, "etl")


def test_an_unknown_workflow_in_a_missing_directory_names_the_directory(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match=r"there is no workflows directory .*missing$"):
        find_workflow(tmp_path / "missing", "etl")
