"""Several processes changing one session at the same time never corrupt it: every change
is one transaction (state, version and event row together), so the history is a chain and
the version counts the changes."""

from __future__ import annotations

import itertools
import subprocess
import sys
import textwrap
from pathlib import Path

from .helpers import create_session, env_for, run, session_json, store

WORKER = textwrap.dedent("""
    import sys
    from store import (ConcurrentModification, FlowSessionManager, InvalidTransition,
                       get_session_factory, init_db)

    url, sid, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
    engine = init_db(url)
    done = refused = 0
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db, actor=f"worker{sys.argv[4]}")
        for _ in range(rounds):
            for op in (manager.pause, manager.resume):
                try:
                    op(sid)
                    done += 1
                except (InvalidTransition, ConcurrentModification):
                    refused += 1
    print(done, refused)
""")


def check_history(workspace: Path, sid: str) -> tuple[int, list[dict]]:
    """The version, and the events after checking they form one unbroken chain."""
    from sqlalchemy import text

    doc = session_json(workspace, sid)
    events = doc["events"]
    assert events[0]["op"] == "create" and events[0]["to"] == "PENDING"
    for previous, event in itertools.pairwise(events):
        assert event["from"] == previous["to"], (previous, event)
    assert events[-1]["to"] == doc["status"]
    with store(workspace) as db:
        version = (
            db.connection()
            .execute(text("SELECT version FROM flow_sessions WHERE id = :sid"), {"sid": sid})
            .scalar_one()
        )
    state_changes = [e for e in events if e["op"] != "create"]
    assert version == len(state_changes) + 1
    return version, events


def test_concurrent_pause_and_resume_through_the_managers_never_corrupt_a_session(
    store_workspace: Path,
) -> None:
    from .helpers import database_url

    sid = create_session(store_workspace)
    url = database_url(store_workspace)
    rounds, workers = 40, 4
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, url, sid, str(rounds), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(),
        )
        for i in range(workers)
    ]
    results = [p.communicate(timeout=180) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    done = sum(int(out.split()[0]) for out, _ in results)
    refused = sum(int(out.split()[1]) for out, _ in results)
    assert done + refused == rounds * workers * 2
    assert done >= rounds  # the processes really did interleave changes
    version, events = check_history(store_workspace, sid)
    assert version == done + 1
    assert {e["actor"] for e in events[1:]} <= {f"worker{i}" for i in range(workers)}


def test_concurrent_cli_commands_on_one_session_never_corrupt_it(
    store_workspace: Path,
) -> None:
    sid = create_session(store_workspace)
    script = textwrap.dedent(f"""
        import subprocess, sys
        codes = []
        for _ in range(3):
            for op in ("pause", "resume"):
                p = subprocess.run([sys.executable, "-m", "app.main", "flow", "session", op,
                                    "{sid[:8]}"], capture_output=True, text=True)
                codes.append(p.returncode)
                if p.returncode not in (0, 1) or (p.returncode == 1 and
                        "cannot " + op + " session" not in p.stderr):
                    print("unexpected", p.returncode, p.stderr, file=sys.stderr)
                    sys.exit(1)
        print(codes.count(0))
    """)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env_for(),
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=240) for p in procs]
    for proc, (_out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
    done = sum(int(out) for out, _ in results)
    version, _events = check_history(store_workspace, sid)
    assert version == done + 1
    assert run("flow", "session", "show", sid, "--json").code == 0
