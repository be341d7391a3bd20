"""The dashboard's operations keep the session's log in the order things happened: what the
dashboard logged before a change (still queued for the store's log table) is stored before
the change's own records, which the change commits itself."""

from __future__ import annotations

from typing import Any

from store.queries import read_logs


def test_a_line_logged_before_a_key_is_stored_before_the_change_the_key_made(
    ctx: Any, hello_definition: Any
) -> None:
    from loguru import logger

    from app.tui import operations

    with ctx.factory() as db:
        sid = ctx.sessions(db).create_session("hello", definition=hello_definition).id
    ctx.logging.flush()
    logger.bind(category="workflow.session.operations", session_id=sid, stage=None).warning(
        "a warning of the key before"
    )
    operations.abort(ctx, sid)
    ctx.logging.flush()
    with ctx.factory() as db:
        texts = [line.text for line in read_logs(db, sid)]
        db.commit()
    warned = texts.index("a warning of the key before")
    aborted = next(i for i, text in enumerate(texts) if text.startswith("abort "))
    assert warned < aborted, texts
