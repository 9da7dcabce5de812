"""The signed payload of a custody event: fields, event types and body schemas.

Every event is a CBOR map signed inside a COSE_Sign1 (``custody.envelope``).
Field names are short text keys; the byte layout and examples are in
``docs/protocol.md``. Event types follow GS1 EPCIS 2.0 / CBV 2.0 semantics
(``EPCIS_MAPPING``) so they export cleanly; system events are ours.

Strictness: ``Payload.from_map`` accepts exactly the fields of the schema
version, with the declared types and bounds, and nothing else. Unknown fields
are rejected rather than ignored, so two verifiers can never disagree about
what a signed event says.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from custody.commitment import WEIGHING_FIELDS
from custody.errors import SchemaError

__all__ = [
    "CONTENT_TYPE",
    "EPCIS_MAPPING",
    "GENESIS_PREV",
    "MAX_SEQ",
    "MAX_TIME_MS",
    "PADDED_TYPES",
    "POSITION_UNITS_PER_DEGREE",
    "SCHEMA_VERSION",
    "SEQ_STRIDE",
    "DeviceTime",
    "EventType",
    "Payload",
    "TimeQuality",
    "TimeSource",
    "follows",
    "next_seq",
    "validate_identifier",
]

SCHEMA_VERSION = 1
CONTENT_TYPE = "application/vnd.cobalt-custody.event+cbor;v=1"
GENESIS_PREV = bytes(32)  # prev of seq 1 (ARCHITECTURE.md "Event envelope")
# Every integer of the record fits a signed 64-bit column (SQLite INTEGER, PostgreSQL
# bigint) and the ack's unsigned fields: a larger one is refused at decoding, before any
# store or arithmetic sees it.
MAX_SEQ = 2**63 - 1
MAX_TIME_MS = 2**63 - 1
EVENT_ID_BYTES = 32
MAX_TEXT = 256  # free text (notes, reasons): bounded so a record stays small
MAX_LIST = 1000

# ARCHITECTURE.md "Topics": device ids are [A-Za-z0-9._-] only (they become MQTT
# topic levels); we use the same rule for site, lot, vehicle and seal ids.
_IDENT = re.compile(r"[A-Za-z0-9._-]{1,64}")
_CODE = re.compile(r"[\x20-\x7e]{1,128}")  # printable ASCII: scanned seal/barcode text


def validate_identifier(value: object, what: str) -> str:
    if not isinstance(value, str) or not _IDENT.fullmatch(value):
        raise SchemaError(f"{what} must be 1-64 characters of A-Z a-z 0-9 . _ -, got {value!r}")
    return value


class EventType(StrEnum):
    WEIGHING = "weighing"
    SEAL_SCAN = "seal_scan"
    AGGREGATION = "aggregation"
    BOOT = "boot"
    CLOCK_SYNC = "clock_sync"
    DEVICE_ATTACH = "device_attach"
    DEVICE_DETACH = "device_detach"
    KEY_ROTATION = "key_rotation"
    VOID = "void"
    CHECKPOINT = "checkpoint"
    LOT_CONTRIBUTION = "lot_contribution"
    OPENING_STOCK = "opening_stock"


# The records a lot summary shows (checkpoints, lot contributions, opening stocks) start at a
# multiple of SEQ_STRIDE: the chain is padded up to it, as if by that many empty records that
# nobody sends. Their seq, and a checkpoint's upto, then count only such records, never the bag
# weighings and other records between them (docs/protocol.md §4, docs/zk-summaries.md §6).
# 2^20 records between two checkpoints is far beyond any scale; 2^43 strides fit in a seq.
SEQ_STRIDE = 2**20
PADDED_TYPES = frozenset(
    {EventType.CHECKPOINT, EventType.LOT_CONTRIBUTION, EventType.OPENING_STOCK}
)


def next_seq(head: int, type_: EventType) -> int:
    """The seq of a record of ``type_`` written after ``head``: head + 1, or for a padded
    type the next multiple of ``SEQ_STRIDE`` (which is head + 1 when head + 1 is one)."""
    if type_ in PADDED_TYPES:
        return (head // SEQ_STRIDE + 1) * SEQ_STRIDE
    return head + 1


def follows(head: int, seq: int, type_: EventType) -> bool:
    """Whether a record of ``type_`` at ``seq`` may directly follow ``head`` in its chain:
    the next seq, or a padded type at its padded seq."""
    return seq == head + 1 or seq == next_seq(head, type_)


# EPCIS 2.0 event class and CBV 2.0 action/bizStep for each capture type
# (standards.md §4.1); ``None`` for system events, which have no EPCIS form.
EPCIS_MAPPING: dict[EventType, tuple[str, str, str] | None] = {
    EventType.WEIGHING: ("ObjectEvent", "OBSERVE", "sensor_reporting"),
    EventType.SEAL_SCAN: ("ObjectEvent", "OBSERVE", "inspecting"),
    EventType.AGGREGATION: ("AggregationEvent", "ADD", "packing"),
    EventType.BOOT: None,
    EventType.CLOCK_SYNC: None,
    EventType.DEVICE_ATTACH: None,
    EventType.DEVICE_DETACH: None,
    EventType.KEY_ROTATION: None,
    EventType.VOID: None,
    EventType.CHECKPOINT: None,
    EventType.LOT_CONTRIBUTION: None,
    EventType.OPENING_STOCK: None,
}


class TimeSource(StrEnum):
    """Where the device clock was last disciplined from."""

    NTP = "ntp"
    GPS = "gps"
    RTC = "rtc"
    NONE = "none"


class TimeQuality(StrEnum):
    """How far the recorded time can be trusted (DOMAIN.md "Conditions")."""

    SYNCED = "synced"  # disciplined now by NTP or GPS
    UNSYNCED = "unsynced"  # free-running clock with a plausible value
    NONE = "none"  # implausible (e.g. before the software was built): do not trust


@dataclass(frozen=True, slots=True)
class DeviceTime:
    ms: int
    source: TimeSource
    quality: TimeQuality

    def __post_init__(self) -> None:
        if (
            not isinstance(self.ms, int)
            or isinstance(self.ms, bool)
            or not 0 <= self.ms <= MAX_TIME_MS
        ):
            raise SchemaError(f"device time must be non-negative UTC milliseconds, got {self.ms!r}")


# --- body schemas -----------------------------------------------------------------
Validator = Callable[[Any, str], Any]


def _text(value: Any, what: str) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_TEXT:
        raise SchemaError(f"{what} must be text of 1-{MAX_TEXT} characters")
    return value


def _code(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _CODE.fullmatch(value):
        raise SchemaError(f"{what} must be 1-128 printable ASCII characters, got {value!r}")
    return value


def _uint(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**63:
        raise SchemaError(f"{what} must be a non-negative integer")
    return value


def _int(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not -(2**62) <= value < 2**62:
        raise SchemaError(f"{what} must be an integer")
    return value


def _true(value: Any, what: str) -> bool:
    # Flags are present-and-true or absent: one encoding per meaning.
    if value is not True:
        raise SchemaError(f"{what} must be true when present")
    return True


def _bytes_of(n: int) -> Validator:
    def check(value: Any, what: str) -> bytes:
        if not isinstance(value, bytes) or len(value) != n:
            raise SchemaError(f"{what} must be {n} bytes")
        return value

    return check


def _sealed(value: Any, what: str) -> bytes:
    # crypto_box_seal adds 48 bytes; a few openings fit well under 1 KiB.
    if not isinstance(value, bytes) or not 48 < len(value) <= 1024:
        raise SchemaError(f"{what} must be a sealed box of 49-1024 bytes")
    return value


def _commitments(value: Any, what: str) -> dict[str, bytes]:
    if not isinstance(value, dict) or not value:
        raise SchemaError(f"{what} must be a non-empty map of commitments")
    for name, point in value.items():
        if not isinstance(point, bytes) or len(point) != 32:
            raise SchemaError(f"{what}.{name} must be a 32-byte commitment")
    return value


def _sums(*names: str) -> Validator:
    """Exactly these commitments (checkpoint sums, a lot total)."""

    def check(value: Any, what: str) -> dict[str, bytes]:
        checked = _commitments(value, what)
        if set(checked) != set(names):
            raise SchemaError(f"{what} must commit to exactly {', '.join(names)}")
        return checked

    return check


def _mass(value: Any, what: str) -> dict[str, bytes]:
    if not isinstance(value, dict) or not value:
        raise SchemaError(f"{what} must be a non-empty map of commitments")
    for name, point in value.items():
        if name not in WEIGHING_FIELDS:
            raise SchemaError(f"{what}: unknown mass field {name!r}")
        if not isinstance(point, bytes) or len(point) != 32:
            raise SchemaError(f"{what}.{name} must be a 32-byte commitment")
    if "net" in value and not {"gross", "tare"} <= set(value):
        raise SchemaError(f"{what}: net is only carried with gross and tare")
    return value


def _one_of(*choices: str) -> Validator:
    def check(value: Any, what: str) -> str:
        if value not in choices:
            raise SchemaError(f"{what} must be one of {', '.join(choices)}")
        return str(value)

    return check


def _list_of(item: Validator) -> Validator:
    def check(value: Any, what: str) -> list[Any]:
        if not isinstance(value, list) or not 0 < len(value) <= MAX_LIST:
            raise SchemaError(f"{what} must be a list of 1-{MAX_LIST} items")
        return [item(v, f"{what}[{i}]") for i, v in enumerate(value)]

    return check


_ident: Validator = validate_identifier
_event_id = _bytes_of(EVENT_ID_BYTES)


def _sorted_ids(value: Any, what: str) -> list[bytes]:
    """A non-empty list of event ids, sorted and without repeats: one encoding per set."""
    ids: list[bytes] = _list_of(_event_id)(value, what)
    if ids != sorted(set(ids)):
        raise SchemaError(f"{what} must be sorted, without repeats")
    return ids


@dataclass(frozen=True, slots=True)
class BodySchema:
    required: Mapping[str, Validator]
    optional: Mapping[str, Validator] = field(default_factory=dict)
    # When this optional field is present the ``required`` fields must be absent:
    # a weighing that produced no reading (``outcome``) carries no mass at all.
    instead: str | None = None

    def validate(self, body: Any, type_: EventType) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise SchemaError(f"{type_} body must be a map")
        if self.instead is not None and self.instead in body:
            for name in self.required:
                if name in body:
                    raise SchemaError(f"{type_} body with {self.instead!r} carries no {name!r}")
        else:
            for name in self.required:
                if name not in body:
                    raise SchemaError(f"{type_} body is missing {name!r}")
        for name, value in body.items():
            check = self.required.get(name) or self.optional.get(name)
            if check is None:
                raise SchemaError(f"{type_} body has unknown field {name!r}")
            check(value, f"{type_}.{name}")
        return body


# A position is WGS 84 latitude and longitude in integer units of 1e-7 degree (about 1 cm,
# the resolution GNSS receivers report), so it is exact in deterministic CBOR.
POSITION_UNITS_PER_DEGREE = 10**7


def _position(value: Any, what: str) -> dict[str, int]:
    if not isinstance(value, dict) or set(value) != {"lat", "lon"}:
        raise SchemaError(f"{what} must be a map of exactly lat and lon")
    for name, limit in (("lat", 90), ("lon", 180)):
        v = value[name]
        bound = limit * POSITION_UNITS_PER_DEGREE
        if not isinstance(v, int) or isinstance(v, bool) or not -bound <= v <= bound:
            raise SchemaError(f"{what}.{name} must be an integer within ±{limit}° in 1e-7 degree")
    return value


# Every capture may say where it was taken: the gateway's GNSS position, when a receiver
# gave a valid fix recently (agent.clock.GpsClock).
_COMMON_OPTIONAL: dict[str, Validator] = {"manual": _true, "note": _text, "pos": _position}

BODY_SCHEMAS: dict[EventType, BodySchema] = {
    # ObjectEvent OBSERVE with a Mass sensor reading; masses committed, openings sealed.
    EventType.WEIGHING: BodySchema(
        required={"mass": _mass, "sealed": _sealed},
        optional={
            **_COMMON_OPTIONAL,
            "vehicle": _ident,
            "lot": _ident,
            "pass": _one_of("in", "out", "single"),
            "direction": _one_of("in", "out"),  # material received / shipped (ZK sums)
            "scale": _text,  # indicator identity (serial or port)
            "alibi": _text,  # indicator alibi-memory record id (OIML R76)
            "seals": _list_of(_code),
            "photo": _bytes_of(32),  # SHA-256 of the evidence JPEG
            # Weighbridge visits (agent.workflows.weighbridge): the pass-in weighing
            # this pass-out completes, and the weighing a stored tare was measured in.
            "inbound": _event_id,
            "tare_event": _event_id,
            # A weighbridge attempt that yielded no reading, recorded instead of a guess
            # (then no mass/sealed): never stable, overloaded, left before a stable
            # reading, indicator lost mid-weighing, the empty bridge off zero, or a
            # stable reading outside the site's plausible truck masses.
            "outcome": _one_of(
                "unstable",
                "overload",
                "left_unweighed",
                "disconnected",
                "zero_drift",
                "implausible",
            ),
            "zero": _int,  # signed empty-bridge reading in mass units (zero_drift)
        },
        instead="outcome",
    ),
    # ObjectEvent OBSERVE of a seal (commissioning or inspection).
    EventType.SEAL_SCAN: BodySchema(
        required={"seal": _code},
        optional={**_COMMON_OPTIONAL, "lot": _ident, "symbology": _text, "photo": _bytes_of(32)},
    ),
    # AggregationEvent ADD/DELETE: bags (by seal) into a lot.
    EventType.AGGREGATION: BodySchema(
        required={"lot": _ident, "children": _list_of(_code), "action": _one_of("ADD", "DELETE")},
        optional=_COMMON_OPTIONAL,
    ),
    EventType.BOOT: BodySchema(
        required={"software": _text},
        optional={"reason": _text, "quarantined": _text},
    ),
    EventType.CLOCK_SYNC: BodySchema(
        required={"before_ms": _uint, "after_ms": _uint, "source": _one_of(*TimeSource)},
    ),
    EventType.DEVICE_ATTACH: BodySchema(
        required={"port": _text}, optional={"dialect": _text, "serial": _text}
    ),
    EventType.DEVICE_DETACH: BodySchema(required={"port": _text}, optional={"reason": _text}),
    # Signed under the OLD key; the ledger accepts the new key only through it.
    EventType.KEY_ROTATION: BodySchema(required={"new_key": _bytes_of(32)}),
    # Points at the mistaken event; nothing is ever edited or deleted.
    EventType.VOID: BodySchema(required={"target": _event_id, "reason": _text}),
    # Running sums of the chain's inputs and outputs for every event with seq <= upto
    # (docs/zk-summaries.md §1); epoch 1 is a chain's first, later ones link to the previous.
    # ``voided``: the lot contributions of this chain voided since the previous checkpoint,
    # so that a verifier shown the chain sees a contribution withdrawn (docs/zk-summaries.md §1).
    EventType.CHECKPOINT: BodySchema(
        required={"epoch": _uint, "upto": _uint, "mass": _sums("in", "out"), "sealed": _sealed},
        optional={"prev_checkpoint": _event_id, "voided": _sorted_ids},
    ),
    # A site's part of a lot: a commitment to the sum of its (non-voided) bags of the lot.
    EventType.LOT_CONTRIBUTION: BodySchema(
        required={"lot": _ident, "mass": _sums("total"), "sealed": _sealed},
    ),
    # The site's declared stock when its mass balance starts (docs/protocol.md §3): signed by
    # the site, not set by the ledger, so the ledger cannot inflate the balance's base.
    EventType.OPENING_STOCK: BodySchema(
        required={"mass": _sums("stock"), "sealed": _sealed},
        optional={"note": _text},
    ),
}


@dataclass(frozen=True, slots=True)
class Payload:
    """The signed content of one event."""

    device_id: str
    site_id: str
    seq: int
    prev: bytes
    time: DeviceTime
    boot: int
    type: EventType
    body: Mapping[str, Any]
    version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        validate_identifier(self.device_id, "device id")
        validate_identifier(self.site_id, "site id")
        # isinstance: CBOR true equals 1 in Python, but it is another encoding of "v".
        if self.version != SCHEMA_VERSION or isinstance(self.version, bool):
            raise SchemaError(f"schema version {self.version!r} is not supported")
        if not isinstance(self.seq, int) or isinstance(self.seq, bool) or self.seq < 1:
            raise SchemaError("seq starts at 1")
        if self.seq > MAX_SEQ:
            raise SchemaError(f"seq must be at most 2^63-1, got {self.seq}")
        if not isinstance(self.prev, bytes) or len(self.prev) != EVENT_ID_BYTES:
            raise SchemaError("prev must be a 32-byte event id")
        if self.seq == 1 and self.prev != GENESIS_PREV:
            raise SchemaError("seq 1 must have the all-zero prev")
        _uint(self.boot, "boot counter")
        BODY_SCHEMAS[self.type].validate(self.body, self.type)

    def to_map(self) -> dict[str, Any]:
        return {
            "v": self.version,
            "dev": self.device_id,
            "site": self.site_id,
            "seq": self.seq,
            "prev": self.prev,
            "t": self.time.ms,
            "tsrc": str(self.time.source),
            "tq": str(self.time.quality),
            "boot": self.boot,
            "type": str(self.type),
            "body": dict(self.body),
        }

    @classmethod
    def from_map(cls, raw: Any) -> Payload:
        if not isinstance(raw, dict):
            raise SchemaError("payload must be a map")
        expected = {"v", "dev", "site", "seq", "prev", "t", "tsrc", "tq", "boot", "type", "body"}
        if set(raw) != expected:
            missing, extra = expected - set(raw), set(raw) - expected
            # key=repr: unknown keys may mix text, integers and bytes, which do not compare.
            raise SchemaError(
                f"payload fields: missing {sorted(missing)}, unknown {sorted(extra, key=repr)}"
            )
        try:
            type_ = EventType(raw["type"])
            time = DeviceTime(raw["t"], TimeSource(raw["tsrc"]), TimeQuality(raw["tq"]))
        except ValueError as exc:
            raise SchemaError(str(exc)) from exc
        return cls(
            device_id=raw["dev"],
            site_id=raw["site"],
            seq=raw["seq"],
            prev=raw["prev"],
            time=time,
            boot=raw["boot"],
            type=type_,
            body=raw["body"],
            version=raw["v"],
        )

    @property
    def is_manual(self) -> bool:
        return self.body.get("manual") is True
