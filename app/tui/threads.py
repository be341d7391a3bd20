"""The threads the dashboard's workers run in.

Textual runs a thread worker with ``loop.run_in_executor(None, …)``: on the event loop's
default executor, a ``ThreadPoolExecutor`` whose shutdown ``asyncio.run`` waits for, and
whose threads the interpreter joins at exit. A pause sent while another process holds
SQLite's write lock waits up to the busy timeout (10 s); with the pool, a ``q`` pressed
meanwhile left the dashboard frozen on its way out until the pause gave up, and past the
exit deadline. With :class:`DaemonThreads` the dashboard leaves at once: a store write
it abandons is a transaction never committed (nothing of it lands), and
``app.tui.launch`` says which operations had not finished.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

_T = TypeVar("_T")


class DaemonThreads(ThreadPoolExecutor):
    """Each call in a daemon thread of its own; shutting down never waits for one. A
    dashboard starts a few of these a second at most, so a pool buys nothing. (A
    ``ThreadPoolExecutor`` by type only, as asyncio requires of a default executor: none
    of its pool is used.)"""

    def submit(self, fn: Callable[..., _T], /, *args: Any, **kwargs: Any) -> Future[_T]:
        future: Future[_T] = Future()

        def run() -> None:
            if not future.set_running_or_notify_cancel():
                return
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(result)

        threading.Thread(target=run, name="vc-tui-worker", daemon=True).start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Nothing to wait for (see the module's docstring)."""


__all__ = ["DaemonThreads"]
