"""The log writers' insert (``append_log_lines``): every line stored once, in the order
given, exactly as given, on both stores."""

from __future__ import annotations

import time
from dataclasses import replace

from store.log_ingest import LogLines, append_log_lines, append_logs
from store.queries import read_logs

CATEGORY = "workflow.stage.integration"


def _stored(db, sid: str) -> list[tuple[float, str, str | None, str]]:  # type: ignore[no-untyped-def]
    db.commit()
    return [(r.at, r.level, r.stage, r.text) for r in read_logs(db, sid, limit=100_000)]


def _session(managers, hello_definition) -> str:  # type: ignore[no-untyped-def]
    sessions, _ = managers
    return sessions.create_session("hello", definition=hello_definition).id


def test_log_lines_are_stored_in_the_order_given_whatever_the_group_sizes(
    db, managers, hello_definition
):
    sid = _session(managers, hello_definition)
    big = [f"big {i}" for i in range(500)]
    groups = [
        LogLines(sid, 1.0, "INFO", CATEGORY, "build", big[:250]),
        LogLines(sid, 2.0, "WARNING", CATEGORY, "build", ["one stderr line"]),
        LogLines(sid, 3.0, "INFO", CATEGORY, None, ("a", "b")),
        LogLines(sid, 4.0, "INFO", CATEGORY, "build", big[250:]),
        LogLines(sid, 5.0, "DEBUG", CATEGORY, "test", [f"small {i}" for i in range(7)]),
    ]
    append_log_lines(db, groups)

    expected = [(g.at, g.level, g.stage, text) for g in groups for text in g.texts]
    assert _stored(db, sid) == expected


def test_log_texts_are_stored_exactly_as_given(db, managers, hello_definition):
    sid = _session(managers, hello_definition)
    texts = [
        "",
        "plain",
        'quotes " and \\ backslashes \\n \\u0000',
        "tab\there",
        "carriage \r return and new \n line inside one record",
        "a backslash at the end \\",
        "\\.",
        "unicode é ü 漢字 emoji 😀 and U+2028 \u2028",
        "[bold]markup[/bold] is text",
        "x" * 50_000,
        "after the nul below",
        *[f"line {i}" for i in range(20)],
    ]
    append_log_lines(db, [LogLines(sid, 7.5, "INFO", CATEGORY, "build", texts)])

    assert [text for *_, text in _stored(db, sid)] == texts


def test_a_nul_character_is_stored_as_backslash_x00_on_both_stores(db, managers, hello_definition):
    sid = _session(managers, hello_definition)
    many = [f"line {i}" for i in range(10)]
    append_log_lines(
        db,
        [
            LogLines(sid, 1.0, "INFO", CATEGORY, "build", ["one \x00 alone"]),
            LogLines(sid, 2.0, "INFO", CATEGORY, "build", [*many, "in a big \x00 group"]),
        ],
    )

    assert [text for *_, text in _stored(db, sid)] == [
        "one \\x00 alone",
        *many,
        "in a big \\x00 group",
    ]


def test_log_records_given_as_mappings_keep_their_order(db, managers, hello_definition):
    sid = _session(managers, hello_definition)
    rows = [
        {
            "session_id": sid,
            "at": float(i),
            "level": "INFO",
            "category": CATEGORY,
            "stage": None,
            "text": f"record {i}",
        }
        for i in range(30)
    ]
    append_logs(db, rows)

    assert [text for *_, text in _stored(db, sid)] == [f"record {i}" for i in range(30)]


# -- a runner's rows are fenced by its claim ----------------------------------------------------


def _claimed(managers, hello_definition):  # type: ignore[no-untyped-def]
    """A session claimed by runner pid 4242 on host `here`, and that runner's lease."""
    sid = _session(managers, hello_definition)
    return sid, _claim(managers, sid, "here", 4242)


def _claim(managers, sid: str, host: str, pid: int):  # type: ignore[no-untyped-def]
    """``sid`` claimed by the runner ``host``/``pid`` as a runner claims (its own process
    writes the claim and its ``start`` event); its lease."""
    sessions, _ = managers
    sessions.host, sessions.pid = host, pid
    change = sessions.start_session(sid, runner_host=host, runner_pid=pid)
    return sessions.lease_of(change, host, pid)


def test_a_runners_rows_land_while_its_claim_holds(db, managers, hello_definition):
    sid, lease = _claimed(managers, hello_definition)
    left_out = append_log_lines(db, [LogLines(sid, 1.0, "INFO", CATEGORY, "s", ("a", "b"), lease)])
    assert left_out == []
    assert [text for *_, text in _stored(db, sid)] == ["a", "b"]


def test_a_runners_lines_logged_after_another_claim_are_left_out_and_the_others_land(
    db, managers, hello_definition
):
    sid, lease = _claimed(managers, hello_definition)
    other, other_lease = _claimed(managers, hello_definition)
    taken_over = replace(lease, token=lease.token + 1)  # the claim a takeover wrote since
    late = LogLines(sid, time.time(), "INFO", CATEGORY, "s", ("read after it",), taken_over)
    groups = [
        late,
        LogLines(sid, time.time(), "INFO", CATEGORY, None, ("said by a person",)),
        LogLines(other, time.time(), "INFO", CATEGORY, "s", ("kept",), other_lease),
    ]
    assert append_log_lines(db, groups) == [late]
    assert [text for *_, text in _stored(db, sid)] == ["said by a person"]
    assert [text for *_, text in _stored(db, other)] == ["kept"]


def test_a_runners_lines_logged_before_the_session_was_claimed_again_land(
    db, managers, hello_definition
):
    """A worker's runner hands the session back, and the next worker claims it before the
    first one's last lines were stored: they are true, and told before that claim."""
    sessions, _ = managers
    sid, lease = _claimed(managers, hello_definition)
    last = LogLines(sid, time.time(), "INFO", CATEGORY, None, ("interrupted",), lease)
    assert sessions.release_runner(sid, runner_host="here", runner_pid=4242)
    time.sleep(0.01)
    _claim(managers, sid, "there", 5151)
    assert append_log_lines(db, [last]) == []
    assert [text for *_, text in _stored(db, sid)] == ["interrupted"]


def test_a_runners_line_after_the_next_claim_is_left_out_whatever_claims_followed(
    db, managers, hello_definition
):
    """Runner A, cut off, logs on after B's claim; C claims after B: A's line is still
    after the claim that replaced A (B's), not before the latest (C's)."""
    sessions, _ = managers
    sid, lease = _claimed(managers, hello_definition)  # A: here/4242
    assert sessions.release_runner(sid, runner_host="here", runner_pid=4242)
    time.sleep(0.01)
    _claim(managers, sid, "b", 5151)
    time.sleep(0.01)
    late = LogLines(sid, time.time(), "INFO", CATEGORY, None, ("A, cut off",), lease)
    time.sleep(0.01)
    assert sessions.release_runner(sid, runner_host="b", runner_pid=5151)
    _claim(managers, sid, "c", 6161)
    assert append_log_lines(db, [late]) == [late]
    assert _stored(db, sid) == []


def test_a_runners_last_rows_land_after_it_released_the_session(db, managers, hello_definition):
    """Its closing lines ("session completed") are mirrored after the release."""
    sessions, _ = managers
    sid, lease = _claimed(managers, hello_definition)
    assert sessions.release_runner(sid, runner_host="here", runner_pid=4242)
    append_log_lines(db, [LogLines(sid, time.time(), "INFO", CATEGORY, None, ("bye",), lease)])
    assert [text for *_, text in _stored(db, sid)] == ["bye"]


def test_a_runners_rows_of_a_deleted_session_are_left_out_and_not_returned(
    db, managers, hello_definition
):
    """No row outlives its session, and no note of them either."""
    sessions, _ = managers
    sid, lease = _claimed(managers, hello_definition)
    sessions.delete(sid, force=True)
    group = LogLines(sid, time.time(), "INFO", CATEGORY, None, ("x",), lease)
    assert append_log_lines(db, [group]) == []
    assert _stored(db, sid) == []
