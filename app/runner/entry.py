"""A detached runner's entry point (`python -E -P -m vc_main runner SESSION_ID`, started
by :func:`app.runner.launch.start_runner`): the runner's own process, whose stdout and
stderr are the session's log file."""

from __future__ import annotations

import os
import signal

from app.runner.launch import READY_FD_ENV


def detached_main(argv: list[str]) -> int:
    """Entry of a background runner (`python -E -P -m vc_main runner SESSION_ID [--stage
    NAME]`, see ``vc_main``; `python -m app.runner …` by hand).

    Its stdout/stderr are the session's log file, so its last words land there. It tells
    its launcher over the inherited ``VC_RUNNER_READY_FD`` pipe whether it claimed the
    session ("ok") or why not ("error: …"), so `run --detach` and `resume` return as soon
    as the runner really owns the session, or report the exact refusal. SIGTERM pauses the
    session (resumable) like Ctrl-C in the foreground; SIGHUP is ignored.
    """
    import argparse

    from app.console import error_line, failure, warning_line
    from app.context import open_context
    from app.runner.notifications import drain as drain_notifications
    from app.runner.runner import Runner
    from store.errors import StoreError

    parser = argparse.ArgumentParser(prog="python -m app.runner")
    parser.add_argument("session_id")
    parser.add_argument("--stage")
    args = parser.parse_args(argv)
    ready = _ReadyPipe(os.environ.pop(READY_FD_ENV, None))
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        with open_context(warn=warning_line) as ctx:
            assert ctx.logging is not None
            runner = Runner(
                ctx.factory,
                ctx.logging,
                args.session_id,
                workspace=ctx.settings.workspace,
                only_stage=args.stage,
            )
            signal.signal(signal.SIGTERM, lambda *_: runner.interrupt())
            signal.signal(signal.SIGINT, lambda *_: runner.interrupt())
            try:
                runner.claim()
            except StoreError as exc:
                ready.tell(f"error: {exc}")
                raise
            ready.tell("ok")
            keep_start_up_out_of_the_collector()
            outcome = runner.run()
            drain_notifications()
            return 0 if outcome.code in (0, 130) else outcome.code
    except SystemExit as exc:
        return int(exc.code or 0)
    except Exception as exc:  # a detached runner's last word goes to the session log
        known = failure(exc)
        if known is not None:  # a refusal: one line, and its exit code
            error_line(known[0])
            return known[1]
        error_line(f"runner crashed: {type(exc).__name__}: {exc}")
        return 1
    finally:
        ready.close()


class _ReadyPipe:
    """The write end of the launcher's readiness pipe (absent when started by hand)."""

    def __init__(self, fd: str | None) -> None:
        self.fd = int(fd) if fd and fd.isdigit() else None

    def tell(self, message: str) -> None:
        if self.fd is None:
            return
        try:
            os.write(self.fd, message.encode("utf-8", "replace") + b"\n")
        except OSError:
            pass  # the launcher gave up waiting: nothing to tell
        self.close()

    def close(self) -> None:
        if self.fd is not None:
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = None


def keep_start_up_out_of_the_collector() -> None:
    """Move what the start-up made (the modules, the ORM's tables and compiled statements,
    some 70,000 objects) out of the cyclic garbage collector's sight.

    A runner lives for hours and allocates little; what it made at start-up lives as long
    as it does. Yet Python's collector walks all of it in each full collection, one of
    which comes soon after start-up: 20 ms of CPU on a 2-core machine, while an idle
    runner's whole second costs about 4 ms. Frozen (``gc.freeze``), those objects are not
    walked again; the price is that a reference cycle made before this point is never
    collected, and there are few. For a process that is the runner: a worker runs many
    sessions and freezes nothing (it would freeze each session's garbage too)."""
    import gc

    gc.freeze()
