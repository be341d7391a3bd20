"""Waiting in tests: a condition polled until it holds, never a fixed long sleep.

:func:`poll` is the one loop; :func:`wait_until` fails the test when the condition does
not come, and :func:`wait_until_async` does the same while an app's event loop runs.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


def poll(predicate: Callable[[], T], timeout: float, interval: float = 0.02) -> T:
    """The first truthy value of ``predicate()`` within ``timeout`` seconds, or its last
    value (falsy) once they are up: for a caller that decides itself what not getting
    there means. ``predicate`` is called once more after the deadline, so a condition met
    while the loop slept still counts."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)


def wait_until(
    predicate: Callable[[], T | None],
    what: str = "the condition",
    timeout: float = 15.0,
    interval: float = 0.02,
) -> T:
    """The first truthy value of ``predicate()``; the test fails naming ``what`` when
    none comes within ``timeout`` seconds."""
    value = poll(predicate, timeout, interval)
    if not value:
        raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
    return value


async def wait_until_async(
    predicate: Callable[[], object],
    pause: Callable[[float], Awaitable[Any]],
    *,
    what: str = "the condition",
    timeout: float = 5.0,
    interval: float = 0.05,
    details: Callable[[], str] = lambda: "",
) -> None:
    """:func:`wait_until` for code that must let an event loop run meanwhile: ``pause``
    waits (``pilot.pause``); ``details`` adds what helps read a failure."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            extra = details()
            raise AssertionError(
                f"timed out after {timeout:g}s waiting for {what}" + (f"; {extra}" if extra else "")
            )
        await pause(interval)
