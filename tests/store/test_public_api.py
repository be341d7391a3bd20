"""The store's public names: written out for readers and type checkers, loaded lazily."""

from __future__ import annotations

import subprocess
import sys

import store


def test_all_lists_exactly_the_lazily_loaded_names() -> None:
    assert store.__all__ == sorted(store._EXPORTS)


def test_every_public_name_resolves_to_its_module() -> None:
    for name, module in store._EXPORTS.items():
        assert getattr(store, name).__module__.startswith("store"), (name, module)


def test_importing_the_store_loads_no_orm_until_a_name_is_used() -> None:
    code = "import sys, store; print('sqlalchemy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
