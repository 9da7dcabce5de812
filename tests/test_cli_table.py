"""The command tables (agent/cli_table.py and its copy in ledger.verify) and the four programs'."""

from __future__ import annotations

import argparse
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

import agent.cli
import ledger.authority_cli
import ledger.cli
import ledger.verify.cli
from agent import cli_table
from agent.cli_table import Command, OneOf, arg

REPO = Path(__file__).resolve().parent.parent
TABLES = {
    "custody-agent": agent.cli.COMMANDS,
    "custody-ledger": ledger.cli.COMMANDS,
    "custody-registry": ledger.authority_cli.COMMANDS,
    "custody-verify": ledger.verify.cli.commands(),
}


def test_the_two_copies_are_the_same() -> None:
    """agent and ledger may not import each other, so each has the module; one text."""
    agent_copy = (REPO / "agent" / "cli_table.py").read_text(encoding="utf-8")
    ledger_copy = (REPO / "ledger" / "verify" / "cli_table.py").read_text(encoding="utf-8")
    assert agent_copy == ledger_copy


def _commands(command: Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Command]]:
    yield " ".join(path), command
    for child in command.commands:
        yield from _commands(child, (*path, child.name))


@pytest.mark.parametrize("prog", sorted(TABLES))
def test_every_command_runs_something_and_says_what(prog: str) -> None:
    for path, command in _commands(TABLES[prog]):
        assert command.help.strip(), f"{prog} {path} has no help"
        if path and not command.commands:
            assert command.handler is not None, f"{prog} {path} runs nothing"
        for item in command.args:
            # Each package has its own copy of the classes: OneOf is the one without flags.
            for a in (item,) if hasattr(item, "flags") else item.args:
                assert a.options.get("help"), f"{prog} {path} {a.flags} has no help"
        names = [c.name for c in command.commands]
        assert len(names) == len(set(names)), f"{prog} {path}: a command twice"


def _sample() -> Command:
    def run(args: argparse.Namespace) -> int:
        return 0

    return Command(
        "prog", "a program",
        shared=(arg("--dir", help="where"),),
        commands=(
            Command("one", "first", run, args=(
                arg("x", type=int, help="a number"),
                OneOf((arg("--a", action="store_true", help="a"),
                       arg("--b", action="store_true", help="b"))),
            )),
            Command("group", "a group", metavar="KIND", commands=(
                Command("two", "second", run, description="The second command."),
            )),
        ),
    )  # fmt: skip


def test_the_builder_follows_the_table() -> None:
    parser = cli_table.build_parser(_sample())
    args = parser.parse_args(["--dir", "d", "one", "3", "--a"])
    assert (args.dir, args.command, args.x, args.a, args.b) == ("d", "one", 3, True, False)
    assert args.func.__name__ == "run"
    # A shared argument after the command wins; not given there, the one before stays.
    assert parser.parse_args(["--dir", "d", "group", "two", "--dir", "e"]).dir == "e"
    args = parser.parse_args(["--dir", "d", "group", "two"])
    assert (args.dir, args.command, args.group_command) == ("d", "group", "two")
    with pytest.raises(SystemExit):
        parser.parse_args(["one", "3", "--a", "--b"])  # one of them only
    with pytest.raises(SystemExit):
        parser.parse_args(["group"])  # a group needs its command
    assert (
        "{two}" not in parser.format_help() and "KIND" in _subparser(parser, "group").format_usage()
    )
    assert _subparser(_subparser(parser, "group"), "two").description == "The second command."


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found: argparse.ArgumentParser = action.choices[name]
            return found
    raise AssertionError(name)


# --- README.md's command tables against the programs' parsers -------------------------------
# A table whose header is "| `PROG` command | what it does |" lists PROG's commands, one or more
# per row as code spans in the first cell ("`keys show` / `keys rotate`"); "a \| b" there lists
# sibling commands ("log checkpoint \| prove-inclusion INDEX"). Words after a command are its
# arguments; options before one (custody-ledger --db URL run) are skipped.
Tree = dict[str, "Tree"]
HEADER = re.compile(r"^\| `(custody-[a-z]+)` command \| what it does \|$")


def _tree(parser: argparse.ArgumentParser) -> Tree:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {name: _tree(sub) for name, sub in action.choices.items()}
    return {}


def _parsed_trees() -> dict[str, tuple[Tree, bool]]:
    """Each program's commands as its parser has them, and whether it runs without one."""
    verify = {
        "trust": _tree(ledger.verify.cli.build_trust_parser()),
        "completion": _tree(ledger.verify.cli.build_completion_parser()),
    }
    assert _tree(ledger.verify.cli.build_parser()) == {}  # custody-verify BUNDLE
    return {
        "custody-agent": (_tree(agent.cli.build_parser()), False),
        "custody-ledger": (_tree(ledger.cli.build_parser()), False),
        "custody-registry": (_tree(ledger.authority_cli.build_parser()), False),
        "custody-verify": (verify, True),
    }


def _leaves(tree: Tree, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if not tree:
        return {path}
    return set().union(*(_leaves(sub, (*path, name)) for name, sub in tree.items()))


def _alternatives(span: str) -> list[list[str]]:
    """Split "a x \\| b [c \\| d]" at the top-level " \\| " into word lists."""
    out: list[list[str]] = [[]]
    depth = 0
    for word in span.split():
        if word == "\\|" and depth == 0:
            out.append([])
            continue
        depth += word.count("[") - word.count("]")
        out[-1].append(word)
    return out


def _resolve(tree: Tree, runnable: bool, words: list[str], where: str) -> tuple[str, ...]:
    path: tuple[str, ...] = ()
    node, i = tree, 0
    while node and i < len(words):
        word = words[i]
        if word in node:
            path, node, i = (*path, word), node[word], i + 1
        elif word.startswith("-") and not path:
            skip_value = i + 1 < len(words) and not words[i + 1].startswith("-")
            i += 2 if skip_value and words[i + 1] not in node else 1
        elif not path and runnable:
            return ()
        else:
            raise AssertionError(f"{where}: {word!r} is not a command of {' '.join(path) or 'it'}")
    if node and not (runnable and not path):
        raise AssertionError(f"{where}: {' '.join(path)} is a group, not one command")
    return path


def _readme_commands() -> dict[str, set[tuple[str, ...]]]:
    trees = _parsed_trees()
    found: dict[str, set[tuple[str, ...]]] = {prog: set() for prog in trees}
    prog = None
    for n, line in enumerate(
        (REPO / "README.md").read_text(encoding="utf-8").splitlines(), start=1
    ):
        header = HEADER.match(line)
        if header:
            prog = header.group(1)
            continue
        if prog is None or line.startswith("|---"):
            continue
        if not line.startswith("|"):
            prog = None
            continue
        tree, runnable = trees[prog]
        first_cell = re.split(r"(?<!\\)\|", line)[1]
        for span in re.findall(r"`([^`]+)`", first_cell):
            words = span.split()
            if words[0] == prog:
                span = span.split(None, 1)[1]
            alternatives = _alternatives(span)
            where = f"README.md:{n}: `{span}`"
            first = _resolve(tree, runnable, alternatives[0], where)
            found[prog].add(first)
            parent = tree
            for name in first[:-1]:
                parent = parent[name]
            for alternative in alternatives[1:]:
                found[prog].add((*first[:-1], *_resolve(parent, False, alternative, where)))
    return found


@pytest.mark.parametrize("prog", sorted(TABLES))
def test_readme_lists_exactly_the_commands_each_program_has(prog: str) -> None:
    tree, runnable = _parsed_trees()[prog]
    actual = _leaves(tree) | ({()} if runnable else set())
    listed = _readme_commands()[prog]
    assert sorted(actual - listed) == [], f"{prog} commands missing from README.md's tables"
    assert sorted(listed - actual) == [], f"README.md lists {prog} commands it does not have"


def test_the_readme_reader_refuses_what_is_not_there() -> None:
    tree, _ = _parsed_trees()["custody-ledger"]
    assert _resolve(tree, False, ["--db", "URL", "run", "--broker", "X"], "t") == ("run",)
    with pytest.raises(AssertionError, match="not a command"):
        _resolve(tree, False, ["frobnicate"], "t")
    with pytest.raises(AssertionError, match="not a command"):
        _resolve(tree, False, ["log", "prove-everything"], "t")
    with pytest.raises(AssertionError, match="a group"):
        _resolve(tree, False, ["pki"], "t")
    assert _alternatives("sim a\\|b [--pty \\| --listen X] \\| two") == [
        ["sim", "a\\|b", "[--pty", "\\|", "--listen", "X]"],
        ["two"],
    ]
