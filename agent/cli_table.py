"""Command tables: a command line declared as data, the loop that turns it into argparse, and
the plumbing every program shares (``--version``, global options, shell completion, progress
bars, a quiet exit on a closed pipe).

A program's commands are one tuple of ``Command`` values: name, help, the handler that runs
it, its arguments (``arg(...)`` takes argparse's ``add_argument`` parameters as they are) and
its subcommands. ``build_parser`` walks that tree once, so each command's arguments sit next
to its handler's name and its help is written once, for ``--help`` and for the tests that
compare the tables with README.md.

Global options are ``shared`` ones: a command takes them itself and so does every command
below it, so ``custody-ledger --db URL devices`` and ``custody-ledger devices --db URL`` are
the same command line. ``completion_script`` writes a bash (and, through bashcompinit, zsh)
completion from the same table, so it never lists a command the program does not have.

The agent and the ledger never import each other and ``custody`` stays free of argparse
(ARCHITECTURE.md "Layout"), so this module exists twice, byte for byte: ``agent/cli_table.py``
and ``ledger/verify/cli_table.py`` (the verifier, which runs with only ``custody`` and
``ledger.verify``, uses it too). tests/test_cli_table.py keeps the copies equal.
"""

from __future__ import annotations

import argparse
import os
import re
import select
import signal
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, TextIO

__all__ = [
    "EXIT_BROKEN_PIPE",
    "Arg",
    "Command",
    "Handler",
    "OneOf",
    "Progress",
    "arg",
    "build_parser",
    "completion_command",
    "completion_script",
    "quiet_broken_pipe",
]

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
    heads its own ``--help``. ``shared`` arguments are global options: taken by this command
    and by every command below it, before their own, so they may come before or after the
    command's name (given in both places, the later one wins). ``metavar`` names the
    subcommand in usage lines (default COMMAND for a program, ACTION for a group);
    ``required`` says whether one must be given. ``version`` (a program's) adds ``--version``.
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
    version: str | None = None


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
    if program.version is not None:
        parser.add_argument(
            "--version", action="version", version=f"%(prog)s {program.version}",
            help="print the version and exit",
        )  # fmt: skip
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
    for a in command.shared:
        parser.add_argument(*a.flags, **a.options)
    if command.handler is not None:
        parser.set_defaults(func=command.handler)
    if not command.commands:
        return
    if command.shared:
        # Below the command that declares them, a global option has no default: argparse
        # copies every attribute a subcommand's parser sets over the caller's, so a default
        # there would undo the value given before the subcommand's name.
        shared = argparse.ArgumentParser(add_help=False)
        for a in command.shared:
            shared.add_argument(*a.flags, **{**a.options, "default": argparse.SUPPRESS})
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


# --- shell completion ---------------------------------------------------------------------
_NO_VALUE = frozenset({"store_true", "store_false", "store_const", "count", "help", "version"})


@dataclass(frozen=True, slots=True)
class _Node:
    words: tuple[str, ...]  # subcommands and options offered here
    choices: Mapping[str, tuple[str, ...]]  # option -> its choices
    files: bool  # takes a positional argument (complete file names too)


def _flat(items: Sequence[Arg | OneOf]) -> Iterator[Arg]:
    for item in items:
        yield from item.args if isinstance(item, OneOf) else (item,)


def _nodes(command: Command, path: str, inherited: tuple[Arg, ...], out: dict[str, _Node]) -> None:
    own = (*_flat(command.args), *command.shared, *inherited)
    options = [f for a in own for f in a.flags if f.startswith("-")]
    if not path and command.version is not None:
        options.append("--version")
    positional = [a for a in own if not a.flags[0].startswith("-")]
    offered = [str(c) for a in positional for c in a.options.get("choices", ())]
    out[path] = _Node(
        words=(
            *(c.name for c in command.commands),
            *offered,
            *dict.fromkeys(options),
            "--help",
        ),
        choices={
            f: tuple(str(c) for c in a.options["choices"])
            for a in own
            if "choices" in a.options and a.flags[0].startswith("-")
            for f in a.flags
        },
        files=any("choices" not in a.options for a in positional),
    )
    for child in command.commands:
        _nodes(child, f"{path}/{child.name}", (*inherited, *command.shared), out)


def _value_options(command: Command) -> set[str]:
    found = {
        f
        for a in (*_flat(command.args), *command.shared)
        if a.options.get("action") not in _NO_VALUE and a.options.get("nargs") != 0
        for f in a.flags
        if f.startswith("-")
    }
    for child in command.commands:
        found |= _value_options(child)
    return found


def completion_script(program: Command, shell: str) -> str:
    """A completion script for ``program``: bash, or zsh (bash's, through bashcompinit).

    The function walks the words typed so far down the command table (skipping options and
    the values of those that take one), then offers that command's subcommands and options,
    an option's choices after it, and file names where a value or positional goes.
    """
    nodes: dict[str, _Node] = {}
    _nodes(program, "", (), nodes)
    func = "_" + re.sub(r"[^A-Za-z0-9]", "_", program.name) + "_complete"
    values = " ".join(sorted(_value_options(program)))
    descend = "|".join(f'"{p}"' for p in nodes if p)
    per_node = "\n".join(f'        "{p}") words="{" ".join(n.words)}" ;;' for p, n in nodes.items())
    choices = "\n".join(
        f'        "{p} {flag}") COMPREPLY=($(compgen -W "{" ".join(c)}" -- "$cur")); return ;;'
        for p, n in nodes.items()
        for flag, c in n.choices.items()
    )
    with_files = " ".join(f'"{p}"' for p, n in nodes.items() if n.files) or '"-"'
    script = f"""# {shell} completion for {program.name} (`{program.name} completion {shell}`)
{func}() {{
    local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}}
    local node="" word i skip=0 words=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${{COMP_WORDS[i]}}
        if ((skip)); then skip=0; continue; fi
        case " {values} " in *" $word "*) skip=1; continue ;; esac
        case "$node/$word" in
        {descend or '"-"'}) node="$node/$word" ;;
        esac
    done
    case "$node $prev" in
{choices or '        "-") ;;'}
    esac
    case " {values} " in *" $prev "*) COMPREPLY=($(compgen -f -- "$cur")); return ;; esac
    case "$node" in
{per_node}
    esac
    COMPREPLY=($(compgen -W "$words" -- "$cur"))
    if [[ $cur != -* ]]; then
        for word in {with_files}; do
            if [[ $node == "$word" ]]; then COMPREPLY+=($(compgen -f -- "$cur")); fi
        done
    fi
}}
complete -F {func} {program.name}
"""
    if shell == "zsh":
        return f"#compdef {program.name}\nautoload -U +X bashcompinit && bashcompinit\n" + script
    return script


def completion_command(table: Callable[[], Command]) -> Command:
    """The ``completion bash|zsh`` command of the program ``table()`` returns."""

    def run(args: argparse.Namespace) -> int:
        sys.stdout.write(completion_script(table(), args.shell))
        return 0

    return Command(
        "completion",
        "print a shell completion script (bash or zsh; docs/operations.md says where it goes)",
        run,
        args=(arg("shell", choices=("bash", "zsh"), help="the shell to complete for"),),
    )


# --- progress -------------------------------------------------------------------------------
class Progress:
    """A one-line progress bar on stderr while stderr is a terminal; nothing when it is not.

    Call it with the count done so far; ``total`` None draws a counter without a bar. Use it
    as a context manager so the line ends however the work ends. Redraws at most five times a
    second (and always the first and the last), so a fast loop does not spend its time on it.
    """

    WIDTH = 30

    def __init__(self, label: str, total: int | None, stream: TextIO | None = None) -> None:
        self.label, self.total = label, total
        self.stream = sys.stderr if stream is None else stream
        self.enabled = self.stream.isatty()
        self._drawn = False
        self._last = 0.0

    def __call__(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self._drawn and now - self._last < 0.2 and done != self.total:
            return
        self._last, self._drawn = now, True
        if self.total is None:
            line = f"{self.label} {done}"
        else:
            filled = self.WIDTH * min(done, self.total) // max(self.total, 1)
            bar = "#" * filled + "-" * (self.WIDTH - filled)
            line = f"{self.label} [{bar}] {done}/{self.total}"
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()

    def __enter__(self) -> Progress:
        self(0)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._drawn:
            self.stream.write("\n")
            self.stream.flush()


# --- a reader that stops early ---------------------------------------------------------------
# What a shell reports for a program killed by SIGPIPE (128 + the signal number).
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE


def _closed_for_writing(fd: int) -> bool:
    """Whether ``fd`` is a pipe whose reader is gone: poll(2) sets POLLERR on it."""
    try:
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError):
        return False


def quiet_broken_pipe(run: Callable[[], int]) -> int:
    """``run()``, but when the reader of our output goes away (``| head``), exit 141 quietly.

    Python ignores SIGPIPE, so a write to a closed pipe raises BrokenPipeError. We do not
    restore SIG_DFL instead: the Python docs ("Note on SIGPIPE", library/signal) warn that
    it would kill the program whenever any socket peer goes away while we write to it, and
    the agent and the ledger talk to brokers and HTTP clients. So, as those docs advise, we
    catch the error once here, point stdout at /dev/null so the flush at exit cannot raise
    again, and exit with the status a shell reports for a program SIGPIPE ended (POSIX
    ``sh``: 128 + the signal number). A BrokenPipeError from anything but our own stdout or
    stderr (a socket) is not this and propagates.
    """
    try:
        code = run()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        fds = [fd for fd in (_fileno(sys.stdout), _fileno(sys.stderr)) if fd is not None]
        if not any(_closed_for_writing(fd) for fd in fds):
            raise
        devnull = os.open(os.devnull, os.O_WRONLY)
        for fd in fds:
            os.dup2(devnull, fd)
        os.close(devnull)
        return EXIT_BROKEN_PIPE


def _fileno(stream: TextIO) -> int | None:
    try:
        return stream.fileno()
    except (OSError, ValueError, AttributeError):
        return None
