"""Fixtures of the dashboard tests: a real store in the `workspace` fixture's workspace,
opened the way `vc flow tui` opens it, and an app factory over it.

The store is SQLite; the live-update and key tests (:data:`ON_POSTGRESQL`) run on
PostgreSQL too, in a schema of their own per test, when VC_TEST_DATABASE_URL is set: there
the dashboard learns of other processes' changes through the server, and its operations
and the runners it starts write through it. The snapshots (a frozen store: only the
drawing is checked), the bad-input tests (the text and sizes are the subject) and the
end-to-end terminal tests stay on SQLite only."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

#: Test modules whose tests run on both stores (``tui_store`` parametrized) ...
ON_POSTGRESQL = {"test_tui_live", "test_tui_keys", "test_tui_alerts", "test_tui_matrix"}
#: ... except these, SQLite only by nature.
SQLITE_ONLY = {
    # holds SQLite's write lock with sqlite3 itself
    "test_event_loop_stays_free_while_the_store_is_locked",
    "test_an_operation_that_fails_on_a_locked_store_says_so_in_one_line",
    # the store failure is injected above the database: nothing of the store is exercised
    "test_store_errors_are_one_notification_and_the_app_recovers",
    # no session, no store operation: about the screen and stderr only
    "test_keys_without_a_session_say_so",
    "test_lines_printed_on_stderr_become_notifications",
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "tui_store" not in metafunc.fixturenames:
        return
    module = metafunc.module.__name__.rpartition(".")[2]
    if module in ON_POSTGRESQL and metafunc.function.__name__ not in SQLITE_ONLY:
        metafunc.parametrize("tui_store", ["sqlite", "postgresql"], indirect=True)


@pytest.fixture
def tui_store(
    request: pytest.FixtureRequest, workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Which store `ctx` opens: ``sqlite`` (the workspace's default store), or
    ``postgresql`` (a schema of the test's own, named by VC_DATABASE_URL for the dashboard
    and every `vc` or runner the test starts)."""
    kind = getattr(request, "param", "sqlite")
    if kind == "sqlite":
        yield kind
        return
    from tests.conftest import PG_URL, pg_schema

    if not PG_URL:
        pytest.skip("PostgreSQL suite: set VC_TEST_DATABASE_URL to run it")
    with pg_schema() as url:
        monkeypatch.setenv("VC_DATABASE_URL", url)
        yield kind


@pytest.fixture
def ctx(workspace: Path, tui_store: str) -> Iterator[Any]:
    """The Context `vc flow tui` runs on (settings, engine, factory, logging), on the
    workspace's store (see ``tui_store``). Whatever a test left running is aborted
    afterwards."""
    from app.context import open_context
    from store.changes import enable_logging

    # No VC_HOSTNAME here: this process caches its host name on first use, so setting it
    # per test would give runners started by the test another host than the test's own
    # (a dead runner pid then looks alive "elsewhere"). Snapshot rows carry fixed hosts.
    with open_context() as context:
        try:
            yield context
        finally:
            from tests.tui.tui_testkit import stop_everything

            stop_everything(context)
    enable_logging(False)  # open_context switched operation logging on for this process


@pytest.fixture
def make_app(ctx: Any) -> Callable[..., Any]:
    """``make_app(**kwargs)``: a FlowApp over ``ctx`` polling every 0.1 s."""
    from app.tui.app import FlowApp

    def make(**kwargs: Any) -> Any:
        kwargs.setdefault("poll_interval", 0.1)
        return FlowApp(ctx, **kwargs)

    return make


@pytest.fixture
def store_url(ctx: Any) -> str:
    """The store's URL, for writers on engines of their own."""
    return str(ctx.settings.database_url)


@pytest.fixture
def frozen_tz(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """UTC local time, so the log pane's HH:MM:SS is the same on every machine."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()
