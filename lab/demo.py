"""``make demo``: a site's morning, from the weighbridge to the ledger's signed log.

Embedded defaults, no hardware: everything lives in a temporary directory (or ``--data-dir``).
The demo runs the same commands an operator would, and prints them as it goes:

1. ``custody-ledger init`` makes the ledger's keys; ``custody-agent init`` makes a gateway's
   identity, and ``custody-ledger enroll`` registers it.
2. Offline, the gateway weighs a truck in and out, seals and weighs bags for a lot, voids a
   mistaken scan; every record is signed and durable in the outbox, which is verified.
3. The link returns: a private Mosquitto (the production config template, TLS with client
   certificates from a throwaway PKI, per-device ACL) on free loopback ports, unless ``--broker``
   names a plain ``mqtt://`` broker; ``custody-ledger run`` takes the records in and
   ``custody-agent sync --once`` drains the outbox until the ledger has signed an ack for each.
4. The ledger signs a checkpoint of its transparency log and proves that the gateway's last
   record is in it; the proof is checked here against the checkpoint with the ledger's public key.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agent import audit
from agent.identity import load_ledger_keys
from agent.recorder import Recorder, kg_to_units
from custody.event import EventType
from custody.merkle import leaf_hash, verify_inclusion
from ledger.log import verify_checkpoint

DEVICE_ID, SITE_ID = "gw-kol-01", "KOL-01"
# How long the drain may take before the demo gives up (it takes about a second).
SYNC_TIMEOUT_S = 60
COMMANDS = {"custody-agent": "agent.cli", "custody-ledger": "ledger.cli"}


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and why."""


def step(title: str) -> None:
    print(f"\n== {title} ==")


def run_cmd(*argv: str, quiet: bool = False) -> str:
    """Run ``custody-agent``/``custody-ledger`` as a subprocess, echoing it like a transcript."""
    shown = " ".join(shlex.quote(a) for a in argv)
    print(f"$ {shown}")
    done = subprocess.run(
        [sys.executable, "-m", COMMANDS[argv[0]], *argv[1:]],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DemoError(f"`{shown}` exited {done.returncode}: {done.stderr.strip()}")
    if not quiet:
        print(done.stdout, end="")
    return done.stdout


def record_morning(gw_dir: Path) -> bytes:
    """The offline part: returns the event id of the last record."""
    with Recorder(gw_dir, boot_reason="demo") as rec:
        lot = "LOT-2026-0042"
        rec.weighing(gross=kg_to_units("41260"), vehicle="CD-KLZ-4471", stage="in")
        seals = [f"SEAL-{n:06d}" for n in (104201, 104202, 104203)]
        for seal in seals:
            rec.weighing(bag=kg_to_units("1502.5"), lot=lot, seals=[seal])
            rec.seal_scan(seal, lot=lot, symbology="QR")
        mistaken = rec.seal_scan("SEAL-104299", lot=lot)
        rec.void(mistaken.event_id, "scanned a bag of another lot")
        rec.record(EventType.AGGREGATION, {"lot": lot, "children": seals, "action": "ADD"})
        last = rec.weighing(
            gross=kg_to_units("45767.5"), tare=kg_to_units("41260"), vehicle="CD-KLZ-4471",
            direction="out", lot=lot, stage="out",
        )  # fmt: skip
        report = audit.verify_outbox(rec.outbox, rec.key)
    if not report.ok:
        raise DemoError(f"outbox verification failed: {report.error}")
    print(f"verified {report.checked} signed events: signatures, hash chain, mass commitments")
    return last.event_id


@contextlib.contextmanager
def private_broker(root: Path) -> Iterator[tuple[str, list[str], list[str]]]:
    """A TLS Mosquitto with a throwaway PKI: (url, gateway TLS settings, ledger TLS flags)."""
    from lab.mosquitto import MosquittoBroker, TestPKI

    pki = TestPKI.create(root / "pki", [DEVICE_ID])
    with MosquittoBroker(root / "mosquitto", pki) as broker:
        device = pki.device(DEVICE_ID)
        url = f"mqtts://{broker.host}:{broker.tls_port}"
        print(f"private Mosquitto on {url} (TLS, client certificates, per-device ACL)")
        gateway_tls = [
            f'ca_file = "{pki.ca_file}"', f'cert_file = "{device.cert}"',
            f'key_file = "{device.key}"',
        ]  # fmt: skip
        ledger_tls = [
            "--ca-file", str(pki.ca_file), "--cert-file", str(pki.ledger.cert),
            "--key-file", str(pki.ledger.key),
        ]  # fmt: skip
        yield url, gateway_tls, ledger_tls


def configure_sync(gw_dir: Path, url: str, tls_lines: list[str]) -> None:
    """What a site engineer writes into config.toml's [sync] table."""
    cfg = gw_dir / "config.toml"
    text = cfg.read_text().replace('broker = ""', f'broker = "{url}"')
    for line in tls_lines:
        name = line.split(" = ", 1)[0]
        text = text.replace(f'{name} = ""', line)
    cfg.write_text(text)


@contextlib.contextmanager
def ledger_running(ledger_dir: Path, url: str, tls_flags: list[str]) -> Iterator[None]:
    argv = ["custody-ledger", "--data-dir", str(ledger_dir), "run", "--broker", url, *tls_flags]
    print("$ " + " ".join(shlex.quote(a) for a in argv) + " &")
    log = (ledger_dir / "run.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "ledger.cli", *argv[1:]], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        time.sleep(0.5)  # the gateway resends after its ack timeout anyway; this avoids the wait
        if proc.poll() is not None:
            raise DemoError(f"custody-ledger run exited {proc.returncode}: see {log.name}")
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(15)
        log.close()


def check_inclusion(ledger_dir: Path, event_id: bytes) -> None:
    """Checkpoint + inclusion proof from the ledger's CLI, verified here independently."""
    args = ("--data-dir", str(ledger_dir))
    cp_json: dict[str, Any] = json.loads(
        run_cmd("custody-ledger", *args, "log", "checkpoint", quiet=True)
    )
    checkpoint = verify_checkpoint(
        bytes.fromhex(cp_json["checkpoint"]), load_ledger_keys(ledger_dir / "ledger-public.json")
    )
    print(f"signed checkpoint: size {checkpoint.size}, root {checkpoint.root.hex()[:16]}…")
    index = checkpoint.size - 1
    proof_json: dict[str, Any] = json.loads(
        run_cmd("custody-ledger", *args, "log", "prove-inclusion", str(index), quiet=True)
    )
    leaf = bytes.fromhex(proof_json["leaf_hash"])
    if leaf != leaf_hash(event_id):
        raise DemoError(f"log entry {index} is not the gateway's last record")
    proof = [bytes.fromhex(h) for h in proof_json["proof"]]
    verify_inclusion(leaf, index, checkpoint.size, proof, checkpoint.root)
    print(
        f"the gateway's last record {event_id.hex()[:16]}… is entry {index} of the signed log "
        f"({len(proof)}-hash inclusion proof verified against the checkpoint)"
    )


def run(root: Path, broker_url: str | None = None) -> int:
    ledger_dir, gw_dir = root / "ledger", root / "gateway"
    step("1. keys: the ledger, a gateway, its enrolment")
    ledger_pub = run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "init").strip()
    record = run_cmd(
        "custody-agent", "--data-dir", str(gw_dir), "init", "--site", SITE_ID,
        "--device", DEVICE_ID, "--ledger-key", ledger_pub, quiet=True,
    )  # fmt: skip
    record_file = root / "enrolment.json"
    record_file.write_text(record)
    print(f"enrolment record written to {record_file}")
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "enroll", str(record_file))

    step("2. a morning at the weighbridge, offline")
    last_event = record_morning(gw_dir)
    run_cmd("custody-agent", "--data-dir", str(gw_dir), "events", "list")

    step("3. the link returns: gateway -> broker -> ledger, acks back")
    with contextlib.ExitStack() as stack:
        if broker_url is None:
            url, gateway_tls, ledger_tls = stack.enter_context(private_broker(root))
        else:
            url, gateway_tls, ledger_tls = broker_url, [], []
        configure_sync(gw_dir, url, gateway_tls)
        stack.enter_context(ledger_running(ledger_dir, url, ledger_tls))
        run_cmd(
            "custody-agent", "--data-dir", str(gw_dir), "sync", "--once",
            "--timeout", str(SYNC_TIMEOUT_S),
        )  # fmt: skip
    run_cmd("custody-agent", "--data-dir", str(gw_dir), "status")

    step("4. the ledger's signed log")
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "devices")
    check_inclusion(ledger_dir, last_event)
    print(f"\ndemo OK; files in {root}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m lab.demo",
        description="Record a demo site's custody events, sync them to a ledger, prove them.",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the demo's files here (must be new)")
    parser.add_argument(
        "--broker", metavar="URL",
        help="use this plain mqtt:// broker instead of starting a private TLS Mosquitto",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.broker is not None and not args.broker.startswith("mqtt://"):
        parser.error("--broker takes a plain mqtt://HOST:PORT (TLS needs the private PKI)")
    try:
        if args.data_dir is not None:
            return run(args.data_dir, args.broker)
        with tempfile.TemporaryDirectory(prefix="custody-demo-") as tmp:
            return run(Path(tmp), args.broker)
    except DemoError as exc:
        print(f"demo FAILED: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
