"""Subcommands imported when a command line names them: a command pays for its own imports only.

Typer builds the whole command tree (every command's parameters, from every module's functions)
before it parses a command line, so a group that imports its subcommands' modules makes
`nodeplane nodes list` import the agent, the operator and every other command first. A group
made by `lazy_group` knows, for some of its subcommands, only where they are ("module:attribute",
a Typer app or a command function): the module is imported, and the command built as
`add_typer`/`command` would have built it, when a command line, `--help` or shell completion
asks for that name.
"""

import importlib
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from typing import Any

import typer
from typer._click import Command, Context  # the classes typer's groups use (it vendors click)
from typer.core import TyperGroup
from typer.main import get_command_from_info, get_group_from_info
from typer.models import CommandInfo, TyperInfo

# What typer.Typer() defaults to and nodeplane's apps keep; a group does not carry the setting.
PRETTY_EXCEPTIONS_SHORT = True


class _Commands(MutableMapping[str, Command]):
    """A group's subcommands by name, in help order; a lazy one is built on first lookup."""

    def __init__(
        self,
        built: MutableMapping[str, Command],
        table: Mapping[str, str | None],
        build: Callable[[str, str], Command],
    ) -> None:
        self._built = built
        self._table = table
        self._build = build

    def __getitem__(self, name: str) -> Command:
        if name not in self._built:
            target = self._table.get(name)
            if target is None:
                raise KeyError(name)
            self._built[name] = self._build(name, target)
        return self._built[name]

    def __contains__(self, name: object) -> bool:  # without building the command
        return isinstance(name, str) and (name in self._built or self._table.get(name) is not None)

    def __iter__(self) -> Iterator[str]:
        named = [n for n in self._table if n in self._built or self._table[n] is not None]
        yield from named
        yield from (n for n in self._built if n not in named)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __setitem__(self, name: str, command: Command) -> None:
        self._built[name] = command

    def __delitem__(self, name: str) -> None:
        del self._built[name]


def lazy_group(table: Mapping[str, str | None]) -> type[TyperGroup]:
    """A group class (`typer.Typer(cls=...)`) whose subcommands are `table`'s, in its order.

    A value "module:attribute" names a Typer app (a command group) or a command function,
    imported when first asked for; None marks a command registered on the app itself (with
    `@app.command`), listed at that place. Commands registered but not in `table` come last.
    """

    class LazyGroup(TyperGroup):
        def __init__(self, **attrs: Any) -> None:
            super().__init__(**attrs)
            self.commands = _Commands(self.commands, table, self._build_command)

        def list_commands(self, ctx: Context) -> list[str]:
            # Names only: TyperGroup's version reads every command, which would import them all.
            return list(self.commands)

        def _build_command(self, name: str, target: str) -> Command:
            module, _, attribute = target.partition(":")
            found = getattr(importlib.import_module(module), attribute)
            if isinstance(found, typer.Typer):
                return get_group_from_info(
                    TyperInfo(found, name=name),
                    pretty_exceptions_short=PRETTY_EXCEPTIONS_SHORT,
                    suggest_commands=self.suggest_commands,
                    rich_markup_mode=self.rich_markup_mode,
                )
            return get_command_from_info(
                CommandInfo(name=name, callback=found),
                pretty_exceptions_short=PRETTY_EXCEPTIONS_SHORT,
                rich_markup_mode=self.rich_markup_mode,
            )

    return LazyGroup
