"""Bad input and a hostile environment: each gets one clear line on stderr (never a
traceback), the right exit code, and leaves the store as it was."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from .helpers import create_session, env_for, one_error_line, run, run_on_tty, snapshot, store


def write_workflow(workspace: Path, name: str, text: str) -> Path:
    path = workspace / "workflows" / name
    path.write_text(textwrap.dedent(text).lstrip())
    return path


def no_sessions(workspace: Path) -> bool:
    return snapshot(workspace)["flow_sessions"] == []


# -- workflows ----------------------------------------------------------------------------------


def test_an_unknown_workflow_is_refused_and_lists_the_known_ones(store_workspace: Path) -> None:
    result = run("flow", "session", "create", "nightly")
    assert result.code == 1
    line = one_error_line(result)
    assert "unknown workflow 'nightly'; known: broken, gate, hello, slow" in line
    assert result.out == ""
    assert no_sessions(store_workspace)


def test_flow_show_of_an_unknown_workflow_is_refused(workspace: Path) -> None:
    result = run("flow", "show", "nightly")
    assert result.code == 1
    assert "unknown workflow 'nightly'" in one_error_line(result)


def test_malformed_yaml_is_reported_with_path_line_and_key(store_workspace: Path) -> None:
    path = write_workflow(
        store_workspace,
        "etl.yaml",
        """
        name: ETL
        stages:
          - name: extract
            run: echo x
            retries: lots
    """,
    )
    result = run("flow", "session", "create", "etl")
    assert result.code == 1
    line = one_error_line(result)
    assert f"{path}:5: stages[0].retries:" in line
    assert no_sessions(store_workspace)


def test_a_yaml_syntax_error_is_reported_with_path_and_line(workspace: Path) -> None:
    path = write_workflow(workspace, "etl.yaml", "name: ETL\nstages:\n  - name: [unclosed\n")
    result = run("flow", "show", "etl")
    assert result.code == 1
    line = one_error_line(result)
    assert line.startswith(f"vc: error: {path}:") and "invalid YAML" in line


def test_a_malformed_file_does_not_hide_the_other_workflows(workspace: Path) -> None:
    path = write_workflow(
        workspace,
        "etl.yaml",
        """
        stages:
          - name: extract
            run: echo x
            timeout: soon
    """,
    )
    result = run("flow", "list")
    assert result.code == 1
    assert [line.split()[0] for line in result.out.splitlines()[1:]] == [
        "broken",
        "gate",
        "hello",
        "slow",
    ]
    assert f"{path}:4: stages[0].timeout:" in one_error_line(result)
    assert run("flow", "show", "hello").code == 0


def test_duplicate_stage_names_are_refused(store_workspace: Path) -> None:
    path = write_workflow(
        store_workspace,
        "dup.yaml",
        """
        stages:
          - name: build
            run: make
          - name: build
            run: make again
    """,
    )
    result = run("flow", "session", "create", "dup")
    assert result.code == 1
    line = one_error_line(result)
    assert f"{path}:4: stages[1].name: duplicate stage name 'build'" in line
    assert no_sessions(store_workspace)


def test_needs_naming_an_unknown_stage_is_refused(store_workspace: Path) -> None:
    path = write_workflow(
        store_workspace,
        "needs.yaml",
        """
        stages:
          - name: build
            run: make
          - name: deploy
            run: ./deploy
            needs: [biuld]
    """,
    )
    result = run("flow", "session", "create", "needs")
    assert result.code == 1
    line = one_error_line(result)
    assert f"{path}:6: stages[1].needs" in line and "unknown stage 'biuld'" in line
    assert "did you mean 'build'?" in line
    assert no_sessions(store_workspace)


def test_needs_forming_a_cycle_is_refused(store_workspace: Path) -> None:
    path = write_workflow(
        store_workspace,
        "cycle.yaml",
        """
        stages:
          - name: a
            run: "true"
            needs: c
          - name: b
            run: "true"
            needs: a
          - name: c
            run: "true"
            needs: b
    """,
    )
    result = run("flow", "session", "create", "cycle")
    assert result.code == 1
    line = one_error_line(result)
    assert str(path) in line and "dependency cycle: a -> c -> b -> a" in line
    assert no_sessions(store_workspace)


#: Workflow files with a mistake in what runs in parallel: (id, text, line, key, fragment).
#: Each has a first stage that would leave a file behind, had anything run.
PARALLEL_MISTAKES = [
    (
        "needs-cycle",
        """
        stages:
          - {name: first, run: touch ran}
          - {name: a, run: "true", needs: [c]}
          - {name: b, run: "true", needs: [a]}
          - {name: c, run: "true", needs: [b]}
        """,
        3,
        "stages[1].needs[0]",
        "dependency cycle: a -> c -> b -> a",
    ),
    (
        "needs-unknown",
        """
        stages:
          - {name: first, run: touch ran}
          - {name: a, run: "true", needs: [frist]}
        """,
        3,
        "stages[1].needs[0]",
        "unknown stage 'frist'",
    ),
    (
        "matrix-values-not-a-list",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix: {size: small}
        """,
        5,
        "stages[1].matrix.size",
        "expected a non-empty list of values, got 'small'",
    ),
    (
        "matrix-values-empty",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix: {size: []}
        """,
        5,
        "stages[1].matrix.size",
        "expected a non-empty list of values, got an empty list",
    ),
    (
        "matrix-value-not-a-scalar",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix:
              size: [small, {big: 1}]
        """,
        6,
        "stages[1].matrix.size[1]",
        "expected a string, number or boolean, got a mapping",
    ),
    (
        "matrix-over-256",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix:
              x: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
              y: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]
        """,
        6,
        "stages[1].matrix",
        "the matrix makes more than 256 instances (17 x 16 so far)",
    ),
    (
        "matrix-key-not-an-identifier",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix:
              img-size: [small]
        """,
        6,
        "stages[1].matrix.img-size",
        "matrix key 'img-size' is not an identifier",
    ),
    (
        "matrix-value-with-a-comma",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix:
              size: [small, "4,5"]
        """,
        6,
        "stages[1].matrix.size[1]",
        "matrix value '4,5' must be non-empty, without '[', ']', ',', '='",
    ),
    (
        "matrix-value-with-an-equals-sign",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix:
              size: [small, w=4]
        """,
        6,
        "stages[1].matrix.size[1]",
        "matrix value 'w=4' must be non-empty",
    ),
    (
        "matrix-keys-the-same-upper-cased",
        """
        stages:
          - {name: first, run: touch ran}
          - name: a
            run: "true"
            matrix:
              size: [small]
              Size: [large]
        """,
        7,
        "stages[1].matrix.Size",
        "matrix keys 'size' and 'Size' are the same variable VC_MATRIX_SIZE",
    ),
    (
        "max-parallel-0",
        """
        max_parallel: 0
        stages:
          - {name: first, run: touch ran}
        """,
        1,
        "max_parallel",
        "expected an integer >= 1, got 0",
    ),
    (
        "fail-fast-quoted",
        """
        fail_fast: "yes"
        stages:
          - {name: first, run: touch ran}
        """,
        1,
        "fail_fast",
        "expected true or false, got 'yes'",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [case[1:] for case in PARALLEL_MISTAKES],
    ids=[case[0] for case in PARALLEL_MISTAKES],
)
def test_a_mistake_in_needs_matrix_or_parallelism_is_refused_before_anything_runs(
    store_workspace: Path, text: str, line: int, key: str, fragment: str
) -> None:
    path = write_workflow(store_workspace, "par.yaml", text)
    before = snapshot(store_workspace)
    result = run("flow", "run", "par")
    assert result.code == 1
    error = one_error_line(result)
    assert error.startswith(f"vc: error: {path}:{line}: {key}: "), error
    assert fragment in error
    assert result.out == ""
    assert snapshot(store_workspace) == before and no_sessions(store_workspace)
    assert not (store_workspace / "ran").exists()


@pytest.mark.parametrize(
    "workflow_id", ["../x", "../../etc/passwd", "/etc/passwd", "a/b", "x\x1b[2J", ".hidden"]
)
def test_a_workflow_id_that_could_escape_a_directory_is_a_usage_error(
    store_workspace: Path, workflow_id: str
) -> None:
    for args in (
        ("flow", "session", "create", "--", workflow_id),
        ("flow", "show", "--", workflow_id),
        ("flow", "run", "--", workflow_id),
        ("flow", "run", "--queue", "--", workflow_id),
    ):
        result = run(*args)
        assert result.code == 2, result.err
        line = one_error_line(result)
        assert "invalid workflow id" in line and "\x1b" not in line
    assert no_sessions(store_workspace)
    assert not (store_workspace / "logs").exists() or not any(
        p.is_file() and p.name != "operations.log" for p in (store_workspace / "logs").rglob("*")
    )


def test_a_workflow_id_with_a_nul_byte_is_a_usage_error(store_workspace: Path, cli) -> None:
    result = cli("flow", "session", "create", "hel\x00lo")
    assert result.code == 2
    assert "\x00" not in one_error_line(result)
    assert no_sessions(store_workspace)


# -- options ------------------------------------------------------------------------------------


def test_meta_without_equals_is_a_usage_error(store_workspace: Path) -> None:
    result = run("flow", "session", "create", "hello", "--meta", "ticket")
    assert result.code == 2
    assert "--meta: expected KEY=VALUE, got 'ticket'" in one_error_line(result)
    assert no_sessions(store_workspace)


@pytest.mark.parametrize(
    "args", [("flow", "session", "create", "hello"), ("flow", "run", "hello", "--queue")]
)
def test_a_name_over_200_characters_is_a_usage_error(store_workspace: Path, args) -> None:
    result = run(*args, "--name", "n" * 201)
    assert result.code == 2
    assert "a session name holds at most 200 characters, got 201" in one_error_line(result)
    assert no_sessions(store_workspace)
    assert run(*args, "--name", "n" * 200).code == 0


@pytest.mark.parametrize(
    "args", [("flow", "session", "create", "hello"), ("flow", "run", "hello", "--queue")]
)
@pytest.mark.parametrize(
    "name",
    ["", "   ", "\x1b[0m", "\x01\x02", "\u200b", "\u200d\u00ad", "\u3164", "\u2800"],
    ids=["empty", "blank", "csi", "c0", "zwsp", "zwj-shy", "hangul-filler", "braille-blank"],
)
def test_an_empty_or_blank_name_is_a_usage_error(store_workspace: Path, args, name: str) -> None:
    result = run(*args, "--name", name)
    assert result.code == 2
    assert "a session name cannot be empty or blank" in one_error_line(result)
    assert no_sessions(store_workspace)


@pytest.mark.parametrize("name", ["a\u200d", "日本", "\U0001f600", "é"])
def test_a_name_that_shows_something_is_kept(store_workspace: Path, name: str) -> None:
    assert run("flow", "session", "create", "hello", "--name", name).code == 0


@pytest.mark.parametrize("value", ["0", "1025", "99999999999999999999"])
def test_a_worker_concurrency_out_of_range_is_a_usage_error(workspace: Path, value: str) -> None:
    result = run("flow", "worker", "--concurrency", value)
    assert result.code == 2
    assert one_error_line(result) == (
        f"vc: error: --concurrency {value}: expected a number of sessions from 1 to 1024"
    )


def test_a_meta_key_given_twice_is_a_usage_error(store_workspace: Path) -> None:
    result = run("flow", "session", "create", "hello", "--meta", "a=1", "--meta", "a=2")
    assert result.code == 2
    assert "--meta: key 'a' given twice" in one_error_line(result)
    assert no_sessions(store_workspace)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("flow", "session", "show"), "missing argument 'ID'"),
        (("flow", "session", "frobnicate"), "no such command 'frobnicate'"),
        (("flow", "session", "list", "--limit", "0"), "--limit"),
        (("flow", "session", "list", "--status", "DONE"), "'DONE' is not one of"),
        (("flow", "session", "list", "--bogus"), "no such option: --bogus"),
    ],
)
def test_usage_errors_exit_two_with_one_line(
    workspace: Path, args: tuple[str, ...], expected: str
) -> None:
    result = run(*args)
    assert result.code == 2
    assert expected in one_error_line(result)
    assert result.out == ""


def test_no_command_prints_the_help(workspace: Path) -> None:
    result = run()
    assert result.code == 0 and "Usage: vc" in result.out and result.err == ""


def test_an_unexpected_error_is_one_line_not_a_traceback(
    workspace: Path, cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    import store.queries

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("boom")

    (workspace / ".vc").mkdir()
    (workspace / ".vc" / "flow.db").touch()  # a store for the full path to make: it reads
    monkeypatch.setattr(store.queries, "list_sessions", broken)
    result = cli("flow", "session", "list")
    assert result.code == 1
    assert "internal error: RuntimeError: boom" in one_error_line(result)


# -- an unwritable workspace, database or log directory ---------------------------------------


def test_a_workspace_whose_dot_vc_is_a_file_is_refused_in_one_line(workspace: Path) -> None:
    (workspace / ".vc").write_text("not a directory")
    for args in (("flow", "session", "create", "hello"), ("flow", "session", "list")):
        result = run(*args)
        assert result.code == 1
        line = one_error_line(result)
        assert line.startswith(f"vc: error: cannot write {workspace / '.vc'}")
        assert "not a directory" in line
    assert (workspace / ".vc").read_text() == "not a directory"


def test_a_database_url_under_a_regular_file_is_refused_in_one_line(workspace: Path) -> None:
    blocker = workspace / "blocker"
    blocker.write_text("")
    result = run(
        "flow",
        "session",
        "create",
        "hello",
        env={"VC_DATABASE_URL": f"sqlite:///{blocker}/flow.db"},
    )
    assert result.code == 1
    line = one_error_line(result)
    assert f"cannot write {blocker}" in line and "not a directory" in line


@pytest.mark.parametrize(
    "args", [("flow", "session", "create", "hello"), ("flow", "session", "list")]
)
def test_a_sqlite_url_in_a_missing_directory_is_refused_and_creates_nothing(
    workspace: Path, tmp_path: Path, args: tuple[str, ...]
) -> None:
    """A mistyped URL must not make a new, empty store (and a directory tree) somewhere."""
    missing = tmp_path / "nonexistent" / "dir"
    result = run(*args, env={"VC_DATABASE_URL": f"sqlite:///{missing}/x.db"})
    assert result.code == 1
    line = one_error_line(result)
    assert line == (
        f"vc: error: cannot open the store {missing}/x.db: directory {missing} does not "
        "exist (create it first, or check VC_DATABASE_URL)"
    )
    assert not (tmp_path / "nonexistent").exists()


def test_the_workspace_store_directory_is_created_on_first_write(workspace: Path) -> None:
    listed = run("flow", "session", "list")
    assert listed.code == 0, listed.err
    assert not (workspace / ".vc").exists()  # a read makes nothing
    result = run("flow", "session", "create", "hello")
    assert result.code == 0, result.err
    assert (workspace / ".vc" / "flow.db").is_file()
    assert (workspace / ".vc").stat().st_mode & 0o777 == 0o700


def test_a_mistyped_vc_home_makes_no_directory_and_names_where_it_looked(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-workspace"
    result = run("flow", "session", "list", env={"VC_HOME": str(missing)})
    assert result.code == 0, result.err
    assert f"no store at {missing}/.vc/flow.db" in result.out
    assert not missing.exists()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_read_of_a_postgresql_database_without_vc_creates_nothing_there(
    store_workspace: Path, db_url: str
) -> None:
    """A mistyped URL may name another program's database: reads answer as an empty store
    and leave it as it was; the first write makes the schema."""
    from sqlalchemy import create_engine, inspect

    listed = run("flow", "session", "list")
    assert listed.code == 0, listed.err
    assert "no sessions yet (no vc schema in database " in listed.out
    assert run("flow", "session", "list", "--json").out.strip() == "[]"
    for args in (
        ("flow", "status", "abcd1234"),
        ("flow", "session", "pause", "abcd1234"),
        ("flow", "session", "wait", "abcd1234"),
        ("flow", "session", "delete", "abcd1234", "--yes"),
        ("flow", "run", "hello", "--session", "abcd1234"),
    ):
        refused = run(*args)
        assert refused.code == 1 and "no vc schema in database" in one_error_line(refused), args
    engine = create_engine(db_url)
    try:
        assert inspect(engine).get_table_names() == []
        assert run("flow", "session", "create", "hello").code == 0
        assert "flow_sessions" in inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_another_programs_alembic_database_is_no_vc_store_to_a_read(
    store_workspace: Path, db_url: str
) -> None:
    """Its ``alembic_version`` says nothing of vc: a read answers as an empty store, not
    "newer than this vc knows", and leaves its tables as they were."""
    from sqlalchemy import create_engine, inspect, text

    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("CREATE TABLE alembic_version (version_num varchar(32))"))
            conn.execute(text("INSERT INTO alembic_version VALUES ('ae1027a6acf')"))
        listed = run("flow", "session", "list")
        assert listed.code == 0, listed.err
        assert "no vc schema in database " in listed.out
        assert inspect(engine).get_table_names() == ["alembic_version"]
    finally:
        engine.dispose()


@pytest.mark.parametrize("db_url", ["postgresql"], indirect=True)
def test_a_role_that_may_not_use_the_schema_of_vc_is_refused_not_shown_an_empty_store(
    store_workspace: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The search path skips a schema the role may not use without a word: that is no
    empty store, and the read fails naming the store's refusal."""
    from tests.conftest import _pg_admin, pg_role

    assert run("flow", "session", "create", "hello").code == 0  # vc's schema, as postgres
    schema = db_url.rsplit("search_path%3D", 1)[1]
    with pg_role(db_url) as (role, as_role):
        _pg_admin(f'REVOKE USAGE ON SCHEMA "{schema}" FROM "{role}"')
        monkeypatch.setenv("VC_DATABASE_URL", as_role)
        listed = run("flow", "session", "list")
    assert listed.code == 1, (listed.out, listed.err)
    assert "no vc schema" not in listed.out + listed.err
    one_error_line(listed)


def test_the_dashboard_outside_any_workspace_is_refused_and_makes_no_store(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    code, screen = run_on_tty("flow", "tui", env={"VC_HOME": str(elsewhere)}, timeout=20)
    assert code == 1, screen
    assert f"vc: error: no workspace in {elsewhere}" in screen
    assert "vc flow tui --demo" in screen
    assert list(elsewhere.iterdir()) == []


def test_the_served_dashboard_outside_any_workspace_is_refused_and_makes_no_store(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    result = run("flow", "tui", "--serve", "--port", "0", env={"VC_HOME": str(elsewhere)})
    assert result.code == 1
    assert f"no workspace in {elsewhere}" in one_error_line(result)
    assert list(elsewhere.iterdir()) == []


def test_the_dashboard_opens_in_a_workspace_whose_first_session_is_yet_to_start(
    tmp_path: Path,
) -> None:
    fresh = tmp_path / "fresh"
    (fresh / "workflows").mkdir(parents=True)
    result = run("flow", "tui", env={"VC_HOME": str(fresh)})
    assert "no workspace" not in result.err
    assert "the dashboard needs a terminal" in result.err  # got past the workspace check


def test_a_log_dir_under_a_regular_file_refuses_and_changes_nothing(
    store_workspace: Path,
) -> None:
    sid = create_session(store_workspace)
    before = snapshot(store_workspace)
    blocker = store_workspace / "blocker"
    blocker.write_text("")
    env = {"VC_LOG_DIR": str(blocker / "logs")}
    for args in (
        ("flow", "session", "create", "hello"),
        ("flow", "session", "pause", sid),
        ("flow", "session", "delete", "--force", sid),
    ):
        result = run(*args, env=env)
        assert result.code == 1, result.err
        line = one_error_line(result)
        assert f"cannot write {blocker}/logs" in line and "not a directory" in line
    assert snapshot(store_workspace) == before
    # reads do not need the log directory
    assert run("flow", "session", "list", "--json", env=env).code == 0
    assert run("flow", "status", sid, env=env).code == 0


@contextmanager
def unwritable(*paths: Path) -> Iterator[None]:
    """Make ``paths`` unwritable for whoever runs the tests: ``chattr +i`` as root (root
    ignores permission bits), permission bits otherwise. Skips the test if neither holds."""
    paths = tuple(p for p in paths if p.exists())
    as_root = os.geteuid() == 0
    modes = {p: stat.S_IMODE(p.stat().st_mode) for p in paths}
    try:
        if as_root:
            if shutil.which("chattr") is None:
                pytest.skip("chattr is needed to make a path unwritable for root")
            done = subprocess.run(["chattr", "+i", *map(str, paths)], capture_output=True)
            if done.returncode != 0:
                pytest.skip(f"chattr +i does not work here: {done.stderr.strip()!r}")
        else:
            for p in paths:
                os.chmod(p, modes[p] & ~0o222)
        probe = paths[0] / "probe" if paths[0].is_dir() else paths[0]
        try:
            with open(probe, "a"):
                pass
        except OSError:
            pass
        else:
            pytest.skip("cannot make a path unwritable here")
        yield
    finally:
        if as_root:
            subprocess.run(["chattr", "-i", *map(str, paths)], capture_output=True)
        else:
            for p, mode in modes.items():
                os.chmod(p, mode)


def test_a_workspace_the_user_cannot_write_is_refused_with_permission_denied(
    workspace: Path,
) -> None:
    with unwritable(workspace):
        result = run("flow", "session", "create", "hello")
        assert result.code == 1
        line = one_error_line(result)
        assert line.startswith(f"vc: error: cannot write {workspace}/")
        assert line.endswith(": permission denied")
        listed = run("flow", "session", "list")  # a read: no store, nothing to refuse
        assert listed.code == 0 and "no store at" in listed.out, listed.err
    assert not (workspace / ".vc").exists() and not (workspace / "logs").exists()


def test_a_database_the_user_cannot_write_is_refused_with_permission_denied(
    workspace: Path,
) -> None:
    sid = create_session(workspace)
    (workspace / "logs").mkdir()
    before = snapshot(workspace)
    vc_dir = workspace / ".vc"
    with unwritable(vc_dir, *vc_dir.iterdir()):
        for args in (("flow", "session", "pause", sid), ("flow", "session", "create", "hello")):
            result = run(*args)
            assert result.code == 1
            line = one_error_line(result)
            assert f"cannot write {vc_dir}" in line and "permission denied" in line
    assert snapshot(workspace) == before


# -- a locked database --------------------------------------------------------------------------


def test_a_database_locked_longer_than_the_busy_timeout_is_one_line(
    workspace: Path,
) -> None:
    sid = create_session(workspace)
    before = snapshot(workspace)
    holder = sqlite3.connect(workspace / ".vc" / "flow.db", isolation_level=None)
    released = threading.Event()
    try:
        holder.execute("BEGIN EXCLUSIVE")
        for args in (("flow", "session", "pause", sid), ("flow", "session", "create", "hello")):
            result = run(*args, env={"VC_BUSY_TIMEOUT": "0.5"}, timeout=30)
            assert result.code == 1, result.err
            line = one_error_line(result)
            assert "locked" in line and "VC_BUSY_TIMEOUT" in line
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        released.set()
    assert snapshot(workspace) == before
    assert run("flow", "session", "pause", sid).code == 0  # and it works once released


def test_a_read_waits_for_nothing_while_a_writer_holds_the_lock(workspace: Path) -> None:
    sid = create_session(workspace)
    holder = sqlite3.connect(workspace / ".vc" / "flow.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # WAL: readers are not blocked by a writer
        result = run("flow", "session", "show", sid, "--json", env={"VC_BUSY_TIMEOUT": "0.5"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.code == 0, result.err
    assert store  # the helper module is the one reading the store elsewhere


@pytest.mark.parametrize(
    "args",
    [
        ("flow", "session", "create", "hello", "--name", b"name-\xff\xfe"),
        ("flow", "session", "list", "--workflow", b"\xff"),
        ("flow", "session", "show", b"abcd\xff"),
    ],
    ids=["create --name", "list --workflow", "show ID"],
)
def test_an_argument_that_is_not_utf8_is_a_usage_error(
    store_workspace: Path, args: tuple[str | bytes, ...]
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "app.main", *args],
        capture_output=True,
        env=env_for(),
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    assert proc.returncode == 2
    err = proc.stderr.decode()
    assert err.count("\n") == 1 and "is not valid UTF-8" in err and "\\xff" in err
    assert proc.stdout == b""
    assert no_sessions(store_workspace)


def test_a_huge_limit_is_taken_as_no_limit(store_workspace: Path, cli) -> None:
    sid = create_session(store_workspace)
    for args in (
        ("flow", "session", "list", "--json", "--limit", "9" * 40),
        ("flow", "session", "logs", sid, "--tail", "9" * 40),
    ):
        result = cli(*args)
        assert result.code == 0, result.err
    assert [d["id"] for d in cli("flow", "session", "list", "--json", "-n", "9" * 30).json()] == [
        sid
    ]


def test_run_queue_of_one_stage_is_refused_before_anything_is_created(workspace: Path) -> None:
    result = run("flow", "run", "hello:greet", "--queue")
    assert result.code == 2
    assert "leave out :STAGE" in one_error_line(result)
    assert no_sessions(workspace)


def test_run_queue_of_an_existing_session_is_refused_and_changes_nothing(
    workspace: Path,
) -> None:
    sid = create_session(workspace)
    before = snapshot(workspace)
    result = run("flow", "run", "hello", "--session", sid[:8], "--queue")
    assert result.code == 2
    assert "--queue queues a new session" in one_error_line(result)
    assert snapshot(workspace) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("VC_STALE_AFTER", "abc"),
        ("VC_STALE_AFTER", "0"),
        ("VC_STALE_AFTER", "-5"),
        ("VC_STALE_AFTER", "nan"),
        ("VC_STALE_AFTER", "2"),  # one heartbeat: every live runner would look gone
        ("VC_BUSY_TIMEOUT", "abc"),
        ("VC_BUSY_TIMEOUT", "-1"),
        ("VC_BUSY_TIMEOUT", "3000000"),  # beyond SQLite's 2**31 ms: it would wait not at all
        ("VC_NOTIFY_TIMEOUT", "abc"),
        ("VC_NOTIFY_TIMEOUT", "0"),
        ("VC_NOTIFY_TIMEOUT", "inf"),
        ("VC_NOTIFY_TIMEOUT", "3600"),
        ("VC_DATABASE_URL", "not a url"),
        ("VC_DATABASE_URL", "bogus://x"),
        ("VC_DATABASE_URL", "mysql://u@h/db"),
        ("VC_HOSTNAME", "build 02"),
        ("VC_HOSTNAME", "a\x1b[31mb"),
        ("VC_HOSTNAME", "h" * 254),
    ],
)
@pytest.mark.parametrize(
    "command",
    [
        ("flow", "session", "list"),
        ("flow", "session", "pause", "PLACEHOLDER"),
        ("flow", "run", "hello", "--queue"),
    ],
)
def test_a_setting_vc_cannot_use_is_a_usage_error_naming_it_and_changes_nothing(
    store_workspace: Path, name: str, value: str, command: tuple[str, ...]
) -> None:
    sid = create_session(store_workspace)
    before = snapshot(store_workspace)
    args = [sid if arg == "PLACEHOLDER" else arg for arg in command]
    result = run(*args, env={name: value})
    assert result.code == 2
    line = one_error_line(result)
    assert name in line
    if name == "VC_DATABASE_URL":  # never echoed: a URL may hold a password
        assert value not in line
    elif name == "VC_HOSTNAME":  # shown as far as it is safe to: no ESC, the start of it
        assert "\x1b" not in line and repr(value[:80])[1:-1] in line
    else:
        assert repr(value) in line
    assert snapshot(store_workspace) == before


def test_a_stale_limit_above_one_heartbeat_is_accepted(store_workspace: Path) -> None:
    assert run("flow", "session", "list", env={"VC_STALE_AFTER": "3"}).code == 0


@pytest.mark.parametrize(
    "args",
    [
        ("flow", "session", "list"),
        ("flow", "session", "list", "--json"),
        ("flow", "status", "abcd"),
        ("flow", "session", "show", "abcd"),
        ("flow", "session", "logs", "abcd"),
        ("flow", "session", "wait", "abcd", "--timeout", "1"),
        ("flow", "session", "pause", "abcd"),
        ("flow", "session", "resume", "abcd"),
        ("flow", "session", "approve", "abcd"),
        ("flow", "session", "retry", "abcd"),
        ("flow", "session", "delete", "abcd", "--yes"),
        ("flow", "run", "hello", "--session", "abcd"),
    ],
    ids=" ".join,
)
def test_a_workspace_without_a_store_gets_answers_and_no_store(workspace: Path, args) -> None:
    """A read, or a refusal of an id that cannot exist, in a directory that has never had
    sessions (or with a mistyped VC_HOME) makes no store there."""
    before = sorted(p.name for p in workspace.iterdir())
    result = run(*args)
    if "abcd" in args:
        assert result.code == 1
        assert one_error_line(result) == (
            f"vc: error: no session matches 'abcd' (no store at {workspace}/.vc/flow.db)"
        )
    else:
        assert result.code == 0, result.err
        assert "[]" in result.out or "no store at" in result.out
    assert sorted(p.name for p in workspace.iterdir()) == before


@pytest.mark.parametrize(
    "args", [("flow", "session", "list"), ("flow", "list"), ("flow", "run", "hello")]
)
def test_a_vc_home_that_names_a_file_is_a_usage_error_in_one_line(
    tmp_path: Path, vc, args: tuple[str, ...]
) -> None:
    not_a_dir = tmp_path / "notes.txt"
    not_a_dir.write_text("a file, not a workspace\n")
    result = vc(*args, env={"VC_HOME": str(not_a_dir), "VC_DATABASE_URL": ""})
    assert result.returncode == 2
    assert result.stderr == (
        f"vc: error: VC_HOME={not_a_dir} is not a directory: it names the workspace "
        "(the directory of workflows/, logs/ and .vc/)\n"
    )
    assert result.stdout == "" and not_a_dir.read_text() == "a file, not a workspace\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("flow", "session", "list", "--limit", "abc"), "'abc' is not a whole number"),
        (("flow", "session", "list", "--limit", "-1"), "-1 must be at least 1"),
        (("flow", "tui", "--serve", "--port", "70000"), "70000 must be from 0 to 65535"),
    ],
)
def test_a_number_option_refused_is_said_in_plain_words(
    workspace: Path, vc, args: tuple[str, ...], said: str
) -> None:
    result = vc(*args)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("vc: error: invalid value for '--") and said in line


@pytest.mark.parametrize(
    ("closed", "args", "code"),
    [
        (">&-", "flow tui", 2),
        ("2>&-", "flow tui", 2),
        (">&-", "flow session list", 0),
        ("2>&-", "flow run nosuch", 1),
    ],
)
def test_a_closed_stdout_or_stderr_keeps_the_commands_exit_code(
    workspace: Path, closed: str, args: str, code: int
) -> None:
    """`vc … >&-`: what would be written goes nowhere; no internal error takes its place."""
    script = f'exec "$PY" -m app.main {args} {closed}'
    result = subprocess.run(
        ["sh", "-c", script],
        capture_output=True,
        text=True,
        env={**os.environ, "PY": sys.executable, "NO_COLOR": "1"},
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert result.returncode == code, result.stderr + result.stdout
    assert "internal error" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (("flow", "session", "create", "hello", "--param"), "vc flow session create hello"),
        (("flow", "run", "hello", "--max-parallel"), "vc flow run hello"),
        (("flow", "session", "list", "--limit"), "vc flow session list"),
    ],
    ids=["param", "max-parallel", "limit"],
)
def test_an_option_without_its_value_says_where_the_help_is_as_every_usage_error(
    workspace: Path, args: tuple[str, ...], command: str
) -> None:
    before = snapshot(workspace)
    result = run(*args)
    assert result.code == 2
    line = one_error_line(result)
    assert "requires an argument" in line and line.endswith(f"(see '{command} --help')")
    assert snapshot(workspace) == before
