"""``custody-verify``: check a lot summary bundle offline, with one command.

Runs with only ``custody`` and ``ledger.verify`` importable (tests/test_layout.py). The ledger's
public keys come only from what the buyer pinned (``ledger.verify.trust``): ``--ledger-key
FILE``, or a trust file (``--trust FILE``, ``$CUSTODY_TRUST_FILE``, or the per-user
``~/.config/custody/trusted-ledgers.json``); never from a file beside the bundle, which whoever
hands over the bundle chooses. The bundle's ledger must be one of those pinned, matched by key.
Prints the accepted claim with the ledger id, its key fingerprint and the file the key came
from, or exactly which check failed. ``custody-verify trust add|list|remove`` keeps the trust
file. Exit 0 (accepted), 1 (rejected, a bundle from a ledger not pinned included), 2 (usage: no
pinned key, missing, unreadable or malformed files).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import textwrap
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from custody import __version__
from custody.errors import CustodyError, ProofError
from custody.exits import ExitCode
from custody.keys import LedgerPublicKeys
from custody.mass import units_to_kg
from ledger.verify import cli_table
from ledger.verify.authority import AUTHORITY_FORMAT, AuthorityKey, read_authority_file
from ledger.verify.bundle import MAX_BUNDLE_BYTES, verify_bundle
from ledger.verify.cli_table import Command, OneOf, arg
from ledger.verify.trust import (
    TRUST_ENV,
    AuthorityPin,
    BundleLedger,
    Pin,
    TrustFile,
    bundle_authority,
    bundle_ledger,
    choose,
    choose_authority,
    configured_trust_file,
    key_fingerprint,
    read_key_file,
    user_trust_file,
)

PROG = "custody-verify"
# ``custody-verify trust ...`` manages pins; anything else is a bundle. A bundle file that is
# itself named "trust" is given with a directory: ``custody-verify ./trust``.
TRUST_COMMAND = "trust"
# ``custody-verify completion bash|zsh`` prints a completion script; dispatched as ``trust`` is.
COMPLETION_COMMAND = "completion"


class _Formatter(argparse.HelpFormatter):
    """Wraps help like argparse does, but never inside a file path (at its hyphens)."""

    def _split_lines(self, text: str, width: int) -> list[str]:
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        return textwrap.fill(
            " ".join(text.split()), width, initial_indent=indent, subsequent_indent=indent,
            break_on_hyphens=False,
        )  # fmt: skip


def commands(env: Mapping[str, str] | None = None) -> Command:
    """custody-verify's command table: the program checks a bundle; ``trust`` keeps the pins.

    A bundle's path and the command share the first position, so ``main`` dispatches ``trust``
    itself and each half gets its own parser (``build_parser``, ``build_trust_parser``).
    """
    user_file = user_trust_file(os.environ if env is None else env)
    trust_file = arg(
        "--trust", type=Path, metavar="FILE",
        help=f"the trust file (default: ${TRUST_ENV}, else {user_file})",
    )  # fmt: skip
    return Command(
        PROG,
        "Verify a cobalt-custody lot summary bundle offline: signatures, registry, log "
        "inclusion, checkpoint chains and the zero-knowledge proofs of the lot total, the "
        "receipt tolerance and every site's mass balance. Only keys you pinned are "
        "trusted: the ledger's (--ledger-key FILE, or a trust file: --trust FILE, else "
        f"${TRUST_ENV}, else {user_file} when it exists) and the registry authority's "
        "(--registry-key FILE, or the trust file's). Key files next to the bundle are "
        "never used.",
        epilog=(
            f"Pin a ledger and the registry authority once with `{PROG} trust add "
            f"ledger-public.json` and `{PROG} trust add authority-public.json` (see `{PROG} "
            "trust --help`). Exit status: 0 accepted, 1 rejected (also a bundle from a ledger "
            "that is not pinned), 2 usage: no pinned key, missing, unreadable or malformed files; "
            "all of them: the table in README.md (\"Exit codes, the same for all four programs\"); "
            f"{cli_table.EXIT_BROKEN_PIPE} when the reader of the output went away (| head)."
        ),
        version=__version__,
        args=(
            arg("bundle", type=Path, help="the bundle (custody-ledger summary --out)"),
            OneOf((
                arg("--ledger-key", type=Path, metavar="FILE",
                    help="trust only this ledger: its public keys (ledger-public.json from its "
                    "operator)"),
                arg("--trust", type=Path, metavar="FILE",
                    help=f"the trust file of pinned ledgers to use (default: ${TRUST_ENV}, else "
                    f"{user_file})"),
            )),
            arg("--registry-key", type=Path, metavar="FILE",
                help="trust only this registry authority: its authority-public.json (default: "
                "the authorities pinned in the trust file)"),
            arg("--json", action="store_true", help="print the result as JSON"),
        ),
        commands=(
            Command(
                TRUST_COMMAND, "keep the ledgers and registry authorities you trust",
                description="Keep the ledgers whose bundles you accept: a trust file mapping "
                "each ledger id to its public keys. Pin a ledger only with a key file you got "
                "from its operator, and compare the fingerprint printed here with theirs.",
                epilog=f"The trust file: --trust FILE, else ${TRUST_ENV}, else {user_file}.",
                shared=(  # before or after the action's name
                    trust_file,
                    arg("--json", action="store_true", help="print the result as JSON"),
                ),
                commands=(
                    Command(
                        "add", "pin a ledger's or a registry authority's public key", _cmd_add,
                        description="Pin a ledger (its ledger-public.json) or a registry "
                        "authority (its authority-public.json): add it to the trust file "
                        "(created if needed) and print its key fingerprint to compare with its "
                        "operator's.",
                        args=(
                            arg("key_file", type=Path, metavar="FILE",
                                help="ledger-public.json of a ledger, or authority-public.json "
                                "of a registry authority"),
                            arg("--replace", action="store_true",
                                help="replace the key pinned for this ledger id (only when its "
                                "operator says it changed)"),
                        ),
                    ),
                    Command(
                        "list", "list the pinned ledgers", _cmd_list,
                        description="List the pinned ledgers and registry authorities: id and "
                        "key fingerprint (SHA-256).",
                    ),
                    Command(
                        "remove", "stop trusting a ledger or authority", _cmd_remove,
                        description="Remove a ledger's or registry authority's pin from the "
                        "trust file.",
                        args=(arg("ledger_id", metavar="ID",
                                  help="the ledger or authority id to unpin"),),
                    ),
                ),
            ),
            cli_table.completion_command(lambda: commands(env)),
        ),
    )  # fmt: skip


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``custody-verify BUNDLE ...``."""
    program = dataclasses.replace(commands(env), commands=())
    return cli_table.build_parser(program, formatter_class=_Formatter)


def build_trust_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``custody-verify trust ...``."""
    return _half(TRUST_COMMAND, env)


def build_completion_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The parser of ``custody-verify completion ...``."""
    return _half(COMPLETION_COMMAND, env)


def _half(name: str, env: Mapping[str, str] | None) -> argparse.ArgumentParser:
    (command,) = (c for c in commands(env).commands if c.name == name)
    program = dataclasses.replace(command, name=f"{PROG} {name}")
    return cli_table.build_parser(program, formatter_class=_Formatter)


def main(argv: Sequence[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    return cli_table.quiet_broken_pipe(lambda: _main(argv, env))


def _main(argv: Sequence[str] | None, env: Mapping[str, str] | None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    environ = os.environ if env is None else env
    if args_list[:1] == [TRUST_COMMAND]:
        return trust_main(args_list[1:], environ)
    if args_list[:1] == [COMPLETION_COMMAND]:
        wanted = build_completion_parser(environ).parse_args(args_list[1:])
        printed: int = wanted.func(wanted)
        return printed
    args = build_parser(environ).parse_args(args_list)
    try:
        found = _pins(args, environ)
        if found is None:
            print(_how_to_pin(environ), file=sys.stderr)
            return ExitCode.USAGE
        pins, source = found
        authorities = _authority_pins(args, environ)
        if not authorities:
            print(_how_to_pin_authority(environ), file=sys.stderr)
            return ExitCode.USAGE
        data = args.bundle.read_bytes()
    except CustodyError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except OSError as exc:
        print(f"{PROG}: cannot read {args.bundle}: {exc.strerror}", file=sys.stderr)
        return ExitCode.USAGE
    named: BundleLedger | None = None
    pin: Pin | None = None
    authority: AuthorityPin | None = None
    started = time.perf_counter()
    try:
        named = bundle_ledger(data, MAX_BUNDLE_BYTES)
        pin = choose(pins, named, source)
        authority = choose_authority(authorities, bundle_authority(data))
        claim = verify_bundle(data, pin.keys, authority.key)
    except ProofError as exc:
        if args.json:
            print(json.dumps({
                "accepted": False, "failed": str(exc),
                "ledger": pin.to_map() if pin else None,
                "authority": authority.to_map() if authority else None,
                "bundle_ledger": named.to_map() if named else None,
            }))  # fmt: skip
        else:
            print(f"REJECTED: {exc}")
            if pin is not None:
                print(f"  checked against {pin.describe()}")
            if authority is not None:
                print(f"  and {authority.describe()}")
        return ExitCode.VERIFICATION_FAILED
    seconds = time.perf_counter() - started
    if args.json:
        print(json.dumps({
            "accepted": True, "lot": claim.lot, "refiner": claim.refiner,
            "total_kg": float(units_to_kg(claim.total)),
            "tolerance_kg": float(units_to_kg(claim.tolerance)),
            "sites": list(claim.sites), "balance_checks": claim.balance_checks,
            "opening_stock_sites": list(claim.stock_sites),
            "log_size": claim.log_size, "policy": claim.policy_version,
            "ledger": pin.to_map(), "authority": authority.to_map(),
            "verify_s": round(seconds, 3),
        }))  # fmt: skip
    else:
        print(f"ACCEPTED: {claim.describe()}")
        print(f"  signed by {pin.describe()}")
        print(f"  registry signed by {authority.describe()}")
    return 0


def _authority_pins(args: argparse.Namespace, env: Mapping[str, str]) -> list[AuthorityPin]:
    """The registry authorities the buyer pinned: --registry-key, else the trust file's."""
    if args.registry_key is not None:
        key = read_authority_file(args.registry_key)
        return [AuthorityPin(key, args.registry_key, "--registry-key")]
    if args.trust is not None:
        return TrustFile.load(args.trust).authority_pins("--trust")
    configured = configured_trust_file(env)
    if configured is None:
        return []
    path, how = configured
    return TrustFile.load(path).authority_pins(how)


def _how_to_pin_authority(env: Mapping[str, str]) -> str:
    return (
        f"{PROG}: no registry authority is pinned, so nothing tells which gateway keys are "
        "enrolled at which site.\n"
        "Get the registry authority's authority-public.json from the consortium (never from "
        "whoever handed you the bundle), then either name it:\n"
        f"  {PROG} BUNDLE --registry-key authority-public.json\n"
        "or pin it once (compare the fingerprint it prints with the consortium's):\n"
        f"  {PROG} trust add authority-public.json\n"
        f"which keeps it in {user_trust_file(env)}."
    )


def _pins(args: argparse.Namespace, env: Mapping[str, str]) -> tuple[list[Pin], Path] | None:
    """The keys the buyer pinned and the file they are in; None when nothing is pinned."""
    if args.ledger_key is not None:
        return [Pin(read_key_file(args.ledger_key), args.ledger_key, "--ledger-key")], (
            args.ledger_key
        )
    if args.trust is not None:
        return TrustFile.load(args.trust).pins("--trust"), args.trust
    configured = configured_trust_file(env)
    if configured is None:
        return None
    path, how = configured
    return TrustFile.load(path).pins(how), path


def _how_to_pin(env: Mapping[str, str]) -> str:
    return (
        f"{PROG}: no ledger key is pinned, so there is no key to check the bundle against.\n"
        "A ledger-public.json next to the bundle is not used: whoever handed you the bundle "
        "chose it.\n"
        "Get the ledger's ledger-public.json from the ledger's operator, then either name it:\n"
        f"  {PROG} BUNDLE --ledger-key ledger-public.json\n"
        "or pin it once, for every bundle from that ledger (compare the fingerprint it prints "
        "with the operator's):\n"
        f"  {PROG} trust add ledger-public.json\n"
        f"which keeps it in {user_trust_file(env)}; --trust FILE or ${TRUST_ENV} name another "
        "trust file."
    )


# --- custody-verify trust -------------------------------------------------------------------


def trust_main(argv: Sequence[str], env: Mapping[str, str]) -> int:
    args = build_trust_parser(env).parse_args(list(argv))
    if args.trust is not None:
        path: Path = args.trust
    elif env.get(TRUST_ENV):
        path = Path(env[TRUST_ENV])
    else:
        path = user_trust_file(env)
    args.trust = path
    try:
        code: int = args.func(args)
    except CustodyError as exc:
        print(f"{PROG} {TRUST_COMMAND}: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    return code


def _cmd_add(args: argparse.Namespace) -> int:
    return _trust_add(args.trust, args.key_file, replace=args.replace, as_json=args.json)


def _cmd_list(args: argparse.Namespace) -> int:
    return _trust_list(args.trust, as_json=args.json)


def _cmd_remove(args: argparse.Namespace) -> int:
    return _trust_remove(args.trust, args.ledger_id, as_json=args.json)


def _pinned(
    as_json: bool, state: str, kind: str, pin_id: str, path: Path, fingerprint: str, whose: str
) -> int:
    """What ``trust add`` did: ``state`` is pinned, replaced or already pinned."""
    if as_json:
        print(json.dumps({"state": state, "kind": kind, "id": pin_id, "trust_file": str(path),
                          "key_fingerprint": fingerprint}))  # fmt: skip
        return 0
    label = "signing key fingerprint" if kind == "ledger" else "key fingerprint"
    if state == "already pinned":
        print(f"{kind} {pin_id!r} is already pinned in {path} with this key")
        print(f"  {label} (SHA-256) {fingerprint}")
        return 0
    print(f"{state} {kind} {pin_id!r} in {path}")
    print(f"  {label} (SHA-256) {fingerprint}")
    print(f"  compare it with the fingerprint {whose} gave you")
    return 0


def _trust_add(path: Path, key_file: Path, *, replace: bool, as_json: bool) -> int:
    if _file_format(key_file) == AUTHORITY_FORMAT:
        return _trust_add_authority(path, read_authority_file(key_file), key_file,
                                    replace=replace, as_json=as_json)  # fmt: skip
    keys = read_key_file(key_file)
    trust = TrustFile.load(path, missing_ok=True)
    fingerprint = key_fingerprint(keys)
    for lid, pinned in trust.ledgers.items():
        if lid != keys.ledger_id and pinned.signing_key == keys.signing_key:
            return _refuse(f"{path}: this signing key is already pinned as ledger {lid!r}")
    old: LedgerPublicKeys | None = trust.ledgers.get(keys.ledger_id)
    whose = "the ledger's operator"
    if old == keys:
        return _pinned(
            as_json, "already pinned", "ledger", keys.ledger_id, path, fingerprint, whose
        )
    if old is not None and not replace:
        return _refuse(
            f"{path}: ledger {keys.ledger_id!r} is already pinned with another key "
            f"(fingerprint {key_fingerprint(old)}; {key_file} has {fingerprint}). A ledger's key "
            "changes only when its operator says so: check with them, then add it with --replace"
        )
    trust.ledgers[keys.ledger_id] = keys
    trust.save()
    state = "replaced" if old else "pinned"
    return _pinned(as_json, state, "ledger", keys.ledger_id, path, fingerprint, whose)


def _file_format(key_file: Path) -> object:
    try:
        raw = json.loads(key_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None  # read_key_file says what is wrong with it
    return raw.get("format") if isinstance(raw, dict) else None


def _trust_add_authority(
    path: Path, key: AuthorityKey, key_file: Path, *, replace: bool, as_json: bool
) -> int:
    trust = TrustFile.load(path, missing_ok=True)
    for lid, ledger in trust.ledgers.items():
        if ledger.signing_key == key.signing_key:
            return _refuse(
                f"{key_file}: this is the signing key of ledger {lid!r}; a registry authority "
                "must be a key the ledger does not hold"
            )
    old = trust.authorities.get(key.authority_id)
    kind, whose = "registry authority", "the consortium"
    if old == key:
        return _pinned(
            as_json, "already pinned", kind, key.authority_id, path, key.fingerprint, whose
        )
    if old is not None and not replace:
        return _refuse(
            f"{path}: registry authority {key.authority_id!r} is already pinned with another key "
            f"(fingerprint {old.fingerprint}; {key_file} has {key.fingerprint}); check with the "
            "consortium, then add it with --replace"
        )
    trust.authorities[key.authority_id] = key
    trust.save()
    state = "replaced" if old else "pinned"
    return _pinned(as_json, state, kind, key.authority_id, path, key.fingerprint, whose)


def _trust_list(path: Path, *, as_json: bool) -> int:
    trust = TrustFile.load(path, missing_ok=True)
    pins = trust.pins(TRUST_COMMAND)
    if as_json:
        ledgers = [
            {"id": p.keys.ledger_id, "key_fingerprint": p.fingerprint, "kid": p.kid.hex()}
            for p in pins
        ]
        authorities = [
            {"id": a.key.authority_id, "key_fingerprint": a.key.fingerprint}
            for a in trust.authority_pins(TRUST_COMMAND)
        ]
        print(json.dumps({"trust_file": str(path), "ledgers": ledgers,
                          "authorities": authorities}))  # fmt: skip
        return 0
    if not pins and not trust.authorities:
        print(f"no ledgers pinned in {path}")
        return 0
    print(f"pinned in {path}:")
    for p in pins:
        print(f"  ledger {p.keys.ledger_id}  signing key fingerprint (SHA-256) {p.fingerprint}")
    for a in trust.authority_pins(TRUST_COMMAND):
        print(f"  registry authority {a.key.authority_id}  key fingerprint (SHA-256) "
              f"{a.key.fingerprint}")  # fmt: skip
    return 0


def _trust_remove(path: Path, ledger_id: str, *, as_json: bool) -> int:
    trust = TrustFile.load(path)
    ledger = trust.ledgers.pop(ledger_id, None)
    authority = trust.authorities.pop(ledger_id, None)
    if ledger is None and authority is None:
        return _refuse(f"{path}: nothing is pinned there as {ledger_id!r}")
    trust.save()
    kinds = [w for w, k in (("ledger", ledger), ("registry authority", authority)) if k]
    if as_json:
        print(json.dumps({"removed": kinds, "id": ledger_id, "trust_file": str(path)}))
        return 0
    print(f"removed {' and '.join(kinds)} {ledger_id!r} from {path}")
    return 0


def _refuse(message: str) -> int:
    print(f"{PROG} {TRUST_COMMAND}: {message}", file=sys.stderr)
    return ExitCode.USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
