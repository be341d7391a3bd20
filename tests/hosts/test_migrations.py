"""Schema migrations (docs/ARCHITECTURE.md §9): empty and older databases reach the head revision
with every row intact; a database newer than the code is refused; the up-to-date check stays cheap.
Every test runs on SQLite and, when VC_TEST_DATABASE_URL is set, PostgreSQL."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from alembic import command
from sqlalchemy import inspect, text

from store import FlowSessionManager, StageManager, StoreUnavailable, get_session_factory
from store.engine import make_engine
from store.log_ingest import append_logs
from store.migrations import (
    BASELINE,
    HEAD,
    MIGRATION_ONLY_INDEXES,
    MIGRATIONS_DIR,
    alembic_config,
    current_revision,
)
from store.opening import init_db
from store.revision import SCHEMA_VERSION
from store.status import StageStatus
from tests.conftest import ROOT, run_vc
from tests.hosts.common import snapshot


def _build_at(url: str, revision: str):  # type: ignore[no-untyped-def]
    """A database migrated to ``revision`` only (what an older vc left behind)."""
    engine = make_engine(url)
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), revision)
    return engine


#: The columns each revision since 0004 added (0005: session parameters, stage outputs;
#: 0006: the runner's lease token).
ADDED = {
    "0005": {("flow_sessions", "params"), ("stage_instances", "outputs")},
    "0006": {("flow_sessions", "runner_lease")},
}


def _added_after(revision: str) -> set[tuple[str, str]]:
    return {column for rev, columns in ADDED.items() if rev > revision for column in columns}


#: Columns added after revision 0004.
NEW_COLUMNS = _added_after("0004")


def _filled_at(url: str, revision: str, definition):  # type: ignore[no-untyped-def]
    """A database at ``revision`` holding the rows of :func:`_fill`. The managers of this
    code write every column it knows, so the rows are made at the head and the schema is
    then migrated down to ``revision`` (which drops only the columns added since)."""
    engine = init_db(url)
    _fill(engine, definition)
    with engine.begin() as conn:
        command.downgrade(alembic_config(conn), revision)
        if conn.dialect.name == "sqlite":  # as _build_at leaves it: the slow check decides
            conn.exec_driver_sql("PRAGMA user_version=0")
    return engine


def _rows(engine) -> dict[str, list[dict[str, object]]]:  # type: ignore[no-untyped-def]
    """Every row of every table by column name, in primary-key order."""
    out: dict[str, list[dict[str, object]]] = {}
    with engine.connect() as conn:
        for table in (*ID_TABLES, "flow_sessions", "log_records"):
            rows = conn.execute(text(f"SELECT * FROM {table} ORDER BY id")).mappings()
            out[table] = [dict(r) for r in rows]
    return out


def _without_new_columns(rows, new=NEW_COLUMNS):  # type: ignore[no-untyped-def]
    return {
        table: [{k: v for k, v in r.items() if (table, k) not in new} for r in items]
        for table, items in rows.items()
    }


def _fill(engine, definition) -> list[str]:  # type: ignore[no-untyped-def]
    """Sessions in several states, with stages, events, metadata and log records."""
    with get_session_factory(engine)() as db:
        sessions, stages = FlowSessionManager(db), StageManager(db)
        ids = []
        for i in range(6):
            s = sessions.create_session(
                "hello",
                name=f"run {i} — ünïcode ✓",
                metadata={"i": i, "tags": ["a", "b"]},
                definition=definition,
                queued=i % 2 == 0,
            )
            ids.append(s.id)
        sessions.start_session(ids[0])
        for st in stages.list_stages(ids[0]):
            stages.update_stage_status(st.id, StageStatus.ACTIVE, metadata={"progress": 40})
            stages.update_stage_status(st.id, StageStatus.COMPLETED, exit_code=0)
        sessions.complete(ids[0])
        sessions.start_session(ids[1])
        sessions.pause(ids[1], reason="lunch")
        sessions.abort(ids[2])
        sessions.start_session(ids[3])
        sessions.fail(ids[3], "stage count failed: exit code 3")
        sessions.retry(ids[3])
        append_logs(
            db,
            [
                {
                    "session_id": sid,
                    "at": 1_700_000_000.5 + n,
                    "level": "INFO",
                    "category": "workflow.stage.integration",
                    "stage": "greet",
                    "text": f"line {n}",
                }
                for n, sid in enumerate(ids * 3)
            ],
        )
    return ids


def _revision(engine) -> str | None:  # type: ignore[no-untyped-def]
    return current_revision(engine)


def _user_version(engine) -> int:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA user_version").scalar() or 0)


def _indexes(engine) -> set[str]:  # type: ignore[no-untyped-def]
    return {ix["name"] for ix in inspect(engine).get_indexes("flow_sessions")}


#: The tables keyed by an auto-increment id (revision 0004: AUTOINCREMENT on SQLite).
ID_TABLES = ("stage_instances", "flow_events")


def _autoincrement_tables(engine) -> set[str]:  # type: ignore[no-untyped-def]
    """SQLite: the tables declared with AUTOINCREMENT."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT name, sql FROM sqlite_master WHERE type = 'table'")
        return {name for name, sql in rows if "AUTOINCREMENT" in (sql or "").upper()}


def _structure(engine, without: set[tuple[str, str]] | None = None) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Columns, keys and indexes of every table, as the database reports them (less the
    columns ``without`` names)."""
    insp = inspect(engine)
    out: dict[str, object] = {}
    for table in sorted(insp.get_table_names()):
        out[table] = (
            [
                (c["name"], str(c["type"]), c["nullable"], c["default"])
                for c in insp.get_columns(table)
                if (table, c["name"]) not in (without or set())
            ],
            insp.get_pk_constraint(table)["constrained_columns"],
            sorted(
                (
                    fk["constrained_columns"],
                    fk["referred_table"],
                    fk["referred_columns"],
                    fk.get("options", {}).get("ondelete"),
                )
                for fk in insp.get_foreign_keys(table)
            ),
            sorted(
                (ix["name"], ix["column_names"], bool(ix.get("unique")))
                for ix in insp.get_indexes(table)
            ),
        )
    return out


def _max_ids(engine) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with engine.connect() as conn:
        return {
            t: int(conn.execute(text(f"SELECT max(id) FROM {t}")).scalar() or 0) for t in ID_TABLES
        }


def _assert_ids_not_reused(engine, definition) -> None:  # type: ignore[no-untyped-def]
    """Delete the sessions owning the highest stage and event ids, then make new rows
    of each kind: every new id is above every id the deleted rows had."""
    top = _max_ids(engine)
    with engine.connect() as conn:
        owners = {
            conn.execute(
                text(f"SELECT session_id FROM {t} WHERE id = (SELECT max(id) FROM {t})")
            ).scalar()
            for t in ID_TABLES
        }
    with get_session_factory(engine)() as db:
        sessions = FlowSessionManager(db)
        for sid in owners:
            sessions.delete(sid, force=True)
        after_delete = _max_ids(engine)
        assert all(after_delete[t] < top[t] for t in ID_TABLES)  # the highest rows are gone
        new = sessions.create_session("hello", name="after", definition=definition).id
        sessions.start_session(new)
        append_logs(
            db,
            [
                {
                    "session_id": new,
                    "at": 1.0,
                    "level": "INFO",
                    "category": "c",
                    "stage": None,
                    "text": "x",
                }
            ],
        )
    with engine.connect() as conn:
        for t in ID_TABLES:
            ids = [
                r[0]
                for r in conn.execute(text(f"SELECT id FROM {t} WHERE session_id = :s"), {"s": new})
            ]
            assert ids, t
            assert min(ids) > top[t], f"{t}: id {min(ids)} given again (highest was {top[t]})"


def test_revision_files_are_one_linear_history_ending_at_schema_version():
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(MIGRATIONS_DIR))
    assert script.get_heads() == [HEAD]
    assert f"{SCHEMA_VERSION:04d}" == HEAD
    revisions = [r.revision for r in script.walk_revisions("base", "heads")]
    assert sorted(revisions) == [f"{n:04d}" for n in range(1, SCHEMA_VERSION + 1)]
    assert revisions[-1] == BASELINE


def test_empty_database_gets_head(db_url):
    engine = init_db(db_url)
    try:
        assert _revision(engine) == HEAD
        assert {"flow_sessions", "stage_instances", "flow_events", "log_records"} <= set(
            inspect(engine).get_table_names()
        )
        assert "ix_flow_sessions_queue" in _indexes(engine)
        if engine.dialect.name == "sqlite":
            assert _user_version(engine) == SCHEMA_VERSION
            assert _autoincrement_tables(engine) == set(ID_TABLES)
    finally:
        engine.dispose()


def test_head_schema_matches_the_models(db_url):
    """What the migrations build is what the models declare (autogenerate finds nothing),
    apart from the objects only migrations create."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlmodel import SQLModel

    def include(obj, name, type_, reflected, compare_to):  # type: ignore[no-untyped-def]
        return not (type_ == "index" and name in MIGRATION_ONLY_INDEXES)

    engine = init_db(db_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "include_object": include}
            )
            assert compare_metadata(context, SQLModel.metadata) == []
    finally:
        engine.dispose()


@pytest.mark.parametrize("start", [BASELINE, "0003", "0004", "0005"])
def test_upgrade_keeps_every_row(db_url, hello_definition, start):
    """From the first revision, from the one before AUTOINCREMENT (0004), from the one
    before parameters and outputs (0005) and from the one before the runner's lease (0006):
    every row, column, key and index is kept, the new columns are empty on the old rows, and
    afterwards no deleted id is given again."""
    new_columns = _added_after(start)
    old = _filled_at(db_url, start, hello_definition)
    try:
        assert _revision(old) == start
        assert ("ix_flow_sessions_queue" in _indexes(old)) == (start != BASELINE)
        columns = {c["name"] for c in inspect(old).get_columns("flow_sessions")}
        assert not columns & {c for t, c in new_columns if t == "flow_sessions"}
        before = _rows(old)
        structure = _structure(old)
        top = _max_ids(old)
    finally:
        old.dispose()
    assert sum(len(rows) for rows in before.values()) > 50

    engine = init_db(db_url)
    try:
        assert _revision(engine) == HEAD
        after = _rows(engine)
        assert _without_new_columns(after, new_columns) == before
        for table, column in new_columns:
            assert [r[column] for r in after[table]] == [None] * len(after[table])
        assert "ix_flow_sessions_queue" in _indexes(engine)
        if start != BASELINE:
            assert _structure(engine, without=new_columns) == structure
        if engine.dialect.name == "sqlite":
            assert _user_version(engine) == SCHEMA_VERSION
            assert _autoincrement_tables(engine) == set(ID_TABLES)
            with engine.connect() as conn:
                seq = dict(conn.exec_driver_sql("SELECT name, seq FROM sqlite_sequence").all())
            assert seq == top  # new ids continue above the highest id kept
        # and the store works on: the upgraded rows take new operations
        with get_session_factory(engine)() as db:
            sessions = FlowSessionManager(db)
            sid = before["flow_sessions"][0]["id"]
            paused = [r["id"] for r in before["flow_sessions"] if r["status"] == "PAUSED"]
            sessions.resume(paused[0])
            assert sessions.get_session(paused[0]).status == "ACTIVE"
            assert sessions.get_session(sid) is not None
        _assert_ids_not_reused(engine, hello_definition)
    finally:
        engine.dispose()


def test_upgraded_sessions_have_no_params_or_outputs_and_new_ones_keep_theirs(
    db_url, hello_definition
):
    """Rows an older vc wrote read as sessions without parameters and stages without
    outputs; a session created after the upgrade stores both."""
    from store.definitions import ParamDefinition
    from store.queries import get_session_view

    old = _filled_at(db_url, "0004", hello_definition)
    old.dispose()
    engine = init_db(db_url)
    try:
        with get_session_factory(engine)() as db:
            old_id = _rows(engine)["flow_sessions"][0]["id"]
            view = get_session_view(db, old_id)
            assert view is not None
            assert view.params == {} and view.to_json()["params"] == {}
            assert all(s.outputs == {} for s in view.stages)
            definition = hello_definition.model_copy(
                update={"params": {"day": ParamDefinition(default="latest")}}
            )
            sid = (
                FlowSessionManager(db)
                .create_session("hello", definition=definition, params={"day": "2024-01-02"})
                .id
            )
            stage = StageManager(db).list_stages(sid)[0]
            StageManager(db).update_stage_status(stage.id, StageStatus.ACTIVE)
            assert StageManager(db).record_outputs(stage.id, 1, {"rows": "42"})
            view = get_session_view(db, sid)
            assert view is not None
            assert view.params == {"day": "2024-01-02"}
            assert view.stages[0].outputs == {"rows": "42"}
    finally:
        engine.dispose()


def test_a_session_an_older_vc_claimed_gets_a_lease_at_its_next_claim(db_url, hello_definition):
    """A session claimed before the upgrade to 0006 has a runner and no token: its runner
    (an older vc) writes without one, and its heartbeat still lands; no lease matches it
    (a manager holding one is refused, nothing changed); the next claim gives it a token,
    and a manager holding that lease writes."""
    from store import Lease, LeaseLost

    old = _filled_at(db_url, "0005", hello_definition)
    old.dispose()
    engine = init_db(db_url)
    try:
        rows = _rows(engine)["flow_sessions"]
        (held,) = [r for r in rows if r["runner_pid"] is not None]
        sid, host, pid = held["id"], held["runner_host"], held["runner_pid"]
        assert held["runner_lease"] is None and held["status"] == "PAUSED"
        with get_session_factory(engine)() as db:
            sessions = FlowSessionManager(db)
            assert sessions.heartbeat(sid, runner_host=host, runner_pid=pid)
            before = snapshot(engine)
            guess = FlowSessionManager(db, lease=Lease(sid, host, pid, held["version"]))
            with pytest.raises(LeaseLost):
                guess.resume(sid)
            assert snapshot(engine) == before
            sessions.resume(sid)
            change = sessions.start_session(sid, runner_host=host, runner_pid=pid)
            lease = sessions.lease_of(change, host, pid)
            assert sessions.get_session(sid).runner_lease == lease.token == change.version
            stages = StageManager(db, lease=lease)
            stage = stages.list_stages(sid)[0]
            moved = stages.move_stage(stage.id, StageStatus.ACTIVE)
            assert moved.status == StageStatus.ACTIVE and moved.session_status == "ACTIVE"
    finally:
        engine.dispose()


def test_lease_downgrade_keeps_every_other_column(db_url, hello_definition):
    """Revision 0006 undone drops the lease token only: every row and every other column
    stays, and the schema is 0005's."""
    reference = _build_at(db_url, "0005")
    structure = _structure(reference)
    reference.dispose()
    engine = init_db(db_url)
    try:
        _fill(engine, hello_definition)
        before = _rows(engine)
        assert any(r["runner_lease"] is not None for r in before["flow_sessions"])
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0005")
        assert _revision(engine) == "0005"
        assert _rows(engine) == _without_new_columns(before, _added_after("0005"))
        assert _structure(engine) == structure
        if engine.dialect.name == "sqlite":
            assert _autoincrement_tables(engine) == set(ID_TABLES)
    finally:
        engine.dispose()


def test_autoincrement_downgrade_keeps_every_row(db_url, hello_definition):
    """Revision 0004 undone (SQLite: the tables rebuilt without AUTOINCREMENT; PostgreSQL:
    nothing) keeps every row and the schema of 0003."""
    reference = _build_at(db_url, "0003")
    structure = _structure(reference)
    reference.dispose()
    engine = _filled_at(db_url, "0004", hello_definition)
    try:
        before = _rows(engine)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0003")
        assert _revision(engine) == "0003"
        assert _rows(engine) == before
        assert _structure(engine) == structure
        if engine.dialect.name == "sqlite":
            assert _autoincrement_tables(engine) == set()
    finally:
        engine.dispose()


def test_params_and_outputs_downgrade_keeps_every_other_column(db_url, hello_definition):
    """Revision 0005 undone drops the parameter and output columns only: every row and
    every other column stays, and the schema is 0004's (AUTOINCREMENT kept on SQLite)."""
    reference = _build_at(db_url, "0004")
    structure = _structure(reference)
    reference.dispose()
    engine = init_db(db_url)
    try:
        _fill(engine, hello_definition)
        before = _rows(engine)
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0004")
        assert _revision(engine) == "0004"
        assert _rows(engine) == _without_new_columns(before)
        assert _structure(engine) == structure
        if engine.dialect.name == "sqlite":
            assert _autoincrement_tables(engine) == set(ID_TABLES)
    finally:
        engine.dispose()


def test_store_from_before_migrations_is_stamped_not_recreated(db_url, hello_definition):
    """A store created by create_all (user_version 1, no alembic_version): stamped at the
    baseline and upgraded in place."""
    old = _filled_at(db_url, BASELINE, hello_definition)
    try:
        with old.begin() as conn:
            conn.execute(text("DROP TABLE alembic_version"))
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA user_version=1")
        assert _revision(old) == "unversioned"
        before = _rows(old)
    finally:
        old.dispose()

    result = run_vc("db", "current", env={"VC_DATABASE_URL": db_url})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("unversioned")

    engine = init_db(db_url)
    try:
        assert _revision(engine) == HEAD
        assert _without_new_columns(_rows(engine)) == before
    finally:
        engine.dispose()


@pytest.mark.parametrize("how", ["fast", "slow"])
def test_database_newer_than_the_code_is_refused(db_url, how):
    engine = init_db(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0999'"))
            if conn.dialect.name == "sqlite":
                # fast: user_version says newer; slow: only alembic_version does
                conn.exec_driver_sql(f"PRAGMA user_version={999 if how == 'fast' else 0}")
            elif how == "fast":
                pytest.skip("PostgreSQL has one path: the alembic_version read")
        before = snapshot(engine)
    finally:
        engine.dispose()

    with pytest.raises(StoreUnavailable) as info:
        init_db(db_url)
    message = str(info.value)
    assert "0999" in message and "newer" in message and "upgrade vc" in message
    assert "\n" not in message

    result = run_vc("flow", "session", "list", env={"VC_DATABASE_URL": db_url})
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "newer than this vc" in result.stderr
    assert "Traceback" not in result.stderr
    result = run_vc("db", "upgrade", env={"VC_DATABASE_URL": db_url})
    assert result.returncode == 1 and "newer than this vc" in result.stderr

    check = make_engine(db_url)
    try:
        assert snapshot(check) == before  # refused means untouched
    finally:
        check.dispose()


def test_db_commands_print_the_revision(db_url, tmp_path):
    env = {"VC_DATABASE_URL": db_url, "VC_HOME": str(tmp_path)}
    old = _build_at(db_url, BASELINE)
    old.dispose()
    result = run_vc("db", "current", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[0] == f"{BASELINE}:"
    assert "behind" in result.stdout

    result = run_vc("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.startswith(f"{HEAD} (head)") and f"upgraded from {BASELINE}" in result.stdout
    )
    result = run_vc("db", "upgrade", env=env)
    assert result.returncode == 0 and "up to date" in result.stdout
    result = run_vc("db", "current", env=env)
    assert result.returncode == 0 and result.stdout.strip() == f"{HEAD} (head)"


def test_db_current_does_not_create_a_sqlite_store(tmp_path):
    path = tmp_path / "nothing" / "flow.db"
    result = run_vc("db", "current", env={"VC_DATABASE_URL": f"sqlite:///{path}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("none")
    assert not path.exists() and not path.parent.exists()


def test_concurrent_first_starts_migrate_once(db_url):
    """Several processes opening one empty store at once: all succeed, one schema."""
    code = f"from store import init_db; init_db({db_url!r}).dispose(); print('ok')"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(5)
    ]
    results = [p.communicate(timeout=60) for p in procs]
    for proc, (out, err) in zip(procs, results, strict=True):
        assert proc.returncode == 0, err
        assert out.strip() == "ok"
    engine = make_engine(db_url)
    try:
        assert _revision(engine) == HEAD
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    finally:
        engine.dispose()


def test_up_to_date_check_does_not_load_alembic(db_url):
    """The cheap path: an up-to-date store is opened with one query, without importing
    Alembic (the `session list` budget)."""
    init_db(db_url).dispose()
    code = textwrap.dedent(f"""
        import sys, time
        from store import init_db
        init_db({db_url!r}).dispose()
        best = 1e9
        for _ in range(20):
            t = time.perf_counter(); init_db({db_url!r}).dispose()
            best = min(best, time.perf_counter() - t)
        print('alembic' in sys.modules, best)
    """)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    loaded, best = result.stdout.split()
    assert loaded == "False"
    print(f"init_db on an up-to-date store: {float(best) * 1000:.2f} ms")


def test_a_postgresql_schema_of_another_program_gets_no_vc_tables_unless_asked(workspace, tmp_path):
    """A mistyped URL names someone else's database: `run` and a worker refuse to add
    vc's tables to it, in one line; `vc db upgrade`, asked by name, adds them."""
    from tests.conftest import PG_URL, pg_schema

    if not PG_URL:
        pytest.skip("PostgreSQL suite: set VC_TEST_DATABASE_URL to run it")
    with pg_schema() as url:
        engine = make_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("CREATE TABLE orders (id integer)"))
            env = {"VC_DATABASE_URL": url}
            for args in (("flow", "run", "hello", "--queue"), ("flow", "worker")):
                result = run_vc(*args, env=env, timeout=30)
                assert result.returncode == 1, (args, result.stdout, result.stderr)
                assert result.stderr.count("\n") == 1
                assert "holds another program's tables (orders) and no vc store" in result.stderr
                assert inspect(engine).get_table_names() == ["orders"]
            result = run_vc("db", "upgrade", env=env)
            assert result.returncode == 0, result.stderr
            assert "flow_sessions" in inspect(engine).get_table_names()
        finally:
            engine.dispose()
