"""The guard process of :mod:`app.runner.stage_guard`, started as ``python -I -S``.

It imports nothing but builtin modules until the runner's pipe ends: a guard is started by
every runner, beside its first stages, and the imports of what it does at the end (the
standard library's heavier modules, :mod:`app.runner.groups`) cost the CPU of a run's
first dozens of stages on a small machine. What it was told is kept as the lines' fields.
It runs in a session of its own, without a terminal: no Ctrl-C or hangup reaches it.
"""

from __future__ import annotations

import sys


def main() -> None:
    """Follow the runner's lines until the pipe ends, then stop what it left running."""
    registered: dict[bytes, list[bytes]] = {}
    expected: dict[bytes, list[bytes]] = {}
    for raw in sys.stdin.buffer:
        op, *fields = raw.split() or [b""]
        if op == b"+" and fields:
            registered[fields[0]] = fields
        elif op == b"-" and fields:
            registered.pop(fields[0], None)
        elif op == b"?" and fields:
            expected[fields[0]] = fields
        elif op == b"!" and fields:
            expected.pop(fields[0], None)
    # When the pipe ended, in the clock of process start times (ticks since boot): a stage
    # expected is only what had started by then, not a takeover's spawn with its attempt.
    import os
    import time

    ended = int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))
    from app.runner.stage_guard import stop_registered

    stop_registered(list(registered.values()), list(expected.values()), ended)
