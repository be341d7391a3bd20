"""The log tree writer (app.logging.LogFiles): a bounded set of open files, a file deleted
while in use created again, a full disk (a real small tmpfs) costing lines but never the
writer, each gap noted where it is."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from app import logging as app_logging
from app.logging import LogFiles, format_line

SID = "0123456789abcdef0123456789abcdef"


def record(i: int) -> str:
    return format_line(1_000.0 + i, "INFO", "workflow.stage.integration", SID, "s", f"line {i}")


def test_writing_more_session_logs_than_open_files_kept_does_not_hang(tmp_path: Path) -> None:
    files = LogFiles(tmp_path)

    def write_many() -> None:
        for i in range(200):
            files.write_session(f"session{i:04d}", f"line {i}\n")

    worker = threading.Thread(target=write_many, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "LogFiles.write hung when rotating its open files"
    assert len(list(files.root.glob("session*.log"))) == 200
    files.close()


def test_a_log_file_deleted_while_in_use_is_created_again_starting_with_a_note(
    tmp_path: Path,
) -> None:
    files = LogFiles(tmp_path / "logs")
    events: list[tuple[str, str, str]] = []
    files.on_event = lambda *event: events.append(event)
    files.write_session(SID, record(1))
    shutil.rmtree(tmp_path / "logs")  # `rm -r logs` while the session runs
    files.write_session(SID, record(2))
    lines = files.session_path(SID).read_text().splitlines()
    assert len(lines) == 2 and lines[1] == record(2).rstrip("\n")
    assert f"| WARNING | workflow.session.operations | {SID} | - | vc: the log file " in lines[0]
    assert lines[0].endswith(
        "was deleted while in use and is created again: the lines before this one are gone "
        "from it (the store has them)"
    )
    assert [(name, level) for name, level, _ in events] == [(f"{SID}.log", "WARNING")]
    assert oct(files.root.stat().st_mode & 0o777) == "0o700"
    files.close()


def test_a_full_disk_costs_lines_not_the_writer_and_the_gap_is_noted_once_there_is_room(
    small_disk: Callable[[str], Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    disk = small_disk("8m")
    monkeypatch.setattr(app_logging, "FILE_RETRY", 0.0)
    filler = disk / "filler"
    with open(filler, "wb") as fh:
        fh.write(bytes(6 << 20))
    files = LogFiles(disk)
    events: list[tuple[str, str, str]] = []
    files.on_event = lambda *event: events.append(event)
    path = files.session_path(SID)
    i = 0
    while files.trouble(path.name) is None:
        i += 1
        files.write_session(SID, "".join(record(i * 100 + k) for k in range(100)))
    assert i > 1  # it wrote until the disk was full
    for k in range(10):
        files.write_session(SID, record(k))  # left out, counted
    assert files.trouble(path.name) == "the disk is full"
    assert [e[1] for e in events] == ["WARNING"] and "the disk is full" in events[0][2]
    filler.unlink()  # room again
    files.write_session(SID, record(0))
    assert files.trouble(path.name) is None
    lines = path.read_text().splitlines()
    lost = files.lost[path.name]
    assert lost >= 10
    assert f"| vc: {lost} line(s) are missing here: no space left on device from " in lines[-2]
    assert lines[-2].startswith("20")  # a line cut short by the full disk was ended first
    assert lines[-1] == record(0).rstrip("\n")
    assert events[-1][1] == "INFO"
    files.close()


def test_a_record_with_control_characters_is_one_line_with_them_written_out() -> None:
    from app.logging import format_line

    line = format_line(0.0, "INFO", "workflow.session", None, None, "a\nb\x1b[2J\r")
    assert line.endswith(" | a\\nb\\x1b[2J\\r\n") and line.count("\n") == 1
