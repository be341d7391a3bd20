"""Fixtures of the reliability harness (the shared ones live in tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from .harness import PG_URL, pg_schema_url


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A PostgreSQL schema of its own; skipped unless VC_TEST_DATABASE_URL is set."""
    if not PG_URL:
        pytest.skip("PostgreSQL: set VC_TEST_DATABASE_URL to run it")
    with pg_schema_url() as url:
        yield url
