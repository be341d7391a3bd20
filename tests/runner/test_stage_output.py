"""StageOutput, between a stage's reader thread and the log: the first lines of a stage
wait until the runner has logged the attempt (the process starts before its attempt is
recorded), then everything goes through in order; a store that does not answer cannot
make held lines pile up."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from app.logging import LogFiles, Logging
from app.runner.attempt import StageOutput

SID = "0123456789abcdef0123456789abcdef"


def _output(tmp_path: Path) -> tuple[StageOutput, Path]:
    files = LogFiles(tmp_path)
    output = StageOutput(Logging(files, None, handler_id=-1), SID, "s")
    return output, files.session_path(SID)


def _texts(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [line.rsplit(" | ", 1)[1] for line in path.read_text().splitlines()]


def test_lines_read_before_release_are_held_then_written_first(tmp_path: Path) -> None:
    output, path = _output(tmp_path)
    output([(1.0, "stdout", "early 1"), (1.0, "stdout", "early 2")])
    assert _texts(path) == []
    output.release()
    output([(2.0, "stdout", "later")])
    assert _texts(path) == ["early 1", "early 2", "later"]


def test_release_twice_writes_the_held_lines_once(tmp_path: Path) -> None:
    output, path = _output(tmp_path)
    output([(1.0, "stdout", "once")])
    output.release()
    output.release()
    assert _texts(path) == ["once"]


def test_output_past_hold_max_is_written_without_waiting_for_release(tmp_path: Path) -> None:
    output, path = _output(tmp_path)
    text = "x" * 1000
    per_line = len(text) + 64
    batch = [(1.0, "stdout", text) for _ in range(StageOutput.HOLD_MAX // per_line)]
    output(batch)
    assert _texts(path) == []
    output([(2.0, "stdout", "one too many")])
    assert _texts(path) == [text] * len(batch) + ["one too many"]
    output.release()
    output([(3.0, "stdout", "after")])
    assert _texts(path)[-2:] == ["one too many", "after"]


def test_a_line_read_while_release_writes_comes_after_the_held_ones(tmp_path: Path) -> None:
    """The race itself, made to happen: the reader's line arrives while release() is in the
    middle of writing the held ones (checked, not hoped for), and still comes after them."""
    writing = threading.Event()
    written = threading.Event()

    class SlowFiles(LogFiles):
        def write_session(self, session_id: str, data: str) -> None:
            if "early" in data:
                writing.set()
                time.sleep(0.2)  # the runner's thread is writing the held lines
            super().write_session(session_id, data)
            if "early" in data:
                written.set()

    files = SlowFiles(tmp_path)
    output = StageOutput(Logging(files, None, handler_id=-1), SID, "s")
    output([(1.0, "stdout", "early 1"), (1.0, "stdout", "early 2")])
    releasing = threading.Thread(target=output.release)
    releasing.start()
    assert writing.wait(10)  # release() has begun writing the held lines …
    assert not written.is_set()  # … and has not finished: the race is on
    output([(2.0, "stdout", "later")])  # the reader thread, meanwhile
    assert written.is_set()  # it waited for the held lines instead of overtaking them
    releasing.join()
    assert _texts(files.session_path(SID)) == ["early 1", "early 2", "later"]
    assert output.lines == 3 and output.last_line == "later"


def test_a_held_line_that_cannot_be_written_is_kept_as_the_error_not_raised(
    tmp_path: Path,
) -> None:
    class FullDisk(LogFiles):
        def write_session(self, session_id: str, data: str) -> None:
            raise OSError(28, "No space left on device")

    output = StageOutput(Logging(FullDisk(tmp_path), None, handler_id=-1), SID, "s")
    output([(1.0, "stdout", "lost")])
    output.release()
    assert isinstance(output.error, OSError) and output.error.errno == 28


def test_control_sequences_a_stage_prints_are_written_out_in_the_log_file(
    tmp_path: Path,
) -> None:
    """`tail -f` on the file must not let a stage clear the screen, retitle the terminal or
    forge a record."""
    output, path = _output(tmp_path)
    output.release()
    output([(1.0, "stdout", "\x1b[31mRED\x1b[0m \x1b]0;TITLE\x07 \x1b[2J\x01 end\rfake\x9b")])
    raw = path.read_text()
    assert not any((ch < " " and ch not in "\t\n") or "\x7f" <= ch <= "\x9f" for ch in raw)
    assert _texts(path) == ["\\x1b[31mRED\\x1b[0m \\x1b]0;TITLE\\x07 \\x1b[2J\\x01 end\\rfake\\x9b"]


def test_tabs_and_text_beyond_ascii_reach_the_log_file_as_printed(tmp_path: Path) -> None:
    output, path = _output(tmp_path)
    output.release()
    output([(1.0, "stdout", "a\tb café ✓")])
    assert _texts(path) == ["a\tb café ✓"]
