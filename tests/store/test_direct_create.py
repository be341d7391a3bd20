"""A new session written on the driver path (store.direct_create) against the managers'
``insert_session``: twin sessions of the same workflow and options, one each way, in one
store; every column of the session, its stages and its events, and the lines logged, must
be the same. Real SQLite and PostgreSQL.

Both ways insert the rows :func:`store.new_session.new_session` decides; what this guards
is how each writes them (the JSON text, booleans, NULLs, the events and their actors)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import text

from store import FlowSessionManager
from store.direct import DirectStore
from store.direct_create import DirectCreate
from store.models import FlowSession, StageInstance
from store.new_session import NewSession, new_session
from store.queries import get_session_view
from store.records import change_lines
from store.workflows import load_workflow_text

WORKFLOW = """
id: shards
params:
  shards: {type: int, default: 2}
  label: {default: "a \\"quoted\\" ünïcode label"}
max_parallel: 3
stages:
  - name: prepare
    run: echo prepare
  - name: convert
    needs: [prepare]
    matrix: {part: [1, 2, 3], format: [png, "we bp"]}
    run: echo $VC_MATRIX_PART
  - name: review
    needs: [convert]
    checklist: [looked at it]
  - name: publish
    run: "true"
"""

#: The options of each twin pair (new_session's keywords besides the definition).
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "named, with metadata": {"name": "nightly «run»", "metadata": {"ticket": "T-1", "n": 3}},
    "queued": {"queued": True},
    "claimed by its runner": {"runner": ("build-02", 4242)},
    "with parameters": {"params": {"shards": "8", "label": "x"}},
    "with max_parallel": {"max_parallel": 7},
}

#: Columns whose values differ between twins by nature: left out, or only set-or-not.
_IDS = {"id", "session_id"}
_CLOCKS = {"created_at", "updated_at", "started_at", "finished_at", "heartbeat_at", "at"}


def _rows(db: Any, sql: str, sid: str) -> list[dict[str, Any]]:
    """Every column of the rows, the JSON ones as the text stored, ids left out and clocks
    reduced to set-or-not."""
    db.commit()
    found = db.connection().execute(text(sql), {"sid": sid}).all()
    db.commit()
    return [
        {
            k: (v is not None) if k in _CLOCKS else v
            for k, v in row._mapping.items()
            if k not in _IDS
        }
        for row in found
    ]


def _json_as_text(table: Any) -> str:
    return ", ".join(
        f"CAST({c.name} AS TEXT) AS {c.name}" if c.type.__class__.__name__ == "JSON" else c.name
        for c in table.columns
    )


def _stored(db: Any, sid: str) -> tuple[Any, ...]:
    sessions = FlowSession.__table__  # type: ignore[attr-defined]
    stages = StageInstance.__table__  # type: ignore[attr-defined]
    return (
        _rows(db, f"SELECT {_json_as_text(sessions)} FROM flow_sessions WHERE id = :sid", sid),
        _rows(
            db,
            f"SELECT {_json_as_text(stages)} FROM stage_instances WHERE session_id = :sid "
            "ORDER BY position",
            sid,
        ),
        _rows(db, "SELECT * FROM flow_events WHERE session_id = :sid ORDER BY id", sid),
    )


def _twins(options: dict[str, Any]) -> tuple[NewSession, NewSession]:
    definition = load_workflow_text(WORKFLOW)
    return new_session("shards", definition=definition, **options), new_session(
        "shards", definition=definition, **options
    )


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_a_new_session_is_stored_the_same_both_ways(
    variant: str, db: Any, direct: DirectStore, logged_lines: list[Any]
) -> None:
    from store.integration import FlowStatusIntegration

    by_orm, by_driver = _twins(VARIANTS[variant])
    name = VARIANTS[variant].get("name")
    if name is None:  # the default name has the minute in it: twins made across one differ
        by_driver.session["name"] = by_orm.session["name"]
    FlowSessionManager(db, integration=FlowStatusIntegration(db)).insert_session(by_orm)
    creator = DirectCreate(direct)
    logged = creator.create(by_driver)

    assert _stored(db, by_orm.id) == _stored(db, by_driver.id)
    stages = _stored(db, by_driver.id)[1]
    assert len(stages) == 9  # prepare, 3 x 2 convert instances, review, publish
    driver_lines = [
        (line[0], line[1], line[4])  # level, category, text: what the sink records
        for change, category, actor in logged
        for line in change_lines([(change, category)], actor, creator.host, creator.pid)
    ]
    orm_lines = [(level, category, text) for level, category, _stage, text in logged_lines]
    assert [tuple(str(v).replace(by_driver.id, "SID") for v in line) for line in driver_lines] == [
        tuple(str(v).replace(by_orm.id, "SID") for v in line) for line in orm_lines
    ]


def test_both_ways_read_back_the_same_view(db: Any, direct: DirectStore) -> None:
    by_orm, by_driver = _twins({"params": {"shards": "5"}, "metadata": {"k": "v"}})
    by_driver.session["name"] = by_orm.session["name"]
    FlowSessionManager(db).insert_session(by_orm)
    DirectCreate(direct).create(by_driver)
    views = []
    for new in (by_orm, by_driver):
        view = get_session_view(db, new.id)
        assert view is not None
        data = view.to_json()
        views.append({k: v for k, v in data.items() if k not in ("id", "created_at", "updated_at")})
    assert views[0] == views[1]
    assert views[1]["params"] == {"shards": 5, "label": 'a "quoted" ünïcode label'}


def test_a_session_row_sets_every_column_and_stage_rows_leave_only_what_has_no_default() -> None:
    """The rows are decided without the models: every session column is given, and a stage
    column left out is one the table has no default for (NULL, as an insert through the
    models leaves it)."""
    new = new_session("shards", definition=load_workflow_text(WORKFLOW))
    sessions = FlowSession.__table__  # type: ignore[attr-defined]
    stages = StageInstance.__table__  # type: ignore[attr-defined]
    assert set(new.session) == {c.name for c in sessions.columns}
    for row in new.stages:
        left_out = {c for c in stages.columns if c.name not in row and c.name != "id"}
        assert {c.name for c in left_out if c.default is not None} == set()
        assert all(c.nullable for c in left_out)


def test_a_failed_create_on_the_driver_path_leaves_nothing(db: Any, direct: DirectStore) -> None:
    """One transaction: a stage row the table refuses takes the session and its events with
    it."""
    new = new_session("shards", definition=load_workflow_text(WORKFLOW))
    new.stages[-1]["name"] = None  # NOT NULL
    with pytest.raises(direct.errors):
        DirectCreate(direct).create(new)
    assert _stored(db, new.id) == ([], [], [])


@pytest.mark.parametrize("name", ["", "   ", "\x1b[0m", "\u200b", "\u3164"])
def test_a_blank_name_is_refused_by_the_python_api_and_nothing_is_stored(
    db: Any, name: str
) -> None:
    """The rule `--name` and the dashboard's form apply, for a script that calls the store."""
    manager = FlowSessionManager(db)
    with pytest.raises(ValueError, match="cannot be empty or blank"):
        manager.create_session("shards", name=name, definition=load_workflow_text(WORKFLOW))
    db.commit()
    assert db.connection().execute(text("SELECT count(*) FROM flow_sessions")).scalar() == 0
