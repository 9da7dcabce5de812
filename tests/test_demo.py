"""``make demo`` end to end: simulated weighbridge devices driving the real gateway service, a
TLS broker, ledger acks, every record in the signed log, a lot summary verified by custody-verify.

The demo runs as a subprocess (stdout is a pipe, so its live view prints plain lines); the test
checks its claims against the data it leaves behind, not only against what it prints.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.demo import DEVICE_ID, SEALS, main
from ledger.cli import STORE_FILE
from ledger.store import LedgerStore
from tests.support import REPO, run_cli

# The morning's records on the mine's gateway: the service's boot and six weighbridge
# captures (two ore trucks and the dispatch truck, two passes each), and the bagging station's
# boot, three bags each with its seal scan (checkpoints follow a schedule, not the bags), a
# mistaken scan and its void, the aggregation, the lot contribution and its checkpoint.
# Then the boot and the checkpoint of `custody-agent checkpoint` (the scheduled one, forced:
# the fence a buyer's bundle needs after the lot).
MINE_RECORDS = 1 + 6 + 1 + 3 * 2 + 2 + 1 + 2 + 2
REFINER_RECORDS = 2  # its boot record and the receipt `custody-agent record weighing` signs
REGISTRY_ENTRIES = 3  # the two enrolments and the heartbeat before the summary


def test_demo_runs_the_gateway_service_on_simulated_devices_to_a_verified_lot(
    tmp_path: Path,
) -> None:
    root = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "lab.demo", "--data-dir", str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    out = done.stdout
    assert done.returncode == 0, out[-4000:] + done.stderr[-3000:]
    assert out.rstrip().splitlines()[-1].startswith("demo OK")

    # The service captured every pass, paired them into three tickets, and drained on SIGTERM.
    assert "weighbridge captures: captured 6 (passes: in 3, out 3); tickets 3" in out
    assert "custody-agent run drained on SIGTERM and exited 0" in out
    assert re.search(r"ticket seq \d+: CD-LSH-1187 NET 24 120.0 kg received", out)
    assert re.search(r"ticket seq \d+: CD-KLZ-4471 NET 4 520.0 kg shipped, 3 seal\(s\)", out)
    n = MINE_RECORDS
    assert f"gateway records: {n} signed, {n} acked, {n} verified in the ledger's signed log" in out
    assert "ACCEPTED: lot LOT-2026-0042: 4507.5 kg from 1 registered site(s) (KOL-01)" in out
    # ... against the key the buyer pinned in their own trust file, which the claim names.
    trust = root / "buyer" / "trusted-ledgers.json"
    assert re.search(
        rf"  signed by ledger 'ledger', signing key fingerprint \(SHA-256\) [0-9a-f]{{64}}, "
        rf"pinned in {re.escape(str(trust))} \(--trust\)",
        out,
    )
    assert "acked 2, rejected 0, still unacked 0" in out  # the refiner's boot and receipt

    # The live view: plain lines (not a terminal), printed only on change, ending drained.
    status = [line for line in out.splitlines() if re.match(r"\[\s*\d+\.\d+s\] captured \d", line)]
    assert 2 <= len(status) <= 80, status
    assert f"outbox pending 0 sent 0 acked {n} | ledger log {n}" in status[-1]
    # ... and during the outage, a backlog that the ledger had not acked yet.
    backlog = [s for s in status if not re.search(r"outbox pending 0 sent 0 ", s)]
    assert any("broker: connecting" in s for s in backlog), status

    # What the demo left behind agrees: the gateway's outbox is all acked ...
    gw = root / DEVICE_ID
    listed = json.loads(run_cli("--data-dir", str(gw), "events", "list", "--json").stdout)
    assert len(listed) == n and {e["state"] for e in listed} == {"acked"}
    weighings = [e for e in listed if e["type"] == "weighing" and "gross" in e.get("mass_kg", {})]
    nets = sorted(float(e["mass_kg"]["net"]) for e in weighings if "net" in e["mass_kg"])
    assert nets == [4520.0, 24120.0, 26240.0]  # two ore deliveries and the dispatch
    last_weighing = [e for e in listed if e["type"] == "weighing"][-1]
    dispatch = run_cli("--data-dir", str(gw), "events", "show", last_weighing["event_id"]).stdout
    assert all(seal in dispatch for seal in SEALS)  # the seals scanned at the bridge
    assert "CD-KLZ-4471" in dispatch  # the truck named by its plate, from its RFID tag
    assert run_cli("--data-dir", str(gw), "events", "verify").returncode == 0
    # ... and the ledger's database holds both gateways' records.
    store = LedgerStore(root / "ledger" / STORE_FILE)
    try:
        assert store.log_size() == n + REFINER_RECORDS + REGISTRY_ENTRIES
        assert len(store.events(DEVICE_ID)) == n
    finally:
        store.close()
    # The seller's folder holds the bundle only; the pin is the buyer's, outside it.
    assert [p.name for p in (root / "from-seller").iterdir()] == ["LOT-2026-0042.cbor"]
    assert json.loads(trust.read_text())["ledgers"].keys() == {"ledger"}
    assert json.loads(trust.read_text())["authorities"].keys() == {"consortium-registry"}


def test_demo_refuses_a_tls_broker_url_without_the_private_pki(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--broker", "mqtts://127.0.0.1:8883", "--data-dir", str(tmp_path / "d")])
    assert exc.value.code == 2
    assert not (tmp_path / "d").exists()
