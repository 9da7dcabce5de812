"""Synthetic lots for tests, the ``zk`` benchmark and the demo: real gateways, a real ledger.

``build_lot`` creates a registry authority and a ledger, has the authority enrol one gateway
per site plus the refiner's (entries the ledger logs), records ore deliveries (inputs), bags
for the lot and other bags (outputs), checkpoints, each site's lot contribution and the
refiner's receipt, all through ``agent.recorder.Recorder``, and feeds every chain to the
ledger's ``Intake`` (the same verification as over MQTT, without the broker); the authority
ends with a heartbeat. The ledger can then prove the lot with ``ledger.summary.build_summary``.
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
from ledger.authority import Authority, create_authority
from ledger.intake import Intake
from ledger.keys import PUBLIC_FILE, create_ledger_keys, load_ledger_keypair
from ledger.registry import add_entry, pin_authority
from ledger.store import LedgerStore, Store
from ledger.stores import open_store
from ledger.verify.authority import AuthorityKey
from sync.batch import encode_batch

__all__ = ["LotScenario", "build_lot", "feed", "gateway", "log_entry", "mine_a_lot"]

LEDGER_STORE = "ledger.sqlite"


@dataclass
class LotScenario:
    root: Path
    ledger_dir: Path
    keys: LedgerKeyPair
    authority_dir: Path
    authority: AuthorityKey
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


def log_entry(store: Store, authority: AuthorityKey, entry_file: Path) -> None:
    add_entry(store, authority, entry_file.read_bytes())


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
    opening_stock: int = 0,
) -> LotScenario:
    """A lot whose every site has at least ``checkpoints_per_site`` checkpoints.

    Each site takes in ore (inputs, enough for its outputs at the ``recovery`` factor p/q),
    weighs bags of this lot and of other lots (a scheduled checkpoint after each bag),
    closes the lot; the refiner then weighs the lot in, ``receipt_delta`` units off the total.
    ``bag_range`` bounds the bag masses (``(0, 0)``: zero-mass bags); a negative
    ``ore_margin`` makes every site ship more than its inputs allow at p/q. With
    ``opening_stock`` units each site first declares that opening stock (a signed record the
    authority pins).
    """
    rng = random.Random(seed)
    ledger_dir = root / "ledger"
    authority_dir = root / "authority"
    authority = create_authority(authority_dir, "lab-registry")
    create_ledger_keys(ledger_dir, "lab-ledger")
    keys = load_ledger_keypair(ledger_dir)
    pin_authority(ledger_dir, authority, keys.public)
    scenario = LotScenario(
        root, ledger_dir, keys, authority_dir, authority, lot,
        [f"MINE-{i + 1:02d}" for i in range(sites)], "REFINER-01",
    )  # fmt: skip
    store = open_store(str(ledger_dir / LEDGER_STORE))
    intake = Intake(store, keys)
    try:
        for site in scenario.sites:
            with gateway(root, site, store, ledger_dir, authority_dir) as rec:
                if opening_stock:
                    stock = rec.declare_stock(opening_stock)
                    pinned = Authority(authority_dir).stock(site, stock.event_id)[0]
                    log_entry(store, authority, pinned)
                bags = mine_a_lot(
                    rec, rng, lot, site, bags_per_site, checkpoints_per_site, recovery,
                    bag_range, ore_margin,
                )  # fmt: skip
                scenario.bag_units[site] = bags
                feed(intake, rec)
        with gateway(root, scenario.refiner, store, ledger_dir, authority_dir) as rec:
            scenario.received_units = scenario.total + receipt_delta
            tare = 150_000
            rec.weighing(
                gross=scenario.received_units + tare, tare=tare, lot=lot, direction="in",
                stage="out",
            )  # fmt: skip
            feed(intake, rec)
        # A registry entry after every record: proof the registry shown is complete.
        log_entry(store, authority, Authority(authority_dir).heartbeat()[0])
    finally:
        intake.close()
        store.close()
    return scenario


def mine_a_lot(
    rec: Recorder, rng: random.Random, lot: str, site: str, bags_per_site: int,
    checkpoints_per_site: int, recovery: tuple[int, int], bag_range: tuple[int, int],
    ore_margin: int,
) -> list[int]:  # fmt: skip
    """One site's part of the lot: ore in, bags of this lot and others out, each bag under a
    scheduled checkpoint, the lot closed and the next checkpoint signed (the fence that shows
    a buyer its chain is complete up to the lot's window). Returns the lot's bag masses."""
    p, q = recovery
    bags = [rng.randint(*bag_range) for _ in range(bags_per_site)]
    others = max(0, checkpoints_per_site - bags_per_site)
    other_bags = [rng.randint(*bag_range) for _ in range(others)]
    # Enough ore in for every bag out at p/q, with a margin.
    ore = -(-(sum(bags) + sum(other_bags)) * q // p) + ore_margin
    while ore > 0:
        load = min(ore, 400_000)
        rec.weighing(gross=load + 150_000, tare=150_000, direction="in", stage="out")
        ore -= load
    # A scheduled checkpoint after each bag: the checkpoints a window holds.
    for units in other_bags:
        rec.weighing(bag=units, lot=f"OTHER-{site}", direction="out")
        rec.checkpoint()
    for units in bags:
        rec.weighing(bag=units, lot=lot, direction="out")
        rec.checkpoint()
    rec.lot_close(lot)
    rec.checkpoint()
    return bags


@contextlib.contextmanager
def gateway(
    root: Path,
    site: str,
    store: Store,
    ledger_dir: Path,
    authority_dir: Path,
    device_id: str | None = None,
) -> Iterator[Recorder]:
    """Initialise a gateway for ``site``, have the authority enrol it; its open Recorder."""
    device_id = device_id or f"gw-{site.lower()}"
    data_dir = root / device_id
    record = enrol.initialise(
        data_dir, site_id=site, device_id=device_id,
        ledger_key_file=ledger_dir / PUBLIC_FILE,
    )  # fmt: skip
    authority = Authority(authority_dir)
    entry = authority.enrol(record.device_id, site, record.public_key)[0]
    log_entry(store, authority.public, entry)
    with Recorder(data_dir, boot_reason="lab") as recorder:
        yield recorder


def feed(intake: Intake, rec: Recorder) -> None:
    """Give the ledger every record of the gateway's current chain, in batches."""
    device = rec.config.device_id
    chain = [e.envelope for e in rec.outbox.iter_chain(rec.key.kid)]
    for start in range(0, len(chain), 200):
        result = intake.ingest(device, encode_batch(device, chain[start : start + 200]))
        if result.rejected:
            raise RuntimeError(f"the ledger rejected records of {device}: {dict(result.reasons)}")
