"""``custody-registry``: the registry authority's command line, a shell over ``ledger.authority``.

Run by the consortium where its authority key is kept, never on the ledger's machine: it
enrols gateways at sites, retires keys, pins each site's opening stock record and signs
heartbeats. Each command writes one signed entry file (``DIR/entries/NNNNNN.cose``) and
prints its path; the ledger's operator logs it with ``custody-ledger registry add FILE``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custody import __version__
from custody.errors import ConfigError, CustodyError, KeyError_, SchemaError
from custody.event import validate_identifier
from custody.exits import ExitCode, exit_code_for
from custody.keys import KID_BYTES, check_ed25519_public
from ledger.authority import Authority, create_authority
from ledger.verify import cli_table
from ledger.verify.cli_table import Command, arg
from ledger.verify.registry import RegistryEntry

PROG = "custody-registry"
DIR_ENV = "CUSTODY_REGISTRY_DIR"


def cmd_init(args: argparse.Namespace) -> int:
    key = create_authority(args.dir, args.name)
    public = args.dir / "authority-public.json"
    if args.json:
        print(json.dumps({"authority": key.authority_id, "public_file": str(public),
                          "key_fingerprint": key.fingerprint}))  # fmt: skip
        return 0
    print(f"registry authority {key.authority_id} created in {args.dir}")
    print(f"  give {args.dir / 'authority-public.json'} to the ledger and to verifiers")
    print(f"  key fingerprint (SHA-256) {key.fingerprint}")
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    source = str(args.record)
    try:
        raw: Any = json.loads(Path(args.record).read_text(encoding="utf-8"))
        device_id = validate_identifier(raw["device_id"], "device_id")
        site_id = validate_identifier(raw["site_id"], "site_id")
        public_key = check_ed25519_public(bytes.fromhex(raw["public_key"]), "public_key")
    except (OSError, ValueError, KeyError, TypeError, SchemaError, KeyError_) as exc:
        raise ConfigError(source, "-", f"not a valid enrolment record: {exc}") from exc
    if args.site is not None and args.site != site_id:
        raise ConfigError(
            source, "site_id",
            f"the gateway says {site_id}, you said --site {args.site}: re-initialise the "
            "gateway for the right site",
        )  # fmt: skip
    return _written(args, *Authority(args.dir).enrol(device_id, site_id, public_key))


def cmd_retire(args: argparse.Namespace) -> int:
    kid = _hex(args.kid, KID_BYTES, "KID")
    checkpoint = (
        None
        if args.last_checkpoint is None
        else _hex(args.last_checkpoint, 32, "--last-checkpoint")
    )
    return _written(args, *Authority(args.dir).retire(kid, args.last_seq, checkpoint))


def cmd_stock(args: argparse.Namespace) -> int:
    validate_identifier(args.site, "site")
    record = _hex(args.record, 32, "EVENT_ID")
    return _written(args, *Authority(args.dir).stock(args.site, record))


def cmd_heartbeat(args: argparse.Namespace) -> int:
    return _written(args, *Authority(args.dir).heartbeat())


def cmd_list(args: argparse.Namespace) -> int:
    authority = Authority(args.dir)
    entries = [e for _, e in authority.entries()]
    if args.json:
        print(json.dumps({"authority": authority.public.authority_id,
                          "entries": [_describe(e) for e in entries]}))  # fmt: skip
        return 0
    print(f"registry authority {authority.public.authority_id}: {len(entries)} entries")
    for e in entries:
        fields = " ".join(f"{k}={v}" for k, v in _describe(e).items() if k not in ("seq", "op"))
        print(f"  {e.seq:>4}  {e.op:<9} {fields}")
    return 0


def _written(args: argparse.Namespace, path: Path, entry: RegistryEntry) -> int:
    if args.json:
        print(json.dumps({"file": str(path), **_describe(entry)}))
    else:
        print(path)
        print(f"  entry {entry.seq}: {entry.op}; the ledger logs it with "
              f"`custody-ledger registry add {path}`")  # fmt: skip
    return 0


def _describe(e: RegistryEntry) -> dict[str, Any]:
    out: dict[str, Any] = {"seq": e.seq, "op": str(e.op), "entry_id": e.entry_id.hex()}
    if e.device_id:
        out["device"] = e.device_id
    if e.site_id:
        out["site"] = e.site_id
    if e.kid:
        out["kid"] = e.kid.hex()
    if e.op == "retire":
        out["last_seq"] = e.last_seq
        if e.last_checkpoint is not None:
            out["last_checkpoint"] = e.last_checkpoint.hex()
    if e.record:
        out["record"] = e.record.hex()
    return out


def _hex(text: str, length: int, what: str) -> bytes:
    try:
        value = bytes.fromhex(text)
    except ValueError as exc:
        raise ConfigError("command line", what, f"{text!r} is not hex") from exc
    if len(value) != length:
        raise ConfigError("command line", what, f"must be {length} bytes ({2 * length} hex digits)")
    return value


def _commands() -> Command:
    return COMMANDS


COMMANDS = Command(
    PROG,
    "The registry authority's tool: enrol gateways at sites, retire keys, pin sites' opening "
    "stocks and sign heartbeats. Each command signs one entry of the registry's chain and "
    "prints its file, which the ledger's operator logs with `custody-ledger registry add`. Keep "
    "the authority directory away from the ledger.",
    epilog=f"The authority directory: --dir DIR, else ${DIR_ENV}. Exit status: 0 done, "
    "1 an entry that does not verify, 3 a refused request (the message says why), "
    "4 key problems, 5 storage errors; all of them: the table in README.md (\"Exit codes, the "
    f"same for all four programs\"); {cli_table.EXIT_BROKEN_PIPE} when the reader of the output "
    "went away (| head).",
    version=__version__,
    required=False,  # without a command it prints its help
    shared=(  # before or after the command's name
        arg("--dir", type=Path, default=None, metavar="DIR",
            help=f"the authority directory (default ${DIR_ENV})"),
        arg("--json", action="store_true", help="print JSON"),
    ),
    commands=(
        Command(
            "init", "create the authority's key (0600) and authority-public.json", cmd_init,
            args=(arg("--name", required=True,
                      help="the authority's id, e.g. consortium-registry"),),
        ),
        Command(
            "enrol", "enrol a gateway at its site from its `custody-agent init` record",
            cmd_enrol,
            args=(
                arg("record", type=Path, help="the gateway's enrolment record (JSON)"),
                arg("--site", help="refuse unless the record is for this site"),
            ),
        ),
        Command(
            "retire",
            "retire a key: its chain ends at --last-seq (custody-ledger revoke prints the "
            "values)",
            cmd_retire,
            args=(
                arg("kid", metavar="KID", help="the key id (16 hex digits)"),
                arg("--last-seq", type=int, required=True, help="the last seq that counts"),
                arg("--last-checkpoint", metavar="EVENT_ID",
                    help="the chain's last checkpoint at or before that seq (64 hex digits)"),
            ),
        ),
        Command(
            "stock",
            "pin a site's opening stock: the opening_stock record its gateway signed (once per "
            "site)",
            cmd_stock,
            args=(
                arg("site", help="the site id"),
                arg("record", metavar="EVENT_ID", help="custody-agent stock declare printed it"),
            ),
        ),
        Command(
            "heartbeat",
            "sign an entry that changes nothing: it shows verifiers the registry is complete up "
            "to it",
            cmd_heartbeat,
        ),
        Command("list", "list the entries signed so far", cmd_list),
        cli_table.completion_command(_commands),
    ),
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    return cli_table.build_parser(COMMANDS)


def main(argv: Sequence[str] | None = None) -> int:
    return cli_table.quiet_broken_pipe(lambda: _main(argv))


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stdout)
        return 0
    if args.dir is None and args.command != "completion":  # which needs none
        named = os.environ.get(DIR_ENV, "")
        if not named:
            print(f"{PROG}: error: name the authority directory with --dir DIR or ${DIR_ENV}",
                  file=sys.stderr)  # fmt: skip
            return ExitCode.USAGE
        args.dir = Path(named)
    try:
        code: int = args.func(args)
    except CustodyError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
