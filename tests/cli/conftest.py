"""Fixtures of the CLI tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from .helpers import THUMBS, Result


@pytest.fixture
def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Result]:
    """`vc ARGS…` in this process (`app.main.main`), for checks where a subprocess adds
    nothing but time: same code path, stdout not a terminal, stdin not a terminal."""
    from app.main import main

    monkeypatch.delenv("COLUMNS", raising=False)

    def call(*args: str, env: dict[str, str | None] | None = None) -> Result:
        with monkeypatch.context() as m:
            for key, value in (env or {}).items():
                if value is None:
                    m.delenv(key, raising=False)
                else:
                    m.setenv(key, value)
            capsys.readouterr()
            code = main(list(args))
            captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


@pytest.fixture
def thumbs(workspace: Path) -> str:
    """The id of a workflow whose stages run in parallel: ``fetch``, then a 2 x 2 matrix
    stage ``resize`` beside a manual gate ``review``, then ``publish`` after both."""
    (workspace / "workflows" / "thumbs.yaml").write_text(THUMBS)
    return "thumbs"
