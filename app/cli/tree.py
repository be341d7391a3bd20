"""The CLI's command tree, built as far as a command line needs it.

Typer turns every command of the tree into a Click command before it looks at the
arguments: it reads each function's signature and resolves its annotations, some 8 ms for
vc's forty commands, paid by `vc --help` and by every `pause` alike. :func:`lazy_command`
builds the same Click objects with Typer's own functions, but each group's commands only
when Click asks for one: `vc flow session pause ID` builds three groups and one command,
`vc --help` the top group and the names and help of its two children.

A group is built by Typer from a copy of its Typer instance without children (so its own
options and callback are Typer's), then given a :class:`LazyCommands` in their place
(Click's and Typer's groups read ``commands`` as a mapping). A group that merges its
children's commands into its own (``add_typer`` without a name) is built whole, by Typer.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, MutableMapping
from typing import Any

import typer
from typer import main as typer_main
from typer.models import TyperInfo

Command = Any  # a Click command (typer's vendored Click)


class LazyCommands(MutableMapping[str, Command]):
    """A group's commands by name, in the order they were declared, each built on its
    first lookup."""

    def __init__(self) -> None:
        self._built: dict[str, Command] = {}
        self._builders: dict[str, Callable[[], Command]] = {}

    def add(self, name: str, builder: Callable[[], Command]) -> None:
        self._builders[name] = builder

    def __getitem__(self, name: str) -> Command:
        built = self._built.get(name)
        if built is None:
            built = self._built[name] = self._builders[name]()
        return built

    def __setitem__(self, name: str, command: Command) -> None:
        self._builders[name] = lambda: command
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._builders[name]
        self._built.pop(name, None)

    def __iter__(self) -> Iterator[str]:
        return iter(self._builders)

    def __len__(self) -> int:
        return len(self._builders)


def lazy_command(app: typer.Typer) -> Command:
    """The Click command of ``app``, as ``typer.main.get_command`` makes it, built lazily
    (the module doc)."""
    if app._add_completion or not app.registered_groups:
        return typer_main.get_command(app)
    return _group(
        TyperInfo(app),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
        suggest_commands=app.suggest_commands,
    )


def _group(info: Any, **options: Any) -> Command:
    instance = info.typer_instance
    if any(not isinstance(sub.name, str) for sub in instance.registered_groups):
        return typer_main.get_group_from_info(info, **options)
    bare = copy.copy(instance)
    bare.registered_commands = []
    bare.registered_groups = []
    bare_info = copy.copy(info)
    bare_info.typer_instance = bare
    group = typer_main.get_group_from_info(bare_info, **options)
    commands = LazyCommands()
    command_options = {
        "pretty_exceptions_short": options["pretty_exceptions_short"],
        "rich_markup_mode": options["rich_markup_mode"],
    }
    for command_info in instance.registered_commands:
        name = command_info.name or typer_main.get_command_name(command_info.callback.__name__)
        commands.add(
            name, _builder(typer_main.get_command_from_info, command_info, command_options)
        )
    for sub in instance.registered_groups:
        commands.add(sub.name, _builder(_group, sub, options))
    group.commands = commands
    return group


def _builder(
    build: Callable[..., Command], info: Any, options: dict[str, Any]
) -> Callable[[], Command]:
    return lambda: build(info, **options)
