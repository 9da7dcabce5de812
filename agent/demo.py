"""``make demo``: a throwaway gateway records a site's morning and verifies it.

Embedded defaults, no hardware, no network: a ledger key pair and a gateway
identity are created in a temporary directory (or ``--data-dir``), a truck is
weighed in and out, its bags are sealed and tagged to a lot, one mistaken scan
is voided, and the outbox is then verified end to end (signatures, chain,
commitments) and printed. Later issues extend this to the full path: devices,
broker, ledger acks and a verified lot summary.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from agent import audit, enrol
from agent.cli import main as agent_cli
from agent.recorder import Recorder, kg_to_units
from custody.event import EventType


def run(root: Path) -> int:
    ledger_dir, gw_dir = root / "ledger", root / "gateway"
    # The ledger's keys come from its own command, as an operator would make them.
    made = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(ledger_dir), "init"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    record = enrol.initialise(
        gw_dir, site_id="KOL-01", device_id="gw-kol-01", ledger_key_file=Path(made.stdout.strip())
    )
    print(f"gateway {record.device_id} at {record.site_id}, kid {record.kid.hex()}")
    print(f"data in {root}\n")

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
        rec.weighing(
            gross=kg_to_units("45767.5"), tare=kg_to_units("41260"), vehicle="CD-KLZ-4471",
            direction="out", lot=lot, stage="out",
        )  # fmt: skip
        report = audit.verify_outbox(rec.outbox, rec.key)

    args = ["--data-dir", str(gw_dir)]
    agent_cli(["events", "list", *args])
    print()
    agent_cli(["status", *args])
    print()
    if not report.ok:
        print(f"demo FAILED: {report.error}", file=sys.stderr)
        return 1
    print(f"verified {report.checked} signed events: signatures, hash chain and mass commitments")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m agent.demo",
        description="Record and verify a demo site's custody events (no hardware needed).",
    )
    parser.add_argument("--data-dir", type=Path, help="keep the demo's files here (must be new)")
    args = parser.parse_args(argv)
    if args.data_dir is not None:
        return run(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="custody-demo-") as tmp:
        return run(Path(tmp))


if __name__ == "__main__":
    sys.exit(main())
