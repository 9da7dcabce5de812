"""The registry authority's entries: their format, their chain, the ledger that logs them, and
the command lines of the three parties (authority, ledger, buyer)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from custody import cbor, cose
from custody.errors import ConfigError, ProofError, SchemaError, VerificationError
from custody.keys import DeviceKey, LedgerKeyPair, kid_for
from ledger.authority import Authority, create_authority
from ledger.intake import Intake
from ledger.registry import add_entry, pin_authority
from ledger.store import LedgerStore
from ledger.verify.authority import AuthorityKey
from ledger.verify.registry import (
    ENTRY_CONTENT_TYPE,
    LoggedEntry,
    Op,
    decode_entry,
    replay,
)
from sync.batch import encode_batch
from tests.support import REPO

SITE = "KOL-01"


@pytest.fixture
def authority(tmp_path: Path) -> Authority:
    create_authority(tmp_path / "authority", "consortium-registry")
    return Authority(tmp_path / "authority")


def resigned(signer: Authority, data: bytes, **changes: Any) -> bytes:
    """``data`` with payload fields replaced (None: removed), signed again by the authority."""
    msg = cose.decode_sign1(data)
    payload = cbor.decode(msg.payload)
    for name, value in changes.items():
        if value is None:
            payload.pop(name, None)
        else:
            payload[name] = value
    return cose.sign1(SigningKey(signer._seed), {}, cbor.encode(payload),
                      protected_bytes=msg.protected_bytes)  # fmt: skip


# --- one entry ----------------------------------------------------------------------------------


def test_each_op_round_trips(authority: Authority) -> None:
    device = DeviceKey.generate()
    path, enrolled = authority.enrol("gw-1", SITE, device.public_key)
    assert (enrolled.op, enrolled.seq, enrolled.prev) == (Op.ENROL, 1, bytes(32))
    assert (enrolled.device_id, enrolled.site_id, enrolled.kid) == ("gw-1", SITE, device.kid)
    assert decode_entry(path.read_bytes(), authority.public) == enrolled
    _, retired = authority.retire(device.kid, 7, bytes(range(32)))
    assert (retired.prev, retired.last_seq, retired.last_checkpoint) == (
        enrolled.entry_id, 7, bytes(range(32)),
    )  # fmt: skip
    _, stock = authority.stock(SITE, bytes(32))
    _, beat = authority.heartbeat()
    assert [e.op for _, e in authority.entries()] == [Op.ENROL, Op.RETIRE, Op.STOCK, Op.HEARTBEAT]
    assert (stock.record, beat.seq) == (bytes(32), 4)


@pytest.mark.parametrize(
    "change",
    [
        {"v": True}, {"v": 2}, {"seq": 0}, {"seq": True}, {"t": -1}, {"t": False},
        {"prev": b"short"}, {"op": "move"}, {"op": 3}, {"device": None}, {"extra": 1},
        {"authority": "someone-else"}, {"site": "not a site!"}, {"key": bytes(32)},
        {"key": bytes([1]) + bytes(31)},  # the identity point: small order
    ],
)  # fmt: skip
def test_an_entry_of_another_shape_is_refused_even_when_signed(
    authority: Authority, change: dict[str, Any]
) -> None:
    path, _ = authority.enrol("gw-1", SITE, DeviceKey.generate().public_key)
    with pytest.raises(SchemaError):
        decode_entry(resigned(authority, path.read_bytes(), **change), authority.public)


def test_an_entry_signed_by_anyone_else_is_refused(authority: Authority, tmp_path: Path) -> None:
    path, _ = authority.enrol("gw-1", SITE, DeviceKey.generate().public_key)
    other = create_authority(tmp_path / "other", "consortium-registry")
    with pytest.raises(VerificationError):
        decode_entry(path.read_bytes(), other)
    # The ledger's key under the authority's name: the kid tells them apart, and the signature.
    ledger = LedgerKeyPair.generate("ledger")
    payload = cbor.decode(cose.decode_sign1(path.read_bytes()).payload)
    protected = {cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_CONTENT_TYPE: ENTRY_CONTENT_TYPE,
                 cose.HDR_KID: authority.public.kid}  # fmt: skip
    forged = cose.sign1(SigningKey(ledger.signing_seed), protected, cbor.encode(payload))
    with pytest.raises(VerificationError):
        decode_entry(forged, authority.public)


# --- the chain ----------------------------------------------------------------------------------


def chain(authority: Authority, n: int) -> list[LoggedEntry]:
    for i in range(n):
        authority.enrol(f"gw-{i}", SITE, DeviceKey.generate().public_key)
    return [LoggedEntry(10 * e.seq, e) for _, e in authority.entries()]


def test_a_gapless_linked_chain_replays(authority: Authority) -> None:
    entries = chain(authority, 3)
    state = replay(entries)
    assert len(state.enrolments) == 3 and state.last_index == 30
    assert {e.index for e in state.enrolments.values()} == {10, 20, 30}


def test_a_gap_a_broken_link_or_a_reordered_log_is_refused(authority: Authority) -> None:
    entries = chain(authority, 3)
    with pytest.raises(ProofError, match="gap"):
        replay([entries[0], entries[2]])
    with pytest.raises(ProofError, match="logged before"):
        replay([entries[0], LoggedEntry(5, entries[1].entry), entries[2]])
    broken = resigned(authority, _bytes_of(authority, 2), prev=bytes(32 * [7]))
    relinked = LoggedEntry(20, decode_entry(broken, authority.public))
    with pytest.raises(ProofError, match="prev"):
        replay([entries[0], relinked, entries[2]])


def _bytes_of(authority: Authority, seq: int) -> bytes:
    return next(p for p, e in authority.entries() if e.seq == seq).read_bytes()


def test_statements_made_twice_are_refused_by_the_authority(authority: Authority) -> None:
    key = DeviceKey.generate()
    authority.enrol("gw-1", SITE, key.public_key)
    with pytest.raises(ConfigError, match="already enrolled"):
        authority.enrol("gw-2", SITE, key.public_key)
    authority.retire(key.kid, 3)
    with pytest.raises(ConfigError, match="already retired"):
        authority.retire(key.kid, 4)
    authority.stock(SITE, bytes(32))
    with pytest.raises(ConfigError, match="once"):
        authority.stock(SITE, bytes([1]) * 32)
    assert len(authority.entries()) == 3  # nothing signed for the refusals


def test_a_chain_stating_something_twice_is_refused_whole(authority: Authority) -> None:
    authority.stock(SITE, bytes(32))
    first = decode_entry(_bytes_of(authority, 1), authority.public)
    # A second pin of the same site, as a (buggy) authority might sign it.
    second = decode_entry(resigned(authority, _bytes_of(authority, 1), seq=2, prev=first.entry_id,
                                   record=bytes([1]) * 32), authority.public)  # fmt: skip
    with pytest.raises(ProofError, match="second opening stock"):
        replay([LoggedEntry(1, first), LoggedEntry(2, second)])


# --- the ledger that logs them --------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> LedgerStore:
    return LedgerStore(tmp_path / "ledger.sqlite")


def test_the_ledger_logs_enrols_and_reports_an_entry_once(
    authority: Authority, store: LedgerStore
) -> None:
    key = DeviceKey.generate()
    path, entry = authority.enrol("gw-1", SITE, key.public_key)
    added = add_entry(store, authority.public, path.read_bytes())
    assert (added.new, added.log_index) == (True, 0)
    enrolled = store.key(key.kid)
    assert enrolled is not None and (enrolled.site_id, enrolled.enrolled_index) == (SITE, 0)
    again = add_entry(store, authority.public, path.read_bytes())
    assert (again.new, again.log_index, store.log_size()) == (False, 0, 1)
    assert store.registry_head() == (1, entry.entry_id)


def test_the_ledger_refuses_entries_out_of_order_forks_and_strangers(
    authority: Authority, store: LedgerStore, tmp_path: Path
) -> None:
    first, _ = authority.enrol("gw-1", SITE, DeviceKey.generate().public_key)
    second, _ = authority.heartbeat()
    with pytest.raises(ConfigError, match=r"add entries 1\.\.1 first"):
        add_entry(store, authority.public, second.read_bytes())
    add_entry(store, authority.public, first.read_bytes())
    fork = resigned(authority, first.read_bytes(), device="gw-9")
    with pytest.raises(ConfigError, match="fork of the registry"):
        add_entry(store, authority.public, fork)
    create_authority(tmp_path / "stranger", "consortium-registry")
    stranger = Authority(tmp_path / "stranger")
    with pytest.raises(VerificationError):
        add_entry(store, authority.public, stranger.heartbeat()[0].read_bytes())
    assert store.log_size() == 1


def test_the_ledger_will_not_pin_its_own_key_as_the_authority(tmp_path: Path) -> None:
    ledger = LedgerKeyPair.generate("ledger")
    own = AuthorityKey("consortium-registry", ledger.public.signing_key)
    with pytest.raises(ConfigError, match=r"this ledger's own key"):
        pin_authority(tmp_path, own, ledger.public)


def test_a_retired_key_still_logs_records_up_to_its_last_seq_and_none_after(
    authority: Authority, store: LedgerStore
) -> None:
    from custody.envelope import EventSigner, event_id_of
    from custody.event import DeviceTime, EventType, Payload, TimeQuality, TimeSource

    key = DeviceKey.generate()
    add_entry(
        store, authority.public, authority.enrol("gw-1", SITE, key.public_key)[0].read_bytes()
    )
    ledger = LedgerKeyPair.generate("ledger")
    intake = Intake(store, ledger)
    records, prev = [], bytes(32)
    for seq in range(1, 5):
        when = DeviceTime(1, TimeSource.NTP, TimeQuality.SYNCED)
        body = {"seal": f"S{seq}"}
        payload = Payload("gw-1", SITE, seq, prev, when, 1, EventType.SEAL_SCAN, body)
        records.append(EventSigner(key).sign(payload).cose)
        prev = event_id_of(records[-1])
    assert intake.ingest("gw-1", encode_batch("gw-1", records[:1])).logged == 1
    # The gateway was stolen after seq 2: the authority ends the chain there.
    add_entry(store, authority.public, authority.retire(key.kid, 2)[0].read_bytes())
    late = intake.ingest("gw-1", encode_batch("gw-1", records[1:]))
    assert late.logged == 1 and late.rejected == 2
    assert [e.seq for e in store.events()] == [1, 2]
    intake.close()


# --- the three command lines --------------------------------------------------------------------


def cli(module: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *map(str, args)], cwd=REPO,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_authority_ledger_and_buyer_commands(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    made = cli("ledger.authority_cli", "init", "--name", "consortium-registry", "--dir", registry)
    assert made.returncode == 0, made.stderr
    assert "fingerprint" in made.stdout
    public = registry / "authority-public.json"
    ledger_dir = tmp_path / "ledger"
    assert (
        cli("ledger.cli", "--data-dir", ledger_dir, "init", "--authority", public).returncode == 0
    )
    record = tmp_path / "gw-1.json"
    key = DeviceKey.generate()
    record.write_text(json.dumps({"device_id": "gw-1", "site_id": SITE,
                                  "public_key": key.public_key.hex()}))  # fmt: skip
    # The ledger cannot enrol a gateway from its record: it says who can.
    refused = cli("ledger.cli", "--data-dir", ledger_dir, "enroll", record)
    assert refused.returncode == 3 and "custody-registry enrol" in refused.stderr
    wrong_site = cli("ledger.authority_cli", "enrol", record, "--site", "OTHER", "--dir", registry)
    assert wrong_site.returncode == 3 and "--site OTHER" in wrong_site.stderr
    signed = cli("ledger.authority_cli", "enrol", record, "--site", SITE, "--dir", registry,
                 "--json")  # fmt: skip
    entry = json.loads(signed.stdout)
    assert (entry["seq"], entry["op"], entry["kid"]) == (1, "enrol", kid_for(key.public_key).hex())
    logged = cli("ledger.cli", "--data-dir", ledger_dir, "enroll", entry["file"])
    assert logged.returncode == 0 and "enrols gw-1 at KOL-01" in logged.stdout
    beat = cli("ledger.authority_cli", "heartbeat", "--dir", registry).stdout.splitlines()[0]
    assert cli("ledger.cli", "--data-dir", ledger_dir, "registry", "add", beat).returncode == 0
    listed = json.loads(cli("ledger.cli", "--data-dir", ledger_dir, "registry", "list",
                            "--json").stdout)  # fmt: skip
    assert [(e["seq"], e["op"], e["log_index"]) for e in listed["entries"]] == [
        (1, "enrol", 0), (2, "heartbeat", 1),
    ]  # fmt: skip
    no_dir = subprocess.run([sys.executable, "-m", "ledger.authority_cli", "heartbeat"],
                            cwd=REPO, capture_output=True, text=True, check=False,
                            env={"PATH": "/usr/bin:/bin"})  # fmt: skip
    assert no_dir.returncode == 2 and "CUSTODY_REGISTRY_DIR" in no_dir.stderr
    # The buyer pins the authority next to the ledger.
    trust = tmp_path / "trust.json"
    pinned = cli("ledger.verify.cli", "trust", "add", public, "--trust", trust)
    assert pinned.returncode == 0 and "registry authority 'consortium-registry'" in pinned.stdout
    shown = json.loads(cli("ledger.verify.cli", "trust", "list", "--json", "--trust", trust).stdout)
    assert [a["id"] for a in shown["authorities"]] == ["consortium-registry"]
    # A ledger key offered as an authority is refused by the buyer's tool too.
    ledger_pub = ledger_dir / "ledger-public.json"
    cli("ledger.verify.cli", "trust", "add", ledger_pub, "--trust", trust)
    raw = json.loads(ledger_pub.read_text())
    fake = tmp_path / "fake-authority.json"
    fake.write_text(json.dumps({"format": "cobalt-custody/registry-authority/v1",
                                "authority": "x", "signing_key": raw["signing_key"]}))  # fmt: skip
    refused_fake = cli("ledger.verify.cli", "trust", "add", fake, "--trust", trust)
    assert refused_fake.returncode == 2 and "signing key of ledger" in refused_fake.stderr
