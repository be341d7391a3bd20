"""A session waiting at manual gates, as a runner leaves it: shared by the CLI and the
dashboard tests, which make it through their own stores and then act on it."""

from __future__ import annotations

from typing import Any

#: Two gates side by side after build, then deploy after both.
TWO_GATES = """\
name: Two gates
stages:
  - {name: build, run: echo built}
  - {name: qa, needs: [build]}
  - {name: legal, needs: [build]}
  - {name: deploy, run: echo deployed, needs: [qa, legal]}
"""


def hold_at_gates(db: Any, session_id: str, gates: tuple[str, ...], paused_at: str | None) -> None:
    """Move the started session ``session_id`` of :data:`TWO_GATES` to where its runner
    would leave it: build COMPLETED, ``gates`` waiting (PAUSED), and the session PAUSED at
    ``paused_at`` (reason ``waiting: <gate>``) unless None. Manager calls only."""
    from store import FlowSessionManager, StageManager

    stages = StageManager(db, actor="tester")
    for stage in stages.list_stages(session_id):
        if stage.name == "build":
            stages.move_stage(stage.id, "ACTIVE")
            stages.move_stage(stage.id, "COMPLETED")
        elif stage.name in gates:
            stages.move_stage(stage.id, "PAUSED")
    if paused_at is not None:
        FlowSessionManager(db, actor="tester").pause(session_id, reason=f"waiting: {paused_at}")
