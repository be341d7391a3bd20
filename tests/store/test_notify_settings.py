"""A workflow's ``notify`` section: what it accepts, what it refuses (with file, line and
key, never repeating a URL, which may hold a secret), and the masking of notification URLs
wherever one is shown."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from store.definitions import WorkflowDefinition
from store.errors import WorkflowError
from store.targets import masked, masked_definition, problem, redact
from store.workflows import load_workflow_file, load_workflow_text

STAGES = """
stages:
  - name: build
    run: "true"
  - name: approve
    checklist: [numbers look right]
"""


def load(notify: str) -> WorkflowDefinition:
    return load_workflow_text(textwrap.dedent(notify).lstrip() + STAGES, default_id="wf")


def load_file(tmp_path: Path, notify: str) -> WorkflowDefinition:
    path = tmp_path / "wf.yaml"
    path.write_text(textwrap.dedent(notify).lstrip() + STAGES)
    return load_workflow_file(path)


# -- what it accepts --------------------------------------------------------------------------


def test_without_notify_a_workflow_announces_nothing_of_its_own() -> None:
    definition = load("name: quiet\n")
    assert definition.notify is None
    assert "notify" not in definition.to_dict()  # older snapshots look the same


def test_notify_defaults_to_failure_and_gate_with_no_targets_of_its_own() -> None:
    definition = load("notify: {}\n")
    assert definition.notify is not None
    assert definition.notify.on == ("failure", "gate")
    assert definition.notify.to == ()


def test_notify_takes_events_and_apprise_urls() -> None:
    definition = load(
        """
        notify:
          on: [failure, success]
          to: ["ntfy://vc-alerts", "json://127.0.0.1:8080/hook"]
        """
    )
    assert definition.notify is not None
    assert definition.notify.on == ("failure", "success")
    assert definition.notify.to == ("ntfy://vc-alerts", "json://127.0.0.1:8080/hook")
    assert definition.notify.events() == {"failure", "success"}


def test_a_single_event_and_a_single_url_stand_for_lists_of_one() -> None:
    definition = load("notify:\n  on: gate\n  to: ntfy://vc-alerts\n")
    assert definition.notify is not None
    assert definition.notify.on == ("gate",)
    assert definition.notify.to == ("ntfy://vc-alerts",)


def test_any_means_failure_gate_and_success() -> None:
    definition = load("notify: {on: [any]}\n")
    assert definition.notify is not None
    assert definition.notify.events() == {"failure", "gate", "success"}


def test_notify_survives_the_snapshot_round_trip() -> None:
    definition = load("notify: {on: [any], to: ['json://user:pw@127.0.0.1:9/h']}\n")
    again = WorkflowDefinition.from_dict(definition.to_dict())
    assert again.notify == definition.notify


# -- what it refuses --------------------------------------------------------------------------


def test_a_url_apprise_cannot_parse_is_refused_with_file_line_and_key(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_file(
            tmp_path,
            """
            notify:
              to:
                - ntfy://vc-alerts
                - "json://"
            """,
        )
    error = caught.value
    assert (error.path, error.line, error.key) == (str(tmp_path / "wf.yaml"), 4, "notify.to[1]")
    assert "Apprise cannot parse this json:// URL" in str(error)


def test_a_url_of_an_unknown_service_is_refused_without_repeating_its_secret(
    tmp_path: Path,
) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_file(tmp_path, "notify:\n  to: ['nosuchservice://admin:hunter2secret@host/x']\n")
    text = str(caught.value)
    assert caught.value.line == 2 and caught.value.key == "notify.to[0]"
    assert "no Apprise service has the scheme 'nosuchservice://'" in text
    assert "hunter2secret" not in text and "admin" not in text


def test_two_urls_in_one_entry_are_refused_without_showing_either(tmp_path: Path) -> None:
    """Written as VC_NOTIFY is (a blank between), Apprise would take them for one URL,
    send to a wrong path and show the second one's password."""
    with pytest.raises(WorkflowError) as caught:
        load_file(
            tmp_path,
            "notify:\n  to: ['json://127.0.0.1:9/x json://u:hunter2secret@127.0.0.1:9/y']\n",
        )
    text = str(caught.value)
    assert caught.value.line == 2 and caught.value.key == "notify.to[0]"
    assert "one notification URL per entry" in text
    assert "hunter2secret" not in text


def test_a_blank_inside_one_url_is_left_to_apprise(tmp_path: Path) -> None:
    definition = load_file(tmp_path, "notify:\n  to: ['json://127.0.0.1:9/x?:title=Build done']\n")
    assert definition.notify is not None and len(definition.notify.to) == 1


def test_text_that_is_no_url_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_file(tmp_path, "notify:\n  to: [hunter2secret]\n")
    assert "expected a notification URL" in str(caught.value)
    assert "hunter2secret" not in str(caught.value)


def test_an_unknown_event_is_refused_with_its_line_and_a_suggestion(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError) as caught:
        load_file(tmp_path, "notify:\n  on: [gate, fail]\n")
    error = caught.value
    assert (error.line, error.key) == (2, "notify.on[1]")
    assert "unknown event 'fail' (did you mean 'failure'?)" in str(error)
    assert "failure, gate, success, any" in str(error)


def test_an_empty_event_list_is_refused() -> None:
    with pytest.raises(WorkflowError, match="expected at least one of failure"):
        load("notify: {on: []}\n")


def test_an_unknown_key_in_notify_is_refused_with_the_allowed_ones() -> None:
    with pytest.raises(WorkflowError, match=r"unknown key 'when'.*allowed: on, to"):
        load("notify: {when: [failure]}\n")


def test_a_snapshot_is_not_checked_against_apprise_again() -> None:
    """The runner reads snapshots: it must not import Apprise (nor refuse what a newer
    Apprise accepted when the session was created)."""
    code = (
        "import sys\n"
        "from store.definitions import WorkflowDefinition\n"
        "d = WorkflowDefinition.from_dict({'id': 'w', 'stages': [{'name': 'a', 'run': 'x'}],"
        " 'notify': {'on': ['any'], 'to': ['future://whatever']}})\n"
        "assert d.notify.to == ('future://whatever',)\n"
        "print('apprise' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_workflow_without_notify_is_read_without_importing_apprise(tmp_path: Path) -> None:
    (tmp_path / "wf.yaml").write_text(STAGES)
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from store.workflows import discover_workflows\n"
        f"found, errors = discover_workflows(Path({str(tmp_path)!r}))\n"
        "assert found and not errors\n"
        "print('apprise' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- masking ----------------------------------------------------------------------------------


def test_masked_hides_the_password_and_the_query_string() -> None:
    url = "json://ops:hunter2secret@127.0.0.1:8080/hook?+X-Token=headersecret"
    shown = masked(url)
    assert shown.startswith("json://ops:") and "127.0.0.1:8080/hook" in shown
    assert "hunter2secret" not in shown and "headersecret" not in shown


def test_masked_keeps_the_scheme_and_the_end_as_written() -> None:
    """Apprise's canonical form differs from what was written (``ntfys``, a trailing
    ``/``): the user reads their own URL, its secret still cut short."""
    assert masked("ntfy://vc-alerts") == "ntfy://vc-alerts"
    shown = masked("mailto://ops:hunter2secret@example.com")
    assert shown.startswith("mailto://ops:") and shown.endswith("@example.com")
    assert "hunter2secret" not in shown


def test_masked_shows_an_unusable_url_by_its_scheme_only() -> None:
    assert masked("nosuchservice://token123456@x") == "nosuchservice://…"
    assert masked("hunter2secret") == "(not a URL)"


def test_redact_removes_every_secret_part_of_the_url_from_a_text() -> None:
    url = "json://ops:hunter2secret@127.0.0.1/hook?+X-Token=headersecret"
    text = "POST to ops:hunter2secret@127.0.0.1 with headersecret failed"
    cleaned = redact(text, [url])
    assert "hunter2secret" not in cleaned and "headersecret" not in cleaned
    assert "127.0.0.1" in cleaned  # what the masked URL shows stays


def test_masked_definition_masks_notify_urls_and_leaves_the_rest() -> None:
    snapshot = {"id": "w", "notify": {"on": ["any"], "to": ["json://u:topsecret1@h:1/x"]}}
    shown = masked_definition(snapshot)
    assert "topsecret1" not in str(shown)
    assert shown["notify"]["on"] == ["any"] and shown["id"] == "w"
    assert snapshot["notify"]["to"] == ["json://u:topsecret1@h:1/x"]  # not changed
    plain = {"id": "w"}
    assert masked_definition(plain) is plain


def test_problem_is_none_for_a_usable_url() -> None:
    assert problem("ntfy://vc-alerts") is None
    assert problem("mailto://ops:pw@example.com") is None
