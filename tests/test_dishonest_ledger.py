"""A dishonest ledger against the lot summary verifier (docs/zk-summaries.md §5).

The ledger holds every opening and builds the bundle: it can log what it likes in its own log,
choose what a bundle shows and sign with its own key, but it holds neither a gateway's key nor
the registry authority's. Each test plays such a ledger on real gateways and a real ledger
(``lab.lots``): it makes a false claim, proves it with the ledger's own keys (the proofs are
valid for what the bundle shows; where the honest prover's own checks would stop it, the test
switches them off while proving, as a dishonest ledger's code would not have them), and
asserts that the verifier refuses it at the named semantic step, not at decoding.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import ledger.summary as summary_mod
import ledger.verify.roles as roles
from agent import enrol
from agent.recorder import Recorder
from custody import cbor, cose
from custody.commitment import commit_masses, seal_openings
from custody.envelope import EventSigner
from custody.errors import ProofError, VerificationError
from custody.event import DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey, LedgerKeyPair
from custody.zk.rangeproof import RangeProver
from lab.lots import feed, log_entry
from ledger.authority import Authority, create_authority
from ledger.intake import Intake
from ledger.keys import PUBLIC_FILE, create_ledger_keys, load_ledger_keypair
from ledger.registry import pin_authority
from ledger.store import LedgerStore
from ledger.summary import Selection, SummaryError, build_summary, prove, select
from ledger.verify.authority import AuthorityKey
from ledger.verify.bundle import verify_bundle
from ledger.verify.policy import PUBLISHED_POLICIES, Policy
from ledger.verify.registry import (
    ENTRY_CONTENT_TYPE,
    Op,
    RegistryEntry,
    decode_entry,
    entry_payload,
)

POLICY = PUBLISHED_POLICIES[2]
LOT = "LOT-2026-0042"
TARE = 150_000
T0 = 1_767_225_600_000


# --- a small world: an authority, a ledger, gateways ------------------------------------------


@dataclass
class World:
    root: Path
    keys: LedgerKeyPair
    authority: AuthorityKey
    store: LedgerStore
    intake: Intake
    enrolled: set[str] = dataclasses.field(default_factory=set)

    @property
    def ledger_dir(self) -> Path:
        return self.root / "ledger"

    @property
    def authority_dir(self) -> Path:
        return self.root / "authority"

    def enrol(self, site: str, device_id: str | None = None) -> str:
        """Initialise a gateway and have the authority enrol it (its entry is logged)."""
        device_id = device_id or f"gw-{site.lower()}"
        record = enrol.initialise(
            self.root / device_id, site_id=site, device_id=device_id,
            ledger_key_file=self.ledger_dir / PUBLIC_FILE,
        )  # fmt: skip
        authority = Authority(self.authority_dir)
        log_entry(self.store, self.authority,
                  authority.enrol(device_id, site, record.public_key)[0])  # fmt: skip
        self.enrolled.add(device_id)
        return device_id

    @contextlib.contextmanager
    def gateway(self, site: str, device_id: str | None = None) -> Iterator[Recorder]:
        device_id = device_id or f"gw-{site.lower()}"
        if device_id not in self.enrolled:
            self.enrol(site, device_id)
        with Recorder(self.root / device_id, boot_reason="lab") as rec:
            yield rec

    def feed(self, rec: Recorder) -> None:
        feed(self.intake, rec)

    def heartbeat(self) -> None:
        log_entry(self.store, self.authority, Authority(self.authority_dir).heartbeat()[0])

    def receipt(self, units: int, *, two_pass: bool = True) -> None:
        with self.gateway("REFINER-01") as rec:
            if two_pass:
                rec.weighing(gross=units + TARE, tare=TARE, lot=LOT, direction="in", stage="out")
            else:
                rec.weighing(gross=units, lot=LOT, direction="in")
            self.feed(rec)

    def summarise(self, policy: Policy = POLICY) -> bytes:
        return build_summary(self.store, self.keys, self.ledger_dir, LOT, policy=policy).bundle

    def select(self, policy: Policy = POLICY) -> Selection:
        return select(self.store, self.ledger_dir, LOT, policy)

    def prove(self, selection: Selection, policy: Policy = POLICY) -> bytes:
        return prove(self.store, self.keys, self.ledger_dir, selection, policy=policy).bundle

    def verify(self, data: bytes, policy: Policy = POLICY) -> Any:
        return verify_bundle(data, self.keys.public, self.authority,
                             policies={policy.version: policy})  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    authority = create_authority(tmp_path / "authority", "lab-registry")
    create_ledger_keys(tmp_path / "ledger", "lab-ledger")
    keys = load_ledger_keypair(tmp_path / "ledger")
    pin_authority(tmp_path / "ledger", authority, keys.public)
    store = LedgerStore(tmp_path / "ledger" / "ledger.sqlite")
    intake = Intake(store, keys)
    yield World(tmp_path, keys, authority, store, intake)
    intake.close()
    store.close()


def ore(rec: Recorder, units: int) -> None:
    rec.weighing(gross=units + TARE, tare=TARE, direction="in", stage="out")


def bags(rec: Recorder, lot: str, units: list[int]) -> None:
    for u in units:
        rec.weighing(bag=u, lot=lot, direction="out")
        rec.checkpoint()  # the gateway's scheduled checkpoint, here after each bag


def refused_at(step: str, excinfo: pytest.ExceptionInfo[ProofError]) -> str:
    message = str(excinfo.value)
    assert message.startswith(f"{step}: "), message
    return message


@contextlib.contextmanager
def without(*checks: str, module: Any = roles) -> Iterator[None]:
    """The dishonest ledger's prover: the named checks of the shared derivation do nothing."""
    saved = {name: getattr(module, name) for name in checks}
    try:
        for name in checks:
            setattr(module, name, lambda *a, **k: None)
        yield
    finally:
        for name, fn in saved.items():
            setattr(module, name, fn)


# --- what a ledger can sign with its own key --------------------------------------------------


class LedgerAsAuthority:
    """Registry entries signed by the ledger's key under the real authority's name: all a
    ledger can produce, since it does not hold the authority's key."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.fake = AuthorityKey(world.authority.authority_id, world.keys.public.signing_key)

    def sign(self, op: Op, fields: dict[str, Any]) -> bytes:
        from nacl.signing import SigningKey

        seq, prev = self.world.store.registry_head()
        payload = entry_payload(self.fake.authority_id, seq + 1, prev, T0, op, fields)
        protected = {cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_CONTENT_TYPE: ENTRY_CONTENT_TYPE,
                     cose.HDR_KID: self.fake.kid}  # fmt: skip
        data = cose.sign1(SigningKey(self.world.keys.signing_seed), protected, cbor.encode(payload))
        entry = decode_entry(data, self.fake)
        store = self.world.store
        with store.transaction():  # the ledger writes its own log as it likes
            log = store.log_range()
            index = store.append_registry_entry(log, entry.seq, entry.entry_id, data, str(op))
            if op is Op.ENROL:
                store.enroll(entry.device_id, entry.site_id, entry.public_key, entry.kid,
                             enrolled_index=index)  # fmt: skip
            store.save_log(log)
        return data

    def decode(self, data: bytes, authority: AuthorityKey) -> RegistryEntry:
        try:
            return decode_entry(data, authority)
        except VerificationError:  # one of its own entries: decode it under its own key
            return decode_entry(data, self.fake)


class Phantom:
    """A gateway key the ledger made up, signing whatever the ledger wants."""

    def __init__(self, world: World, device_id: str, site: str) -> None:
        self.world, self.device_id, self.site = world, device_id, site
        self.key = DeviceKey.generate()
        self.seq, self.prev = 0, bytes(32)
        self.epoch, self.last_checkpoint = 0, None

    def record(self, type_: EventType, body: dict[str, Any], masses: dict[str, int]) -> bytes:
        points, openings = commit_masses(masses)
        full = {**body, "mass": {n: p.encoded for n, p in points.items()},
                "sealed": seal_openings(openings, self.world.keys.public.sealing_key)}  # fmt: skip
        self.seq += 1
        payload = Payload(self.device_id, self.site, self.seq, self.prev,
                          DeviceTime(T0 + self.seq, TimeSource.NTP, TimeQuality.SYNCED), 1,
                          type_, full)  # fmt: skip
        env = EventSigner(self.key).sign(payload)
        self.prev = env.event_id
        result = self.world.intake.ingest(self.device_id, _batch(self.device_id, [env.cose]))
        assert result.logged == 1, result.reasons
        return env.event_id

    def checkpoint(self, inputs: int = 0, outputs: int = 0) -> None:
        self.epoch += 1
        body: dict[str, Any] = {"epoch": self.epoch, "upto": self.seq}
        if self.last_checkpoint is not None:
            body["prev_checkpoint"] = self.last_checkpoint
        self.last_checkpoint = self.record(EventType.CHECKPOINT, body,
                                           {"in": inputs, "out": outputs})  # fmt: skip


def _batch(device: str, envelopes: list[bytes]) -> bytes:
    from sync.batch import encode_batch

    return encode_batch(device, envelopes)


def lenient_select(world: World, forger: LedgerAsAuthority, monkeypatch: Any) -> Selection:
    """``select`` as a ledger that accepts its own registry entries would run it."""
    real = summary_mod.decode_entry
    monkeypatch.setattr(summary_mod, "decode_entry", forger.decode)
    try:
        return world.select()
    finally:
        monkeypatch.setattr(summary_mod, "decode_entry", real)


# --- 1. opening stock chosen freely -----------------------------------------------------------


def over_shipping_site(
    world: World, *, stock: int = 0, stock_late: bool = False, heartbeat: bool = True
) -> None:
    """MINE-01 ships about three times what its ore allows at 1/4."""
    with world.gateway("MINE-01") as rec:
        if stock and not stock_late:
            pin = Authority(world.authority_dir).stock("MINE-01", rec.declare_stock(stock).event_id)
            log_entry(world.store, world.authority, pin[0])
        ore(rec, 400_000)  # 40 t of ore: 10 t of product at most
        bags(rec, LOT, [10_000] * 3)  # 3 t shipped... three times
        bags(rec, "OTHER", [80_000] * 3)  # ... and 24 t more of other lots
        if stock and stock_late:
            pin = Authority(world.authority_dir).stock("MINE-01", rec.declare_stock(stock).event_id)
            log_entry(world.store, world.authority, pin[0])
        rec.lot_close(LOT)
        rec.checkpoint()  # its next scheduled checkpoint: the fence
        world.feed(rec)
    world.receipt(30_000)
    if heartbeat:
        world.heartbeat()


def test_the_honest_ledger_refuses_the_over_shipping_site(world: World) -> None:
    over_shipping_site(world)
    with pytest.raises(SummaryError, match="mass balance claim is false"):
        world.summarise()


def test_a_stock_the_ledger_declares_itself_is_refused_at_the_registry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As policy v1 allowed: a stock of 2^27 units (13,421 t) at site genesis, made up by the
    ledger: a gateway of its own at the site declares it and the ledger pins it."""
    world.enrol("MINE-01")
    world.enrol("REFINER-01")
    # From here on the ledger writes the registry chain itself: the authority's next real
    # entry could no longer follow it, so everything after is the ledger's too.
    forger = LedgerAsAuthority(world)
    phantom = Phantom(world, "gw-mine-01-stock", "MINE-01")
    forger.sign(Op.ENROL, {"device": phantom.device_id, "site": "MINE-01",
                           "key": phantom.key.public_key})  # fmt: skip
    stock_id = phantom.record(EventType.OPENING_STOCK, {}, {"stock": 2**27})
    forger.sign(Op.STOCK, {"site": "MINE-01", "record": stock_id})
    over_shipping_site(world, heartbeat=False)
    phantom.checkpoint()  # its fence, after the window
    forger.sign(Op.HEARTBEAT, {})
    selection = lenient_select(world, forger, monkeypatch)
    data = world.prove(selection)  # the balance holds with the made-up stock
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    message = refused_at("registry", excinfo)
    assert "not a valid entry of the pinned registry authority lab-registry" in message


def test_an_absurd_stock_a_gateway_declares_is_refused_at_its_range_proof(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    over_shipping_site(world, stock=2**44)  # 1,759 Mt: a gateway that lies or was misconfigured
    with pytest.raises(SummaryError, match="above the policy's maximum"):
        world.summarise()
    real = RangeProver

    class Wrapping(real):  # type: ignore[valid-type,misc]
        """Proves the low bits of the value: what a ledger would have to get away with."""

        def __init__(self, label: str, value: int, blinding: Any, bits: int, group: Any) -> None:
            super().__init__(label, value % 2**bits, blinding, bits, group)

    monkeypatch.setattr(summary_mod, "RangeProver", Wrapping)
    monkeypatch.setattr(summary_mod, "_in_range", lambda value, bits: True)
    data = world.prove(world.select())
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    refused_at("zero-knowledge proofs", excinfo)


def test_a_stock_declared_after_the_window_starts_is_refused(world: World) -> None:
    over_shipping_site(world, stock=400_000, stock_late=True)
    with pytest.raises(SummaryError, match="mass balance claim is false"):
        world.summarise()  # the late stock is not used: the honest claim is still false
    selection = world.select()
    assert any("after this lot's window starts" in note for note in selection.notes)
    stock = next(r for r in _admitted(world) if r.type is EventType.OPENING_STOCK)
    selection.records[stock.index] = stock
    with without("_site_stock_check"):
        data = world.prove(selection)
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    assert "not before the window's start" in refused_at("record roles", excinfo)


def _admitted(world: World) -> list[roles.Logged]:
    from ledger.verify.registry import LoggedEntry, replay

    registry = replay(LoggedEntry(e.log_index, decode_entry(e.entry, world.authority))
                      for e in world.store.registry_entries())  # fmt: skip
    return summary_mod._admitted(world.store, roles.KeyBook(registry), LOT)


# --- 2. the ledger as its own registry authority ----------------------------------------------


def short_receipt_lot(world: World) -> int:
    with world.gateway("MINE-01") as rec:
        ore(rec, 1_000_000)
        bags(rec, LOT, [10_000, 12_000])
        rec.lot_close(LOT)
        rec.checkpoint()
        world.feed(rec)
    total = 22_000
    world.receipt(total * 8 // 10)  # the refiner weighed 20 % less than the lot's total
    world.heartbeat()
    return total


def test_a_phantom_refiner_gateway_is_refused_at_the_registry(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    total = short_receipt_lot(world)
    with pytest.raises(SummaryError, match="tolerance claim is false"):
        world.summarise()
    real_receipt = next(
        r.index
        for r in _admitted(world)
        if r.type is EventType.WEIGHING and r.key.device_id == "gw-refiner-01"
    )
    forger = LedgerAsAuthority(world)
    phantom = Phantom(world, "gw-refiner-01-b", "REFINER-01")
    forger.sign(Op.ENROL, {"device": phantom.device_id, "site": "REFINER-01",
                           "key": phantom.key.public_key})  # fmt: skip
    phantom.record(EventType.WEIGHING,
                   {"lot": LOT, "direction": "in", "pass": "out"},
                   {"gross": total + TARE, "tare": TARE})  # fmt: skip
    forger.sign(Op.HEARTBEAT, {})
    real_admitted = summary_mod._admitted
    monkeypatch.setattr(summary_mod, "_admitted", lambda *a: [
        r for r in real_admitted(*a) if r.index != real_receipt])  # fmt: skip
    data = world.prove(lenient_select(world, forger, monkeypatch))
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    assert "not a valid entry of the pinned registry authority" in refused_at("registry", excinfo)
    # Nor can the buyer be made to take the ledger's key for the authority's.
    own = AuthorityKey("lab-registry", world.keys.public.signing_key)
    with pytest.raises(ProofError, match="ledger's own signing key"):
        verify_bundle(data, world.keys.public, own)


# --- 3. keys left out or cut short -------------------------------------------------------------


def two_scales(world: World, *, rotate: bool = False) -> None:
    """MINE-01 has scale A (ore in, the lot's bags) and scale B, which ships 12 bags of 13.75 t
    (165 t) with no feed behind them, logged before A closes the lot."""
    with world.gateway("MINE-01") as a, world.gateway("MINE-01", "gw-mine-01-b") as b:
        ore(a, 700_000)  # 70 t of ore: 17.5 t of product at most
        bags(a, LOT, [10_000, 12_000])
        world.feed(a)
        first_key = b.key.kid
        bags(b, "OTHER", [137_500])
        if rotate:
            b.rotate_key()  # B's first chain ends; its new key goes on shipping
            _feed_chain(world, b, first_key)
        bags(b, "OTHER", [137_500] * 11)
        world.feed(b)
        a.lot_close(LOT)
        a.checkpoint()
        world.feed(a)
        b.checkpoint()
        world.feed(b)
    world.receipt(22_000)
    world.heartbeat()


def _feed_chain(world: World, rec: Recorder, kid: bytes) -> None:
    device = rec.config.device_id
    chain = [e.envelope for e in rec.outbox.iter_chain(kid)]
    result = world.intake.ingest(device, _batch(device, chain))
    assert not result.rejected, result.reasons


def _drop(world: World, selection: Selection, keep: Callable[[roles.Logged], bool]) -> None:
    """Leave out what ``keep`` refuses; show the rest of the site from its keys' first
    checkpoints (the window now starts at the first one)."""
    for index in [i for i, r in selection.records.items() if not keep(r)]:
        del selection.records[index]
    site = "MINE-01"
    shown = [r for r in selection.records.values()
             if r.type is EventType.CHECKPOINT and r.key.site_id == site]  # fmt: skip
    last = {r.key.kid: max(c.index for c in shown if c.key.kid == r.key.kid) for r in shown}
    for r in _admitted(world):
        if r.type is EventType.CHECKPOINT and r.key.kid in last and r.index <= last[r.key.kid]:
            selection.records[r.index] = r
    selection.windows[site] = min(
        i for i, r in selection.records.items()
        if r.type is EventType.CHECKPOINT and r.key.site_id == site
    )  # fmt: skip


def test_the_honest_ledger_refuses_the_scale_with_no_feed(world: World) -> None:
    two_scales(world)
    with pytest.raises(SummaryError, match="mass balance claim is false"):
        world.summarise()


def test_a_scale_left_out_is_refused_as_a_chain_cut_short(world: World) -> None:
    two_scales(world)
    selection = world.select()
    _drop(world, selection, lambda r: r.key.device_id != "gw-mine-01-b")
    with without("_fence"):
        data = world.prove(selection)
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    message = refused_at("record roles", excinfo)
    assert "the chain of gw-mine-01-b" in message and "cut short: nothing shown at all" in message


def test_a_scale_shown_only_up_to_its_first_checkpoint_is_refused(world: World) -> None:
    two_scales(world)
    selection = world.select()
    _drop(world, selection, lambda r: r.key.device_id != "gw-mine-01-b" or r.body.get("epoch") == 1)
    with without("_fence"):
        data = world.prove(selection)
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    assert "cut short: nothing shown after epoch 1" in refused_at("record roles", excinfo)


def test_the_key_a_rotation_announced_cannot_be_left_out(world: World) -> None:
    two_scales(world, rotate=True)
    with pytest.raises(SummaryError, match="mass balance claim is false"):
        world.summarise()
    selection = world.select()
    old_b = next(r.key for r in selection.records.values() if r.type is EventType.KEY_ROTATION)
    # B's old chain is shown with its rotation (its fence); its new key's checkpoints are not.
    _drop(world, selection, lambda r: r.key.device_id != "gw-mine-01-b" or r.key.kid == old_b.kid)
    with without("_fence"):
        data = world.prove(selection)
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    message = refused_at("record roles", excinfo)
    assert "cut short: nothing shown at all" in message and old_b.kid.hex() not in message


# --- 4. the window moved past a deficit --------------------------------------------------------


def shipped_before_feed(world: World) -> None:
    """MINE-01 ships the lot's bags before any ore arrives, closes the lot, then takes ore in."""
    with world.gateway("MINE-01") as rec:
        bags(rec, LOT, [10_000, 12_000])
        rec.lot_close(LOT)
        for _ in range(3):
            ore(rec, 400_000)
            rec.checkpoint()
        rec.checkpoint()
        world.feed(rec)
    world.receipt(22_000)
    world.heartbeat()


def test_a_window_moved_past_the_deficit_is_refused(world: World) -> None:
    policy = dataclasses.replace(POLICY, version=99, window=1)
    shipped_before_feed(world)
    with pytest.raises(SummaryError, match="mass balance claim is false"):
        world.summarise(policy)
    selection = world.select(policy)
    admitted = {r.index: r for r in _admitted(world) if r.type is EventType.CHECKPOINT}
    checkpoints = sorted(admitted)
    # The window: one checkpoint after the ore arrived, the covering one now a mere base.
    start = checkpoints[-3]
    selection.windows["MINE-01"] = start
    for index in checkpoints:
        selection.records.pop(index, None)
    for index in checkpoints[-4:-1]:  # base, window, fence
        selection.records[index] = admitted[index]

    def first_covering_in_window(site: str, chain: Any, contrib: Any, start: int) -> Any:
        return next(c for c in chain if c.body["upto"] >= contrib.seq and c.index >= start)

    real = roles._covering
    roles._covering = first_covering_in_window
    try:
        data = world.prove(selection, policy)
    finally:
        roles._covering = real
    with pytest.raises(ProofError) as excinfo:
        world.verify(data, policy)
    assert "before the window's start" in refused_at("record roles", excinfo)


# --- beyond the four: every sentence of the claim, and what faking it would take ---------------


@pytest.fixture
def lot(tmp_path: Path) -> Any:
    from lab.lots import build_lot

    return build_lot(tmp_path / "lot", sites=2, checkpoints_per_site=3, bags_per_site=2)


def _lot_world(scenario: Any) -> World:
    store = scenario.store()
    return World(
        scenario.root, scenario.keys, scenario.authority, store, Intake(store, scenario.keys)
    )


def test_a_registry_shown_short_of_the_records_is_refused(lot: Any) -> None:
    """ "every key of those sites is accounted for": hiding the registry's newest entries (an
    enrolment at a contributing site, a retirement) by ending the chain early."""
    world = _lot_world(lot)
    selection = world.select()
    selection.entries = selection.entries[:-1]  # the heartbeat logged after the lot
    with pytest.raises(ProofError) as excinfo:
        world.verify(world.prove(selection))
    assert "could be missing" in refused_at("registry", excinfo)


def test_a_registry_with_an_entry_left_out_is_refused(lot: Any) -> None:
    world = _lot_world(lot)
    selection = world.select()
    del selection.entries[1]
    with pytest.raises(ProofError) as excinfo:
        world.verify(world.prove(selection))
    assert "gap" in refused_at("registry", excinfo)


def test_a_checkpoint_left_out_of_the_window_is_refused(lot: Any) -> None:
    """ "mass balance held at each site checkpoint": skipping the one where it did not."""
    world = _lot_world(lot)
    selection = world.select()
    in_window = sorted(
        i for i, r in selection.records.items()
        if r.type is EventType.CHECKPOINT and r.key.site_id == "MINE-01"
    )  # fmt: skip
    del selection.records[in_window[1]]
    with without("_contiguous"):
        data = world.prove(selection)
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    assert "not contiguous" in refused_at("record roles", excinfo)


def test_records_after_a_retirement_are_refused_and_the_retirement_fences_the_chain(
    tmp_path: Path,
) -> None:
    """A gateway stolen after it closed the lot: the authority ends its chain at the lot's
    covering checkpoint. The honest bundle uses the retirement as the chain's fence; a ledger
    that shows the thief's later record is refused."""
    from lab.lots import build_lot

    scenario = build_lot(tmp_path, sites=1, checkpoints_per_site=2, bags_per_site=2)
    world = _lot_world(scenario)
    mine = [r for r in _admitted(world) if r.key.site_id == "MINE-01"]
    covering, fence = [r for r in mine if r.type is EventType.CHECKPOINT][-2:]
    retire = Authority(scenario.authority_dir).retire(covering.key.kid, covering.seq,
                                                      covering.env.event_id)  # fmt: skip
    log_entry(world.store, world.authority, retire[0])
    world.heartbeat()
    honest = world.summarise()
    assert world.verify(honest).total == scenario.total
    selection = world.select()
    assert fence.index not in selection.records  # past the chain's end: no bundle may use it
    selection.records[fence.index] = fence
    prover_view = dataclasses.replace(selection.registry, retirements={})
    data = world.prove(dataclasses.replace(selection, registry=prover_view))
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    assert "after its key's last seq" in refused_at("records", excinfo)


def test_a_single_pass_weighing_cannot_stand_for_the_receipt(world: World) -> None:
    """ "received by R within τ": only a two-pass weighing (its net) is a receipt, not a
    gross reading that happens to match the lot's total."""
    with world.gateway("MINE-01") as rec:
        ore(rec, 1_000_000)
        bags(rec, LOT, [10_000, 12_000])
        rec.lot_close(LOT)
        rec.checkpoint()
        world.feed(rec)
    world.receipt(22_000, two_pass=False)
    world.heartbeat()
    with pytest.raises(SummaryError, match="two-pass receipt"):
        world.summarise()
    records = _admitted(world)
    contributions = [r for r in records if r.type is EventType.LOT_CONTRIBUTION]
    start = min(r.index for r in records if r.type is EventType.CHECKPOINT)
    registry = roles.KeyBook(replay_registry(world))
    with pytest.raises(ProofError, match="two-pass weighing"):
        roles.derive(LOT, "REFINER-01", ("MINE-01",), {"MINE-01": start}, POLICY.window,
                     registry, records)  # fmt: skip
    assert contributions  # the lot itself is in order


def replay_registry(world: World) -> Any:
    from ledger.verify.registry import LoggedEntry, replay

    return replay(LoggedEntry(e.log_index, decode_entry(e.entry, world.authority))
                  for e in world.store.registry_entries())  # fmt: skip


def test_a_bundle_of_the_unsound_policy_v1_is_refused_saying_why(world: World) -> None:
    from ledger.verify.bundle import BUNDLE_KIND

    old = cbor.encode({"v": 1, "kind": BUNDLE_KIND, "statement": {}, "registry": b"",
                       "log": b"", "hashes": [], "records": [], "proof": {}})  # fmt: skip
    with pytest.raises(ProofError, match=r"policy v1 is refused because the ledger chose"):
        world.verify(old)


def test_a_contribution_its_gateway_voided_is_refused(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ "W kg from the sites": counting a contribution the site withdrew."""
    with world.gateway("MINE-01") as rec:
        ore(rec, 1_000_000)
        bags(rec, LOT, [10_000, 12_000])
        contribution, _ = rec.lot_close(LOT)
        rec.void(contribution.event_id, "closed before the last bag")
        rec.checkpoint()  # lists the void
        world.feed(rec)
    world.receipt(22_000)
    world.heartbeat()
    with pytest.raises(SummaryError, match="has no contributions"):
        world.summarise()
    monkeypatch.setattr(summary_mod, "_voided", lambda usable: set())
    selection = world.select()
    with without("_not_voided"):
        data = world.prove(selection)
    with pytest.raises(ProofError) as excinfo:
        world.verify(data)
    assert "was voided by its gateway" in refused_at("record roles", excinfo)
