"""What a lot summary reveals: two lots of the same total, one of two bags and one of three,
at two sites that run the same schedule, give bundles whose clear fields are the same
(docs/zk-summaries.md §6). The one difference left is stated: log indexes (and the inclusion
proofs that depend on them) count every record the ledger logged, bags included."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import enrol
from agent.recorder import Recorder
from custody import cbor, cose
from custody.event import DeviceTime, TimeQuality, TimeSource
from lab.lots import feed, log_entry
from ledger.authority import Authority, create_authority
from ledger.intake import Intake
from ledger.keys import PUBLIC_FILE, create_ledger_keys, load_ledger_keypair
from ledger.registry import pin_authority
from ledger.store import LedgerStore
from ledger.summary import build_summary

LOT = "LOT-2026-0042"
HOUR_MS = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, a slot boundary
TARE = 150_000


@dataclass
class FixedClock:
    """The device clock, set by the test to the schedule's slots."""

    ms: int = T0

    def now(self) -> DeviceTime:
        return DeviceTime(self.ms, TimeSource.NTP, TimeQuality.SYNCED)


def summarised_lot(root: Path, bags: list[int]) -> bytes:
    """A mine that takes ore in, weighs ``bags`` for the lot between its hourly checkpoints,
    closes the lot and checkpoints once more; the refiner receives it; the authority beats."""
    authority = create_authority(root / "authority", "consortium-registry")
    create_ledger_keys(root / "ledger", "consortium-ledger")
    keys = load_ledger_keypair(root / "ledger")
    pin_authority(root / "ledger", authority, keys.public)
    store = LedgerStore(root / "ledger" / "ledger.sqlite")
    intake = Intake(store, keys)
    clock = FixedClock()
    try:
        for device, site in (("gw-mine", "MINE-01"), ("gw-refinery", "REFINER-01")):
            record = enrol.initialise(root / device, site_id=site, device_id=device,
                                      ledger_key_file=root / "ledger" / PUBLIC_FILE)  # fmt: skip
            entry = Authority(root / "authority").enrol(device, site, record.public_key)[0]
            log_entry(store, authority, entry)
        with Recorder(root / "gw-mine", clock=clock, boot_reason="lab") as mine:
            mine.weighing(gross=1_000_000 + TARE, tare=TARE, direction="in", stage="out")
            for slot in range(1, 4):  # bags weighed within the hour, checkpoint on the hour
                for units in bags[slot - 1 :: 3]:
                    clock.ms = T0 + (slot - 1) * HOUR_MS + 600_000
                    mine.weighing(bag=units, lot=LOT, direction="out")
                clock.ms = T0 + slot * HOUR_MS
                mine.checkpoint()
            clock.ms = T0 + 3 * HOUR_MS + 1_800_000
            mine.lot_close(LOT)
            clock.ms = T0 + 4 * HOUR_MS
            mine.checkpoint()
            feed(intake, mine)
        with Recorder(root / "gw-refinery", clock=clock, boot_reason="lab") as refinery:
            clock.ms = T0 + 30 * HOUR_MS
            total = sum(bags)
            refinery.weighing(gross=total + TARE, tare=TARE, lot=LOT, direction="in",
                              stage="out")  # fmt: skip
            feed(intake, refinery)
        log_entry(store, authority, Authority(root / "authority").heartbeat()[0])
        return build_summary(store, keys, root / "ledger", LOT).bundle
    finally:
        intake.close()
        store.close()


def clear_fields(bundle: bytes) -> tuple[dict[str, Any], list[Any], list[int]]:
    """Everything a buyer reads in clear, but for commitments, proofs, signatures and hashes:
    the statement, every record's payload fields, and the log indexes (kept apart)."""
    raw = cbor.decode(bundle)
    statement = {k: v for k, v in raw["statement"].items() if k != "id"}
    statement.pop("windows")  # log indexes: with the others below
    records = []
    for item in raw["records"]:
        payload = cbor.decode(cose.decode_sign1(item["env"]).payload)
        body = {k: v for k, v in payload["body"].items()
                if k not in ("mass", "sealed", "prev_checkpoint")}  # fmt: skip
        records.append((payload["type"], payload["dev"], payload["site"], payload["seq"],
                        payload["t"], payload["boot"], body))  # fmt: skip
    indexes = [item["i"] for item in raw["records"]]
    return statement, records, indexes


def test_two_lots_of_different_bag_counts_look_the_same(tmp_path: Path) -> None:
    two = summarised_lot(tmp_path / "two", [15_000, 15_000])
    three = summarised_lot(tmp_path / "three", [10_000, 10_000, 10_000])
    s2, r2, i2 = clear_fields(two)
    s3, r3, i3 = clear_fields(three)
    assert s2 == s3  # the total is the same, and nothing else in the statement counts
    assert r2 == r3  # seq, upto, epoch, times, boot: the same for 2 bags and for 3
    # What is left: the third lot's extra bag was weighed before the third checkpoint, and
    # every record logged after it sits one log index later.
    # (So do the inclusion proofs that depend on those positions and on the log's size.)
    assert [b - a for a, b in zip(i2, i3, strict=True)] == [0, 0, 1, 1, 1, 1, 1]
