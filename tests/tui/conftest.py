"""Fixtures of the dashboard tests: a real store in the `workspace` fixture's workspace,
opened the way `vc flow tui` opens it, and an app factory over it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def ctx(workspace: Path) -> Iterator[Any]:
    """The Context `vc flow tui` runs on (settings, engine, factory, logging), on the
    workspace's SQLite store. Whatever a test left running is aborted afterwards."""
    from app.cli.common import open_store
    from store.managers import enable_logging

    # No VC_HOSTNAME here: this process caches its host name on first use, so setting it
    # per test would give runners started by the test another host than the test's own
    # (a dead runner pid then looks alive "elsewhere"). Snapshot rows carry fixed hosts.
    with open_store() as context:
        try:
            yield context
        finally:
            from tests.tui.tui_testkit import stop_everything

            stop_everything(context)
    enable_logging(False)  # open_store switched operation logging on for this process


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
