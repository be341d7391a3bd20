"""The runner end to end: the real `vc` command, real stage processes, real signals.

Every test drives the product through the CLI (`vc flow run …`, `vc flow session …`) and
checks the result where a user or an operator would: the store (through the read models
and managers of ``store``), the session's log file, and /proc (a paused stage is in state
``T``, an aborted one is gone with its grandchildren). Nothing is mocked. Waits poll with
short intervals (:func:`wait_until`) instead of sleeping fixed times, so each test takes
about as long as the behaviour it checks.

The store is the ``db_url`` fixture's: each test runs on SQLite and, when
VC_TEST_DATABASE_URL is set, on PostgreSQL in a schema of its own (the runner then learns of
a pause or an abort by LISTEN/NOTIFY, writes its output through a server connection, and
may be killed with that connection open). Tests marked :data:`sqlite_only` check what the
runner does with processes, signals, pipes and the stage's environment, where the store
only records the outcome: they run once, on SQLite, to keep the suite's time down.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path

import pytest

from store.queries import (
    list_events,
)
from tests.runner.runner_testkit import (
    Store,
    Vc,
    covered_on_postgresql_by_another,
    gone,
    killed_on_the_way_out,
    log_file,
    newest_session,
    proc_state,
    read_pid,
    session_json,
    sqlite_only,
    start_detached,
    start_foreground,
    utime,
    write_workflow,
)
from tests.waiting import wait_until

# ---- a workflow runs ----------------------------------------------------------------------------


def test_workflow_runs_to_completed_with_logs_in_file_and_store(
    workspace: Path, vc: Vc, store: Store
) -> None:
    sid = start_detached(vc, "hello")
    view = store.wait_status(sid, "COMPLETED")
    assert [(s.name, s.status, s.attempt, s.exit_code) for s in view.stages] == [
        ("greet", "COMPLETED", 1, 0),
        ("count", "COMPLETED", 1, 0),
        ("done", "COMPLETED", 1, 0),
    ]
    assert view.progress == 100.0 and view.runner_pid is None and not view.orphaned
    logs = [
        (r.stage, r.level, r.text)
        for r in store.logs(sid)
        if r.category == "workflow.stage.integration"
    ]
    assert ("greet", "INFO", "hello from greet attempt 1") in logs
    assert ("count", "INFO", "step 4") in logs
    assert ("done", "WARNING", "bye") in logs  # stderr
    text = log_file(workspace, sid).read_text()
    assert "| INFO    | workflow.stage.integration | " + sid + " | greet | hello from greet" in text
    assert "| WARNING | workflow.stage.integration | " + sid + " | done | bye" in text
    shown = vc("flow", "session", "logs", sid)
    assert shown.returncode == 0 and "hello from greet attempt 1" in shown.stdout


# on PostgreSQL: test_ctrl_c_on_foreground_run_pauses_the_session_and_exits_130 (a runner in
#   the CLI process)
@covered_on_postgresql_by_another
def test_foreground_run_completes_and_prints_the_result(vc: Vc, store: Store) -> None:
    result = vc("flow", "run", "hello", "--name", "fg run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("COMPLETED: ")
    sid = newest_session(store)
    view = store.view(sid)
    assert view.name == "fg run" and view.status == "COMPLETED"
    assert f"session {sid} (SIGINT, SIGTERM or SIGHUP pauses it)" in result.stderr  # off a terminal


@sqlite_only
def test_stage_sees_session_stage_attempt_its_env_and_cwd(
    workspace: Path, vc: Vc, store: Store
) -> None:
    (workspace / "sub").mkdir()
    write_workflow(
        workspace,
        "envcheck",
        """
        stages:
          - name: show
            env: {FOO: bar baz}
            cwd: sub
            run: echo "sid=$VC_SESSION_ID stage=$VC_STAGE attempt=$VC_ATTEMPT foo=$FOO pwd=$PWD"
    """,
    )
    result = vc("flow", "run", "envcheck")
    assert result.returncode == 0, result.stderr
    sid = newest_session(store)
    texts = [r.text for r in store.logs(sid, stage="show")]
    assert f"sid={sid} stage=show attempt=1 foo=bar baz pwd={workspace / 'sub'}" in texts


@sqlite_only
def test_a_stage_with_merged_stderr_logs_both_streams_in_order_at_info(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "merged",
        """
        stages:
          - name: both
            stderr: merged
            run: for i in 1 2 3; do echo out $i; echo err $i >&2; done
          - name: missing
            stderr: merged
            run: no-such-command-here
    """,
    )
    assert vc("flow", "run", "merged").returncode == 1
    sid = newest_session(store)
    logged = [(r.level, r.text) for r in store.logs(sid, stage="both")]
    expected = [("INFO", f"{what} {i}") for i in (1, 2, 3) for what in ("out", "err")]
    assert [line for line in logged if line in expected] == expected
    [missing] = [s for s in store.view(sid).stages if s.name == "missing"]
    assert missing.error is not None and "no-such-command-here" in missing.error


@sqlite_only
def test_needs_decide_the_order_of_stages(workspace: Path, vc: Vc, store: Store) -> None:
    write_workflow(
        workspace,
        "ordered",
        """
        stages:
          - {name: c, needs: [b], run: echo c >> order.txt}
          - {name: b, needs: [a], run: echo b >> order.txt}
          - {name: a, run: echo a >> order.txt}
    """,
    )
    assert vc("flow", "run", "ordered").returncode == 0
    assert (workspace / "order.txt").read_text().split() == ["a", "b", "c"]


def test_a_stages_output_comes_after_its_attempt_line_in_the_store_and_the_file(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "eager", "stages:\n  - {name: eager, run: seq 1 200}\n")
    assert vc("flow", "run", "eager").returncode == 0
    sid = newest_session(store)
    texts = [r.text for r in store.logs(sid, stage="eager")]
    attempt = next(i for i, t in enumerate(texts) if t.startswith("attempt 1 (pid "))
    assert texts[attempt + 1 : attempt + 201] == [str(i) for i in range(1, 201)]
    lines = log_file(workspace, sid).read_text().splitlines()
    attempt = next(i for i, line in enumerate(lines) if "| attempt 1 (pid " in line)
    assert [line.rsplit(" | ", 1)[1] for line in lines[attempt + 1 : attempt + 201]] == [
        str(i) for i in range(1, 201)
    ]


def test_progress_lines_set_stage_progress(workspace: Path, vc: Vc, store: Store) -> None:
    write_workflow(
        workspace,
        "prog",
        """
        stages:
          - name: work
            run: |
              echo "::progress 2/5"
              while [ ! -e go1 ]; do sleep 0.02; done
              echo "::progress 90"
              echo "real output"
              while [ ! -e go2 ]; do sleep 0.02; done
    """,
    )
    sid = start_detached(vc, "prog")
    wait_until(lambda: store.stage(sid, "work").progress == 40.0, what="progress 40")
    assert store.view(sid).progress == 40.0
    (workspace / "go1").touch()
    wait_until(lambda: store.stage(sid, "work").progress == 90.0, what="progress 90")
    (workspace / "go2").touch()
    store.wait_status(sid, "COMPLETED")
    texts = [r.text for r in store.logs(sid, stage="work")]
    assert "real output" in texts
    assert not [t for t in texts if t.startswith("::progress")]  # shown as the bar only


# ---- pause, resume, abort -----------------------------------------------------------------------


def test_pause_stops_the_stage_and_resume_continues_where_it_was(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "slow")
    pid = store.wait_stage(sid, "spin", "ACTIVE", with_pid=True).pid
    assert pid is not None
    wait_until(lambda: utime(pid) > 0, what="the stage to use CPU")

    assert vc("flow", "session", "pause", sid).returncode == 0
    paused_at = time.monotonic()
    wait_until(lambda: proc_state(pid) == "T", timeout=5, interval=0.005, what="state T")
    enforced = time.monotonic() - paused_at
    assert enforced < 1.0  # the runner polls at most 100 ms apart while a stage runs
    # The runner records the stage PAUSED right after the signal has taken effect.
    wait_until(lambda: store.stage(sid, "spin").status == "PAUSED", timeout=1, what="PAUSED")
    before = utime(pid)
    time.sleep(0.3)
    assert utime(pid) == before  # a paused stage holds no CPU
    assert proc_state(pid) == "T"

    assert vc("flow", "session", "resume", sid).returncode == 0
    wait_until(lambda: proc_state(pid) != "T", timeout=5, what="SIGCONT")
    wait_until(lambda: utime(pid) > before, timeout=5, what="CPU use again")
    # Recorded ACTIVE right after the signal (and the look for processes that left the
    # group), as the pause was recorded PAUSED.
    wait_until(lambda: store.stage(sid, "spin").status == "ACTIVE", timeout=1, what="ACTIVE")
    stage = store.stage_row(sid, "spin")
    assert (stage.status, stage.attempt, stage.pid) == ("ACTIVE", 1, pid)  # same process

    # the store gets the stage's lines from the log mirror, every half second or so
    def texts() -> list[str]:
        return [r.text for r in store.logs(sid, stage="spin")]

    wait_until(lambda: "started" in texts(), timeout=5, what="the stage's line in the store")
    assert texts().count("started") == 1


def test_abort_kills_the_whole_process_group_including_grandchildren(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "tree",
        """
        stages:
          - name: tree
            run: |
              sleep 60 & echo $! > child.pid
              (sleep 60 & echo $! > grandchild.pid; wait) &
              wait
    """,
    )
    sid = start_detached(vc, "tree")
    main = store.wait_stage(sid, "tree", "ACTIVE", with_pid=True).pid
    assert main is not None
    child, grandchild = read_pid(workspace / "child.pid"), read_pid(workspace / "grandchild.pid")
    assert os.getpgid(grandchild) == main  # all in the stage's own process group

    assert vc("flow", "session", "abort", sid).returncode == 0
    for pid in (main, child, grandchild):
        wait_until(partial(gone, pid), timeout=5, what=f"pid {pid} gone")
    view = store.view(sid)
    assert (view.status, view.reason) == ("FAILED", "aborted")
    # The runner records the exit code after it has reaped the group: just after the pids go.
    wait_until(lambda: store.view(sid).runner_pid is None, timeout=5, what="runner released")
    row = store.stage_row(sid, "tree")
    assert (row.status, row.error, row.exit_code) == ("FAILED", "aborted", -signal.SIGTERM)


@sqlite_only
def test_stage_ignoring_sigterm_is_killed_after_kill_timeout(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "stubborn",
        """
        stages:
          - name: stubborn
            kill_timeout: 1
            run: |
              trap '' TERM
              echo $$ > stubborn.pid
              while :; do sleep 0.05; done
    """,
    )
    sid = start_detached(vc, "stubborn")
    pid = read_pid(workspace / "stubborn.pid")
    store.wait_stage(sid, "stubborn", "ACTIVE", with_pid=True)
    assert vc("flow", "session", "abort", sid).returncode == 0
    time.sleep(0.3)
    assert not gone(pid)  # SIGTERM is ignored ...
    wait_until(lambda: gone(pid), timeout=5, interval=0.005, what="SIGKILL")
    killed_at = time.time()
    with store.factory() as db:
        aborted_at = [e.at for e in list_events(db, sid) if e.op == "abort"][-1]
    assert killed_at - aborted_at >= 1.0  # ... until kill_timeout (1 s) has passed
    wait_until(
        lambda: store.stage(sid, "stubborn").exit_code == -signal.SIGKILL,
        timeout=5,
        what="exit code -9 recorded",
    )


@sqlite_only
def test_timeout_fails_the_stage_and_session_with_reason_timeout(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "late",
        """
        stages:
          - {name: late, timeout: 0.5, run: sleep 30}
          - {name: never, run: echo never}
    """,
    )
    started = time.monotonic()
    result = vc("flow", "run", "late")
    assert time.monotonic() - started < 10
    assert result.returncode == 1
    assert "timeout" in result.stderr
    view = store.view(newest_session(store))
    assert (view.status, view.reason) == ("FAILED", "timeout")
    late, never = view.stages
    assert (late.status, late.error, late.exit_code) == ("FAILED", "timeout", -signal.SIGTERM)
    assert never.status == "PENDING"


def test_a_timeout_says_so_when_it_fires_not_only_once_the_stage_is_gone(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A stage that ignores SIGTERM runs on for its kill_timeout after its timeout: the
    log says at once that the timeout fired and what comes next."""
    write_workflow(
        workspace,
        "deaf",
        """
        stages:
          - name: deaf
            timeout: 0.5
            kill_timeout: 30
            run: "echo $$ > deaf.pid; trap '' TERM; while :; do sleep 0.1; done"
    """,
    )
    sid = start_detached(vc, "deaf")
    with killed_on_the_way_out(workspace / "deaf.pid"):
        wait_until(
            lambda: any("SIGTERM sent" in r.text for r in store.logs(sid, stage="deaf")),
            timeout=5,
            what="the timeout's line",
        )
        line = [r for r in store.logs(sid, stage="deaf") if "SIGTERM sent" in r.text][-1]
        assert line.text == "timed out after 0.5s: SIGTERM sent, SIGKILL after 30s unless it exits"
        assert line.level == "WARNING"
        assert store.view(sid).status == "ACTIVE"  # still being stopped
        assert vc("flow", "session", "abort", sid).returncode == 0


@sqlite_only
def test_a_stage_that_exited_before_its_timeout_is_not_timed_out_while_its_output_is_awaited(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A child it left holds its output open: the runner waits READER_GRACE for it, and
    that wait is not the stage's running time (it succeeded: no timeout, no retry)."""
    write_workflow(
        workspace,
        "served",
        """
        stages:
          - name: served
            run: "sleep 30 & echo $! > service.pid; sleep 1; echo done"
            timeout: 2
            retries: 1
    """,
    )
    result = vc("flow", "run", "served")
    service = read_pid(workspace / "service.pid")
    try:
        assert result.returncode == 0, result.stderr
        (stage,) = store.view(newest_session(store)).stages
        assert (stage.status, stage.attempt, stage.exit_code) == ("COMPLETED", 1, 0)
        assert not gone(service)  # left alone, as what a stage leaves running always is
    finally:
        os.kill(service, signal.SIGKILL)


def test_retries_run_a_failing_stage_again_as_new_attempts(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "flaky",
        """
        stages:
          - name: flaky
            retries: 3
            run: echo $VC_ATTEMPT >> attempts.txt; [ "$VC_ATTEMPT" -ge 3 ]
    """,
    )
    result = vc("flow", "run", "flaky")
    assert result.returncode == 0, result.stderr
    assert (workspace / "attempts.txt").read_text().split() == ["1", "2", "3"]
    stage = store.stage(newest_session(store), "flaky")
    assert (stage.status, stage.attempt, stage.exit_code) == ("COMPLETED", 3, 0)


def test_a_stage_that_dies_while_paused_runs_again_on_resume_when_retries_are_left(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "killed",
        """
        stages:
          - name: long
            retries: 2
            run: '[ "$VC_ATTEMPT" -ge 2 ] || exec sleep 60'
          - {name: after, run: echo after}
    """,
    )
    sid = start_detached(vc, "killed")
    pid = store.wait_stage(sid, "long", "ACTIVE", with_pid=True).pid
    assert vc("flow", "session", "pause", sid).returncode == 0
    store.wait_stage(sid, "long", "PAUSED")
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: gone(pid), what="the stage killed")
    time.sleep(0.5)  # the runner hears of the death while the session is paused
    assert vc("flow", "session", "resume", sid).returncode == 0
    view = store.wait_status(sid, "COMPLETED")
    long = next(s for s in view.stages if s.name == "long")
    assert (long.status, long.attempt) == ("COMPLETED", 2)


def test_a_retry_never_runs_beside_what_the_failed_attempt_left_in_its_group(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "lefty",
        """
        stages:
          - name: work
            retries: 1
            run: |
              if [ "$VC_ATTEMPT" = 1 ]; then
                sleep 60 >/dev/null 2>&1 &
                echo $! > left.pid
                exit 1
              fi
              state=$(awk '{print $3}' "/proc/$(cat left.pid)/stat" 2>/dev/null)
              [ -n "$state" ] && [ "$state" != Z ] && exit 9
              exit 0
    """,
    )
    result = vc("flow", "run", "lefty")
    with killed_on_the_way_out(workspace / "left.pid") as [left]:
        assert result.returncode == 0, result.stderr
        assert gone(left)
        assert store.stage(newest_session(store), "work").attempt == 2


#: A stage that leaves a `sleep` in its group (its pid in left.pid) and waits for it; with
#: ``retries: 1`` its second attempt ends at once.
LEAVES_A_SLEEP = """
    stages:
      - name: work
        retries: {retries}
        run: |
          [ "$VC_ATTEMPT" = 1 ] || exit 0
          sleep 60 >/dev/null 2>&1 &
          echo $! > left.pid
          wait
"""


@contextmanager
def stage_killed_while_paused(
    workspace: Path, vc: Vc, store: Store, retries: int
) -> Iterator[tuple[str, int]]:
    """:data:`LEAVES_A_SLEEP` running, the session paused (the leftover stopped with its
    group), then the stage's main process killed: the session and the leftover's pid."""
    write_workflow(workspace, "leaves", LEAVES_A_SLEEP.format(retries=retries))
    sid = start_detached(vc, "leaves")
    pid = store.wait_stage(sid, "work", "ACTIVE", with_pid=True).pid
    with killed_on_the_way_out(workspace / "left.pid") as [left]:
        assert vc("flow", "session", "pause", sid).returncode == 0
        store.wait_stage(sid, "work", "PAUSED")
        wait_until(lambda: proc_state(left) == "T", what="the leftover stopped")
        os.kill(pid, signal.SIGKILL)
        yield sid, left


def test_what_a_stage_killed_while_paused_left_is_removed_before_its_retry(
    workspace: Path, vc: Vc, store: Store
) -> None:
    with stage_killed_while_paused(workspace, vc, store, retries=1) as (sid, left):
        wait_until(lambda: gone(left), what="the failed attempt's leftover removed")
        assert vc("flow", "session", "resume", sid).returncode == 0
        assert store.wait_status(sid, "COMPLETED").stages[0].attempt == 2


def test_what_a_stage_killed_while_paused_left_is_not_left_stopped(
    workspace: Path, vc: Vc, store: Store
) -> None:
    with stage_killed_while_paused(workspace, vc, store, retries=0) as (_, left):
        wait_until(lambda: proc_state(left) not in ("T", "t"), what="the leftover continued")


def test_removing_a_failed_attempts_stubborn_leftovers_does_not_hold_up_a_pause(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The leftover ignores SIGTERM, so it goes only at kill_timeout: meanwhile the loop
    still enforces a pause on the other stage, and the retry does not start paused."""
    write_workflow(
        workspace,
        "stubborn",
        """
        max_parallel: 2
        stages:
          - name: flaky
            needs: []
            retries: 1
            kill_timeout: 30
            run: |
              if [ "$VC_ATTEMPT" = 2 ]; then touch second.attempt; exit 0; fi
              (trap '' TERM; exec sleep 300) >/dev/null 2>&1 &
              echo $! > left.pid
              exit 1
          - {name: busy, needs: [], run: 'echo $$ > busy.pid; exec sleep 300'}
    """,
    )
    sid = start_detached(vc, "stubborn")
    with killed_on_the_way_out(workspace / "left.pid", workspace / "busy.pid") as (left, busy):
        wait_until(
            lambda: (
                store.stage(sid, "flaky").attempt == 1
                and "retrying" in " ".join(r.text for r in store.logs(sid, stage="flaky"))
            ),
            what="the first attempt failed",
        )
        assert vc("flow", "session", "pause", sid).returncode == 0
        wait_until(lambda: proc_state(busy) == "T", timeout=5, what="the other stage paused")
        assert not gone(left)  # still within its kill_timeout
        assert not (workspace / "second.attempt").exists()


def test_a_pause_stops_what_a_failed_attempt_left_and_holds_its_removal_until_the_resume(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A paused session holds no CPU, not even in what a failed attempt left on its way
    out: the pause stops it (SIGSTOP) and its SIGKILL waits; after the resume it goes
    within its kill_timeout and the retry runs."""
    write_workflow(
        workspace,
        "stubborn",
        """
        stages:
          - name: flaky
            retries: 1
            kill_timeout: 2
            run: |
              if [ "$VC_ATTEMPT" = 2 ]; then touch second.attempt; exit 0; fi
              (trap '' TERM; exec sleep 300) >/dev/null 2>&1 &
              echo $! > left.pid
              exit 1
    """,
    )
    sid = start_detached(vc, "stubborn")
    with killed_on_the_way_out(workspace / "left.pid") as [left]:
        wait_until(
            lambda: "retrying" in " ".join(r.text for r in store.logs(sid, stage="flaky")),
            what="the first attempt failed",
        )
        assert vc("flow", "session", "pause", sid).returncode == 0
        wait_until(lambda: proc_state(left) == "T", timeout=5, what="the leftover stopped")
        time.sleep(3)  # past its kill_timeout: the pause holds the SIGKILL too
        assert proc_state(left) == "T"
        assert not (workspace / "second.attempt").exists()
        assert vc("flow", "session", "resume", sid).returncode == 0
        wait_until(lambda: gone(left), timeout=8, what="the leftover removed after the resume")
        wait_until(
            lambda: store.stage(sid, "flaky").status == "COMPLETED", what="the retry completed"
        )


def test_a_stage_being_stopped_for_its_timeout_does_not_hold_up_a_pause(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The timed-out stage ignores SIGTERM, so it goes only at its kill_timeout; a pause
    meanwhile stops it and the other branch (SIGSTOP), and its SIGKILL waits for the
    resume: the timeout then fails it, as it would have without the pause."""
    write_workflow(
        workspace,
        "slowstop",
        """
        max_parallel: 2
        stages:
          - name: stuck
            needs: []
            timeout: 1
            kill_timeout: 3
            run: "echo $$ > stuck.pid; trap '' TERM; while :; do :; done"
          - {name: busy, needs: [], run: 'echo $$ > busy.pid; exec sleep 300'}
    """,
    )
    sid = start_detached(vc, "slowstop")
    with killed_on_the_way_out(workspace / "stuck.pid", workspace / "busy.pid") as [stuck, busy]:
        time.sleep(1.8)  # past its timeout: SIGTERM sent, ignored
        assert vc("flow", "session", "pause", sid).returncode == 0
        wait_until(lambda: proc_state(busy) == "T", timeout=3, what="the other stage paused")
        wait_until(lambda: proc_state(stuck) == "T", timeout=3, what="the stopping stage paused")
        time.sleep(3.5)  # past its kill_timeout
        assert proc_state(stuck) == "T", "the SIGKILL waits for the resume"
        assert vc("flow", "session", "resume", sid).returncode == 0
        wait_until(lambda: gone(stuck), timeout=8, what="SIGKILL once its time ran out")
        failed = store.wait_status(sid, "FAILED", timeout=10)
        assert failed.reason is not None and "timeout" in failed.reason
        assert store.stage(sid, "stuck").error == "timeout"
        assert store.stage(sid, "busy").error == "cancelled: stuck failed"


#: A stage that cleans up for a second at SIGTERM, after its one-second timeout, with
#: plenty of kill_timeout; and a branch beside it.
CLEANS_UP = """
    max_parallel: 2
    stages:
      - name: slow
        needs: []
        timeout: 1
        kill_timeout: 30
        run: |
          echo $$ > slow.pid
          trap 'sleep 1; touch cleaned; exit 0' TERM
          while :; do sleep 0.1; done
      - {name: beside, needs: [], run: 'echo $$ > beside.pid; exec sleep 300'}
"""


def _paused_during_the_stop(workspace: Path, vc: Vc, store: Store, sid: str) -> tuple[int, int]:
    slow, beside = read_pid(workspace / "slow.pid"), read_pid(workspace / "beside.pid")
    time.sleep(1.3)  # past the timeout: SIGTERM sent, its clean-up under way
    assert vc("flow", "session", "pause", sid).returncode == 0
    wait_until(lambda: proc_state(slow) == "T", timeout=3, what="the stopping stage paused")
    wait_until(lambda: proc_state(beside) == "T", timeout=3, what="the other stage paused")
    return slow, beside


def test_an_abort_while_paused_during_a_timeouts_stop_lets_its_clean_up_run(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "cleans", CLEANS_UP)
    sid = start_detached(vc, "cleans")
    with killed_on_the_way_out(workspace / "slow.pid", workspace / "beside.pid") as [_, beside]:
        _paused_during_the_stop(workspace, vc, store, sid)
        assert vc("flow", "session", "abort", sid).returncode == 0
        wait_until((workspace / "cleaned").exists, timeout=8, what="its clean-up ran")
        wait_until(lambda: gone(beside), timeout=10, what="the other stage removed")
        assert store.wait_status(sid, "FAILED", timeout=10).status == "FAILED"


def test_ctrl_c_while_paused_during_a_timeouts_stop_ends_the_run(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(workspace, "cleans", CLEANS_UP)
    proc = start_foreground("cleans")
    try:
        sid = newest_session(store)
        _paused_during_the_stop(workspace, vc, store, sid)
        os.killpg(proc.pid, signal.SIGINT)
        proc.wait(timeout=15)
        assert (workspace / "cleaned").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        for name in ("slow.pid", "beside.pid"):
            pid = read_pid(workspace / name)
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_retry_never_starts_in_a_session_paused_while_a_timeouts_leftovers_go(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """Its main process ends at SIGTERM, a child of it does not: the stop waits for the
    child until kill_timeout. A pause meanwhile: the retry waits for the resume."""
    write_workflow(
        workspace,
        "leftover",
        """
        stages:
          - name: slow
            timeout: 1
            retries: 1
            kill_timeout: 2
            run: |
              if [ "$VC_ATTEMPT" = 2 ]; then touch second.attempt; exit 0; fi
              (trap '' TERM; exec sleep 300) &
              echo $! > child.pid
              trap 'exit 0' TERM
              while :; do sleep 0.1; done
    """,
    )
    sid = start_detached(vc, "leftover")
    with killed_on_the_way_out(workspace / "child.pid") as [child]:
        time.sleep(1.4)  # the main process ended at SIGTERM; the child holds the stop
        assert vc("flow", "session", "pause", sid).returncode == 0
        wait_until(lambda: gone(child), timeout=8, what="the child killed at kill_timeout")
        time.sleep(1.0)
        assert not (workspace / "second.attempt").exists()
        assert store.stage(sid, "slow").attempt == 1
        assert vc("flow", "session", "resume", sid).returncode == 0
        store.wait_status(sid, "COMPLETED", timeout=15)


def test_a_timeout_is_the_failure_named_even_when_another_branch_fails_during_its_stop(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The timed-out stage takes its kill_timeout to clean up; the other branch fails
    meanwhile: the timeout came first, so it is the session's reason and the other branch
    is the one cancelled."""
    write_workflow(
        workspace,
        "twofail",
        """
        max_parallel: 2
        stages:
          - name: slow
            needs: []
            timeout: 1
            kill_timeout: 10
            run: "trap 'sleep 2; exit 0' TERM; sleep 100 & wait"
          - {name: other, needs: [], run: 'sleep 2; exit 1'}
    """,
    )
    sid = start_detached(vc, "twofail")
    failed = store.wait_status(sid, "FAILED", timeout=20)
    assert failed.reason == "timeout"
    assert store.stage(sid, "slow").error == "timeout"
    assert store.stage(sid, "other").error == "cancelled: slow failed"


def test_a_pause_between_two_attempts_shows_the_stage_paused_not_running(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "spin",
        """
        stages:
          - {name: spin, retries: 1000, run: "sleep 0.02; exit 1"}
    """,
    )
    sid = start_detached(vc, "spin")
    wait_until(lambda: store.stage(sid, "spin").attempt >= 3, what="a few attempts")
    assert vc("flow", "session", "pause", sid).returncode == 0
    wait_until(
        lambda: store.stage(sid, "spin").status == "PAUSED", timeout=5, what="the stage PAUSED"
    )
    paused_at = store.stage(sid, "spin").attempt
    time.sleep(0.5)
    assert store.stage(sid, "spin").attempt == paused_at  # nothing ran meanwhile
    assert vc("flow", "session", "resume", sid).returncode == 0
    wait_until(lambda: store.stage(sid, "spin").attempt > paused_at, what="the next attempt")
    assert vc("flow", "session", "abort", sid).returncode == 0


# on PostgreSQL: test_retries_run_a_failing_stage_again_as_new_attempts
@covered_on_postgresql_by_another
def test_retries_exhausted_fail_the_session_with_the_last_exit_code(
    workspace: Path, vc: Vc, store: Store
) -> None:
    write_workflow(
        workspace,
        "hopeless",
        """
        stages:
          - {name: hopeless, retries: 1, run: exit 5}
    """,
    )
    result = vc("flow", "run", "hopeless")
    assert result.returncode == 1
    view = store.view(newest_session(store))
    stage = view.stages[0]
    assert (stage.status, stage.attempt, stage.exit_code) == ("FAILED", 2, 5)
    assert view.status == "FAILED" and view.reason == "stage hopeless failed: exit code 5"


def test_manual_gate_pauses_waiting_and_resume_completes_it(vc: Vc, store: Store) -> None:
    sid = start_detached(vc, "gate")
    view = store.wait_status(sid, "PAUSED")
    assert view.reason == "waiting: approve"
    assert [(s.name, s.status) for s in view.stages] == [
        ("build", "COMPLETED"),
        ("approve", "PAUSED"),
        ("deploy", "PENDING"),
    ]
    runner = view.runner_pid
    assert runner is not None and not view.orphaned  # its runner waits for the resume

    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0 and "runner started" not in result.stdout
    view = store.wait_status(sid, "COMPLETED")
    assert [s.status for s in view.stages] == ["COMPLETED"] * 3
    assert "deployed" in [r.text for r in store.logs(sid, stage="deploy")]


def test_a_gate_approved_then_paused_and_resumed_is_passed_once(vc: Vc, store: Store) -> None:
    """The runner sees the approval while the session is paused by hand, then the resume:
    the gate is passed (and said so) once."""
    from store import FlowSessionManager

    sid = start_detached(vc, "gate")
    store.wait_status(sid, "PAUSED")
    with store.factory() as db:  # back to back: the runner sees the gate passed, PAUSED
        sessions = FlowSessionManager(db, actor="tester")
        sessions.approve(sid, "approve")
        sessions.pause(sid)

    def passed() -> list[str]:
        return [r.text for r in store.logs(sid, stage="approve") if r.text.endswith("passed")]

    wait_until(passed, what="the runner to see the gate passed")
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED")
    assert passed() == ["manual gate approve passed"]


@covered_on_postgresql_by_another
def test_a_waiting_gate_shows_its_checklist_in_the_log_show_and_status(
    vc: Vc, store: Store
) -> None:
    sid = start_detached(vc, "gate")
    store.wait_status(sid, "PAUSED")
    waiting = wait_until(
        lambda: [r.text for r in store.logs(sid, stage="approve") if "waiting" in r.text],
        what="the gate's waiting line in the store",
    )[0]
    assert waiting == (
        f"manual gate approve: waiting for 'vc flow session approve {sid[:12]} approve'; "
        "checklist: changelog reviewed"
    )
    assert "checklist: changelog reviewed" in vc("flow", "session", "show", sid).stdout
    assert "check    changelog reviewed" in vc("flow", "status", sid).stdout
    stages = session_json(vc, "flow", "session", "show", sid)["stages"]
    assert [s["checklist"] for s in stages] == [[], ["changelog reviewed"], []]
    vc("flow", "session", "abort", sid)


@covered_on_postgresql_by_another
def test_run_off_a_terminal_prints_a_line_per_stage_start_and_outcome(
    workspace: Path, store: Store
) -> None:
    write_workflow(
        workspace,
        "retried",
        """
        stages:
          - {name: first, run: echo one}
          - {name: flaky, run: "test -e again || { touch again; exit 3; }", retries: 1}
    """,
    )
    proc = start_foreground("retried", "--name", "nightly run")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    sid = newest_session(store)
    assert err.splitlines()[0] == f"session {sid} (SIGINT, SIGTERM or SIGHUP pauses it)"
    lines = [line.split(" ", 1)[1] for line in err.splitlines()[1:]]  # without the time
    assert lines == [
        "first: started",
        "first: stage completed (attempt 1)",
        "flaky: started",
        "flaky: attempt 1 failed: exit code 3; retrying (1 of 1 retries)",
        "flaky: stage completed (attempt 2)",
    ]
    assert out == f"COMPLETED: {sid[:12]} (nightly run)\n"  # the id and the name


@covered_on_postgresql_by_another
def test_run_off_a_terminal_says_started_before_a_stage_that_cannot_start_failed(
    workspace: Path, store: Store
) -> None:
    write_workflow(workspace, "nowhere", "stages:\n  - {name: bad, run: 'true', cwd: gone}\n")
    proc = start_foreground("nowhere")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    lines = [line.split(" ", 1)[1] for line in err.splitlines()[1:-1]]  # time, error line
    assert lines == ["bad: started", f"bad: stage failed: cwd does not exist: {workspace}/gone"]


def _wake_ups(pid: int) -> int:
    """How many times the threads of ``pid`` went to sleep and were woken again (their
    voluntary context switches: a wait, a sleep, a socket read; the kernel's preemptions
    of a busy machine are not counted)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{tid}/status") as fh:
            for line in fh:
                if line.startswith("voluntary_ctxt_switches:"):
                    total += int(line.split()[1])
    return total


#: Wake-ups a second an idle runner may cost, all threads (measured: about 7.5 on SQLite,
#: 12 on PostgreSQL, 14 with two busy processes beside it): its poll for changes every
#: 200 ms (the design's bound is 250 ms), its heartbeat every 2 s, its log mirror's
#: batching every 500 ms; on PostgreSQL also the LISTEN thread's look every 500 ms (it
#: woke every 100 ms: about 20 in all) and the round trips of the state read it makes
#: each second.
IDLE_WAKE_UPS = {"sqlite": 12.0, "postgresql": 20.0}


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_an_idle_runner_wakes_up_only_as_often_as_it_must(
    vc: Vc, store: Store, db_url: str
) -> None:
    """A paused runner holds no stage CPU, and users keep dozens of them: what one costs
    is its wake-ups (each takes 0.4 to 1.4 ms of CPU on the 2-core VM this was written on,
    depending on its load) and the little it does at each. Counted, not timed: the count
    of its waits does not depend on the machine's speed or load. (Its CPU, measured:
    README, "Benchmarks".)"""
    sid = start_detached(vc, "gate")
    view = store.wait_status(sid, "PAUSED")
    runner = view.runner_pid
    assert runner is not None
    # Let it settle into its idle poll (start-up work, its change watcher or LISTEN
    # connection opened a second after it started), then count over three heartbeats.
    time.sleep(1.5)
    before, started = _wake_ups(runner), time.monotonic()
    time.sleep(6.0)
    rate = (_wake_ups(runner) - before) / (time.monotonic() - started)
    limit = IDLE_WAKE_UPS["sqlite" if db_url.startswith("sqlite") else "postgresql"]
    assert rate <= limit, f"an idle runner woke up {rate:.1f} times a second"


# on PostgreSQL: test_manual_gate_pauses_waiting_and_resume_completes_it (a runner waiting,
#   paused)
@covered_on_postgresql_by_another
def test_pause_between_stages_holds_the_next_stage_until_resume(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """`WORKFLOW:STAGE` runs that stage only and leaves the session PAUSED (not ACTIVE
    without a runner): resume starts a runner that carries on with the next stage."""
    write_workflow(
        workspace,
        "two",
        """
        stages:
          - {name: one, run: echo one >> runs.txt}
          - {name: two, run: echo two >> runs.txt}
    """,
    )
    result = vc("flow", "run", "two:one")
    assert result.returncode == 0, result.stderr
    sid = newest_session(store)
    view = store.view(sid)
    assert view.status == "PAUSED" and view.runner_pid is None and not view.orphaned
    assert view.reason == "ran one only: resume to run the rest"
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0 and "runner started" in result.stdout
    view = store.wait_status(sid, "COMPLETED")
    assert (workspace / "runs.txt").read_text().split() == ["one", "two"]
    assert [s.attempt for s in view.stages] == [1, 1]


def test_run_of_one_stage_after_another_steps_through_a_session_in_the_foreground(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """A session PAUSED after `run W:STAGE --session ID` has no runner: the next such run
    resumes it and runs that stage only, here; a run without STAGE runs the rest."""
    write_workflow(
        workspace,
        "steps",
        """
        stages:
          - {name: one, run: echo one >> runs.txt}
          - {name: two, run: echo two >> runs.txt}
          - {name: three, run: echo three >> runs.txt}
    """,
    )
    sid = vc("flow", "session", "create", "steps").stdout.strip()
    assert vc("flow", "run", "steps:one", "--session", sid).returncode == 0
    result = vc("flow", "run", "steps:two", "--session", sid)
    assert result.returncode == 0, result.stderr
    assert "stage two completed; ran two only" in result.stdout
    assert (workspace / "runs.txt").read_text().split() == ["one", "two"]
    assert store.view(sid).status == "PAUSED"
    result = vc("flow", "run", "steps", "--session", sid)
    assert result.returncode == 0, result.stderr
    view = store.view(sid)
    assert view.status == "COMPLETED"
    assert [s.attempt for s in view.stages] == [1, 1, 1]
    assert (workspace / "runs.txt").read_text().split() == ["one", "two", "three"]
    resumes = [r.text for r in store.logs(sid) if r.text.startswith("resume PAUSED -> ACTIVE")]
    assert len(resumes) == 2  # each run said what it did to the session


# on PostgreSQL: test_manual_gate_pauses_waiting_and_resume_completes_it (a runner waiting,
#   paused)
@covered_on_postgresql_by_another
def test_stage_that_exits_before_the_pause_signal_completes_and_the_next_waits(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """The stage's main process is gone when the pause arrives (a background child still
    holds its output open, so the runner is still on that stage): nothing can be stopped,
    the stage is recorded COMPLETED from its exit code, and the next stage waits for the
    resume. The pause goes through the manager (what `vc flow session pause` calls) to fit
    in the stage's last second reliably."""
    write_workflow(
        workspace,
        "exits",
        """
        stages:
          - name: one
            run: echo $$ > one.pid; sleep 1.5 &
          - {name: two, run: echo two > two.txt}
    """,
    )
    sid = start_detached(vc, "exits")
    pid = read_pid(workspace / "one.pid")
    wait_until(lambda: gone(pid), timeout=5, what="stage one's main process exits")
    store.pause(sid)
    store.wait_stage(sid, "one", "COMPLETED", timeout=10)
    time.sleep(0.5)
    view = store.view(sid)
    assert view.status == "PAUSED"
    assert [(s.name, s.status, s.exit_code) for s in view.stages] == [
        ("one", "COMPLETED", 0),
        ("two", "PENDING", None),
    ]
    assert not (workspace / "two.txt").exists()
    assert vc("flow", "session", "resume", sid).returncode == 0
    store.wait_status(sid, "COMPLETED")
    assert (workspace / "two.txt").read_text().strip() == "two"


def test_abort_while_paused_kills_the_stopped_stage(vc: Vc, store: Store, nap: str) -> None:
    sid = start_detached(vc, nap)
    pid = store.wait_stage(sid, "nap", "ACTIVE", with_pid=True).pid
    assert pid is not None
    assert vc("flow", "session", "pause", sid).returncode == 0
    wait_until(lambda: proc_state(pid) == "T", timeout=5, what="state T")
    assert vc("flow", "session", "abort", sid).returncode == 0
    wait_until(lambda: gone(pid), timeout=5, what="the stopped stage to die")
    assert store.view(sid).reason == "aborted"


def test_a_pause_while_a_failure_cancels_stubborn_branches_stops_them_until_the_resume(
    workspace: Path, vc: Vc, store: Store
) -> None:
    """``fail_fast``: the branch beside a failure ignores SIGTERM, so it goes only at its
    kill_timeout; a pause meanwhile stops it (a paused session holds no CPU) and its
    SIGKILL waits for the resume; the session then fails as it would have."""
    write_workflow(
        workspace,
        "failfast",
        """
        max_parallel: 3
        stages:
          - {name: bad, needs: [], run: "sleep 0.5; exit 3"}
          - name: one
            needs: []
            kill_timeout: 3
            run: "echo $$ > one.pid; trap '' TERM; while :; do :; done"
          - name: two
            needs: []
            kill_timeout: 3
            run: "echo $$ > two.pid; trap '' TERM; while :; do :; done"
    """,
    )
    sid = start_detached(vc, "failfast")
    with killed_on_the_way_out(workspace / "one.pid", workspace / "two.pid") as branches:
        wait_until(lambda: store.stage(sid, "bad").status == "FAILED", what="the failure")
        assert vc("flow", "session", "pause", sid).returncode == 0
        for pid in branches:  # two stops at once, each in a thread of its own
            wait_until(lambda pid=pid: proc_state(pid) == "T", timeout=3, what="a branch stopped")
        time.sleep(3.5)  # past their kill_timeout
        assert [proc_state(pid) for pid in branches] == ["T", "T"], "the KILL waits"
        assert store.view(sid).status == "PAUSED"
        assert vc("flow", "session", "resume", sid).returncode == 0
        for pid in branches:
            wait_until(lambda pid=pid: gone(pid), timeout=8, what="SIGKILL once its time ran out")
        failed = store.wait_status(sid, "FAILED", timeout=10)
        assert failed.reason == "stage bad failed: exit code 3"
        assert store.stage(sid, "one").error == store.stage(sid, "two").error
        assert store.stage(sid, "one").error == "cancelled: bad failed"
