"""Stage process supervision against real processes and real signals (app/runner/process.py).

Nothing is mocked: each test starts small shell commands and observes them through /proc, so
what is checked is what a user would see (a paused stage really holds no CPU, a terminated
stage really leaves no grandchild behind). Waits poll /proc instead of sleeping fixed times.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from app.runner import process as process_mod
from app.runner.lines import last_progress, parse_progress
from app.runner.process import (
    MAX_LINE_BYTES,
    StageProcess,
    StageStartError,
    find_session_processes,
    kill_groups,
    kill_leftover_group,
    process_start_time,
)
from tests.runner.runner_testkit import proc_state as state
from tests.runner.runner_testkit import stat_fields, utime
from tests.waiting import wait_until

ENV = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}

# ---- helpers ----------------------------------------------------------------------------------


def gone(pid: int) -> bool:
    """No such process any more, or only a zombie waiting for a parent that is not us."""
    return state(pid) in (None, "Z", "X")


class Collector:
    """on_lines target: thread-safe enough (list.extend is atomic) and records batch sizes."""

    def __init__(self) -> None:
        self.lines: list[tuple[float, str, str]] = []
        self.batches = 0

    def __call__(self, batch: list[tuple[float, str, str]]) -> None:
        self.batches += 1
        self.lines.extend(batch)

    def texts(self, stream: str | None = None) -> list[str]:
        return [t for _, s, t in list(self.lines) if stream is None or s == stream]


@pytest.fixture
def run() -> Iterator[Callable[..., tuple[StageProcess, Collector]]]:
    """Start a stage; whatever is still running at the end of the test is killed."""
    started: list[StageProcess] = []

    def _run(
        command: str,
        *,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        on_lines: Callable[[list[tuple[float, str, str]]], None] | None = None,
    ) -> tuple[StageProcess, Collector]:
        collector = Collector()
        proc = StageProcess(
            command, env=env or ENV, cwd=cwd, on_lines=on_lines or collector, kill_timeout=1.0
        )
        proc.start()
        started.append(proc)
        return proc, collector

    yield _run
    for proc in started:
        if proc.running:
            proc.terminate(0.2)


def first_line(collector: Collector, timeout: float = 2.0) -> str:
    wait_until(lambda: bool(collector.lines), "first output line", timeout)
    return collector.lines[0][2]


# ---- progress ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("::progress 50", 50.0),
        ("::progress 0", 0.0),
        ("::progress 100", 100.0),
        ("::progress 12.5", 12.5),
        ("::progress .5", 0.5),
        ("::progress 150", 100.0),
        ("::progress -3", 0.0),
        ("::progress 42%", 42.0),
        ("::progress 3/4", 75.0),
        ("::progress 3 / 4", 75.0),
        ("::progress 1.5/3", 50.0),
        ("::progress 7/5", 100.0),
        ("::progress 0/10", 0.0),
        ("::progress 5/0", None),
        ("  ::progress 30  \n", 30.0),
        ("\t::progress 1/3\r", pytest.approx(100 / 3)),
        ("::progress", None),
        ("::progress ", None),
        ("::progress abc", None),
        ("::progress50", None),
        ("::progress 5 extra", None),
        ("::progress 1/2/3", None),
        ("::progress nan", None),
        ("::progress inf", None),
        ("echo ::progress 5", None),
        ("::PROGRESS 5", None),
        ("progress 5", None),
        ("", None),
    ],
)
def test_parse_progress(line: str, expected: float | None) -> None:
    assert parse_progress(line) == expected


def test_last_progress_takes_the_last_valid_value_of_a_batch() -> None:
    batch = [
        (1.0, "stdout", "::progress 10"),
        (1.0, "stderr", "::progress 2/4"),
        (1.0, "stdout", "::progress broken"),
        (1.0, "stdout", "plain text"),
    ]
    assert last_progress(batch) == 50.0
    assert last_progress([(1.0, "stdout", "nothing here")]) is None
    assert last_progress([]) is None


def test_stage_progress_property_follows_progress_lines(run) -> None:
    proc, out = run("echo '::progress 10'; echo hello; echo '::progress 3/4'; echo bye")
    assert proc.wait(3) == 0
    assert proc.progress == 75.0
    # progress lines are output like any other: the caller decides what to show
    assert out.texts() == ["::progress 10", "hello", "::progress 3/4", "bye"]


# ---- /proc start time -------------------------------------------------------------------------


def test_process_start_time_of_self_and_of_a_dead_pid() -> None:
    mine = process_start_time(os.getpid())
    assert isinstance(mine, int) and mine > 0
    assert mine == int(stat_fields(os.getpid())[19])  # type: ignore[index]
    child = subprocess.Popen(["true"])
    child.wait()
    assert process_start_time(child.pid) is None
    assert process_start_time(0) is None
    assert process_start_time(-5) is None


def test_process_start_time_survives_spaces_and_parens_in_comm(tmp_path) -> None:
    odd = tmp_path / "a) b (c"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", odd)
    child = subprocess.Popen([str(odd), "5"])
    try:
        wait_until(lambda: "a) b (c" in Path(f"/proc/{child.pid}/stat").read_text(), "exec", 2.0)
        start = process_start_time(child.pid)
        assert isinstance(start, int)
        assert start >= process_start_time(os.getpid())  # type: ignore[operator]
        # a naive split on spaces would have read a different field
        assert start == int(stat_fields(child.pid)[19])  # type: ignore[index]
    finally:
        child.kill()
        child.wait()


# ---- pause / resume / terminate ---------------------------------------------------------------


def test_pause_stops_the_group_and_it_uses_no_cpu_then_resume(run) -> None:
    proc, _ = run("while :; do :; done")
    pid = proc.pid
    assert pid is not None and proc.running
    assert proc.start_time == process_start_time(pid)
    start = utime(pid)
    wait_until(lambda: utime(pid) > start, "busy loop to burn CPU", 2.0)

    assert proc.pause() is True
    wait_until(lambda: state(pid) == "T", "state T", 2.0)
    before = utime(pid)
    time.sleep(0.3)
    assert state(pid) == "T"
    assert utime(pid) == before, "a paused stage must hold no CPU"

    assert proc.resume() is True
    wait_until(lambda: state(pid) in ("R", "S"), "running again", 2.0)
    after = utime(pid)
    wait_until(lambda: utime(pid) > after, "CPU use after resume", 2.0)
    assert proc.terminate(1.0) == -signal.SIGTERM
    assert not proc.running


def test_terminate_kills_the_whole_group_including_grandchildren(run) -> None:
    proc, out = run("sleep 100 & echo $!; sleep 100")
    grandchild = int(first_line(out))
    assert state(grandchild) in ("S", "R")
    assert os.getpgid(grandchild) == proc.pid  # same group as the stage
    t0 = time.monotonic()
    code = proc.terminate(2.0)
    assert code == -signal.SIGTERM
    assert time.monotonic() - t0 < 1.5  # TERM was enough: no wait for the kill timeout
    wait_until(lambda: gone(grandchild), "grandchild gone", 1.0)
    assert not proc.running and proc.returncode == code


def test_terminate_sigkills_a_stage_that_ignores_sigterm(run) -> None:
    proc, out = run("trap '' TERM; echo ready; sleep 100")
    assert first_line(out) == "ready"
    t0 = time.monotonic()
    code = proc.terminate(0.5)
    elapsed = time.monotonic() - t0
    assert code == -signal.SIGKILL
    assert 0.45 <= elapsed < 2.5
    assert gone(proc.pid)  # type: ignore[arg-type]


def test_terminate_reaches_a_paused_stage(run) -> None:
    proc, out = run("echo ready; sleep 100")
    first_line(out)
    proc.pause()
    wait_until(lambda: state(proc.pid) == "T", "paused", 2.0)  # type: ignore[arg-type]
    t0 = time.monotonic()
    assert proc.terminate(2.0) == -signal.SIGTERM  # SIGCONT let it act on the TERM
    assert time.monotonic() - t0 < 1.5


def test_terminate_kills_a_grandchild_that_survived_the_main_process(run) -> None:
    # the main process dies on TERM, the grandchild ignores it: it must get the SIGKILL
    proc, out = run("(trap '' TERM; echo $BASHPID; exec sleep 100) & wait")
    grandchild = int(first_line(out))
    code = proc.terminate(0.5)
    assert code == -signal.SIGTERM
    wait_until(lambda: gone(grandchild), "grandchild gone", 1.0)


def test_signals_after_exit_are_harmless_no_ops(run) -> None:
    proc, _ = run("exit 3")
    assert proc.wait(3) == 3
    assert not proc.running
    t0 = time.monotonic()
    assert proc.pause() is False
    assert proc.resume() is False
    assert proc.terminate(5.0) == 3
    assert time.monotonic() - t0 < 0.5  # nothing to wait for


def test_signals_on_an_exited_but_unwaited_stage(run) -> None:
    proc, _ = run("true")
    pid = proc.pid
    wait_until(lambda: not proc.running, "exit noticed", 2.0)  # reaped by the watcher
    assert proc.pause() is False
    assert proc.terminate(1.0) == 0
    assert state(pid) is None or process_start_time(pid) != proc.start_time  # type: ignore[arg-type]


# ---- output -----------------------------------------------------------------------------------


def test_a_million_lines_arrive_complete_in_order_and_in_batches(run) -> None:
    proc, out = run("seq 1 1000000")
    assert proc.wait(10) == 0
    texts = out.texts("stdout")
    assert len(texts) == 1_000_000
    assert texts[0] == "1" and texts[-1] == "1000000"
    assert texts == [str(i) for i in range(1, 1_000_001)]
    assert out.batches < 2000  # many lines per call, not one call per line
    assert proc._splitter is not None  # a fast writer: split in a thread of its own


def test_a_quiet_stage_is_split_by_its_reader_alone(run) -> None:
    proc, out = run("echo one; echo two >&2; echo three")
    assert proc.wait(3) == 0
    assert out.texts("stdout") == ["one", "three"] and out.texts("stderr") == ["two"]
    assert proc._splitter is None  # no second thread for a few lines


def test_both_streams_keep_their_order_through_the_splitter(run) -> None:
    code = (
        "import sys\n"
        "for i in range(200000):\n"
        "    print(i, file=sys.stderr if i % 3 == 0 else sys.stdout)\n"
    )
    proc, out = run(f"{sys.executable} -u -c '{code}' ")
    assert proc.wait(20) == 0
    assert proc._splitter is not None
    assert out.texts("stdout") == [str(i) for i in range(200000) if i % 3]
    assert out.texts("stderr") == [str(i) for i in range(0, 200000, 3)]


def test_a_stage_outpacing_a_stuck_consumer_waits_at_the_backlog_limit(run, monkeypatch) -> None:
    """Read but not logged is bounded: with the consumer stuck, the reader stops reading
    once MAX_BACKLOG waits, the pipe fills and the stage waits; nothing is lost."""
    monkeypatch.setattr(process_mod, "MAX_BACKLOG", 2 << 20)
    stuck = threading.Event()
    collector_lines: list[str] = []

    def slow(batch: list[tuple[float, str, str]]) -> None:
        if threading.current_thread().name.endswith("-split"):
            stuck.wait(30)  # the splitter is stuck; the reader (not called here) goes on
        collector_lines.extend(text for _, _, text in batch)

    proc, _ = run("seq 1 3000000", on_lines=slow)  # about 20 MB
    assert proc.wait(1.5) is None and proc.running  # held back, not buffered without end
    assert proc._splitter is not None and proc._backlog is not None
    assert proc._backlog._bytes <= (2 << 20) + process_mod.READ_CHUNK * 4
    stuck.set()
    assert proc.wait(30) == 0
    assert collector_lines == [str(i) for i in range(1, 3_000_001)]


@pytest.mark.parametrize(
    "lengths",
    [
        [0, 1, 5],
        [MAX_LINE_BYTES - 1, MAX_LINE_BYTES, MAX_LINE_BYTES + 1, 3],
        [10] * 150_000 + [MAX_LINE_BYTES + 2] + [7] * 10,
        [2 * MAX_LINE_BYTES + 3, 0, MAX_LINE_BYTES - 2],
    ],
)
def test_split_block_of_any_size_matches_line_by_line_splitting(lengths: list[int]) -> None:
    """A block bigger than one line's limit is split in pieces that end at a newline;
    the result is what splitting it line by line gives (over-long lines in pieces)."""
    from app.runner.lines import decode, pieces, split_block

    block = b"".join((b"\xc3\xa9x\r" * (n // 4 + 1))[:n] + b"\n" for n in lengths)
    expected: list[str] = []
    for raw in block[:-1].split(b"\n"):
        if len(raw) > MAX_LINE_BYTES:
            expected.extend(pieces(raw))
        else:
            expected.append(decode(raw[:-1] if raw.endswith(b"\r") else raw))
    assert split_block(block) == expected


def test_stdout_and_stderr_are_tagged(run) -> None:
    before = time.time()
    proc, out = run("echo out1; echo err1 >&2; echo out2; echo err2 >&2")
    assert proc.wait(3) == 0
    assert out.texts("stdout") == ["out1", "out2"]
    assert out.texts("stderr") == ["err1", "err2"]
    assert {s for _, s, _ in out.lines} == {"stdout", "stderr"}
    assert all(before - 1 <= at <= time.time() + 1 for at, _, _ in out.lines)


def test_invalid_utf8_nul_and_crlf_are_kept_safely(run) -> None:
    proc, out = run(r"printf 'a\xffb\x00c\r\nd\xc3\xa9\r\r\n\nlast\r'")
    assert proc.wait(3) == 0
    assert out.texts() == ["a\\xffb\\x00c", "dé\r", "", "last"]


def test_very_long_line_is_cut_into_pieces_without_loss(run) -> None:
    size = 3 * MAX_LINE_BYTES
    proc, out = run(f"head -c {size} /dev/zero | tr '\\0' x; printf 'END\\nnext\\n'")
    assert proc.wait(5) == 0
    texts = out.texts()
    assert texts[-1] == "next"
    pieces = texts[:-1]
    assert len(pieces) == 4
    assert all(len(p) <= MAX_LINE_BYTES for p in pieces)
    assert "".join(pieces) == "x" * size + "END"


def test_long_line_pieces_never_split_a_utf8_character(run) -> None:
    code = "import sys; sys.stdout.buffer.write('é'.encode() * 1_500_000)"
    proc, out = run(f'{sys.executable} -c "{code}"')
    assert proc.wait(5) == 0
    pieces = out.texts()
    assert len(pieces) == 3
    assert all(len(p.encode()) <= MAX_LINE_BYTES for p in pieces)
    assert "".join(pieces) == "é" * 1_500_000  # no \xNN escape from a cut sequence


def test_stage_closing_stdout_early_is_still_running(run) -> None:
    proc, out = run("exec 1>&-; sleep 0.4; echo done >&2; exit 4")
    assert proc.wait(0.1) is None
    assert proc.running
    assert proc.wait(3) == 4
    assert out.texts("stderr") == ["done"]


def test_wait_does_not_hang_on_a_grandchild_holding_the_pipe(run, monkeypatch) -> None:
    monkeypatch.setattr(process_mod, "READER_GRACE", 0.5)
    proc, out = run("sleep 30 & echo $!; echo started")
    t0 = time.monotonic()
    assert proc.wait(5) == 0
    assert 0.3 <= time.monotonic() - t0 < 2.0
    assert proc.readers_abandoned
    assert not any(t.is_alive() for t in proc._readers)  # told to stop: no thread leaked
    grandchild = int(out.texts()[0])
    assert out.texts()[1] == "started"
    assert not gone(grandchild)
    # the leftover still belongs to the stage's group: terminate cleans it up
    assert proc.terminate(1.0) == 0
    wait_until(lambda: gone(grandchild), "leftover gone", 1.0)


def test_merged_stderr_keeps_the_order_of_a_burst_to_both_streams() -> None:
    """Two pipes cannot order writes a microsecond apart; one pipe keeps them as written."""
    collector = Collector()
    proc = StageProcess(
        "for i in $(seq 1 300); do echo out $i; echo err $i >&2; done",
        env=ENV,
        cwd=None,
        on_lines=collector,
        kill_timeout=1.0,
        merge_stderr=True,
    )
    proc.start()
    assert proc.wait(10) == 0
    expected = [f"{what} {i}" for i in range(1, 301) for what in ("out", "err")]
    assert collector.texts("stdout") == expected


def test_a_leftover_writing_after_the_grace_goes_on_running(run, monkeypatch, tmp_path) -> None:
    """The runner stops reading, but the service's next write must not kill it (SIGPIPE)."""
    monkeypatch.setattr(process_mod, "READER_GRACE", 0.3)
    marker = tmp_path / "alive"
    proc, out = run(f"(sleep 1; echo late; echo late >&2; echo alive > {marker}) & echo started")
    assert proc.wait(5) == 0
    assert proc.readers_abandoned
    assert out.texts() == ["started"]
    wait_until(marker.exists, "the leftover wrote after the grace and lived on", 5.0)


def test_wait_timeout_returns_none_while_running(run) -> None:
    proc, _ = run("sleep 5")
    t0 = time.monotonic()
    assert proc.wait(0.2) is None
    assert 0.15 <= time.monotonic() - t0 < 1.0
    assert proc.running and proc.returncode is None


def test_a_failing_consumer_does_not_stall_the_stage(run) -> None:
    def broken(batch: list[tuple[float, str, str]]) -> None:
        raise RuntimeError("consumer bug")

    proc, _ = run("seq 1 200000", on_lines=broken)
    assert proc.wait(5) == 0
    assert isinstance(proc.output_error, RuntimeError)


# ---- start ------------------------------------------------------------------------------------


def test_missing_cwd_is_a_clear_start_error(tmp_path) -> None:
    missing = str(tmp_path / "nope")
    proc = StageProcess("true", env=ENV, cwd=missing, on_lines=Collector(), kill_timeout=1.0)
    with pytest.raises(StageStartError) as info:
        proc.start()
    assert str(info.value) == f"cwd does not exist: {missing}"
    assert proc.pid is None and not proc.running


def test_cwd_and_env_reach_the_stage(run, tmp_path) -> None:
    proc, out = run('pwd; echo "$VC_STAGE"', cwd=str(tmp_path), env={**ENV, "VC_STAGE": "build"})
    assert proc.wait(3) == 0
    assert out.texts() == [str(tmp_path), "build"]


def test_missing_command_exits_127(run) -> None:
    proc, out = run("definitely-not-a-command-vc-test")
    assert proc.wait(3) == 127
    assert proc.returncode == 127
    assert any("not found" in t for t in out.texts("stderr"))


def test_start_twice_is_refused(run) -> None:
    proc, _ = run("true")
    with pytest.raises(RuntimeError):
        proc.start()
    assert proc.wait(3) == 0


# ---- leftovers after a crash ------------------------------------------------------------------


def _spawn_group(command: str) -> tuple[subprocess.Popen[str], int]:
    """A stage-like group started the way StageProcess does; returns it and a grandchild pid."""
    leader = subprocess.Popen(
        ["/bin/bash", "-c", command], start_new_session=True, stdout=subprocess.PIPE, text=True
    )
    assert leader.stdout is not None
    grandchild = int(leader.stdout.readline())
    return leader, grandchild


def _reap_in_background(popen: subprocess.Popen[str]) -> threading.Thread:
    # after a real crash the leader's parent is gone and init reaps it; emulate that
    thread = threading.Thread(target=popen.wait, daemon=True)
    thread.start()
    return thread


def test_kill_leftover_group_refuses_a_wrong_start_time() -> None:
    leader, grandchild = _spawn_group("sleep 100 & echo $!; sleep 100")
    try:
        start = process_start_time(leader.pid)
        assert start is not None
        assert kill_leftover_group(leader.pid, start + 1, 0.5) is False
        assert kill_leftover_group(leader.pid, None, 0.5) is False
        time.sleep(0.1)
        assert state(leader.pid) in ("S", "R") and state(grandchild) in ("S", "R")
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def test_kill_leftover_group_kills_the_recorded_group() -> None:
    leader, grandchild = _spawn_group("sleep 100 & echo $!; sleep 100")
    start = process_start_time(leader.pid)
    _reap_in_background(leader)
    t0 = time.monotonic()
    assert kill_leftover_group(leader.pid, start, 2.0) is True
    assert time.monotonic() - t0 < 1.5
    wait_until(lambda: gone(grandchild), "grandchild gone", 1.0)
    assert leader.wait(1) == -signal.SIGTERM


def test_kill_leftover_group_when_only_grandchildren_remain() -> None:
    # the leader is gone, a grandchild that ignores TERM still holds the group
    leader, grandchild = _spawn_group("(trap '' TERM; echo $BASHPID; exec sleep 100) & exit 0")
    start = process_start_time(leader.pid)
    assert leader.wait(2) == 0
    assert process_start_time(leader.pid) is None
    t0 = time.monotonic()
    assert kill_leftover_group(leader.pid, start, 0.3) is True
    assert time.monotonic() - t0 >= 0.25  # TERM ignored: SIGKILL after the timeout
    wait_until(lambda: gone(grandchild), "grandchild gone", 1.0)
    assert kill_leftover_group(leader.pid, start, 0.3) is False  # nothing left


# ---- leftovers found by their environment ------------------------------------------------------


@pytest.fixture
def sid() -> str:
    """A session id of this test only: leftovers of another test never match it."""
    return uuid.uuid4().hex


def _spawn_stage_like(command: str, sid: str, stage: str = "build", attempt: str = "1"):
    """A process as a runner spawns it (own session, VC_* in its environment) that no
    runner supervises: what a runner killed right after the spawn leaves behind."""
    env = {**ENV, "VC_SESSION_ID": sid, "VC_STAGE": stage, "VC_ATTEMPT": attempt}
    proc = subprocess.Popen(
        ["/bin/bash", "-c", command],
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _reap_in_background(proc)
    return proc


def test_find_session_processes_finds_a_stage_and_its_children_by_environment(sid: str) -> None:
    leader = _spawn_stage_like("sleep 100 & echo $!; sleep 100", sid, attempt="3")
    other = _spawn_stage_like("sleep 100", uuid.uuid4().hex)
    try:
        assert leader.stdout is not None
        child = int(leader.stdout.readline())
        # the leader may be between fork and exec for a moment: its environment is then
        # unreadable; it is found once it runs again
        wait_until(
            lambda: {p.pid for p in find_session_processes(sid)} == {leader.pid, child},
            "the leader and its child found",
            2.0,
        )
        found = {p.pid: p for p in find_session_processes(sid)}
        assert {(p.pgid, p.stage, p.attempt) for p in found.values()} == {(leader.pid, "build", 3)}
    finally:
        for proc in (leader, other):
            os.killpg(proc.pid, signal.SIGKILL)


def test_find_session_processes_skips_zombies_and_ended_processes(sid: str) -> None:
    proc = subprocess.Popen(
        ["/bin/true"], env={**ENV, "VC_SESSION_ID": sid, "VC_STAGE": "x"}, start_new_session=True
    )
    wait_until(lambda: state(proc.pid) in ("Z", None), "the process to end", 2.0)
    assert find_session_processes(sid) == []
    proc.wait()
    assert find_session_processes(sid) == []


def test_find_session_processes_never_lists_this_process_or_its_ancestors(sid: str) -> None:
    """A runner started from inside a stage of its own session carries its variables."""
    script = (
        "import json; from app.runner.process import find_session_processes; "
        f"print(json.dumps([p.pid for p in find_session_processes({sid!r})]))"
    )
    env = {
        **os.environ,
        "VC_SESSION_ID": sid,
        "VC_STAGE": "build",
        "PYTHONPATH": str(Path(process_mod.__file__).resolve().parents[2]),
        "PY": sys.executable,
        "SCRIPT": script,
    }
    out = subprocess.run(
        ["/bin/bash", "-c", '"$PY" -c "$SCRIPT"; true'],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]", out.stderr


def test_kill_groups_terms_then_kills_what_ignores_term(sid: str) -> None:
    polite = _spawn_stage_like("sleep 100 & echo $!; wait", sid)
    stubborn = _spawn_stage_like("trap '' TERM; sleep 100 & echo $!; while :; do wait; done", sid)
    try:
        assert polite.stdout is not None and stubborn.stdout is not None
        children = [int(polite.stdout.readline()), int(stubborn.stdout.readline())]
        found = find_session_processes(sid)
        t0 = time.monotonic()
        signalled = kill_groups(found, 0.5)
        assert sorted(signalled) == sorted([polite.pid, stubborn.pid])
        assert time.monotonic() - t0 >= 0.45  # the stubborn one waited for its SIGKILL
        for pid in (polite.pid, stubborn.pid, *children):
            wait_until(lambda pid=pid: gone(pid), f"{pid} gone", 2.0)
        assert find_session_processes(sid) == []
    finally:
        for proc in (polite, stubborn):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def test_kill_groups_never_sends_sigkill_to_a_group_already_gone(
    sid: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A group that ended on SIGTERM frees its number for any later process group (pid
    reuse cannot be forced in a test, so the signals sent are recorded instead)."""
    import app.runner.groups as groups_mod

    sent: list[tuple[int, int]] = []
    real_killpg = groups_mod.killpg

    def recording_killpg(pgid: int, sig: int) -> bool:
        sent.append((pgid, sig))
        return real_killpg(pgid, sig)

    monkeypatch.setattr(groups_mod, "killpg", recording_killpg)
    polite = _spawn_stage_like("sleep 100 & echo $!; wait", sid)
    stubborn = _spawn_stage_like("trap '' TERM; sleep 100 & echo $!; while :; do wait; done", sid)
    try:
        assert polite.stdout is not None and stubborn.stdout is not None
        polite.stdout.readline(), stubborn.stdout.readline()
        kill_groups(find_session_processes(sid), 2.0)
        killed = [pgid for pgid, sig in sent if sig == signal.SIGKILL]
        assert killed == [stubborn.pid]
    finally:
        for proc in (polite, stubborn):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def test_kill_groups_stops_waiting_for_sigterm_once_hurried(sid: str) -> None:
    """A second Ctrl-C: no waiting out the rest of kill_timeout."""
    stubborn = _spawn_stage_like("trap '' TERM; sleep 100 & echo $!; while :; do wait; done", sid)
    hurry = threading.Event()
    try:
        assert stubborn.stdout is not None
        child = int(stubborn.stdout.readline())
        threading.Timer(0.3, hurry.set).start()
        started = time.monotonic()
        kill_groups(find_session_processes(sid), 60.0, hurry)
        assert time.monotonic() - started < 10
        wait_until(lambda: gone(child), "the group to be killed", 2.0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(stubborn.pid, signal.SIGKILL)


def test_kill_groups_reaches_a_member_that_left_the_group(sid: str) -> None:
    """A stage's child that made a session of its own (setsid) is still the stage's."""
    _spawn_stage_like("setsid sleep 100 & sleep 100", sid)
    try:

        def groups() -> set[int]:
            return {p.pgid for p in find_session_processes(sid)}

        wait_until(lambda: len(groups()) == 2, "a member in a group of its own", 2.0)
        kill_groups(find_session_processes(sid), 1.0)
        wait_until(lambda: not find_session_processes(sid), "no process of the session", 2.0)
    finally:
        for proc in find_session_processes(sid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
