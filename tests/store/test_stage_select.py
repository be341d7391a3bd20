"""store.stage_select: what `vc flow run WORKFLOW:STAGE[key=value,…]` runs, checked against
the stage rows before anything is created."""

from __future__ import annotations

from typing import Any

import pytest

from store.errors import InvalidStageName, StageNotFound
from store.graph import expand
from store.stage_select import parse_stage, select_stage

SNAPSHOT = {
    "fail_fast": True,
    "stages": [
        {"name": "fetch", "run": "f"},
        {
            "name": "resize",
            "run": "r",
            "matrix": {"size": ["small", "medium", "large"], "format": ["png", "webp", "avif"]},
        },
        {"name": "review"},
    ],
}
ROWS: list[tuple[str, dict[str, Any]]] = [(r["name"], r["config"]) for r in expand(SNAPSHOT)]
OWNER = "workflow 'thumbs'"


def refusal(spec: str) -> StageNotFound:
    with pytest.raises(StageNotFound) as info:
        select_stage(spec, ROWS, OWNER)
    return info.value


def test_a_stage_name_is_run_as_is() -> None:
    assert select_stage("fetch", ROWS, OWNER) == "fetch"


def test_a_matrix_stage_by_its_name_selects_every_instance() -> None:
    assert select_stage("resize", ROWS, OWNER) == "resize"  # the runner runs all of them


def test_an_instance_is_named_canonically_whatever_the_order_of_its_keys() -> None:
    expected = "resize[size=large,format=webp]"
    assert select_stage("resize[size=large,format=webp]", ROWS, OWNER) == expected
    assert select_stage("resize[format=webp,size=large]", ROWS, OWNER) == expected


def test_spaces_around_keys_and_values_are_forgiven() -> None:
    assert select_stage("resize[ format = png , size=small]", ROWS, OWNER) == (
        "resize[size=small,format=png]"
    )


def test_an_unknown_stage_is_refused_naming_the_stages_in_their_order() -> None:
    err = refusal("publish")
    assert str(err) == "workflow 'thumbs' has no stage 'publish'; stages: fetch, resize, review"
    assert err.exit_code == 1


def test_a_misspelt_stage_is_refused_with_the_closest_name() -> None:
    assert str(refusal("resise")) == (
        "workflow 'thumbs' has no stage 'resise' (did you mean 'resize'?); "
        "stages: fetch, resize, review"
    )


def test_the_refusal_of_a_workflow_of_many_stages_lists_twenty_and_counts_the_rest() -> None:
    rows: list[tuple[str, dict[str, Any]]] = [(f"s{i}", {"run": "true"}) for i in range(200)]
    with pytest.raises(StageNotFound) as info:
        select_stage("zz", rows, OWNER)
    listed = ", ".join(f"s{i}" for i in range(20))
    assert str(info.value) == (
        f"workflow 'thumbs' has no stage 'zz'; stages: {listed} and 180 more"
    )


@pytest.mark.parametrize("spec", ["", "a:b", "../x", "a b"])
def test_a_name_no_stage_can_have_is_a_usage_error(spec: str) -> None:
    with pytest.raises(InvalidStageName) as info:
        select_stage(spec, ROWS, OWNER)
    assert info.value.exit_code == 2
    assert str(info.value).startswith(f"invalid stage {spec!r}: ")


def test_an_unknown_instance_is_refused_naming_some_instances_and_how_many() -> None:
    message = str(refusal("resize[size=huge,format=png]"))
    assert message.startswith(
        "workflow 'thumbs' has no instance 'resize[size=huge,format=png]'; instances: "
        "resize[size=small,format=png], resize[size=small,format=webp], "
    )
    assert message.endswith(", … (9 in all)")
    assert message.count("resize[") == 1 + 6


def test_an_unknown_matrix_key_is_refused_naming_the_keys() -> None:
    message = str(refusal("resize[colour=red,size=small]"))
    assert message == "the matrix of stage 'resize' has no key 'colour'; keys: size, format"


def test_an_instance_missing_a_key_is_refused() -> None:
    message = str(refusal("resize[size=small]"))
    assert "names no value for format" in message and "(size, format)" in message


def test_an_instance_of_a_stage_without_a_matrix_is_refused() -> None:
    message = str(refusal("fetch[size=small]"))
    assert "stage 'fetch' of workflow 'thumbs' has no matrix" in message


def test_an_instance_of_an_unknown_stage_is_refused_as_an_unknown_stage() -> None:
    assert "has no stage 'resise'" in str(refusal("resise[size=small,format=png]"))


@pytest.mark.parametrize(
    "spec",
    [
        "resize[size=small",
        "resize]",
        "resize[size=small]x",
        "resize[[size=small]]",
        "resize[]",
        "resize[size]",
        "resize[=small]",
        "resize[size=small,]",
        "resize[size=small,size=large]",
        "[size=small]",
    ],
)
def test_a_malformed_instance_is_a_usage_error(spec: str) -> None:
    with pytest.raises(InvalidStageName) as info:
        parse_stage(spec)
    assert info.value.exit_code == 2
    assert repr(spec) in str(info.value)


def test_parse_keeps_pairs_as_written() -> None:
    assert parse_stage("fetch") == ("fetch", None)
    assert parse_stage("resize[format=png,size=small]") == (
        "resize",
        [("format", "png"), ("size", "small")],
    )
