"""``custody-agent``: the gateway's command line, a thin shell over the library.

Each command builds objects, makes one library call and prints the result
(``--json`` where scripts read it). Our exceptions map to exit codes and a
one-line message on stderr (``custody.exits``); a traceback means a bug.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent import audit, cli_table, devices, enrol
from agent.cli_table import Command, OneOf, Progress, arg
from agent.identity import load_device_key
from agent.outbox import Outbox, RecordState, StoredEvent
from agent.paths import DataDir, resolve_data_dir
from agent.recorder import Recorder
from agent.settings import SETTINGS, check_config, deprecation_notes, load_config, split_port
from agent.status import read_status
from custody import __version__, epcis
from custody.commitment import MAX_SUM_UNITS
from custody.envelope import peek, verify_envelope
from custody.errors import CaptureError, ConfigError, CustodyError, VerificationError
from custody.exits import ExitCode, exit_code_for
from custody.files import fsync_directory, replace_file
from custody.mass import kg_to_units, units_to_kg
from firmware_bridge.errors import DeviceError, PortConfigError, PortOpenError

__all__ = ["COMMANDS", "build_parser", "main"]


# --- output helpers -----------------------------------------------------------------
def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True))


def _event_json(e: StoredEvent, outbox: Outbox | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "seq": e.seq,
        "event_id": e.event_id.hex(),
        "type": e.type,
        "device_time_ms": e.device_time_ms,
        "time_quality": e.time_quality,
        "boot": e.boot,
        "manual": e.manual,
        "state": str(e.state),
        "kid": e.kid.hex(),
    }
    if outbox is not None:
        masses = outbox.openings(e.event_id)
        if masses:
            out["mass_kg"] = {n: str(units_to_kg(v)) for n, (v, _) in sorted(masses.items())}
    return out


def _describe(e: StoredEvent) -> str:
    """A few words from the signed body for the listing (decoded, not re-verified)."""
    try:
        body = peek(e.envelope).get("body", {})
    except VerificationError:
        return "(undecodable)"
    parts = []
    for key in ("pass", "vehicle", "seal", "lot", "reason"):
        if key in body:
            parts.append(f"{key}={body[key]}")
    if "seals" in body:
        parts.append("seals=" + ",".join(body["seals"]))
    if "children" in body:
        parts.append(f"{body['action']} {len(body['children'])} bag(s)")
    if "target" in body:
        parts.append(f"voids {body['target'].hex()[:16]}")
    return " ".join(parts)


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ms / 1000)) + "Z"


# --- commands -------------------------------------------------------------------------
def cmd_init(args: argparse.Namespace) -> int:
    if args.replace:
        return _replace_identity(args)
    if args.abandon_unsynced:
        raise ConfigError(
            "command line", "--abandon-unsynced", "only means something with --replace"
        )
    missing = [
        flag for flag, value in (("--site", args.site), ("--device", args.device)) if not value
    ]
    if missing:
        raise ConfigError("command line", missing[0], "required to initialise a gateway")
    record = enrol.initialise(
        args.data_dir,
        site_id=args.site,
        device_id=args.device,
        ledger_key_file=Path(args.ledger_key) if args.ledger_key else None,
    )
    out = _enrolment_json(args.data_dir, record)
    _print_json(out)
    print(
        f"initialised {args.data_dir}; send the record above to the registry authority (it "
        f"enrols the key at its site) and {out['csr_file']} to the ledger's operator (for the "
        "client certificate)",
        file=sys.stderr,
    )
    return 0


def _replace_identity(args: argparse.Namespace) -> int:
    """``init --replace``: archive the old ledger's identity, make one for the new ledger."""
    if not args.ledger_key:
        raise ConfigError(
            "command line", "--ledger-key", "--replace needs the new ledger's public-key file"
        )
    record, old = enrol.replace_identity(
        args.data_dir, ledger_key_file=Path(args.ledger_key), site_id=args.site,
        device_id=args.device, abandon_unsynced=args.abandon_unsynced,
    )  # fmt: skip
    out = _enrolment_json(args.data_dir, record)
    out["archive"] = str(old.archive)
    out["old_ledger_id"] = old.old_ledger_id
    out["abandoned"] = old.abandoned
    _print_json(out)
    abandoned = sum(old.abandoned.values())
    print(
        f"the identity that ledger {old.old_ledger_id!r} knows is archived in {old.archive}"
        + (f" with {abandoned} record(s) it never acknowledged" if abandoned else "")
        + f" (check it: custody-agent --data-dir {old.archive} events verify).\n"
        f"{args.data_dir} now has a new device key, TLS key and empty outbox; sync.* points "
        "nowhere until you enrol. Next:\n"
        "  1. registry authority: custody-registry enrol RECORD.json --site "
        f"{record.site_id} (RECORD.json = the JSON above)\n"
        "  2. ledger operator: custody-ledger enroll ENTRY; custody-ledger pki issue "
        f"{record.device_id} --csr {out['csr_file']}\n"
        "  3. here: custody-agent enrol --cert-file CERT --ca-file CA.crt --broker URL\n"
        "  4. custody-agent config check; start the service",
        file=sys.stderr,
    )
    return 0


def _enrolment_json(data_dir: Path, record: enrol.EnrolmentRecord) -> dict[str, Any]:
    """The enrolment record plus where the MQTT client key (stays here) and its CSR (goes to
    the ledger operator with the record) are."""
    out = record.to_json()
    out["tls_key_file"] = str(data_dir / enrol.TLS_KEY_FILE)
    out["csr_file"] = str(data_dir / enrol.CSR_FILE)
    return out


def cmd_enrol(args: argparse.Namespace) -> int:
    """Install what the ledger operator sent back and point the config at it."""
    changed = enrol.install_enrolment(
        args.data_dir, cert_file=Path(args.cert_file), ca_file=Path(args.ca_file),
        ledger_key_file=Path(args.ledger_key) if args.ledger_key else None,
        broker_url=args.broker,
    )  # fmt: skip
    if args.json:
        _print_json(changed)
        return 0
    for key, value in changed.items():
        print(f"{key} = {value}")
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    """A new signing key, announced by a key_rotation event signed with the old one."""
    from agent import rotation

    paths = DataDir(args.data_dir)
    rotation.refuse_if_service_running(paths)
    with _recorder(args) as rec:
        old_kid = rec.key.kid
        event = rec.rotate_key()
        out = {
            "old_kid": old_kid.hex(), "new_kid": rec.key.kid.hex(),
            "public_key": rec.key.public_key.hex(), "rotation_seq": event.seq,
            "rotation_event_id": event.event_id.hex(),
            "retired_key_file": str(rotation.retired_key_path(paths, old_kid)),
        }  # fmt: skip
    if args.json:
        _print_json(out)
    else:
        print(
            f"rotated: key {out['old_kid']} -> {out['new_kid']} (key_rotation at seq "
            f"{out['rotation_seq']}); new records start a new chain at seq 1; the old key is "
            f"kept at {out['retired_key_file']}"
        )
    return 0


def cmd_keys_show(args: argparse.Namespace) -> int:
    cfg = load_config(DataDir(args.data_dir).config)
    record = enrol.enrolment_record(args.data_dir, cfg.device_id, cfg.site_id)
    if args.json:
        _print_json(_enrolment_json(args.data_dir, record))
    else:
        print(f"device     {record.device_id}\nsite       {record.site_id}")
        print(f"public key {record.public_key.hex()}\nkid        {record.kid.hex()}")
    return 0


def cmd_config_check(args: argparse.Namespace) -> int:
    path = DataDir(args.data_dir).config
    problems = check_config(path)
    notes = deprecation_notes(path)
    if args.json:
        _print_json(
            {
                "file": str(path),
                "ok": not problems,
                "problems": [{"key": p.key, "reason": p.reason} for p in problems],
                "notes": notes,
            }
        )
        return ExitCode.CONFIG if problems else ExitCode.OK
    for note in notes:
        print(f"note: {note}")
    if problems:
        for p in problems:
            print(p)  # file: key: reason, or file: reason for the file as a whole
    else:
        print(f"{path}: ok")
    return ExitCode.CONFIG if problems else ExitCode.OK


def cmd_config_set(args: argparse.Namespace) -> int:
    pairs = args.pairs
    if len(pairs) % 2:
        raise ConfigError("command line", pairs[-1], "expected KEY VALUE pairs")
    changes = list(zip(pairs[::2], pairs[1::2], strict=True))
    enrol.set_settings(DataDir(args.data_dir).config, changes)
    for key, value in changes:
        print(f"{key} = {value}")
    return 0


def cmd_config_settings(args: argparse.Namespace) -> int:
    if args.json:
        _print_json([
            {"key": s.key, "default": s.default, "required": s.default is None, "help": s.help}
            for s in SETTINGS
        ])  # fmt: skip
        return 0
    for s in SETTINGS:
        default = "(required)" if s.default is None else json.dumps(s.default)
        print(f"{s.key} = {default}\n    {s.help}")
    return 0


def _recorder(args: argparse.Namespace) -> Recorder:
    return Recorder(args.data_dir, boot_reason="cli")


def _print_recorded(e: StoredEvent, recorder: Recorder, as_json: bool) -> None:
    if as_json:
        _print_json(_event_json(e, recorder.outbox))
        return
    line = f"recorded {e.type} seq {e.seq} id {e.event_id.hex()[:16]}"
    masses = recorder.outbox.openings(e.event_id)
    if masses:
        line += " (" + ", ".join(f"{n} {units_to_kg(v)} kg" for n, (v, _) in masses.items()) + ")"
    print(line)


def cmd_record_weighing(args: argparse.Namespace) -> int:
    gross = kg_to_units(args.gross_kg)
    tare = kg_to_units(args.tare_kg) if args.tare_kg is not None else None
    with _recorder(args) as rec:
        e = rec.weighing(
            gross=gross, tare=tare, manual=True, vehicle=args.vehicle, note=args.note,
            lot=args.lot, direction=args.direction,
        )  # fmt: skip
        _print_recorded(e, rec, args.json)
    return 0


def cmd_record_seal(args: argparse.Namespace) -> int:
    with _recorder(args) as rec:
        e = rec.seal_scan(args.seal_id, manual=True, lot=args.lot, note=args.note)
        _print_recorded(e, rec, args.json)
    return 0


def cmd_record_void(args: argparse.Namespace) -> int:
    with _recorder(args) as rec:
        target = rec.outbox.find(args.event)
        if target is None:
            raise CaptureError(f"no single event matches {args.event!r}")
        e = rec.void(target.event_id, args.reason)
        _print_recorded(e, rec, args.json)
    return 0


def cmd_lot_close(args: argparse.Namespace) -> int:
    """Commit to this gateway's bags of a lot (one contribution), then a checkpoint."""
    with _recorder(args) as rec:
        contribution, checkpoint = rec.lot_close(args.lot)
        if args.json:
            _print_json({
                "contribution": _event_json(contribution, rec.outbox),
                "checkpoint": _event_json(checkpoint, rec.outbox),
            })  # fmt: skip
        else:
            _print_recorded(contribution, rec, False)
            _print_recorded(checkpoint, rec, False)
    return 0


def cmd_stock_declare(args: argparse.Namespace) -> int:
    """Sign this site's opening stock once; the registry authority then pins that record."""
    units = kg_to_units(args.kg, limit=MAX_SUM_UNITS)
    with _recorder(args) as rec:
        e = rec.declare_stock(units, note=args.note)
        site = rec.config.site_id
    kg = str(units_to_kg(units))
    if args.json:
        _print_json({"event_id": e.event_id.hex(), "site": site, "units": units, "kg": kg})
    else:
        print(f"recorded opening stock of site {site}: {kg} kg, event id {e.event_id.hex()}")
        print(
            "next: ask the registry authority to pin it: "
            f"custody-registry stock {site} {e.event_id.hex()}"
        )
    return 0


def cmd_checkpoint(args: argparse.Namespace) -> int:
    """Sign the running sums of inputs and outputs now (the service does it every hour)."""
    with _recorder(args) as rec:
        _print_recorded(rec.checkpoint(), rec, args.json)
    return 0


def _open_outbox(args: argparse.Namespace) -> Outbox:
    """Open for reading: no start-up check, never quarantines (the service may be running)."""
    paths = DataDir(args.data_dir)
    load_config(paths.config)  # a bad config is reported before anything else
    return Outbox.open(paths.outbox, check=None, create=False)


def cmd_events_list(args: argparse.Namespace) -> int:
    outbox = _open_outbox(args)
    try:
        state = RecordState(args.state) if args.state else None
        events = outbox.events(state=state, limit=args.limit, newest_first=True)
        events.reverse()
        if args.json:
            _print_json([_event_json(e, outbox) for e in events])
            return 0
        print(
            f"{'seq':>5} {'time (UTC)':<20} {'clock':<8} {'type':<11} {'state':<7} {'id':<12} what"
        )
        for e in events:
            masses = outbox.openings(e.event_id)
            what = [f"{n}={units_to_kg(v)}kg" for n, (v, _) in sorted(masses.items())]
            what += [_describe(e)] + (["(manual)"] if e.manual else [])
            print(
                f"{e.seq:>5} {_utc(e.device_time_ms):<20} {e.time_quality:<8} {e.type:<11} "
                f"{e.state!s:<7} {e.event_id.hex()[:12]} {' '.join(w for w in what if w)}"
            )
    finally:
        outbox.close()
    return 0


def cmd_events_show(args: argparse.Namespace) -> int:
    outbox = _open_outbox(args)
    try:
        e = outbox.find(args.event)
        if e is None:
            raise CaptureError(f"no single event matches {args.event!r}")
        key = load_device_key(DataDir(args.data_dir).device_key)
        out = _event_json(e, outbox)
        if e.kid == key.kid:
            env = verify_envelope(e.envelope, key.public_key)
            out["payload"] = _jsonable(env.payload.to_map())
            out["signature"] = "valid"
        out["cose_hex"] = e.envelope.hex()
        _print_json(out)
    finally:
        outbox.close()
    return 0


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, bytes):
        return obj.hex()
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_jsonable(v) for v in obj]
    return obj


def cmd_events_export(args: argparse.Namespace) -> int:
    if args.format == "epcis":
        return _export_epcis(args)
    outbox = _open_outbox(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    try:
        key = load_device_key(DataDir(args.data_dir).device_key)
        total = sum(outbox.counts_by_state().values())
        with Progress("exporting", total) as progress:
            for kid in outbox.kids():
                # Events of a retired key go in a sub-folder named by its kid.
                target = out if kid == key.kid else out / kid.hex()
                target.mkdir(exist_ok=True)
                for e in outbox.iter_chain(kid):
                    # Each file's data is fsynced; the directory once below, not once a file.
                    replace_file(target / f"{e.seq}.cose", e.envelope, None, sync_directory=False)
                    n += 1
                    progress(n)
                fsync_directory(target)
        fsync_directory(out)  # the kid sub-folders' own names
    finally:
        outbox.close()
    if args.json:
        _print_json({"format": "cose", "out": str(out), "exported": n})
    else:
        print(f"exported {n} event(s) to {out}")
    return 0


def _export_epcis(args: argparse.Namespace) -> int:
    """One EPCIS 2.0 document; masses as commitments only (the clear values stay here)."""
    try:
        locations = epcis.locations_from_options(args.site_location, args.read_point, args.tz)
    except ValueError as exc:
        raise ConfigError("command line", "--site-location/--read-point/--tz", str(exc)) from exc
    outbox = _open_outbox(args)
    try:
        total = sum(outbox.counts_by_state().values())
        sources = (
            epcis.decode_source(e.envelope) for kid in outbox.kids() for e in outbox.iter_chain(kid)
        )
        with Progress("exporting", total) as progress:
            result = epcis.epcis_document(
                sources, locations, creation_ms=time.time_ns() // 1_000_000, progress=progress
            )
    finally:
        outbox.close()
    out = Path(args.out)
    replace_file(out, result.text().encode("utf-8"), mode=None)
    if args.json:
        _print_json({
            "format": "epcis", "out": str(out), "exported": result.exported,
            "error_declarations": result.error_declarations, "skipped": result.skipped,
            "voids_unmatched": result.voids_unmatched,
        })  # fmt: skip
    else:
        print(result.describe(out))
    return 0


def cmd_events_verify(args: argparse.Namespace) -> int:
    outbox = _open_outbox(args)
    try:
        key = load_device_key(DataDir(args.data_dir).device_key)
        total = sum(outbox.counts_by_state().values())
        with Progress("verifying", total) as progress:
            report = audit.verify_outbox(outbox, key, progress)
        if report.ok and not outbox.integrity_ok():
            report.ok, report.error = False, "PRAGMA integrity_check failed on the outbox"
    finally:
        outbox.close()
    if args.json:
        _print_json(report.to_json())
    elif report.ok:
        print(f"ok: {report.checked} event(s): signatures, chain and commitments verify")
    else:
        print(f"FAILED at seq {report.first_bad_seq}: {report.error}", file=sys.stderr)
    return ExitCode.OK if report.ok else ExitCode.VERIFICATION_FAILED


def cmd_status(args: argparse.Namespace) -> int:
    paths = DataDir(args.data_dir)
    cfg = load_config(paths.config)
    outbox = _open_outbox(args)
    try:
        st = read_status(
            outbox, budget_bytes=cfg.budget_mb * 2**20, alarm_percent=cfg.alarm_percent
        )
    finally:
        outbox.close()
    if args.json:
        where = {"device_id": cfg.device_id, "site_id": cfg.site_id, "data_dir": str(paths.root)}
        _print_json(where | st.as_json())
        return 0
    print(f"gateway {cfg.device_id} at site {cfg.site_id} ({paths.root})")
    print("events  " + ", ".join(f"{k} {v}" for k, v in st.events.items()))
    age = st.oldest_unacked_age_s
    print("oldest unacked  " + ("none (all acked)" if age is None else f"{age} s"))
    print(f"disk budget     {round(100 * st.disk_used_ratio, 2)}% of {cfg.budget_mb} MiB")
    print(f"clock quality   {st.clock_quality}   boot counter {st.boot_counter}")
    for a in st.alarms:
        print(f"ALARM {a['kind']}: {a['message']}")
    for reason, n in st.rejected_reasons.items():
        print(f"REJECTED by the ledger: {n} record(s): {reason}")
    return 0


def cmd_sync(args: argparse.Namespace) -> int:
    from agent.uplink import sync_once

    if args.from_db:
        return _sync_from_db(args)
    outbox = _open_outbox(args)
    try:
        counts = outbox.counts_by_state()
    finally:
        outbox.close()
    with Progress("acked", counts["pending"] + counts["sent"]) as progress:
        stats, after = sync_once(
            args.data_dir, broker_url=args.broker, timeout_s=args.timeout, progress=progress
        )
    summary = {
        "batches_sent": stats.batches_sent, "events_sent": stats.events_sent,
        "acked": stats.acked, "rejected": stats.rejected, "bad_acks": stats.bad_acks,
        "requeued": stats.requeued, "reconnects": stats.reconnects, "outbox": after,
    }  # fmt: skip
    if args.json:
        _print_json(summary)
    else:
        print(
            f"acked {stats.acked}, rejected {stats.rejected}, still unacked "
            f"{after['pending'] + after['sent']} ({stats.batches_sent} batch(es) sent)"
        )
        _print_rejections(args, stats.bad_ack_reasons)
    drained = after["pending"] + after["sent"] == 0
    return ExitCode.OK if drained else ExitCode.UNACKED


def _print_rejections(args: argparse.Namespace, bad_ack_reasons: list[str]) -> None:
    """Why the ledger refused records (its signed acks' reasons, kept in the outbox), and
    acks that failed verification: a bare count says nothing an operator can act on."""
    outbox = _open_outbox(args)
    try:
        reasons = outbox.rejected_reasons() if outbox.counts_by_state()["rejected"] else {}
    finally:
        outbox.close()
    for reason, n in reasons.items():
        print(f"REJECTED by the ledger: {n} record(s): {reason}")
    for reason in dict.fromkeys(bad_ack_reasons):  # distinct, in order
        print(f"BAD ACK (nothing released): {reason}")


def _sync_from_db(args: argparse.Namespace) -> int:
    """A broken gateway's outbox file: send what the ledger has not acked yet."""
    from agent.uplink import sync_from_db

    with Progress("acked", None) as progress:  # the file's backlog is counted inside
        device_id, stats, after = sync_from_db(
            args.data_dir, Path(args.from_db),
            cert_file=Path(args.cert_file) if args.cert_file else None,
            key_file=Path(args.key_file) if args.key_file else None,
            broker_url=args.broker, timeout_s=args.timeout, progress=progress,
        )  # fmt: skip
    summary = {
        "device_id": device_id, "from_db": args.from_db, "acked": stats.acked,
        "rejected": stats.rejected, "batches_sent": stats.batches_sent, "outbox": after,
    }  # fmt: skip
    if args.json:
        _print_json(summary)
    else:
        print(
            f"{device_id} ({args.from_db}): acked {stats.acked}, rejected {stats.rejected}, "
            f"still unacked {after['pending'] + after['sent']}"
        )
    return ExitCode.OK if after["pending"] + after["sent"] == 0 else ExitCode.UNACKED


def cmd_run(args: argparse.Namespace) -> int:
    from agent.service import run_service

    return run_service(args.data_dir, broker_url=args.broker, log_format=args.log_format)


def cmd_scan(args: argparse.Namespace) -> int:
    from agent.scan import ConsoleOptions, run_console

    scale_port, scale_dialect = args.scale_port, args.scale_dialect
    if scale_port:
        named, scale_port = split_port(scale_port)
        scale_dialect = _one_dialect("--scale-port", named, "--scale-dialect", scale_dialect)
    scanner_port = args.scanner_port
    if scanner_port:
        named, scanner_port = split_port(scanner_port)
        if named not in (None, "scanner-line"):
            raise UsageError(f"--scanner-port {args.scanner_port}: the scan console reads "
                             "scanner-line scanners only (scanner-line@URL)")  # fmt: skip
    opts = ConsoleOptions(
        args.data_dir, language=args.lang, scale_port=scale_port,
        scale_dialect=scale_dialect, scanner_port=scanner_port, camera=args.camera,
    )  # fmt: skip
    return run_console(opts)


def cmd_devices_dialects(args: argparse.Namespace) -> int:
    rows = devices.describe_dialects()
    if args.json:
        _print_json(rows)
        return 0
    for r in rows:
        print(f"{r['name']:<18} {r['kind']:<8} {r['serial']:<10} {r['description']}")
    return 0


class UsageError(Exception):
    """Options that parse but do not fit together; exits with the usage code."""


def _one_dialect(
    port_opt: str, named: str | None, dialect_opt: str, given: str | None
) -> str | None:
    """The dialect a ``DIALECT@URL`` port option names, or the older separate option's."""
    if named and given and named != given:
        raise UsageError(f"{port_opt} names dialect {named} but {dialect_opt} says {given}; "
                         f"give it once, as {port_opt} DIALECT@URL")  # fmt: skip
    return named or given


def cmd_devices_listen(args: argparse.Namespace) -> int:
    named, args.port = split_port(args.port)
    args.dialect = _one_dialect("--port", named, "--dialect", args.dialect)
    if not args.dialect:
        raise UsageError(
            f"--port {args.port}: name the dialect, as --port DIALECT@URL "
            "(e.g. xk3190-a12@/dev/ttyUSB0; `devices dialects` lists them)"
        )
    counters: dict[str, int] = {}
    try:
        for event in devices.listen(
            args.port, args.dialect, duration=args.duration, baudrate=args.baud
        ):
            if isinstance(event, dict):
                counters = event
            elif isinstance(event, devices.DialectHint):
                for line in [devices.hint_json(event)] if args.json else devices.hint_lines(event):
                    print(line, flush=True)
            else:
                print(devices.event_json(event) if args.json else devices.event_line(event),
                      flush=True)  # fmt: skip
    except PortOpenError as exc:
        print(f"custody-agent: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG if exc.must_act else ExitCode.DEVICE
    except KeyboardInterrupt:
        pass
    if args.json:
        print(json.dumps({"kind": "counters", "item": counters}))
    else:
        print("counters: " + ", ".join(f"{k} {v}" for k, v in counters.items()), file=sys.stderr)
    return 0


def cmd_devices_detect(args: argparse.Namespace) -> int:
    def progress(c: devices.Capture) -> None:
        if not args.json:
            asked = f", asked with {c.request}" if c.request else ""
            print(f"listened at {c.baud} {c.line_format}{asked}: {len(c.data)} byte(s)",
                  file=sys.stderr, flush=True)  # fmt: skip

    try:
        captures = devices.detect_captures(args.port, args.seconds, on_capture=progress)
    except PortOpenError as exc:
        print(f"custody-agent: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG if exc.must_act else ExitCode.DEVICE
    ranked = devices.rank(captures)
    best = ranked[0] if ranked else None
    heard = sum(len(c.data) for c in captures)
    config = devices.config_lines(args.port, best) if best else []
    note = devices.baud_note(best) if best else None
    if args.json:
        _print_json({
            "port": args.port, "bytes": heard,
            "captures": [{"baud": c.baud, "format": c.line_format, "request": c.request,
                          "bytes": len(c.data)} for c in captures],
            "results": [d.as_dict() for d in ranked],
            "best": best.as_dict() if best else None,
            "config": [{"for": what, "command": cmd} for what, cmd in config], "note": note,
        })  # fmt: skip
    else:
        for d in ranked[:10]:
            s = d.score
            asked = f"  (asked with {d.capture.request})" if d.capture.request else ""
            print(f"{s.dialect:<18} {s.confidence:>5.0%}  baud {d.capture.baud} "
                  f"{d.capture.line_format}  {s.frames} frame(s), {s.errors} error(s), "
                  f"{s.dropped_bytes} of {s.bytes_in} byte(s) dropped{asked}")  # fmt: skip
        if best:
            print(f"best: {best.score.dialect}; to use it:")
            for what, cmd in config:
                print(f"  # {what}\n  {cmd}")
            if note:
                print(f"note: {note}")
    if best is not None:
        return ExitCode.OK
    sample = next((c.data for c in captures if c.data), b"")
    why = (
        f"no dialect decodes the {heard} byte(s) heard: {devices.raw_bytes_text(sample)}"
        if heard
        else "nothing heard at any line setting, even when asked (is the device on and sending? "
        "are TX and RX crossed?)"
    )
    print(f"custody-agent: error: {args.port}: {why}", file=sys.stderr)
    return ExitCode.DEVICE


def cmd_sim(args: argparse.Namespace) -> int:
    from firmware_bridge.sim.runner import Faults, PortSink, PtySink, Simulator, TcpSink

    sink: PtySink | TcpSink | PortSink
    if args.port:
        sink = PortSink(args.port)
    elif args.listen:
        host, _, port = args.listen.rpartition(":")
        sink = TcpSink(host or "127.0.0.1", int(port))
    else:
        sink = PtySink(Path(args.link) if args.link else None)
    sim = Simulator(
        args.kind, args.dialect or _default_dialect(args.kind), sink, rate=args.rate,
        seed=args.seed, faults=Faults(noise=args.noise, bad_checksum=args.bad_checksum),
    )  # fmt: skip
    print(sink.path, flush=True)  # the port to give `devices listen --port` or the config
    try:
        stats = sim.run(duration=args.duration, frames=args.frames)
    except KeyboardInterrupt:
        stats = sim.stats
    finally:
        sink.close()
    print(f"sent {stats.frames} frame(s), {stats.noise_bursts} noise burst(s), "
          f"{stats.corrupted} corrupted", file=sys.stderr)  # fmt: skip
    return 0


def _default_dialect(kind: str) -> str:
    from firmware_bridge.sim.runner import KINDS

    return KINDS[kind][0]


def cmd_camera_decode(args: argparse.Namespace) -> int:
    missed = total = 0
    for result in devices.decode_images([Path(p) for p in args.images]):
        total += 1
        missed += result["status"] != "codes"
        if args.json:
            print(json.dumps(result), flush=True)  # JSON escapes control characters
            continue
        if result["status"] == "unreadable":
            print(f"{result['path']}: unreadable: {result['error']}")
        elif result["status"] == "no code":
            print(f"{result['path']}: no code found")
        for code in result["codes"]:
            # repr() shows CR, LF and other control characters escaped, never raw
            print(f"{result['path']}: {code.get('symbology')} {code.get('text')!r}")
    if missed:
        print(f"{missed} of {total} image(s) gave no code", file=sys.stderr)
        return ExitCode.NOT_ALL_DECODED
    return ExitCode.OK


# --- the command table ------------------------------------------------------------------
def _group_help(args: argparse.Namespace) -> int:  # pragma: no cover - subcommand required
    return ExitCode.USAGE


DATA_DIR = arg(
    "--data-dir", type=Path, default=argparse.SUPPRESS,
    help="gateway data directory (default: $CUSTODY_DATA_DIR, else /var/lib/custody for a "
    "system install, else ~/.local/share/custody)",
)  # fmt: skip
JSON = arg("--json", action="store_true", help="print JSON")
EVENT = arg("event", help="event id (or unique prefix of 8+ hex digits) or seq")
NOTE = arg("--note", help="free text note")
BROKER = arg("--broker", metavar="URL", help="override sync.broker (mqtt:// or mqtts://)")


def _commands() -> Command:
    return COMMANDS


EXIT_CODES_EPILOG = (
    'Exit codes: the table in README.md ("Exit codes, the same for all four programs"); '
    f"{cli_table.EXIT_BROKEN_PIPE} when the reader of the output went away (| head)."
)

COMMANDS = Command(
    "custody-agent",
    "cobalt-custody edge capture agent: signed, durable custody records.",
    epilog=EXIT_CODES_EPILOG,
    version=__version__,
    shared=(DATA_DIR,),  # every command takes --data-dir, before or after its name
    commands=(
        Command(
            "init", "create this gateway's key and config; print its enrolment", cmd_init,
            args=(
                arg("--site", help="site id, e.g. KOL-01 (with --replace: kept if not given)"),
                arg("--device", help="device id, e.g. gw-kol-01 (with --replace: kept if not "
                    "given)"),
                arg("--ledger-key", metavar="FILE", help="ledger public-key JSON to pin"),
                arg("--replace", action="store_true",
                    help="move an initialised gateway to the ledger of --ledger-key: archive "
                    "its whole identity and outbox under archive/, make a new one"),
                arg("--abandon-unsynced", action="store_true",
                    help="with --replace: archive records the old ledger has not acknowledged "
                    "(they are never sent)"),
            ),
        ),
        Command(
            "enrol",
            "install the ledger's answer: its public keys, the broker CA and this gateway's "
            "certificate (checked against tls.key and the device id); set sync.* in config.toml",
            cmd_enrol,
            args=(
                arg("--cert-file", required=True, metavar="FILE",
                    help="this gateway's certificate"),
                arg("--ca-file", required=True, metavar="FILE", help="the broker's CA (ca.crt)"),
                arg("--ledger-key", metavar="FILE", help="ledger-public.json, when not pinned yet"),
                arg("--broker", metavar="URL", help="set sync.broker, e.g. mqtts://host:8883"),
                arg("--json", action="store_true", help="print the settings set as JSON"),
            ),
        ),
        Command("keys", "device keys", _group_help, commands=(
            Command("show", "show the device public key and enrolment record", cmd_keys_show,
                    args=(JSON,)),
            Command(
                "rotate",
                "new signing key, announced by a key_rotation record signed with the old one "
                "(kept); stop the service first",
                cmd_keys_rotate, args=(JSON,),
            ),
        )),
        Command("config", "configuration", _group_help, commands=(
            Command("check", "validate the config file; name every bad value", cmd_config_check,
                    args=(JSON,)),
            Command("settings", "list every setting with its default and help",
                    cmd_config_settings, args=(JSON,)),
            Command(
                "set", "set settings in config.toml (validated, comments kept)", cmd_config_set,
                args=(arg("pairs", nargs="+", metavar="KEY VALUE",
                          help="e.g. sync.broker mqtts://h:8883"),),
            ),
        )),
        Command("record", "record a capture by hand", _group_help, metavar="KIND", commands=(
            Command(
                "weighing", "record a manual weighing (flagged manual)", cmd_record_weighing,
                args=(
                    arg("--gross-kg", required=True,
                        help="gross mass in kg (resolution 0.1 kg)"),
                    arg("--tare-kg", help="tare in kg; net is derived"),
                    arg("--vehicle", help="vehicle id"),
                    arg("--lot", help="lot id"),
                    arg("--direction", choices=("in", "out"),
                        help="in: material received here (a refiner's receipt of a lot); out: "
                        "shipped from here"),
                    NOTE,
                    JSON,
                ),
            ),
            Command(
                "seal", "record a manual seal scan (flagged manual)", cmd_record_seal,
                args=(
                    arg("--seal-id", required=True, help="the seal's printed or scanned code"),
                    arg("--lot", help="lot id the sealed bag belongs to"),
                    NOTE,
                    JSON,
                ),
            ),
            Command(
                "void", "void a mistaken record with a new signed event", cmd_record_void,
                args=(EVENT, arg("--reason", required=True, help="why the record is void"), JSON),
            ),
        )),
        Command("lot", "lots: close this gateway's part of one", _group_help, commands=(
            Command("close", "commit to the sum of this gateway's bags of a lot", cmd_lot_close,
                    args=(arg("lot", help="lot id"), JSON)),
        )),
        Command(
            "stock", "opening stock: the base of this site's mass balance", _group_help,
            commands=(
                Command(
                    "declare",
                    "sign this site's opening stock (once per site; committed like any mass), "
                    "then have the registry authority pin the record",
                    cmd_stock_declare,
                    args=(
                        arg("--kg", required=True,
                            help="opening stock in kg, at most one decimal (resolution 0.1 kg); "
                            "0 for none"),
                        arg("--note", help="free text note, e.g. how the stock was measured"),
                        JSON,
                    ),
                ),
            ),
        ),
        Command("checkpoint", "sign the running sums of inputs and outputs now", cmd_checkpoint,
                args=(JSON,)),
        Command("events", "inspect recorded events", _group_help, commands=(
            Command(
                "list", "list events, oldest first", cmd_events_list,
                args=(
                    JSON,
                    arg("--limit", type=int, help="only the newest N"),
                    arg("--state", choices=[str(s) for s in RecordState],
                        help="only this state"),
                ),
            ),
            Command("show", "show one event, decoded and verified", cmd_events_show,
                    args=(EVENT,)),
            Command(
                "export",
                "export events: COSE files, or one GS1 EPCIS 2.0 JSON-LD document (masses "
                "committed)",
                cmd_events_export,
                args=(
                    arg("--format", choices=["cose", "epcis"], default="cose",
                        help="cose: <seq>.cose files in DIR; epcis: one EPCIS 2.0 document in "
                        "FILE, masses as commitments (docs/protocol.md §3.3)"),
                    arg("--out", required=True, metavar="DIR|FILE",
                        help="output directory or file"),
                    *(arg(flag, **options) for flag, options in epcis.LOCATION_OPTIONS),
                    JSON,
                ),
            ),
            Command("verify", "verify signatures, chain and commitments", cmd_events_verify,
                    args=(JSON,)),
        )),
        Command("status", "outbox counts, backlog age, disk budget, clock, alarms", cmd_status,
                args=(JSON,)),
        Command(
            "sync", "send pending records to the ledger until all are acked", cmd_sync,
            args=(
                arg("--once", action="store_true", help="drain what is pending, then exit"),
                BROKER,
                arg("--timeout", type=float, help="give up after this many seconds (exit 10)"),
                JSON,
                arg("--from-db", metavar="FILE",
                    help="send a broken gateway's outbox file (recovered from its SD card) "
                    "instead of ours"),
                arg("--cert-file", metavar="FILE",
                    help="with --from-db: a certificate for the OLD device id (its own, or one "
                    "`custody-ledger pki issue` made)"),
                arg("--key-file", metavar="FILE", help="with --from-db: that certificate's key"),
            ),
        ),
        Command(
            "run",
            "run the gateway service: device readers, workflows and sync under one supervisor, "
            "/healthz and /metrics on localhost, systemd Type=notify; SIGTERM drains, SIGHUP "
            "reloads",
            cmd_run,
            args=(
                BROKER,
                arg("--log-format", choices=["text", "json"], default="text",
                    help="one line per event on stdout: logfmt key=value (default) or JSON"),
            ),
        ),
        Command(
            "scan",
            "handheld scan-and-tag console: scan seals into a lot, weigh bags, void the last "
            "bag, count bags per lot today (keyboard-wedge or serial scanner, optional scale and "
            "camera)",
            cmd_scan,
            args=(
                arg("--lang", choices=["en", "fr"], help="screen language (default: from LANG)"),
                arg("--scale-port", metavar="DIALECT@URL",
                    help="platform scale, e.g. ad-cas@/dev/ttyUSB0 (scan.scale_port)"),
                arg("--scale-dialect", metavar="D",
                    help="older form: its dialect, when --scale-port is a bare URL"),
                arg("--scanner-port", metavar="scanner-line@URL",
                    help="serial scanner (scan.scanner_port)"),
                arg("--camera", metavar="SOURCE", help="/dev/video0, rtsp://... (scan.camera)"),
            ),
        ),
        Command("devices", "serial devices: dialects and live decoding", _group_help, commands=(
            Command("dialects", "list the device dialects", cmd_devices_dialects, args=(JSON,)),
            Command(
                "listen",
                "print every frame decoded from a port, with errors and counters, until "
                "interrupted",
                cmd_devices_listen,
                args=(
                    arg("--port", required=True, metavar="DIALECT@URL",
                        help="the port and its dialect, e.g. xk3190-a12@/dev/serial/by-id/... "
                             "or xk3190-a12@socket://h:p"),
                    arg("--dialect",
                        help="older form: the dialect, when --port is a bare URL"),
                    arg("--baud", type=int, help="override the dialect's default baud rate"),
                    arg("--duration", type=float, help="stop after this many seconds"),
                    arg("--json", action="store_true", help="one JSON object per line"),
                ),
            ),
            Command(
                "detect",
                "find an unknown device's dialect and line settings: listen at every baud rate "
                "and line format, rank the dialects that decode the bytes, print the config",
                cmd_devices_detect,
                args=(
                    arg("--port", required=True,
                        help="port URL: /dev/serial/by-id/..., socket://h:p"),
                    arg("--seconds", type=float, default=2.0,
                        help="seconds to listen at each line setting (default 2)"),
                    JSON,
                ),
            ),
        )),
        Command(
            "sim", "run a simulated device on a pty or a TCP port", cmd_sim,
            args=(
                arg("kind", choices=["scale", "rfid", "scanner", "gps"], help="device kind"),
                arg("--dialect", help="dialect to speak (default: the kind's first)"),
                OneOf((
                    arg("--pty", action="store_true",
                        help="create a pseudo-terminal (default)"),
                    arg("--listen", metavar="HOST:PORT",
                        help="listen on TCP like a serial server"),
                    arg("--port", metavar="URL", help="write to a serial port URL instead"),
                )),
                arg("--link", metavar="PATH", help="with --pty: keep a stable symlink here"),
                arg("--rate", type=float, default=10.0, help="frames per second (default 10)"),
                arg("--seed", type=int, default=1, help="random seed (reproducible streams)"),
                arg("--noise", type=float, default=0.0, help="probability of garbage bytes"),
                arg("--bad-checksum", type=float, default=0.0,
                    help="probability of a bad frame"),
                arg("--duration", type=float, help="stop after this many seconds"),
                arg("--frames", type=int, help="stop after this many frames"),
            ),
        ),
        Command("camera", "camera and image decoding", _group_help, commands=(
            Command(
                "decode", "decode QR codes and barcodes in images", cmd_camera_decode,
                args=(
                    arg("images", nargs="+", help="image files"),
                    arg("--json", action="store_true",
                        help="one JSON object per image: status codes|no code|unreadable"),
                ),
            ),
        )),
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
    args.data_dir = resolve_data_dir(getattr(args, "data_dir", None))
    try:
        code: int = args.func(args)
    except CustodyError as exc:
        print(f"custody-agent: error: {exc}", file=sys.stderr)
        return exit_code_for(exc)
    except DeviceError as exc:
        print(f"custody-agent: error: {exc}", file=sys.stderr)
        return ExitCode.CONFIG if isinstance(exc, PortConfigError) else ExitCode.DEVICE
    except UsageError as exc:
        print(f"custody-agent: error: {exc}", file=sys.stderr)
        return ExitCode.USAGE
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
