"""One process of the concurrency test (part 2): random operations through the managers.

``python -m tests.reliability.ops_worker URL SEED OPS INDEX START_AT OUT`` waits until the
wall-clock time START_AT (so all processes overlap), performs OPS random operations on the
store at URL and writes what happened to OUT as JSON: successes per session and operation,
the stage moves the managers published (only moves write an event), refusals by type, and
every unexpected exception (a "database is locked" reaching the caller counts as one).
"""

from __future__ import annotations

import json
import random
import sys
import time
import traceback
from collections import Counter, defaultdict
from typing import Any

STAGES = [
    {"name": "a", "run": "true"},
    {"name": "b", "run": "true"},
    {"name": "c", "run": None},
]
SESSION_OPS = ("pause", "resume", "abort", "retry", "delete", "start", "complete", "fail")
WEIGHTS = {
    "create": 8,
    "pause": 10,
    "resume": 10,
    "abort": 5,
    "retry": 8,
    "delete": 3,
    "start": 10,
    "complete": 3,
    "fail": 3,
    "stage": 30,
    "finish": 4,
}
STATUSES = ("PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED")
#: How a published session start that a stage's move made (not a call of this worker) is
#: counted: its event is a "start" all the same.
STARTED_BY_A_STAGE = "start (by a stage)"


class Recorder:
    """Stands in for FlowStatusIntegration: the managers publish every committed change."""

    def __init__(self) -> None:
        self.changes: list[Any] = []

    def publish(self, change: Any) -> None:
        self.changes.append(change)


def run(url: str, seed: int, n_ops: int, index: int, start_at: float) -> dict[str, Any]:
    from sqlalchemy import select

    from store import FlowSessionManager, StageManager, get_session_factory, init_db
    from store.errors import (
        ConcurrentModification,
        InvalidTransition,
        RunnerConflict,
        SessionNotFound,
        StageNotFound,
    )
    from store.models import FlowSession, StageInstance

    refusals = (
        InvalidTransition,
        RunnerConflict,
        SessionNotFound,
        StageNotFound,
        ConcurrentModification,
    )
    rnd = random.Random(seed)
    engine = init_db(url)
    factory = get_session_factory(engine)
    db = factory()
    recorder = Recorder()
    sessions = FlowSessionManager(db, actor=f"w{index}", integration=recorder)
    stages = StageManager(db, actor=f"w{index}", integration=recorder)
    t_sessions = FlowSession.__table__  # type: ignore[attr-defined]
    t_stages = StageInstance.__table__  # type: ignore[attr-defined]

    ok: dict[str, Counter[str]] = defaultdict(Counter)
    refused: Counter[str] = Counter()
    unexpected: list[str] = []
    locked = 0
    unexpected_n = 0
    stage_ok = 0
    deleted: list[str] = []
    ops_done = 0
    pool: list[str] = []
    mine: list[str] = []
    definition = {"id": "conc", "name": "conc", "stages": STAGES}

    def refresh_pool() -> None:
        nonlocal pool
        pool = [r[0] for r in db.connection().execute(select(t_sessions.c.id)).all()]
        db.commit()

    def stage_ids(sid: str) -> list[int]:
        rows = (
            db.connection().execute(select(t_stages.c.id).where(t_stages.c.session_id == sid)).all()
        )
        db.commit()
        return [r[0] for r in rows]

    def attempt(op: str, sid: str | None, fn: Any) -> Any:
        nonlocal locked, ops_done, unexpected_n, stage_ok
        ops_done += 1
        try:
            result = fn()
        except refusals as exc:
            refused[type(exc).__name__] += 1
            db.rollback()
            return None
        except Exception as exc:
            db.rollback()
            unexpected_n += 1
            text = f"{op}: {type(exc).__name__}: {exc}".splitlines()[0][:300]
            if "database is locked" in str(exc).lower():
                locked += 1
            if len(unexpected) < 50:
                unexpected.append(text + " | " + traceback.format_exc(limit=3)[-600:])
            return None
        if sid is not None and not op.startswith("stage"):
            ok[sid][op] += 1
        elif op.startswith("stage"):
            stage_ok += 1
        return result

    while time.time() < start_at:
        time.sleep(0.005)
    t0 = time.monotonic()
    while ops_done < n_ops:
        if ops_done % 5 == 0:
            try:
                refresh_pool()
            except Exception as exc:
                db.rollback()
                unexpected_n += 1
                unexpected.append(f"refresh: {type(exc).__name__}: {exc}"[:300])
                ops_done += 1
                continue
        op = rnd.choices(list(WEIGHTS), weights=list(WEIGHTS.values()))[0]
        if op == "create" or not pool:
            created = attempt(
                "create",
                None,
                lambda n=ops_done: sessions.create_session(
                    "conc", name=f"w{index}-{n}", definition=definition
                ),
            )
            if created is not None:
                ok[created.id]["create"] += 1
                mine.append(created.id)
            continue
        # favour a few hot sessions so that operations really collide
        sid = rnd.choice(pool[:6]) if rnd.random() < 0.5 else rnd.choice(pool)
        if op in SESSION_OPS:
            if op == "start":
                fn: Any = lambda sid=sid: sessions.start_session(sid)  # noqa: E731
            elif op == "fail":
                fn = lambda sid=sid: sessions.fail(sid, "random failure")  # noqa: E731
            elif op == "delete":
                fn = lambda sid=sid: sessions.delete(sid)  # noqa: E731
            else:
                fn = getattr(sessions, op)
                fn = lambda f=fn, sid=sid: f(sid)  # noqa: E731
            if attempt(op, sid, fn) is not None and op == "delete":
                deleted.append(sid)
        elif op == "stage":
            try:
                ids = stage_ids(sid)
            except Exception as exc:
                db.rollback()
                unexpected_n += 1
                unexpected.append(f"stage ids: {type(exc).__name__}: {exc}"[:300])
                continue
            if not ids:
                continue
            stage_id = rnd.choice(ids)
            target = rnd.choice(STATUSES)
            meta = {"progress": rnd.randint(0, 100)} if rnd.random() < 0.5 else None
            new_attempt = target == "ACTIVE" and rnd.random() < 0.3
            attempt(
                "stage",
                sid,
                lambda s=stage_id, t=target, m=meta, n=new_attempt: stages.update_stage_status(
                    s, t, metadata=m, new_attempt=n
                ),
            )
        elif op == "finish":
            try:
                ids = stage_ids(sid)
            except Exception as exc:
                db.rollback()
                unexpected_n += 1
                unexpected.append(f"stage ids: {type(exc).__name__}: {exc}"[:300])
                continue
            for stage_id in ids:
                for target in ("ACTIVE", "COMPLETED"):
                    attempt(
                        "stage", sid, lambda s=stage_id, t=target: stages.update_stage_status(s, t)
                    )
            attempt("complete", sid, lambda sid=sid: sessions.complete(sid))
    elapsed = time.monotonic() - t0
    published: dict[str, Counter[str]] = defaultdict(Counter)
    for change in recorder.changes:
        op = change.op
        if op == "start" and change.stage is None and (change.reason or "").startswith("stage "):
            op = STARTED_BY_A_STAGE  # a stage moved to ACTIVE started its PENDING session
        published[change.session_id][op] += 1
    db.close()
    engine.dispose()
    return {
        "index": index,
        "ops": ops_done,
        "elapsed": elapsed,
        "ok": {sid: dict(c) for sid, c in ok.items()},
        "published": {sid: dict(c) for sid, c in published.items()},
        "refused": dict(refused),
        "stage_ok": stage_ok,
        "unexpected": unexpected,
        "unexpected_n": unexpected_n,
        "locked": locked,
        "deleted": deleted,
        "created": mine,
    }


def main(argv: list[str]) -> int:
    url, seed, n_ops, index, start_at, out = argv
    result = run(url, int(seed), int(n_ops), int(index), float(start_at))
    with open(out, "w") as f:
        json.dump(result, f)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
