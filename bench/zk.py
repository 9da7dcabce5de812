"""``python -m bench zk``: lot summary proving and verification, and the gateway's cost per mass.

Workloads from ZK.md "Targets": the typical lot (3 sites × 12 checkpoints: 36 balance range
proofs of 48 bits, 2 tolerance proofs, 1 Schnorr proof) and the large lot (5 sites × 20
checkpoints, about 100 range proofs). Each is built with real gateways and a real ledger
(``lab.lots``), then proved with ``ledger.summary.build_summary`` and verified with
``ledger.verify.bundle.verify_bundle`` (both timed end to end: record selection, inclusion
proofs, signatures and every proof), median of ``--repeat`` runs. The verify time is also
measured with 1 and 6 bags per site, to show it does not grow with bags.

``commit_seal_sign_ms`` is the gateway's work per mass-bearing event: commit to the mass,
seal the opening to the ledger, build and sign the envelope (no storage), median per event.

``--keep DIR`` leaves the typical lot's bundle, the ledger's and the registry authority's public
keys in DIR (``custody-verify DIR/typical.cbor --ledger-key DIR/ledger-public.json
--registry-key DIR/authority-public.json`` then runs on it).
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import statistics
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.machine import machine
from custody.commitment import commit_masses, seal_openings
from custody.envelope import EventSigner
from custody.event import (
    GENESIS_PREV,
    DeviceTime,
    EventType,
    Payload,
    TimeQuality,
    TimeSource,
)
from custody.keys import DeviceKey, LedgerKeyPair
from lab.lots import build_lot
from ledger.summary import build_summary
from ledger.verify.bundle import verify_bundle
from ledger.verify.policy import PUBLISHED_POLICIES

SUMMARY = "lot summaries: prove and verify seconds, bundle bytes; gateway commit+seal+sign"

WORKLOADS = {"typical": (3, 12), "large": (5, 20)}
TARGETS: dict[str, Any] = {
    "typical": {"prove_s": 0.5, "verify_s": 0.7, "bundle_bytes": 250_000},
    "large": {"prove_s": 1.3, "verify_s": 1.9, "bundle_bytes": 600_000},
    "commit_seal_sign_ms": 0.4,
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeat", type=int, default=3, help="runs per workload (median)")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="leave the typical bundle here")
    parser.add_argument(
        "--events", type=int, default=2000, help="mass events for commit_seal_sign_ms"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine(), "targets": TARGETS}
    with tempfile.TemporaryDirectory(prefix="bench-zk-") as tmp:
        root = Path(tmp)
        for name, (sites, checkpoints) in WORKLOADS.items():
            result[name] = _workload(root / name, sites, checkpoints, args.repeat, name, args.keep)
        flat = {}
        for bags in (1, 6):
            scenario = build_lot(
                root / f"bags{bags}", sites=3, checkpoints_per_site=12, bags_per_site=bags
            )
            store = scenario.store()
            try:
                bundle = build_summary(store, scenario.keys, scenario.ledger_dir, scenario.lot)
            finally:
                store.close()
            times = []
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                verify_bundle(bundle.bundle, scenario.keys.public, scenario.authority)
                times.append(time.perf_counter() - t0)
            flat[f"verify_s_{bags}_bags_per_site"] = round(statistics.median(times), 3)
        result["verify_vs_bags"] = flat
    result["commit_seal_sign_ms"] = _gateway_cost(args.events)
    return result


def _workload(
    root: Path, sites: int, checkpoints: int, repeat: int, name: str, keep: Path | None
) -> dict[str, Any]:
    scenario = build_lot(root, sites=sites, checkpoints_per_site=checkpoints, bags_per_site=3)
    policy = dataclasses.replace(PUBLISHED_POLICIES[2], window=checkpoints)
    prove, verify, sizes = [], [], []
    bundle = b""
    checks = 0
    for _ in range(repeat):
        store = scenario.store()
        try:
            t0 = time.perf_counter()
            made = build_summary(
                store, scenario.keys, scenario.ledger_dir, scenario.lot, policy=policy
            )
            prove.append(time.perf_counter() - t0)
        finally:
            store.close()
        bundle, checks = made.bundle, made.balance_checks
        sizes.append(len(bundle))
        t0 = time.perf_counter()
        verify_bundle(
            bundle, scenario.keys.public, scenario.authority, policies={policy.version: policy}
        )
        verify.append(time.perf_counter() - t0)
    if keep is not None and name == "typical":
        keep.mkdir(parents=True, exist_ok=True)
        (keep / "typical.cbor").write_bytes(bundle)
        shutil.copy(scenario.ledger_dir / "ledger-public.json", keep / "ledger-public.json")
        authority = "authority-public.json"
        shutil.copy(scenario.authority_dir / authority, keep / authority)
        shutil.copy(scenario.ledger_dir / "disclosures.json", keep / "disclosures.json")
    return {
        "sites": sites, "checkpoints_per_site": checkpoints, "balance_proofs": checks,
        "range_proofs": checks + 2, "prove_s": round(statistics.median(prove), 3),
        "verify_s": round(statistics.median(verify), 3), "bundle_bytes": statistics.median(sizes),
        "runs": repeat,
    }  # fmt: skip


def _gateway_cost(events: int) -> float:
    """Median ms per event of commit + seal + sign (what a mass capture costs the CPU)."""
    ledger = LedgerKeyPair.generate("bench").public
    key = DeviceKey.generate()
    signer = EventSigner(key)
    samples = []
    for seq in range(1, events + 1):
        t0 = time.perf_counter()
        points, openings = commit_masses({"bag": 15_000 + seq % 1000})
        sealed = seal_openings(openings, ledger.sealing_key)
        body = {"mass": {n: p.encoded for n, p in points.items()}, "sealed": sealed,
                "lot": "LOT-1", "direction": "out"}  # fmt: skip
        payload = Payload(
            "gw-bench", "SITE-1", seq, GENESIS_PREV,
            DeviceTime(1_767_225_600_000 + seq, TimeSource.NTP, TimeQuality.SYNCED), 1,
            EventType.WEIGHING, body,
        )  # fmt: skip
        signer.sign(payload)
        samples.append(time.perf_counter() - t0)
    return round(statistics.median(samples) * 1000, 3)


def render(result: Mapping[str, Any]) -> str:
    lines = ["workload  range proofs  prove s  verify s  bundle bytes  (targets)"]
    for name in WORKLOADS:
        r, t = result[name], TARGETS[name]
        lines.append(
            f"{name:9s} {r['range_proofs']:12d} {r['prove_s']:8.3f} {r['verify_s']:9.3f} "
            f"{int(r['bundle_bytes']):13d}  (<= {t['prove_s']} s, {t['verify_s']} s, "
            f"{t['bundle_bytes']} B)"
        )
    flat = result["verify_vs_bags"]
    lines.append(
        "verify with 1 / 6 bags per site (3 × 12): " + " / ".join(f"{v} s" for v in flat.values())
    )
    lines.append(f"gateway commit+seal+sign: {result['commit_seal_sign_ms']} ms per mass event "
                 f"(<= {TARGETS['commit_seal_sign_ms']} ms)")  # fmt: skip
    return "\n".join(lines)
