"""Part 3, a model-based test: Hypothesis drives FlowSessionManager and StageManager with
random operations on a fresh SQLite store and compares them, after every step, with a plain
in-memory model of docs/ARCHITECTURE.md §2:

- session statuses and which operations are allowed from each (refusals change nothing);
- runner ownership: a live runner (this process, or one on another host) blocks another
  runner's claim, ``resume`` of its ACTIVE session and ``delete`` without force; a dead one
  (a local pid that does not exist) makes ACTIVE/PAUSED sessions orphaned and claimable;
- stage moves of ``store.status.STAGE_TRANSITIONS``, attempts (+1 on a start from PENDING
  or a new attempt), progress (clamped; 100 on COMPLETED; 0 on reset or a new attempt);
- abort fails running and paused stages, retry resets every stage that is not COMPLETED
  (attempt kept) and keeps COMPLETED ones;
- the progress formula (mean, COMPLETED counts 100; no stages: 100 iff COMPLETED), the same
  through the manager, the read model and the status report;
- ``version`` bumps by exactly one per successful session operation (stage versions per
  stage update), and the event history equals the model's, event by event.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from .harness import PART_TIMEOUT, STRESS, report, scale

STATUSES = ("PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED")
TERMINAL = ("COMPLETED", "FAILED")
OTHER_HOST = "other-host.invalid"


def _dead_pid() -> int:
    """A pid no process has (above pid_max when possible)."""
    from store.identity import pid_alive

    try:
        with open("/proc/sys/kernel/pid_max") as f:
            candidate = int(f.read()) + 1
    except OSError:
        candidate = 4_194_305
    while pid_alive(candidate):
        candidate += 1
    return candidate


@dataclass
class MStage:
    id: int
    name: str
    status: str = "PENDING"
    progress: float = 0.0
    attempt: int = 0
    version: int = 1


@dataclass
class MSession:
    id: str
    stages: list[MStage]
    status: str = "PENDING"
    version: int = 1
    started: bool = False
    runner: str | None = None  # None | "self" | "dead" | "other"
    deleted: bool = False
    events: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)

    @property
    def orphaned(self) -> bool:
        return self.status in ("ACTIVE", "PAUSED") and self.runner == "dead"

    @property
    def live_runner(self) -> bool:
        """What the managers call a live runner (not orphaned): for PENDING/ACTIVE/PAUSED,
        a runner that is not the dead one."""
        return self.runner in ("self", "other")

    def progress(self) -> float:
        values = [100.0 if s.status == "COMPLETED" else s.progress for s in self.stages]
        if not values:
            return 100.0 if self.status == "COMPLETED" else 0.0
        return round(sum(values) / len(values), 1)


def _stage_allowed(current: str, target: str) -> bool:
    """docs/ARCHITECTURE.md §2 / store.status, written out independently."""
    if current == target:
        return current not in TERMINAL
    allowed = {
        "PENDING": {"ACTIVE", "PAUSED", "COMPLETED", "FAILED"},
        "ACTIVE": {"PAUSED", "COMPLETED", "FAILED", "PENDING"},
        "PAUSED": {"ACTIVE", "COMPLETED", "FAILED", "PENDING"},
        "COMPLETED": set(),
        "FAILED": {"PENDING"},
    }
    return target in allowed[current]


class Refused(Exception):
    """What the model expects instead of a success: the error class name."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


BASE_DIR: list[Path] = []
STATS = {"examples": 0, "steps": 0, "calls": 0, "ok": 0, "refused": 0}


class SessionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        from store import FlowSessionManager, StageManager, get_session_factory, init_db
        from store.identity import local_host

        self.dir = tempfile.mkdtemp(dir=BASE_DIR[0] if BASE_DIR else None)
        self.engine = init_db(f"sqlite:///{self.dir}/flow.db")
        self.db = get_session_factory(self.engine)()
        self.sessions = FlowSessionManager(self.db, actor="model")
        self.stages = StageManager(self.db, actor="model")
        self.model: list[MSession] = []
        self.host = local_host()
        self.dead = _dead_pid()
        self.runners = {
            "self": (self.host, os.getpid()),
            "dead": (self.host, self.dead),
            "other": (OTHER_HOST, 4242),
        }
        STATS["examples"] += 1

    def teardown(self) -> None:
        self.db.close()
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    # -- plumbing ---------------------------------------------------------------------------

    def pick(self, index: int) -> MSession | None:
        """Mostly one of the sessions that still exist (operations on deleted ones are
        checked too, but seldom teach more)."""
        live = [s for s in self.model if not s.deleted]
        if live and index % 8:
            return live[index % len(live)]
        return self.model[index % len(self.model)] if self.model else None

    def do(self, expect: Any, call: Any) -> Any:
        """Run ``call``; the model's ``expect()`` either returns (success expected) or raises
        Refused(name). Both sides must agree; a refusal must change nothing."""
        STATS["calls"] += 1
        try:
            expect()
        except Refused as refusal:
            try:
                result = call()
            except Exception as exc:
                self.db.rollback()
                assert type(exc).__name__ == refusal.name, (
                    f"expected {refusal.name}, got {type(exc).__name__}: {exc}"
                )
                STATS["refused"] += 1
                return None
            raise AssertionError(f"expected {refusal.name}, the store did it: {result}") from None
        STATS["ok"] += 1
        return call()

    def event(
        self, s: MSession, op: str, frm: str | None, to: str | None, stage: str | None = None
    ) -> None:
        s.events.append((op, frm, to, stage))

    def move(self, s: MSession, op: str, target: str) -> None:
        self.event(s, op, s.status, target)
        s.status = target
        s.version += 1

    # -- rules ------------------------------------------------------------------------------

    @initialize(first=st.integers(0, 3), second=st.integers(1, 3))
    def init(self, first: int, second: int) -> None:
        """Two sessions to start with, so that every rule has something to act on."""
        self.create(first)
        self.create(second)

    @rule(n_stages=st.integers(0, 3))
    def create(self, n_stages: int) -> None:
        if sum(not s.deleted for s in self.model) >= 4:
            return  # a few sessions, many operations on each
        definition = {"stages": [{"name": f"s{i}", "run": "true"} for i in range(n_stages)]}
        obj = self.do(
            lambda: None,
            lambda: self.sessions.create_session("model", name="m", definition=definition),
        )
        ids = [x.id for x in self.stages.list_stages(obj.id)]
        s = MSession(obj.id, [MStage(i, f"s{n}") for n, i in enumerate(ids)])
        self.event(s, "create", None, "PENDING")
        self.model.append(s)

    @rule(index=st.integers(0, 20), who=st.sampled_from(["self", "dead", "other"]))
    def start(self, index: int, who: str) -> None:
        s = self.pick(index)
        if s is None:
            return
        host, pid = self.runners[who]

        def expect() -> None:
            if s.deleted:
                raise Refused("SessionNotFound")
            if s.status not in ("PENDING", "ACTIVE"):
                raise Refused("InvalidTransition")
            if s.live_runner and s.runner != who:
                raise Refused("RunnerConflict")

        change = self.do(
            expect, lambda: self.sessions.start_session(s.id, runner_host=host, runner_pid=pid)
        )
        if change is not None:
            self.move(s, "start", "ACTIVE")
            s.started, s.runner = True, who
            assert change.version == s.version

    def _session_op(
        self,
        index: int,
        op: str,
        sources: tuple[str, ...],
        target: Any,
        extra: Any = None,
        check: Any = None,
    ) -> None:
        s = self.pick(index)
        if s is None:
            return

        def expect() -> None:
            if s.deleted:
                raise Refused("SessionNotFound")
            if s.status not in sources:
                raise Refused("InvalidTransition")
            if check is not None and not check(s):
                raise Refused("InvalidTransition")

        method = getattr(self.sessions, op)
        args = (s.id, "random failure") if op == "fail" else (s.id,)
        change = self.do(expect, lambda: method(*args))
        if change is not None:
            to = target(s) if callable(target) else target
            assert (change.from_status, change.to_status) == (s.status, to), change
            if extra is not None:
                extra(s)
            self.move(s, op, to)
            assert change.version == s.version

    @rule(index=st.integers(0, 20))
    def pause(self, index: int) -> None:
        self._session_op(index, "pause", ("PENDING", "ACTIVE"), "PAUSED")

    @rule(index=st.integers(0, 20))
    def resume(self, index: int) -> None:
        self._session_op(
            index,
            "resume",
            ("PAUSED", "ACTIVE"),
            lambda s: "ACTIVE" if s.started else "PENDING",
            check=lambda s: not (s.status == "ACTIVE" and s.live_runner),
        )

    @rule(index=st.integers(0, 20))
    def abort(self, index: int) -> None:
        def fail_running(s: MSession) -> None:
            for stage in s.stages:
                if stage.status in ("ACTIVE", "PAUSED"):
                    stage.status, stage.version = "FAILED", stage.version + 1

        self._session_op(
            index, "abort", ("PENDING", "ACTIVE", "PAUSED"), "FAILED", extra=fail_running
        )

    @rule(index=st.integers(0, 20))
    def fail(self, index: int) -> None:
        self._session_op(index, "fail", ("ACTIVE", "PAUSED"), "FAILED")

    @rule(index=st.integers(0, 20))
    def complete(self, index: int) -> None:
        def clear(s: MSession) -> None:
            s.runner = None

        self._session_op(
            index,
            "complete",
            ("ACTIVE",),
            "COMPLETED",
            extra=clear,
            check=lambda s: all(x.status == "COMPLETED" for x in s.stages),
        )

    @rule(index=st.integers(0, 20))
    def retry(self, index: int) -> None:
        def reset(s: MSession) -> None:
            s.runner = None
            for stage in s.stages:
                if stage.status != "COMPLETED":
                    stage.status, stage.progress = "PENDING", 0.0
                    stage.version += 1

        self._session_op(index, "retry", ("FAILED",), "PENDING", extra=reset)

    @rule(index=st.integers(0, 20), force=st.booleans())
    def delete(self, index: int, force: bool) -> None:
        s = self.pick(index)
        if s is None:
            return
        blocked = s.status == "ACTIVE" and s.live_runner

        def expect() -> None:
            if s.deleted:
                raise Refused("SessionNotFound")
            if blocked and not force:
                raise Refused("InvalidTransition")

        change = self.do(expect, lambda: self.sessions.delete(s.id, force=force))
        if change is not None:
            s.deleted = True

    @rule(index=st.integers(0, 20))
    def runner_exits(self, index: int) -> None:
        """The owning runner releases the session (what a runner does when it exits)."""
        s = self.pick(index)
        if s is None or s.deleted or s.runner is None:
            return
        host, pid = self.runners[s.runner]
        self.sessions.release_runner(s.id, runner_host=host, runner_pid=pid)
        s.runner = None

    @rule(
        index=st.integers(0, 20),
        which=st.integers(0, 5),
        to=st.sampled_from(STATUSES),
        progress=st.none() | st.integers(-50, 150) | st.sampled_from([12.5, 0.25]),
        new_attempt=st.booleans(),
    )
    def stage_update(
        self, index: int, which: int, to: str, progress: Any, new_attempt: bool
    ) -> None:
        s = self.pick(index)
        if s is None or not s.stages or s.deleted:
            # a deleted session's stage ids are reused by new stages on SQLite: see
            # test_stage_ids_of_a_deleted_session_are_not_reused
            return
        stage = s.stages[which % len(s.stages)]
        target = to

        def expect() -> None:
            if not _stage_allowed(stage.status, target):
                raise Refused("InvalidTransition")

        meta = None if progress is None else {"progress": progress}
        result = self.do(
            expect,
            lambda: self.stages.update_stage_status(
                stage.id, target, metadata=meta, new_attempt=new_attempt
            ),
        )
        if result is None:
            return
        new_try = target == "ACTIVE" and (stage.status == "PENDING" or new_attempt)
        value = stage.progress if progress is None else max(0.0, min(100.0, float(progress)))
        if new_try:
            stage.attempt += 1
            value = 0.0 if progress is None else value
        if target == "COMPLETED":
            value = 100.0
        if target == "PENDING":
            value = 0.0
        if target == "ACTIVE" and s.status == "PENDING":  # its session starts with it
            self.move(s, "start", "ACTIVE")
            s.started = True
        if stage.status != target or new_try:
            ops = {
                "ACTIVE": "stage.start",
                "PAUSED": "stage.pause",
                "COMPLETED": "stage.complete",
                "FAILED": "stage.fail",
                "PENDING": "stage.reset",
            }
            self.event(s, ops[target], stage.status, target, stage.name)
        stage.status, stage.progress = target, value
        stage.version += 1
        assert result.status == target and result.attempt == stage.attempt

    @rule(index=st.integers(0, 20))
    def create_stage(self, index: int) -> None:
        s = self.pick(index)
        if s is None or s.deleted or s.status in TERMINAL or len(s.stages) >= 6:
            return  # on a terminal session: see test_create_stage_on_a_completed_session
        name = f"x{len(s.stages)}"
        obj = self.do(lambda: None, lambda: self.stages.create_stage(s.id, name=name))
        s.stages.append(MStage(obj.id, name))
        self.event(s, "stage.create", None, "PENDING", name)

    # -- the comparison after every step ----------------------------------------------------

    @invariant()
    def store_matches_model(self) -> None:
        from sqlalchemy import func, select

        from store import FlowStatusIntegration
        from store.models import FlowEvent, FlowSession, StageInstance
        from store.queries import get_session_view, list_events

        STATS["steps"] += 1
        self.db.commit()
        conn = self.db.connection()
        for s in self.model:
            row = conn.execute(
                select(FlowSession.__table__).where(FlowSession.__table__.c.id == s.id)
            ).first()
            if s.deleted:
                assert row is None, f"deleted session {s.id[:8]} still there"
                for model in (StageInstance, FlowEvent):
                    table = model.__table__
                    left = conn.execute(
                        select(func.count()).select_from(table).where(table.c.session_id == s.id)
                    ).scalar_one()
                    assert left == 0, f"deleted session {s.id[:8]} left {table.name} rows"
                continue
            assert row is not None, f"session {s.id[:8]} vanished"
            assert (row.status, row.version) == (s.status, s.version), (
                f"session {s.id[:8]}: store {row.status} v{row.version}, "
                f"model {s.status} v{s.version}"
            )
            host, pid = self.runners.get(s.runner or "", (None, None))
            assert (row.runner_host, row.runner_pid) == (host, pid), (
                f"runner: store {row.runner_host}:{row.runner_pid}, model {s.runner}"
            )
            view = get_session_view(self.db, s.id)
            assert view is not None
            assert view.orphaned == s.orphaned
            got = [(x.name, x.status, round(x.progress, 6), x.attempt) for x in view.stages]
            want = [(x.name, x.status, round(x.progress, 6), x.attempt) for x in s.stages]
            assert got == want, f"stages: store {got}, model {want}"
            versions = dict(
                conn.execute(
                    select(StageInstance.__table__.c.id, StageInstance.__table__.c.version).where(
                        StageInstance.__table__.c.session_id == s.id
                    )
                ).all()
            )
            assert versions == {x.id: x.version for x in s.stages}, "stage versions"
            expected = s.progress()
            assert self.sessions.get_session_progress(s.id) == expected
            assert view.progress == expected
            assert FlowStatusIntegration(self.db).status_report(s.id)["progress"] == expected
            events = [
                (e.op, e.from_status, e.to_status, e.stage) for e in list_events(self.db, s.id)
            ]
            assert events == s.events, f"events: store {events}, model {s.events}"
            if s.status == "COMPLETED":
                assert all(x.status == "COMPLETED" for x in s.stages)
                assert expected == 100.0
        self.db.commit()


@pytest.mark.timeout(PART_TIMEOUT + 300)  # Hypothesis may shrink a failure for 5 minutes
def test_model_based(tmp_path: Path) -> None:
    BASE_DIR[:] = [tmp_path]
    for key in STATS:
        STATS[key] = 0
    examples = scale(40, 400)
    steps = 30 if not STRESS else 60
    start = time.monotonic()
    failure: BaseException | None = None
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(tmp_path / ".hypothesis")  # nothing written into the checkout
    try:
        run_state_machine_as_test(
            SessionMachine,
            settings=settings(
                max_examples=examples,
                stateful_step_count=steps,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
                print_blob=True,
            ),
        )
    except BaseException as exc:
        failure = exc
    finally:
        set_hypothesis_home_dir(None)
    report(
        "model",
        trials=STATS["examples"],
        operations=STATS["steps"],
        manager_calls=STATS["calls"],
        succeeded=STATS["ok"],
        refused=STATS["refused"],
        failures=0 if failure is None else 1,
        lost=0,
        seconds=round(time.monotonic() - start, 1),
    )
    if failure is not None:
        raise failure


def test_create_stage_on_a_completed_session_is_refused(tmp_path: Path) -> None:
    from store import FlowSessionManager, StageManager, get_session_factory, init_db
    from store.errors import InvalidTransition

    engine = init_db(f"sqlite:///{tmp_path / 'flow.db'}")
    try:
        with get_session_factory(engine)() as db:
            sessions, stages = FlowSessionManager(db), StageManager(db)
            sid = sessions.create_session("model", name="m").id
            sessions.start_session(sid)
            sessions.complete(sid)
            with pytest.raises(InvalidTransition):
                stages.create_stage(sid, name="late")
    finally:
        engine.dispose()


def test_stage_ids_of_a_deleted_session_are_not_reused(tmp_path: Path) -> None:
    from store import FlowSessionManager, StageManager, get_session_factory, init_db

    definition = {"stages": [{"name": "a", "run": "true"}]}
    engine = init_db(f"sqlite:///{tmp_path / 'flow.db'}")
    try:
        with get_session_factory(engine)() as db:
            sessions, stages = FlowSessionManager(db), StageManager(db)
            first = sessions.create_session("model", name="old", definition=definition).id
            old_stage = stages.list_stages(first)[0].id
            sessions.delete(first)
            second = sessions.create_session("model", name="new", definition=definition).id
            new_stage = stages.list_stages(second)[0].id
            assert new_stage != old_stage, (
                f"stage id {old_stage} of the deleted session now names a stage of "
                f"session {second[:8]}"
            )
    finally:
        engine.dispose()
