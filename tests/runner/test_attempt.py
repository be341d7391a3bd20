"""One running attempt on its own (app.runner.attempt): real processes, no store."""

from __future__ import annotations

import time
from pathlib import Path

from app.logging import LogFiles, Logging
from app.runner.attempt import RunningAttempt, StageOutput, terminate_all
from app.runner.outputs import OutputRecorder
from app.runner.process import StageProcess, wait_any
from store.queries import StageView
from tests.runner.runner_testkit import proc_state

SID = "0123456789abcdef0123456789abcdef"


def attempt(
    tmp_path: Path, command: str, *, timeout: float | None = None, kill_timeout: float = 5.0
) -> RunningAttempt:
    stage = StageView(1, "s", "task", "ACTIVE", 0.0, 1, None, None, None, None)
    output = StageOutput(Logging(LogFiles(tmp_path), None, handler_id=-1), SID, "s")
    output.release()
    proc = StageProcess(
        command, env={"PATH": "/usr/bin:/bin"}, cwd=None, on_lines=output, kill_timeout=1.0
    )
    proc.start()
    recorder = OutputRecorder(lambda text: None)
    return RunningAttempt(
        stage, 1, proc, output, recorder, timeout=timeout, kill_timeout=kill_timeout
    )


def test_paused_time_does_not_count_towards_the_timeout(tmp_path: Path) -> None:
    running = attempt(tmp_path, "sleep 30", timeout=0.3)
    try:
        assert running.pause()
        for _ in range(5):
            time.sleep(0.1)
            running.tick(time.monotonic())
        assert not running.timed_out()
        running.resume()
        time.sleep(0.4)
        running.tick(time.monotonic())
        assert running.timed_out()
    finally:
        running.terminate()


def test_pause_stops_the_group_and_resume_continues_it(tmp_path: Path) -> None:
    running = attempt(tmp_path, "sleep 30")
    try:
        assert running.pause() and not running.pause()  # a second pause is no news
        assert running.proc.pid is not None
        deadline = time.monotonic() + 5
        while proc_state(running.proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc_state(running.proc.pid) == "T"
        assert running.resume() and not running.resume()
    finally:
        running.terminate()


def test_progress_writes_are_coalesced_but_the_last_value_is_written_at_the_exit(
    tmp_path: Path,
) -> None:
    running = attempt(tmp_path, "echo '::progress 10'; echo '::progress 20'; sleep 0.2")
    try:
        deadline = time.monotonic() + 5
        while running.proc.progress != 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        now = time.monotonic()
        assert running.progress_due(now, False) == 20
        running.progress_written = 20
        assert running.progress_due(now, False) is None  # nothing new
        running.progress_written = 10
        assert running.progress_due(now + 0.01, False) is None  # too soon after the last
        assert running.progress_due(now + 0.01, True) == 20  # the exit writes it anyway
    finally:
        running.terminate()


def test_terminate_all_waits_one_kill_timeout_not_one_per_stage(tmp_path: Path) -> None:
    stubborn = "trap '' TERM; sleep 30"
    attempts = [attempt(tmp_path, stubborn, kill_timeout=1.0) for _ in range(3)]
    time.sleep(0.2)  # the traps are set
    started = time.monotonic()
    codes = terminate_all(attempts)
    assert time.monotonic() - started < 2.5
    assert codes == [-9, -9, -9]


def test_wait_any_returns_when_one_of_several_exits(tmp_path: Path) -> None:
    long = [attempt(tmp_path, "sleep 30") for _ in range(2)]
    quick = attempt(tmp_path, "sleep 0.2")
    try:
        started = time.monotonic()
        wait_any([a.proc for a in (*long, quick)], 10)
        assert time.monotonic() - started < 5
        assert quick.proc.wait(1) == 0
    finally:
        terminate_all(long)
