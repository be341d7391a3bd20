"""The log tree writer keeps a bounded set of open files without deadlocking."""

from __future__ import annotations

import threading
from pathlib import Path

from app.logging import LogFiles


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
