"""FlowStatusIntegration: store state -> status reports, and committed transitions -> the
integration log.

`vc flow status` prints :meth:`FlowStatusIntegration.status_report`. Managers given an
integration call its ``publish`` after every commit; this one logs the change under the
``workflow.session.integration`` category (integration.log). An observer of its own (the
runner's announcer, an embedding application) is given to the managers in its place: it
only needs a ``publish(change)`` method.
"""

from __future__ import annotations

import time
from typing import Any

from sqlmodel import Session

from store.changes import logging_enabled
from store.errors import SessionNotFound
from store.managers import FlowSessionManager
from store.queries import SessionView, get_session_view
from store.records import INTEGRATION_CATEGORY, SessionChange, integration_text
from store.views import status_report, status_report_text

CATEGORY = INTEGRATION_CATEGORY


class FlowStatusIntegration:
    #: Its line of a change is one of the records :func:`store.records.change_lines`
    #: gives (a manager writing its records in the change's transaction writes it too).
    logs_changes = True

    def __init__(self, session: Session) -> None:
        self.session = session

    def publish(self, change: SessionChange) -> None:
        """Log the committed change. The line keeps the format readers of integration.log
        know ("notify 0 subscriber(s): …"): this integration hands changes to no one."""
        if logging_enabled():
            from loguru import logger

            logger.bind(category=CATEGORY, session_id=change.session_id, stage=change.stage).debug(
                integration_text(change)
            )

    def status_report(self, session_id: str) -> dict[str, Any]:
        """The session document plus a stage summary: what `vc flow status --json` prints."""
        return self.status_report_and_view(session_id)[0]

    def status_report_and_view(self, session_id: str) -> tuple[dict[str, Any], SessionView]:
        """:meth:`status_report` and the view it was made from, read once (the human
        output also shows what the view derives: a gate's checklist, a queued mark)."""
        sid = FlowSessionManager(self.session).resolve_session_id(session_id)
        view = get_session_view(self.session, sid)
        if view is None:
            raise SessionNotFound(f"no session matches {session_id!r}")
        report = status_report(view, time.time())
        if logging_enabled():
            from loguru import logger

            logger.bind(category=CATEGORY, session_id=sid, stage=None).debug(
                status_report_text(report)
            )
        return report, view
