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
5. The refiner's weighbridge (a second gateway) receives the lot; the ledger proves the lot's
   total, the receipt within tolerance and the mine's mass balance in one zero-knowledge bundle
   (``custody-ledger summary``), and ``custody-verify`` checks it offline as a buyer would.
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
REFINER_DEVICE, REFINER_SITE = "gw-ref-01", "REF-01"
LOT = "LOT-2026-0042"
# How long the drain may take before the demo gives up (it takes about a second).
SYNC_TIMEOUT_S = 60
COMMANDS = {
    "custody-agent": "agent.cli",
    "custody-ledger": "ledger.cli",
    "custody-verify": "ledger.verify.cli",
}


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
    """The offline part at the mine: returns the event id of the last record."""
    with Recorder(gw_dir, boot_reason="demo") as rec:
        lot = LOT
        # An ore truck: in heavy, out empty; the net is an input of the site.
        ore = rec.weighing(gross=kg_to_units("38420"), vehicle="CD-LSH-1187", stage="in")
        rec.weighing(
            gross=kg_to_units("38420"), tare=kg_to_units("14310"), vehicle="CD-LSH-1187",
            stage="out", direction="in", inbound=ore.event_id,
        )  # fmt: skip
        # Hydroxide bags of the lot: outputs (each followed by a signed checkpoint of the sums).
        rec.weighing(gross=kg_to_units("14150"), vehicle="CD-KLZ-4471", stage="in")
        seals = [f"SEAL-{n:06d}" for n in (104201, 104202, 104203)]
        for seal in seals:
            rec.weighing(bag=kg_to_units("1502.5"), lot=lot, seals=[seal], direction="out")
            rec.seal_scan(seal, lot=lot, symbology="QR")
        mistaken = rec.seal_scan("SEAL-104299", lot=lot)
        rec.void(mistaken.event_id, "scanned a bag of another lot")
        rec.record(EventType.AGGREGATION, {"lot": lot, "children": seals, "action": "ADD"})
        # The site's share of the lot: one commitment to the sum of its bags, then a checkpoint.
        rec.lot_close(lot)
        # The truck leaves with the lot (a dispatch cross-check, not counted twice).
        last = rec.weighing(
            gross=kg_to_units("18657.5"), tare=kg_to_units("14150"), vehicle="CD-KLZ-4471",
            lot=lot, stage="out",
        )  # fmt: skip
        report = audit.verify_outbox(rec.outbox, rec.key)
    if not report.ok:
        raise DemoError(f"outbox verification failed: {report.error}")
    print(f"verified {report.checked} signed events: signatures, hash chain, mass commitments")
    return last.event_id


@contextlib.contextmanager
def private_broker(root: Path) -> Iterator[tuple[str, dict[str, list[str]], list[str]]]:
    """A TLS Mosquitto with a throwaway PKI: (url, TLS settings per gateway, ledger TLS flags)."""
    from lab.mosquitto import MosquittoBroker, TestPKI

    pki = TestPKI.create(root / "pki", [DEVICE_ID, REFINER_DEVICE])
    with MosquittoBroker(root / "mosquitto", pki) as broker:
        url = f"mqtts://{broker.host}:{broker.tls_port}"
        print(f"private Mosquitto on {url} (TLS, client certificates, per-device ACL)")
        gateway_tls = {}
        for device_id in (DEVICE_ID, REFINER_DEVICE):
            device = pki.device(device_id)
            gateway_tls[device_id] = [
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


def enrol_gateway(root: Path, ledger_dir: Path, ledger_pub: str, site: str, device: str) -> Path:
    gw_dir = root / device
    record = run_cmd(
        "custody-agent", "--data-dir", str(gw_dir), "init", "--site", site,
        "--device", device, "--ledger-key", ledger_pub, quiet=True,
    )  # fmt: skip
    record_file = root / f"enrolment-{device}.json"
    record_file.write_text(record)
    print(f"enrolment record written to {record_file}")
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "enroll", str(record_file))
    return gw_dir


def receive_at_refiner(ref_dir: Path) -> None:
    """The refiner's weighbridge weighs the lot in: 4,507.5 kg of bags, read as 4,505 kg."""
    with Recorder(ref_dir, boot_reason="demo") as rec:
        truck = rec.weighing(gross=kg_to_units("18655"), vehicle="CD-KLZ-4471", stage="in")
        rec.weighing(
            gross=kg_to_units("18655"), tare=kg_to_units("14150"), vehicle="CD-KLZ-4471",
            lot=LOT, stage="out", direction="in", inbound=truck.event_id,
        )  # fmt: skip
    print("refiner REF-01 weighed the lot in: net 4505.0 kg")


def run(root: Path, broker_url: str | None = None) -> int:
    ledger_dir = root / "ledger"
    step("1. keys: the ledger, two gateways (a mine and a refiner), their enrolment")
    ledger_pub = run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "init").strip()
    gw_dir = enrol_gateway(root, ledger_dir, ledger_pub, SITE_ID, DEVICE_ID)
    ref_dir = enrol_gateway(root, ledger_dir, ledger_pub, REFINER_SITE, REFINER_DEVICE)
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "site", "stock", SITE_ID, "--kg", "0")

    step("2. a morning at the weighbridge, offline")
    last_event = record_morning(gw_dir)
    run_cmd("custody-agent", "--data-dir", str(gw_dir), "events", "list")

    step("3. the link returns: gateway -> broker -> ledger, acks back")
    with contextlib.ExitStack() as stack:
        if broker_url is None:
            url, gateway_tls, ledger_tls = stack.enter_context(private_broker(root))
        else:
            url, gateway_tls, ledger_tls = broker_url, {}, []
        for device, directory in ((DEVICE_ID, gw_dir), (REFINER_DEVICE, ref_dir)):
            configure_sync(directory, url, gateway_tls.get(device, []))
        stack.enter_context(ledger_running(ledger_dir, url, ledger_tls))
        run_cmd(
            "custody-agent", "--data-dir", str(gw_dir), "sync", "--once",
            "--timeout", str(SYNC_TIMEOUT_S),
        )  # fmt: skip
        run_cmd("custody-agent", "--data-dir", str(gw_dir), "status")

        step("4. the ledger's signed log")
        check_inclusion(ledger_dir, last_event)

        step("5. the refiner receives the lot; a zero-knowledge summary for a buyer")
        receive_at_refiner(ref_dir)
        run_cmd(
            "custody-agent", "--data-dir", str(ref_dir), "sync", "--once",
            "--timeout", str(SYNC_TIMEOUT_S),
        )  # fmt: skip
    run_cmd("custody-ledger", "--data-dir", str(ledger_dir), "devices")
    bundle = root / "buyer" / f"{LOT}.cbor"
    bundle.parent.mkdir()
    run_cmd(
        "custody-ledger", "--data-dir", str(ledger_dir), "summary", "--lot", LOT,
        "--out", str(bundle),
    )  # fmt: skip
    # What the buyer holds: the bundle and the ledger's public keys, nothing else.
    (bundle.parent / "ledger-public.json").write_bytes(Path(ledger_pub).read_bytes())
    run_cmd("custody-verify", str(bundle))
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
