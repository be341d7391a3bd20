"""`vc flow run` and stages in parallel: ``--max-parallel N`` for a new session, and
``WORKFLOW:STAGE[key=value,…]`` for one instance of a matrix stage, each checked before
anything is created."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from .helpers import create_session, one_error_line, run, snapshot, store


def definition_of(workspace: Path, sid: str) -> dict[str, Any]:
    from store.queries import get_session_view

    with store(workspace) as db:
        view = get_session_view(db, sid)
        assert view is not None and view.definition is not None
        return view.definition


def no_sessions(workspace: Path) -> bool:
    return snapshot(workspace)["flow_sessions"] == []


# -- --max-parallel ------------------------------------------------------------------------------


def test_max_parallel_is_stored_with_the_new_session_for_every_runner_of_it(
    workspace: Path, thumbs: str
) -> None:
    from store.graph import max_parallel

    result = run("flow", "run", thumbs, "--queue", "--max-parallel", "2")
    assert result.code == 0, result.err
    definition = definition_of(workspace, result.out.strip())
    assert definition["max_parallel"] == 2 and max_parallel(definition) == 2


def test_without_max_parallel_a_session_takes_the_workflows(
    workspace: Path, thumbs: str, cli
) -> None:
    from store.graph import max_parallel

    result = cli("flow", "run", thumbs, "--queue")
    assert result.code == 0, result.err
    assert max_parallel(definition_of(workspace, result.out.strip())) == 4


def test_show_says_how_many_stages_the_session_runs_at_once(workspace: Path, thumbs: str) -> None:
    """What `--max-parallel` a session got."""
    made = run("flow", "run", thumbs, "--queue", "--max-parallel", "2")
    shown = run("flow", "session", "show", made.out.strip())
    assert "parallel:  up to 2 stages at once; a failure stops the rest" in shown.out.splitlines()

    one = run("flow", "run", thumbs, "--queue", "--max-parallel", "1")
    shown = run("flow", "session", "show", one.out.strip())
    assert "parallel:  up to 1 stage at once; a failure stops the rest" in shown.out.splitlines()


def test_show_and_status_json_carry_how_the_session_runs_its_stages(
    workspace: Path, thumbs: str
) -> None:
    import json

    (workspace / "workflows" / "free.yaml").write_text(
        "fail_fast: false\nstages:\n  - {name: a, run: 'true'}\n  - {name: b, run: 'true'}\n"
    )
    limited = run("flow", "run", thumbs, "--queue", "--max-parallel", "2").out.strip()
    free = run("flow", "run", "free", "--queue").out.strip()
    for command in (("session", "show"), ("status",)):
        got = [json.loads(run("flow", *command, sid, "--json").out) for sid in (limited, free)]
        assert [(d["max_parallel"], d["fail_fast"]) for d in got] == [(2, True), (None, False)]


def test_show_says_a_session_without_a_limit_runs_as_many_stages_as_its_runner_has_cores(
    workspace: Path,
) -> None:
    import os

    (workspace / "workflows" / "free.yaml").write_text(
        "fail_fast: false\nstages:\n  - {name: a, run: 'true'}\n  - {name: b, run: 'true'}\n"
    )
    made = run("flow", "run", "free", "--queue")
    shown = run("flow", "session", "show", made.out.strip())
    expected = (
        f"parallel:  up to the runner's cores ({os.cpu_count()} here) at once; "
        "branches finish after a failure"
    )
    assert expected in shown.out.splitlines()


@pytest.mark.parametrize("value", ["0", "-3", "1025"])
def test_a_max_parallel_out_of_range_is_a_usage_error_and_creates_nothing(
    workspace: Path, thumbs: str, value: str
) -> None:
    result = run("flow", "run", thumbs, "--max-parallel", value)
    assert result.code == 2
    assert f"--max-parallel {value}: expected a number of stages from 1 to 1024" in (
        one_error_line(result)
    )
    assert result.out == "" and no_sessions(workspace)


def test_max_parallel_for_an_existing_session_is_refused_and_changes_nothing(
    workspace: Path, thumbs: str
) -> None:
    sid = create_session(workspace, thumbs)
    before = snapshot(workspace)
    result = run("flow", "run", thumbs, "--session", sid, "--max-parallel", "2")
    assert result.code == 2
    assert "a session keeps the value it was created with" in one_error_line(result)
    assert snapshot(workspace) == before
    assert definition_of(workspace, sid)["max_parallel"] == 4  # the workflow's, as created


# -- WORKFLOW:STAGE[key=value,…] -----------------------------------------------------------------


def test_an_instance_named_with_its_keys_in_any_order_runs_that_instance_only(
    workspace: Path, thumbs: str
) -> None:
    result = run("flow", "run", f"{thumbs}:resize[format=webp,size=large]")
    assert result.code == 0, result.err
    assert "ran resize[size=large,format=webp] only" in result.out
    from store.queries import list_sessions

    with store(workspace) as db:
        view = list_sessions(db, limit=1)[0]
    ran = {s.name: s.status for s in view.stages if s.status != "PENDING"}
    assert ran == {"resize[size=large,format=webp]": "COMPLETED"}


def test_an_unknown_instance_is_refused_naming_the_instances_and_creates_nothing(
    workspace: Path, thumbs: str
) -> None:
    result = run("flow", "run", f"{thumbs}:resize[size=huge,format=png]")
    assert result.code == 1
    assert one_error_line(result) == (
        "vc: error: workflow 'thumbs' has no instance 'resize[size=huge,format=png]'; "
        "instances: resize[size=small,format=png], resize[size=small,format=webp], "
        "resize[size=large,format=png], resize[size=large,format=webp]"
    )
    assert no_sessions(workspace)


def test_an_unknown_stage_with_an_instance_is_refused_like_an_unknown_stage(
    workspace: Path, thumbs: str
) -> None:
    result = run("flow", "run", f"{thumbs}:resise[size=small,format=png]")
    assert result.code == 1
    assert one_error_line(result).endswith(
        "workflow 'thumbs' has no stage 'resise' (did you mean 'resize'?); "
        "stages: fetch, resize, review, publish"
    )
    assert no_sessions(workspace)


@pytest.mark.parametrize(
    "stage", ["resize[size=small", "resize[size]", "resize[size=a,size=b]", "a:b"]
)
def test_a_malformed_stage_or_instance_is_a_usage_error_and_creates_nothing(
    workspace: Path, thumbs: str, stage: str
) -> None:
    result = run("flow", "run", f"{thumbs}:{stage}")
    assert result.code == 2
    assert repr(stage) in one_error_line(result)
    assert no_sessions(workspace)


@pytest.mark.parametrize("target", ["nosuch:a b", "nosuch:a:b", "nosuch:x[size=1"])
def test_a_malformed_stage_is_a_usage_error_before_the_workflow_is_looked_up(
    workspace: Path, target: str
) -> None:
    result = run("flow", "run", target)
    assert result.code == 2
    assert one_error_line(result).startswith("vc: error: invalid stage ")
    assert no_sessions(workspace)


def test_an_instance_a_session_does_not_have_is_refused_and_changes_nothing(
    workspace: Path, thumbs: str
) -> None:
    sid = create_session(workspace, thumbs)
    before = snapshot(workspace)
    result = run("flow", "run", f"{thumbs}:resize[size=huge,format=png]", "--session", sid)
    assert result.code == 1
    assert f"session {sid[:12]} has no instance 'resize[size=huge,format=png]'" in (
        one_error_line(result)
    )
    assert snapshot(workspace) == before
