"""`vc flow worker`: claim and run queued sessions until stopped by a signal (the worker
itself is :class:`app.runner.worker.Worker`)."""

from __future__ import annotations

from app.cli.common import fail, translate_errors


def worker_command(concurrency: int = 1, workflow: str | None = None) -> int:
    """The command: open the store, run until stopped by a signal; the exit code."""
    if concurrency < 1:
        raise fail("--concurrency must be at least 1", 2)
    if workflow is not None:
        from app.cli.session import check_workflow_id

        check_workflow_id(workflow)
    from app.context import open_context
    from app.runner.notifications import drain
    from app.runner.worker import Worker

    # each runner holds at most two connections at a time (its own, its heartbeat's)
    with translate_errors(), open_context(pool_size=2 * concurrency + 4) as ctx:
        assert ctx.logging is not None
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
