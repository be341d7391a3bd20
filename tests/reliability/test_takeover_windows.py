"""Takeover interleavings: a real runner is taken over right before each of its writes, one
trial per write, and no write of it lands afterwards (docs/ARCHITECTURE.md §2, "Ownership").

Each trial runs `vc flow run WORKFLOW --session SID` with a hook (tests/reliability/
takeover_hook.py) that counts the writes of the runner's loop; right before write number N
another runner takes the session over through the store (``start_session`` as ``host-b``
once the first runner's heartbeat is stale; a session already ended has its claim
rewritten), and the rows of the session, its stages and its events are kept as the takeover
left them. N runs from 1 until a run makes fewer than N writes, for two workflows: ``steps``
(a stage reporting progress and outputs, then another; the session completes) and
``fanout`` (two stages at once, one fails, the other is cancelled; the session fails).

After each trial: write N was refused by the store in the write itself (the hook calls it
right after the takeover, past every check the runner makes first), every later write of
that runner was refused too, the session's, stages' and events' rows are exactly as the
takeover left them (``stale_writes_landed`` counts the rows that are not: 0), the runner
stopped saying it was taken over (unless its session had ended before write N: its release,
refused, is then its last write), and no process of the session is left (the stale runner
terminated its stages). Log records are not compared: a stale runner's lines are kept on
purpose (store.changes). Runs on SQLite and, with VC_TEST_DATABASE_URL, PostgreSQL. Prints
``takeover-interleavings-<store>: trials=… stale_writes_landed=0 …``; ``VC_STRESS=1`` sweeps
each workflow 5 times.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.waiting import poll

from .harness import PART_TIMEOUT, child_env, report, scale, session_processes
from .takeover_hook import TAKEOVER_HOST, TAKEOVER_PID, rows

WORKFLOWS = {
    "steps": """
name: Steps
stages:
  - name: s1
    run: |
      echo "::progress 30"
      echo "::output rows=42"
      sleep 0.3
      echo "::progress 80"
      echo "::output rows=43"
      sleep 0.3
  - name: s2
    run: echo two
""",
    "fanout": """
name: Fanout
max_parallel: 2
stages:
  - name: slow
    needs: []
    run: echo slow; sleep 30
  - name: bad
    needs: []
    run: echo bad; sleep 0.4; exit 3
""",
}
HOOK = "tests.reliability.takeover_hook"
#: Writes a run makes at most (a sweep that goes past it is a runaway).
MAX_WRITES = 60


@dataclass
class Trial:
    workflow: str
    at: int
    write: str = ""
    how: str = ""
    refused_in_write: bool = False
    later_writes: int = 0
    landed: int = 0
    stopped: bool = False
    leftovers: int = 0
    problems: list[str] = field(default_factory=list)


def _differences(kept: dict[str, list[Any]], now: dict[str, list[Any]]) -> list[str]:
    """The rows that differ between the two snapshots, named by table and id."""
    out = []
    for table, rows_kept in kept.items():
        by_id_kept = {r[0]: r for r in rows_kept}
        by_id_now = {r[0]: r for r in now.get(table, [])}
        for key in sorted(set(by_id_kept) | set(by_id_now), key=str):
            if by_id_kept.get(key) != by_id_now.get(key):
                out.append(f"{table} {key}: {by_id_kept.get(key)} -> {by_id_now.get(key)}")
    return out


class Sweep:
    def __init__(self, ws: Path, url: str) -> None:
        from store import get_session_factory, init_db

        self.ws = ws
        (ws / "workflows").mkdir(parents=True)
        for name, text in WORKFLOWS.items():
            (ws / "workflows" / f"{name}.yaml").write_text(text.lstrip())
        self.url = url
        self.engine = init_db(url)
        self.factory = get_session_factory(self.engine)
        self.runs = 0

    def close(self) -> None:
        self.engine.dispose()

    def create(self, workflow: str) -> str:
        from store import FlowSessionManager
        from store.workflows import find_workflow

        definition = find_workflow(self.ws / "workflows", workflow)
        with self.factory() as db:
            return FlowSessionManager(db).create_session(workflow, definition=definition).id

    def trial(self, workflow: str, at: int) -> Trial | None:
        """Take the session over before write ``at``; None when the run made fewer writes."""
        sid = self.create(workflow)
        self.runs += 1
        out = self.ws / f"report-{self.runs}"
        out.mkdir()
        env = {
            "VC_HOME": str(self.ws),
            "VC_DATABASE_URL": self.url,
            "VC_TAKEOVER_AT": str(at),
            "VC_TAKEOVER_REPORT": str(out),
        }
        runner = subprocess.Popen(
            [sys.executable, "-m", HOOK, "flow", "run", workflow, "--session", sid],
            env=child_env(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            _, err = runner.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            runner.kill()
            runner.communicate()
            trial = Trial(workflow, at)
            trial.problems.append("the runner did not end")
            return trial
        finally:
            poll(lambda: not session_processes(sid), 10, 0.05)
            leftovers = session_processes(sid)
            for pid in leftovers:
                try:
                    os.killpg(pid, signal.SIGKILL)
                except OSError:
                    pass
        if not (out / "snapshot.json").exists():
            return None
        return self._check(Trial(workflow, at), sid, out, runner.returncode, err, leftovers)

    def _check(
        self, trial: Trial, sid: str, out: Path, code: int, err: str, leftovers: list[int]
    ) -> Trial:
        kept = json.loads((out / "snapshot.json").read_text())
        trial.write, trial.how = kept["write"], kept["how"]
        writes = [json.loads(line) for line in (out / "writes.jsonl").read_text().splitlines()]
        taken = [w for w in writes if w["n"] == trial.at]
        trial.refused_in_write = bool(taken) and taken[0]["outcome"] == "refused"
        if not trial.refused_in_write:
            trial.problems.append(f"write {trial.at} ({trial.write}) was not refused: {taken}")
        later = [w for w in writes if w["n"] > trial.at]
        trial.later_writes = len(later)
        trial.landed = sum(1 for w in later if w["outcome"] == "landed")
        differences = _differences(kept["rows"], rows(self.engine, sid))
        trial.landed += len(differences)
        if differences:
            trial.problems.append(f"rows changed after the takeover: {differences[:3]}")
        owner = kept["rows"]["flow_sessions"][0]
        host, pid = (owner[_column(self.engine, c)] for c in ("runner_host", "runner_pid"))
        if (host, pid) != (TAKEOVER_HOST, TAKEOVER_PID):
            trial.problems.append(f"the takeover did not take: {owner}")
        ended = trial.write == "release_runner"  # the session ended before write N
        trial.stopped = code == 1 and "took over" in err
        if not ended and not trial.stopped:
            trial.problems.append(f"the runner did not stop as taken over: {code}: {err[-300:]}")
        trial.leftovers = len(leftovers)
        return trial


_COLUMNS: dict[str, int] = {}


def _column(engine: Any, name: str) -> int:
    """The position of a flow_sessions column in ``SELECT *``."""
    if not _COLUMNS:
        from sqlalchemy import inspect

        for i, column in enumerate(inspect(engine).get_columns("flow_sessions")):
            _COLUMNS[column["name"]] = i
    return _COLUMNS[name]


@pytest.mark.timeout(PART_TIMEOUT)
@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_no_write_of_a_runner_lands_after_a_takeover_at_any_of_its_writes(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'ws' / '.vc' / 'flow.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    _COLUMNS.clear()
    started = time.monotonic()
    sweep = Sweep(tmp_path / "ws", url)
    trials: list[Trial] = []
    try:
        for workflow in WORKFLOWS:
            for _ in range(scale(1, 5)):
                for at in range(1, MAX_WRITES + 1):
                    trial = sweep.trial(workflow, at)
                    if trial is None:
                        break
                    trials.append(trial)
                else:
                    pytest.fail(f"{workflow}: more than {MAX_WRITES} writes in one run")
    finally:
        sweep.close()
    line = report(
        f"takeover-interleavings-{backend}",
        trials=len(trials),
        writes=",".join(sorted({t.write for t in trials})),
        refused_in_write=sum(t.refused_in_write for t in trials),
        later_writes=sum(t.later_writes for t in trials),
        stale_writes_landed=sum(t.landed for t in trials),
        runners_stopped=sum(t.stopped for t in trials),
        leftover_processes=sum(t.leftovers for t in trials),
        seconds=f"{time.monotonic() - started:.1f}",
    )
    problems = [f"{t.workflow} write {t.at} ({t.write}): {p}" for t in trials for p in t.problems]
    assert not problems, (line, problems)
    assert trials and all(t.refused_in_write for t in trials), line
    assert sum(t.landed for t in trials) == 0, line
    assert sum(t.leftovers for t in trials) == 0, line
