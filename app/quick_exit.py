"""Leaving a short command without the interpreter's teardown.

Once a command's work is done, Python still tears the interpreter down: it clears every
module (SQLAlchemy, SQLModel, pydantic and ours are thousands of objects) and runs the
finalizers, which costs a command like `vc flow session pause` about a tenth of a second
after its answer is printed, on a loaded machine more. None of it is needed: by then
the commands have committed and closed their database connections and closed their log
sinks (``app.cli.common.open_store`` does both on the way out, whatever happened), and
the log files are written with ``os.write``, unbuffered.

:func:`leave` keeps what teardown is for: the ``atexit`` callbacks run (loguru's, and
any a library registered), stdout and stderr are flushed (a failing flush gives exit code
120, as Python's own), and when something is still running that teardown would wait for
(a non-daemon thread, a callback registered with ``threading._register_atexit``), it
leaves the ordinary way instead. Only then does it end the process with ``os._exit``.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
from typing import NoReturn

#: The commands that leave this way (their leading words): what people type most, and
#: `flow run`, whose runner has released the session and flushed its logs when it returns.
QUICK_COMMANDS = (
    ("flow", "session", "pause"),
    ("flow", "session", "resume"),
    ("flow", "session", "abort"),
    ("flow", "session", "approve"),
    ("flow", "session", "list"),
    ("flow", "session", "show"),
    ("flow", "session", "logs"),
    ("flow", "status"),
    ("flow", "run"),
)

#: Python's exit code when flushing stdout at exit fails.
FLUSH_FAILED = 120


def is_quick(args: list[str]) -> bool:
    """Whether the command line ``args`` (without the program name) names a quick command."""
    words = tuple(args[:3])
    return any(words[: len(command)] == command for command in QUICK_COMMANDS)


def teardown_needed() -> bool:
    """Something teardown would wait for: a live non-daemon thread, or a callback that
    ``threading`` runs when the interpreter shuts down (concurrent.futures' workers)."""
    main = threading.main_thread()
    for thread in threading.enumerate():
        if thread is not main and not thread.daemon and thread.is_alive():
            return True
    return bool(getattr(threading, "_threading_atexits", None))


def _flush(code: int) -> int:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            if stream is sys.stdout and code == 0:
                code = FLUSH_FAILED
    return code


def leave(code: int) -> NoReturn:
    """End the process with ``code``: at once when nothing needs the teardown, else with
    ``sys.exit`` (see the module doc)."""
    if teardown_needed():
        sys.exit(code)
    atexit._run_exitfuncs()
    os._exit(_flush(code))
