"""The events batch: many signed envelopes in one MQTT PUBLISH payload.

Theory of operation. A batch payload is one format byte followed by a body::

    0x00 || deterministic_cbor({"v": 1, "dev": device_id, "events": [bstr, ...]})
    0x01 || zlib(deterministic_cbor(... the same map ...))        (RFC 1950 stream)
    0x02 || zlib_with_preset_dictionary(deterministic_cbor(
                {"v": 2, "dev": device_id, "events": [bstr | [uint offset, bstr rest], ...]}))

The envelopes are opaque here: the batch carries each one as a byte string,
in seq order, and the intake verifies them one by one (``custody.envelope``),
so a single bad envelope is a per-event rejection in the ack, not a lost batch.

Compression. About half of a signed event is random (signature, prev, Pedersen
commitments, the sealed box), but the protected header, the payload keys and
the device, site and lot ids repeat from event to event. Measured on
``tests/test_envelope.py`` chains, CBOR body -> zlib level 6, in bytes: one
weighing 696 -> 666 (96 %), 50 weighings 33 456 -> 20 132 (60 %), one seal scan
348 -> 307 (88 %), 50 seal scans 16 056 -> 5 492 (34 %), 200 mixed events
82 456 -> 36 282 (44 %). Level 9 gains under 0.3 % over level 6 for more CPU on
a Pi. ``compress="auto"`` compresses and keeps the result only when it is
strictly smaller, so incompressible content (random bytes) goes raw rather
than paying deflate's overhead.

The chained format (0x02). What deflate cannot squeeze is random: the
signature (64), the commitments (32 each), the sealed opening (~93) and
``prev`` (32). But ``prev`` of an envelope is, by the chain rule, the event id
(SHA-256) of its predecessor, which the receiver holds when it sits just before
it in the same batch. So the sender may *elide* it: the entry becomes
``[offset, rest]`` where ``rest`` is the envelope with the 32 ``prev`` bytes cut
out at ``offset``, right after the 7-byte ``PREV_MARKER`` (the payload key
``"prev"`` and the bstr(32) head). The receiver re-inserts SHA-256 of the
previous *reconstructed* envelope: byte-identical to what was signed, so the
signature verifies; a lying sender only produces an envelope that fails its
signature or chain check at the intake. The stream also uses a fixed preset
dictionary (RFC 1950 FDICT, ``ZDICT``) of the strings every envelope repeats,
which is what a batch of one or a few live records is mostly made of. Measured
on single-bag weighings with 500-record batches: 235 bytes per record with
0x01, 201 with 0x02; one weighing alone 466 -> 337 bytes.

Decoding is bounded at every step (STYLE.md §2): the payload length before
anything else, the inflated size through ``zlib.decompressobj`` with
``max_length`` so a decompression bomb stops at ``max_decompressed + 1`` bytes
without ever being expanded, the declared number of events before the CBOR is
decoded, and each envelope against ``custody.envelope.MAX_ENVELOPE_BYTES``. The
CBOR must be the one deterministic encoding of its value (``custody.cbor``).
In 0x02 an elided entry must point exactly after the *first* occurrence of
``PREV_MARKER`` + the predecessor's id in the reconstructed envelope (one
encoding per elision), may not be the batch's first entry, and must rebuild
an envelope of at most ``MAX_ENVELOPE_BYTES``. Every bad input raises
``DecodeError``.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from custody import cbor, cose
from custody.envelope import MAX_ENVELOPE_BYTES
from custody.errors import DecodeError, SchemaError
from custody.event import CONTENT_TYPE, validate_identifier

__all__ = [
    "BATCH_VERSION",
    "CHAINED_VERSION",
    "FORMAT_CBOR",
    "FORMAT_CHAINED",
    "FORMAT_ZLIB",
    "MAX_BATCH_BYTES",
    "MAX_BATCH_EVENTS",
    "MAX_DECOMPRESSED_BYTES",
    "PREV_MARKER",
    "ZDICT",
    "Batch",
    "BatchBuilder",
    "decode_batch",
    "encode_batch",
    "raw_batch_size",
]

BATCH_VERSION = 1
FORMAT_CBOR = 0x00  # the body is the deterministic CBOR map
FORMAT_ZLIB = 0x01  # the body is a zlib (RFC 1950) stream of that map
FORMAT_CHAINED = 0x02  # zlib with ZDICT of the v2 map, whose entries may elide prev
CHAINED_VERSION = 2
# The payload key "prev" (tstr of 4) and the head of its bstr(32) value (§2, §5).
PREV_MARKER = b"\x64prev\x58\x20"
_ID_BYTES = 32
ZLIB_LEVEL = 6  # level 9 saves < 0.3 % more on our events (see above)

# Our own limits. A batch must carry one envelope of the maximum size, so the
# byte caps sit well above MAX_ENVELOPE_BYTES (64 KiB) plus the map overhead;
# 256 KiB also stays far below the MQTT 5 packet limit of 268 435 455 bytes
# (MQTT 5.0 §1.5.5, §3.1.2.11.4 Maximum Packet Size) and below what a
# broker's ``message_size_limit`` / ``max_packet_size`` is set to in deploy/.
MAX_BATCH_BYTES = 256 * 1024  # the whole PUBLISH payload, format byte included
MAX_DECOMPRESSED_BYTES = 256 * 1024  # the CBOR body, after inflating
# The smallest real envelope is ~300 bytes, so 1000 of them is already 300 KB.
MAX_BATCH_EVENTS = 1000

_KEYS = frozenset({"v", "dev", "events"})


def _dictionary() -> bytes:
    """The fixed 0x02 preset dictionary: CBOR fragments every envelope and batch repeats.

    Frozen with the format: changing one byte changes its Adler-32 (the
    stream's DICTID) and every receiver refuses the stream, so a new
    dictionary needs a new format byte. Most frequent fragments last
    (deflate finds them at the shortest distances).
    """

    def t(text: str) -> bytes:
        return cbor.encode(text)

    # Tag 18, the array head and the protected header up to the 8-byte kid (§1.1).
    protected = cose.encode_protected(
        {cose.HDR_ALG: cose.ALG_EDDSA, cose.HDR_CONTENT_TYPE: CONTENT_TYPE, cose.HDR_KID: bytes(8)}
    )
    envelope_head = b"\xd2\x84" + cbor.encode(protected)[:-8]

    words = [
        "aggregation",
        "children",
        "action",
        "ADD",
        "DELETE",
        "symbology",
        "QR",
        "photo",
        "alibi",
        "scale",
        "note",
        "manual",
        "direction",
        "in",
        "out",
        "pass",
        "single",
        "vehicle",
        "seals",
        "seal",
        "seal_scan",
        "clock_sync",
        "boot",
        "software",
        "reason",
        "gps",
        "ntp",
        "none",
        "synced",
        "gross",
        "tare",
        "net",
        "lot",
    ]
    parts = [t(w) for w in words]
    parts += [
        b"\xa3\x61v\x02\x63dev",
        b"\x66events",  # the v2 batch map
        envelope_head,
        b"\xa0\x59\x01",  # empty unprotected bucket, payload bstr head
        b"\xab\x61t\x1b\x00\x00\x01",
        b"\x61v\x01\x62tq\x68unsynced\x63dev",
        b"\x63seq",
        b"\x64body",
        b"\x63lot",
        b"\x64mass\xa1\x63bag\x58\x20",
        b"\x66sealed\x58",
        b"\x64boot",
        PREV_MARKER,
        b"\x64site",
        b"\x64tsrc\x63rtc",
        b"\x64type\x68weighing",
        b"\x58\x40",
    ]
    return b"".join(parts)


ZDICT = _dictionary()
_ZDICT_ID = zlib.adler32(ZDICT).to_bytes(4, "big")

Compress = bool | Literal["auto", "chained"]


@dataclass(frozen=True, slots=True)
class Batch:
    """A decoded batch: the sending device and its envelopes, in the order sent."""

    device_id: str
    envelopes: tuple[bytes, ...]
    compressed: bool = False
    elided: int = 0  # envelopes whose prev came from their predecessor (format 0x02)

    def __post_init__(self) -> None:
        validate_identifier(self.device_id, "batch device id")
        if not isinstance(self.envelopes, tuple) or not self.envelopes:
            raise SchemaError("a batch carries a non-empty tuple of envelopes")
        for i, env in enumerate(self.envelopes):
            if not isinstance(env, bytes) or not 0 < len(env) <= MAX_ENVELOPE_BYTES:
                raise SchemaError(
                    f"events[{i}] must be a byte string of 1-{MAX_ENVELOPE_BYTES} bytes"
                )

    def to_map(self) -> dict[str, Any]:
        return {"v": BATCH_VERSION, "dev": self.device_id, "events": list(self.envelopes)}


def encode_batch(device_id: str, envelopes: Iterable[bytes], compress: Compress = "auto") -> bytes:
    """Encode one batch payload (format byte + body).

    ``compress``: ``"auto"`` sends the smaller of the raw (0x00) and the chained
    (0x02) form; ``"chained"``, ``True`` (0x01) and ``False`` (0x00) force a
    format. ``SchemaError`` for an invalid device id, no envelopes, or an
    envelope outside 1-64 KiB. The decode limits are not applied here;
    ``BatchBuilder`` keeps to them.
    """
    batch = Batch(device_id, tuple(envelopes))
    if compress is True:
        return bytes([FORMAT_ZLIB]) + zlib.compress(cbor.encode(batch.to_map()), ZLIB_LEVEL)
    raw = bytes([FORMAT_CBOR]) + cbor.encode(batch.to_map())
    if compress is False:
        return raw
    chained = _encode_chained(batch)
    if compress == "chained" or len(chained) < len(raw):
        return chained
    return raw


def _encode_chained(batch: Batch) -> bytes:
    entries: list[bytes | list[Any]] = [batch.envelopes[0]]
    for prev_env, env in zip(batch.envelopes, batch.envelopes[1:], strict=False):
        at = _elision_offset(env, hashlib.sha256(prev_env).digest())
        entries.append(env if at is None else [at, env[:at] + env[at + _ID_BYTES :]])
    body = cbor.encode({"v": CHAINED_VERSION, "dev": batch.device_id, "events": entries})
    deflater = zlib.compressobj(ZLIB_LEVEL, zdict=ZDICT)
    return bytes([FORMAT_CHAINED]) + deflater.compress(body) + deflater.flush()


def _elision_offset(envelope: bytes, prev_id: bytes) -> int | None:
    """Where ``prev_id`` starts in ``envelope`` after the first marker+id, or None."""
    found = envelope.find(PREV_MARKER + prev_id)
    return None if found < 0 else found + len(PREV_MARKER)


def decode_batch(
    payload: bytes,
    *,
    device_id: str,
    max_events: int = MAX_BATCH_EVENTS,
    max_bytes: int = MAX_BATCH_BYTES,
    max_decompressed: int = MAX_DECOMPRESSED_BYTES,
) -> Batch:
    """Strictly decode a batch received on ``device_id``'s events topic.

    ``device_id`` is the id parsed from the topic (``sync.topics``); the batch
    must name the same device. Raises ``DecodeError`` for everything else:
    empty or over ``max_bytes``, unknown format byte, a bad or truncated zlib
    stream or trailing bytes after it, a body over ``max_decompressed``,
    non-canonical CBOR, an unknown version or key, no events or more than
    ``max_events``, an envelope that is not a byte string of 1-64 KiB.
    """
    if not isinstance(payload, bytes | bytearray | memoryview):
        raise DecodeError(f"batch must be bytes, got {type(payload).__name__}")
    payload = bytes(payload)
    if not payload:
        raise DecodeError("empty batch payload")
    if len(payload) > max_bytes:
        raise DecodeError(f"batch payload of {len(payload)} bytes exceeds {max_bytes}")
    fmt, body = payload[0], payload[1:]
    if fmt == FORMAT_CBOR:
        compressed = False
        if len(body) > max_decompressed:
            raise DecodeError(f"batch body of {len(body)} bytes exceeds {max_decompressed}")
    elif fmt == FORMAT_ZLIB:
        compressed = True
        body = _inflate(body, max_decompressed)
    elif fmt == FORMAT_CHAINED:
        compressed = True
        # RFC 1950 §2.2: FLG bit 5 (FDICT) set and DICTID = Adler-32 of our dictionary.
        if len(body) < 6 or not body[1] & 0x20 or body[2:6] != _ZDICT_ID:
            raise DecodeError(
                "a chained batch is a zlib stream with the format's preset dictionary"
            )
        body = _inflate(body, max_decompressed, ZDICT)
    else:
        raise DecodeError(f"unknown batch format 0x{fmt:02x}")

    version = CHAINED_VERSION if fmt == FORMAT_CHAINED else BATCH_VERSION
    declared = _declared_event_count(body, version)
    if declared is not None and declared > max_events:
        raise DecodeError(f"batch declares {declared} events, more than {max_events}")
    raw = cbor.decode(body)
    if not isinstance(raw, dict) or set(raw) != _KEYS:
        raise DecodeError('a batch is the map {"v", "dev", "events"} and nothing else')
    if raw["v"] != version or isinstance(raw["v"], bool):
        raise DecodeError(f"batch version {raw['v']!r} is not format 0x{fmt:02x}'s")
    events = raw["events"]
    if not isinstance(events, list):
        raise DecodeError("batch events must be an array")
    if len(events) > max_events:  # pragma: no cover - _declared_event_count saw it first
        raise DecodeError(f"batch carries {len(events)} events, more than {max_events}")
    elided = 0
    if fmt == FORMAT_CHAINED:
        events, elided = _unchain(events)
    try:
        batch = Batch(raw["dev"], tuple(events), compressed, elided)
    except SchemaError as exc:
        raise DecodeError(str(exc)) from exc
    if batch.device_id != device_id:
        raise DecodeError(f"batch names device {batch.device_id!r} but came on {device_id!r}")
    return batch


def _unchain(entries: list[Any]) -> tuple[list[Any], int]:
    """Rebuild elided envelopes in order; ``DecodeError`` for any malformed entry."""
    out: list[Any] = []
    elided = 0
    for i, entry in enumerate(entries):
        if not isinstance(entry, list):
            out.append(entry)  # verbatim (Batch checks it is a bstr of the right size)
            continue
        if i == 0:
            raise DecodeError("events[0] cannot elide prev: it has no predecessor in the batch")
        if (
            len(entry) != 2
            or not isinstance(entry[0], int)
            or isinstance(entry[0], bool)
            or not isinstance(entry[1], bytes)
        ):
            raise DecodeError(f"events[{i}] must be a bstr or [uint offset, bstr rest]")
        at, rest = entry
        previous = out[-1]
        if not isinstance(previous, bytes):
            raise DecodeError(f"events[{i - 1}] is not a byte string")
        if not len(PREV_MARKER) <= at <= len(rest) or len(rest) + _ID_BYTES > MAX_ENVELOPE_BYTES:
            raise DecodeError(f"events[{i}] elides prev at an impossible offset or size")
        prev_id = hashlib.sha256(previous).digest()
        envelope = rest[:at] + prev_id + rest[at:]
        if _elision_offset(envelope, prev_id) != at:
            raise DecodeError(f"events[{i}] elided bytes that are not its first prev field")
        out.append(envelope)
        elided += 1
    return out, elided


def _inflate(body: bytes, limit: int, zdict: bytes | None = None) -> bytes:
    """Inflate one complete zlib stream, refusing to produce more than ``limit`` bytes."""
    inflater = zlib.decompressobj() if zdict is None else zlib.decompressobj(zdict=zdict)
    try:
        # max_length bounds the output buffer: a bomb yields limit + 1 bytes, no more.
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise DecodeError(f"batch body is not a valid zlib stream: {exc}") from exc
    if len(out) > limit:
        raise DecodeError(f"batch body inflates to more than {limit} bytes")
    if not inflater.eof:
        raise DecodeError("batch zlib stream is truncated")
    if inflater.unused_data or inflater.unconsumed_tail:
        raise DecodeError("trailing bytes after the batch zlib stream")
    return out


def _head_size(n: int) -> int:
    """Bytes of a CBOR head with argument ``n`` (RFC 8949 §3, preferred serialization)."""
    if n < 24:
        return 1
    if n < 1 << 8:
        return 2
    if n < 1 << 16:
        return 3
    if n < 1 << 32:
        return 5
    return 9


def _declared_event_count(body: bytes, version: int = BATCH_VERSION) -> int | None:
    """The length in the events array head, read before decoding anything.

    Only the canonical layout ``a3 61'v' <version> 63'dev' tstr 66'events' array``
    is read; for anything else return ``None`` and let the strict decoder explain.
    """
    prefix = b"\xa3\x61v" + bytes([version]) + b"\x63dev"
    if not body.startswith(prefix):
        return None
    pos = len(prefix)
    if pos >= len(body):
        return None
    head = body[pos]
    if 0x60 <= head < 0x78:
        pos += 1 + (head - 0x60)
    elif head == 0x78 and pos + 1 < len(body):
        pos += 2 + body[pos + 1]
    else:
        return None
    if body[pos : pos + 7] != b"\x66events":
        return None
    pos += 7
    if pos >= len(body) or body[pos] >> 5 != 4:  # major type 4: array
        return None
    info = body[pos] & 0x1F
    if info < 24:
        return info
    width = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
    if width is None or pos + 1 + width > len(body):
        return None
    return int.from_bytes(body[pos + 1 : pos + 1 + width], "big")


def raw_batch_size(device_id: str, envelope_sizes: Sequence[int]) -> int:
    """The size of the uncompressed payload (``compress=False``), without encoding it."""
    return (
        _fixed_size(device_id)
        + _head_size(len(envelope_sizes))
        + sum(_head_size(n) + n for n in envelope_sizes)
    )


def _fixed_size(device_id: str) -> int:
    dev = len(device_id.encode("ascii"))
    # format byte, map head, "v" 1, "dev" <tstr>, "events" (the array head is added by callers)
    return 1 + 1 + (2 + 1) + (4 + _head_size(dev) + dev) + 7


class BatchBuilder:
    """Packs envelopes, in the order given, into one batch under a byte budget.

    The uplink adapts ``target_bytes`` to the link (small batches over a slow or
    flaky link, larger ones when it is fast); ``hard_cap_bytes`` is never
    exceeded. ``add`` returns ``False`` when an envelope does not fit: the
    caller builds and sends this batch, ``clear``s, and adds the envelope again.
    An envelope is never split. The first envelope of a batch is always taken,
    even over the target, so a large record is never starved; the cap admits
    any envelope up to ``MAX_ENVELOPE_BYTES``.

    Sizes are those of the uncompressed payload: ``build(compress="auto")``
    only ever makes it smaller, so the sent payload is within the budget too.
    """

    def __init__(
        self,
        device_id: str,
        *,
        target_bytes: int,
        hard_cap_bytes: int = MAX_BATCH_BYTES,
        max_events: int = MAX_BATCH_EVENTS,
    ) -> None:
        validate_identifier(device_id, "device id")
        smallest_cap = raw_batch_size(device_id, [MAX_ENVELOPE_BYTES])
        if hard_cap_bytes < smallest_cap:
            raise ValueError(
                f"hard cap {hard_cap_bytes} cannot carry one {MAX_ENVELOPE_BYTES}-byte envelope"
                f" ({smallest_cap} bytes)"
            )
        if target_bytes < 1:
            raise ValueError(f"target size must be positive, got {target_bytes}")
        if max_events < 1:
            raise ValueError(f"max_events must be positive, got {max_events}")
        self.device_id = device_id
        self.target_bytes = target_bytes
        self.hard_cap_bytes = hard_cap_bytes
        self.max_events = max_events
        self._fixed = _fixed_size(device_id)
        self._envelopes: list[bytes] = []
        self._items = 0  # sum of (bstr head + length) over the envelopes

    @property
    def count(self) -> int:
        return len(self._envelopes)

    @property
    def size(self) -> int:
        """The uncompressed payload size of the batch as it stands."""
        return self._size(self.count, self._items)

    @property
    def envelopes(self) -> tuple[bytes, ...]:
        return tuple(self._envelopes)

    def _size(self, count: int, items: int) -> int:
        return self._fixed + _head_size(count) + items

    def add(self, envelope: bytes) -> bool:
        """Append ``envelope`` if it fits the budget; ``False`` (and no change) if not.

        ``ValueError`` for an envelope outside 1-``MAX_ENVELOPE_BYTES`` bytes:
        ``custody.envelope.EventSigner`` never signs one, so it is a bug upstream.
        """
        if not isinstance(envelope, bytes) or not 0 < len(envelope) <= MAX_ENVELOPE_BYTES:
            raise ValueError(f"an envelope is a byte string of 1-{MAX_ENVELOPE_BYTES} bytes")
        if self.count >= self.max_events:
            return False
        item = _head_size(len(envelope)) + len(envelope)
        new_size = self._size(self.count + 1, self._items + item)
        budget = (
            self.hard_cap_bytes
            if not self._envelopes
            else min(self.target_bytes, self.hard_cap_bytes)
        )
        if new_size > budget:
            return False
        self._envelopes.append(envelope)
        self._items += item
        return True

    def build(self, compress: Compress = "auto") -> bytes:
        """The payload of the batch as it stands (the builder is left unchanged)."""
        if not self._envelopes:
            raise ValueError("cannot build an empty batch")
        return encode_batch(self.device_id, self._envelopes, compress)

    def clear(self) -> None:
        self._envelopes.clear()
        self._items = 0
