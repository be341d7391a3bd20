"""The CLI's command tree built on demand (app.cli.tree) is the tree Typer builds: the same
commands in the same order, the same help, the same parameters; and a command line builds
only its own branch."""

from __future__ import annotations

from typing import Any

import typer.main

from app.cli.tree import LazyCommands, lazy_command
from app.main import app


def _walk(command: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    found = {path: command}
    for name in getattr(command, "commands", {}):
        found.update(_walk(command.commands[name], (*path, name)))
    return found


def _describe(command: Any, path: tuple[str, ...]) -> tuple[Any, ...]:
    ctx = command.make_context(" ".join(("vc", *path)), ["--help"], resilient_parsing=True)
    return (
        type(command).__name__,
        command.get_help(ctx),
        [(p.name, p.opts, p.required, p.default, p.multiple) for p in command.params],
        list(getattr(command, "commands", {})),
    )


def test_every_command_has_the_help_and_parameters_typer_gives_it() -> None:
    eager = _walk(typer.main.get_command(app))
    lazy = _walk(lazy_command(app))
    assert list(lazy) == list(eager)
    assert len(eager) > 20
    for path, command in eager.items():
        assert _describe(lazy[path], path) == _describe(command, path), path


def test_a_command_line_builds_only_its_branch() -> None:
    root = lazy_command(app)
    commands = root.commands
    assert isinstance(commands, LazyCommands)
    root.main(["flow", "session", "pause", "--help"], prog_name="vc", standalone_mode=False)
    assert list(commands._built) == ["flow"]
    flow = commands._built["flow"]
    assert list(flow.commands._built) == ["session"]
    assert list(flow.commands._built["session"].commands._built) == ["pause"]


def test_version_prints_the_installed_version_and_exits_0() -> None:
    from importlib.metadata import version

    from tests.conftest import run_vc

    result = run_vc("--version")
    assert (result.returncode, result.stdout, result.stderr) == (
        0,
        f"vc {version('vc-flow')}\n",
        "",
    )
