"""The scheduler's rules on their own (app.runner.schedule): no store, no processes."""

from __future__ import annotations

from app.runner.schedule import DONE, FAILED, RUNNING, TODO, WAITING, Schedule


def chain(*names: str) -> dict[str, list[str]]:
    return {n: ([names[i - 1]] if i else []) for i, n in enumerate(names)}


def test_a_chain_starts_one_instance_at_a_time_in_order() -> None:
    schedule = Schedule.start(["a", "b", "c"], chain("a", "b", "c"), completed=[], max_parallel=8)
    assert schedule.startable() == ["a"]
    schedule.mark("a", RUNNING)
    assert schedule.startable() == []
    schedule.mark("a", DONE)
    assert schedule.startable() == ["b"]


def test_independent_instances_start_up_to_max_parallel_earliest_first() -> None:
    names = ["a", "b", "c", "d"]
    schedule = Schedule.start(names, {n: [] for n in names}, completed=[], max_parallel=2)
    assert schedule.startable() == ["a", "b"]
    schedule.mark("a", RUNNING)
    assert schedule.startable() == ["b"]
    schedule.mark("b", RUNNING)
    assert schedule.startable() == []
    schedule.mark("a", DONE)
    assert schedule.startable() == ["c"]


def test_an_instance_waits_for_every_instance_it_needs() -> None:
    waits = {"r[n=1]": [], "r[n=2]": [], "join": ["r[n=1]", "r[n=2]"]}
    schedule = Schedule.start(list(waits), waits, completed=[], max_parallel=4)
    schedule.mark("r[n=1]", DONE)
    schedule.mark("r[n=2]", RUNNING)
    assert schedule.startable() == []
    schedule.mark("r[n=2]", DONE)
    assert schedule.startable() == ["join"]


def test_completed_instances_never_start_again() -> None:
    schedule = Schedule.start(["a", "b"], chain("a", "b"), completed=["a"], max_parallel=1)
    assert schedule.startable() == ["b"]


def test_instances_failed_before_the_run_never_start_nor_what_waits_for_them() -> None:
    waits = {"bad": [], "next": ["bad"], "other": []}
    schedule = Schedule.start(list(waits), waits, completed=[], failed=["bad"], max_parallel=4)
    assert schedule.state["bad"] == FAILED
    assert schedule.startable() == ["other"]
    schedule.mark("other", DONE)
    assert schedule.finished()


def test_a_gate_takes_no_slot() -> None:
    names = ["gate", "a", "b"]
    schedule = Schedule.start(
        names, {n: [] for n in names}, completed=[], gates=["gate"], max_parallel=1
    )
    assert schedule.startable() == ["gate", "a"]


def test_only_gates_waiting_and_nothing_running_is_stuck() -> None:
    waits = {"gate": [], "a": [], "after": ["gate"]}
    schedule = Schedule.start(list(waits), waits, completed=[], gates=["gate"], max_parallel=2)
    schedule.mark("gate", WAITING)
    schedule.mark("a", RUNNING)
    assert not schedule.stuck_at_gates()  # the other branch still runs
    schedule.mark("a", DONE)
    assert schedule.stuck_at_gates()
    assert not schedule.finished()
    schedule.mark("gate", DONE)
    assert schedule.startable() == ["after"]


def test_what_needs_a_failed_instance_never_starts_and_the_run_finishes() -> None:
    waits = {"a": [], "b": [], "after_a": ["a"], "last": ["after_a"]}
    schedule = Schedule.start(list(waits), waits, completed=[], max_parallel=2)
    schedule.mark("a", FAILED)
    schedule.mark("b", RUNNING)
    assert schedule.startable() == []
    assert not schedule.finished()
    schedule.mark("b", DONE)
    assert schedule.finished() and not schedule.all_done()


def test_a_gate_whose_approval_can_start_nothing_after_a_failure_does_not_hold_the_run() -> None:
    waits = {"a": [], "gate": [], "z": ["a", "gate"]}
    schedule = Schedule.start(list(waits), waits, completed=[], gates=["gate"], max_parallel=2)
    schedule.mark("gate", WAITING)
    schedule.mark("a", RUNNING)
    assert not schedule.futile("gate")  # a may still complete
    schedule.mark("a", FAILED)
    assert schedule.futile("gate")
    assert not schedule.stuck_at_gates()
    assert schedule.finished()
    assert schedule.failure_blocking("gate") == "a"


def test_a_gate_that_can_still_start_a_branch_after_a_failure_holds_the_run() -> None:
    waits = {"a": [], "gate": [], "after_a": ["a"], "after_gate": ["gate"]}
    schedule = Schedule.start(list(waits), waits, completed=[], gates=["gate"], max_parallel=2)
    schedule.mark("gate", WAITING)
    schedule.mark("a", FAILED)
    assert not schedule.futile("gate")
    assert schedule.stuck_at_gates()
    assert not schedule.finished()


def test_a_run_stuck_at_gates_pauses_at_one_whose_approval_can_start_something() -> None:
    waits = {"f": [], "g1": [], "d1": ["g1", "f"], "g2": [], "d2": ["g2"]}
    gates = ["g1", "g2"]
    schedule = Schedule.start(list(waits), waits, completed=[], gates=gates, max_parallel=2)
    schedule.mark("g1", WAITING)
    schedule.mark("g2", WAITING)
    schedule.mark("f", FAILED)
    assert schedule.stuck_at_gates()
    assert schedule.useful_gates() == ["g2"]  # approving g1 would start nothing


def test_a_futile_gate_names_the_failure_that_blocks_it_not_the_first_one() -> None:
    waits = {"a": [], "b": [], "gate": [], "d": ["gate", "b"]}
    schedule = Schedule.start(list(waits), waits, completed=[], gates=["gate"], max_parallel=2)
    schedule.mark("gate", WAITING)
    schedule.mark("b", FAILED)
    schedule.mark("a", FAILED)
    assert schedule.futile("gate")
    assert schedule.failure_blocking("gate") == "b"


def test_a_futile_gate_names_the_failure_not_a_gate_closed_for_it() -> None:
    """A gate fails only when it is closed for a failure: the gate behind it is blocked
    by that failure, not by the gate."""
    waits = {
        "first": [],
        "bad": [],
        "after": ["first", "bad"],
        "second": [],
        "ship": ["second", "after"],
    }
    gates = ["first", "second"]
    schedule = Schedule.start(list(waits), waits, completed=[], gates=gates, max_parallel=2)
    schedule.mark("first", WAITING)
    schedule.mark("second", WAITING)
    schedule.mark("bad", FAILED)
    schedule.mark("first", FAILED)  # closed: cancelled for bad
    assert schedule.futile("second")
    assert schedule.failure_blocking("second") == "bad"


def test_a_last_gate_after_a_failure_is_futile_and_before_it_is_not() -> None:
    waits = {"a": [], "sign_off": []}
    schedule = Schedule.start(list(waits), waits, completed=[], gates=["sign_off"], max_parallel=2)
    schedule.mark("sign_off", WAITING)
    schedule.mark("a", DONE)
    assert not schedule.futile("sign_off") and schedule.stuck_at_gates()
    schedule.mark("a", FAILED)
    assert schedule.futile("sign_off") and schedule.finished()


def test_only_runs_the_selected_instances_whatever_they_wait_for() -> None:
    waits = {"a": [], "r[n=1]": ["a"], "r[n=2]": ["a"], "z": ["r[n=1]", "r[n=2]"]}
    schedule = Schedule.start(
        list(waits), waits, completed=[], max_parallel=4, only={"r[n=1]", "r[n=2]"}
    )
    assert schedule.startable() == ["r[n=1]", "r[n=2]"]
    schedule.mark("r[n=1]", DONE)
    schedule.mark("r[n=2]", DONE)
    assert schedule.finished()


def test_a_gate_already_waiting_when_the_run_starts_is_not_opened_again() -> None:
    waits = {"gate": [], "after": ["gate"]}
    schedule = Schedule.start(
        list(waits), waits, completed=[], gates=["gate"], waiting=["gate"], max_parallel=1
    )
    assert schedule.state["gate"] == WAITING
    assert schedule.startable() == []
    assert schedule.stuck_at_gates()


def test_a_retried_instance_is_free_to_start_again() -> None:
    schedule = Schedule.start(["a"], {"a": []}, completed=[], max_parallel=1)
    schedule.mark("a", RUNNING)
    schedule.mark("a", TODO)
    assert schedule.startable() == ["a"]


def test_position_is_each_instance_place_in_the_workflow() -> None:
    names = ["build", "test[py=3.11]", "test[py=3.12]", "ship"]
    schedule = Schedule.start(names, chain(*names), completed=["build"], max_parallel=2)
    assert schedule.position == {name: i for i, name in enumerate(names)}
    assert sorted(["ship", "test[py=3.12]", "build"], key=schedule.position.__getitem__) == [
        "build",
        "test[py=3.12]",
        "ship",
    ]


def _scanned(schedule: Schedule) -> tuple[list[str], list[str], list[str]]:
    """running(), waiting_gates() and startable() worked out from ``state`` alone, by
    scanning every instance: what the kept sets must always agree with."""
    names, state = schedule.names, schedule.state
    running = [n for n in names if state[n] == RUNNING]
    slots = schedule.max_parallel - len(running)
    startable = []
    for n in names:
        if state[n] != TODO or not schedule.free(n):
            continue
        if n in schedule.gates:
            startable.append(n)
        elif slots > 0:
            startable.append(n)
            slots -= 1
    return running, [n for n in names if state[n] == WAITING], startable


def test_the_kept_sets_agree_with_a_scan_of_the_states_after_any_moves() -> None:
    """Whatever order instances move in (forwards, and back: a stopped attempt goes back
    to TODO, a retried one leaves DONE), the answers kept up to date by mark() are those
    a scan of every instance's state gives."""
    import random

    rng = random.Random(7)
    for _ in range(200):
        count = rng.randint(1, 12)
        names = [f"s{i}" for i in range(count)]
        waits = {
            n: rng.sample([*names[:i], "elsewhere"], rng.randint(0, min(i, 3)))
            for i, n in enumerate(names)
        }
        gates = frozenset(n for n in names if rng.random() < 0.2)
        schedule = Schedule.start(
            names,
            waits,
            completed=[n for n in names if rng.random() < 0.2],
            gates=gates,
            max_parallel=rng.randint(1, 4),
        )
        for _ in range(40):
            # now and then a name that is waited for but is no instance of this run
            name = rng.choice([*names, "elsewhere"])
            schedule.mark(name, rng.choice([TODO, RUNNING, WAITING, DONE, FAILED]))
            expected = _scanned(schedule)
            assert (schedule.running(), schedule.waiting_gates(), schedule.startable()) == expected
            assert schedule.stuck_at_gates() == (
                bool(schedule.useful_gates()) and not expected[0] and not expected[2]
            )
