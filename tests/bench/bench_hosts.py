"""Many-hosts benchmarks (docs/ARCHITECTURE.md §9), on PostgreSQL. Each prints its figures against a
target; none fails on speed.

* cross-host pause latency: a runner started as host ``bench-a`` runs a busy stage, and
  `vc flow session pause` is typed as host ``bench-b``; from the pause's commit to the
  stage process being stopped (state T in /proc, watched while the command runs), p50 and
  p95 over K pause/resume rounds; target p95 < 500 ms;
* claim throughput: N queued sessions of one trivial stage drained by one `vc flow
  worker`, then N others by three workers (each under a host name of its own); the time
  from the first claim to the last completion (and from the workers' start), the ratio of
  the two (target >= 2) and the sessions run more than once (more than one ``start``
  event, or a stage attempt above 1; target 0). Beside the ratio, the ceiling this machine
  puts on it: its cores divided by the cores the one-worker run kept busy (whatever the
  process: the worker, its stages, PostgreSQL). One worker's path is sequential, each side
  waiting on the other, so a ratio above that ceiling would need more cores, not less
  contention. The workers' start (about half a second of CPU each, importing and
  connecting) can overlap the first claims: three workers start on two cores and the first
  one ready claims while the others still start, which one worker never does. So the ratio
  is also given from the moment every worker made its first claim (the rates after it),
  the steady state of a fleet whose workers are long-lived (so far a few points apart);
* stage output on PostgreSQL: a stage printing L short lines, the rate at which they all
  reach the store (target >= 200,000 lines/s, bench_runner's target on SQLite) and the
  stage's run time under the runner against the same command redirected to a file
  (target <= 1.5x).

The workers have no "exit when the queue is empty": the bench waits until every session
is COMPLETED, then stops them with SIGTERM, as an operator would.

Needs PostgreSQL: VC_TEST_DATABASE_URL, or --url. Everything happens in a schema of its
own (one per measurement), dropped afterwards.

Run: `python -m tests.bench.bench_hosts [--small] [--url URL] [--sessions N] [--pauses K]
[--concurrency C] [--lines L]` (defaults: 1,000 sessions, 20 pauses, one session at a time
per worker, 200,000 lines; --small: 60 sessions, 5 pauses, 20,000 lines).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.bench.common import MachineLoad, postgres_base, precompile, report
from tests.bench.common import proc_state as _proc_state
from tests.bench.common import wait_until as _wait

VC = [sys.executable, "-m", "app.main"]

BUSY = """
stages:
  - name: spin
    run: "exec python3 -c 'while True: pass'"
"""

CHATTY = """
stages:
  - name: talk
    run: python3 gen.py
"""

TRIVIAL = """
stages:
  - name: only
    run: "true"
"""


# -- helpers ------------------------------------------------------------------------------------


@contextmanager
def _schema(base: str) -> Iterator[str]:
    """A store URL on a schema of its own, dropped on the way out."""
    import sqlalchemy

    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sqlalchemy.create_engine(base, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{name}"')
        sep = "&" if "?" in base else "?"
        try:
            yield f"{base}{sep}options=-csearch_path%3D{name}"
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA "{name}" CASCADE')
    finally:
        admin.dispose()


@contextmanager
def _workspace(workflows: dict[str, str], url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    ws = Path(tempfile.mkdtemp(prefix="vc-bench-hosts-"))
    try:
        (ws / "workflows").mkdir()
        for name, text in workflows.items():
            (ws / "workflows" / f"{name}.yaml").write_text(textwrap.dedent(text).lstrip())
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith("PYTEST")
            and k not in ("VC_LOG_DIR", "VC_WORKFLOWS_DIR", "VC_HOSTNAME", "VC_STALE_AFTER")
        }
        env.update({"VC_HOME": str(ws), "VC_DATABASE_URL": url, "NO_COLOR": "1"})
        yield ws, env
    finally:
        shutil.rmtree(ws, ignore_errors=True)


def _vc(env: dict[str, str], host: str, *args: str) -> str:
    out = subprocess.run(
        [*VC, *args],
        env={**env, "VC_HOSTNAME": host},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def _scalar(engine: Any, sql: str, **params: Any) -> Any:
    from sqlalchemy import text

    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar()


def _cpu_seconds(pid: int, *, children: bool = True) -> float:
    """CPU time of a process and (``children``) of its reaped children (its stages), from
    /proc; 0 for a process gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return 0.0
    fields = stat[stat.rfind(b")") + 2 :].split()
    return sum(int(f) for f in fields[11 : 15 if children else 13]) / os.sysconf("SC_CLK_TCK")


def _postgres_cpu() -> dict[int, float]:
    """CPU seconds of every PostgreSQL process of this machine, by pid: the server's share
    of a measurement is the difference of two of these. So the server must run on this
    machine (as the machine-wide figures already assume), and what it did for other
    clients meanwhile (autovacuum, another database) counts too: keep it otherwise idle."""
    used: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                used[int(entry.name)] = _cpu_seconds(int(entry.name), children=False)
        except OSError:
            continue
    return used


def _server_seconds(before: dict[int, float], after: dict[int, float]) -> float:
    return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())


def _p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 2 else values[0]


# -- cross-host pause latency -------------------------------------------------------------------


def pause_latency(base: str, pauses: int) -> tuple[list[float], list[float], int]:
    """Per pause: seconds from the pause's commit to the stage in state T, and the
    command's own duration; and how many stages were stopped before their command returned.

    /proc is watched while the command runs (a `vc` command spends a while exiting after
    its commit: measured from its return, most pauses would read 0 ms). The commit time is
    the pause event's ``at``, stamped inside the pause's transaction: an upper bound by the
    commit's own few milliseconds."""
    from store import get_session_factory, init_db
    from store.queries import list_events

    with _schema(base) as url, _workspace({"busy": BUSY}, url) as (_, env):
        engine = init_db(url)
        factory = get_session_factory(engine)
        sid = _vc(env, "bench-a", "flow", "run", "busy", "--detach")

        def stage_pid() -> int | None:
            return _scalar(
                engine,
                "SELECT pid FROM stage_instances WHERE session_id = :s AND status = 'ACTIVE'",
                s=sid,
            )

        pid = _wait(stage_pid)
        from_commit: list[float] = []
        command: list[float] = []
        before_return = 0
        try:
            for _ in range(pauses):
                _wait(lambda: _proc_state(pid) in ("R", "S"))
                started = time.time()
                pause = subprocess.Popen(
                    [*VC, "flow", "session", "pause", sid[:8]],
                    env={**env, "VC_HOSTNAME": "bench-b"},
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                )
                stopped_at = _wait(lambda: _proc_state(pid) == "T" and time.time())
                _, err = pause.communicate(timeout=60)
                returned = time.time()
                if pause.returncode != 0:
                    raise RuntimeError(f"pause failed: {err.decode(errors='replace')}")
                before_return += stopped_at <= returned
                command.append(returned - started)
                with factory() as db:
                    event = [e for e in list_events(db, sid) if e.op == "pause"][-1]
                if event.host != "bench-b":
                    raise RuntimeError(f"the pause was recorded on {event.host}, not bench-b")
                from_commit.append(stopped_at - event.at)
                _vc(env, "bench-b", "flow", "session", "resume", sid[:8])
        finally:
            subprocess.run(
                [*VC, "flow", "session", "abort", sid[:8]],
                env={**env, "VC_HOSTNAME": "bench-b"},
                capture_output=True,
            )
            try:  # the runner lets go of the session (and its connections) before the drop
                _wait(
                    lambda: _scalar(engine, "SELECT runner_pid FROM flow_sessions") is None,
                    timeout=20,
                    step=0.05,
                )
            except TimeoutError:
                pass
            try:
                os.killpg(pid, signal.SIGKILL)
            except OSError:
                pass
            engine.dispose()
    return from_commit, command, before_return


# -- claim throughput ---------------------------------------------------------------------------


def _queue(engine: Any, ws: Path, n: int) -> None:
    """N queued sessions, made the way `vc flow run trivial --queue` makes each one."""
    from store import FlowSessionManager, get_session_factory
    from store.workflows import find_workflow

    definition = find_workflow(ws / "workflows", "trivial")
    with get_session_factory(engine)() as db:
        manager = FlowSessionManager(db)
        for i in range(n):
            manager.create_session(
                "trivial", name=f"trivial {i}", definition=definition, queued=True
            )


DOUBLES = """
SELECT count(*) FROM flow_sessions s
LEFT JOIN (SELECT session_id, count(*) AS n FROM flow_events WHERE op = 'start'
           GROUP BY session_id) e ON e.session_id = s.id
LEFT JOIN (SELECT session_id, max(attempt) AS a FROM stage_instances
           GROUP BY session_id) st ON st.session_id = s.id
WHERE coalesce(e.n, 0) > 1 OR coalesce(st.a, 0) > 1
"""


def drain(base: str, n: int, workers: int, concurrency: int) -> dict[str, Any]:
    """N queued sessions run by ``workers`` `vc flow worker` processes; the figures."""
    from store import init_db

    with _schema(base) as url, _workspace({"trivial": TRIVIAL}, url) as (ws, env):
        engine = init_db(url)
        procs: list[subprocess.Popen[bytes]] = []
        load = MachineLoad()
        try:
            _queue(engine, ws, n)
            load.start()
            server_before = _postgres_cpu()
            started = time.perf_counter()
            for i in range(workers):
                with open(ws / f"worker-{i}.err", "wb") as log:
                    procs.append(
                        subprocess.Popen(
                            [*VC, "flow", "worker", "--concurrency", str(concurrency)],
                            env={**env, "VC_HOSTNAME": f"bench-w{i + 1}"},
                            cwd=ws,
                            stdin=subprocess.DEVNULL,
                            stdout=log,
                            stderr=log,
                        )
                    )

            def completed() -> int:
                return int(
                    _scalar(engine, "SELECT count(*) FROM flow_sessions WHERE status = 'COMPLETED'")
                )

            try:
                _wait(lambda: completed() >= n, timeout=max(120.0, n * 0.5), step=0.05)
            except TimeoutError:
                pass
            wall = time.perf_counter() - started
            cpu = sum(_cpu_seconds(proc.pid) for proc in procs)
            server = _server_seconds(server_before, _postgres_cpu())
            load.stop()
            for proc in procs:
                proc.send_signal(signal.SIGTERM)
            codes = [proc.wait(timeout=60) for proc in procs]
            first_claim = _scalar(engine, "SELECT min(at) FROM flow_events WHERE op = 'start'")
            last_done = _scalar(engine, "SELECT max(finished_at) FROM flow_sessions")
            # Every worker at work: the latest of the workers' first claims. Before it, the
            # others were still starting (importing, connecting) on the same cores.
            all_working = _scalar(
                engine,
                "SELECT max(first) FROM (SELECT min(at) AS first FROM flow_events "
                "WHERE op = 'start' GROUP BY host) AS per_host",
            )
            done_after = _scalar(
                engine,
                "SELECT count(*) FROM flow_sessions WHERE finished_at >= :t",
                t=all_working or 0.0,
            )
            from sqlalchemy import text

            with engine.connect() as conn:
                shares = sorted(
                    (
                        int(c)
                        for _, c in conn.execute(
                            text(
                                "SELECT host, count(*) FROM flow_events WHERE op = 'start' "
                                "GROUP BY host"
                            )
                        ).all()
                    ),
                    reverse=True,
                )
            tracebacks = sum(
                "Traceback" in (ws / f"worker-{i}.err").read_text(errors="replace")
                for i in range(workers)
            )
            return {
                "completed": completed(),
                "doubles": int(_scalar(engine, DOUBLES)),
                "span": (last_done or 0.0) - (first_claim or 0.0),
                "wall": wall,
                "cpu": cpu,
                "server": server,
                "busy": load.busy_cores(first_claim or 0.0, last_done or 0.0),
                "steady_span": (last_done or 0.0) - (all_working or 0.0),
                "steady_done": int(done_after or 0),
                "shares": shares,
                "codes": codes,
                "tracebacks": tracebacks,
            }
        finally:
            load.stop()
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            engine.dispose()


# -- the least a worker can spend on a session ---------------------------------------------------

#: The tables of :data:`FLOOR_WORKER`: the columns of vc's own that its records write.
FLOOR_TABLES = (
    "CREATE TABLE f_sessions (id text PRIMARY KEY, status text, version int, queued bool, "
    "runner_host text, runner_pid int, runner_lease int, heartbeat_at float8, "
    "updated_at float8, finished_at float8, created_at float8)",
    "CREATE INDEX ON f_sessions (status, created_at) WHERE queued",
    "CREATE TABLE f_stages (session_id text, name text, status text, attempt int, "
    "pid int, exit_code int, started_at float8, finished_at float8, "
    "PRIMARY KEY (session_id, name))",
    "CREATE TABLE f_events (id bigserial PRIMARY KEY, session_id text, stage text, op text, "
    "from_status text, to_status text, at float8, host text, pid int)",
    "CREATE INDEX ON f_events (session_id)",
    "CREATE TABLE f_logs (id bigserial PRIMARY KEY, session_id text, at float8, level text, "
    "category text, stage text, text text)",
    "CREATE INDEX ON f_logs (session_id, id)",
)

#: The least a worker that keeps the design's record can spend on one queued session of a
#: `true` stage, on the raw driver (psycopg) in one process and one connection: the claim
#: (candidates ``FOR UPDATE SKIP LOCKED``, the conditioned UPDATE, its event), the stage's
#: start and end each fenced by the lease (touch, stage row, event), the process through a
#: shell with its output piped and read, nine log lines into a file and into the store
#: (COPY), the completion and its event: five commits, as vc's worker makes. No ORM, no
#: loguru, no threads, no LISTEN. It prints its CPU, its stages' and its server process's
#: (which ends with its connection, before the bench could read it).
FLOOR_WORKER = """
import os, resource, socket, sys, time
import psycopg
conninfo, n, log_path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
host, pid = socket.gethostname(), os.getpid()
db = psycopg.connect(conninfo)
log = open(log_path, "ab", buffering=0)
def event(cur, sid, stage, op, before, after):
    cur.execute("INSERT INTO f_events (session_id, stage, op, from_status, to_status, at, "
                "host, pid) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (sid, stage, op, before, after, time.time(), host, pid))
def fenced(cur, sid, lease):
    cur.execute("UPDATE f_sessions SET updated_at = %s WHERE id = %s AND runner_lease = %s",
                (time.time(), sid, lease))
    assert cur.rowcount == 1, "lease lost"
done = 0
cur = db.cursor()
while done < n:
    cur.execute("SELECT id, version FROM f_sessions WHERE queued AND status = 'PENDING' "
                "ORDER BY created_at LIMIT 8 FOR UPDATE SKIP LOCKED")
    row = cur.fetchone()
    if row is None:
        break
    sid, version = row
    cur.execute("UPDATE f_sessions SET status = 'ACTIVE', version = version + 1, "
                "runner_host = %s, runner_pid = %s, runner_lease = version + 1, "
                "heartbeat_at = %s WHERE id = %s AND version = %s",
                (host, pid, time.time(), sid, version))
    assert cur.rowcount == 1, "claim lost"
    lease = version + 1
    event(cur, sid, None, "start", "PENDING", "ACTIVE")
    db.commit()
    read, write = os.pipe()
    child = os.posix_spawn("/bin/sh", ["sh", "-c", "true"], os.environ, setpgroup=0,
        file_actions=[(os.POSIX_SPAWN_DUP2, write, 1), (os.POSIX_SPAWN_DUP2, write, 2),
                      (os.POSIX_SPAWN_CLOSE, read)])
    os.close(write)
    fenced(cur, sid, lease)
    cur.execute("UPDATE f_stages SET status = 'ACTIVE', attempt = attempt + 1, pid = %s, "
                "started_at = %s WHERE session_id = %s AND name = 'only'",
                (child, time.time(), sid))
    event(cur, sid, "only", "stage.start", "PENDING", "ACTIVE")
    db.commit()
    while os.read(read, 65536):
        pass
    os.close(read)
    code = os.waitstatus_to_exitcode(os.waitpid(child, 0)[1])
    fenced(cur, sid, lease)
    cur.execute("UPDATE f_stages SET status = 'COMPLETED', exit_code = %s, finished_at = %s "
                "WHERE session_id = %s AND name = 'only'", (code, time.time(), sid))
    event(cur, sid, "only", "stage.complete", "ACTIVE", "COMPLETED")
    db.commit()
    lines = [(sid, time.time(), "INFO", "workflow.stage.operations", "only", f"line {i}")
             for i in range(9)]
    log.write("".join(f"{at:.6f} | {level} | {category} | {text}\\n"
                      for _, at, level, category, _, text in lines).encode())
    with cur.copy("COPY f_logs (session_id, at, level, category, stage, text) FROM STDIN") as copy:
        for line in lines:
            copy.write_row(line)
    db.commit()
    cur.execute("UPDATE f_sessions SET status = 'COMPLETED', version = version + 1, "
                "runner_host = NULL, runner_pid = NULL, runner_lease = NULL, finished_at = %s "
                "WHERE id = %s AND runner_lease = %s", (time.time(), sid, lease))
    assert cur.rowcount == 1, "lease lost"
    event(cur, sid, None, "complete", "ACTIVE", "COMPLETED")
    db.commit()
    done += 1
own, stages = (resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
backend = cur.execute("SELECT pg_backend_pid()").fetchone()[0]
try:  # gone with the connection: read it now (a server on another machine: not known)
    with open(f"/proc/{backend}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    server = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
except OSError:
    server = float("nan")
print(done, own.ru_utime + own.ru_stime, stages.ru_utime + stages.ru_stime, server)
"""


def durable_floor(base: str, n: int) -> dict[str, float]:
    """:data:`FLOOR_WORKER` draining ``n`` queued sessions: seconds, and CPU seconds of the
    worker, its stages and the PostgreSQL processes, from its start to its exit."""
    import psycopg

    with _schema(base) as url, tempfile.TemporaryDirectory(prefix="vc-bench-floor-") as where:
        conninfo = "postgresql://" + url.split("://", 1)[1]  # as store.direct reads it
        with psycopg.connect(conninfo) as db:
            for statement in FLOOR_TABLES:
                db.execute(statement)
            now = time.time()
            with db.cursor() as cur:
                cur.executemany(
                    "INSERT INTO f_sessions (id, status, version, queued, created_at) "
                    "VALUES (%s, 'PENDING', 1, true, %s)",
                    [(uuid.uuid4().hex, now + i) for i in range(n)],
                )
                cur.execute(
                    "INSERT INTO f_stages (session_id, name, status, attempt) "
                    "SELECT id, 'only', 'PENDING', 0 FROM f_sessions"
                )
        server_before = _postgres_cpu()
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", FLOOR_WORKER, conninfo, str(n), str(Path(where) / "f.log")],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        wall = time.perf_counter() - started
        server = _server_seconds(server_before, _postgres_cpu())
    done, own, stages, backend = int(out[0]), float(out[1]), float(out[2]), float(out[3])
    assert done == n, f"the floor ran {done} of {n} sessions"
    return {"wall": wall, "worker": own, "stages": stages, "server": server + backend}


def _steady_rate(d: dict[str, Any]) -> float:
    """Sessions per second once every worker of a drain was at work."""
    return d["steady_done"] / d["steady_span"] if d["steady_span"] > 0 else 0.0


# -- stage output ------------------------------------------------------------------------------


def output_rate(base: str, lines: int) -> tuple[float, float, float]:
    """(stage seconds under vc, same command redirected to a file, lines/s into the store)."""
    with _schema(base) as url, _workspace({"chatty": CHATTY}, url) as (ws, env):
        from store import init_db

        (ws / "gen.py").write_text(
            "import sys\nw = sys.stdout.write\n"
            f"for i in range({lines}):\n    w(f'line {{i}} of the benchmark\\n')\n"
        )
        started = time.perf_counter()
        subprocess.run(["bash", "-c", "python3 gen.py > out.txt"], check=True, cwd=ws)
        floor = time.perf_counter() - started
        engine = init_db(url)
        try:
            sid = _vc(env, "bench-a", "flow", "run", "chatty", "--detach")

            def finished() -> tuple[float, float] | None:
                from sqlalchemy import text

                with engine.connect() as conn:
                    row = conn.execute(
                        text(
                            "SELECT started_at, finished_at FROM stage_instances "
                            "WHERE session_id = :s"
                        ),
                        {"s": sid},
                    ).first()
                return (row[0], row[1]) if row and row[1] else None

            stage_started, stage_finished = _wait(finished, timeout=600, step=0.05)
            _wait(
                lambda: (
                    _scalar(
                        engine,
                        "SELECT count(*) FROM log_records WHERE session_id = :s AND "
                        "category = 'workflow.stage.integration'",
                        s=sid,
                    )
                    >= lines
                ),
                timeout=600,
                step=0.05,
            )
            rate = lines / (time.time() - stage_started)
            _wait(
                lambda: _scalar(engine, "SELECT runner_pid FROM flow_sessions") is None,
                timeout=30,
                step=0.05,
            )
        finally:
            engine.dispose()
    return stage_finished - stage_started, floor, rate


# -- main ---------------------------------------------------------------------------------------


def main(
    small: bool = False,
    url: str | None = None,
    sessions: int | None = None,
    pauses: int | None = None,
    concurrency: int = 1,
    output_lines: int | None = None,
) -> list[str]:
    base = postgres_base("bench_hosts", url)
    precompile()
    lines = []
    k = pauses or (5 if small else 20)
    from_commit, command, before_return = pause_latency(base, k)
    lines.append(
        report(
            "cross-host pause",
            f"runner on bench-a, `vc flow session pause` on bench-b: from the pause commit to "
            f"the stage stopped p50 {statistics.median(from_commit) * 1000:.0f} ms, p95 "
            f"{_p95(from_commit) * 1000:.0f} ms over {len(from_commit)} pauses (target p95 < "
            f"500 ms); stopped before the command returned: {before_return}/{len(command)} "
            f"(the command took p50 {statistics.median(command) * 1000:.0f} ms)",
        )
    )
    n = sessions or (60 if small else 1000)
    one = drain(base, n, 1, concurrency)
    three = drain(base, n, 3, concurrency)
    ratio = one["span"] / three["span"] if three["span"] > 0 else float("nan")
    steady = _steady_rate(three) / _steady_rate(one) if _steady_rate(one) > 0 else float("nan")
    cores = os.cpu_count() or 1
    # One worker's session path is sequential (claim, spawn, wait, record, each waiting on
    # the other side): the cores it keeps busy bound what more workers can add.
    ceiling = min(3.0, cores / one["busy"]) if one["busy"] > 0 else float("nan")

    def figures(d: dict[str, Any]) -> str:
        rate = d["completed"] / d["span"] if d["span"] > 0 else 0.0
        trouble = []
        if d["completed"] < n:
            trouble.append(f"ONLY {d['completed']} COMPLETED")
        if any(d["codes"]):
            trouble.append(f"exit codes {d['codes']}")
        if d["tracebacks"]:
            trouble.append(f"{d['tracebacks']} worker(s) printed a traceback")
        extra = f" [{'; '.join(trouble)}]" if trouble else ""
        used = d["cpu"] / d["wall"] if d["wall"] > 0 else 0.0
        per_session = d["busy"] * d["span"] / n * 1000 if n else 0.0
        return (
            f"{d['span']:.1f} s ({rate:.1f} sessions/s; {d['wall']:.1f} s from the workers' "
            f"start; the workers and their stages used {used:.2f} of {cores} cores, the "
            f"machine {d['busy']:.2f}: {per_session:.1f} ms of machine CPU per session), "
            f"claims {'/'.join(map(str, d['shares']))}{extra}"
        )

    lines.append(
        report(
            "claim throughput",
            f"{n:,} queued sessions, --concurrency {concurrency}: 1 worker {figures(one)}; "
            f"3 workers {figures(three)}; ratio {ratio:.2f} (target >= 2; ceiling on this "
            f"machine {ceiling:.2f}: {cores} cores / {one['busy']:.2f} kept busy by 1 worker, "
            f"so {ratio / ceiling:.0%} of it, target 85%; once every worker was at work "
            f"(from the last one's first claim: the others' start-up no longer shares the "
            f"cores) the ratio of the rates is {steady:.2f}, {steady / ceiling:.0%} of the "
            f"ceiling; machine CPU per session, worker, "
            f"stages and server together: targets 6 ms with 1 worker, 8 ms with 3); sessions "
            f"run more than once: "
            f"{one['doubles'] + three['doubles']} (target 0)",
        )
    )
    least = durable_floor(base, n)
    least_all = least["worker"] + least["stages"] + least["server"]

    def per_session(seconds: float) -> str:
        return f"{seconds / n * 1000:.1f} ms"

    lines.append(
        report(
            "a worker's floor",
            f"the least a worker keeping the same records can spend per trivial session "
            f"(raw psycopg, one process, no ORM, no loguru, no threads; "
            f"tests.bench.bench_hosts.FLOOR_WORKER), {n:,} sessions in {least['wall']:.1f} s: "
            f"worker {per_session(least['worker'])}, its stages "
            f"{per_session(least['stages'])}, PostgreSQL {per_session(least['server'])}, "
            f"{per_session(least_all)} in all; vc's "
            f"one worker, the same way (its start-up included): worker and stages "
            f"{per_session(one['cpu'])}, PostgreSQL {per_session(one['server'])}, "
            f"{per_session(one['cpu'] + one['server'])} in all (so "
            f"{(one['cpu'] + one['server']) / least_all:.1f}x "
            f"the floor; targets 6 ms with 1 worker, 8 ms with 3: 3 workers "
            f"{per_session(three['cpu'] + three['server'])})",
        )
    )
    count = output_lines or (20_000 if small else 200_000)
    stage, floor, rate = output_rate(base, count)
    lines.append(
        report(
            "stage output on PostgreSQL",
            f"{count:,} lines: all in the store at {rate:,.0f} lines/s (target >= 200,000); "
            f"stage {stage:.2f} s under vc vs {floor:.2f} s redirected to a file (ratio "
            f"{stage / floor:.2f}, target <= 1.5)",
        )
    )
    return lines


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="60 sessions, 5 pauses, 20k lines")
    parser.add_argument("--url", help="PostgreSQL URL (default: VC_TEST_DATABASE_URL)")
    parser.add_argument("--sessions", type=int, help="queued sessions per drain")
    parser.add_argument("--pauses", type=int, help="pause/resume rounds")
    parser.add_argument("--concurrency", type=int, default=1, help="sessions per worker")
    parser.add_argument("--lines", type=int, help="lines printed by the chatty stage")
    args = parser.parse_args()
    main(
        small=args.small,
        url=args.url,
        sessions=args.sessions,
        pauses=args.pauses,
        concurrency=args.concurrency,
        output_lines=args.lines,
    )
