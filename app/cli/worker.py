"""`vc flow worker`: claim and run queued sessions until stopped by a signal (the worker
itself is :class:`app.runner.worker.Worker`)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

from app.cli.common import fail, translate_errors

#: Back-off bounds (seconds) while the store cannot be reached at the worker's start.
START_RETRY = (0.5, 5.0)


def worker_command(concurrency: int = 1, workflow: str | None = None) -> int:
    """The command: open the store, run until stopped by a signal; the exit code."""
    from store.definitions import MAX_PARALLEL

    if not 1 <= concurrency <= MAX_PARALLEL:
        raise fail(
            f"--concurrency {concurrency}: expected a number of sessions from 1 to {MAX_PARALLEL}",
            2,
        )
    if workflow is not None:
        from app.cli.session import check_workflow_id

        check_workflow_id(workflow)
    from app.context import open_context
    from app.runner.notifications import drain
    from app.runner.worker import Worker
    from app.settings import no_workspace_here

    if not os.environ.get("VC_DATABASE_URL"):  # a store named on purpose may be new
        with translate_errors():
            missing = no_workspace_here()
        if missing is not None:
            raise fail(missing)

    # each runner holds at most two connections at a time (its own, its heartbeat's)
    with translate_errors(), _reached(lambda: open_context(pool_size=2 * concurrency + 4)) as ctx:
        assert ctx.logging is not None
        if workflow is not None:
            _check_known(ctx.settings.workflows_dir, workflow)
        try:
            worker = Worker(
                ctx.factory,
                ctx.engine,
                ctx.logging,
                ctx.settings.workspace,
                concurrency=concurrency,
                workflow_id=workflow,
            )
            with worker.signals():
                return worker.run()
        finally:
            drain()  # the last sessions' notifications, before the logs close


def _check_known(workflows_dir: Any, workflow: str) -> None:
    """Warn about a ``--workflow`` this workspace does not define (likely a typo), without
    refusing it: a queued session carries its definition, so a worker on another host
    than the one that queued it may serve a workflow it has no file of."""
    from app.console import warning_line
    from store.errors import WorkflowError
    from store.workflows import find_workflow

    try:
        find_workflow(workflows_dir, workflow)
    except WorkflowError as exc:
        warning_line(f"{exc}; the worker waits for queued sessions of {workflow!r} anyway")


@contextmanager
def _reached(open_store: Callable[[], AbstractContextManager[Any]]) -> Iterator[Any]:
    """The store opened, waiting while the server is there but cannot take a connection
    for now (full of connections as a fleet starts, starting up, shutting down): a worker
    is a long-lived process, and one that gave up here would leave its share of the queue
    unclaimed. Any other failure (a refused connection, a wrong URL, a refused login, a
    schema newer than the code) stops it at once, with one line. Ctrl-C or a signal stops
    the wait."""
    from app.console import to_stderr, warning_line
    from store.errors import StoreUnavailable

    delay, said = START_RETRY[0], False
    with ExitStack() as stack:
        while True:
            try:
                ctx = stack.enter_context(open_store())
            except StoreUnavailable as exc:
                if not exc.transient:
                    raise
                if not said:
                    warning_line(f"{exc}; the worker waits for the store")
                    said = True
                time.sleep(delay)
                delay = min(delay * 2, START_RETRY[1])
                continue
            if said:  # else the waiting line would be the last word on it
                to_stderr("vc: the store answers: the worker starts\n")
            yield ctx
            return
