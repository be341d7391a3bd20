"""A real runner (``python -m tests.reliability.takeover_hook flow run WORKFLOW --session SID``,
the same command as `vc flow run`) whose Nth write is preceded by a takeover of its session.

Every write the runner's loop makes through its managers (actor ``runner``, the main thread)
is counted, leased or not (a manager left without the lease would show as writes that land);
its claim, the first write, is not, nor are the heartbeat thread's beats (their refusal is
the other way a runner learns it lost the session). Right before write number ``VC_TAKEOVER_AT``
another runner takes the session over on a connection of its own, through the store's
takeover path (``start_session`` as host ``host-b``, once the runner's heartbeat is stale), or,
for a session that already ended (nothing can claim it), by rewriting its claim. The rows of
the session, its stages and its events as the takeover left them go to ``snapshot.json``;
then the write runs. Each write's outcome (``landed``, ``refused``, or the error it raised)
goes to ``writes.jsonl``, one line each, with whether it came before or after the takeover.
Both files are in ``VC_TAKEOVER_REPORT``.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

TAKEOVER_HOST, TAKEOVER_PID = "host-b", 4242
TABLES = ("flow_sessions", "stage_instances", "flow_events")

STAGE_WRITES = (
    "move_stage",
    "start_attempt",
    "update_stage_status",
    "set_progress",
    "record_outputs",
    "record_exit_code",
    "record_process",
    "create_stage",
)
SESSION_WRITES = (
    "start_session",
    "pause",
    "resume",
    "abort",
    "fail",
    "complete",
    "retry",
    "delete",
    "requeue",
    "release_runner",
    "heartbeat",
    "record_notified",
)


def rows(engine: Any, session_id: str) -> dict[str, list[list[Any]]]:
    """The rows of the session, its stages and its events, in id order, as JSON would keep
    them (log records are left out: a stale runner's lines are kept on purpose)."""
    from sqlalchemy import text

    out: dict[str, list[list[Any]]] = {}
    with engine.connect() as conn:
        for table in TABLES:
            key = "id" if table == "flow_sessions" else "session_id"
            result = conn.execute(
                text(f"SELECT * FROM {table} WHERE {key} = :s ORDER BY id"), {"s": session_id}
            )
            out[table] = [list(r) for r in result]
    return json.loads(json.dumps(out, default=str))


def take_over(url: str, session_id: str) -> str:
    """Another runner takes the session: the store's takeover path when the session can be
    claimed, else its claim rewritten (an ended session). Returns which it was."""
    from sqlalchemy import text

    from store import FlowSessionManager, StoreError, get_session_factory, init_db

    engine = init_db(url)
    try:
        with engine.begin() as conn:  # the runner's heartbeat went stale
            conn.execute(
                text("UPDATE flow_sessions SET heartbeat_at = :t WHERE id = :s"),
                {"t": time.time() - 3600, "s": session_id},
            )
        how = "start_session"
        with get_session_factory(engine)() as db:
            try:
                FlowSessionManager(db, actor="runner").start_session(
                    session_id, runner_host=TAKEOVER_HOST, runner_pid=TAKEOVER_PID
                )
            except StoreError:
                how = "claim rewritten"
                db.rollback()
        if how != "start_session":
            with engine.begin() as conn:
                conn.execute(
                    text(
                        "UPDATE flow_sessions SET runner_host = :h, runner_pid = :p, "
                        "runner_lease = version + 1, version = version + 1, heartbeat_at = :t "
                        "WHERE id = :s"
                    ),
                    {"h": TAKEOVER_HOST, "p": TAKEOVER_PID, "t": time.time(), "s": session_id},
                )
        return how
    finally:
        engine.dispose()


class Hook:
    def __init__(self, at: int, report: Path, url: str, session_id: str) -> None:
        self.at = at
        self.report = report
        self.url = url
        self.session_id = session_id
        self.count = 0
        self.claimed = False
        self.taken = False
        self.inside = False  # taking over: the takeover's own writes are not the runner's
        self.local = threading.local()

    def wrap(self, cls: type, name: str) -> None:
        original = getattr(cls, name)
        hook = self

        @functools.wraps(original)
        def write(manager: Any, *args: Any, **kwargs: Any) -> Any:
            depth = getattr(hook.local, "depth", 0)
            counted = (
                depth == 0
                and not hook.inside
                and manager.actor == "runner"
                and threading.current_thread() is threading.main_thread()
            )
            if counted and not hook.claimed:
                hook.claimed = True
                counted = name != "start_session"  # the claim: what gives the lease
            if not counted:
                return original(manager, *args, **kwargs)
            hook.count += 1
            number = hook.count
            if number == hook.at:
                hook.before(name)
            phase = "after" if hook.taken else "before"
            hook.local.depth = depth + 1
            outcome = "landed"
            try:
                result = original(manager, *args, **kwargs)
                if result is False:
                    outcome = "refused"
                return result
            except BaseException as exc:
                outcome = "refused" if type(exc).__name__ == "LeaseLost" else type(exc).__name__
                raise
            finally:
                hook.local.depth = depth
                line = {"n": number, "write": name, "phase": phase, "outcome": outcome}
                with (hook.report / "writes.jsonl").open("a") as f:
                    f.write(json.dumps(line) + "\n")

        setattr(cls, name, write)

    def before(self, name: str) -> None:
        self.inside = True
        try:
            how = take_over(self.url, self.session_id)
        finally:
            self.inside = False
        self.taken = True
        from store import init_db

        engine = init_db(self.url)
        try:
            state = rows(engine, self.session_id)
        finally:
            engine.dispose()
        data = {"write": name, "how": how, "rows": state}
        (self.report / "snapshot.json").write_text(json.dumps(data))


def main() -> None:
    args = sys.argv[1:]
    session_id = args[args.index("--session") + 1]
    hook = Hook(
        int(os.environ["VC_TAKEOVER_AT"]),
        Path(os.environ["VC_TAKEOVER_REPORT"]),
        os.environ["VC_DATABASE_URL"],
        session_id,
    )
    from store.managers import FlowSessionManager, StageManager

    for name in STAGE_WRITES:
        hook.wrap(StageManager, name)
    for name in SESSION_WRITES:
        hook.wrap(FlowSessionManager, name)
    from app.main import main as vc_main

    sys.argv = ["vc", *args]
    vc_main()


if __name__ == "__main__":
    main()
