"""Starting runners in the background (`run --detach`, `resume`, workers).

A detached runner is a new process in its own session (so closing the terminal does not
hang it up, and Ctrl-C in the launching terminal does not reach it), with stdin from
/dev/null and stdout/stderr appended to the session's log file.

The launcher returns only once the child has claimed the session, or says why it could
not, as a :class:`RunnerStart` that each front end puts in its own words. The child says
so over a pipe it inherits (``VC_RUNNER_READY_FD``): "ok" after its claim, "error:
MESSAGE" on a refusal; plain EOF means it died first, and its last error line is then
read back from the session log. A pipe rather than polling the store: a quick
session may claim, finish and release itself before any poll would have seen it.

The launcher does not wait for the runner to exit, but a daemon thread reaps it when it
does: a long-lived launcher (the dashboard, a worker) then keeps no zombie, and a
short-lived one (the CLI) just exits, leaving the runner to init.

A detached runner is not a process of a stage that launched it (`vc flow run other
--detach` in a stage): it does not inherit that stage's ``VC_SESSION_ID``, ``VC_STAGE``
and ``VC_ATTEMPT``, so a runner taking over the launching session after a crash does not
take it for a leftover of its stage and kill it (see ``find_session_processes``).
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

CLAIM_TIMEOUT = 20.0
#: The detached runner reports "ok" (claimed) or "error: MESSAGE" on this inherited fd.
READY_FD_ENV = "VC_RUNNER_READY_FD"
#: What a runner gives each stage to say whose it is; not passed on to a detached runner.
_STAGE_IDENTITY = ("VC_SESSION_ID", "VC_STAGE", "VC_ATTEMPT")

#: The runners this process started that may still run, and whether it may start more:
#: what a closing demo waits for (:func:`stop_starting_runners`).
_runners_lock = threading.Lock()
_runners: list[subprocess.Popen[bytes]] = []
_no_more_runners = False


class LaunchError(Exception):
    """For a caller that cannot go on without its runner (the demo): a
    :class:`RunnerStart` that did not start, raised with its message."""


@dataclass(frozen=True)
class RunnerStart:
    """What starting a runner came to: ``started`` (its ``pid`` owns the session),
    ``refused`` (``message`` says why: the session's claim was refused, or this process
    starts no more runners), ``failed`` (``message``; ``exit_code`` when the runner
    exited before it claimed the session), ``queued`` (none was started: the session is
    queued work, which a worker runs; ``message`` says so) or ``taken`` (none was needed
    after all: another command's runner, or a worker, took the session meanwhile;
    ``message`` names it)."""

    outcome: Literal["started", "refused", "failed", "queued", "taken"]
    pid: int | None = None
    message: str = ""
    exit_code: int | None = None

    @property
    def started(self) -> bool:
        return self.outcome == "started"


#: What a resume or an approval says of a session it leaves to the workers.
FOR_WORKERS = "queued: the next 'vc flow worker' runs it"


def run_refusal(view: Any, *, keys: bool = False) -> str | None:
    """Why a session cannot be run now (nothing left to run, paused, or a live runner has
    it), or None: the rule of `run --session` and of the dashboard's start key. ``keys``:
    what to do is said in the dashboard's keys rather than as commands."""
    short = view.id[:12]
    if view.status == "COMPLETED":
        how = "n" if keys else f"'vc flow run {view.workflow_id}'"
        return (
            f"session {short} is COMPLETED: every stage has run and none runs twice "
            f"(retry is only for FAILED sessions); start a new session with {how}"
        )
    if view.status == "FAILED":
        how = f"'vc flow session retry {short}', then run it again"
        if keys:
            how = "t (retry), then s"
        return f"session {short} is FAILED ({view.reason or 'failed'}): reset it with {how}"
    if view.status == "PAUSED":
        how = "r" if keys else f"'vc flow session resume {short}'"
        return f"session {short} is PAUSED: resume it with {how}"
    if view.status == "ACTIVE" and view.runner_pid is not None and not view.orphaned:
        return (
            f"session {short} already has a live runner: pid {view.runner_pid} on "
            f"{view.runner_host}"
        )
    return None


def stop_starting_runners() -> list[subprocess.Popen[bytes]]:
    """From now on this process starts no runner (:func:`start_runner` refuses); returns
    the runners it started that have not exited yet (their reaper sets ``returncode``)."""
    global _no_more_runners
    with _runners_lock:
        _no_more_runners = True
        return [child for child in _runners if child.returncode is None]


def start_runner(ctx: Any, session_id: str, *, only_stage: str | None = None) -> RunnerStart:
    """Start a runner for ``session_id`` detached; started once it owns the session, else
    refused or failed with a one-line reason.

    It runs in the workspace, yet nothing of ours is looked up there or in ``PYTHONPATH``
    (a workspace with an ``app/`` package of its own would run instead): ``-P`` keeps the
    working directory off ``sys.path``, ``-E`` ignores ``PYTHONPATH``, and ``vc_main`` pins
    our packages to where vc is installed. The stage commands still get the whole
    environment, ``PYTHONPATH`` included. What this process logged about the session (a
    dashboard's resume or approve) is in the store first, so the session's log keeps the
    order things happened in: the runner's lines come after it."""
    if ctx.logging is not None:
        ctx.logging.flush(timeout=5.0)  # bounded: a store out of reach is the runner's to say
    log_path = ctx.logging.files.session_path(session_id) if ctx.logging else None
    return start_detached(ctx.settings, session_id, log_path, only_stage=only_stage)


def start_detached(
    settings: Any, session_id: str, log_path: Path | None, *, only_stage: str | None = None
) -> RunnerStart:
    """:func:`start_runner` given the settings and the session's log file (None: the
    runner's output is dropped), for a caller without a store context (the driver path
    of `vc flow run --detach`)."""
    if log_path is not None:
        log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    else:
        log_path = Path(os.devnull)
    args = [sys.executable, "-E", "-P", "-m", "vc_main", "runner", session_id]
    if only_stage:
        args += ["--stage", only_stage]
    read_fd, write_fd = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        with _runners_lock:
            if _no_more_runners:
                os.close(read_fd)
                return RunnerStart(
                    "refused", message="this process is closing: it starts no more runners"
                )
            child = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                start_new_session=True,
                pass_fds=(write_fd,),
                cwd=str(settings.workspace),
                env={
                    **{k: v for k, v in os.environ.items() if k not in _STAGE_IDENTITY},
                    "VC_HOME": str(settings.workspace),
                    "VC_DATABASE_URL": settings.database_url,
                    "VC_LOG_DIR": str(settings.log_dir),
                    "VC_WORKFLOWS_DIR": str(settings.workflows_dir),
                    READY_FD_ENV: str(write_fd),
                },
            )
            _runners[:] = [c for c in _runners if c.returncode is None] + [child]
    except OSError as exc:
        os.close(read_fd)
        return RunnerStart(
            "failed", message=f"cannot start {sys.executable}: {exc.strerror or exc}"
        )
    finally:
        os.close(write_fd)
        os.close(log_fd)
    threading.Thread(target=child.wait, name=f"vc-reap-{child.pid}", daemon=True).start()
    try:
        answer = _read_answer(read_fd, CLAIM_TIMEOUT)
    finally:
        os.close(read_fd)
    if answer == "ok":
        return RunnerStart("started", pid=child.pid)
    if answer is None:
        child.terminate()
        return RunnerStart("failed", message=f"the runner did not start within {CLAIM_TIMEOUT:g}s")
    if answer.startswith("error: "):
        return RunnerStart("refused", message=answer[len("error: ") :])
    try:  # EOF without an answer: the child died before it could claim
        code: int | None = child.wait(5)
    except subprocess.TimeoutExpired:
        code = None
    return RunnerStart("failed", message=_child_error(log_path, code), exit_code=code)


def _read_answer(fd: int, timeout: float) -> str | None:
    """The child's one-line answer; "" on EOF without one; None on timeout."""
    deadline = time.monotonic() + timeout
    data = b""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        if not poller.poll(remaining * 1000):
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode("utf-8", "replace")


def _child_error(log_path: Path | str, code: int | None) -> str:
    """The last `vc: error:` line the dead child wrote to the session log, if any."""
    try:
        with open(log_path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 8192))
            tail = f.read().decode("utf-8", "replace").strip().splitlines()
        for line in reversed(tail):
            if line.startswith("vc: error: "):
                return line[len("vc: error: ") :]
    except OSError:
        pass
    if code is None:
        return "the runner stopped answering before it claimed the session"
    return f"the runner exited with code {code} before it claimed the session"


def ensure_runner(ctx: Any, session_id: str) -> RunnerStart | None:
    """After `resume`: start a detached runner when the session is ACTIVE again and has no
    live runner (its runner crashed, or was interrupted by Ctrl-C). A live runner picks the
    change up by itself. Even with every stage COMPLETED a runner is started: a crash just
    after the last stage left the session ACTIVE, and the runner completes it (no stage
    runs again). None when no runner was needed.

    Only ACTIVE sessions get one: a session that goes back to PENDING never started, and
    starts only when asked (`vc flow run WORKFLOW --session ID`). Nor does queued work
    that no runner holds (store.liveness.awaits_worker): a worker claims it, on the host
    the workers run on (outcome ``queued``). A runner that could not start leaves the
    session PAUSED again, the reason saying why (:func:`pause_without_runner`).
    """
    from store.queries import get_session_view

    def read() -> Any:
        with ctx.factory() as db:
            view = get_session_view(db, session_id)
            db.commit()
        return view

    def need(view: Any) -> Literal["runner", "workers", None]:
        """A runner: ACTIVE, and no live runner holds it; the workers: queued work."""
        if view is not None and view.awaiting_worker:  # PENDING or ACTIVE, queued
            return "workers"
        if view is None or view.status != "ACTIVE":
            return None
        return "runner" if view.runner_pid is None or view.orphaned else None

    needed = need(read())
    if needed == "workers":
        return RunnerStart("queued", message=FOR_WORKERS)
    if needed is None:
        return None
    started = start_runner(ctx, session_id)
    if started.started:
        return started
    now = read()
    if need(now) != "runner":  # a worker (or another resume) took it meanwhile, or a pause
        if now is not None and now.status == "ACTIVE" and now.runner_pid is not None:
            where = f"pid {now.runner_pid} on {now.runner_host}"
            return RunnerStart("taken", message=f"its runner: {where}, started meanwhile")
        return None  # paused, aborted or queued meanwhile: nothing runs it now, as asked
    pause_without_runner(ctx, session_id, started.message, now.version)
    return started


def pause_without_runner(ctx: Any, session_id: str, why: str, version: int) -> None:
    """No runner could be started for a session made ACTIVE to run (a resume, an
    approval, `run --session`): it goes back to PAUSED, saying why, rather than stay
    ACTIVE with nothing to run it (never shown as orphaned: no runner ever held it). Only
    if it is still as read (``version``): a runner that claimed it meanwhile (one that
    started late, another `run`) keeps it."""
    from store.errors import ConcurrentModification, InvalidTransition

    with ctx.factory() as db:
        try:
            ctx.sessions(db).pause(
                session_id, reason=f"no runner could start: {why}", expected_version=version
            )
        except (InvalidTransition, ConcurrentModification):
            pass  # aborted or taken meanwhile: that state stands
