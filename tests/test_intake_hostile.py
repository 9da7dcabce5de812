"""The intake against a hostile enrolled device, without a broker: what one device's messages
can make the ledger do. (Over a real broker and ``custody-ledger run``: test_hostile_gateway.py.)
"""

from __future__ import annotations

from pathlib import Path

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody import cbor, cose
from custody.envelope import EventSigner, event_id_of
from custody.errors import SchemaError
from custody.event import MAX_SEQ, DeviceTime, EventType, Payload, TimeQuality, TimeSource
from custody.keys import DeviceKey
from custody.reasons import Reason
from ledger.intake import Intake
from ledger.store import LedgerStore
from sync.ack import MAX_REJECTIONS, Ack, verify_ack
from sync.batch import encode_batch
from tests.conftest import Gateway

DEVICE = "gw-kol-01"
SITE = "KOL-01"
T = DeviceTime(1_700_000_000_000, TimeSource.NTP, TimeQuality.SYNCED)


@pytest.fixture
def ledger(tmp_path: Path, gateway: Gateway) -> Intake:
    store = LedgerStore(tmp_path / "ledger.sqlite")
    key = DeviceKey(bytes.fromhex((gateway.data_dir / "device.key").read_text().strip()))
    store.enroll(DEVICE, SITE, key.public_key, key.kid)
    return Intake(store, gateway.ledger)


def device_key(gateway: Gateway) -> DeviceKey:
    return DeviceKey(bytes.fromhex((gateway.data_dir / "device.key").read_text().strip()))


def signed(
    key: DeviceKey, seq: int, prev: bytes, *, site: str = SITE,
    body: dict[str, object] | None = None, type_: EventType = EventType.SEAL_SCAN,
) -> bytes:  # fmt: skip
    payload = Payload(DEVICE, site, seq, prev, T, 1, type_, body or {"seal": f"S-{seq}"})
    return EventSigner(key).sign(payload).cose


def badly_signed(key: DeviceKey, seq: int) -> bytes:
    """An envelope of the device's key whose signature does not verify."""
    msg = cose.decode_sign1(signed(key, 1, bytes(32)))
    # The payload claims ``seq``; the signature is of another payload.
    payload = cbor.decode(msg.payload)
    payload["seq"] = seq
    payload["body"] = {"seal": "TAMPERED"}
    return cbor.encode(
        cbor.Tag(cose.COSE_SIGN1_TAG, [msg.protected_bytes, {}, cbor2.dumps(payload),
                                       msg.signature])
    )  # fmt: skip


def ack_of(intake: Intake, kid: bytes, data: bytes) -> Ack:
    return verify_ack(data, intake.keys.public, device_id=DEVICE, device_kid=kid)


# --- one message must not stop the intake ----------------------------------------------------
def test_the_same_bad_envelope_twice_is_one_rejection_in_a_valid_ack(
    ledger: Intake, gateway: Gateway
) -> None:
    key = device_key(gateway)
    bad = badly_signed(key, 2)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [bad, bad]))
    ack = ack_of(ledger, key.kid, result.acks[0])
    assert [(r.seq, r.event_id) for r in ack.rejected] == [(2, event_id_of(bad))]
    assert "does not verify" in ack.rejected[0].reason


def test_rejections_out_of_seq_order_are_sorted_in_the_ack(
    ledger: Intake, gateway: Gateway
) -> None:
    key = device_key(gateway)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [badly_signed(key, 2),
                                                         badly_signed(key, 1)]))  # fmt: skip
    assert [r.seq for r in ack_of(ledger, key.kid, result.acks[0]).rejected] == [1, 2]


def test_a_claimed_seq_beyond_64_bits_is_not_used(ledger: Intake, gateway: Gateway) -> None:
    key = device_key(gateway)
    for claimed in (2**63, 2**64 + 5, MAX_SEQ):
        result = ledger.ingest(DEVICE, encode_batch(DEVICE, [badly_signed(key, claimed)]))
        assert result.rejected == 1
        rejected = ack_of(ledger, key.kid, result.acks[0]).rejected if result.acks else ()
        # Only a seq a record could have is reported back; larger ones are dropped from
        # the report (the row is still kept, without a seq).
        assert [r.seq for r in rejected] == ([MAX_SEQ] if claimed == MAX_SEQ else [])
    assert [r[1] for r in ledger.store.rejections()] == [None, None, MAX_SEQ]


def test_a_record_cannot_claim_a_seq_beyond_64_bits() -> None:
    with pytest.raises(SchemaError, match="seq"):
        Payload(DEVICE, SITE, 2**63, bytes(32), T, 1, EventType.SEAL_SCAN, {"seal": "X"})


def test_more_rejections_than_an_ack_holds_are_capped(ledger: Intake, gateway: Gateway) -> None:
    # A batch holds at most MAX_REJECTIONS records, but a rotation refuses every record
    # parked behind it at once: more than one ack can name.
    key = device_key(gateway)
    first = signed(key, 1, bytes(32))
    rotation = signed(key, 2, event_id_of(first), type_=EventType.KEY_ROTATION,
                      body={"new_key": DeviceKey.generate().public_key})  # fmt: skip
    chain, prev = [], event_id_of(rotation)
    for seq in range(3, MAX_REJECTIONS + 8):
        chain.append(signed(key, seq, prev))
        prev = event_id_of(chain[-1])
    half = len(chain) // 2
    for part in (chain[half:], chain[:half]):  # parked, newest first
        assert ledger.ingest(DEVICE, encode_batch(DEVICE, part)).waiting == len(part)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [first, rotation]))
    assert (result.logged, result.rejected) == (2, len(chain))
    ack = ack_of(ledger, key.kid, result.acks[0])
    assert [r.seq for r in ack.rejected] == list(range(3, 3 + MAX_REJECTIONS))


# --- site: what the device says is not where it was enrolled -----------------------------------
def test_a_record_for_another_site_is_rejected(ledger: Intake, gateway: Gateway) -> None:
    key = device_key(gateway)
    first = signed(key, 1, bytes(32), site="REFINER-01")
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [first]))
    assert (result.logged, dict(result.reasons)) == (0, {Reason.SITE_MISMATCH: 1})
    reason = ack_of(ledger, key.kid, result.acks[0]).rejected[0].reason
    assert "REFINER-01" in reason and SITE in reason
    honest = ledger.ingest(DEVICE, encode_batch(DEVICE, [signed(key, 1, bytes(32))]))
    assert honest.logged == 1


def test_a_rotation_cannot_move_the_device_to_another_site(
    ledger: Intake, gateway: Gateway
) -> None:
    key = device_key(gateway)
    new = DeviceKey.generate()
    first = signed(key, 1, bytes(32))
    moving = signed(key, 2, event_id_of(first), site="REFINER-01",
                    type_=EventType.KEY_ROTATION, body={"new_key": new.public_key})  # fmt: skip
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [first, moving]))
    assert (result.logged, dict(result.reasons)) == (1, {Reason.SITE_MISMATCH: 1})
    assert ledger.store.key(new.kid) is None
    staying = signed(key, 2, event_id_of(first), type_=EventType.KEY_ROTATION,
                     body={"new_key": new.public_key})  # fmt: skip
    assert ledger.ingest(DEVICE, encode_batch(DEVICE, [staying])).logged == 1
    enrolled = ledger.store.key(new.kid)
    assert enrolled is not None and enrolled.site_id == SITE


# --- retired keys: parked records are judged again when released -------------------------------
def test_records_parked_before_a_rotation_are_refused_when_it_retires_the_key(
    ledger: Intake, gateway: Gateway
) -> None:
    key = device_key(gateway)
    new = DeviceKey.generate()
    first = signed(key, 1, bytes(32))
    rotation = signed(key, 2, event_id_of(first), type_=EventType.KEY_ROTATION,
                      body={"new_key": new.public_key})  # fmt: skip
    # A thief with the old key signs seq 3 and 4 and gets them in before the rotation.
    after = signed(key, 3, event_id_of(rotation))
    later = signed(key, 4, event_id_of(after))
    parked = ledger.ingest(DEVICE, encode_batch(DEVICE, [after, later]))
    assert (parked.logged, parked.waiting) == (0, 2)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [first, rotation]))
    assert (result.logged, dict(result.reasons)) == (2, {Reason.REVOKED: 2})
    ack = ack_of(ledger, key.kid, result.acks[0])
    assert [(r.seq, r.event_id) for r in ack.rejected] == [
        (3, event_id_of(after)), (4, event_id_of(later)),
    ]  # fmt: skip
    assert all("key_rotation at seq 2" in r.reason for r in ack.rejected)
    assert [e.seq for e in ledger.store.events()] == [1, 2]
    assert ledger.store.waiting_count(key.kid) == 0


def test_a_parked_record_is_refused_at_release_if_its_key_was_revoked(
    ledger: Intake, gateway: Gateway
) -> None:
    key = device_key(gateway)
    first = signed(key, 1, bytes(32))
    second = signed(key, 2, event_id_of(first))
    ledger.ingest(DEVICE, encode_batch(DEVICE, [second]))  # parked
    ledger.store.revoke(DEVICE)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [first]))
    assert (result.logged, dict(result.reasons)) == (0, {Reason.REVOKED: 1})
    assert ledger.store.log_size() == 0


def _chain(key: DeviceKey, length: int) -> list[bytes]:
    chain, prev = [], bytes(32)
    for seq in range(1, length + 1):
        chain.append(signed(key, seq, prev))
        prev = event_id_of(chain[-1])
    return chain


def test_one_message_releases_a_bounded_number_of_parked_records(
    ledger: Intake, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("ledger.intake.MAX_RELEASED_PER_MESSAGE", 3)
    key = device_key(gateway)
    chain = _chain(key, 9)
    assert ledger.ingest(DEVICE, encode_batch(DEVICE, chain[1:])).waiting == 8
    first = ledger.ingest(DEVICE, encode_batch(DEVICE, chain[:1]))
    # Seq 1 is this message's own; 2, 3 and 4 are the most it may release.
    assert (first.logged, first.released) == (4, 3)
    assert ledger.store.waiting_count(key.kid) == 5
    assert ack_of(ledger, key.kid, first.acks[0]).seq == 4
    # The device resends from its first unacked record: each resend releases more, and
    # the resent record meets its released copy as a duplicate, never a parked leftover.
    again = ledger.ingest(DEVICE, encode_batch(DEVICE, [chain[4]]))
    assert (again.logged, again.released, again.duplicates) == (3, 3, 1)
    last = ledger.ingest(DEVICE, encode_batch(DEVICE, [chain[7]]))
    assert (last.logged, last.released, last.duplicates) == (2, 2, 1)
    assert ledger.store.waiting_count(key.kid) == 0
    assert [e.seq for e in ledger.store.events()] == list(range(1, 10))


def test_a_record_placed_past_the_release_quota_leaves_no_parked_copy(
    ledger: Intake, gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A resend that reaches the head after the message's releases ran out is logged from
    the message itself: its parked copy must go, or stale copies fill the wait list."""
    monkeypatch.setattr("ledger.intake.MAX_RELEASED_PER_MESSAGE", 3)
    key = device_key(gateway)
    chain = _chain(key, 9)
    assert ledger.ingest(DEVICE, encode_batch(DEVICE, chain[1:])).waiting == 8
    resend = ledger.ingest(DEVICE, encode_batch(DEVICE, chain[:5]))
    # 1 from the message, 2-4 released (the quota), 5 from the message: its copy dropped.
    assert (resend.logged, resend.released) == (5, 3)
    assert ledger.store.waiting_count(key.kid) == 4  # 6-9, not a stale 5 as well
    assert ledger.store.forks() == []
    rest = ledger.ingest(DEVICE, encode_batch(DEVICE, chain[5:6]))  # releases 6-8 (quota)
    assert (rest.logged, rest.duplicates) == (3, 1)
    last = ledger.ingest(DEVICE, encode_batch(DEVICE, chain[8:9]))  # 9 from the message
    assert last.logged == 1 and ledger.store.waiting_count(key.kid) == 0


def test_one_message_releases_a_whole_live_lane() -> None:
    from ledger.intake import MAX_RELEASED_PER_MESSAGE
    from sync.uplink import MAX_LIVE_AHEAD

    # An honest gateway's live records parked ahead of its backlog are logged by the
    # backlog's last batch, not left for its ack timeout and a resend.
    assert MAX_RELEASED_PER_MESSAGE >= MAX_LIVE_AHEAD


def test_records_parked_and_released_in_one_message_are_not_counted_as_released(
    ledger: Intake, gateway: Gateway
) -> None:
    key = device_key(gateway)
    chain = _chain(key, 4)
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [chain[2], chain[3], chain[0], chain[1]]))
    assert (result.logged, result.waiting, result.released) == (4, 0, 0)


# --- records nobody enrolled signed: summarised, bounded ---------------------------------------
def test_unknown_key_records_are_one_row_per_batch(ledger: Intake) -> None:
    stranger = DeviceKey.generate()
    envs = [signed(stranger, 1, bytes(32), body={"seal": f"X{i}"}) for i in range(300)]
    for _ in range(3):
        result = ledger.ingest(DEVICE, encode_batch(DEVICE, envs))
        assert (result.rejected, result.acks) == (300, [])
    assert isinstance(ledger.store, LedgerStore)
    rows = ledger.store.conn.execute("SELECT reason, count FROM rejections").fetchall()
    assert rows == [("unknown device key", 300)] * 3
    assert ledger.store.rejection_rows() == 3


def test_rejections_are_pruned_to_their_retention(ledger: Intake, gateway: Gateway) -> None:
    key = device_key(gateway)
    for seq in range(1, 51):
        ledger.ingest(DEVICE, encode_batch(DEVICE, [badly_signed(key, seq)]))
    assert ledger.store.rejection_rows() == 50
    assert ledger.store.prune_rejections(10) == 40
    assert [r[1] for r in ledger.store.rejections()] == list(range(41, 51))  # the newest


def test_dead_letters_are_kept_once_and_bounded(ledger: Intake) -> None:
    store = ledger.store
    assert store.record_dead_letter(DEVICE, "t", b"poison", "boom", keep=3)
    assert not store.record_dead_letter(DEVICE, "t", b"poison", "boom again", keep=3)
    for i in range(5):
        store.record_dead_letter(DEVICE, "t", b"other %d" % i, "boom", keep=3)
    kept = store.dead_letters()
    assert [d.payload for d in kept] == [b"other 2", b"other 3", b"other 4"]
    assert store.dead_letter_count() == 3


def test_forks_of_one_key_keep_a_bounded_number_of_rows(ledger: Intake, gateway: Gateway) -> None:
    from ledger.store import MAX_FORKS_PER_KEY

    key = device_key(gateway)
    first = signed(key, 1, bytes(32))
    assert ledger.ingest(DEVICE, encode_batch(DEVICE, [first])).logged == 1
    # A thief with the key signs different records at seq 1, without end.
    forks = [
        signed(key, 1, bytes(32), body={"seal": f"F{i}"}) for i in range(MAX_FORKS_PER_KEY + 20)
    ]
    for part in (forks[:60], forks[60:]):
        result = ledger.ingest(DEVICE, encode_batch(DEVICE, part))
        assert result.forks == len(part) and result.logged == 0
    kept = ledger.store.forks()
    assert len(kept) == MAX_FORKS_PER_KEY
    assert {a.forked_event_id for a in kept} == {event_id_of(f) for f in forks[:MAX_FORKS_PER_KEY]}
    # A fork seen before is counted again on its row.
    ledger.ingest(DEVICE, encode_batch(DEVICE, forks[:1]))
    assert (
        next(a.count for a in ledger.store.forks() if a.forked_event_id == event_id_of(forks[0]))
        == 2
    )


# --- exactly one catch-all, at the per-message boundary -----------------------------------------
def test_the_intake_has_one_catch_all_at_the_per_message_boundary() -> None:
    import ast

    root = Path(__file__).resolve().parents[1]
    found = []
    for path in sorted([*(root / "ledger").rglob("*.py"), *(root / "sync").rglob("*.py")]):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ExceptHandler):
                names = (
                    [] if node.type is None
                    else [e.id for e in getattr(node.type, "elts", [node.type])
                          if isinstance(e, ast.Name)]
                )  # fmt: skip
                reraises = any(isinstance(n, ast.Raise) and n.exc is None for n in node.body)
                if (node.type is None or {"Exception", "BaseException"} & set(names)) and (
                    not reraises
                ):
                    found.append(f"{path.relative_to(root)}:{node.lineno}")
    assert len(found) == 1 and found[0].startswith("ledger/service.py"), found


@given(st.binary(max_size=300))
@settings(max_examples=300, deadline=None)
def test_the_lenient_key_id_read_never_raises(data: bytes) -> None:
    from ledger.intake import _lenient_kid

    assert _lenient_kid(data) is None or isinstance(_lenient_kid(data), bytes)


@given(st.recursive(st.binary(max_size=8) | st.integers() | st.text(max_size=4),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
                        st.integers(0, 8), inner, max_size=3), max_leaves=12))  # fmt: skip
@settings(max_examples=300, deadline=None)
def test_the_lenient_key_id_read_takes_any_cbor(value: object) -> None:
    from ledger.intake import _lenient_kid

    for wrapped in (value, cbor2.CBORTag(18, value), cbor2.CBORTag(18, [value, {}, b"", b""])):
        _lenient_kid(cbor2.dumps(wrapped))


# --- the sender pays for what its message made the intake do -------------------------------------
class _RecordingLink:
    """Stands in for the broker link: what the service published and acknowledged."""

    connected = True

    def __init__(self) -> None:
        self.published: list[tuple[str, bytes]] = []
        self.acked: list[int] = []

    def publish(self, topic: str, payload: bytes, *, correlation: bytes | None = None) -> None:
        self.published.append((topic, payload))

    def ack(self, mid: int) -> None:
        self.acked.append(mid)


def test_parked_records_are_charged_once_when_they_arrive_not_again_when_released(
    ledger: Intake, gateway: Gateway, tmp_path: Path
) -> None:
    import threading

    from ledger.service import LedgerService, _Message
    from sync.mqtt import BrokerConfig
    from sync.topics import events_topic

    service = LedgerService(
        ledger, BrokerConfig(url="mqtt://127.0.0.1:1", client_id="ledger"), clock=lambda: 0.0
    )
    link = _RecordingLink()
    service.link = link  # type: ignore[assignment]
    key = device_key(gateway)
    chain = _chain(key, 7)
    stop = threading.Event()
    before = service.budget.tokens(DEVICE, 0.0)["records"]
    parked = encode_batch(DEVICE, chain[1:])
    service._process(DEVICE, _Message(events_topic(DEVICE), parked, None, 1), stop)
    after_parking = service.budget.tokens(DEVICE, 0.0)["records"]
    assert before - after_parking == 6
    first = encode_batch(DEVICE, chain[:1])
    service._process(DEVICE, _Message(events_topic(DEVICE), first, None, 2), stop)
    # One envelope in the message; the six it released were paid for when they parked (an
    # honest backlog drain must not fall into debt for records it sent once).
    assert after_parking - service.budget.tokens(DEVICE, 0.0)["records"] == 1
    assert link.acked == [1, 2] and ledger.store.log_size() == 7


# --- padded seqs: a summary record at the next stride follows its head ------------------------
def _checkpoint(ledger: Intake, key: DeviceKey, seq: int, prev: bytes) -> bytes:
    from custody.commitment import commit_masses, seal_openings

    points, openings = commit_masses({"in": 0, "out": 0})
    body = {"epoch": 1, "upto": seq - 1, "mass": {n: p.encoded for n, p in points.items()},
            "sealed": seal_openings(openings, ledger.keys.public.sealing_key)}  # fmt: skip
    return signed(key, seq, prev, body=body, type_=EventType.CHECKPOINT)


def test_a_padded_checkpoint_waits_for_its_predecessor_and_follows_it(
    ledger: Intake, gateway: Gateway
) -> None:
    from custody.event import SEQ_STRIDE

    key = device_key(gateway)
    first = signed(key, 1, bytes(32))
    second = signed(key, 2, event_id_of(first))
    checkpoint = _checkpoint(ledger, key, SEQ_STRIDE, event_id_of(second))
    # The checkpoint arrives before seq 2: its prev is not the head, so it waits.
    early = ledger.ingest(DEVICE, encode_batch(DEVICE, [first, checkpoint]))
    assert (early.logged, early.waiting) == (1, 1)
    late = ledger.ingest(DEVICE, encode_batch(DEVICE, [second]))
    assert late.logged == 2 and ledger.store.waiting_count(key.kid) == 0
    assert [e.seq for e in ledger.store.events()] == [1, 2, SEQ_STRIDE]
    after = signed(key, SEQ_STRIDE + 1, event_id_of(checkpoint))
    assert ledger.ingest(DEVICE, encode_batch(DEVICE, [after])).logged == 1


def test_only_summary_records_may_skip_to_the_next_stride(ledger: Intake, gateway: Gateway) -> None:
    from custody.event import SEQ_STRIDE

    key = device_key(gateway)
    first = signed(key, 1, bytes(32))
    skipping = signed(key, SEQ_STRIDE, event_id_of(first))  # a seal scan, not padded
    result = ledger.ingest(DEVICE, encode_batch(DEVICE, [first, skipping]))
    assert (result.logged, result.waiting) == (1, 1)  # waits for a seq 2 that never comes
    ack = ack_of(ledger, key.kid, result.acks[0])
    assert (ack.seq, ack.resend_from) == (1, 2)
