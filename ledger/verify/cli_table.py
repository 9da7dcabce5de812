"""Command tables: a command line declared as data, and the loop that turns it into argparse.

A program's commands are one tuple of ``Command`` values: name, help, the handler that runs
it, its arguments (``arg(...)`` takes argparse's ``add_argument`` parameters as they are) and
its subcommands. ``build_parser`` walks that tree once, so each command's arguments sit next
to its handler's name and its help is written once, for ``--help`` and for the tests that
compare the tables with README.md.

The agent and the ledger never import each other and ``custody`` stays free of argparse
(ARCHITECTURE.md "Layout"), so this module exists twice, byte for byte: ``agent/cli_table.py``
and ``ledger/verify/cli_table.py`` (the verifier, which runs with only ``custody`` and
``ledger.verify``, uses it too). tests/test_cli_table.py keeps the copies equal.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = ["Arg", "Command", "Handler", "OneOf", "arg", "build_parser"]

Handler = Callable[[argparse.Namespace], int]


@dataclass(frozen=True, slots=True)
class Arg:
    """One argument: its flags (or positional name) and ``add_argument``'s keyword arguments."""

    flags: tuple[str, ...]
    options: Mapping[str, Any]


def arg(*flags: str, **options: Any) -> Arg:
    """``arg("--json", action="store_true", help="print JSON")``, as ``add_argument`` takes it."""
    return Arg(flags, MappingProxyType(options))


@dataclass(frozen=True, slots=True)
class OneOf:
    """Arguments of which at most one may be given (a mutually exclusive group)."""

    args: tuple[Arg, ...]


@dataclass(frozen=True, slots=True)
class Command:
    """A command, or a group of subcommands (``commands``), or a whole program (the root).

    ``help`` is the one-line text in its parent's list; ``description`` (default: ``help``)
    heads its own ``--help``. ``shared`` arguments are taken by every command below this one
    too, before their own. ``metavar`` names the subcommand in usage lines (default COMMAND
    for a program, ACTION for a group); ``required`` says whether one must be given.
    """

    name: str
    help: str
    handler: Handler | None = None
    args: tuple[Arg | OneOf, ...] = ()
    commands: tuple[Command, ...] = ()
    description: str | None = None
    epilog: str | None = None
    shared: tuple[Arg, ...] = ()
    metavar: str | None = None
    required: bool = True


def build_parser(
    program: Command, *, formatter_class: type[argparse.HelpFormatter] = argparse.HelpFormatter
) -> argparse.ArgumentParser:
    """The argparse parser of ``program`` (its ``name`` is the prog) and all its commands.

    Running a command sets ``func`` to its handler and ``command`` (``<group>_command`` in a
    group) to its name.
    """
    parser = argparse.ArgumentParser(
        prog=program.name,
        description=program.description or program.help,
        epilog=program.epilog,
        formatter_class=formatter_class,
    )
    _fill(parser, program, "command", (), formatter_class)
    return parser


def _fill(
    parser: argparse.ArgumentParser,
    command: Command,
    dest: str,
    parents: Sequence[argparse.ArgumentParser],
    formatter_class: type[argparse.HelpFormatter],
) -> None:
    for item in command.args:
        if isinstance(item, OneOf):
            group = parser.add_mutually_exclusive_group()
            for a in item.args:
                group.add_argument(*a.flags, **a.options)
        else:
            parser.add_argument(*item.flags, **item.options)
    if command.handler is not None:
        parser.set_defaults(func=command.handler)
    if not command.commands:
        return
    if command.shared:
        shared = argparse.ArgumentParser(add_help=False)
        for a in command.shared:
            shared.add_argument(*a.flags, **a.options)
        parents = (*parents, shared)
    sub = parser.add_subparsers(
        dest=dest,
        required=command.required,
        metavar=command.metavar or ("COMMAND" if dest == "command" else "ACTION"),
    )
    for child in command.commands:
        p = sub.add_parser(
            child.name,
            help=child.help,
            description=child.description or child.help,
            epilog=child.epilog,
            parents=parents,
            formatter_class=formatter_class,
        )
        _fill(p, child, f"{child.name}_command", parents, formatter_class)
