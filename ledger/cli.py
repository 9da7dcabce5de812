"""``custody-ledger``: the central ledger's command line.

For now it creates the ledger's keys (``init``); intake, registry and log
commands arrive with issue 4.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from custody.errors import CustodyError
from ledger.keys import PUBLIC_FILE, create_ledger_keys
from ledger.paths import resolve_data_dir


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="custody-ledger",
        description="The cobalt-custody ledger: verifies and logs gateway records exactly once.",
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="ledger data directory (default: $CUSTODY_DATA_DIR, else /var/lib/custody for a "
        "system install, else ~/.local/share/custody)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "init",
        help="create the ledger's signing and sealing keys",
        description="Create the ledger's Ed25519 signing key and X25519 sealing key (0600) and "
        f"write their public halves to {PUBLIC_FILE} for gateways to pin.",
    )
    p.add_argument("--ledger-id", default="ledger", help="a name for this ledger")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    data_dir = resolve_data_dir(args.data_dir)
    try:
        create_ledger_keys(data_dir, args.ledger_id)
    except CustodyError as exc:
        print(f"custody-ledger: error: {exc}", file=sys.stderr)
        return 4
    print(data_dir / PUBLIC_FILE)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
