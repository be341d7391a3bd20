"""Workflow files and parameters (the typed model of store.definitions):

* `vc flow list` over 50 workflow files, against `python -c "import sqlmodel, typer"`;
  target: <= 1.3x;
* loading a 200-stage workflow (read, YAML, the model's checks), against ``yaml.safe_load``
  of the same text; target: <= 3x;
* creating a session whose workflow has 20 parameters, all given, against one of the same
  workflow without parameters; target: <= 1.1x. Measured for the command users run
  (`vc flow session create WORKFLOW --param …` x20) and, stricter, for the store call alone
  (``create_session(params=…)`` on SQLite, where a creation is a quarter of a millisecond:
  parsing 20 values and storing them and their declarations is measurable there).

Run: `python -m tests.bench.bench_workflows [--small]`.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from tests.bench.common import alternate, precompile, report, timed_command

WORKFLOW = """\
name: Workflow {n}
description: one of many
params:
  day: {{type: str, default: latest}}
  shards: {{type: int, default: 4, min: 1, max: 64}}
stages:
  - name: extract
    run: ./extract.sh --day "$VC_PARAM_DAY"
    timeout: 3600
    retries: 2
    env: {{REGION: eu-west-1, BATCH: 500}}
  - name: transform
    run: ./transform.sh
    needs: [extract]
  - name: review
    checklist: [row counts look right]
  - name: load
    run: ./load.sh
"""


def stages_text(count: int) -> str:
    """A workflow of ``count`` stages, each with the keys a real stage uses."""
    lines = ["name: Big", "params:", "  day: {type: str, default: latest}", "stages:"]
    for i in range(count):
        lines += [
            f"  - name: stage-{i}",
            f'    run: ./step.sh {i} --day "$VC_PARAM_DAY"',
            "    timeout: 600",
            "    retries: 1",
            "    env: {MODE: full, PART: " + str(i) + "}",
        ]
        if i:
            lines.append(f"    needs: [stage-{i - 1}]")
    return "\n".join(lines) + "\n"


def best_of(call: Callable[[], object], rounds: int) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return min(times)


def load_ratio(rounds: int) -> tuple[float, float, float]:
    import yaml

    from store.workflows import load_workflow_text

    text = stages_text(200)
    assert len(load_workflow_text(text, default_id="big").stages) == 200
    ours = best_of(lambda: load_workflow_text(text, default_id="big"), rounds)
    floor = best_of(lambda: yaml.safe_load(text), rounds)
    return ours, floor, ours / floor


PARAMS_20 = "params:\n" + "".join(
    f"  p{i}: {{type: int, default: {i}, min: 0}}\n" for i in range(20)
)
STAGES = "stages:\n  - name: a\n    run: 'true'\n  - name: b\n    run: 'true'\n"
GIVEN_20 = {f"p{i}": str(i * 2) for i in range(20)}


def session_ratio(count: int) -> tuple[float, float, float]:
    """The store call: median per session, alternating the two kinds on one store."""
    from store import FlowSessionManager, get_session_factory, init_db
    from store.workflows import load_workflow_text

    with_params = load_workflow_text(PARAMS_20 + STAGES, default_id="p")
    without = load_workflow_text(STAGES, default_id="p")
    given = GIVEN_20
    directory = tempfile.mkdtemp()
    engine = init_db(f"sqlite:///{directory}/flow.db")
    ours: list[float] = []
    floor: list[float] = []
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db)
        for _ in range(5):  # warm-up: statements compiled, pages cached
            manager.create_session("p", definition=with_params, params=given)
            manager.create_session("p", definition=without)
        for _ in range(count):
            started = time.perf_counter()
            manager.create_session("p", definition=with_params, params=given)
            ours.append(time.perf_counter() - started)
            started = time.perf_counter()
            manager.create_session("p", definition=without)
            floor.append(time.perf_counter() - started)
    engine.dispose()
    s, f = statistics.median(ours), statistics.median(floor)
    return s, f, s / f


def main(small: bool = False) -> list[str]:
    precompile()
    lines = []
    workspace = Path(tempfile.mkdtemp())
    (workspace / "workflows").mkdir()
    for n in range(50):
        (workspace / "workflows" / f"wf{n:02d}.yaml").write_text(WORKFLOW.format(n=n))
    env = {**os.environ, "VC_HOME": str(workspace), "NO_COLOR": "1"}
    for var in ("VC_DATABASE_URL", "VC_WORKFLOWS_DIR", "VC_LOG_DIR"):
        env.pop(var, None)
    s, f, r = alternate(
        lambda: timed_command([sys.executable, "-m", "app.main", "flow", "list"], env),
        lambda: timed_command([sys.executable, "-c", "import sqlmodel, typer"], env),
        3 if small else 11,
    )
    lines.append(
        report(
            "flow list, 50 files",
            f"{s * 1000:.0f} ms vs floor {f * 1000:.0f} ms: ratio {r:.2f} (target <= 1.3)",
        )
    )
    s, f, r = load_ratio(5 if small else 30)
    lines.append(
        report(
            "load a 200-stage workflow",
            f"{s * 1000:.1f} ms vs yaml.safe_load {f * 1000:.1f} ms: ratio {r:.2f} (target <= 3)",
        )
    )
    (workspace / "workflows" / "p20.yaml").write_text(PARAMS_20 + STAGES)
    (workspace / "workflows" / "p0.yaml").write_text(STAGES)
    given = [arg for key, value in GIVEN_20.items() for arg in ("-p", f"{key}={value}")]
    vc = [sys.executable, "-m", "app.main", "flow", "session", "create"]
    timed_command([*vc, "p0"], env)  # the store is created once, outside the figures
    s, f, r = alternate(
        lambda: timed_command([*vc, "p20", *given], env),
        lambda: timed_command([*vc, "p0"], env),
        3 if small else 11,
    )
    lines.append(
        report(
            "session create, 20 parameters",
            f"{s * 1000:.0f} ms vs none {f * 1000:.0f} ms: ratio {r:.2f} (target <= 1.1)",
        )
    )
    s, f, r = session_ratio(20 if small else 300)
    lines.append(
        report(
            "create_session, 20 parameters (store call)",
            f"{s * 1000:.2f} ms vs none {f * 1000:.2f} ms: ratio {r:.2f} (the call alone)",
        )
    )
    return lines


if __name__ == "__main__":
    main(small="--small" in sys.argv)
