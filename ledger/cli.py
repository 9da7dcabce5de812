"""``custody-ledger``: the central ledger's command line, a thin shell over the library.

``init`` creates the ledger's keys; ``registry`` logs the registry authority's entries
(``enrol`` is its shortcut for enrolments, ``enroll`` an alias) and ``revoke`` stops a device
at once; ``devices``, ``rejections``, ``alarms`` and ``log`` show what the ledger holds;
``run`` is the MQTT intake service; ``export`` writes the captures as EPCIS 2.0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from custody import __version__, epcis
from custody.errors import ConfigError, CustodyError, SchemaError, VerificationError
from custody.event import validate_identifier
from custody.exits import ExitCode, exit_code_for
from custody.files import replace_file
from custody.mass import format_kg, units_to_kg
from custody.webpage import Access, read_token
from ledger.keys import PUBLIC_FILE, create_ledger_keys
from ledger.page import LedgerPage
from ledger.paths import resolve_data_dir
from ledger.store import LedgerStore, Store
from ledger.stores import is_postgres_url, open_store
from ledger.verify import cli_table
from ledger.verify.cli_table import Command, Progress, arg

STORE_FILE = "ledger.sqlite"


def _store(args: argparse.Namespace) -> Store:
    """The SQLite store in the data dir, or PostgreSQL with ``--db postgresql://...``."""
    if args.db:
        _check_db(args.db)
    if not (args.data_dir / "ledger.key").exists():
        raise ConfigError(str(args.data_dir), "-", "no ledger here (run `custody-ledger init`)")
    return open_store(args.db or str(args.data_dir / STORE_FILE))


# RFC 3986 §3.1: a scheme is a letter, then letters, digits, "+", "-" or ".".
_URL_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


def _check_db(location: str) -> None:
    """Refuse the URL of a database the ledger does not speak: ``mysql://x`` must not become
    a SQLite file ``x`` in a directory ``mysql:``."""
    url = _URL_SCHEME.match(location)
    if url and not is_postgres_url(location):
        raise ConfigError(
            "command line", "--db",
            f"unknown store scheme {url.group(1)}:// in {location!r}: the store is a SQLite "
            "file path (e.g. /var/lib/custody/ledger/ledger.sqlite) or a PostgreSQL URL "
            "(postgresql://USER@HOST/DB, or postgresql:///DB for the local socket)",
        )  # fmt: skip


def cmd_init(args: argparse.Namespace) -> int:
    from ledger.registry import pin_authority
    from ledger.verify.authority import read_authority_file

    authority = read_authority_file(Path(args.authority)) if args.authority else None
    keys = create_ledger_keys(args.data_dir, args.ledger_id)
    LedgerStore(args.data_dir / STORE_FILE).close()
    if authority is not None:
        pin_authority(args.data_dir, authority, keys.public)
    print(args.data_dir / PUBLIC_FILE)
    return 0


def cmd_enrol(args: argparse.Namespace) -> int:
    """Log the registry authority's enrolment entry for a gateway (``registry add``)."""
    data = _read_entry(Path(args.record))
    return _add_entries(args, [(Path(args.record), data)])


def _read_entry(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(str(path), "-", f"cannot read it: {exc.strerror}") from exc
    if data[:1] in (b"{", b"[") or data.strip()[:1] == b"{":
        raise ConfigError(
            str(path), "-",
            "is a gateway's enrolment record (JSON), not a registry entry: the registry "
            "authority enrols gateways (`custody-registry enrol "
            f"{path.name}`) and gives you the signed entry to add here",
        )  # fmt: skip
    return data


def _add_entries(args: argparse.Namespace, files: list[tuple[Path, bytes]]) -> int:
    from ledger.registry import add_entry, pinned_authority

    authority = pinned_authority(args.data_dir)
    valid_from_ms = (
        None if getattr(args, "valid_from", None) is None
        else _iso_ms(args.valid_from, "--valid-from")
    )  # fmt: skip
    as_json = getattr(args, "json", False)  # `registry add --json`; the enrol shortcut prints lines
    logged: list[dict[str, Any]] = []
    store = _store(args)
    try:
        for path, data in files:
            try:
                added = add_entry(store, authority, data, valid_from_ms=valid_from_ms)
            except VerificationError as exc:
                raise ConfigError(
                    str(path), "-",
                    f"not an entry signed by the pinned registry authority "
                    f"{authority.authority_id} ({exc})",
                ) from exc  # fmt: skip
            e = added.entry
            what = {
                "enrol": f"enrols {e.device_id} at {e.site_id}, kid {e.kid.hex()}",
                "retire": f"retires kid {e.kid.hex()} after seq {e.last_seq}",
                "stock": f"pins the opening stock of {e.site_id}: record {e.record.hex()}",
                "heartbeat": "heartbeat",
            }[str(e.op)]
            state = "logged" if added.new else "already logged"
            if as_json:
                logged.append({"file": str(path), "seq": e.seq, "op": str(e.op), "state": state,
                               "log_index": added.log_index, "what": what})  # fmt: skip
            else:
                print(f"registry entry {e.seq} {state} at log index {added.log_index}: {what}")
    finally:
        store.close()
    if as_json:
        print(json.dumps(logged, indent=2))
    return 0


def cmd_registry_trust(args: argparse.Namespace) -> int:
    from ledger.keys import load_ledger_keypair
    from ledger.registry import pin_authority
    from ledger.verify.authority import read_authority_file

    authority = read_authority_file(Path(args.file))
    pin_authority(args.data_dir, authority, load_ledger_keypair(args.data_dir).public,
                  replace=args.replace)  # fmt: skip
    print(f"registry authority {authority.authority_id} pinned, key fingerprint (SHA-256) "
          f"{authority.fingerprint}")  # fmt: skip
    return 0


def cmd_registry_add(args: argparse.Namespace) -> int:
    return _add_entries(args, [(Path(f), _read_entry(Path(f))) for f in args.files])


def cmd_registry_list(args: argparse.Namespace) -> int:
    from ledger.registry import pinned_authority
    from ledger.verify.registry import decode_entry

    authority = pinned_authority(args.data_dir)
    store = _store(args)
    try:
        logged = store.registry_entries()
    finally:
        store.close()
    rows = []
    for item in logged:
        e = decode_entry(item.entry, authority)
        row: dict[str, Any] = {"seq": e.seq, "log_index": item.log_index, "op": str(e.op),
                               "entry_id": e.entry_id.hex()}  # fmt: skip
        if e.device_id:
            row["device"] = e.device_id
        if e.site_id:
            row["site"] = e.site_id
        if e.kid:
            row["kid"] = e.kid.hex()
        if e.op == "retire":
            row["last_seq"] = e.last_seq
        if e.record:
            row["record"] = e.record.hex()
        rows.append(row)
    if args.json:
        print(json.dumps({"authority": authority.authority_id, "entries": rows}))
        return 0
    print(f"registry authority {authority.authority_id} ({authority.fingerprint}): "
          f"{len(rows)} entries")  # fmt: skip
    for row in rows:
        extra = " ".join(f"{k}={v}" for k, v in row.items() if k not in ("seq", "log_index", "op",
                                                                          "entry_id"))  # fmt: skip
        print(f"  {row['seq']:>4}  log {row['log_index']:>6}  {row['op']:<9} {extra}")
    return 0


def _iso_ms(text: str, option: str) -> int:
    """An ISO 8601 time as Unix ms; without an offset it is UTC."""
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise ConfigError("command line", option, f"not an ISO 8601 time: {text!r}") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).isoformat(timespec="seconds")


def cmd_revoke(args: argparse.Namespace) -> int:
    """Revoke the device's keys in the registry and its certificates in the broker's CRL."""
    from ledger.pki import Pki

    store = _store(args)
    try:
        n = store.revoke(args.device)
        ends = _chain_ends(store, args.device)
    finally:
        store.close()
    pki = Pki(_pki_dir(args))
    certs = pki.revoke(args.device) if pki.ca_file.exists() else []
    if n == 0 and not certs:
        raise ConfigError("registry", args.device, "no enrolled, unrevoked key for this device")
    if args.json:
        print(json.dumps({
            "device": args.device, "keys_revoked": n, "certificates_revoked": len(certs),
            "crl": str(pki.crl_file) if certs else None,
            "retire": [
                {"kid": kid.hex(), "last_seq": seq,
                 "last_checkpoint": checkpoint.hex() if checkpoint else None}
                for kid, seq, checkpoint in ends
            ],
        }))  # fmt: skip
        return 0
    print(f"revoked {n} key(s) of {args.device}; its later records will be rejected")
    if certs:
        print(
            f"revoked {len(certs)} certificate(s) in {pki.crl_file}: reload the broker "
            "(systemctl reload mosquitto) to refuse its TLS connections"
        )
    # The ledger can stop logging a device; only the registry authority can tell verifiers
    # where its chain ends.
    for kid, seq, checkpoint in ends:
        option = f" --last-checkpoint {checkpoint.hex()}" if checkpoint else ""
        print(
            f"ask the registry authority to retire key {kid.hex()} where the ledger's log of it "
            f"ends: custody-registry retire {kid.hex()} --last-seq {seq}{option}"
        )
    return 0


def _chain_ends(store: Store, device_id: str) -> list[tuple[bytes, int, bytes | None]]:
    """(kid, last logged seq, last logged checkpoint's event id) of each of the device's keys."""
    checkpoints: dict[bytes, bytes] = {}
    for event in store.events(device_id=device_id, types=["checkpoint"]):
        checkpoints[event.kid] = event.event_id  # in log order: the last one wins
    return [
        (k.kid, store.head(k.kid)[0], checkpoints.get(k.kid))
        for k in store.device_keys()
        if k.device_id == device_id and k.last_seq is None
    ]


def _pki_dir(args: argparse.Namespace) -> Path:
    return Path(args.pki_dir) if args.pki_dir else args.data_dir / "pki"


def cmd_pki_init(args: argparse.Namespace) -> int:
    from ledger.pki import Pki

    print(Pki(_pki_dir(args)).init(args.name))
    return 0


def cmd_pki_issue(args: argparse.Namespace) -> int:
    """A gateway's client certificate from the CSR `custody-agent init` wrote (tls.csr)."""
    from ledger.pki import Pki

    csr = None
    if args.csr is not None:
        try:
            csr = Path(args.csr).read_bytes()
        except OSError as exc:
            raise ConfigError(args.csr, "-", f"cannot read: {exc.strerror}") from exc
    print(Pki(_pki_dir(args)).issue_device(args.device, csr, source=args.csr or "-"))
    return 0


def cmd_pki_issue_broker(args: argparse.Namespace) -> int:
    from ledger.pki import Pki

    print(Pki(_pki_dir(args)).issue_broker(args.host))
    return 0


def cmd_pki_issue_ledger(args: argparse.Namespace) -> int:
    from ledger.pki import Pki

    print(Pki(_pki_dir(args)).issue_ledger())
    return 0


def cmd_pki_crl(args: argparse.Namespace) -> int:
    from ledger.pki import Pki

    print(Pki(_pki_dir(args)).write_crl(args.days))
    return 0


def cmd_pki_list(args: argparse.Namespace) -> int:
    from ledger.pki import Pki

    issued = Pki(_pki_dir(args)).issued()
    if args.json:
        print(json.dumps([i.to_json() for i in issued], indent=2))
        return 0
    for i in issued:
        state = f"REVOKED {_iso(i.revoked_ms)}" if i.revoked_ms else f"until {_iso(i.not_after_ms)}"
        print(f"{i.role:<7} {i.common_name:<24} {i.serial:032x} {state}")
    return 0


def cmd_devices(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        forks: dict[str, int] = {}
        for fork in store.forks():
            forks[fork.kid.hex()] = forks.get(fork.kid.hex(), 0) + 1
        now = dt.datetime.now(dt.UTC).timestamp() * 1000
        rows: list[dict[str, Any]] = [
            {
                "device_id": k.device_id,
                "site_id": k.site_id,
                "kid": k.kid.hex(),
                "public_key": k.public_key.hex(),
                "enrolled_ms": k.enrolled_ms,
                "valid_from_ms": k.valid_from_ms,
                "revoked_ms": k.revoked_ms,
                "head_seq": store.head(k.kid)[0],
                # Where the registry (or a rotation) ends the key's chain; None while open.
                "last_seq": k.last_seq,
                "enrolled_index": k.enrolled_index,
                "forks": forks.get(k.kid.hex(), 0),
            }
            for k in store.device_keys()
        ]
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        if r["revoked_ms"] and r["last_seq"] is not None:
            state = f"ENDS AT SEQ {r['last_seq']}"
        elif r["revoked_ms"]:
            state = "REVOKED"
        elif r["valid_from_ms"] > now:
            state = f"valid from {_iso(r['valid_from_ms'])}"
        else:
            state = "enrolled"
        alarm = f"  FORKS {r['forks']} (see `alarms`)" if r["forks"] else ""
        print(
            f"{r['device_id']:<20} {r['site_id']:<10} {r['kid']} {state:<9} "
            f"seq {r['head_seq']}{alarm}"
        )
    return 0


def cmd_rejections(args: argparse.Namespace) -> int:
    """What the intake refused, newest last: device, seq, reason (the store's rejection rows,
    pruned to ``run --rejection-retention``)."""
    if args.device is not None:
        validate_identifier(args.device, "device")
    since_ms = None if args.since is None else _iso_ms(args.since, "--since")
    if args.limit < 1:
        raise ConfigError("command line", "--limit", f"must be at least 1, not {args.limit}")
    store = _store(args)
    try:
        rows = store.rejection_list(args.device, since_ms, args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps([dict(r.to_json(), received=_iso(r.received_ms)) for r in rows],
                         indent=2))  # fmt: skip
        return 0
    if not rows:
        print("no rejections" + (f" of {args.device}" if args.device else "")
              + (f" since {args.since}" if args.since else ""))  # fmt: skip
        return 0
    for r in rows:
        seq = f"seq {r.seq}" if r.seq is not None else "no seq"
        count = f" ({r.count} records)" if r.count > 1 else ""
        print(f"{_iso(r.received_ms)}  {r.device_id:<20} {seq:<12} {r.reason}{count}")
    return 0


def cmd_alarms(args: argparse.Namespace) -> int:
    """Durable alarms: forks (two different signed events of one key at one seq) and dead
    letters (messages the intake could not handle at all)."""
    store = _store(args)
    try:
        alarms = store.forks()
        dead = store.dead_letters()
    finally:
        store.close()
    if args.json:
        print(json.dumps(
            [dict(a.to_json(), alarm="fork") for a in alarms]
            + [dict(d.to_json(), alarm="dead_letter") for d in dead], indent=2,
        ))  # fmt: skip
        return 0
    if not alarms and not dead:
        print("no alarms")
        return 0
    for a in alarms:
        print(
            f"FORK {a.device_id} kid {a.kid.hex()} seq {a.seq}: kept {a.kept_event_id.hex()}, "
            f"rejected {a.forked_event_id.hex()} (first seen {_iso(a.first_seen_ms)}, "
            f"{a.count}x)"
        )
    for d in dead:
        print(
            f"DEAD LETTER {d.device_id} {d.digest.hex()[:16]}: {len(d.payload)} bytes on "
            f"{d.topic}, {d.error} (first seen {_iso(d.first_seen_ms)}, last "
            f"{_iso(d.last_seen_ms)}, {d.count}x)"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the MQTT intake until interrupted (SIGINT/SIGTERM)."""
    import signal
    import threading

    from ledger.fairness import DeviceLimits
    from ledger.intake import Intake
    from ledger.keys import load_ledger_keypair
    from ledger.logs import configure_logging
    from ledger.service import IntakeSettings, LedgerService
    from sync.mqtt import BrokerConfig

    configure_logging(args.log_format)

    try:
        settings = IntakeSettings(
            limits=DeviceLimits(
                messages_per_s=args.device_messages_per_s,
                message_burst=2 * args.device_messages_per_s,
                records_per_s=args.device_records_per_s,
                record_burst=max(2 * args.device_records_per_s, 1_000),
                bytes_per_s=args.device_bytes_per_s,
                byte_burst=4 * args.device_bytes_per_s,
                queued_per_device=args.device_queue,
            ),
            rejection_retention=args.rejection_retention,
            dead_letter_keep=args.dead_letters,
            checkpoint_interval_s=args.checkpoint_interval,
            http=None if args.http == "off" else _host_port(args.http),
            page=LedgerPage(lambda: _store(args)),
            access=None if args.http == "off" else _page_access(args),
        )
    except ValueError as exc:
        raise ConfigError("custody-ledger run", "options", str(exc)) from exc
    if args.ca_file and args.cert_file and args.key_file:
        from ledger.client_tls import check_ledger_tls

        check_ledger_tls(args.ca_file, args.cert_file, args.key_file)
    store = _store(args)
    intake = Intake(store, load_ledger_keypair(args.data_dir), workers=args.check_workers)
    broker = BrokerConfig(
        url=args.broker, client_id=_client_id(args),
        ca_file=args.ca_file, cert_file=args.cert_file, key_file=args.key_file,
    )  # fmt: skip
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        service = LedgerService(intake, broker, settings=settings)
    except OSError as exc:
        intake.close()
        store.close()
        raise ConfigError("custody-ledger run", "--http", f"cannot listen on {args.http}: "
                          f"{exc.strerror}") from exc  # fmt: skip
    where = ""
    if service.http is not None:
        host, port = service.http.address
        where = f" (status page, /metrics and /healthz on {host}:{port})"
    print(f"ledger intake on {args.broker}{where}", file=sys.stderr, flush=True)
    try:
        service.run(stop)
    finally:
        intake.close()
        store.close()
    print(json.dumps(dict(service.counters)), file=sys.stderr)
    return 0


def _client_id(args: argparse.Namespace) -> str:
    """``--client-id``, else the CN of ``--cert-file``: the broker's identity plugin admits a
    certificate only under its own CN, or CN/WORKER for the ledger's workers
    (deploy/mosquitto/custody_identity.c). Without a certificate (mqtt://), the ACL's "ledger"."""
    if args.client_id:
        return str(args.client_id)
    if args.cert_file is None:
        return "ledger"
    from cryptography import x509

    from ledger.pki import common_name

    source = str(args.cert_file)
    try:
        cert = x509.load_pem_x509_certificate(Path(args.cert_file).read_bytes())
        return common_name(cert.subject)
    except OSError as exc:
        raise ConfigError(source, "-", f"cannot read: {exc.strerror}") from exc
    except (ValueError, SchemaError) as exc:
        raise ConfigError(source, "-", f"not a PEM certificate with one CN: {exc}") from exc


def _page_access(args: argparse.Namespace) -> Access:
    """Who may read the HTTP port: anyone on loopback, else ``--http-token-file``'s token."""
    token = None
    if args.http_token_file is not None:
        token = read_token(args.http_token_file, source="custody-ledger run",
                           key="--http-token-file")  # fmt: skip
    return Access(_host_port(args.http)[0], token, "--http-token-file")


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--http must be HOST:PORT (e.g. 127.0.0.1:9310) or off, got {text!r}")
    return host.strip("[]"), int(port)


def cmd_log_checkpoint(args: argparse.Namespace) -> int:
    from ledger.keys import load_ledger_keypair
    from ledger.log import issue_checkpoint

    store = _store(args)
    try:
        cp, data = issue_checkpoint(store, load_ledger_keypair(args.data_dir))
    finally:
        store.close()
    if args.out:
        replace_file(Path(args.out), data, mode=None)
    print(json.dumps({"size": cp.size, "root": cp.root.hex(), "time_ms": cp.time_ms,
                      "checkpoint": data.hex()}))  # fmt: skip
    return 0


def cmd_log_prove_inclusion(args: argparse.Namespace) -> int:
    from ledger.log import prove_inclusion

    store = _store(args)
    try:
        size = args.size if args.size is not None else store.log_size()
        _check_range(args.index < size, f"index {args.index} is not below tree size {size}")
        proof = prove_inclusion(store, args.index, size)
        leaf = store.leaf_hashes(args.index, args.index + 1)[0]
    finally:
        store.close()
    print(json.dumps({"index": args.index, "size": size, "leaf_hash": leaf.hex(),
                      "proof": [h.hex() for h in proof]}))  # fmt: skip
    return 0


def cmd_log_prove_consistency(args: argparse.Namespace) -> int:
    from ledger.log import prove_consistency

    store = _store(args)
    try:
        size = store.log_size()
        _check_range(0 < args.old <= args.new <= size, f"need 0 < OLD <= NEW <= {size}")
        proof = prove_consistency(store, args.old, args.new)
    finally:
        store.close()
    print(json.dumps({"old": args.old, "new": args.new, "proof": [h.hex() for h in proof]}))
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    """Prove a lot's claim; write the bundle for ``custody-verify``."""
    from ledger.keys import load_ledger_keypair
    from ledger.summary import CURRENT_POLICY, prove, select

    keys = load_ledger_keypair(args.data_dir)
    store = _store(args)
    try:
        # build_summary's two steps, so the bar moves between them: the proofs take longest.
        with Progress("summary", 2) as progress:
            selection = select(store, args.data_dir, args.lot, CURRENT_POLICY)
            progress(1)
            result = prove(store, keys, args.data_dir, selection, audience=args.audience)
            progress(2)
    finally:
        store.close()
    replace_file(args.out, result.bundle, mode=None)
    st = result.statement
    info = {
        "lot": st.lot, "refiner": st.refiner, "total_kg": float(units_to_kg(st.total)),
        "tolerance_kg": float(units_to_kg(st.tolerance)), "sites": list(st.sites),
        "records": result.records, "balance_checks": result.balance_checks,
        "bytes": len(result.bundle), "out": str(args.out), "notes": list(result.notes),
    }  # fmt: skip
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"lot {st.lot}: {format_kg(st.total)} kg from {', '.join(st.sites)} to {st.refiner}; "
            f"{result.records} records, {result.balance_checks} balance checks; "
            f"{len(result.bundle)} bytes written to {args.out}"
        )
        for note in result.notes:
            print(f"note: {note}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """The logged captures as one EPCIS 2.0 document, with the clear masses the ledger verified."""
    import time

    try:
        locations = epcis.locations_from_options(args.site_location, args.read_point, args.tz)
    except ValueError as exc:
        raise ConfigError("command line", "--site-location/--read-point/--tz", str(exc)) from exc
    if args.device is not None:
        validate_identifier(args.device, "device")
    store = _store(args)
    try:
        sources = []
        with Progress("reading", None) as progress:
            for logged in store.events(args.device):
                # Clear masses were opened from the sealed boxes and checked against the signed
                # commitments at intake (ledger.intake); weighings only, one query each.
                masses = store.masses(logged.event_id) if logged.type == "weighing" else None
                sources.append(epcis.decode_source(logged.envelope, masses or None))
                progress(len(sources))
        with Progress("exporting", len(sources)) as progress:
            result = epcis.epcis_document(
                sources, locations, creation_ms=time.time_ns() // 1_000_000, progress=progress
            )
    finally:
        store.close()
    out = Path(args.out)
    replace_file(out, result.text().encode("utf-8"), mode=None)
    if args.json:
        print(json.dumps({
            "format": "epcis", "out": str(out), "exported": result.exported,
            "error_declarations": result.error_declarations, "skipped": result.skipped,
            "voids_unmatched": result.voids_unmatched,
        }))  # fmt: skip
    else:
        print(result.describe(out))
    return 0


def _check_range(ok: bool, reason: str) -> None:
    if not ok:
        raise ConfigError("command line", "size", reason)


# --- the command table ------------------------------------------------------------------
def _needs_action(args: argparse.Namespace) -> int:  # pragma: no cover - required subcommand
    return ExitCode.USAGE


JSON = arg("--json", action="store_true", help="print JSON")
PKI_DIR_HELP = "the CA's directory (default DATA_DIR/pki)"
VALID_FROM_HELP = (
    "accept the key's records only from this time on (default: now; UTC without an offset); "
    "earlier arrivals are rejected as 'key not yet valid' and kept by the device"
)


def _commands() -> Command:
    return COMMANDS


COMMANDS = Command(
    "custody-ledger",
    "The cobalt-custody ledger: verifies and logs gateway records exactly once.",
    epilog='Exit codes: the table in README.md ("Exit codes, the same for all four programs"); '
    f"{cli_table.EXIT_BROKEN_PIPE} when the reader of the output went away (| head).",
    version=__version__,
    required=False,  # without a command it prints its help
    shared=(  # before or after the command's name
        arg("--data-dir", type=Path,
            help="ledger data directory (default: $CUSTODY_DATA_DIR, else /var/lib/custody/ledger "
            "for a system install, else ~/.local/share/custody/ledger)"),
        arg("--db", metavar="URL",
            help="store: a SQLite file path or postgresql://... for several intake workers "
            "(default: SQLite in the data dir)"),
    ),
    commands=(
        Command(
            "init",
            f"create the ledger's signing and sealing keys (0600) and {PUBLIC_FILE} for gateways",
            cmd_init,
            args=(
                arg("--ledger-id", default="ledger", help="a name for this ledger"),
                arg("--authority", metavar="FILE",
                    help="pin the registry authority's authority-public.json (or later: "
                    "registry trust)"),
            ),
        ),
        *(
            Command(
                name,
                "log the registry authority's enrolment entry for a gateway (as registry add)"
                if name == "enrol" else "the old spelling of enrol (the same command)",
                cmd_enrol,
                args=(
                    arg("record", help="the entry file custody-registry enrol wrote"),
                    arg("--valid-from", metavar="ISO8601", help=VALID_FROM_HELP),
                ),
            )
            # One spelling with custody-agent and custody-registry; "enroll" stays for scripts.
            for name in ("enrol", "enroll")
        ),
        Command(
            "revoke",
            "revoke every key of a device (later records are rejected) and its certificates "
            "(CRL)",
            cmd_revoke,
            args=(
                arg("device", help="device id"),
                arg("--pki-dir", metavar="DIR", help=PKI_DIR_HELP),
                JSON,
            ),
        ),
        Command(
            "pki", "the MQTT link's CA: certificates for gateways, broker, ledger", _needs_action,
            # Before or after the action: `pki --pki-dir DIR issue`, `pki issue --pki-dir DIR`.
            shared=(arg("--pki-dir", metavar="DIR", help=PKI_DIR_HELP),),
            commands=(
                Command(
                    "init", "create the CA: ca.key (0600), ca.crt and an empty crl.pem",
                    cmd_pki_init,
                    args=(arg("--name", default="custody MQTT CA", help="the CA's common name"),),
                ),
                Command(
                    "issue",
                    "issue a gateway's client certificate (CN = device id) from its CSR; prints "
                    "its path",
                    cmd_pki_issue,
                    args=(
                        arg("device", help="device id (must be the CSR's CN)"),
                        arg("--csr", metavar="FILE",
                            help="the gateway's tls.csr; without it the CA makes the key too "
                            "(labs, recovery only)"),
                    ),
                ),
                Command(
                    "issue-broker", "issue the broker's server certificate", cmd_pki_issue_broker,
                    args=(arg("--host", action="append", required=True,
                              help="a DNS name or IP address gateways dial (repeatable)"),),
                ),
                Command("issue-ledger", "issue the ledger's client certificate",
                        cmd_pki_issue_ledger),
                Command(
                    "crl", "re-sign the CRL (before it expires; then reload the broker)",
                    cmd_pki_crl,
                    args=(arg("--days", type=int, default=90,
                              help="validity in days (default 90)"),),
                ),
                Command("list", "list issued certificates and their revocation", cmd_pki_list,
                        args=(JSON,)),
            ),
        ),
        Command(
            "run", "run the MQTT intake: verify, log exactly once, ack", cmd_run,
            args=(
                arg("--broker", required=True, metavar="URL", help="mqtts://host:8883 or mqtt://"),
                arg("--client-id", metavar="ID",
                    help="MQTT client id of the persistent session (default: the CN of "
                    "--cert-file, i.e. ledger); each further worker sharing the subscription: "
                    "ledger/NAME, e.g. ledger/2"),
                arg("--ca-file", type=Path, help="CA of the broker certificate (mqtts)"),
                arg("--cert-file", type=Path,
                    help="the ledger's client certificate (CN=ledger)"),
                arg("--key-file", type=Path, help="its private key"),
                arg("--checkpoint-interval", type=float, default=300.0, metavar="S",
                    help="sign a checkpoint of the log every S seconds while it grows "
                    "(default 300)"),
                arg("--check-workers", type=int, default=1, metavar="N",
                    help="processes sharing the signature and mass checks of large batches "
                    "(default 1)"),
                arg("--http", default="127.0.0.1:9310", metavar="HOST:PORT",
                    help="serve /metrics and /healthz there, or 'off' (default "
                    "127.0.0.1:9310; port 0 picks a free one)"),
                arg("--http-token-file", type=Path, metavar="FILE",
                    help="a token (one line, 16+ characters) that the status page at /, "
                    "/metrics and /healthz then ask for; required for the page when --http "
                    "is not a loopback address"),
                arg("--device-messages-per-s", type=float, default=50.0, metavar="N",
                    help="messages per second one device may send before the excess is "
                    "dropped (default 50)"),
                arg("--device-records-per-s", type=float, default=1000.0, metavar="N",
                    help="records per second one device may have checked (default 1000)"),
                arg("--device-bytes-per-s", type=float, default=1024 * 1024, metavar="N",
                    help="bytes per second one device may send (default 1 MiB)"),
                arg("--device-queue", type=int, default=4, metavar="N",
                    help="messages of one device waiting for the intake at most (default 4)"),
                arg("--rejection-retention", type=int, default=100_000, metavar="ROWS",
                    help="rejection rows kept, the newest (default 100000)"),
                arg("--dead-letters", type=int, default=100, metavar="N",
                    help="messages the intake could not handle kept at most (default 100)"),
                arg("--log-format", choices=("text", "json"), default="text",
                    help="stderr log lines as text, or JSON with the device and reasons as "
                    "fields (default text)"),
            ),
        ),
        Command(
            "summary", "prove a lot's total, receipt and mass balance in one bundle", cmd_summary,
            args=(
                arg("--lot", required=True, help="the lot id"),
                arg("--out", required=True, type=Path, metavar="FILE",
                    help="the bundle to write"),
                arg("--audience", choices=("buyer", "regulator", "auditor"), default="buyer",
                    help="who receives it (the disclosure policy depends on it; default buyer)"),
                JSON,
            ),
        ),
        Command(
            "registry", "the device registry: the registry authority's entries", _needs_action,
            commands=(
                Command(
                    "trust", "pin the registry authority whose entries this ledger logs",
                    cmd_registry_trust,
                    description="Pin the registry authority (its authority-public.json): only "
                    "entries it signed are logged. It must not be this ledger's own key.",
                    args=(
                        arg("file", metavar="FILE",
                            help="the authority's authority-public.json"),
                        arg("--replace", action="store_true",
                            help="replace another pinned authority (only when the consortium "
                            "did)"),
                    ),
                ),
                Command(
                    "add",
                    "log registry entries the authority signed (enrol, retire, stock, "
                    "heartbeat)",
                    cmd_registry_add,
                    description="Verify registry entries under the pinned authority and log "
                    "them, in seq order; an entry logged already is reported, not logged again.",
                    args=(
                        arg("files", nargs="+", metavar="ENTRY",
                            help="entry files (custody-registry)"),
                        arg("--valid-from", metavar="ISO8601",
                            help="for enrolments: accept the key's records only from this time "
                            "on (UTC without an offset); earlier arrivals are rejected as 'key "
                            "not yet valid' and kept by the device"),
                        JSON,
                    ),
                ),
                Command(
                    "list", "the registry entries this ledger logged", cmd_registry_list,
                    description="List the registry entries this ledger logged, in seq order.",
                    args=(JSON,),
                ),
            ),
        ),
        Command(
            "log", "the transparency log: checkpoints and proofs", _needs_action,
            commands=(
                Command(
                    "checkpoint", "sign a checkpoint (size, root, time) of the log now",
                    cmd_log_checkpoint,
                    description="Sign a checkpoint (size, root, time) of the log now; print it "
                    "as JSON.",
                    args=(arg("--out", metavar="FILE",
                              help="also write the COSE checkpoint here"),),
                ),
                Command(
                    "prove-inclusion", "RFC 9162 inclusion proof of a log entry",
                    cmd_log_prove_inclusion,
                    description="RFC 9162 inclusion proof of the entry at INDEX in the tree of "
                    "SIZE leaves.",
                    args=(
                        arg("index", type=int, help="log index of the entry"),
                        arg("--size", type=int, help="tree size (default: the current size)"),
                    ),
                ),
                Command(
                    "prove-consistency", "RFC 9162 consistency proof between two tree sizes",
                    cmd_log_prove_consistency,
                    description="RFC 9162 consistency proof that the tree of OLD leaves is a "
                    "prefix of NEW.",
                    args=(
                        arg("old", type=int, help="older tree size"),
                        arg("new", type=int, help="newer tree size"),
                    ),
                ),
            ),
        ),
        Command(
            "export",
            "export logged captures as one GS1 EPCIS 2.0 JSON-LD document, with clear masses",
            cmd_export,
            args=(
                arg("--format", choices=["epcis"], default="epcis",
                    help="epcis: EPCIS 2.0 JSON-LD (docs/protocol.md §3.3)"),
                arg("--out", required=True, type=Path, metavar="FILE",
                    help="the file to write"),
                arg("--device",
                    help="only this device's events (default: all, in log order)"),
                *(arg(flag, **options) for flag, options in epcis.LOCATION_OPTIONS),
                JSON,
            ),
        ),
        Command("devices", "list enrolled device keys, their chain heads and forks", cmd_devices,
                args=(JSON,)),
        Command("alarms", "list durable alarms: forks of a device key's chain", cmd_alarms,
                args=(JSON,)),
        Command(
            "rejections", "list records the intake refused, with the reason", cmd_rejections,
            description="List what the intake refused, oldest first: when, device, seq and "
            "the reason the device's signed ack gave. Rows are kept up to run "
            "--rejection-retention (the newest).",
            args=(
                arg("--device", help="only this device's rejections"),
                arg("--since", metavar="ISO8601",
                    help="only rejections received at or after this time (UTC without an "
                    "offset)"),
                arg("--limit", type=int, default=1000, metavar="N",
                    help="the newest N rows at most (default 1000)"),
                JSON,
            ),
        ),
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
    args.data_dir = resolve_data_dir(args.data_dir)
    try:
        code: int = args.func(args)
    except CustodyError as exc:
        print(f"custody-ledger: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
