"""``custody-verify``: check a lot summary bundle offline, with one command.

Runs with only ``custody`` and ``ledger.verify`` importable (tests/test_layout.py). The ledger's
public keys come from ``--ledger-key`` (the JSON that ``custody-ledger init`` writes) or, when
that is not given, from ``ledger-public.json`` next to the bundle; the registry is checked with
``--registry-key`` when the registry authority is not the ledger. Prints the accepted claim or
exactly which check failed; exit 0 (accepted), 1 (rejected), 2 (usage: missing or unreadable
files).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from custody.errors import CustodyError, ProofError
from custody.keys import LedgerPublicKeys
from ledger.verify.bundle import verify_bundle

DEFAULT_KEY_FILE = "ledger-public.json"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="custody-verify",
        description=(
            "Verify a cobalt-custody lot summary bundle offline: signatures, registry, log "
            "inclusion, checkpoint chains and the zero-knowledge proofs of the lot total, the "
            "receipt tolerance and every site's mass balance."
        ),
        epilog="Exit status: 0 accepted, 1 rejected, 2 usage or unreadable input.",
    )
    parser.add_argument("bundle", type=Path, help="the bundle (custody-ledger summary --out)")
    parser.add_argument(
        "--ledger-key", type=Path, metavar="FILE",
        help=f"the ledger's public keys (default: {DEFAULT_KEY_FILE} next to the bundle)",
    )  # fmt: skip
    parser.add_argument(
        "--registry-key", type=Path, metavar="FILE",
        help="the registry authority's public keys, when it is not the ledger",
    )  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    return parser


def _keys(path: Path, what: str) -> LedgerPublicKeys:
    try:
        return LedgerPublicKeys.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, CustodyError) as exc:
        raise SystemExit(f"custody-verify: cannot read the {what} from {path}: {exc}") from exc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    key_file = args.ledger_key or args.bundle.parent / DEFAULT_KEY_FILE
    try:
        if args.ledger_key is None and not key_file.exists():
            print(
                f"custody-verify: no --ledger-key and no {DEFAULT_KEY_FILE} beside the bundle",
                file=sys.stderr,
            )
            return 2
        ledger = _keys(key_file, "ledger key")
        registry = _keys(args.registry_key, "registry key") if args.registry_key else None
        data = args.bundle.read_bytes()
    except SystemExit as exc:
        print(exc, file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"custody-verify: cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    try:
        claim = verify_bundle(data, ledger, registry_key=registry)
    except ProofError as exc:
        if args.json:
            print(json.dumps({"accepted": False, "failed": str(exc)}))
        else:
            print(f"REJECTED: {exc}")
        return 1
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({
            "accepted": True, "lot": claim.lot, "refiner": claim.refiner,
            "total_kg": claim.total / 10, "tolerance_kg": claim.tolerance / 10,
            "sites": list(claim.sites), "balance_checks": claim.balance_checks,
            "log_size": claim.log_size, "policy": claim.policy_version,
            "verify_s": round(seconds, 3),
        }))  # fmt: skip
    else:
        print(f"ACCEPTED: {claim.describe()}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
