"""A stage move's plan, without a store: every edge of the stage table of store.status,
allowed or refused, and what each allowed move writes."""

from __future__ import annotations

import itertools

import pytest

from store.errors import ConcurrentModification, InvalidTransition
from store.stage_moves import (
    MovePlan,
    MoveRefusal,
    MoveRequest,
    StageState,
    allowed_targets,
    plan_stage_move,
)
from store.status import STAGE_TRANSITIONS, TERMINAL, StageStatus

S = StageStatus
NOW = 1_000.0
PAIRS = list(itertools.product(S, S))


def state(status: StageStatus, *, version: int = 3, attempt: int = 1, **kw: object) -> StageState:
    return StageState("sid", "build", status, version, attempt, **kw)  # type: ignore[arg-type]


def plan(current: StageState, target: StageStatus, **options: object) -> MovePlan:
    result = plan_stage_move(current, MoveRequest(target, **options), NOW)  # type: ignore[arg-type]
    assert isinstance(result, MovePlan), result
    return result


def refusal(current: StageState, target: StageStatus, **options: object) -> MoveRefusal:
    result = plan_stage_move(current, MoveRequest(target, **options), NOW)  # type: ignore[arg-type]
    assert isinstance(result, MoveRefusal), result
    return result


def is_edge(source: StageStatus, target: StageStatus) -> bool:
    """The table itself, read independently of the planner: an edge, or a same-state update
    of a stage that has not ended."""
    return target in STAGE_TRANSITIONS[source] or (source == target and source not in TERMINAL)


@pytest.mark.parametrize(("source", "target"), [p for p in PAIRS if is_edge(*p)])
def test_every_allowed_move_is_planned_with_the_next_version(
    source: StageStatus, target: StageStatus
) -> None:
    result = plan(state(source), target)
    assert result.values["status"] == target
    assert result.values["version"] == 4
    assert result.values["updated_at"] == NOW


@pytest.mark.parametrize(("source", "target"), [p for p in PAIRS if not is_edge(*p)])
def test_every_refused_move_names_the_states_allowed_from_where_the_stage_is(
    source: StageStatus, target: StageStatus
) -> None:
    result = refusal(state(source), target)
    assert result.reason == "transition"
    expected = sorted(s.value for s in S if is_edge(source, s))
    assert result.allowed == expected == allowed_targets(source)
    assert f"from {source} to {target}" in result.message
    assert result.message.endswith(f"allowed: {', '.join(expected) or 'none'}")
    error = result.error()
    assert isinstance(error, InvalidTransition)
    assert error.current == source and error.allowed == expected


def test_the_refused_moves_are_leaving_completed_and_leaving_failed_but_for_a_reset() -> None:
    refused = {p for p in PAIRS if not is_edge(*p)}
    assert refused == {(S.COMPLETED, t) for t in S} | {(S.FAILED, t) for t in S if t != S.PENDING}


@pytest.mark.parametrize(("source", "target"), [p for p in PAIRS if is_edge(*p)])
def test_a_move_writes_an_event_when_the_state_changes_or_an_attempt_starts(
    source: StageStatus, target: StageStatus
) -> None:
    result = plan(state(source), target)
    starts_attempt = target == S.ACTIVE and source == S.PENDING
    if source != target or starts_attempt:
        assert (
            result.event
            == {
                S.ACTIVE: "stage.start",
                S.PAUSED: "stage.pause",
                S.COMPLETED: "stage.complete",
                S.FAILED: "stage.fail",
                S.PENDING: "stage.reset",
            }[target]
        )
    else:
        assert result.event is None  # a progress or metadata update


def test_a_pinned_version_that_differs_is_refused_before_the_table_is_consulted() -> None:
    result = refusal(state(S.COMPLETED, version=7), S.ACTIVE, expected_version=6)
    assert result.reason == "version"
    assert "changed meanwhile" in result.message
    assert isinstance(result.error(), ConcurrentModification)
    assert plan(state(S.ACTIVE, version=6), S.COMPLETED, expected_version=6).values["version"] == 7


def test_entering_active_from_pending_starts_the_next_attempt_afresh() -> None:
    result = plan(state(S.PENDING, attempt=2), S.ACTIVE)
    assert result.attempt == 3
    assert result.values == {
        "status": S.ACTIVE,
        "version": 4,
        "updated_at": NOW,
        "attempt": 3,
        "started_at": NOW,
        "finished_at": None,
        "outputs": None,
        "progress": 0.0,
        "exit_code": None,
        "error": None,
    }
    assert result.event == "stage.start"


def test_active_to_active_is_an_update_unless_a_new_attempt_is_asked() -> None:
    update = plan(state(S.ACTIVE, attempt=2), S.ACTIVE, progress=40)
    assert update.attempt == 2 and update.event is None
    assert "attempt" not in update.values and update.values["progress"] == 40.0
    fresh = plan(state(S.ACTIVE, attempt=2), S.ACTIVE, new_attempt=True)
    assert fresh.attempt == 3 and fresh.values["attempt"] == 3 and fresh.event == "stage.start"
    resumed = plan(state(S.PAUSED, attempt=2), S.ACTIVE)
    assert resumed.attempt == 2 and "attempt" not in resumed.values
    assert resumed.event == "stage.start"


def test_an_attempt_number_chosen_by_the_caller_must_be_above_the_stored_one() -> None:
    assert plan(state(S.PENDING, attempt=2), S.ACTIVE, attempt=5).attempt == 5
    for used in (1, 2):
        result = refusal(state(S.PENDING, attempt=2), S.ACTIVE, attempt=used)
        assert result.reason == "attempt"
        assert result.message == "stage 'build' is at attempt 2 already"
        assert isinstance(result.error(), ConcurrentModification)


def test_the_process_of_an_attempt_is_recorded_with_it() -> None:
    result = plan(state(S.ACTIVE), S.ACTIVE, new_attempt=True, process=(42, 99, "h"))
    assert (result.values["pid"], result.values["pid_start"], result.values["host"]) == (
        42,
        99,
        "h",
    )


@pytest.mark.parametrize("target", sorted(TERMINAL))
def test_a_final_state_records_when_the_attempt_ended(target: StageStatus) -> None:
    assert plan(state(S.ACTIVE), target).values["finished_at"] == NOW
    later = plan(state(S.ACTIVE), target, finished_at=NOW - 5)
    assert later.values["finished_at"] == NOW - 5
    progress = plan(state(S.ACTIVE), target, progress=30).values["progress"]
    assert progress == (100.0 if target == S.COMPLETED else 30.0)


def test_a_reset_to_pending_forgets_progress_end_and_process() -> None:
    for source in (S.ACTIVE, S.PAUSED, S.FAILED):
        values = plan(state(source), S.PENDING, progress=70).values
        assert values["progress"] == 0.0 and values["finished_at"] is None
        assert values["pid"] is None and values["pid_start"] is None


def test_progress_is_clamped_and_metadata_merged_into_the_stored() -> None:
    assert plan(state(S.ACTIVE), S.ACTIVE, progress=250).values["progress"] == 100.0
    assert plan(state(S.ACTIVE), S.ACTIVE, progress=-3).values["progress"] == 0.0
    stored = state(S.ACTIVE, metadata={"a": 1, "b": 2})
    merged = plan(stored, S.ACTIVE, metadata={"b": 3, "c": 4}).values["metadata"]
    assert merged == {"a": 1, "b": 3, "c": 4}
    assert "metadata" not in plan(stored, S.ACTIVE).values


def test_error_and_exit_code_are_written_as_given() -> None:
    values = plan(state(S.ACTIVE), S.FAILED, error="exit 3", exit_code=3).values
    assert (values["error"], values["exit_code"]) == ("exit 3", 3)


def test_a_request_takes_progress_out_of_the_metadata() -> None:
    request = MoveRequest.of("ACTIVE", {"progress": 12, "note": "x"}, new_attempt=True)
    assert request.target == S.ACTIVE and request.progress == 12
    assert dict(request.metadata) == {"note": "x"} and request.new_attempt
