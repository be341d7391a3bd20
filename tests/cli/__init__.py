"""CLI tests (package so that helpers and conftest get unique module names)."""
