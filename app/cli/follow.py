"""`vc flow session logs --follow`: new lines of a session until it ends.

A follow is watched for hours, often across a database restart or a connection cut by a
proxy. So it treats the store as `wait` and the runners do (store.failures): a store
that is away for now is said once per outage (``…; still following``) and read again,
on a new connection, with a backoff; one that refuses us for good (the database dropped,
the role's login revoked, the schema gone) ends the follow with one line, exit 1.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import typer

from app.cli.common import error_line
from app.cli.operations import note
from app.console import warning_line

if TYPE_CHECKING:
    from app.cli.direct import Reader
    from store.queries import LogView

#: Seconds between two reads when nothing new was logged.
POLL = 0.25
#: The longest wait between two tries while the store is away.
MOST_BETWEEN_TRIES = 2.0


def follow_logs(
    reader: Reader | None,
    sid: str,
    last_id: int,
    read: Callable[[Reader, int], Sequence[LogView]],
    show: Callable[[Sequence[LogView]], None],
) -> None:
    """Print what ``read(reader, after_id)`` finds until the session has ended and stayed
    quiet for a few reads. ``reader`` is the one the command opened; after an outage the
    follow reads through one it opens itself."""
    from app.cli.direct import reading

    reopened = contextlib.ExitStack()
    away = False
    between = POLL
    idle_after_end = 0
    said_orphaned = False
    try:
        while True:
            try:
                if reader is None:
                    reader = reopened.enter_context(reading(warned=True, translate=False))
                records = read(reader, last_id)
                view = None if records else reader.session_view(sid)
            except typer.Exit:
                raise
            except Exception as exc:
                _raise_unless_away(exc)
                if not away:  # once per outage
                    away = True
                    warning_line(f"{_unavailable(exc)}; still following")
                reopened.close()
                reopened, reader = contextlib.ExitStack(), None
                time.sleep(between)
                between = min(between * 2, MOST_BETWEEN_TRIES)
                continue
            away, between = False, POLL
            if records:
                show(records)
                last_id = records[-1].id
                continue
            if view is None:
                error_line(f"session {sid[:12]} was deleted")
                raise typer.Exit(1)
            if view.status in ("COMPLETED", "FAILED"):
                idle_after_end += 1
                if idle_after_end > 2:
                    return
            if view.orphaned and not said_orphaned:  # once per loss of its runner
                note(
                    f"session {sid[:12]} has no live runner (orphaned): nothing more is "
                    f"written until 'vc flow session resume {sid[:12]}' starts one; "
                    "still following"
                )
            said_orphaned = view.orphaned
            time.sleep(POLL)
    except KeyboardInterrupt:
        # Stopped before the session ended: 130, as `wait` and `tail -f` answer, so a
        # script does not take the session for done. Quietly: the user asked for it.
        raise typer.Exit(130) from None
    finally:
        reopened.close()


def _raise_unless_away(exc: Exception) -> None:
    """Anything but a store away for now goes on up: a refusal for good as one line
    naming it, anything else as the command's other errors do."""
    from store.failures import classify, raise_if_refused

    if classify(exc) is None:
        raise exc
    raise_if_refused(exc, "this follow")


def _unavailable(exc: BaseException) -> str:
    from store.engine import unavailable_message
    from store.errors import StoreUnavailable
    from store.location import resolve_database_url

    if isinstance(exc, StoreUnavailable):  # worded already
        return str(exc)
    return unavailable_message(exc, resolve_database_url())
