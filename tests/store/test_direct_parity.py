"""The driver path (store.direct_control, store.direct_reads) against the managers: every
user operation from every state, both ways, on twin sessions of one store; the rows, the
events, the changes logged and the refusals must be the same. Real SQLite and PostgreSQL.

This is what keeps the two ways into the store one source of truth (docs/ARCHITECTURE.md
§2, "Two ways in"): a rule changed on one side only fails here."""

from __future__ import annotations

import functools
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from store import FlowSessionManager, StageManager, StoreError
from store.direct import DirectStore
from store.direct_control import DirectControl
from store.direct_reads import DirectReads
from store.log_ingest import LogLines, append_log_lines
from store.queries import SessionFilter, get_session_view, list_events, read_logs
from store.queries import count_sessions as orm_count
from store.queries import list_sessions as orm_list
from store.records import SessionChange, change_lines
from tests.store.test_gates import DEFINITION, Recorder

Managers = tuple[FlowSessionManager, StageManager]


def _stage_id(managers: Managers, sid: str, name: str) -> int:
    return next(s.id for s in managers[1].list_stages(sid) if s.name == name)


def _started(managers: Managers, sid: str) -> None:
    sessions, stages = managers
    sessions.start_session(sid)
    build = _stage_id(managers, sid, "build")
    stages.move_stage(build, "ACTIVE")
    stages.move_stage(build, "COMPLETED")


@functools.cache
def _dead_pid() -> int:
    """One pid that no process has (the same for twins: their rows must match)."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _gates(managers: Managers, sid: str, *names: str) -> None:
    for name in names:
        managers[1].move_stage(_stage_id(managers, sid, name), "PAUSED")


def _pending(m: Managers, sid: str) -> None:
    pass


def _paused_before_start(m: Managers, sid: str) -> None:
    m[0].pause(sid)


def _active(m: Managers, sid: str) -> None:
    _started(m, sid)


def _active_orphaned(m: Managers, sid: str) -> None:
    m[0].start_session(sid, runner_pid=_dead_pid())


def _active_at_a_gate(m: Managers, sid: str) -> None:
    _started(m, sid)
    _gates(m, sid, "qa")


def _paused(m: Managers, sid: str) -> None:
    _started(m, sid)
    m[0].pause(sid)


def _paused_at_a_gate(m: Managers, sid: str) -> None:
    _started(m, sid)
    _gates(m, sid, "qa")
    m[0].pause(sid, reason="waiting: qa")


def _paused_with_two_gates(m: Managers, sid: str) -> None:
    _started(m, sid)
    _gates(m, sid, "qa", "legal")
    m[0].pause(sid, reason="waiting: legal")


def _paused_orphaned_at_a_gate(m: Managers, sid: str) -> None:
    m[0].start_session(sid, runner_pid=_dead_pid())
    build = _stage_id(m, sid, "build")
    m[1].move_stage(build, "ACTIVE")
    m[1].move_stage(build, "COMPLETED")
    _gates(m, sid, "qa")
    m[0].pause(sid, reason="waiting: qa")


def _failed(m: Managers, sid: str) -> None:
    _started(m, sid)
    m[1].move_stage(_stage_id(m, sid, "qa"), "PAUSED")
    m[0].abort(sid)


def _completed(m: Managers, sid: str) -> None:
    _started(m, sid)
    for name in ("qa", "legal"):
        m[1].move_stage(_stage_id(m, sid, name), "PAUSED")
        m[1].move_stage(_stage_id(m, sid, name), "COMPLETED")
    deploy = _stage_id(m, sid, "deploy")
    m[1].move_stage(deploy, "ACTIVE")
    m[1].move_stage(deploy, "COMPLETED")
    m[0].complete(sid)


SCENARIOS: dict[str, Callable[[Managers, str], None]] = {
    "pending": _pending,
    "paused before it started": _paused_before_start,
    "active with a live runner": _active,
    "active and orphaned": _active_orphaned,
    "active with a gate waiting": _active_at_a_gate,
    "paused": _paused,
    "paused at a gate": _paused_at_a_gate,
    "paused with two gates waiting": _paused_with_two_gates,
    "paused at a gate, its runner dead": _paused_orphaned_at_a_gate,
    "failed": _failed,
    "completed": _completed,
}
OPERATIONS: list[tuple[str, str | None]] = [
    ("pause", None),
    ("resume", None),
    ("abort", None),
    ("approve", None),
    ("approve", "qa"),
    ("approve", "legal"),
    ("approve", "deploy"),
    ("approve", "nosuch"),
]


def _snapshot(db: Any, sid: str) -> tuple[Any, ...]:
    """The session, its stages and its events, with the id and the clocks left out (what
    differs between twins by nature); a time is only set or not."""
    db.commit()

    def rows(sql: str) -> list[tuple[Any, ...]]:
        found = db.connection().execute(text(sql), {"sid": sid}).all()
        return [
            tuple((k in _CLOCKS and v is not None) or v for k, v in r._mapping.items())
            for r in found
        ]

    session = rows(
        "SELECT status, reason, version, started_at, finished_at, runner_host, runner_pid, "
        "runner_lease, queued FROM flow_sessions WHERE id = :sid"
    )
    stages = rows(
        "SELECT name, status, version, attempt, progress, error, exit_code, started_at, "
        "finished_at FROM stage_instances WHERE session_id = :sid ORDER BY position"
    )
    events = rows(
        "SELECT stage, op, from_status, to_status, actor, host, pid, reason "
        "FROM flow_events WHERE session_id = :sid ORDER BY id"
    )
    db.commit()
    return session, stages, events


_CLOCKS = {"started_at", "finished_at"}


def _apply_orm(managers: Managers, op: str, sid: str, gate: str | None) -> Any:
    sessions = managers[0]
    return sessions.approve(sid, gate) if op == "approve" else getattr(sessions, op)(sid)


def _apply_direct(control: DirectControl, op: str, sid: str, gate: str | None) -> Any:
    return control.approve(sid, gate) if op == "approve" else getattr(control, op)(sid)


def _outcome(call: Callable[[], Any], sid: str) -> tuple[str, str]:
    """What an operation answered, with the session's id written as SID: its change, or
    the type and message of its refusal."""
    try:
        result = call()
    except StoreError as exc:
        return type(exc).__name__, str(exc).replace(sid[:12], "SID")
    change = getattr(result, "change", result)
    return "ok", repr(change).replace(sid, "SID")


def _changes(changes: list[SessionChange], sid: str) -> list[str]:
    return [repr(c).replace(sid, "SID") for c in changes]


def _lines(lines: list[Any], sid: str) -> list[tuple[Any, ...]]:
    return [tuple(str(v).replace(sid, "SID") for v in line) for line in lines]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_every_operation_changes_the_same_rows_both_ways(
    scenario: str, db: Any, direct: DirectStore, logged_lines: list[Any]
) -> None:
    from store.integration import FlowStatusIntegration

    recorder = Recorder()
    managers = (FlowSessionManager(db, integration=recorder), StageManager(db))
    logging_sessions = FlowSessionManager(db, integration=FlowStatusIntegration(db))
    control = DirectControl(direct)
    for op, gate in OPERATIONS:
        twins = []
        for _ in range(2):
            sid = managers[0].create_session("release", name="r", definition=DEFINITION).id
            SCENARIOS[scenario](managers, sid)
            twins.append(sid)
        by_orm, by_driver = twins
        assert _snapshot(db, by_orm)[:2] == _snapshot(db, by_driver)[:2]
        recorder.changes.clear()
        orm = _outcome(lambda: _apply_orm(managers, op, by_orm, gate), by_orm)  # noqa: B023
        logged_by_orm = _changes(recorder.changes, by_orm)
        # the same operation on a third twin, through the managers the CLI uses (logging)
        third = managers[0].create_session("release", name="r", definition=DEFINITION).id
        SCENARIOS[scenario](managers, third)
        logged_lines.clear()
        _outcome(lambda: _apply_orm((logging_sessions, managers[1]), op, third, gate), third)  # noqa: B023
        lines_by_orm = _lines(logged_lines, third)
        outcome: list[Any] = []

        def driver(
            sid: str = by_driver, op: str = op, gate: str | None = gate, kept: list[Any] = outcome
        ) -> Any:
            kept.append(_apply_direct(control, op, sid, gate))
            return kept[-1]

        drv = _outcome(driver, by_driver)
        what = f"{op} {gate or ''} of a session {scenario}"
        assert drv == orm, what
        assert _snapshot(db, by_driver) == _snapshot(db, by_orm), what
        if outcome:
            logged = [change for change, _category in outcome[0].logged]
            assert _changes(logged, by_driver) == logged_by_orm, what
            who = (logging_sessions.actor, logging_sessions.host, logging_sessions.pid)
            lines = [
                (level, category, stage, text)
                for level, category, _sid, stage, text in change_lines(outcome[0].logged, *who)
            ]
            assert _lines(lines, by_driver) == lines_by_orm, what
        else:
            assert lines_by_orm == [], what


def test_resume_of_an_orphan_says_it_needs_a_runner_and_of_a_live_one_not(
    db: Any, direct: DirectStore
) -> None:
    managers = (FlowSessionManager(db), StageManager(db))
    control = DirectControl(direct)
    orphan = managers[0].create_session("release", name="r", definition=DEFINITION).id
    _active_orphaned(managers, orphan)
    assert control.resume(orphan).needs_runner
    live = managers[0].create_session("release", name="r", definition=DEFINITION).id
    _paused(managers, live)
    assert not control.resume(live).needs_runner


def test_ids_resolve_the_same_both_ways(db: Any, direct: DirectStore) -> None:
    sessions = FlowSessionManager(db)
    control = DirectControl(direct)
    ids = [sessions.create_session("release", definition=DEFINITION).id for _ in range(3)]
    for given in (ids[0], ids[0][:6], ids[0][:4].upper(), "ab", "a b%", "zzzz_", ids[1][:1] * 4):
        expected = _outcome(lambda g=given: sessions.resolve_session_id(g), ids[0])
        assert _outcome(lambda g=given: control.resolve_session_id(g), ids[0]) == expected, given


def _every_scenario(db: Any) -> list[str]:
    managers = (FlowSessionManager(db), StageManager(db))
    ids = []
    for name, setup in SCENARIOS.items():
        sid = managers[0].create_session("release", name=name, definition=DEFINITION).id
        setup(managers, sid)
        ids.append(sid)
    db.commit()
    return ids


def test_the_session_list_is_the_same_both_ways(db: Any, direct: DirectStore) -> None:
    _every_scenario(db)
    reads = DirectReads(direct)
    for status in (None, "PAUSED", "ACTIVE"):
        for limit in (1, 5, 100):
            filt = SessionFilter(status=status, workflow_id="release")
            orm = [v.to_json() for v in orm_list(db, filt, limit=limit)]
            drv = reads.list_sessions(status=status, workflow_id="release", limit=limit)
            assert [v.to_json() for v in drv] == orm
            assert [v.orphaned for v in drv] == [v["orphaned"] for v in orm]
        assert reads.count_sessions(status=status) == orm_count(db, SessionFilter(status))
    db.commit()


def test_a_list_of_several_statuses_is_the_same_both_ways(db: Any, direct: DirectStore) -> None:
    _every_scenario(db)
    reads = DirectReads(direct)
    every = ("PENDING", "ACTIVE", "PAUSED", "COMPLETED", "FAILED")
    for statuses in (("PAUSED", "FAILED"), ("ACTIVE",), ("COMPLETED", "PENDING", "ACTIVE"), ()):
        orm = [v.to_json() for v in orm_list(db, SessionFilter(statuses=statuses), limit=100)]
        assert orm and {v["status"] for v in orm} <= set(statuses or every)
        drv = reads.list_sessions(status=statuses, limit=100)
        assert [v.to_json() for v in drv] == orm
        assert reads.count_sessions(status=statuses) == len(orm)
    db.commit()


def test_a_session_its_history_and_its_report_read_the_same_both_ways(
    db: Any, direct: DirectStore
) -> None:
    from store.views import status_report

    reads = DirectReads(direct)
    for sid in _every_scenario(db):
        orm = get_session_view(db, sid)
        drv = reads.session_view(sid)
        assert orm is not None and drv is not None
        assert drv == orm
        assert status_report(drv, 1e9) == status_report(orm, 1e9)
        assert reads.events(sid) == list_events(db, sid)
        db.commit()
    assert reads.session_view("f" * 32) is None


def test_log_reads_are_the_same_both_ways(db: Any, direct: DirectStore) -> None:
    sid = FlowSessionManager(db).create_session("release", definition=DEFINITION).id
    groups = [
        LogLines(sid, 1.0 + i, level, "workflow.stage.integration", stage, (f"line {i}",))
        for i, (level, stage) in enumerate(
            [("INFO", "build"), ("DEBUG", None), ("ERROR", "qa"), ("WARNING", "build")] * 5
        )
    ]
    append_log_lines(db, groups)
    reads = DirectReads(direct)
    for options in (
        {},
        {"min_level": "WARNING"},
        {"stages": ["build"]},
        {"stages": ["build", "qa"]},
        {"limit": 3, "newest": True},
        {"after_id": read_logs(db, sid)[4].id, "limit": 4},
        {"min_level": "info", "stages": ["build"], "limit": 2, "newest": True},
    ):
        assert reads.logs(sid, **options) == read_logs(db, sid, **options), options
        db.commit()


def test_a_commit_whose_answer_is_lost_is_reported_unconfirmed_and_not_tried_again(
    db: Any, direct: DirectStore
) -> None:
    """The connection breaking during COMMIT cannot be timed for real: the commit here
    commits, then fails as a lost connection would."""
    from store.direct_control import CommitUnconfirmed

    class LostAnswer(DirectStore):
        def commit(self) -> None:
            super().commit()
            raise self.errors[0]("server closed the connection unexpectedly")

    control = DirectControl(LostAnswer(direct.connection, direct.dialect))
    sid = FlowSessionManager(db).create_session("release", definition=DEFINITION).id
    _active(_managers(db), sid)
    with pytest.raises(CommitUnconfirmed, match=f"'vc flow session show {sid[:12]}'"):
        control.pause(sid)
    db.commit()
    view = get_session_view(db, sid)
    assert view is not None and view.status == "PAUSED"
    assert [e.op for e in list_events(db, sid)].count("pause") == 1


def _managers(db: Any) -> Managers:
    return FlowSessionManager(db), StageManager(db)
