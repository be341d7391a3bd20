"""StageOutput, between a stage's reader thread and the log: the first lines of a stage
wait until the runner has logged the attempt (the process starts before its attempt is
recorded), then everything goes through in order; a store that does not answer cannot
make held lines pile up."""

from __future__ import annotations

from pathlib import Path

from app.logging import LogFiles, Logging
from app.runner.runner import StageOutput

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


def test_more_than_hold_max_lines_are_written_without_waiting_for_release(
    tmp_path: Path,
) -> None:
    output, path = _output(tmp_path)
    batch = [(1.0, "stdout", f"line {i}") for i in range(StageOutput.HOLD_MAX)]
    output(batch)
    assert _texts(path) == []
    output([(2.0, "stdout", "one too many")])
    assert _texts(path) == [t for _, _, t in batch] + ["one too many"]
    output.release()
    assert len(_texts(path)) == StageOutput.HOLD_MAX + 1
