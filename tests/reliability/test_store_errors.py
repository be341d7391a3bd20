"""Store errors that waiting will not cure, under a running runner: the runner stops within
a few seconds with one line naming the error (on stderr and in the session log), its stage's
processes gone, and once the cause is fixed ``vc flow session resume`` takes the session to
COMPLETED. Transient errors keep the backoff (tests/hosts/test_store_outage.py).

Trials, each with a real runner process (`vc flow run … --session`) in the middle of a
stage:

- SQLite: the store file made read-only (chmod 0400; the runner without CAP_DAC_OVERRIDE
  when the tests run as root), while another connection holds the write lock past the busy
  timeout, so the runner's next try opens a new connection, which is read-only;
- SQLite: a table of the store renamed away (the schema missing, as a newer or foreign
  schema would have it); a column renamed with the schema revision raised (a newer vc
  migrated the store): the line says the schema is newer than the code;
- PostgreSQL (VC_TEST_DATABASE_URL): the database renamed away (missing) and back, the
  database dropped (no resume: nothing is left), the runner's role stripped of its rights
  on the tables (REVOKE) and given them back, the role made NOLOGIN and let back in;
- a worker (`vc flow worker`) running a queued session: its role made NOLOGIN
  (PostgreSQL), a table renamed away (SQLite); it must stop with one line, and a worker
  started again once the cause is fixed takes the session over and completes it.

Prints ``permanent-errors: trials=… stopped=… one_line=… max_seconds_to_stop=…
resumed=… leftover_processes=…``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import make_url

from tests.waiting import poll

from .harness import PG_URL, child_env, report, session_processes, vc

WORKFLOW = """
name: Steady
stages:
  - name: s1
    run: echo one
  - name: s2
    run: |
      echo "start $VC_ATTEMPT $$" >> "$VC_HOME/ledger"
      for i in $(seq 1 40); do echo "n $i"; sleep 0.1; done
  - name: s3
    run: echo three
"""
#: A runner must stop this soon after the error is in place (seconds).
STOP_WITHIN = 8.0


@dataclass
class Trial:
    name: str
    stopped: bool = False
    one_line: bool = False
    seconds: float = 0.0
    resumed: bool | None = None
    leftovers: int = 0
    problems: list[str] = field(default_factory=list)


def _workspace(tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    (ws / "workflows").mkdir(parents=True)
    (ws / "workflows" / "steady.yaml").write_text(WORKFLOW)
    return ws


def _create(url: str, ws: Path, *, queued: bool = False) -> str:
    from store import FlowSessionManager, get_session_factory, init_db
    from store.workflows import find_workflow

    engine = init_db(url)
    try:
        with get_session_factory(engine)() as db:
            definition = find_workflow(ws / "workflows", "steady")
            manager = FlowSessionManager(db)
            return manager.create_session("steady", definition=definition, queued=queued).id
    finally:
        engine.dispose()


def _status(url: str, sid: str) -> tuple[str, str | None]:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                f"SELECT status, reason FROM flow_sessions WHERE id = '{sid}'"
            ).one()
            return row[0], row[1]
    finally:
        engine.dispose()


def _stage_running(url: str, sid: str) -> bool:
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as conn:
            row = conn.exec_driver_sql(
                f"SELECT status FROM stage_instances WHERE session_id = '{sid}' AND name = 's2'"
            ).one()
            return bool(row[0] == "ACTIVE")
    finally:
        engine.dispose()


def _runner(
    ws: Path, url: str, sid: str, prefix: list[str] | None = None, *, worker: bool = False
) -> Any:
    env = child_env({"VC_HOME": str(ws), "VC_DATABASE_URL": url, "VC_BUSY_TIMEOUT": "0.3"})
    args = ["flow", "worker"] if worker else ["flow", "run", "steady", "--session", sid]
    return subprocess.Popen(
        [*(prefix or []), sys.executable, "-m", "app.main", *args],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _trial(
    trial: Trial,
    ws: Path,
    url: str,
    inject: Callable[[], None],
    repair: Callable[[], None] | None,
    *,
    prefix: list[str] | None = None,
    check_url: str | None = None,
    worker: bool = False,
    expect: str | None = None,
) -> None:
    """Run a runner (or a worker) into the middle of s2, inject the error, time the stop,
    check the one line and the processes, repair, resume (or start a worker again, which
    takes the orphan over), check COMPLETED."""
    check_url = check_url or url
    sid = _create(check_url, ws, queued=worker)
    runner = _runner(ws, url, sid, prefix, worker=worker)
    who = "worker" if worker else "runner"
    try:
        if not poll(lambda: _stage_running(check_url, sid), 30, 0.05):
            trial.problems.append("s2 never ran")
            return
        time.sleep(0.3)
        started = time.monotonic()
        inject()
        try:
            runner.wait(timeout=STOP_WITHIN + 20)
        except subprocess.TimeoutExpired:
            trial.problems.append("the runner did not stop")
            return
        trial.seconds = time.monotonic() - started
        _, err = runner.communicate()
        trial.stopped = runner.returncode == 1 and trial.seconds < STOP_WITHIN
        naming = [line for line in err.splitlines() if f"refuses this {who}" in line]
        trial.one_line = len(naming) == 1 and "Traceback" not in err
        if expect is not None and not any(expect in line for line in naming):
            trial.problems.append(f"the line does not say {expect!r}: {naming}")
        if not trial.stopped or not trial.one_line:
            trial.problems.append(
                f"exit {runner.returncode} after {trial.seconds:.1f}s: {err.strip()[-600:]}"
            )
        log = next(ws.rglob(f"{sid}.log"), None)
        logged = log.read_text() if log is not None else ""
        if "refuses this runner" not in logged:
            trial.problems.append("the session log does not name it")
        time.sleep(0.2)
        trial.leftovers = len(session_processes(sid))
        if repair is None:
            return
        repair, fix = None, repair
        fix()
        if worker:
            runner = _runner(ws, url, sid, worker=True)
            proc = subprocess.CompletedProcess([], 0, "", "")
        else:
            env = {"VC_HOME": str(ws), "VC_DATABASE_URL": url}
            proc = vc("flow", "session", "resume", sid, env=env)
        if proc.returncode != 0:
            trial.problems.append(f"resume: exit {proc.returncode}: {proc.stderr.strip()}")
            trial.resumed = False
            return
        ended = poll(lambda: _status(check_url, sid)[0] in ("COMPLETED", "FAILED"), 60, 0.1)
        status = _status(check_url, sid)
        trial.resumed = ended and status[0] == "COMPLETED"
        if not trial.resumed:
            trial.problems.append(f"after resume: {status}")
        poll(lambda: not session_processes(sid), 10, 0.05)
        trial.leftovers += len(session_processes(sid))
    finally:
        if repair is not None:  # the runner did not stop: the next trial needs the store
            with contextlib.suppress(Exception):
                repair()
        if runner.poll() is None:
            runner.terminate()
            try:
                runner.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                runner.kill()
                runner.communicate()


def _no_dac_override() -> list[str] | None:
    """A prefix that runs the runner without the capabilities that let root write a file
    whose mode says no (None: not needed, or not possible here)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    probe = subprocess.run(
        [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--", "true"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return None
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search,-fowner", "--"]


# -- SQLite ----------------------------------------------------------------------------------


def sqlite_read_only(tmp_path: Path) -> Trial:
    import sqlite3

    trial = Trial("sqlite-read-only")
    prefix = _no_dac_override()
    if prefix is None:
        trial.problems.append("skipped: cannot drop CAP_DAC_OVERRIDE here")
        return trial
    ws = _workspace(tmp_path / "ro")
    path = ws / ".vc" / "flow.db"
    url = f"sqlite:///{path}"
    holder: list[sqlite3.Connection] = []

    def inject() -> None:
        path.chmod(0o400)
        conn = sqlite3.connect(path, timeout=5, isolation_level=None)
        conn.execute("BEGIN IMMEDIATE")  # a writer holding the lock past the busy timeout
        holder.append(conn)
        time.sleep(1.0)
        conn.execute("ROLLBACK")

    def repair() -> None:
        path.chmod(0o600)

    try:
        _trial(trial, ws, url, inject, repair, prefix=prefix)
    finally:
        path.chmod(0o600)
        for conn in holder:
            conn.close()
    return trial


def sqlite_schema_missing(tmp_path: Path) -> Trial:
    import sqlite3

    trial = Trial("sqlite-schema-missing")
    ws = _workspace(tmp_path / "schema")
    path = ws / ".vc" / "flow.db"
    url = f"sqlite:///{path}"

    def rename(old: str, new: str) -> None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        finally:
            conn.close()

    _trial(
        trial,
        ws,
        url,
        lambda: rename("flow_sessions", "flow_sessions_away"),
        lambda: rename("flow_sessions_away", "flow_sessions"),
    )
    return trial


# -- PostgreSQL ------------------------------------------------------------------------------


@dataclass
class Pg:
    admin: Any
    name: str
    roles: list[str] = field(default_factory=list)

    def sql(self, statement: str) -> None:
        with self.admin.connect() as conn:
            conn.exec_driver_sql(statement)

    def url(self, database: str | None = None, user: str | None = None) -> str:
        assert PG_URL is not None
        parsed = make_url(PG_URL).set(database=database or self.name)
        if user is not None:
            parsed = parsed.set(username=user, password=None)
        return parsed.render_as_string(hide_password=False)

    def kick(self, where: str) -> None:
        self.sql(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            f"WHERE {where} AND pid <> pg_backend_pid()"
        )

    def rename(self, old: str, new: str) -> None:
        deadline = time.monotonic() + 10
        while True:  # the runner reconnects between the kick and the rename: again
            self.kick(f"datname = '{old}'")
            try:
                self.sql(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
                return
            except sqlalchemy.exc.DBAPIError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)


@pytest.fixture
def pg(tmp_path: Path) -> Iterator[Pg]:
    if not PG_URL:
        pytest.skip("PostgreSQL: set VC_TEST_DATABASE_URL to run it")
    admin = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    name = f"vc_perm_{uuid.uuid4().hex[:10]}"
    pg = Pg(admin, name)
    pg.sql(f'CREATE DATABASE "{name}"')
    try:
        yield pg
    finally:
        for db in (name, f"{name}_away"):
            pg.sql(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        for role in pg.roles:
            pg.sql(f"DROP ROLE IF EXISTS {role}")
        admin.dispose()


def pg_database_missing(tmp_path: Path, pg: Pg) -> Trial:
    trial = Trial("pg-database-missing")
    away = f"{pg.name}_away"
    _trial(
        trial,
        _workspace(tmp_path / "pgmissing"),
        pg.url(),
        lambda: pg.rename(pg.name, away),
        lambda: pg.rename(away, pg.name),
    )
    return trial


def pg_database_dropped(tmp_path: Path, pg: Pg) -> Trial:
    trial = Trial("pg-database-dropped")
    _trial(
        trial,
        _workspace(tmp_path / "pgdropped"),
        pg.url(),
        lambda: pg.sql(f'DROP DATABASE "{pg.name}" WITH (FORCE)'),
        None,
    )
    pg.sql(f'CREATE DATABASE "{pg.name}"')  # for the next trial
    return trial


def _role(pg: Pg) -> str:
    """A role of the store with the rights a runner needs, and no more."""
    from store import init_db

    role = f"{pg.name}_role{len(pg.roles)}"
    pg.sql(f"CREATE ROLE {role} LOGIN")
    pg.roles.append(role)
    init_db(pg.url()).dispose()
    engine = sqlalchemy.create_engine(pg.url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA public TO {role}")
            conn.exec_driver_sql(f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}")
            conn.exec_driver_sql(f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}")
    finally:
        engine.dispose()
    return role


def _on_tables(pg: Pg, statement: str) -> None:
    engine = sqlalchemy.create_engine(pg.url(), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(statement)
    finally:
        engine.dispose()


def pg_role_without_rights(tmp_path: Path, pg: Pg) -> Trial:
    trial = Trial("pg-role-without-rights")
    role = _role(pg)
    _trial(
        trial,
        _workspace(tmp_path / "pgrevoke"),
        pg.url(user=role),
        lambda: _on_tables(pg, f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}"),
        lambda: _on_tables(pg, f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}"),
        check_url=pg.url(),
    )
    return trial


def pg_role_nologin(tmp_path: Path, pg: Pg) -> Trial:
    trial = Trial("pg-role-nologin")
    role = _role(pg)

    def inject() -> None:
        pg.sql(f"ALTER ROLE {role} NOLOGIN")
        pg.kick(f"usename = '{role}'")

    _trial(
        trial,
        _workspace(tmp_path / "pgnologin"),
        pg.url(user=role),
        inject,
        lambda: pg.sql(f"ALTER ROLE {role} LOGIN"),
        check_url=pg.url(),
    )
    return trial


def sqlite_schema_newer(tmp_path: Path) -> Trial:
    """A newer vc migrated the store under the runner: a column renamed, the revision up."""
    import sqlite3

    trial = Trial("sqlite-schema-newer")
    ws = _workspace(tmp_path / "newer")
    path = ws / ".vc" / "flow.db"

    def migrate(old: str, new: str, revision: int) -> None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            conn.execute(f"ALTER TABLE flow_sessions RENAME COLUMN {old} TO {new}")
            conn.execute(f"PRAGMA user_version = {revision}")
        finally:
            conn.close()

    from store.revision import SCHEMA_VERSION

    _trial(
        trial,
        ws,
        f"sqlite:///{path}",
        lambda: migrate("reason", "status_reason", SCHEMA_VERSION + 1),
        lambda: migrate("status_reason", "reason", SCHEMA_VERSION),
        expect="newer than this code's",
    )
    return trial


def pg_worker_role_nologin(tmp_path: Path, pg: Pg) -> Trial:
    trial = Trial("pg-worker-role-nologin")
    role = _role(pg)

    def inject() -> None:
        pg.sql(f"ALTER ROLE {role} NOLOGIN")
        pg.kick(f"usename = '{role}'")

    _trial(
        trial,
        _workspace(tmp_path / "pgworker"),
        pg.url(user=role),
        inject,
        lambda: pg.sql(f"ALTER ROLE {role} LOGIN"),
        check_url=pg.url(),
        worker=True,
    )
    return trial


def sqlite_worker_schema_missing(tmp_path: Path) -> Trial:
    import sqlite3

    trial = Trial("sqlite-worker-schema-missing")
    ws = _workspace(tmp_path / "wschema")
    path = ws / ".vc" / "flow.db"

    def rename(old: str, new: str) -> None:
        conn = sqlite3.connect(path, timeout=10, isolation_level=None)
        try:
            conn.execute(f"ALTER TABLE {old} RENAME TO {new}")
        finally:
            conn.close()

    _trial(
        trial,
        ws,
        f"sqlite:///{path}",
        lambda: rename("flow_sessions", "flow_sessions_away"),
        lambda: rename("flow_sessions_away", "flow_sessions"),
        worker=True,
    )
    return trial


def _report(part: str, trials: list[Trial]) -> None:
    ran = [t for t in trials if not any(p.startswith("skipped") for p in t.problems)]
    resumable = [t for t in ran if t.resumed is not None]
    line = report(
        part,
        trials=len(ran),
        kinds=",".join(t.name for t in ran),
        stopped=sum(t.stopped for t in ran),
        one_line=sum(t.one_line for t in ran),
        max_seconds_to_stop=f"{max((t.seconds for t in ran), default=0):.2f}",
        resumed=f"{sum(bool(t.resumed) for t in resumable)}/{len(resumable)}",
        leftover_processes=sum(t.leftovers for t in ran),
    )
    problems = [f"{t.name}: {p}" for t in trials for p in t.problems if not p.startswith("skip")]
    assert not problems, (line, problems)
    assert ran, "no trial could run here"


def test_permanent_errors_stop_a_sqlite_runner(tmp_path: Path) -> None:
    _report(
        "permanent-errors-sqlite",
        [
            sqlite_read_only(tmp_path),
            sqlite_schema_missing(tmp_path),
            sqlite_schema_newer(tmp_path),
            sqlite_worker_schema_missing(tmp_path),
        ],
    )


def test_permanent_errors_stop_a_postgresql_runner(tmp_path: Path, pg: Pg) -> None:
    _report(
        "permanent-errors-postgresql",
        [
            pg_database_missing(tmp_path, pg),
            pg_role_without_rights(tmp_path, pg),
            pg_role_nologin(tmp_path, pg),
            pg_worker_role_nologin(tmp_path, pg),
            pg_database_dropped(tmp_path, pg),
        ],
    )
