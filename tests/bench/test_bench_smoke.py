"""The benchmarks, run small so that CI keeps them working. They print their figures (see
`pytest -s` or the captured output) and assert only that each produced its line: speed is
never a pass/fail here (a noisy machine must not fail CI). Full size: `python -m
tests.bench.bench_store`, `… bench_runner`, `… bench_tui`, `… bench_serve` (a browser),
`… bench_hosts` and `… bench_fleet` (PostgreSQL), `… bench_notify`, `… bench_latency`,
`… bench_parallel`."""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.bench


@pytest.fixture(autouse=True)
def _own_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("VC_HOME", "VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VC_HOME", os.getcwd())


def test_store_benchmarks_report_their_ratios() -> None:
    from tests.bench import bench_store

    lines = bench_store.main(small=True)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] transitions",
        "[bench] session list --limit 50",
        "[bench] vc --help",
        "[bench] vc flow session --help",
    ]


def test_workflow_benchmarks_report_their_ratios() -> None:
    from tests.bench import bench_workflows

    lines = bench_workflows.main(small=True)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] flow list, 50 files",
        "[bench] load a 200-stage workflow",
        "[bench] session create, 20 parameters",
        "[bench] create_session, 20 parameters (store call)",
    ]


def test_runner_benchmarks_report_their_ratios() -> None:
    from tests.bench import bench_runner

    lines = bench_runner.main(small=True)
    assert len(lines) == 3 and all("ms" in line or "ratio" in line for line in lines)


def test_dashboard_benchmarks_report_their_figures() -> None:
    from tests.bench import bench_tui

    lines = bench_tui.main(small=True)
    assert len(lines) == 4 and lines[-1].startswith("[bench] stage list keys:")


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("VC_TEST_DATABASE_URL"),
    reason="the many-hosts bench needs PostgreSQL: set VC_TEST_DATABASE_URL to run it",
)
def test_hosts_benchmarks_report_their_figures() -> None:
    from tests.bench import bench_hosts

    lines = bench_hosts.main(small=True, sessions=10, pauses=2, output_lines=2_000)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] cross-host pause",
        "[bench] claim throughput",
        "[bench] a worker's floor",
        "[bench] stage output on PostgreSQL",
    ]


@pytest.mark.postgres
@pytest.mark.skipif(
    not os.environ.get("VC_TEST_DATABASE_URL"),
    reason="the fleet bench needs PostgreSQL: set VC_TEST_DATABASE_URL to run it",
)
def test_fleet_benchmarks_report_their_figures() -> None:
    from tests.bench import bench_fleet

    lines = bench_fleet.main(small=True)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] fleet connections",
        "[bench] fleet pause",
    ]


def test_serve_benchmarks_report_their_figures() -> None:
    from tests.bench import bench_serve

    lines = bench_serve.main(small=True)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] first paint in a browser",
        "[bench] idle served",
    ]
    if any("skipped:" in line for line in lines):
        pytest.skip(lines[0].split(": ", 1)[1])


def test_notify_benchmarks_report_their_figures() -> None:
    from tests.bench import bench_notify

    lines = bench_notify.main(small=True)
    assert [line.split(":")[0] for line in lines] == ["[bench] notify overhead", "[bench] wait"]


def test_latency_benchmarks_report_their_ratios() -> None:
    from tests.bench import bench_latency

    lines = bench_latency.main(small=True)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] bytecode",
        "[bench] teardown",
        "[bench] control",
        "[bench] flow run, 10 true stages",
        "[bench] start of a run",
        "[bench] seq 100000 stage",
    ]


def test_parallel_benchmarks_report_their_ratios() -> None:
    from tests.bench import bench_parallel

    lines = bench_parallel.main(small=True)
    assert [line.split(":")[0] for line in lines] == [
        "[bench] fan-out of sleeps",
        "[bench] fan-out of true",
        "[bench] fan-out of true, Python's floor",
        "[bench] fan-out of true, the runner's imports",
        "[bench] fan-out of true, a durable floor",
        "[bench] pause of running stages",
        "[bench] runner memory",
        "[bench] show of a matrix session",
    ]
    assert "nothing left running" in lines[5]
