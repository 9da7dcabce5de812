"""Synthetic lots for tests, the ``zk`` benchmark and the demo: real gateways, a real ledger.

``build_lot`` enrols one gateway per site plus the refiner's, records ore deliveries (inputs),
bags for the lot and other bags (outputs), checkpoints, each site's lot contribution and the
refiner's receipt, all through ``agent.recorder.Recorder``, and feeds every chain to the
ledger's ``Intake`` (the same verification as over MQTT, without the broker). The ledger can
then prove the lot with ``ledger.summary.build_summary``.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from agent import enrol
from agent.recorder import Recorder
from custody.keys import LedgerKeyPair
from ledger.intake import Intake
from ledger.keys import PUBLIC_FILE, create_ledger_keys, load_ledger_keypair
from ledger.store import LedgerStore, Store
from ledger.stores import open_store
from sync.batch import encode_batch

__all__ = ["LotScenario", "build_lot"]

LEDGER_STORE = "ledger.sqlite"


@dataclass
class LotScenario:
    root: Path
    ledger_dir: Path
    keys: LedgerKeyPair
    lot: str
    sites: list[str]
    refiner: str
    bag_units: dict[str, list[int]] = field(default_factory=dict)  # site -> its bags of the lot
    received_units: int = 0

    @property
    def total(self) -> int:
        return sum(sum(b) for b in self.bag_units.values())

    def store(self) -> LedgerStore:
        return LedgerStore(self.ledger_dir / LEDGER_STORE)


def build_lot(
    root: Path,
    *,
    sites: int = 3,
    checkpoints_per_site: int = 12,
    bags_per_site: int = 3,
    lot: str = "LOT-2026-0042",
    receipt_delta: int = 0,
    seed: int = 1,
    recovery: tuple[int, int] = (1, 4),
    bag_range: tuple[int, int] = (9_000, 16_000),
    ore_margin: int = 50_000,
) -> LotScenario:
    """A lot whose every site has at least ``checkpoints_per_site`` checkpoints.

    Each site takes in ore (inputs, enough for its outputs at the ``recovery`` factor p/q),
    weighs bags of this lot and of other lots (each output bag is followed by a checkpoint),
    closes the lot; the refiner then weighs the lot in, ``receipt_delta`` units off the total.
    ``bag_range`` bounds the bag masses (``(0, 0)``: zero-mass bags); a negative
    ``ore_margin`` makes every site ship more than its inputs allow at p/q.
    """
    rng = random.Random(seed)
    ledger_dir = root / "ledger"
    create_ledger_keys(ledger_dir, "lab-ledger")
    keys = load_ledger_keypair(ledger_dir)
    scenario = LotScenario(
        root, ledger_dir, keys, lot, [f"MINE-{i + 1:02d}" for i in range(sites)], "REFINER-01"
    )
    store = open_store(str(ledger_dir / LEDGER_STORE))
    intake = Intake(store, keys)
    p, q = recovery
    try:
        for site in scenario.sites:
            with _gateway(root, site, store, ledger_dir) as rec:
                bags = [rng.randint(*bag_range) for _ in range(bags_per_site)]
                others = max(0, checkpoints_per_site - bags_per_site)
                other_bags = [rng.randint(*bag_range) for _ in range(others)]
                # Enough ore in for every bag out at p/q, with a margin.
                ore = -(-(sum(bags) + sum(other_bags)) * q // p) + ore_margin
                while ore > 0:
                    load = min(ore, 400_000)
                    rec.weighing(gross=load + 150_000, tare=150_000, direction="in", stage="out")
                    ore -= load
                for units in other_bags:
                    rec.weighing(bag=units, lot=f"OTHER-{site}", direction="out")
                for units in bags:
                    rec.weighing(bag=units, lot=lot, direction="out")
                rec.lot_close(lot)
                scenario.bag_units[site] = bags
                _feed(intake, rec)
        with _gateway(root, scenario.refiner, store, ledger_dir) as rec:
            scenario.received_units = scenario.total + receipt_delta
            tare = 150_000
            rec.weighing(
                gross=scenario.received_units + tare, tare=tare, lot=lot, direction="in",
                stage="out",
            )  # fmt: skip
            _feed(intake, rec)
    finally:
        intake.close()
        store.close()
    return scenario


@contextlib.contextmanager
def _gateway(root: Path, site: str, store: Store, ledger_dir: Path) -> Iterator[Recorder]:
    """Initialise and enrol a gateway for ``site``; its open Recorder."""
    data_dir = root / f"gw-{site.lower()}"
    record = enrol.initialise(
        data_dir, site_id=site, device_id=f"gw-{site.lower()}",
        ledger_key_file=ledger_dir / PUBLIC_FILE,
    )  # fmt: skip
    store.enroll(record.device_id, site, record.public_key, record.kid)
    with Recorder(data_dir, boot_reason="lab") as recorder:
        yield recorder


def _feed(intake: Intake, rec: Recorder) -> None:
    device = rec.config.device_id
    chain = [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]
    for start in range(0, len(chain), 200):
        result = intake.ingest(device, encode_batch(device, chain[start : start + 200]))
        if result.rejected:
            raise RuntimeError(f"the ledger rejected records of {device}: {dict(result.reasons)}")
