"""The parts of telling people, each on its own: the message, the delivery to real targets
on 127.0.0.1 (one that takes it, one that refuses, one that never answers), and the
announcer that the runner hooks in, over a real store (the end-to-end runs through `vc` are
in test_notify_e2e.py)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from app.runner.notifications import (
    ACTIONS,
    Event,
    Message,
    Sender,
    SessionAnnouncer,
    SessionFacts,
    action,
    compose,
    deliver,
)
from store import FlowSessionManager, StageManager
from store.queries import get_session_view, list_events
from tests.receivers import Receiver, Silent

FACTS = SessionFacts(
    session_id="3f2a1b2c3d4e5f60718293a4b5c6d7e8",
    name="nightly [bold]42",
    workflow_id="nightly-etl",
    host="build-01",
    started_at=1_000.0,
)
MESSAGE = Message("vc: test", "body of the test", "info")


@pytest.fixture
def log_lines() -> Iterator[list[tuple[str, str]]]:
    """(level, text) of every loguru record while the test runs."""
    from loguru import logger

    lines: list[tuple[str, str]] = []
    handler = logger.add(
        lambda m: lines.append((m.record["level"].name, m.record["message"])), level="DEBUG"
    )
    yield lines
    logger.remove(handler)


# -- the message ------------------------------------------------------------------------------


def test_a_failure_message_says_what_where_how_long_and_how_to_retry() -> None:
    event = Event("failure", "failure #9", 1_723.0, "load", "stage load failed: exit code 3")
    message = compose(event, FACTS)
    assert message.notify_type == "failure"
    assert "nightly-etl" in message.title and "failed" in message.title
    body = message.body
    for part in (
        'Session "nightly [bold]42"',
        FACTS.session_id,
        "workflow nightly-etl",
        "FAILED on host build-01 after 12m03s",
        "Stage: load",
        "Reason: stage load failed: exit code 3",
        "vc flow session retry 3f2a1b2c3d4e && vc flow run nightly-etl --session 3f2a1b2c3d4e",
        "vc flow session logs 3f2a1b2c3d4e",
    ):
        assert part in body, part


def test_a_failure_message_of_queued_work_says_its_retry_goes_to_the_workers() -> None:
    """A `run --session` after the retry would race the workers that claim it, and lose."""
    from dataclasses import replace

    event = Event("failure", "failure #9", 1_723.0, "load", "stage load failed: exit code 3")
    body = compose(event, replace(FACTS, queued=True)).body
    assert "Run it again (the next worker takes it): vc flow session retry 3f2a1b2c3d4e\n" in body
    assert "--session" not in body


def test_a_gate_message_lists_the_checklist_and_the_command_that_passes_it() -> None:
    event = Event(
        "gate", "gate approve #2", 1_300.0, "approve", "waiting: approve", ("row counts", "diff")
    )
    message = compose(event, FACTS)
    assert message.notify_type == "warning"
    assert "waits at the manual gate approve on host build-01 (running for 5m00s)" in message.body
    assert "  - row counts\n  - diff" in message.body
    assert f"Approve: {action('gate', FACTS.session_id, gate='approve')[1]}" in message.body
    assert "Approve: vc flow session approve 3f2a1b2c3d4e approve\n" in message.body


def test_a_success_message_says_how_long_it_took() -> None:
    message = compose(Event("success", "success #7", 1_061.0), FACTS)
    assert message.notify_type == "success"
    assert "COMPLETED on host build-01 in 1m01s" in message.body
    assert "vc flow session show 3f2a1b2c3d4e" in message.body


def test_control_sequences_of_user_text_do_not_reach_a_message() -> None:
    facts = SessionFacts(FACTS.session_id, "evil\x1b[2J\x07name", "wf", "h", None)
    message = compose(Event("failure", "failure #1", 0.0, "s", "boom\x1b]0;title\x07"), facts)
    assert "\x1b" not in message.body + message.title and "\x07" not in message.body


def test_every_event_kind_has_one_action() -> None:
    assert set(ACTIONS) == {"failure", "failure_queued", "gate", "success"}


# -- delivery ---------------------------------------------------------------------------------


def test_a_message_reaches_a_json_target(receiver: Receiver) -> None:
    [delivery] = deliver([receiver.url()], MESSAGE, 10)
    assert delivery.error is None
    [got] = receiver.messages()
    assert (got.title, got.message, got.type) == ("vc: test", "body of the test", "info")


def test_a_refusing_target_is_an_error_without_its_secret(refusing_receiver: Receiver) -> None:
    url = refusing_receiver.url(secret="hunter2secret")
    [delivery] = deliver([url], MESSAGE, 10)
    assert delivery.error is not None and "hunter2secret" not in delivery.error
    assert len(refusing_receiver.messages()) == 1  # it was asked, and said no


def test_a_target_that_never_answers_is_given_up_after_the_timeout(silent_target: Silent) -> None:
    started = time.monotonic()
    [delivery] = deliver([silent_target.url()], MESSAGE, 0.5)
    assert delivery.error == "did not answer within 0.5 s"
    assert time.monotonic() - started < 5  # not Apprise's own timeouts


def test_targets_are_told_at_once_so_one_hung_target_delays_no_other(
    receiver: Receiver, silent_target: Silent
) -> None:
    deliveries = deliver([silent_target.url(), receiver.url()], MESSAGE, 2)
    assert [d.error is None for d in deliveries] == [False, True]
    assert receiver.messages()


# -- the announcer ----------------------------------------------------------------------------

GATED = {
    "id": "release",
    "stages": [
        {"name": "build", "run": "true"},
        {"name": "approve", "checklist": ["changelog reviewed"]},
        {"name": "ship", "run": "false"},
    ],
}


def session_with(engine: Any, notify: dict[str, Any] | None) -> str:
    from store import get_session_factory

    definition = dict(GATED, notify=notify) if notify is not None else GATED
    with get_session_factory(engine)() as db:
        return FlowSessionManager(db).create_session("release", definition=definition).id


def run_like_a_runner(engine: Any, sid: str, announcer: SessionAnnouncer) -> None:
    """What the runner commits, through managers that have the announcer: start, a gate,
    its resume (which passes the gate), a stage failing, the session failing."""
    from store import get_session_factory

    with get_session_factory(engine)() as db:
        sessions = FlowSessionManager(db, actor="runner", integration=announcer)
        stages = StageManager(db, actor="runner", integration=announcer)
        sessions.start_session(sid)
        view = get_session_view(db, sid)
        announcer.configure(view)
        by_name = {s.name: s.id for s in stages.list_stages(sid)}
        stages.move_stage(by_name["build"], "ACTIVE")
        stages.move_stage(by_name["build"], "COMPLETED")
        stages.move_stage(by_name["approve"], "PAUSED")
        sessions.pause(sid, reason="waiting: approve")
        FlowSessionManager(db).resume(sid)
        stages.move_stage(by_name["ship"], "ACTIVE")
        stages.move_stage(by_name["ship"], "FAILED", error="exit code 1")
        sessions.fail(sid, "stage ship failed: exit code 1")


def test_the_announcer_sends_the_events_notify_asks_for_and_records_them(
    engine: Any, receiver: Receiver
) -> None:
    from store import get_session_factory

    sid = session_with(engine, {"on": ["failure", "gate"], "to": [receiver.url()]})
    sender = Sender()
    run_like_a_runner(
        engine, sid, SessionAnnouncer(get_session_factory(engine), sid, "h", sender=sender)
    )
    assert sender.drain(30)
    kinds = [m.type for m in receiver.messages()]
    assert kinds == ["warning", "failure"]  # the gate, then the failure; no start, no success
    assert "Stage: ship" in receiver.messages()[1].message
    assert "  - changelog reviewed" in receiver.messages()[0].message
    with get_session_factory(engine)() as db:
        notes = [e.reason for e in list_events(db, sid) if e.op == "notify"]
    assert [n.split(":")[0] for n in notes] == ["gate approve #2", "failure #5"]


def test_an_event_announced_by_a_previous_runner_is_not_announced_again(
    engine: Any, receiver: Receiver
) -> None:
    """A runner taking over a session re-enters the gate that still waits: the store says
    it was announced, so the second announcer sends nothing."""
    from store import get_session_factory

    factory = get_session_factory(engine)
    sid = session_with(engine, {"on": ["gate"], "to": [receiver.url()]})
    first, second = (SessionAnnouncer(factory, sid, "h", sender=Sender()) for _ in range(2))
    with factory() as db:
        view = get_session_view(db, sid)
    first.configure(view)
    second.configure(view)
    gate = Event("gate", "gate approve #2", time.time(), "approve", "waiting: approve")
    first.announce(gate)
    second.announce(gate)
    assert len(receiver.messages()) == 1
    later = Event("gate", "gate approve #4", time.time(), "approve", "waiting: approve")
    second.announce(later)  # the same gate reached again later is a new event
    assert len(receiver.messages()) == 2


def test_without_targets_the_announcer_does_nothing_and_loads_nothing(engine: Any) -> None:
    from store import get_session_factory

    sid = session_with(engine, None)
    sender = Sender()
    run_like_a_runner(
        engine, sid, SessionAnnouncer(get_session_factory(engine), sid, "h", sender=sender)
    )
    assert sender.pending == 0 and sender._thread is None


def test_without_notify_vc_notify_alone_announces_failures_and_gates(
    engine: Any, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    from store import get_session_factory

    monkeypatch.setenv("VC_NOTIFY", receiver.url())
    sid = session_with(engine, None)
    sender = Sender()
    run_like_a_runner(
        engine, sid, SessionAnnouncer(get_session_factory(engine), sid, "h", sender=sender)
    )
    assert sender.drain(30)
    assert [m.type for m in receiver.messages()] == ["warning", "failure"]


def test_a_bad_vc_notify_url_is_one_warning_and_the_others_are_still_told(
    engine: Any,
    receiver: Receiver,
    monkeypatch: pytest.MonkeyPatch,
    log_lines: list[tuple[str, str]],
) -> None:
    from store import get_session_factory

    monkeypatch.setenv("VC_NOTIFY", f"nosuchservice://hunter2secret@x {receiver.url('env')}")
    sid = session_with(engine, {"to": [receiver.url("file")]})
    sender = Sender()
    run_like_a_runner(
        engine, sid, SessionAnnouncer(get_session_factory(engine), sid, "h", sender=sender)
    )
    assert sender.drain(30)
    assert len(receiver.messages("env")) == 2 and len(receiver.messages("file")) == 2
    warnings = [text for level, text in log_lines if level == "WARNING"]
    assert len(warnings) == 1, warnings  # one warning, not one per event
    assert "VC_NOTIFY entry 1 (nosuchservice://…)" in warnings[0]
    assert all("hunter2secret" not in text for _, text in log_lines)


def test_importing_the_announcer_does_not_import_apprise() -> None:
    import subprocess

    code = "import sys, app.runner.runner; print('apprise' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_approve_command_of_a_matrix_gate_is_quoted_for_a_shell() -> None:
    _, command = action("gate", "3f2a1b2c3d4e5f60", gate="qa[os=linux]")
    assert command == "vc flow session approve 3f2a1b2c3d4e 'qa[os=linux]'"
