"""A wrong database URL or an unreachable server: one line on stderr naming what could not
be reached, exit code 1, no traceback, no hang (the README's Commands, docs/ARCHITECTURE.md §9)."""

from __future__ import annotations

import time

import pytest

from tests.conftest import run_vc

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"

COMMANDS = [
    ("flow", "session", "list"),
    ("flow", "session", "show", "abcd1234"),
    ("flow", "run", "hello", "--queue"),
    ("flow", "worker"),
    ("db", "upgrade"),
    ("db", "current"),
]


def _one_line_error(result, code: int = 1) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == code, (result.stdout, result.stderr)
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("vc: error: ")
    return lines[0]


@pytest.mark.parametrize("args", COMMANDS, ids=lambda a: " ".join(a))
def test_unreachable_server_is_one_line_naming_host_and_port(workspace, args):
    started = time.monotonic()
    result = run_vc(*args, env={"VC_DATABASE_URL": UNREACHABLE}, timeout=30)
    elapsed = time.monotonic() - started
    line = _one_line_error(result)
    assert "127.0.0.1" in line and "port 1" in line
    assert elapsed < 10, f"took {elapsed:.1f}s"


@pytest.mark.parametrize(
    ("url", "expected", "code"),
    [
        # a URL that can never name a store vc uses: a usage error naming the variable
        ("not a url", "VC_DATABASE_URL must be a SQLite or PostgreSQL URL", 2),
        ("host=h user=u password=s3cret", "got a value that is not a URL", 2),
        ("nosuchdriver://user@host/db", "got a URL of scheme 'nosuchdriver'", 2),
        ("mysql://user:p@s3cret@host/db", "got a URL of scheme 'mysql'", 2),
        ("postgresql+psycopg://u:s3cret@h:notaport/db", "port that is not a number", 2),
        ("postgresql+psycopg://u:s3cret@h:99999/db", "port that is not a number", 2),
        ("postgresql+psycopg://u:s3cret@h:x@h/db", "write a '@' in them", 2),
        # a '@' in the password, not written %40: the rest would be taken for the host
        ("postgresql+psycopg://u:TOP@s3cret@127.0.0.1:5432/test", "write a '@' in them", 2),
        ("postgresql+psycopg://u:p@s3cret/word@127.0.0.1/test", "write a '@' in them", 2),
        # a password may hold # / ? (SQLAlchemy reads it up to the first @): not a port
        ("postgresql+psycopg://u:s3cr#t/x?@127.0.0.1:1/test", "127.0.0.1", 1),
        # a driver vc does not install (SQLAlchemy would fail to import it)
        ("postgresql+nosuchdriver://user:s3cret@host/db", "scheme 'postgresql+nosuchdriver'", 2),
        ("postgresql+asyncpg://user:s3cret@host/db", "scheme 'postgresql+asyncpg'", 2),
        # options SQLAlchemy would drop with a warning, or turn into a new file's name
        ("sqlite:///flow.db?mode=ro", "a SQLite URL takes no options", 2),
        # a store out of reach: the store's refusal
        ("postgresql+psycopg://postgres@nosuchhost.invalid:5432/test", "nosuchhost.invalid", 1),
        ("postgresql+psycopg://postgres:s3cret@127.0.0.1:1/test", "127.0.0.1", 1),
    ],
)
def test_wrong_url_is_one_line(workspace, url, expected, code):
    result = run_vc("flow", "session", "list", env={"VC_DATABASE_URL": url}, timeout=30)
    line = _one_line_error(result, code)
    assert expected in line
    assert "s3cret" not in line  # passwords are never echoed


@pytest.mark.parametrize(
    "url",
    ["sqlite://", "sqlite:///", "sqlite:///:memory:", "sqlite:///file:s?mode=memory&uri=true"],
)
@pytest.mark.parametrize(
    "args",
    [("flow", "run", "etl", "--queue"), ("flow", "session", "create", "etl"), ("flow", "worker")],
)
def test_an_in_memory_sqlite_url_is_refused_before_anything_is_made(workspace, url, args):
    """Each process would have its own database: a session made would vanish at once."""
    result = run_vc(*args, env={"VC_DATABASE_URL": url}, timeout=30)
    line = _one_line_error(result, 2)
    assert "in-memory SQLite database" in line and "sqlite:///PATH" in line


@pytest.mark.parametrize("args", [("db", "upgrade"), ("db", "current")], ids=" ".join)
@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("VC_DATABASE_URL", "postgresql+psycopg://u:s3cret@h:notaport/db", "not a number"),
        ("VC_DATABASE_URL", "mysql://user:s3cret@host/db", "scheme 'mysql'"),
        ("VC_HOSTNAME", "a b", "VC_HOSTNAME must be a host name"),
        ("VC_STALE_AFTER", "abc", "VC_STALE_AFTER must be a number of seconds"),
    ],
)
def test_the_db_commands_check_the_settings_as_every_command_does(
    workspace, args, variable, value, expected
):
    result = run_vc(*args, env={variable: value}, timeout=30)
    line = _one_line_error(result, 2)
    assert expected in line and "s3cret" not in line
