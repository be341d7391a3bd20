"""What stages get and give: parameters as ``VC_PARAM_<KEY>`` (never in a command line),
``::output KEY=VALUE`` lines recorded on the stage instance, and later stages' ``VC_OUTPUT_
<STAGE>_<KEY>``, kept in the store across a runner crash. Real `vc`, real stages."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from app.runner.outputs import MAX_OUTPUT_BYTES, MAX_OUTPUTS
from store import get_session_factory, init_db
from tests.runner.runner_testkit import (
    Store,
    Vc,
    _stop_everything,
    gone,
    kill_runner,
    newest_session,
    read_pid,
    session_json,
    sqlite_only,
    start_detached,
    write_workflow,
)

HOSTILE_VALUE = "$(touch pwned); x'\"; rm -rf ~ `touch pwned2` ${HOME}\\n"


@pytest.fixture
def runs(store_workspace: Path, db_url: str) -> Iterator[Store]:
    """The workspace's store; nothing of the test left running afterwards."""
    engine = init_db(db_url)
    factory = get_session_factory(engine)
    yield Store(factory)
    _stop_everything(factory)
    engine.dispose()


def stage_lines(store: Store, sid: str, stage: str) -> list[str]:
    return [r.text for r in store.logs(sid, stage=stage)]


# -- parameters -------------------------------------------------------------------------------


@sqlite_only
def test_a_hostile_value_reaches_the_stage_byte_for_byte_and_runs_nothing(
    workspace: Path, tmp_path: Path, vc: Vc, runs: Store
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "canary").write_text("still here")
    write_workflow(
        workspace,
        "echo",
        """
        params:
          day: {}
        stages:
          - name: keep
            run: printf '%s' "$VC_PARAM_DAY" > day.txt
        """,
    )
    result = vc("flow", "run", "echo", "--param", f"day={HOSTILE_VALUE}", env={"HOME": str(home)})
    assert result.returncode == 0, result.stderr
    assert (workspace / "day.txt").read_bytes() == HOSTILE_VALUE.encode()
    assert (home / "canary").read_text() == "still here"
    assert not [p for p in tmp_path.rglob("pwned*")]
    sid = newest_session(runs)
    assert runs.view(sid).params == {"day": HOSTILE_VALUE}


@sqlite_only
def test_every_stage_gets_each_parameter_as_text_and_no_variable_for_one_not_set(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    write_workflow(
        workspace,
        "typed",
        """
        params:
          shards: {type: int, default: 4}
          rate: {type: float}
          dry: {type: bool, default: no}
          note: {}
        stages:
          - name: first
            run: echo "first $VC_PARAM_SHARDS $VC_PARAM_RATE $VC_PARAM_DRY ${VC_PARAM_NOTE-unset}"
          - name: second
            run: echo "second $VC_PARAM_SHARDS"
        """,
    )
    result = vc("flow", "run", "typed", "-p", "rate=1e-3", "-p", "dry=yes")
    assert result.returncode == 0, result.stderr
    sid = newest_session(runs)
    assert "first 4 0.001 true unset" in stage_lines(runs, sid, "first")
    assert "second 4" in stage_lines(runs, sid, "second")


@sqlite_only
def test_inherited_parameter_output_and_matrix_variables_do_not_reach_a_stage(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    write_workflow(
        workspace,
        "plain",
        """
        stages:
          - name: look
            run: echo "${VC_PARAM_DAY-none} ${VC_OUTPUT_BUILD_TAG-none} ${VC_MATRIX_ENV-none}"
        """,
    )
    env = {"VC_PARAM_DAY": "outer", "VC_OUTPUT_BUILD_TAG": "outer", "VC_MATRIX_ENV": "outer"}
    assert vc("flow", "run", "plain", env=env).returncode == 0
    assert "none none none" in stage_lines(runs, newest_session(runs), "look")


def test_a_queued_sessions_parameters_survive_retry_and_a_new_runner(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    """Stored with the session: `retry` keeps them and the next runner hands them on."""
    write_workflow(
        workspace,
        "flaky",
        """
        params:
          day: {required: true}
        stages:
          - name: once
            run: |
              echo "day $VC_PARAM_DAY"
              test -f ok
        """,
    )
    created = vc("flow", "session", "create", "flaky", "-p", "day=2024-01-02")
    sid = created.stdout.strip()
    assert vc("flow", "run", "flaky", "--session", sid).returncode == 1
    (workspace / "ok").write_text("")
    assert vc("flow", "session", "retry", sid).returncode == 0
    assert vc("flow", "run", "flaky", "--session", sid).returncode == 0
    assert stage_lines(runs, sid, "once").count("day 2024-01-02") == 2
    assert runs.view(sid).params == {"day": "2024-01-02"}


# -- outputs ----------------------------------------------------------------------------------

PIPELINE = """
    stages:
      - name: build-image
        run: |
          echo "::output tag=v1.2  "
          echo "::output empty="
          echo '::output   spaced=a = b'
      - name: deploy
        run: |
          printf '[%s] [%s] [%s]\\n' "$VC_OUTPUT_BUILD_IMAGE_TAG" \\
            "${VC_OUTPUT_BUILD_IMAGE_EMPTY-unset}" "$VC_OUTPUT_BUILD_IMAGE_SPACED"
"""


def test_an_output_reaches_later_stages_and_is_kept_on_its_stage(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    write_workflow(workspace, "pipeline", PIPELINE)
    assert vc("flow", "run", "pipeline").returncode == 0
    sid = newest_session(runs)
    assert "[v1.2  ] [] [a = b]" in stage_lines(runs, sid, "deploy")
    doc = session_json(vc, "flow", "session", "show", sid)
    assert [s["outputs"] for s in doc["stages"]] == [
        {"tag": "v1.2  ", "empty": "", "spaced": "a = b"},
        {},
    ]
    assert "::output tag=v1.2  " in stage_lines(runs, sid, "build-image")


@sqlite_only
def test_an_output_over_4_kib_is_cut_with_a_warning(workspace: Path, vc: Vc, runs: Store) -> None:
    write_workflow(
        workspace,
        "big",
        """
        stages:
          - name: say
            run: |
              printf '::output ascii=%s\\n' "$(head -c 5000 /dev/zero | tr '\\0' x)"
              printf '::output wide=%s\\n' "$(for i in $(seq 3000); do printf 'é'; done)"
        """,
    )
    assert vc("flow", "run", "big").returncode == 0
    sid = newest_session(runs)
    outputs = runs.stage(sid, "say").outputs
    assert outputs["ascii"] == "x" * MAX_OUTPUT_BYTES
    assert outputs["wide"] == "é" * (MAX_OUTPUT_BYTES // 2)  # never half a character
    warnings = [r.text for r in runs.logs(sid, stage="say") if r.level == "WARNING"]
    assert any(w.startswith("output ascii cut to 4096 bytes (it had 5,000)") for w in warnings)
    assert any(w.startswith("output wide cut to 4096 bytes (it had 6,000)") for w in warnings)


@sqlite_only
def test_an_output_line_with_an_invalid_key_or_no_value_is_ignored_with_a_warning(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    write_workflow(
        workspace,
        "badkey",
        """
        stages:
          - name: say
            run: |
              echo "::output image-tag=1"
              echo "::output 9lives=1"
              echo "::output ok=1"
              echo "::outputs notme=1"
              echo "::output forgot"
        """,
    )
    assert vc("flow", "run", "badkey").returncode == 0
    sid = newest_session(runs)
    assert runs.stage(sid, "say").outputs == {"ok": "1"}
    warnings = [r.text for r in runs.logs(sid, stage="say") if r.level == "WARNING"]
    assert [w.split(" (")[0] for w in warnings] == [
        "output line ignored: invalid key 'image-tag'",
        "output line ignored: invalid key '9lives'",
        "output line ignored: no '=' after 'forgot'",
    ]


@sqlite_only
def test_a_stage_keeps_at_most_64_outputs(workspace: Path, vc: Vc, runs: Store) -> None:
    write_workflow(
        workspace,
        "many",
        """
        stages:
          - name: say
            run: for i in $(seq 70); do echo "::output k$i=$i"; done; echo "::output k1=again"
        """,
    )
    assert vc("flow", "run", "many").returncode == 0
    sid = newest_session(runs)
    outputs = runs.stage(sid, "say").outputs
    assert len(outputs) == MAX_OUTPUTS and outputs["k1"] == "again" and "k65" not in outputs
    warnings = [r.text for r in runs.logs(sid, stage="say") if r.level == "WARNING"]
    assert len(warnings) == 70 - MAX_OUTPUTS


@sqlite_only
def test_a_new_attempt_starts_without_the_outputs_of_the_last(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    write_workflow(
        workspace,
        "again",
        """
        stages:
          - name: try
            retries: 1
            run: |
              echo "::output from$VC_ATTEMPT=yes"
              test "$VC_ATTEMPT" = 2
          - name: after
            run: echo "${VC_OUTPUT_TRY_FROM1-no} ${VC_OUTPUT_TRY_FROM2-no}"
        """,
    )
    assert vc("flow", "run", "again").returncode == 0
    sid = newest_session(runs)
    assert runs.stage(sid, "try").outputs == {"from2": "yes"}
    assert "no yes" in stage_lines(runs, sid, "after")


def test_outputs_are_in_the_store_so_a_runner_taking_over_hands_them_on(
    workspace: Path, vc: Vc, runs: Store
) -> None:
    """The runner that recorded an output is SIGKILLed; the one `resume` starts reads the
    output from the store and hands it to the re-run stage and the stages after it."""
    write_workflow(
        workspace,
        "handover",
        """
        stages:
          - name: one
            run: echo "::output token=abc 123"
          - name: two
            run: |
              echo "two $VC_ATTEMPT [$VC_OUTPUT_ONE_TOKEN]"
              if [ "$VC_ATTEMPT" = 1 ]; then echo $$ > two.pid; sleep 60; fi
          - name: three
            run: echo "three [$VC_OUTPUT_ONE_TOKEN]"
        """,
    )
    sid = start_detached(vc, "handover")
    stage_pid = read_pid(workspace / "two.pid")
    runs.wait_stage(sid, "two", "ACTIVE", with_pid=True)
    kill_runner(runs, sid)
    result = vc("flow", "session", "resume", sid)
    assert result.returncode == 0, result.stderr
    view = runs.wait_status(sid, "COMPLETED", timeout=30)
    assert gone(stage_pid)
    assert [s.outputs for s in view.stages] == [{"token": "abc 123"}, {}, {}]
    assert "two 2 [abc 123]" in stage_lines(runs, sid, "two")
    assert "three [abc 123]" in stage_lines(runs, sid, "three")
