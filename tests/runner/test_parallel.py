"""Stages in parallel end to end: the real `vc`, real stage processes, real signals.

Each stage records when it starts and ends in a file of the workspace (``mark``), so the
order and overlap of stages are read from what really ran, not from the store's times.
"""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest

from tests.runner.runner_testkit import (
    Store,
    Vc,
    foreground,
    gone,
    kill_runner,
    newest_session,
    proc_state,
    session_json,
    sqlite_only,
    start_detached,
    utime,
    write_workflow,
)
from tests.waiting import wait_until

#: A stage command that notes its start and end in events.txt (one line each, with a clock).
MARK = (
    'echo "start $VC_STAGE $(date +%s.%N)" >> events.txt; {body}; '
    'echo "end $VC_STAGE $(date +%s.%N)" >> events.txt'
)


def mark(body: str) -> str:
    return MARK.format(body=body).replace("'", "''")


def events(workspace: Path) -> list[tuple[str, str, float]]:
    lines = (workspace / "events.txt").read_text().split("\n")
    return [(w[0], w[1], float(w[2])) for w in (line.split() for line in lines if line)]


def most_at_once(workspace: Path) -> int:
    now = most = 0
    for kind, _, _ in sorted(events(workspace), key=lambda e: (e[2], e[0] == "start")):
        now += 1 if kind == "start" else -1
        most = max(most, now)
    return most


def pids_of(store: Store, sid: str, names: list[str]) -> list[int]:
    def all_running() -> list[int] | None:
        rows = [store.stage_row(sid, n) for n in names]
        if all(r.status == "ACTIVE" and r.pid for r in rows):
            return [int(r.pid) for r in rows if r.pid]
        return None

    return wait_until(all_running, timeout=15, what=f"{names} running")


@sqlite_only
def test_a_workflow_without_needs_runs_its_stages_one_after_another(
    workspace: Path, vc: Vc, store: Store
) -> None:
    stages = "\n".join(f"  - {{name: s{i}, run: '{mark('sleep 0.2')}'}}" for i in range(4))
    write_workflow(workspace, "seq", f"max_parallel: 8\nstages:\n{stages}\n")
    assert vc("flow", "run", "seq").returncode == 0
    order = [(kind, name) for kind, name, _ in events(workspace)]
    expected = [(k, f"s{i}") for i in range(4) for k in ("start", "end")]
    assert order == expected


def test_the_sample_workflows_keep_their_order_of_stages(workspace: Path) -> None:
    from store.workflows import load_workflow_file

    for path in sorted((workspace / "workflows").glob("*.yaml")):
        wf = load_workflow_file(path)
        needs = wf.stage_needs()
        assert needs == [[]] + [[s.name] for s in wf.stages[:-1]], path.name


@sqlite_only
def test_independent_stages_run_at_once(workspace: Path, vc: Vc, store: Store) -> None:
    stages = "\n".join(f"  - {{name: s{i}, needs: [], run: '{mark('sleep 1')}'}}" for i in range(3))
    write_workflow(workspace, "fan", f"max_parallel: 3\nstages:\n{stages}\n")
    started = time.monotonic()
    assert vc("flow", "run", "fan").returncode == 0
    assert time.monotonic() - started < 2.8  # three one-second stages, not three seconds
    assert most_at_once(workspace) == 3


@sqlite_only
def test_max_parallel_caps_the_stages_running_at_once(
    workspace: Path, vc: Vc, store: Store
) -> None:
    stages = "\n".join(
        f"  - {{name: s{i}, needs: [], run: '{mark('sleep 0.3')}'}}" for i in range(5)
    )
    write_workflow(workspace, "capped", f"max_parallel: 2\nstages:\n{stages}\n")
    assert vc("flow", "run", "capped").returncode == 0
    assert most_at_once(workspace) == 2
    assert len(events(workspace)) == 10


@sqlite_only
def test_matrix_instances_get_their_values_and_a_stage_that_needs_them_waits_for_all(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "mx",
        """
        max_parallel: 4
        stages:
          - name: resize
            matrix: {size: [small, large], format: [png, webp]}
            run: 'sleep 0.2; V="$VC_MATRIX_SIZE-$VC_MATRIX_FORMAT"; echo "$V" > "out-$V"'
          - name: publish
            needs: [resize]
            run: ls out-* | wc -l > count.txt
    """,
    )
    assert vc("flow", "run", "mx").returncode == 0
    assert (workspace / "count.txt").read_text().strip() == "4"
    assert (workspace / "out-large-webp").read_text().strip() == "large-webp"
    sid = store.view(newest_session(store)).id
    names = [s.name for s in store.view(sid).stages]
    assert names == [
        "resize[size=small,format=png]",
        "resize[size=small,format=webp]",
        "resize[size=large,format=png]",
        "resize[size=large,format=webp]",
        "publish",
    ]
    assert all(s.status == "COMPLETED" for s in store.view(sid).stages)


@sqlite_only
def test_pause_stops_every_running_stage_and_resume_continues_them_all(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "spin3",
        """
        max_parallel: 3
        stages:
          - {name: a, needs: [], run: 'while :; do :; done'}
          - {name: b, needs: [], run: 'while :; do :; done'}
          - {name: c, needs: [], run: 'sleep 60'}
    """,
    )
    sid = start_detached(vc, "spin3")
    pids = pids_of(store, sid, ["a", "b", "c"])
    assert vc("flow", "session", "pause", sid).returncode == 0
    for pid in pids:
        wait_until(lambda p=pid: proc_state(p) == "T", timeout=5, what=f"{pid} in state T")
    wait_until(
        lambda: all(store.stage(sid, n).status == "PAUSED" for n in "abc"),
        timeout=5,
        what="every stage PAUSED",
    )
    before = [utime(p) for p in pids[:2]]
    time.sleep(0.3)
    assert [utime(p) for p in pids[:2]] == before  # no CPU in any branch

    assert vc("flow", "session", "resume", sid).returncode == 0
    for pid in pids:
        wait_until(lambda p=pid: proc_state(p) not in ("T", None), timeout=5, what="SIGCONT")
    assert vc("flow", "session", "abort", sid).returncode == 0
    for pid in pids:
        wait_until(partial(gone, pid), timeout=10, what=f"pid {pid} gone")
    wait_until(lambda: store.view(sid).runner_pid is None, timeout=10, what="runner released")
    rows = [store.stage_row(sid, n) for n in "abc"]
    assert [(r.status, r.error) for r in rows] == [("FAILED", "aborted")] * 3


@sqlite_only
def test_fail_fast_cancels_the_running_branches_and_fails_with_the_first_failure(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "ff",
        """
        stages:
          - {name: long, needs: [], run: 'sleep 60'}
          - {name: bad, needs: [], run: 'sleep 0.5; exit 3'}
          - {name: after, needs: [long], run: 'true'}
    """,
    )
    started = time.monotonic()
    assert vc("flow", "run", "ff").returncode == 1
    assert time.monotonic() - started < 30
    sid = newest_session(store)
    view = store.view(sid)
    assert (view.status, view.reason) == ("FAILED", "stage bad failed: exit code 3")
    by_name = {s.name: s for s in view.stages}
    assert (by_name["long"].status, by_name["long"].error) == ("FAILED", "cancelled: bad failed")
    assert by_name["after"].status == "PENDING"


@sqlite_only
def test_a_foreground_run_says_at_once_that_a_gate_waits_beside_running_stages(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Off a terminal (a CI log) the gate's line comes as it opens, not once the stages
    running beside it have ended."""
    write_workflow(
        workspace,
        "besides",
        """
        stages:
          - {name: gate, needs: []}
          - name: long
            needs: []
            run: 'for i in $(seq 200); do test -e done && break; sleep 0.05; done'
          - {name: after, needs: [gate], run: 'true'}
    """,
    )
    with foreground("besides") as proc:
        assert proc.stderr is not None
        sid = newest_session(store)
        line = proc.stderr.readline()
        while line and "manual gate" not in line:
            line = proc.stderr.readline()
        assert store.stage(sid, "long").status != "COMPLETED"  # said before it ends
        assert line.endswith(
            f"gate: manual gate, waiting for 'vc flow session approve {sid[:12]} gate'; "
            "the other stages go on\n"
        )
        (workspace / "done").touch()
        assert vc("flow", "session", "approve", sid, "gate").returncode == 0
        assert proc.wait(timeout=30) == 0


@sqlite_only
def test_fail_fast_closes_a_gate_waiting_beside_the_failure(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A failed session waits at no gate: the gate is cancelled like a running branch, and
    `retry` opens it again."""
    write_workflow(
        workspace,
        "ffgate",
        """
        stages:
          - {name: bad, needs: [], run: 'sleep 0.5; exit 1'}
          - {name: gate, needs: []}
          - {name: after, needs: [gate], run: 'true'}
    """,
    )
    assert vc("flow", "run", "ffgate").returncode == 1
    sid = newest_session(store)
    view = store.view(sid)
    assert view.status == "FAILED" and view.current_stage is None
    gate = store.stage(sid, "gate")
    assert (gate.status, gate.error) == ("FAILED", "cancelled: bad failed")
    assert vc("flow", "session", "retry", sid).returncode == 0
    assert store.stage(sid, "gate").status == "PENDING"


@sqlite_only
def test_fail_fast_records_a_branch_that_had_exited_0_completed_and_retry_never_reruns_it(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The deploy has exited 0, its output still open (a child holds it), when the check
    fails: it is COMPLETED, not left ACTIVE in the failed session to deploy again after
    the retry."""
    write_workflow(
        workspace,
        "ffdone",
        """
        max_parallel: 2
        stages:
          - {name: deploy, needs: [], run: 'echo deployed >> ran; (sleep 1; echo late) &'}
          - name: check
            needs: []
            run: 'until test -e ran; do sleep 0.01; done; sleep 0.3; test -e fixed'
    """,
    )
    assert vc("flow", "run", "ffdone").returncode == 1
    sid = newest_session(store)
    view = store.view(sid)
    assert (view.status, view.reason) == ("FAILED", "stage check failed: exit code 1")
    assert {s.name: (s.status, s.exit_code) for s in view.stages} == {
        "deploy": ("COMPLETED", 0),
        "check": ("FAILED", 1),
    }
    (workspace / "fixed").touch()
    assert vc("flow", "session", "retry", sid).returncode == 0
    assert vc("flow", "run", "ffdone", "--session", sid).returncode == 0
    assert (workspace / "ran").read_text() == "deployed\n"


@sqlite_only
def test_without_fail_fast_independent_branches_finish_and_the_session_fails_after(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "nff",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'exit 3'}
          - {name: slow, needs: [], run: 'sleep 1; touch slow.done'}
          - {name: after_bad, needs: [bad], run: 'touch never'}
          - {name: after_slow, needs: [slow], run: 'touch after_slow.done'}
    """,
    )
    assert vc("flow", "run", "nff").returncode == 1
    assert (workspace / "after_slow.done").exists()
    assert not (workspace / "never").exists()
    view = store.view(newest_session(store))
    assert (view.status, view.reason) == ("FAILED", "stage bad failed: exit code 3")
    assert {s.name: s.status for s in view.stages} == {
        "bad": "FAILED",
        "slow": "COMPLETED",
        "after_bad": "PENDING",
        "after_slow": "COMPLETED",
    }


def test_without_fail_fast_a_gate_whose_approval_could_start_nothing_is_closed_not_waited_at(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "futile",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'sleep 0.3; exit 3'}
          - {name: review, needs: []}
          - {name: ship, needs: [bad, review], run: 'touch never'}
    """,
    )
    result = vc("flow", "run", "futile")
    assert result.returncode == 1, result.stderr
    view = store.view(newest_session(store))
    assert (view.status, view.reason) == ("FAILED", "stage bad failed: exit code 3")
    assert {s.name: (s.status, s.error) for s in view.stages} == {
        "bad": ("FAILED", "exit code 3"),
        "review": ("FAILED", "cancelled: bad failed"),
        "ship": ("PENDING", None),
    }
    events = session_json(vc, "flow", "session", "show", view.id)["events"]
    assert "waiting: review" not in [e["reason"] for e in events]  # never paused at it


@sqlite_only
def test_without_fail_fast_a_run_stuck_at_gates_pauses_at_the_one_that_can_start_something(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "twogates",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'sleep 0.3; exit 1'}
          - {name: first_gate, needs: []}
          - {name: blocked, needs: [first_gate, bad], run: 'true'}
          - {name: second_gate, needs: []}
          - {name: ship, needs: [second_gate], run: 'true'}
    """,
    )
    sid = start_detached(vc, "twogates")
    view = store.wait_status(sid, "PAUSED")
    assert view.reason == "waiting: second_gate"
    texts = [r.text for r in store.logs(sid)]
    assert not any(t.startswith("manual gate first_gate: waiting") for t in texts)
    assert vc("flow", "session", "resume", sid).returncode == 0
    view = store.wait_status(sid, "FAILED")
    assert {s.name: (s.status, s.error) for s in view.stages} == {
        "bad": ("FAILED", "exit code 1"),
        "first_gate": ("FAILED", "cancelled: bad failed"),
        "blocked": ("PENDING", None),
        "second_gate": ("COMPLETED", None),
        "ship": ("COMPLETED", None),
    }


@sqlite_only
def test_without_fail_fast_a_gate_a_failure_makes_futile_is_closed_at_once(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Not when the run ends: while the session waits at the gate that can still start
    something, `approve` with no gate named is not refused for two gates waiting."""
    write_workflow(
        workspace,
        "futile",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'sleep 0.3; exit 1'}
          - {name: useful, needs: []}
          - {name: branch, needs: [useful], run: 'true'}
          - {name: futile, needs: []}
          - {name: blocked, needs: [bad, futile], run: 'true'}
    """,
    )
    sid = start_detached(vc, "futile")
    assert store.wait_status(sid, "PAUSED").reason == "waiting: useful"
    assert store.stage(sid, "futile").error == "cancelled: bad failed"
    assert vc("flow", "session", "approve", sid).returncode == 0
    view = store.wait_status(sid, "FAILED")
    assert {s.name: s.status for s in view.stages} == {
        "bad": "FAILED",
        "useful": "COMPLETED",
        "branch": "COMPLETED",
        "futile": "FAILED",
        "blocked": "PENDING",
    }


@sqlite_only
def test_without_fail_fast_a_gate_that_opens_futile_is_closed_as_it_opens(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "latefutile",
        """
        fail_fast: false
        stages:
          - {name: bad, needs: [], run: 'exit 1'}
          - {name: slow, needs: [], run: 'sleep 0.5'}
          - {name: useful, needs: [slow]}
          - {name: branch, needs: [useful], run: 'true'}
          - {name: late, needs: [slow]}
          - {name: blocked, needs: [bad, late], run: 'true'}
    """,
    )
    sid = start_detached(vc, "latefutile")
    assert store.wait_status(sid, "PAUSED").reason == "waiting: useful"
    assert store.stage(sid, "late").error == "cancelled: bad failed"
    texts = [r.text for r in store.logs(sid)]
    assert not any(t.startswith("manual gate late: waiting") for t in texts)
    assert vc("flow", "session", "approve", sid).returncode == 0
    assert store.wait_status(sid, "FAILED").reason is not None


@sqlite_only
def test_without_fail_fast_a_closed_gate_names_the_failure_that_blocked_it(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "blame",
        """
        fail_fast: false
        max_parallel: 3
        stages:
          - {name: slow_bad, needs: [], run: 'sleep 0.6; exit 1'}
          - {name: quick_bad, needs: [], run: 'exit 2'}
          - {name: review, needs: []}
          - {name: ship, needs: [review, quick_bad], run: 'true'}
    """,
    )
    assert vc("flow", "run", "blame").returncode == 1
    view = store.view(newest_session(store))
    assert store.stage(view.id, "review").error == "cancelled: quick_bad failed"


@sqlite_only
def test_without_fail_fast_gates_closed_together_each_name_the_failure_not_each_other(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "twoclosed",
        """
        fail_fast: false
        stages:
          - {name: first_gate, needs: []}
          - {name: second_gate, needs: []}
          - {name: bad, needs: [], run: 'exit 1'}
          - {name: ship, needs: [bad, first_gate, second_gate], run: 'true'}
    """,
    )
    assert vc("flow", "run", "twoclosed").returncode == 1
    sid = newest_session(store)
    assert [store.stage(sid, g).error for g in ("first_gate", "second_gate")] == [
        "cancelled: bad failed",
        "cancelled: bad failed",
    ]


@sqlite_only
def test_retry_runs_the_failed_and_cancelled_instances_again_and_keeps_the_completed(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "again",
        """
        stages:
          - {name: ok, needs: [], run: 'echo x >> ok.runs'}
          - {name: long, needs: [], run: 'sleep 1; echo x >> long.runs'}
          - {name: flaky, needs: [], run: 'sleep 0.3; test -e fixed'}
    """,
    )
    assert vc("flow", "run", "again").returncode == 1
    sid = newest_session(store)
    assert store.stage(sid, "long").error == "cancelled: flaky failed"
    (workspace / "fixed").touch()
    assert vc("flow", "session", "retry", sid).returncode == 0
    assert vc("flow", "run", "again", "--session", sid).returncode == 0
    assert store.view(sid).status == "COMPLETED"
    assert (workspace / "ok.runs").read_text().count("x") == 1
    assert (workspace / "long.runs").read_text().count("x") == 1


@sqlite_only
def test_a_gate_waits_while_other_branches_run_then_pauses_the_session(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "gated",
        """
        stages:
          - {name: approve_me, needs: []}
          - {name: work, needs: [], run: 'sleep 1; touch work.done'}
          - {name: ship, needs: [approve_me, work], run: 'touch shipped'}
    """,
    )
    sid = start_detached(vc, "gated")
    wait_until(
        lambda: store.stage(sid, "approve_me").status == "PAUSED", timeout=10, what="gate waits"
    )
    assert store.view(sid).status == "ACTIVE"  # the other branch goes on
    view = store.wait_status(sid, "PAUSED", timeout=15)
    assert view.reason == "waiting: approve_me"
    assert (workspace / "work.done").exists()
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED", timeout=15)
    assert (workspace / "shipped").exists()


@sqlite_only
def test_every_gate_waiting_at_once_is_named_once_in_the_log(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Two gates open together: each says once how to approve it, and the pause that
    follows names the gate it is at, without repeating its approve line."""
    write_workflow(
        workspace,
        "twogates",
        """
        stages:
          - {name: build, run: echo build}
          - {name: g1, needs: [build], checklist: [first ok]}
          - {name: g2, needs: [build], checklist: [second ok]}
          - {name: done, needs: [g1, g2], run: echo done}
    """,
    )
    sid = start_detached(vc, "twogates")
    store.wait_status(sid, "PAUSED", timeout=15)

    def gate_lines() -> list[str]:
        return [r.text for r in store.logs(sid) if "gate" in r.text and r.stage in ("g1", "g2")]

    lines = wait_until(lambda: (got := gate_lines()) and len(got) >= 3 and got, timeout=10)
    approve = f"'vc flow session approve {sid[:12]}"
    assert [line.split(";")[0] for line in lines] == [
        f"manual gate g1: waiting for {approve} g1'",
        f"manual gate g2: waiting for {approve} g2'",
        "nothing else can run: the session is paused at manual gate g1 (its approval or a "
        "resume passes it)",
    ]


@sqlite_only
def test_a_crash_reruns_each_interrupted_instance_as_a_new_attempt_never_a_completed_one(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "crash",
        """
        stages:
          - name: part
            needs: []
            matrix: {n: [1, 2, 3]}
            run: >-
              echo $VC_ATTEMPT >> runs-$VC_MATRIX_N;
              test "$VC_MATRIX_N" = 1 || test "$VC_ATTEMPT" -gt 1 || sleep 60
    """,
    )
    sid = start_detached(vc, "crash")
    wait_until(
        lambda: store.stage(sid, "part[n=1]").status == "COMPLETED", timeout=15, what="n=1 done"
    )
    pids_of(store, sid, ["part[n=2]", "part[n=3]"])
    kill_runner(store, sid)
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED", timeout=30)
    assert (workspace / "runs-1").read_text().split() == ["1"]
    assert (workspace / "runs-2").read_text().split() == ["1", "2"]
    assert (workspace / "runs-3").read_text().split() == ["1", "2"]


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_timeout_kills_only_its_own_instance_first(workspace: Path, vc: Vc, store: Store) -> None:
    write_workflow(
        workspace,
        "slowpart",
        """
        fail_fast: false
        stages:
          - {name: quick, needs: [], run: 'sleep 0.8; touch quick.done'}
          - {name: stuck, needs: [], timeout: 0.3, run: 'sleep 60'}
    """,
    )
    assert vc("flow", "run", "slowpart").returncode == 1
    assert (workspace / "quick.done").exists()
    view = store.view(newest_session(store))
    assert view.reason == "timeout"
    assert {s.name: (s.status, s.error) for s in view.stages} == {
        "quick": ("COMPLETED", None),
        "stuck": ("FAILED", "timeout"),
    }


MATRIX = """
    stages:
      - name: resize
        needs: []
        matrix: {size: [small, large]}
        run: 'echo $VC_STAGE >> ran.txt'
      - name: publish
        needs: [resize]
        run: 'echo $VC_STAGE >> ran.txt'
"""


@sqlite_only
def test_run_of_a_matrix_stage_runs_every_instance_of_it_only(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "mx2", MATRIX)
    assert vc("flow", "run", "mx2:resize").returncode == 0
    ran = (workspace / "ran.txt").read_text().split()
    assert sorted(ran) == ["resize[size=large]", "resize[size=small]"]
    view = store.view(newest_session(store))
    assert (view.status, view.reason) == ("PAUSED", "ran resize only: resume to run the rest")


@sqlite_only
def test_run_of_one_matrix_instance_runs_that_instance_only(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "mx3", MATRIX)
    assert vc("flow", "run", "mx3:resize[size=large]").returncode == 0
    assert (workspace / "ran.txt").read_text().split() == ["resize[size=large]"]


@sqlite_only
def test_max_parallel_option_overrides_the_workflow_for_one_session(
    workspace: Path, vc: Vc, store: Store
) -> None:
    stages = "\n".join(
        f"  - {{name: s{i}, needs: [], run: '{mark('sleep 0.3')}'}}" for i in range(3)
    )
    write_workflow(workspace, "wide", f"max_parallel: 3\nstages:\n{stages}\n")
    assert vc("flow", "run", "wide", "--max-parallel", "1").returncode == 0
    assert most_at_once(workspace) == 1


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_session_stored_before_parallel_stages_runs_one_stage_at_a_time_in_its_order(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Its snapshot has no ``fail_fast`` and ``needs: []`` on every stage (what an older vc
    wrote for "nothing said"), its rows no ``waits_for``: it runs as it was started."""
    from sqlalchemy import update
    from sqlmodel import select

    from store import FlowSessionManager
    from store.models import StageInstance

    stages = [
        {"name": f"s{i}", "run": mark("sleep 0.2").replace("''", "'"), "needs": []}
        for i in range(3)
    ]
    write_workflow(workspace, "old", "stages:\n  - {name: s0, run: 'true'}\n")
    with store.factory() as db:
        sid = (
            FlowSessionManager(db)
            .create_session("old", definition={"id": "old", "stages": stages})
            .id
        )
        rows = db.exec(select(StageInstance).where(StageInstance.session_id == sid)).all()
        for row in rows:
            config = {k: v for k, v in row.config.items() if k not in ("waits_for", "instance")}
            db.execute(
                update(StageInstance).where(StageInstance.id == row.id).values(config=config)
            )
        db.commit()
    result = vc("flow", "run", "old", "--session", sid)
    assert result.returncode == 0, result.stderr
    order = [(kind, name) for kind, name, _ in events(workspace)]
    assert order == [(k, f"s{i}") for i in range(3) for k in ("start", "end")]


@sqlite_only
def test_approve_passes_a_gate_while_the_other_branches_run(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "approved",
        """
        stages:
          - {name: qa, needs: []}
          - {name: work, needs: [], run: 'while [ ! -e go ]; do sleep 0.05; done'}
          - {name: after_qa, needs: [qa], run: 'touch after_qa.done'}
    """,
    )
    sid = start_detached(vc, "approved")
    wait_until(lambda: store.stage(sid, "qa").status == "PAUSED", timeout=10, what="qa waits")
    result = vc("flow", "session", "approve", sid, "qa")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: (workspace / "after_qa.done").exists(), timeout=10, what="after_qa ran")
    assert store.view(sid).status == "ACTIVE"  # the work branch never stopped
    assert store.stage(sid, "work").status == "ACTIVE"
    (workspace / "go").touch()
    store.wait_status(sid, "COMPLETED", timeout=15)
    approvals = [e for e in list_events_of(store, sid) if e.op == "approve"]
    assert [e.stage for e in approvals] == ["qa"]


@sqlite_only
def test_approving_one_gate_of_a_session_paused_at_another_runs_its_branch_only(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Paused at g1 (nothing else could run), g2 approved: after2 runs, g1 is not passed
    and the session pauses at it again; its resume passes it."""
    write_workflow(
        workspace,
        "twogates",
        """
        stages:
          - {name: a, run: 'true'}
          - {name: g1, needs: [a]}
          - {name: g2, needs: [a]}
          - {name: after1, needs: [g1], run: 'touch after1.done'}
          - {name: after2, needs: [g2], run: 'touch after2.done'}
    """,
    )
    sid = start_detached(vc, "twogates")
    wait_until(lambda: store.view(sid).reason == "waiting: g1", timeout=10, what="the gate pause")
    assert vc("flow", "session", "approve", sid, "g2").returncode == 0
    wait_until((workspace / "after2.done").exists, timeout=10, what="after2 to run")
    wait_until(lambda: store.view(sid).reason == "waiting: g1", timeout=10, what="a new pause")
    assert store.stage(sid, "g1").status == "PAUSED"
    assert not (workspace / "after1.done").exists()
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED", timeout=15)
    approvals = [e for e in list_events_of(store, sid) if e.op == "approve"]
    assert [e.stage for e in approvals] == ["g2", "g1"]


@sqlite_only
def test_approve_takes_a_matrix_gates_name_for_its_only_instance_waiting(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """With both instances waiting the name is refused, naming them; with one left, the
    name approves it."""
    write_workflow(
        workspace,
        "matrixgate",
        """
        stages:
          - {name: g, needs: [], matrix: {env: [dev, prod]}}
          - {name: work, needs: [], run: 'while [ ! -e go ]; do sleep 0.05; done'}
    """,
    )
    sid = start_detached(vc, "matrixgate")
    both = ("g[env=dev]", "g[env=prod]")
    wait_until(
        lambda: all(store.stage(sid, g).status == "PAUSED" for g in both), what="both waiting"
    )
    refused = vc("flow", "session", "approve", sid, "g")
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        "has 2 instances of gate 'g' waiting: g[env=dev], g[env=prod]; name the one to approve"
    )
    assert vc("flow", "session", "approve", sid, "g[env=dev]").returncode == 0
    result = vc("flow", "session", "approve", sid, "g")
    assert result.returncode == 0, result.stderr
    wait_until(lambda: store.stage(sid, "g[env=prod]").status == "COMPLETED", what="prod passed")
    (workspace / "go").touch()
    store.wait_status(sid, "COMPLETED", timeout=15)


def list_events_of(store: Store, sid: str) -> list:  # type: ignore[type-arg]
    from store.queries import list_events

    with store.factory() as db:
        return list(list_events(db, sid))


@sqlite_only
def test_matrix_outputs_are_stored_but_give_no_variable_to_later_stages(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "mxout",
        """
        stages:
          - {name: part, needs: [], matrix: {n: [1, 2]}, run: 'echo "::output rows=$VC_MATRIX_N"'}
          - {name: sum, needs: [part], run: 'env | grep ^VC_OUTPUT_ > seen.txt; true'}
    """,
    )
    assert vc("flow", "run", "mxout").returncode == 0
    assert (workspace / "seen.txt").read_text() == ""
    view = store.view(newest_session(store))
    assert [s.outputs for s in view.stages[:2]] == [{"rows": "1"}, {"rows": "2"}]
