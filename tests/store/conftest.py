"""Fixtures of the store's tests: the driver path over the test's store, and the lines the
managers log."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from store.direct import DirectStore, open_direct


@pytest.fixture
def logged_lines() -> Iterator[list[tuple[str, str, str | None, str]]]:
    """What the managers log through loguru (level, category, stage, text), while the
    test runs: the lines the CLI's full path writes."""
    from loguru import logger

    from store.changes import enable_logging

    lines: list[tuple[str, str, str | None, str]] = []

    def sink(message: Any) -> None:
        record = message.record
        extra = record["extra"]
        if "category" in extra:
            lines.append(
                (record["level"].name, extra["category"], extra["stage"], record["message"])
            )

    handler = logger.add(sink, level="DEBUG", format="{message}")
    enable_logging(True)
    try:
        yield lines
    finally:
        enable_logging(False)
        logger.remove(handler)


@pytest.fixture
def direct(db_url: str, engine: Any) -> Iterator[DirectStore]:
    store = open_direct(db_url)
    assert store is not None, "the driver path must open a current store"
    yield store
    store.close()
