"""``custody-verify``: checks a lot summary bundle offline (bundles arrive in issue 6)."""

from __future__ import annotations

import argparse
import sys


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="custody-verify",
        description=(
            "Verify a cobalt-custody lot summary bundle offline. "
            "Bundles are not produced yet; this command only prints its help."
        ),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    parser.parse_args(argv)
    parser.print_help(sys.stdout)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
