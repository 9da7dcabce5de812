"""The sans-I/O wire layer of the sync link: topics, the events batch, the ledger ack.

No broker here: these are the byte formats the uplink and the intake will put
on and take off MQTT (docs/protocol.md §8).
"""

from __future__ import annotations

import hashlib
import itertools
import os
import tracemalloc
import zlib
from pathlib import Path
from typing import Any

import cbor2
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody import cbor, cose
from custody.envelope import MAX_ENVELOPE_BYTES, ChainVerifier, EventSigner
from custody.errors import DecodeError, SchemaError, SignatureError, VerificationError
from custody.event import CONTENT_TYPE
from custody.keys import LedgerKeyPair, LedgerPublicKeys, kid_for
from sync.ack import (
    ACK_CONTENT_TYPE,
    MAX_ACK_BYTES,
    MAX_CORRELATION_BYTES,
    MAX_REASON_CHARS,
    MAX_REJECTIONS,
    Ack,
    Rejection,
    sign_ack,
    verify_ack,
)
from sync.batch import (
    FORMAT_CBOR,
    FORMAT_CHAINED,
    FORMAT_ZLIB,
    MAX_BATCH_BYTES,
    MAX_BATCH_EVENTS,
    MAX_DECOMPRESSED_BYTES,
    PREV_MARKER,
    ZDICT,
    Batch,
    BatchBuilder,
    decode_batch,
    encode_batch,
    raw_batch_size,
)
from sync.topics import (
    EVENTS_FILTER,
    MAX_TOPIC_CHARS,
    SHARED_EVENTS_SUBSCRIPTION,
    TopicKind,
    acks_topic,
    device_from_topic,
    events_topic,
    status_topic,
    topic_for,
)
from tests.test_envelope import DEVICE, KEY, OTHER_KEY, make_chain

DOC = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# Fixed, test-only ledger keys (never enrol them).
LEDGER = LedgerKeyPair("ledger-test", bytes(range(32)), bytes(range(1, 33)))
FAKE_LEDGER = LedgerKeyPair("ledger-fake", bytes(range(32, 64)), bytes(range(2, 34)))
PINNED = LEDGER.public
SIGNER = EventSigner(KEY)
CHAIN = [env.cose for env in make_chain(SIGNER, 60)]


# --- topics ------------------------------------------------------------------------


@pytest.mark.parametrize("device_id", ["gw-kov-wb01", "a", "A.b_c-9", ".", "..", "x" * 64])
def test_topics_round_trip(device_id: str) -> None:
    assert events_topic(device_id) == f"custody/v1/dev/{device_id}/events"
    assert acks_topic(device_id) == f"custody/v1/dev/{device_id}/acks"
    assert status_topic(device_id) == f"custody/v1/dev/{device_id}/status"
    for kind in TopicKind:
        topic = topic_for(device_id, kind)
        assert len(topic) <= MAX_TOPIC_CHARS
        assert device_from_topic(topic) == (device_id, kind)


def test_shared_subscription_is_the_documented_filter() -> None:
    assert SHARED_EVENTS_SUBSCRIPTION == "$share/ledger/custody/v1/dev/+/events"
    assert SHARED_EVENTS_SUBSCRIPTION.endswith("/" + EVENTS_FILTER)
    # The filter's wildcard level is exactly where a device id goes.
    assert EVENTS_FILTER.replace("+", DEVICE) == events_topic(DEVICE)


@pytest.mark.parametrize("device_id", ["", "a/b", "+", "#", "$SYS", "x" * 65, "gw é", "g\x00w"])
def test_topic_for_refuses_invalid_device_ids(device_id: str) -> None:
    with pytest.raises(SchemaError):
        events_topic(device_id)
    with pytest.raises(SchemaError):
        acks_topic(device_id)


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "/",
        "custody/v1/dev//events",  # empty device id
        "custody/v1/dev/+/events",  # wildcards never name a device
        "custody/v1/dev/#",
        "custody/v1/dev/gw/#",
        "custody/v1/dev/gw/+",
        "custody/v1/dev/gw-#/events",
        "custody/v1/dev/gw/events/",  # extra (empty) level
        "/custody/v1/dev/gw/events",
        "custody/v1/dev/a/b/events",  # '/' inside the id
        "custody/v1/dev/gw",
        "custody/v1/dev/gw/Events",
        "custody/v1/dev/gw/other",
        "custody/v2/dev/gw/events",
        "Custody/v1/dev/gw/events",
        "$share/ledger/custody/v1/dev/gw/events",  # a filter, not a topic name
        "custody/v1/dev/g\x00w/events",
        "custody/v1/dev/gw é/events",
        "custody/v1/dev/" + "x" * 65 + "/events",  # id too long
        "custody/v1/dev/" + "x" * 1_000_000 + "/events",  # refused before splitting
    ],
)
def test_malformed_topics_are_refused(topic: str) -> None:
    with pytest.raises(DecodeError):
        device_from_topic(topic)


def test_over_long_topic_is_refused_before_it_is_split() -> None:
    longest = topic_for("x" * 64, TopicKind.STATUS)
    assert len(longest) == MAX_TOPIC_CHARS
    with pytest.raises(DecodeError, match=f"exceeds {MAX_TOPIC_CHARS}"):
        device_from_topic(longest + "x")
    with pytest.raises(DecodeError, match=f"exceeds {MAX_TOPIC_CHARS}"):
        device_from_topic("custody/v1/dev/" + "x" * 1_000_000 + "/events")


def test_topic_must_be_text() -> None:
    with pytest.raises(DecodeError, match="text"):
        device_from_topic(b"custody/v1/dev/gw/events")  # type: ignore[arg-type]


@settings(max_examples=300)
@given(st.text(max_size=120))
def test_topic_parser_returns_a_round_trip_or_a_decode_error(topic: str) -> None:
    try:
        device_id, kind = device_from_topic(topic)
    except DecodeError:
        return
    assert topic_for(device_id, kind) == topic


@settings(max_examples=100)
@given(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), st.sampled_from(TopicKind))
def test_every_valid_device_id_parses_back(device_id: str, kind: TopicKind) -> None:
    assert device_from_topic(topic_for(device_id, kind)) == (device_id, kind)


# --- batch: round trips and layout ----------------------------------------------------


@pytest.mark.parametrize("compress", ["auto", "chained", True, False])
def test_batch_round_trips_and_envelopes_still_verify(compress: Any) -> None:
    payload = encode_batch(DEVICE, CHAIN, compress)
    batch = decode_batch(payload, device_id=DEVICE)
    assert batch.device_id == DEVICE
    assert batch.envelopes == tuple(CHAIN)
    assert batch.compressed == (payload[0] in (FORMAT_ZLIB, FORMAT_CHAINED))
    assert batch.elided == (len(CHAIN) - 1 if payload[0] == FORMAT_CHAINED else 0)
    assert ChainVerifier(KEY.public_key).feed_all(batch.envelopes) == len(CHAIN)


def test_raw_batch_layout() -> None:
    envs = CHAIN[:2]
    payload = encode_batch(DEVICE, envs, compress=False)
    assert payload[0] == FORMAT_CBOR
    assert payload[1:] == cbor.encode({"v": 1, "dev": DEVICE, "events": envs})
    # §4.2.1 order of the keys: "v" (61 76), "dev" (63 ...), "events" (66 ...).
    assert payload[1:9] == bytes.fromhex("a3617601") + b"\x63dev"
    assert payload[9:21] == bytes([0x60 + len(DEVICE)]) + DEVICE.encode()
    assert payload[21:29] == b"\x66events\x82"
    assert len(payload) == raw_batch_size(DEVICE, [len(e) for e in envs])


def test_compressed_batch_is_one_zlib_stream_of_the_raw_body() -> None:
    payload = encode_batch(DEVICE, CHAIN, compress=True)
    assert payload[0] == FORMAT_ZLIB
    assert zlib.decompress(payload[1:]) == encode_batch(DEVICE, CHAIN, compress=False)[1:]


def test_compression_decision() -> None:
    raw = encode_batch(DEVICE, CHAIN, compress=False)
    packed = encode_batch(DEVICE, CHAIN, compress=True)
    chained = encode_batch(DEVICE, CHAIN, compress="chained")
    auto = encode_batch(DEVICE, CHAIN)
    # Signed seal scans of one device: headers and ids repeat, so deflate pays,
    # and eliding each prev saves 32 incompressible bytes more per event.
    assert len(packed) < 0.5 * len(raw)
    assert len(chained) <= len(packed) - 32 * (len(CHAIN) - 1)
    assert auto == chained
    # Even one event gains a little (its protected header is text).
    assert len(encode_batch(DEVICE, CHAIN[:1])) < len(encode_batch(DEVICE, CHAIN[:1], False))
    # Incompressible bytes go raw: deflate would only add its overhead.
    for noise in ([os.urandom(300)], [os.urandom(2000) for _ in range(20)]):
        raw_noise = encode_batch(DEVICE, noise, compress=False)
        assert len(encode_batch(DEVICE, noise, compress=True)) > len(raw_noise)
        assert encode_batch(DEVICE, noise) == raw_noise
    for envs in (CHAIN, CHAIN[:1], noise):
        options = (
            encode_batch(DEVICE, envs, compress=False),
            encode_batch(DEVICE, envs, compress="chained"),
        )
        assert len(encode_batch(DEVICE, envs)) == min(len(p) for p in options)


def test_encode_refuses_what_no_decoder_accepts() -> None:
    with pytest.raises(SchemaError):
        encode_batch(DEVICE, [])
    with pytest.raises(SchemaError):
        encode_batch("gw/1", CHAIN[:1])
    with pytest.raises(SchemaError):
        encode_batch(DEVICE, [b""])
    with pytest.raises(SchemaError):
        encode_batch(DEVICE, [bytes(MAX_ENVELOPE_BYTES + 1)])


# --- batch: the chained format (0x02) -------------------------------------------------


def _chained(body: Any, zdict: bytes = ZDICT) -> bytes:
    """A 0x02 payload around an arbitrary (deterministic) CBOR value."""
    deflater = zlib.compressobj(6, zdict=zdict)
    return bytes([FORMAT_CHAINED]) + deflater.compress(cbor.encode(body)) + deflater.flush()


def _elided(envs: list[bytes]) -> list[Any]:
    """The 0x02 entries for a run of consecutive envelopes, built independently of sync.batch."""
    entries: list[Any] = [envs[0]]
    for prev, env in itertools.pairwise(envs):
        at = env.index(b"\x64prev\x58\x20" + hashlib.sha256(prev).digest()) + 7
        entries.append([at, env[:at] + env[at + 32 :]])
    return entries


def test_chained_layout() -> None:
    envs = CHAIN[:5]
    payload = encode_batch(DEVICE, envs, compress="chained")
    assert payload[0] == FORMAT_CHAINED
    # RFC 1950: CMF 0x78 (deflate, 32 KiB window), FLG with FDICT, then DICTID.
    assert payload[1] == 0x78 and payload[2] & 0x20
    assert payload[3:7] == zlib.adler32(ZDICT).to_bytes(4, "big")
    body = zlib.decompressobj(zdict=ZDICT).decompress(payload[1:])
    assert body == cbor.encode({"v": 2, "dev": DEVICE, "events": _elided(envs)})
    for at, rest in _elided(envs)[1:]:
        assert rest[at - len(PREV_MARKER) : at] == PREV_MARKER
    assert PREV_MARKER == b"\x64prev\x58\x20"


def test_chained_rebuilds_byte_identical_envelopes_that_verify() -> None:
    batch = decode_batch(encode_batch(DEVICE, CHAIN, "chained"), device_id=DEVICE)
    assert batch.envelopes == tuple(CHAIN) and batch.elided == len(CHAIN) - 1
    assert ChainVerifier(KEY.public_key).feed_all(batch.envelopes) == len(CHAIN)


def test_chained_sends_non_consecutive_envelopes_verbatim() -> None:
    # A gap (seq 3 missing) and a foreign envelope: nothing to elide there.
    envs = [CHAIN[0], CHAIN[1], CHAIN[3], CHAIN[4], b"not an envelope", CHAIN[5]]
    batch = decode_batch(encode_batch(DEVICE, envs, "chained"), device_id=DEVICE)
    assert batch.envelopes == tuple(envs)
    assert batch.elided == 2  # 1 after 0, 4 after 3


def test_chained_single_event_gains_from_the_dictionary() -> None:
    one = CHAIN[:1]
    assert len(encode_batch(DEVICE, one, "chained")) < len(encode_batch(DEVICE, one, True)) - 40


def test_a_tampered_elided_entry_rebuilds_an_envelope_that_fails_its_signature() -> None:
    entries = _elided(CHAIN[:3])
    at, rest = entries[2]
    entries[2] = [at, rest[:-1] + bytes([rest[-1] ^ 1])]  # flip a signature bit
    batch = decode_batch(_chained({"v": 2, "dev": DEVICE, "events": entries}), device_id=DEVICE)
    with pytest.raises(VerificationError):
        ChainVerifier(KEY.public_key).feed_all(batch.envelopes)


def _bad_entries() -> list[tuple[list[Any], str]]:
    first, (at, rest) = CHAIN[0], _elided(CHAIN[:2])[1]
    return [
        ([[at, rest]], "events.0. cannot elide"),
        ([first, [at - 1, rest]], "not its first prev"),
        ([first, [at + 1, rest]], "not its first prev"),
        ([first, [3, rest]], "impossible offset"),
        ([first, [len(rest) + 1, rest]], "impossible offset"),
        ([first, [at, rest, 0]], "bstr or .uint offset"),
        ([first, [True, rest]], "bstr or .uint offset"),
        ([first, [-1, rest]], "impossible offset"),
        ([first, [at, "text"]], "bstr or .uint offset"),
        ([first, [at, bytes(MAX_ENVELOPE_BYTES - 31)]], "impossible offset"),
        ([first, "text"], r"events\[1\]"),
    ]


@pytest.mark.parametrize(("entries", "message"), _bad_entries())
def test_chained_entries_are_strict(entries: list[Any], message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_batch(_chained({"v": 2, "dev": DEVICE, "events": entries}), device_id=DEVICE)


def test_chained_stream_needs_exactly_the_format_dictionary() -> None:
    body = {"v": 2, "dev": DEVICE, "events": _elided(CHAIN[:3])}
    assert decode_batch(_chained(body), device_id=DEVICE).envelopes == tuple(CHAIN[:3])
    no_dict = bytes([FORMAT_CHAINED]) + zlib.compress(cbor.encode(body))
    other_dict = _chained(body, zdict=ZDICT[:-1] + b"?")
    for payload in (no_dict, other_dict, b"\x02\x78"):
        with pytest.raises(DecodeError, match="preset dictionary"):
            decode_batch(payload, device_id=DEVICE)
    # Each format has its own map version: v1 under 0x02 and elided entries under 0x00.
    with pytest.raises(DecodeError, match="version 1 is not format 0x02"):
        decode_batch(_chained({"v": 1, "dev": DEVICE, "events": CHAIN[:1]}), device_id=DEVICE)
    with pytest.raises(DecodeError):
        decode_batch(_raw({"v": 1, "dev": DEVICE, "events": _elided(CHAIN[:2])}), device_id=DEVICE)


def test_chained_bounds_hold_before_decoding() -> None:
    # The event count is read from the array head, and a bomb stops at the limit.
    huge = b"\xa3\x61v\x02\x63dev" + cbor.encode(DEVICE) + b"\x66events\x9a\xff\xff\xff\xff"
    deflater = zlib.compressobj(6, zdict=ZDICT)
    payload = bytes([FORMAT_CHAINED]) + deflater.compress(huge) + deflater.flush()
    with pytest.raises(DecodeError, match="declares 4294967295 events"):
        decode_batch(payload, device_id=DEVICE)
    deflater = zlib.compressobj(9, zdict=ZDICT)
    zeros = bytes(1 << 20)
    bomb = b"".join([*(deflater.compress(zeros) for _ in range(64)), deflater.flush()])
    with pytest.raises(DecodeError, match=f"more than {MAX_DECOMPRESSED_BYTES} bytes"):
        decode_batch(bytes([FORMAT_CHAINED]) + bomb, device_id=DEVICE)


# --- batch: bounds -----------------------------------------------------------------------


def _raw(body: Any) -> bytes:
    """A raw-format payload around an arbitrary (deterministic) CBOR value."""
    return bytes([FORMAT_CBOR]) + cbor.encode(body)


def test_too_many_events() -> None:
    payload = encode_batch(DEVICE, CHAIN[:4])
    assert len(decode_batch(payload, device_id=DEVICE, max_events=4).envelopes) == 4
    with pytest.raises(DecodeError, match="more than 3"):
        decode_batch(payload, device_id=DEVICE, max_events=3)
    tiny = [b"\x01"] * (MAX_BATCH_EVENTS + 1)
    with pytest.raises(DecodeError, match=f"more than {MAX_BATCH_EVENTS}"):
        decode_batch(encode_batch(DEVICE, tiny, compress=False), device_id=DEVICE)


def test_event_count_is_refused_before_the_events_are_decoded() -> None:
    # A canonical prefix that declares 2^32 - 1 events followed by almost nothing.
    body = cbor.encode({"v": 1, "dev": DEVICE, "events": []})[:-1] + b"\x9a\xff\xff\xff\xff\x41x"
    with pytest.raises(DecodeError, match="declares 4294967295 events"):
        decode_batch(bytes([FORMAT_CBOR]) + body, device_id=DEVICE)


def test_oversize_envelope() -> None:
    ok = _raw({"v": 1, "dev": DEVICE, "events": [bytes(MAX_ENVELOPE_BYTES)]})
    assert decode_batch(ok, device_id=DEVICE).envelopes == (bytes(MAX_ENVELOPE_BYTES),)
    too_big = _raw({"v": 1, "dev": DEVICE, "events": [b"x", bytes(MAX_ENVELOPE_BYTES + 1)]})
    with pytest.raises(DecodeError, match=r"events\[1\]"):
        decode_batch(too_big, device_id=DEVICE)


def test_oversize_payload_is_refused_before_decoding() -> None:
    payload = encode_batch(DEVICE, CHAIN, compress=False)
    assert decode_batch(payload, device_id=DEVICE, max_bytes=len(payload)).envelopes
    with pytest.raises(DecodeError, match="exceeds"):
        decode_batch(payload, device_id=DEVICE, max_bytes=len(payload) - 1)
    # Also when the bytes would not even decode: size is checked first.
    with pytest.raises(DecodeError, match="exceeds"):
        decode_batch(b"\xff" * (MAX_BATCH_BYTES + 1), device_id=DEVICE)


def test_decompressed_size_limit_is_exact() -> None:
    raw_body = encode_batch(DEVICE, CHAIN, compress=False)[1:]
    for compress in (False, True):
        payload = encode_batch(DEVICE, CHAIN, compress=compress)
        batch = decode_batch(payload, device_id=DEVICE, max_decompressed=len(raw_body))
        assert batch.envelopes == tuple(CHAIN)
        with pytest.raises(DecodeError, match=rf"(exceeds|more than) {len(raw_body) - 1}\b"):
            decode_batch(payload, device_id=DEVICE, max_decompressed=len(raw_body) - 1)


def _zlib_bomb(inflated: int) -> bytes:
    """A zlib stream of ``inflated`` zero bytes, built without holding them in memory."""
    deflater = zlib.compressobj(9)
    chunk = bytes(1 << 20)
    parts = [deflater.compress(chunk) for _ in range(inflated // len(chunk))]
    return b"".join([*parts, deflater.flush()])


def test_decompression_bomb_is_refused_without_inflating_it() -> None:
    inflated = 256 << 20  # 256 MiB of zeros
    payload = bytes([FORMAT_ZLIB]) + _zlib_bomb(inflated)
    assert len(payload) < MAX_BATCH_BYTES  # it passes the payload size check
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError, match=f"more than {MAX_DECOMPRESSED_BYTES} bytes"):
            decode_batch(payload, device_id=DEVICE)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # At most the limit plus the input copies, nowhere near the 256 MiB.
    assert peak < MAX_DECOMPRESSED_BYTES + 4 * len(payload) + (64 << 10)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"\x00", "empty input"),
        (b"\x01", "truncated"),
        (b"\x03" + cbor.encode({"v": 1}), "format 0x03"),
        (b"\x02" + zlib.compress(cbor.encode({"v": 2})), "preset dictionary"),
        (b"\xff", "format 0xff"),
        # The format byte forgotten: the CBOR map head is not a format.
        (cbor.encode({"v": 1, "dev": DEVICE, "events": [b"x"]}), "format 0xa3"),
        (b"\x01" + b"not zlib at all", "zlib"),
        (b"\x01" + zlib.compress(b"x")[:-3], "truncated"),
    ],
)
def test_malformed_payloads(payload: bytes, message: str) -> None:
    with pytest.raises(DecodeError, match=message):
        decode_batch(payload, device_id=DEVICE)


def test_raw_deflate_without_the_zlib_header_is_refused() -> None:
    raw_body = encode_batch(DEVICE, CHAIN, compress=False)[1:]
    deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
    bare = deflater.compress(raw_body) + deflater.flush()
    with pytest.raises(DecodeError, match="zlib"):
        decode_batch(bytes([FORMAT_ZLIB]) + bare, device_id=DEVICE)


def test_zlib_stream_with_a_preset_dictionary_is_refused() -> None:
    raw_body = encode_batch(DEVICE, CHAIN, compress=False)[1:]
    deflater = zlib.compressobj(6, zdict=CONTENT_TYPE.encode())
    with_dict = deflater.compress(raw_body) + deflater.flush()
    assert zlib.decompressobj(zdict=CONTENT_TYPE.encode()).decompress(with_dict) == raw_body
    with pytest.raises(DecodeError, match="zlib"):
        decode_batch(bytes([FORMAT_ZLIB]) + with_dict, device_id=DEVICE)


def test_trailing_bytes() -> None:
    raw = encode_batch(DEVICE, CHAIN[:3], compress=False)
    with pytest.raises(DecodeError, match="trailing"):
        decode_batch(raw + b"\x00", device_id=DEVICE)
    packed = encode_batch(DEVICE, CHAIN[:3], compress=True)
    with pytest.raises(DecodeError, match="trailing"):
        decode_batch(packed + b"\x00", device_id=DEVICE)
    # A second complete zlib stream after the first is trailing data too.
    with pytest.raises(DecodeError, match="trailing"):
        decode_batch(packed + packed[1:], device_id=DEVICE)
    # Trailing bytes inside the compressed body (after the CBOR item).
    inner = zlib.compress(raw[1:] + b"\x00")
    with pytest.raises(DecodeError, match="trailing"):
        decode_batch(bytes([FORMAT_ZLIB]) + inner, device_id=DEVICE)


def test_non_canonical_cbor_is_refused() -> None:
    envs = CHAIN[:2]
    canonical = {"v": 1, "dev": DEVICE, "events": envs}
    # Every variant decodes to the same value as the canonical body.
    variants = [
        cbor2.dumps({"events": envs, "dev": DEVICE, "v": 1}),  # keys out of order
        b"\xa3\x61v\x18\x01" + cbor.encode({"dev": DEVICE, "events": envs})[1:],  # long head
        b"\xa3\x61v\x01\x63dev"
        + cbor.encode(DEVICE)
        + b"\x66events\x9f"
        + b"".join(cbor.encode(e) for e in envs)
        + b"\xff",  # indefinite-length array
    ]
    for body in variants:
        assert cbor2.loads(body) == canonical
        for fmt, data in ((FORMAT_CBOR, body), (FORMAT_ZLIB, zlib.compress(body))):
            with pytest.raises(DecodeError, match="deterministic"):
                decode_batch(bytes([fmt]) + data, device_id=DEVICE)


def test_device_must_match_the_topic() -> None:
    payload = encode_batch("gw-a", CHAIN[:1])
    assert decode_batch(payload, device_id="gw-a").device_id == "gw-a"
    with pytest.raises(DecodeError, match="'gw-a' but came on 'gw-b'"):
        decode_batch(payload, device_id="gw-b")
    device_id, kind = device_from_topic(events_topic("gw-b"))
    assert kind is TopicKind.EVENTS
    with pytest.raises(DecodeError):
        decode_batch(payload, device_id=device_id)


@pytest.mark.parametrize(
    "body",
    [
        {"v": 2, "dev": DEVICE, "events": [b"x"]},
        {"v": True, "dev": DEVICE, "events": [b"x"]},
        {"v": 1, "dev": DEVICE, "events": [b"x"], "extra": 0},
        {"v": 1, "dev": DEVICE},
        {"v": 1, "dev": DEVICE, "events": []},
        {"v": 1, "dev": DEVICE, "events": b"x"},
        {"v": 1, "dev": DEVICE, "events": ["text, not bytes"]},
        {"v": 1, "dev": DEVICE, "events": [b""]},
        {"v": 1, "dev": DEVICE, "events": [[b"x"]]},
        {"v": 1, "dev": "gw/1", "events": [b"x"]},
        {"v": 1, "dev": b"gw", "events": [b"x"]},
        {"v": 1, "dev": DEVICE, "events": [cbor.Tag(18, b"x")]},
        [1, DEVICE, [b"x"]],
    ],
)
def test_batch_schema(body: Any) -> None:
    with pytest.raises(DecodeError):
        decode_batch(_raw(body), device_id=DEVICE)


@settings(max_examples=300)
@given(st.binary(max_size=300))
def test_decode_batch_on_garbage_raises_only_decode_error(data: bytes) -> None:
    for fmt in (b"", b"\x00", b"\x01", b"\x02"):
        try:
            batch = decode_batch(fmt + data, device_id=DEVICE)
        except DecodeError:
            continue
        assert isinstance(batch, Batch)


@settings(max_examples=300)
@given(st.data())
def test_mutated_batches_decode_or_raise_decode_error(data: st.DataObject) -> None:
    payload = bytearray(encode_batch(DEVICE, CHAIN[:3], data.draw(st.booleans())))
    i = data.draw(st.integers(0, len(payload) - 1))
    payload[i] ^= data.draw(st.integers(1, 255))
    try:
        batch = decode_batch(bytes(payload), device_id=DEVICE)
    except DecodeError:
        return
    # A flip inside an envelope keeps the batch well-formed; the intake's
    # envelope verification is what catches it.
    assert batch.device_id == DEVICE
    assert len(batch.envelopes) == 3
    assert batch.envelopes != tuple(CHAIN[:3])


# --- batch builder -----------------------------------------------------------------------


def _drain(builder: BatchBuilder, envelopes: list[bytes]) -> list[tuple[bytes, ...]]:
    """Feed everything through ``builder`` the way the uplink will."""
    batches: list[tuple[bytes, ...]] = []
    for env in envelopes:
        if not builder.add(env):
            assert builder.count > 0  # an empty builder always takes an envelope
            batches.append(builder.envelopes)
            builder.clear()
            assert builder.add(env)
    if builder.count:
        batches.append(builder.envelopes)
    return batches


@settings(max_examples=150, deadline=None)
@given(
    sizes=st.lists(
        st.one_of(st.integers(1, 3000), st.sampled_from([MAX_ENVELOPE_BYTES, 65_000, 23, 24])),
        min_size=1,
        max_size=80,
    ),
    target=st.integers(1, 200_000),
    cap=st.integers(66_000, 300_000),
    max_events=st.integers(1, 50),
)
def test_builder_never_exceeds_the_cap_and_preserves_order(
    sizes: list[int], target: int, cap: int, max_events: int
) -> None:
    envelopes = [i.to_bytes(4, "big") * (n // 4) + b"\x00" * (n % 4) for i, n in enumerate(sizes)]
    builder = BatchBuilder(DEVICE, target_bytes=target, hard_cap_bytes=cap, max_events=max_events)
    batches = _drain(builder, envelopes)
    assert [e for batch in batches for e in batch] == envelopes  # nothing lost, order kept
    for batch in batches:
        raw = encode_batch(DEVICE, batch, compress=False)
        assert len(raw) == raw_batch_size(DEVICE, [len(e) for e in batch])
        assert len(raw) <= cap
        assert len(encode_batch(DEVICE, batch)) <= len(raw)
        assert len(batch) <= max_events
        if len(batch) > 1:
            assert len(raw) <= target
        assert decode_batch(encode_batch(DEVICE, batch), device_id=DEVICE).envelopes == batch
    # Packing is greedy: each batch was closed only because the next envelope did not fit.
    for batch, following in itertools.pairwise(batches):
        grown = raw_batch_size(DEVICE, [len(e) for e in (*batch, following[0])])
        assert len(batch) == max_events or grown > min(target, cap)


def test_builder_size_and_build() -> None:
    builder = BatchBuilder(DEVICE, target_bytes=4000)
    assert builder.count == 0
    with pytest.raises(ValueError, match="empty"):
        builder.build()
    added = [env for env in CHAIN if builder.add(env)]
    assert added == CHAIN[: builder.count]
    assert builder.size == len(builder.build(compress=False)) <= 4000
    assert builder.size + len(CHAIN[builder.count]) > 4000
    assert builder.build() == encode_batch(DEVICE, added)
    assert builder.build() == builder.build()  # build leaves the builder as it was
    builder.clear()
    assert (builder.count, builder.envelopes) == (0, ())


@pytest.mark.parametrize("n", [1, 2, 23, 24, 25])
def test_builder_budget_boundary_is_exact(n: int) -> None:
    envelopes = CHAIN[: n + 1]
    exact = raw_batch_size(DEVICE, [len(e) for e in envelopes[:n]])
    full = BatchBuilder(DEVICE, target_bytes=exact)
    assert [full.add(e) for e in envelopes] == [True] * n + [False]
    assert full.size == exact
    # One byte less and the n-th envelope no longer fits (unless it is the first).
    short = BatchBuilder(DEVICE, target_bytes=exact - 1)
    assert sum(short.add(e) for e in envelopes) == max(n - 1, 1)
    # The hard cap binds exactly as well, whatever the target.
    cap = raw_batch_size(DEVICE, [MAX_ENVELOPE_BYTES, 1])
    capped = BatchBuilder(DEVICE, target_bytes=10 * cap, hard_cap_bytes=cap)
    assert [capped.add(e) for e in [bytes(MAX_ENVELOPE_BYTES), b"x", b"y"]] == [True, True, False]
    assert capped.size == cap


def test_builder_takes_one_large_envelope_over_the_target_but_never_over_the_cap() -> None:
    builder = BatchBuilder(DEVICE, target_bytes=100)
    big = bytes(MAX_ENVELOPE_BYTES)
    assert builder.add(big)
    assert not builder.add(b"x")
    assert len(builder.build(compress=False)) <= MAX_BATCH_BYTES
    assert decode_batch(builder.build(), device_id=DEVICE).envelopes == (big,)


def test_builder_refuses_bad_settings_and_envelopes() -> None:
    with pytest.raises(ValueError, match="cannot carry"):
        BatchBuilder(DEVICE, target_bytes=100, hard_cap_bytes=MAX_ENVELOPE_BYTES)
    with pytest.raises(ValueError, match="positive"):
        BatchBuilder(DEVICE, target_bytes=0)
    with pytest.raises(ValueError, match="positive"):
        BatchBuilder(DEVICE, target_bytes=100, max_events=0)
    with pytest.raises(SchemaError):
        BatchBuilder("gw/1", target_bytes=100)
    builder = BatchBuilder(DEVICE, target_bytes=100)
    with pytest.raises(ValueError, match="byte string"):
        builder.add(bytes(MAX_ENVELOPE_BYTES + 1))
    with pytest.raises(ValueError, match="byte string"):
        builder.add(b"")
    assert builder.count == 0


def test_builder_respects_max_events() -> None:
    builder = BatchBuilder(DEVICE, target_bytes=MAX_BATCH_BYTES, max_events=5)
    assert [builder.add(env) for env in CHAIN[:6]] == [True] * 5 + [False]
    assert builder.envelopes == tuple(CHAIN[:5])


# --- acks ----------------------------------------------------------------------------------

DEVICE_KID = KEY.kid
HEAD = make_chain(SIGNER, 3)[-1]


def make_ack(**changes: Any) -> Ack:
    fields: dict[str, Any] = {
        "device_id": DEVICE,
        "device_kid": DEVICE_KID,
        "seq": HEAD.seq,
        "event_id": HEAD.event_id,
        "log_size": 1234,
        "root": bytes(range(32)),
        "time_ms": 1_718_000_100_000,
    }
    fields.update(changes)
    return Ack(**fields)


def sign_map(
    payload: Any,
    *,
    ledger: LedgerKeyPair = LEDGER,
    protected: dict[int, Any] | None = None,
    unprotected: dict[int, Any] | None = None,
) -> bytes:
    """A COSE_Sign1 over an arbitrary payload map, correctly signed by ``ledger``."""
    key = nacl.signing.SigningKey(ledger.signing_seed)
    headers = protected or {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: ACK_CONTENT_TYPE,
        cose.HDR_KID: kid_for(ledger.public.signing_key),
    }
    return cose.sign1(key, headers, cbor.encode(payload), unprotected=unprotected)


def verify(
    data: bytes,
    *,
    ledger: LedgerPublicKeys = PINNED,
    device_id: str = DEVICE,
    device_kid: bytes = DEVICE_KID,
) -> Ack:
    return verify_ack(data, ledger, device_id=device_id, device_kid=device_kid)


FULL_ACK = make_ack(
    rejected=(
        Rejection(0, bytes([7]) * 32, "envelope does not decode"),
        Rejection(5, bytes([1]) * 32, "signature does not verify"),
        Rejection(5, bytes([2]) * 32, "seq 5: prev does not match"),
    ),
    resend_from=HEAD.seq + 1,
    correlation=b"\x42" * 32,
)


@pytest.mark.parametrize("ack", [make_ack(), FULL_ACK, make_ack(seq=0, event_id=bytes(32))])
def test_valid_ack_verifies(ack: Ack) -> None:
    data = sign_ack(LEDGER, ack)
    assert verify(data) == ack
    assert Ack.from_map(cbor.decode(cose.decode_sign1(data).payload)) == ack


def test_ack_header_and_payload_layout() -> None:
    msg = cose.decode_sign1(sign_ack(LEDGER, FULL_ACK))
    assert msg.tagged
    assert msg.protected == {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: ACK_CONTENT_TYPE,
        cose.HDR_KID: kid_for(PINNED.signing_key),
    }
    assert msg.unprotected == {}
    payload = cbor.decode(msg.payload)
    assert list(payload) == [
        "t", "v", "id", "dev", "kid", "seq", "corr", "root", "log_size", "rejected",
        "resend_from",
    ]  # fmt: skip
    assert payload["rejected"][1] == {
        "id": bytes([1]) * 32,
        "seq": 5,
        "reason": FULL_ACK.rejected[1].reason,
    }
    # Optional fields are absent, not null, when unset.
    assert "resend_from" not in cbor.decode(cose.decode_sign1(sign_ack(LEDGER, make_ack())).payload)


def test_ack_verifies_with_an_independent_cose_library() -> None:
    from pycose.keys.curves import Ed25519
    from pycose.keys.okp import OKPKey
    from pycose.messages.sign1message import Sign1Message

    msg = Sign1Message.decode(sign_ack(LEDGER, FULL_ACK))
    msg.key = OKPKey(crv=Ed25519, x=PINNED.signing_key)
    assert msg.verify_signature()
    msg.key = OKPKey(crv=Ed25519, x=FAKE_LEDGER.public.signing_key)
    assert not msg.verify_signature()


def test_ack_from_a_fake_ledger_is_rejected() -> None:
    # Signed by another ledger key, honestly labelled with that key's kid.
    with pytest.raises(SignatureError, match="pinned ledger key"):
        verify(sign_ack(FAKE_LEDGER, make_ack()))
    # Signed by another key but claiming the pinned ledger's kid.
    forged = sign_map(
        make_ack().to_map(),
        ledger=FAKE_LEDGER,
        protected={
            cose.HDR_ALG: cose.ALG_EDDSA,
            cose.HDR_CONTENT_TYPE: ACK_CONTENT_TYPE,
            cose.HDR_KID: kid_for(PINNED.signing_key),
        },
    )
    with pytest.raises(SignatureError, match="does not verify"):
        verify(forged)
    # The fake ledger's own pinning accepts it: the check is the key, not the bytes.
    assert verify(sign_ack(FAKE_LEDGER, make_ack()), ledger=FAKE_LEDGER.public) == make_ack()


def test_ack_for_another_device_or_key_is_rejected() -> None:
    data = sign_ack(LEDGER, make_ack())
    with pytest.raises(SignatureError, match="for device 'gw-kov-wb01', not 'gw-other'"):
        verify(data, device_id="gw-other")
    with pytest.raises(SignatureError, match="device key"):
        verify(data, device_kid=OTHER_KEY.kid)
    other = sign_ack(LEDGER, make_ack(device_id="gw-other", device_kid=OTHER_KEY.kid))
    with pytest.raises(SignatureError):
        verify(other)
    assert verify(other, device_id="gw-other", device_kid=OTHER_KEY.kid).device_id == "gw-other"


SMALL_ACK = sign_ack(LEDGER, make_ack(seq=0, event_id=bytes(32), log_size=0))


def test_every_single_bit_flip_of_an_ack_is_rejected() -> None:
    assert len(SMALL_ACK) < 300
    for i in range(len(SMALL_ACK)):
        for bit in range(8):
            tampered = bytearray(SMALL_ACK)
            tampered[i] ^= 1 << bit
            with pytest.raises(VerificationError):
                verify(bytes(tampered))


@settings(max_examples=500)
@given(st.data())
def test_tampered_ack_bytes_are_rejected(data: st.DataObject) -> None:
    original = sign_ack(LEDGER, FULL_ACK) if data.draw(st.booleans()) else SMALL_ACK
    tampered = bytearray(original)
    i = data.draw(st.integers(0, len(tampered) - 1), label="index")
    tampered[i] ^= data.draw(st.integers(1, 255), label="mask")
    with pytest.raises(VerificationError):
        verify(bytes(tampered))


def test_truncated_and_extended_acks_are_rejected() -> None:
    for n in range(len(SMALL_ACK)):
        with pytest.raises(DecodeError):
            verify(SMALL_ACK[:n])
    with pytest.raises(DecodeError, match="trailing"):
        verify(SMALL_ACK + b"\x00")


def test_ack_header_rules() -> None:
    payload = make_ack().to_map()
    kid = kid_for(PINNED.signing_key)
    base = {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: ACK_CONTENT_TYPE,
        cose.HDR_KID: kid,
    }
    assert verify(sign_map(payload, protected=base)) == make_ack()
    # The fully-specified Ed25519 (-19, RFC 9864) is accepted as well.
    assert (
        verify(sign_map(payload, protected={**base, cose.HDR_ALG: cose.ALG_ED25519})) == make_ack()
    )
    with pytest.raises(SignatureError, match="algorithm"):
        verify(sign_map(payload, protected={**base, cose.HDR_ALG: -7}))
    with pytest.raises(DecodeError, match="not an ack"):
        verify(sign_map(payload, protected={**base, cose.HDR_CONTENT_TYPE: CONTENT_TYPE}))
    with pytest.raises(DecodeError, match="exactly"):
        verify(sign_map(payload, protected={**base, 16: "ack"}))
    with pytest.raises(DecodeError, match="exactly"):
        verify(sign_map(payload, protected={cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_KID: kid}))
    with pytest.raises(DecodeError, match="unprotected"):
        verify(sign_map(payload, protected=base, unprotected={5: b"iv"}))
    # An event envelope is not an ack, even from the device itself.
    with pytest.raises(DecodeError, match="not an ack"):
        verify(HEAD.cose)
    # Untagged COSE_Sign1 is refused.
    untagged = cbor.encode(cbor.decode(sign_ack(LEDGER, make_ack()), allow_tags=(18,)).value)
    with pytest.raises(DecodeError, match="tag 18"):
        verify(untagged)


def test_ack_size_bound() -> None:
    with pytest.raises(DecodeError, match="exceeds"):
        verify(b"\xd2" + bytes(MAX_ACK_BYTES))
    with pytest.raises(DecodeError, match="bytes"):
        verify("not bytes")  # type: ignore[arg-type]
    # The largest ack the field bounds allow still fits, so a valid ack is never refused.
    top = 2**63 - 1
    rejected = tuple(
        Rejection(top - MAX_REJECTIONS + i, bytes([0xFF]) * 32, "~" * MAX_REASON_CHARS)
        for i in range(MAX_REJECTIONS)
    )
    largest = make_ack(
        device_id="x" * 64,
        seq=top - 2 * MAX_REJECTIONS,
        event_id=b"\xff" * 32,
        log_size=top,
        time_ms=top,
        rejected=rejected,
        resend_from=top,
        correlation=b"\xff" * MAX_CORRELATION_BYTES,
    )
    data = sign_ack(LEDGER, largest)
    assert len(data) == 260_444 <= MAX_ACK_BYTES
    assert verify(data, device_id="x" * 64) == largest


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"seq": 0}, "zero bytes exactly when seq is 0"),  # seq 0 with a real id
        ({"seq": 0, "event_id": b"\x01" + bytes(31)}, "zero bytes exactly when seq is 0"),
        ({"event_id": bytes(32)}, "zero bytes exactly when seq is 0"),  # seq > 0, zero id
        ({"seq": -1}, "ack seq"),
        ({"seq": True}, "ack seq"),
        ({"seq": 2**63}, "ack seq"),
        ({"event_id": bytes(31)}, "ack event id"),
        ({"device_id": "gw/1"}, "device id"),
        ({"device_kid": bytes(7)}, "kid"),
        ({"log_size": 0}, "log size 0 with seq 3"),
        ({"log_size": -1}, "log size"),
        ({"root": bytes(33)}, "root"),
        ({"time_ms": -5}, "ack time"),
        ({"resend_from": 3}, "resend_from"),  # not after the acked seq
        ({"resend_from": 0}, "resend_from"),
        ({"correlation": b""}, "correlation"),
        ({"correlation": bytes(MAX_CORRELATION_BYTES + 1)}, "correlation"),
        ({"version": 2}, "version"),
        ({"rejected": [Rejection(1, bytes(32), "x")]}, "tuple"),
        ({"rejected": ("not a rejection",)}, "Rejection values"),
        ({"rejected": (Rejection(2, bytes(32), "x"), Rejection(1, bytes(32), "x"))}, "sorted"),
        ({"rejected": (Rejection(1, bytes(32), "a"), Rejection(1, bytes(32), "b"))}, "duplicates"),
        ({"rejected": (Rejection(1, bytes(32), "x"),) * (MAX_REJECTIONS + 1)}, "at most"),
    ],
)
def test_invalid_acks_cannot_be_built(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        make_ack(**changes)


@pytest.mark.parametrize(
    ("seq", "event_id", "reason"),
    [
        (-1, bytes(32), "x"),
        (1, bytes(31), "x"),
        (1, bytes(32), ""),
        (1, bytes(32), "x" * (MAX_REASON_CHARS + 1)),
        (1, bytes(32), "line\nbreak"),
        (1, bytes(32), "naïve"),
        (1, bytes(32), b"bytes"),
    ],
)
def test_invalid_rejections_cannot_be_built(seq: int, event_id: bytes, reason: Any) -> None:
    with pytest.raises(SchemaError):
        Rejection(seq, event_id, reason)


def _signed_map_with(**changes: Any) -> bytes:
    payload = FULL_ACK.to_map()
    for key, value in changes.items():
        if value is _DROP:
            del payload[key]
        else:
            payload[key] = value
    return sign_map(payload)


_DROP = object()


@pytest.mark.parametrize(
    "changes",
    [
        {"seq": 0},  # seq 0 with a non-zero id
        {"seq": -3},
        {"seq": 2**64 - 1},
        {"id": bytes(32)},
        {"v": 2},
        {"log_size": 0},
        {"root": b"short"},
        {"t": "now"},
        {"extra": 1},
        {"t": _DROP},
        {"rejected": _DROP},
        {"resend_from": None},  # optional means absent, never null
        {"corr": None},
        {"resend_from": 1},
        {"rejected": [{"seq": 1, "id": bytes(32)}]},
        {"rejected": [{"seq": 1, "id": bytes(32), "reason": "x", "more": 1}]},
        {"rejected": [{"seq": -1, "id": bytes(32), "reason": "x"}]},
        {"rejected": [{"seq": 1, "id": bytes(32), "reason": "x" * (MAX_REASON_CHARS + 1)}]},
        {"rejected": [{"seq": 1, "id": bytes(32), "reason": "x"}] * 2},
        {"rejected": [{"seq": 1, "id": bytes(32), "reason": "x"}] * (MAX_REJECTIONS + 1)},
        {"rejected": {"seq": 1}},
    ],
)
def test_validly_signed_invalid_payloads_are_schema_errors(changes: dict[str, Any]) -> None:
    with pytest.raises(SchemaError):
        verify(_signed_map_with(**changes))


def test_signed_non_canonical_payload_is_a_decode_error() -> None:
    payload = cbor2.dumps({"v": 1, **make_ack().to_map()})  # "v" first: not §4.2.1 order
    protected = {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: ACK_CONTENT_TYPE,
        cose.HDR_KID: kid_for(PINNED.signing_key),
    }
    data = cose.sign1(nacl.signing.SigningKey(LEDGER.signing_seed), protected, payload)
    with pytest.raises(DecodeError, match="ack payload"):
        verify(data)


_acks = st.builds(
    lambda seq, id_, extra, rejected, resend, corr, t: make_ack(
        seq=seq,
        event_id=id_ if seq else bytes(32),
        log_size=seq + extra,
        rejected=tuple(sorted(set(rejected), key=lambda r: (r.seq, r.event_id))),
        resend_from=None if resend is None else seq + resend,
        correlation=corr,
        time_ms=t,
    ),
    st.integers(0, 2**62),  # leaves room for log_size and resend_from above it
    st.binary(min_size=32, max_size=32).filter(any),
    st.integers(0, 1000),
    st.lists(
        st.builds(
            Rejection,
            st.integers(0, 2**63 - 1),
            st.binary(min_size=32, max_size=32),
            st.from_regex(r"[\x20-\x7e]{1,40}", fullmatch=True),
        ),
        max_size=5,
    ).filter(lambda rs: len({(r.seq, r.event_id) for r in rs}) == len(rs)),
    st.none() | st.integers(1, 5),
    st.none() | st.binary(min_size=1, max_size=MAX_CORRELATION_BYTES),
    st.integers(0, 2**63 - 1),
)


@settings(max_examples=100, deadline=None)
@given(_acks)
def test_any_valid_ack_round_trips(ack: Ack) -> None:
    assert verify(sign_ack(LEDGER, ack)) == ack


# --- docs/protocol.md §8 --------------------------------------------------------------------


def test_protocol_doc_describes_the_sync_wire_format() -> None:
    doc = DOC.read_text(encoding="utf-8")
    section = doc[doc.index("## 8. Sync wire format") :]
    for text in (
        SHARED_EVENTS_SUBSCRIPTION,
        "custody/v1/dev/{device_id}/events",
        "custody/v1/dev/{device_id}/acks",
        "custody/v1/dev/{device_id}/status",
        f'"{ACK_CONTENT_TYPE}"',
        "PUBACK",
        "whole prefix",
    ):
        assert text in section, text
    for key in make_ack().to_map() | FULL_ACK.to_map():
        assert f"| `{key}` |" in section, key
    for key in Batch(DEVICE, (b"x",)).to_map():
        assert f"`{key}`" in section, key
    assert "| `0x00` |" in section
    assert "| `0x01` |" in section
    assert f"{MAX_BATCH_BYTES:,}".replace(",", " ") in section
    assert f"{MAX_ACK_BYTES:,}".replace(",", " ") in section
