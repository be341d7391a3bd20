"""Shared fixtures: a workspace with sample workflows, a store (SQLite in a temp dir, and
PostgreSQL in a schema of its own when VC_TEST_DATABASE_URL is set), managers, and a way to
run the real `vc` command."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.receivers import Receiver, Silent

PG_URL = os.environ.get("VC_TEST_DATABASE_URL")
ROOT = Path(__file__).resolve().parent.parent

SAMPLE_WORKFLOWS = {
    "hello.yaml": """
        name: Hello
        description: three quick stages
        stages:
          - name: greet
            run: echo hello from $VC_STAGE attempt $VC_ATTEMPT
          - name: count
            run: for i in 1 2 3 4; do echo "::progress $i/4"; echo "step $i"; done
          - name: done
            run: echo bye >&2
    """,
    "gate.yaml": """
        name: Release with approval
        stages:
          - name: build
            run: echo built
          - name: approve
            checklist: [changelog reviewed]
          - name: deploy
            run: echo deployed
    """,
    "broken.yaml": """
        name: Fails
        stages:
          - name: ok
            run: echo fine
          - name: bad
            run: echo about to fail; exit 3
          - name: never
            run: echo never
    """,
    "slow.yaml": """
        name: Slow
        stages:
          - name: spin
            run: |
              echo started
              end=$((SECONDS+60)); while [ $SECONDS -lt $end ]; do :; done
          - name: after
            run: echo after
    """,
}


def write_workflows(directory: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in SAMPLE_WORKFLOWS.items():
        (directory / name).write_text(textwrap.dedent(text).lstrip())


def _pg_schema_url(base: str) -> tuple[str, str]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}", schema


def _pg_admin(sql: str) -> None:
    import sqlalchemy

    assert PG_URL is not None
    engine = sqlalchemy.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(sql)
    finally:
        engine.dispose()


@contextmanager
def pg_schema() -> Iterator[str]:
    """A store URL on a PostgreSQL schema of its own (VC_TEST_DATABASE_URL), dropped on the
    way out: for fixtures that choose their store by other means than ``db_url``."""
    assert PG_URL, "VC_TEST_DATABASE_URL is not set"
    url, schema = _pg_schema_url(PG_URL)
    _pg_admin(f'CREATE SCHEMA "{schema}"')
    try:
        yield url
    finally:
        _pg_admin(f'DROP SCHEMA "{schema}" CASCADE')


@contextmanager
def pg_role(db_url: str, *, connection_limit: int | None = None) -> Iterator[tuple[str, str]]:
    """A role of its own with the rights a runner needs on the PostgreSQL schema of
    ``db_url`` (a ``pg_schema`` URL): yields (role, the URL as that role). Its connections
    are ended and it is dropped on the way out."""
    from sqlalchemy.engine import make_url

    schema = db_url.rsplit("search_path%3D", 1)[1]
    role = f"{schema}_{uuid.uuid4().hex[:6]}"
    limit = f" CONNECTION LIMIT {connection_limit}" if connection_limit is not None else ""
    _pg_admin(f'CREATE ROLE "{role}" LOGIN{limit}')
    try:
        for grant in (
            f'GRANT USAGE ON SCHEMA "{schema}" TO "{role}"',
            f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{role}"',
            f'GRANT ALL ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}"',
        ):
            _pg_admin(grant)
        as_role = make_url(db_url).set(username=role, password=None)
        yield role, as_role.render_as_string(hide_password=False)
    finally:
        _pg_admin(
            f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = '{role}'"
        )
        _pg_admin(f'DROP OWNED BY "{role}"')
        _pg_admin(f'DROP ROLE "{role}"')


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The store URL: every store test runs on SQLite and, when configured, PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ws' / '.vc' / 'flow.db'}"
        return
    if not PG_URL:
        pytest.skip("PostgreSQL suite: set VC_TEST_DATABASE_URL to run it")
    with pg_schema() as url:
        yield url


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ws' / '.vc' / 'flow.db'}"


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A workspace with the sample workflows, made the current one through VC_HOME."""
    ws = tmp_path / "ws"
    ws.mkdir(exist_ok=True)
    write_workflows(ws / "workflows")
    for var in ("VC_DATABASE_URL", "VC_LOG_DIR", "VC_WORKFLOWS_DIR", "NO_COLOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("VC_HOME", str(ws))
    monkeypatch.chdir(ws)
    return ws


@pytest.fixture
def store_workspace(workspace: Path, db_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The workspace on the parametrized store URL (SQLite file or a PostgreSQL schema)."""
    monkeypatch.setenv("VC_DATABASE_URL", db_url)
    return workspace


@pytest.fixture
def engine(db_url: str):  # type: ignore[no-untyped-def]
    from store import init_db

    eng = init_db(db_url)
    yield eng
    eng.dispose()


@pytest.fixture
def db(engine):  # type: ignore[no-untyped-def]
    from store import get_session_factory

    with get_session_factory(engine)() as session:
        yield session


@pytest.fixture
def managers(db):  # type: ignore[no-untyped-def]
    from store import FlowSessionManager, StageManager

    return FlowSessionManager(db), StageManager(db)


@pytest.fixture
def hello_definition():  # type: ignore[no-untyped-def]
    from store.workflows import load_workflow_text

    return load_workflow_text(textwrap.dedent(SAMPLE_WORKFLOWS["hello.yaml"]), default_id="hello")


def vc_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.setdefault("NO_COLOR", "1")
    env.update(extra or {})
    return env


def run_vc(
    *args: str, env: dict[str, str] | None = None, input: str | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the real `vc` console command in a subprocess, with the test's environment."""
    return subprocess.run(
        [sys.executable, "-m", "app.main", *args],
        capture_output=True,
        text=True,
        env=vc_env(env),
        input=input,
        timeout=timeout,
        stdin=None if input is not None else subprocess.DEVNULL,
    )


@pytest.fixture
def vc():  # type: ignore[no-untyped-def]
    return run_vc


#: The `vc` console script of this environment, as a user starts it (``run_vc`` runs
#: ``python -m app.main`` instead, which resolves our packages through the working directory).
VC_SCRIPT = Path(sys.executable).with_name("vc")

HOSTILE_PACKAGE = """\
import pathlib
pathlib.Path({marker!r}).write_text("imported from the workspace")
raise SystemExit(97)
"""


@pytest.fixture
def hostile_packages(workspace: Path) -> Path:
    """The workspace holds packages named like ours (`app`, `store`, `widgets`; a web
    project has an `app/`), each of which leaves a ``hijacked-NAME`` file in the workspace
    and exits 97 when imported. Returns the workspace."""
    for name in ("app", "store", "widgets"):
        package = workspace / name
        package.mkdir()
        marker = str(workspace / f"hijacked-{name}")
        (package / "__init__.py").write_text(HOSTILE_PACKAGE.format(marker=marker))
    return workspace


def hijacked(workspace: Path) -> list[str]:
    """The workspace packages that were imported (see ``hostile_packages``)."""
    return sorted(p.name for p in workspace.glob("hijacked-*"))


def run_vc_script(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """The `vc` console script, started from ``cwd`` as a user in that directory would."""
    assert VC_SCRIPT.exists(), f"{VC_SCRIPT} is missing: install the project (pip install -e .)"
    return subprocess.run(
        [str(VC_SCRIPT), *args],
        capture_output=True,
        text=True,
        env=vc_env(env),
        cwd=cwd,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def readme_sh_block(after: str) -> str:
    """The first ```sh block of README.md after the text ``after``, as a reader copies it."""
    import re

    readme = (ROOT / "README.md").read_text()
    found = re.search(r"```sh\n(.*?)```", readme[readme.index(after) :], re.S)
    assert found, f"README.md has no sh block after {after!r}"
    return found.group(1)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that Apprise's ``json://`` posts to; it keeps every
    message (see tests/receivers.py)."""
    server = Receiver()
    yield server
    server.close()


@pytest.fixture
def refusing_receiver() -> Iterator[Receiver]:
    """An HTTP server on 127.0.0.1 that answers every notification with 500."""
    server = Receiver(status=500)
    yield server
    server.close()


@pytest.fixture
def silent_target() -> Iterator[Silent]:
    """A socket on 127.0.0.1 that accepts connections and never answers."""
    target = Silent()
    yield target
    target.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_disk("8m")``: a new directory on a tmpfs of that size of its own, a real
    file system that fills up (ENOSPC, SQLite's "database or disk is full"); unmounted
    afterwards. Mounting needs root (CI runs as root): elsewhere the test is skipped,
    saying why."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        if os.geteuid() != 0:
            pytest.skip("a full disk is made with a small tmpfs, which needs root to mount")
        point = tmp_path / f"disk{len(mounted)}"
        point.mkdir()
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(point)],
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs for a full disk: {done.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in reversed(mounted):
        subprocess.run(["umount", "-l", str(point)], capture_output=True)
