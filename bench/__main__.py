"""``python -m bench NAME [--json] [options]``: run one benchmark and report it.

A benchmark is a module with ``SUMMARY`` (one line for the help),
``add_arguments(parser)``, ``run(args) -> dict`` (JSON-ready results) and
``render(results) -> str`` (the readable table). Register a new one by adding
one line to ``BENCHMARKS``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from bench import (
    abuse,
    capture,
    drain,
    footprint,
    fuzz,
    intake,
    link,
    parsers,
    peers,
    qr,
    service,
    zk,
)


class Benchmark(Protocol):
    SUMMARY: str

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> dict[str, Any]: ...

    def render(self, result: Mapping[str, Any]) -> str: ...


BENCHMARKS: dict[str, Benchmark] = {
    "abuse": abuse,
    "capture": capture,
    "drain": drain,
    "footprint": footprint,
    "fuzz": fuzz,
    "link": link,
    "intake": intake,
    "parsers": parsers,
    "peers": peers,
    "qr": qr,
    "service": service,
    "zk": zk,
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Run a cobalt-custody benchmark and report it (a table, or JSON with --json).",
        epilog="`python -m bench NAME --help` shows a benchmark's options.",
    )
    sub = parser.add_subparsers(dest="name", metavar="NAME", required=True, title="benchmarks")
    for name, bench in BENCHMARKS.items():
        p = sub.add_parser(name, help=bench.SUMMARY, description=bench.SUMMARY)
        p.add_argument(
            "--json", action="store_true", help="print one JSON object instead of a table"
        )
        bench.add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    bench = BENCHMARKS[args.name]
    result = bench.run(args)
    if args.json:
        json.dump(result, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(bench.render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
