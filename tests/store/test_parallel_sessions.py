"""A new session's parallelism: ``create_session(max_parallel=N)`` (`vc flow run
--max-parallel N`) is written into the session's definition snapshot, where every runner of
the session reads it."""

from __future__ import annotations

from typing import Any

import pytest

from store.graph import max_parallel
from store.queries import get_session_view
from store.workflows import load_workflow_text

WORKFLOW = """\
max_parallel: 4
stages:
  - name: a
    run: "true"
  - name: b
    needs: []
    run: "true"
"""


def snapshot_of(db: Any, sid: str) -> dict[str, Any]:
    view = get_session_view(db, sid)
    assert view is not None and view.definition is not None
    return view.definition


def test_max_parallel_given_at_creation_is_in_the_snapshot(managers: Any, db: Any) -> None:
    definition = load_workflow_text(WORKFLOW, path="w.yaml", default_id="w")
    sid = managers[0].create_session("w", definition=definition, max_parallel=2).id
    assert snapshot_of(db, sid)["max_parallel"] == 2
    assert max_parallel(snapshot_of(db, sid)) == 2


def test_without_max_parallel_the_session_keeps_the_workflows(managers: Any, db: Any) -> None:
    definition = load_workflow_text(WORKFLOW, path="w.yaml", default_id="w")
    sid = managers[0].create_session("w", definition=definition).id
    assert max_parallel(snapshot_of(db, sid)) == 4


@pytest.mark.parametrize("value", [0, -1, 1025, True, 2.5])
def test_a_max_parallel_no_workflow_could_hold_is_refused_and_creates_nothing(
    managers: Any, db: Any, value: Any
) -> None:
    from sqlalchemy import func, select

    from store.models import FlowSession

    definition = load_workflow_text(WORKFLOW, path="w.yaml", default_id="w")
    with pytest.raises(ValueError, match="max_parallel must be an integer from 1 to 1024"):
        managers[0].create_session("w", definition=definition, max_parallel=value)
    assert db.execute(select(func.count()).select_from(FlowSession)).scalar_one() == 0
