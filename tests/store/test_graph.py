"""store.graph: what each stage waits for (``needs``, or the stage written before it), the
instances a ``matrix`` makes, and how snapshots stored before stages ran in parallel read."""

from __future__ import annotations

import os
from typing import Any

import pytest

from store import graph

#: A snapshot as a workflow file of today makes it (it has ``fail_fast``).
NEW = {"fail_fast": True}


def needs_of(*stages: dict[str, Any], legacy: bool = False) -> dict[str, list[str]]:
    names = [str(s["name"]) for s in stages]
    return dict(zip(names, graph.stage_needs(list(stages), legacy=legacy), strict=True))


def rows_of(snapshot: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(row["name"], row["config"]) for row in graph.expand(snapshot)]


# -- needs ---------------------------------------------------------------------------------------


def test_a_stage_without_needs_follows_the_stage_written_before_it() -> None:
    assert needs_of({"name": "a"}, {"name": "b"}, {"name": "c"}) == {
        "a": [],
        "b": ["a"],
        "c": ["b"],
    }


def test_empty_needs_wait_for_nothing() -> None:
    assert needs_of({"name": "a"}, {"name": "b", "needs": []}, {"name": "c"}) == {
        "a": [],
        "b": [],
        "c": ["b"],
    }


def test_explicit_needs_name_exactly_what_a_stage_waits_for() -> None:
    assert needs_of(
        {"name": "a"}, {"name": "b", "needs": ["a"]}, {"name": "c", "needs": ["a", "b"]}
    ) == {"a": [], "b": ["a"], "c": ["a", "b"]}


def test_a_forward_need_keeps_the_old_order_without_making_up_a_cycle() -> None:
    """b needs c (written after it); c, which has no needs, would follow b and close a
    cycle: it follows a instead, the closest earlier stage that does not wait for it."""
    assert needs_of({"name": "a"}, {"name": "b", "needs": ["c"]}, {"name": "c"}) == {
        "a": [],
        "b": ["c"],
        "c": ["a"],
    }


def test_a_stage_first_in_the_file_with_a_forward_need_behind_it_waits_for_nothing() -> None:
    assert needs_of({"name": "a", "needs": ["b"]}, {"name": "b"}) == {"a": ["b"], "b": []}


# -- matrix --------------------------------------------------------------------------------------


def test_a_matrix_makes_one_instance_per_combination_the_last_key_varying_fastest() -> None:
    snapshot = {
        **NEW,
        "stages": [
            {"name": "fetch", "run": "f"},
            {
                "name": "resize",
                "run": "r",
                "matrix": {"size": ["small", "large"], "format": ["png", "webp"]},
            },
        ],
    }
    rows = graph.expand(snapshot)
    assert [r["name"] for r in rows] == [
        "fetch",
        "resize[size=small,format=png]",
        "resize[size=small,format=webp]",
        "resize[size=large,format=png]",
        "resize[size=large,format=webp]",
    ]
    assert rows[0]["config"]["instance"] is None
    assert rows[3]["config"]["instance"] == {"size": "large", "format": "png"}
    assert list(rows[3]["config"]["instance"]) == ["size", "format"]  # the matrix's order
    assert [r["stage_type"] for r in rows] == ["task"] * 5


def test_matrix_values_are_named_as_text() -> None:
    values = graph.matrix_combinations({"n": [1, 2.5], "debug": [True, False]})
    assert [graph.instance_name("t", v) for v in values] == [
        "t[n=1,debug=true]",
        "t[n=1,debug=false]",
        "t[n=2.5,debug=true]",
        "t[n=2.5,debug=false]",
    ]


def test_matrix_size_is_the_product_of_the_value_counts() -> None:
    assert graph.matrix_size({"a": [1, 2, 3], "b": ["x", "y"]}) == 6
    assert graph.matrix_size(None) == 1


def test_waiting_for_a_matrix_stage_is_waiting_for_every_instance_of_it() -> None:
    snapshot = {
        **NEW,
        "stages": [
            {"name": "fetch", "run": "f"},
            {"name": "resize", "run": "r", "matrix": {"size": ["s", "m", "l"]}},
            {"name": "publish", "run": "p", "needs": ["resize"]},
        ],
    }
    waits = graph.instance_waits(rows_of(snapshot), snapshot)
    instances = ["resize[size=s]", "resize[size=m]", "resize[size=l]"]
    assert waits == {
        "fetch": [],
        **{name: ["fetch"] for name in instances},
        "publish": instances,
    }


def test_a_stage_after_a_matrix_stage_without_needs_waits_for_all_its_instances() -> None:
    snapshot = {
        **NEW,
        "stages": [
            {"name": "resize", "run": "r", "matrix": {"size": ["s", "l"]}},
            {"name": "publish", "run": "p"},
        ],
    }
    waits = graph.instance_waits(rows_of(snapshot), snapshot)
    assert waits["publish"] == ["resize[size=s]", "resize[size=l]"]


def test_stage_of_names_the_workflow_stage_of_an_instance() -> None:
    assert graph.stage_of("resize[size=s]", {"name": "resize"}) == "resize"
    assert graph.stage_of("resize[size=s]", {}) == "resize"
    assert graph.stage_of("fetch", {}) == "fetch"


# -- max_parallel and fail_fast ------------------------------------------------------------------


def test_max_parallel_is_the_snapshots_value_else_the_machines_cores() -> None:
    assert graph.max_parallel({**NEW, "max_parallel": 3}) == 3
    assert graph.max_parallel({**NEW, "max_parallel": None}) == (os.cpu_count() or 1)
    assert graph.max_parallel(NEW) == (os.cpu_count() or 1)


def test_fail_fast_is_on_unless_the_snapshot_says_false() -> None:
    assert graph.fail_fast(NEW) is True
    assert graph.fail_fast({"fail_fast": False}) is False
    assert graph.fail_fast({}) is True


# -- snapshots stored before stages ran in parallel ----------------------------------------------

LEGACY = {
    "id": "old",
    "max_parallel": 8,  # never written then; even so, the session runs as it was started
    "stages": [
        {"name": "a", "run": "x", "needs": []},
        {"name": "b", "run": "x", "needs": []},
        {"name": "c", "run": "x", "needs": ["a"]},
    ],
}


def test_a_snapshot_without_fail_fast_is_legacy() -> None:
    assert graph.is_legacy(LEGACY) and not graph.is_legacy(NEW)


def test_a_legacy_snapshot_reads_empty_needs_as_no_needs() -> None:
    assert needs_of(*LEGACY["stages"], legacy=True) == {"a": [], "b": ["a"], "c": ["a"]}
    assert needs_of(*LEGACY["stages"]) == {"a": [], "b": [], "c": ["a"]}  # today: nothing


def test_a_legacy_snapshot_runs_one_stage_at_a_time() -> None:
    assert graph.max_parallel(LEGACY) == 1


def test_legacy_rows_without_waits_for_read_their_needs_from_the_snapshot() -> None:
    rows = [(str(s["name"]), dict(s)) for s in LEGACY["stages"]]  # configs as stored then
    assert graph.instance_waits(rows, LEGACY) == {"a": [], "b": ["a"], "c": ["a"]}


def test_a_row_the_snapshot_does_not_know_waits_for_the_row_before_it() -> None:
    rows: list[tuple[str, dict[str, Any]]] = [("one", {"timeout": 5}), ("two", {})]
    assert graph.instance_waits(rows, {}) == {"one": [], "two": ["one"]}


@pytest.mark.parametrize("snapshot", [LEGACY, {**LEGACY, "fail_fast": True}])
def test_expanded_rows_carry_the_needs_the_scheduler_reads(snapshot: dict[str, Any]) -> None:
    waits = {name: config["waits_for"] for name, config in rows_of(snapshot)}
    expected_b = ["a"] if graph.is_legacy(snapshot) else []
    assert waits == {"a": [], "b": expected_b, "c": ["a"]}
