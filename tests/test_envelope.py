"""Event payload schema, envelope verification and the per-device hash chain.

The helpers at the top (``make_payload``, ``sample_body``, ``forge``) are also
used by test_cose.py and test_protocol_doc.py.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody import cbor, cose
from custody.commitment import commit_masses, seal_openings
from custody.envelope import (
    MAX_ENVELOPE_BYTES,
    ChainVerifier,
    Envelope,
    EventSigner,
    check_link,
    event_id_of,
    verify_envelope,
)
from custody.errors import (
    CaptureError,
    ChainError,
    DecodeError,
    SchemaError,
    SignatureError,
    VerificationError,
)
from custody.event import (
    CONTENT_TYPE,
    EPCIS_MAPPING,
    GENESIS_PREV,
    DeviceTime,
    EventType,
    Payload,
    TimeQuality,
    TimeSource,
)
from custody.keys import DeviceKey, LedgerKeyPair, kid_for

# RFC 8032 TEST 1 and TEST 2 seeds: fixed, public, test-only device keys.
KEY = DeviceKey(bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"))
OTHER_KEY = DeviceKey(
    bytes.fromhex("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb")
)
LEDGER = LedgerKeyPair.generate("ledger-test")
DEVICE = "gw-kov-wb01"
SITE = "site-KOV"
TIME = DeviceTime(1_718_000_000_000, TimeSource.NTP, TimeQuality.SYNCED)


def sample_body(type_: EventType, ledger: LedgerKeyPair = LEDGER) -> dict[str, Any]:
    """A valid body for every event type."""
    if type_ is EventType.WEIGHING:
        points, openings = commit_masses({"gross": 342_180, "tare": 141_120})
        return {
            "mass": {name: p.encoded for name, p in points.items()},
            "sealed": seal_openings(openings, ledger.public.sealing_key),
            "vehicle": "KCB-123X",
            "lot": "LOT-2024-0042",
            "pass": "single",
            "direction": "out",
            "seals": ["SEAL-000123"],
        }
    if type_ in (EventType.CHECKPOINT, EventType.LOT_CONTRIBUTION, EventType.OPENING_STOCK):
        values = {
            EventType.CHECKPOINT: {"in": 5_000_000, "out": 1_200_000},
            EventType.LOT_CONTRIBUTION: {"total": 45_075},
            EventType.OPENING_STOCK: {"stock": 3_500_000},
        }[type_]
        points, openings = commit_masses(values)
        body: dict[str, Any] = {
            "mass": {name: p.encoded for name, p in points.items()},
            "sealed": seal_openings(openings, ledger.public.sealing_key),
        }
        if type_ is EventType.CHECKPOINT:
            body.update(epoch=2, upto=41, prev_checkpoint=bytes(range(32)))
        elif type_ is EventType.LOT_CONTRIBUTION:
            body["lot"] = "LOT-2024-0042"
        return body
    return {
        EventType.SEAL_SCAN: {"seal": "SEAL-000123", "lot": "LOT-2024-0042", "symbology": "QR"},
        EventType.AGGREGATION: {
            "lot": "LOT-2024-0042",
            "children": ["SEAL-000123", "SEAL-000124"],
            "action": "ADD",
        },
        EventType.BOOT: {"software": "cobalt-custody 0.1.0", "reason": "power-on"},
        EventType.CLOCK_SYNC: {
            "before_ms": 1_717_999_990_000,
            "after_ms": 1_718_000_000_000,
            "source": "ntp",
        },
        EventType.DEVICE_ATTACH: {"port": "/dev/ttyUSB0", "dialect": "sics"},
        EventType.DEVICE_DETACH: {"port": "/dev/ttyUSB0", "reason": "unplugged"},
        EventType.KEY_ROTATION: {"new_key": OTHER_KEY.public_key},
        EventType.VOID: {"target": bytes(range(32)), "reason": "scanned into the wrong lot"},
    }[type_]


def make_payload(
    type_: EventType = EventType.BOOT,
    *,
    seq: int = 1,
    prev: bytes = GENESIS_PREV,
    device: str = DEVICE,
    site: str = SITE,
    body: dict[str, Any] | None = None,
) -> Payload:
    return Payload(
        device, site, seq, prev, TIME, 7, type_, sample_body(type_) if body is None else body
    )


def standard_protected(key: DeviceKey = KEY, alg: int = cose.ALG_EDDSA) -> dict[int, Any]:
    return {cose.HDR_ALG: alg, cose.HDR_CONTENT_TYPE: CONTENT_TYPE, cose.HDR_KID: key.kid}


def forge(
    protected: dict[int, Any],
    payload: bytes,
    *,
    unprotected: dict[int, Any] | None = None,
    key: DeviceKey = KEY,
) -> bytes:
    """A correctly signed COSE_Sign1 with arbitrary headers and payload bytes."""
    return cose.sign1(key.signing_key, protected, payload, unprotected=unprotected)


def make_chain(signer: EventSigner, n: int, device: str = DEVICE) -> list[Envelope]:
    chain: list[Envelope] = []
    prev = GENESIS_PREV
    for seq in range(1, n + 1):
        env = signer.sign(make_payload(EventType.SEAL_SCAN, seq=seq, prev=prev, device=device))
        chain.append(env)
        prev = env.event_id
    return chain


# --- payload schema ----------------------------------------------------------------


@pytest.mark.parametrize("type_", list(EventType))
def test_every_event_type_round_trips(type_: EventType) -> None:
    payload = make_payload(type_)
    assert Payload.from_map(payload.to_map()) == payload
    assert Payload.from_map(cbor.decode(cbor.encode(payload.to_map()))) == payload


def test_payload_map_keys() -> None:
    assert set(make_payload().to_map()) == {
        "v",
        "dev",
        "site",
        "seq",
        "prev",
        "t",
        "tsrc",
        "tq",
        "boot",
        "type",
        "body",
    }


def test_unknown_payload_field_rejected() -> None:
    raw = make_payload().to_map()
    raw["extra"] = 1
    with pytest.raises(SchemaError, match="unknown"):
        Payload.from_map(raw)


@pytest.mark.parametrize(
    "field", ["v", "dev", "site", "seq", "prev", "t", "tsrc", "tq", "boot", "type", "body"]
)
def test_missing_payload_field_rejected(field: str) -> None:
    raw = make_payload().to_map()
    del raw[field]
    with pytest.raises(SchemaError, match="missing"):
        Payload.from_map(raw)


def test_unknown_body_field_rejected() -> None:
    body = sample_body(EventType.SEAL_SCAN) | {"colour": "red"}
    with pytest.raises(SchemaError, match="unknown field"):
        make_payload(EventType.SEAL_SCAN, body=body)


@pytest.mark.parametrize(
    ("type_", "field"),
    [
        (EventType.WEIGHING, "mass"),
        (EventType.WEIGHING, "sealed"),
        (EventType.SEAL_SCAN, "seal"),
        (EventType.AGGREGATION, "children"),
        (EventType.CLOCK_SYNC, "source"),
        (EventType.KEY_ROTATION, "new_key"),
        (EventType.VOID, "target"),
    ],
)
def test_missing_body_field_rejected(type_: EventType, field: str) -> None:
    body = dict(sample_body(type_))
    del body[field]
    with pytest.raises(SchemaError, match="missing"):
        make_payload(type_, body=body)


BAD_IDENTIFIERS = ["", "a/b", "dev+1", "dev#", "a b", "x" * 65, "café", "dev\n", 5, None, b"gw"]


@pytest.mark.parametrize("bad", BAD_IDENTIFIERS)
def test_bad_identifiers_rejected(bad: Any) -> None:
    with pytest.raises(SchemaError):
        make_payload(device=bad)
    with pytest.raises(SchemaError):
        make_payload(site=bad)
    with pytest.raises(SchemaError):
        make_payload(EventType.AGGREGATION, body=sample_body(EventType.AGGREGATION) | {"lot": bad})


def test_identifier_limits_accepted() -> None:
    assert make_payload(device="x" * 64).device_id == "x" * 64
    assert make_payload(device="A-z_0.9").device_id == "A-z_0.9"


def test_seq_one_must_have_zero_prev() -> None:
    with pytest.raises(SchemaError, match="all-zero prev"):
        make_payload(seq=1, prev=b"\x01" * 32)
    assert make_payload(seq=2, prev=b"\x01" * 32).seq == 2


@pytest.mark.parametrize("seq", [0, -1, True])
def test_seq_starts_at_one(seq: Any) -> None:
    with pytest.raises(SchemaError):
        make_payload(seq=seq)


@pytest.mark.parametrize("prev", [b"", bytes(31), bytes(33), "00" * 32])
def test_prev_must_be_32_bytes(prev: Any) -> None:
    with pytest.raises(SchemaError):
        make_payload(seq=2, prev=prev)


def test_manual_flag() -> None:
    body = sample_body(EventType.SEAL_SCAN)
    assert not make_payload(EventType.SEAL_SCAN, body=body).is_manual
    assert make_payload(EventType.SEAL_SCAN, body=body | {"manual": True}).is_manual
    # One encoding per meaning: a flag is present-and-true or absent.
    for bad in (False, 1, "true", None):
        with pytest.raises(SchemaError, match="true when present"):
            make_payload(EventType.SEAL_SCAN, body=body | {"manual": bad})


def test_schema_version_and_time_fields_checked() -> None:
    raw = make_payload().to_map()
    # "v": true equals 1 in Python but is another encoding of the version: refused.
    for field, bad in [("v", 2), ("v", True), ("t", -1), ("tsrc", "sundial"), ("tq", "great"),
                       ("boot", -1)]:  # fmt: skip
        with pytest.raises(SchemaError):
            Payload.from_map(raw | {field: bad})
    with pytest.raises(SchemaError):
        Payload.from_map(raw | {"type": "teleport"})
    # Unknown keys of several CBOR types (they do not sort together) are named, not a crash.
    with pytest.raises(SchemaError, match="unknown"):
        Payload.from_map(raw | {1: 0, "x": 0, b"k": 0})


def test_mass_schema() -> None:
    good = sample_body(EventType.WEIGHING)
    point = good["mass"]["gross"]
    for bad_mass in (
        {},
        {"gross": point[:31]},
        {"weight": point},
        {"net": point},  # net only with gross and tare
        {"gross": point.hex()},
    ):
        with pytest.raises(SchemaError):
            make_payload(EventType.WEIGHING, body=good | {"mass": bad_mass})
    with pytest.raises(SchemaError):
        make_payload(EventType.WEIGHING, body=good | {"sealed": bytes(48)})


def test_epcis_mapping_covers_every_type() -> None:
    assert set(EPCIS_MAPPING) == set(EventType)
    assert EPCIS_MAPPING[EventType.WEIGHING] == ("ObjectEvent", "OBSERVE", "sensor_reporting")
    assert EPCIS_MAPPING[EventType.AGGREGATION] == ("AggregationEvent", "ADD", "packing")
    assert EPCIS_MAPPING[EventType.BOOT] is None


# --- verify_envelope ------------------------------------------------------------------


@pytest.mark.parametrize("type_", list(EventType))
def test_signed_envelope_verifies(type_: EventType) -> None:
    payload = make_payload(type_)
    env = EventSigner(KEY).sign(payload)
    got = verify_envelope(env.cose, KEY.public_key)
    assert got.payload == payload
    assert got.event_id == event_id_of(env.cose) == env.event_id
    assert got.kid == KEY.kid


def test_forge_helper_reproduces_the_signer_byte_for_byte() -> None:
    # Ed25519 is deterministic, so the hand-built message must equal the signer's:
    # the negative tests below differ from a valid envelope in one thing only.
    payload = make_payload(EventType.SEAL_SCAN)
    env = EventSigner(KEY).sign(payload)
    assert forge(standard_protected(), cbor.encode(payload.to_map())) == env.cose


def test_wrong_key_rejected() -> None:
    env = EventSigner(KEY).sign(make_payload())
    with pytest.raises(SignatureError):
        verify_envelope(env.cose, OTHER_KEY.public_key)


def test_wrong_kid_rejected() -> None:
    payload = cbor.encode(make_payload().to_map())
    for kid in (OTHER_KEY.kid, b"", KEY.kid + b"\x00", KEY.public_key):
        data = forge(standard_protected() | {cose.HDR_KID: kid}, payload)
        with pytest.raises(SignatureError, match="kid"):
            verify_envelope(data, KEY.public_key)


def test_right_kid_but_signed_by_another_key_rejected() -> None:
    payload = cbor.encode(make_payload().to_map())
    data = forge(standard_protected(KEY), payload, key=OTHER_KEY)
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope(data, KEY.public_key)


@pytest.mark.parametrize(
    "unprotected",
    [{cose.HDR_KID: b"x"}, {5: b"iv"}, {33: b"cert"}, {-70000: 0}],
)
def test_extra_unprotected_header_rejected(unprotected: dict[int, Any]) -> None:
    payload = cbor.encode(make_payload().to_map())
    protected = standard_protected()
    if cose.HDR_KID in unprotected:
        protected = {k: v for k, v in protected.items() if k != cose.HDR_KID}
    data = forge(protected, payload, unprotected=unprotected)
    with pytest.raises(DecodeError):
        verify_envelope(data, KEY.public_key)


@pytest.mark.parametrize("extra", [{16: "application/x"}, {15: {1: "iss"}}, {cose.HDR_CRIT: [3]}])
def test_extra_protected_label_rejected(extra: dict[int, Any]) -> None:
    payload = cbor.encode(make_payload().to_map())
    data = forge(standard_protected() | extra, payload)
    with pytest.raises(DecodeError, match="exactly alg, content type and kid"):
        verify_envelope(data, KEY.public_key)


@pytest.mark.parametrize("missing", [cose.HDR_ALG, cose.HDR_CONTENT_TYPE, cose.HDR_KID])
def test_missing_protected_label_rejected(missing: int) -> None:
    payload = cbor.encode(make_payload().to_map())
    protected = {k: v for k, v in standard_protected().items() if k != missing}
    with pytest.raises(DecodeError):
        verify_envelope(forge(protected, payload), KEY.public_key)


@pytest.mark.parametrize(
    "content_type",
    ["application/cbor", CONTENT_TYPE.replace("v=1", "v=2"), CONTENT_TYPE.upper(), 60],
)
def test_wrong_content_type_rejected(content_type: Any) -> None:
    payload = cbor.encode(make_payload().to_map())
    data = forge(standard_protected() | {cose.HDR_CONTENT_TYPE: content_type}, payload)
    with pytest.raises(DecodeError, match="content type"):
        verify_envelope(data, KEY.public_key)


@pytest.mark.parametrize("alg", [-7, -35, -999, 0, "EdDSA", [1], {}, None, True])
def test_other_algorithms_rejected_in_envelope(alg: Any) -> None:
    payload = cbor.encode(make_payload().to_map())
    data = forge(standard_protected() | {cose.HDR_ALG: alg}, payload)
    with pytest.raises(SignatureError, match="algorithm"):
        verify_envelope(data, KEY.public_key)


def test_ed25519_alg_minus_19_accepted_in_envelope() -> None:
    payload = make_payload()
    data = forge(standard_protected(alg=cose.ALG_ED25519), cbor.encode(payload.to_map()))
    assert verify_envelope(data, KEY.public_key).payload == payload


def _large_aggregation() -> Payload:
    children = [f"SEAL-{i:06d}-" + "x" * 100 for i in range(MAX_ENVELOPE_BYTES // 100)]
    body = {"lot": "LOT-1", "children": children[:1000], "action": "ADD"}
    return make_payload(EventType.AGGREGATION, body=body)


def test_oversized_envelope_rejected_before_decoding() -> None:
    payload = _large_aggregation()
    data = forge(standard_protected(), cbor.encode(payload.to_map()))
    assert len(data) > MAX_ENVELOPE_BYTES
    assert cose.verify_sign1(data, KEY.public_key).payload  # validly signed, just too big
    with pytest.raises(DecodeError, match="exceeds"):
        verify_envelope(data, KEY.public_key)
    with pytest.raises(DecodeError, match="exceeds"):
        verify_envelope(b"\x00" * (MAX_ENVELOPE_BYTES + 1), KEY.public_key)


def test_signer_refuses_an_envelope_the_verifier_would_refuse() -> None:
    with pytest.raises(CaptureError):
        EventSigner(KEY).sign(_large_aggregation())


def test_non_canonical_payload_rejected_although_correctly_signed() -> None:
    payload_map = make_payload(EventType.SEAL_SCAN).to_map()
    non_canonical = cbor2.dumps(payload_map)  # insertion order, not §4.2.1
    assert non_canonical != cbor.encode(payload_map)
    assert cbor2.loads(non_canonical) == payload_map  # same content
    data = forge(standard_protected(), non_canonical)
    # The signature is fine: the rejection is about canonical form only.
    assert cose.verify_sign1(data, KEY.public_key).payload == non_canonical
    with pytest.raises(DecodeError, match="payload"):
        verify_envelope(data, KEY.public_key)


def test_text_keyed_payload_is_also_length_first_canonical() -> None:
    # standards.md §2.6: for text keys the §4.2.1 bytewise order and cbor2's
    # length-first order coincide (the head byte carries the length), so our
    # payload (all text keys) and protected header (labels 1, 3, 4) encode the
    # same under both; a third-party cbor2 canonical=True encoder interoperates.
    payload_map = make_payload(EventType.WEIGHING).to_map()
    assert cbor2.dumps(payload_map, canonical=True) == cbor.encode(payload_map)
    protected = standard_protected()
    assert cbor2.dumps(protected, canonical=True) == cose.encode_protected(protected)


def test_signed_but_schema_invalid_payload_rejected() -> None:
    raw = make_payload().to_map() | {"extra": 1}
    data = forge(standard_protected(), cbor.encode(raw))
    with pytest.raises(SchemaError):
        verify_envelope(data, KEY.public_key)


def test_untagged_envelope_rejected() -> None:
    env = EventSigner(KEY).sign(make_payload())
    assert env.cose[0] == 0xD2
    untagged = env.cose[1:]  # the tag is not signed: only the profile rule rejects this
    assert cose.verify_sign1(untagged, KEY.public_key, require_tag=False)
    with pytest.raises(DecodeError, match="tag 18"):
        verify_envelope(untagged, KEY.public_key)


def test_trailing_and_truncated_bytes_rejected() -> None:
    env = EventSigner(KEY).sign(make_payload())
    with pytest.raises(DecodeError):
        verify_envelope(env.cose + b"\x00", KEY.public_key)
    for cut in range(len(env.cose)):
        with pytest.raises(DecodeError):
            verify_envelope(env.cose[:cut], KEY.public_key)


def test_every_single_bit_flip_rejected() -> None:
    env = EventSigner(KEY).sign(make_payload(EventType.WEIGHING))
    for i in range(len(env.cose)):
        for mask in (0x01, 0x80):
            data = bytearray(env.cose)
            data[i] ^= mask
            with pytest.raises(VerificationError):
                verify_envelope(bytes(data), KEY.public_key)


_FLIP_TARGET = EventSigner(KEY).sign(make_payload(EventType.WEIGHING)).cose


@given(st.integers(0, len(_FLIP_TARGET) - 1), st.integers(1, 255))
@settings(max_examples=500)
def test_property_any_byte_change_fails_with_verification_error(index: int, xor: int) -> None:
    data = bytearray(_FLIP_TARGET)
    data[index] ^= xor
    with pytest.raises(VerificationError):
        verify_envelope(bytes(data), KEY.public_key)


# --- the chain ------------------------------------------------------------------------


def test_chain_verifies_in_order() -> None:
    chain = make_chain(EventSigner(KEY), 5)
    verifier = ChainVerifier(KEY.public_key)
    assert verifier.feed_all(e.cose for e in chain) == 5
    assert verifier.head is not None
    assert verifier.head.event_id == chain[-1].event_id
    assert [e.payload.prev for e in chain[1:]] == [e.event_id for e in chain[:-1]]


def test_chain_resumes_from_a_known_head() -> None:
    chain = make_chain(EventSigner(KEY), 4)
    verifier = ChainVerifier(KEY.public_key, start=chain[1])
    assert verifier.feed_all([chain[2].cose, chain[3].cose]) == 2


def test_gap_rejected_naming_the_seq() -> None:
    chain = make_chain(EventSigner(KEY), 4)
    verifier = ChainVerifier(KEY.public_key)
    verifier.feed_all([chain[0].cose, chain[1].cose])
    with pytest.raises(ChainError, match=r"^seq 4: expected seq 3"):
        verifier.feed(chain[3].cose)


def test_reorder_rejected_naming_the_seq() -> None:
    chain = make_chain(EventSigner(KEY), 3)
    verifier = ChainVerifier(KEY.public_key)
    verifier.feed(chain[0].cose)
    with pytest.raises(ChainError, match=r"^seq 3:"):
        verifier.feed(chain[2].cose)
    verifier2 = ChainVerifier(KEY.public_key)
    verifier2.feed_all(e.cose for e in chain[:2])
    with pytest.raises(ChainError, match=r"^seq 1:"):
        verifier2.feed(chain[0].cose)  # a replay of seq 1


def test_chain_must_start_at_seq_one() -> None:
    chain = make_chain(EventSigner(KEY), 2)
    with pytest.raises(ChainError, match=r"^seq 2: chain must start at seq 1"):
        ChainVerifier(KEY.public_key).feed(chain[1].cose)


def test_wrong_prev_rejected_naming_the_seq() -> None:
    signer = EventSigner(KEY)
    chain = make_chain(signer, 2)
    bad = signer.sign(make_payload(EventType.SEAL_SCAN, seq=3, prev=bytes([7]) * 32))
    verifier = ChainVerifier(KEY.public_key)
    verifier.feed_all(e.cose for e in chain)
    with pytest.raises(ChainError, match=r"^seq 3: prev does not match the event id of seq 2"):
        verifier.feed(bad.cose)


def test_fork_rejected_naming_the_seq() -> None:
    signer = EventSigner(KEY)
    first = signer.sign(make_payload(EventType.SEAL_SCAN))
    branch_a = signer.sign(make_payload(EventType.BOOT, seq=2, prev=first.event_id))
    branch_b = signer.sign(make_payload(EventType.SEAL_SCAN, seq=2, prev=first.event_id))
    assert branch_a.event_id != branch_b.event_id
    # Each branch is a valid link on its own ...
    check_link(first, branch_a)
    check_link(first, branch_b)
    # ... but one chain cannot hold both.
    verifier = ChainVerifier(KEY.public_key)
    verifier.feed_all([first.cose, branch_a.cose])
    with pytest.raises(ChainError, match=r"^seq 2:"):
        verifier.feed(branch_b.cose)
    # Nor can it continue on the other branch.
    b3 = signer.sign(make_payload(EventType.SEAL_SCAN, seq=3, prev=branch_b.event_id))
    with pytest.raises(ChainError, match=r"^seq 3: prev"):
        verifier.feed(b3.cose)


def test_device_change_rejected_naming_the_seq() -> None:
    first = EventSigner(KEY).sign(make_payload(EventType.SEAL_SCAN))
    other_key = EventSigner(OTHER_KEY).sign(
        make_payload(EventType.SEAL_SCAN, seq=2, prev=first.event_id)
    )
    with pytest.raises(ChainError, match=r"^seq 2: device or key changed"):
        check_link(first, other_key)
    other_device = EventSigner(KEY).sign(
        make_payload(EventType.SEAL_SCAN, seq=2, prev=first.event_id, device="gw-other")
    )
    with pytest.raises(ChainError, match=r"^seq 2: device or key changed"):
        check_link(first, other_device)
    # Through a verifier bound to KEY, the other key's event fails its kid first.
    verifier = ChainVerifier(KEY.public_key)
    verifier.feed(first.cose)
    with pytest.raises(SignatureError):
        verifier.feed(other_key.cose)
    with pytest.raises(ChainError, match=r"^seq 2"):
        verifier.feed(other_device.cose)


def test_event_id_is_sha256_of_the_complete_cose_bytes() -> None:
    import hashlib

    env = EventSigner(KEY).sign(make_payload())
    assert env.event_id == hashlib.sha256(env.cose).digest()
    assert kid_for(KEY.public_key) == env.kid
