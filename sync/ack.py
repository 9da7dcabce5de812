"""The ledger-signed acknowledgement: the only thing that releases a record.

A broker PUBACK means only that the broker has the message (MQTT 5.0 §4.3.2;
standards.md §6.1). The ledger answers each batch, after the durable append,
with an ack on the device's ``acks`` topic: a tagged COSE_Sign1 (RFC 9052 §4.2)
signed with the ledger's Ed25519 key, which every gateway pinned at enrolment
(``custody.keys.LedgerPublicKeys``). Its protected header holds exactly ``alg``,
``content type`` (``ACK_CONTENT_TYPE``) and ``kid`` = ``kid_for(ledger key)``;
the unprotected header is empty; the payload is the deterministic-CBOR map of
``Ack.to_map``.

``seq`` is the highest seq of the device key that is durably logged with every
seq below it, and ``id`` that event's id. Because each event commits to its
predecessor (``prev``), acking ``(seq, id)`` acks the whole prefix 1..seq; the
agent releases those records only after ``verify_ack`` and after checking that
``id`` is its own event id at ``seq``.

``verify_ack`` is strict in the same way as ``custody.envelope.verify_envelope``:
size bound first, canonical COSE, exact header, the pinned key's kid, the
signature, then a schema-valid payload for *this* device and key. An ack for
another device or another device key is refused: acks travel through a broker,
and a ledger-signed ack meant for one gateway must never release another's
records.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

import nacl.signing

from custody import cbor, cose
from custody.errors import DecodeError, SchemaError, SignatureError
from custody.event import GENESIS_PREV, validate_identifier
from custody.keys import KID_BYTES, LedgerKeyPair, LedgerPublicKeys, kid_for
from sync.batch import MAX_BATCH_EVENTS

__all__ = [
    "ACK_CONTENT_TYPE",
    "ACK_VERSION",
    "MAX_ACK_BYTES",
    "MAX_CORRELATION_BYTES",
    "MAX_REASON_CHARS",
    "MAX_REJECTIONS",
    "Ack",
    "Rejection",
    "sign_ack",
    "verify_ack",
]

ACK_VERSION = 1
ACK_CONTENT_TYPE = "application/vnd.cobalt-custody.ack+cbor;v=1"
EVENT_ID_BYTES = 32
ROOT_BYTES = 32  # RFC 9162 §2.1.1: SHA-256 Merkle tree head
# One ack may answer a whole batch, every event of it rejected.
MAX_REJECTIONS = MAX_BATCH_EVENTS
# Reasons are the ledger's own short diagnostics (printable ASCII, so they can
# be logged and shown as-is); long enough for "seq 12: prev does not match ...".
MAX_REASON_CHARS = 200
# The device chooses the MQTT 5 Correlation Data (property 0x09, MQTT 5.0
# §3.3.2.3.6); ours is a batch digest, 32 bytes. Bounded so acks stay small.
MAX_CORRELATION_BYTES = 64
_UINT_MAX = 2**63 - 1
# The largest ack the bounds above allow is 260 444 bytes (pinned by a test).
MAX_ACK_BYTES = 320 * 1024

_REASON = re.compile(rf"[\x20-\x7e]{{1,{MAX_REASON_CHARS}}}")
_PROTECTED_LABELS = frozenset({cose.HDR_ALG, cose.HDR_CONTENT_TYPE, cose.HDR_KID})
_REQUIRED = frozenset({"v", "dev", "kid", "seq", "id", "log_size", "root", "rejected", "t"})
_OPTIONAL = frozenset({"resend_from", "corr"})
_REJECTION_KEYS = frozenset({"seq", "id", "reason"})


def _uint(value: Any, what: str, *, minimum: int = 0) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= _UINT_MAX:
        raise SchemaError(f"{what} must be an integer in {minimum}..2^63-1, got {value!r}")
    return value


def _bytes(value: Any, n: int, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != n:
        raise SchemaError(f"{what} must be {n} bytes")
    return value


@dataclass(frozen=True, slots=True)
class Rejection:
    """One event the ledger refused, and why.

    ``seq`` 0 means the envelope did not decode far enough to read its seq;
    the agent then matches it by ``event_id`` (SHA-256 of the bytes it sent).
    """

    seq: int
    event_id: bytes
    reason: str

    def __post_init__(self) -> None:
        _uint(self.seq, "rejected seq")
        _bytes(self.event_id, EVENT_ID_BYTES, "rejected event id")
        if not isinstance(self.reason, str) or not _REASON.fullmatch(self.reason):
            raise SchemaError(
                f"a rejection reason is 1-{MAX_REASON_CHARS} printable ASCII characters"
            )

    def to_map(self) -> dict[str, Any]:
        return {"seq": self.seq, "id": self.event_id, "reason": self.reason}

    @classmethod
    def from_map(cls, raw: Any) -> Rejection:
        if not isinstance(raw, dict) or set(raw) != _REJECTION_KEYS:
            raise SchemaError('a rejection is the map {"seq", "id", "reason"}')
        return cls(raw["seq"], raw["id"], raw["reason"])


@dataclass(frozen=True, slots=True)
class Ack:
    """What the ledger durably holds of one device key's chain, and what it refused."""

    device_id: str
    device_kid: bytes
    seq: int
    event_id: bytes
    log_size: int
    root: bytes
    time_ms: int
    rejected: tuple[Rejection, ...] = ()
    resend_from: int | None = None
    correlation: bytes | None = None
    version: int = ACK_VERSION

    def __post_init__(self) -> None:
        if self.version != ACK_VERSION or isinstance(self.version, bool):
            raise SchemaError(f"ack version {self.version!r} is not supported")
        validate_identifier(self.device_id, "ack device id")
        _bytes(self.device_kid, KID_BYTES, "ack device kid")
        _uint(self.seq, "ack seq")
        _bytes(self.event_id, EVENT_ID_BYTES, "ack event id")
        # One meaning, one encoding: "nothing logged yet" is seq 0 with the
        # all-zero id, and no real event id is all zero (it is a SHA-256).
        if (self.seq == 0) != (self.event_id == GENESIS_PREV):
            raise SchemaError("ack id must be 32 zero bytes exactly when seq is 0")
        _uint(self.log_size, "ack log size")
        # Not log_size >= seq: a chain's seq is padded before summary records
        # (docs/protocol.md §4), so a key's seq can exceed the log's size.
        if self.seq > 0 and self.log_size == 0:
            raise SchemaError(f"log size 0 with seq {self.seq} acked as logged")
        _bytes(self.root, ROOT_BYTES, "ack log root")
        _uint(self.time_ms, "ack time")
        if not isinstance(self.rejected, tuple) or len(self.rejected) > MAX_REJECTIONS:
            raise SchemaError(f"rejected must be a tuple of at most {MAX_REJECTIONS} entries")
        for item in self.rejected:
            if not isinstance(item, Rejection):
                raise SchemaError("rejected entries must be Rejection values")
        # Sorted by (seq, id) and without duplicates: one encoding per ack.
        for a, b in itertools.pairwise(self.rejected):
            if not (a.seq, a.event_id) < (b.seq, b.event_id):
                raise SchemaError("rejections must be sorted by (seq, id) without duplicates")
        if self.resend_from is not None:
            _uint(self.resend_from, "resend_from", minimum=self.seq + 1)
        if self.correlation is not None and (
            not isinstance(self.correlation, bytes)
            or not 0 < len(self.correlation) <= MAX_CORRELATION_BYTES
        ):
            raise SchemaError(f"correlation data is 1-{MAX_CORRELATION_BYTES} bytes")

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": self.version,
            "dev": self.device_id,
            "kid": self.device_kid,
            "seq": self.seq,
            "id": self.event_id,
            "log_size": self.log_size,
            "root": self.root,
            "rejected": [r.to_map() for r in self.rejected],
            "t": self.time_ms,
        }
        # Optional fields are absent rather than null (one encoding per meaning).
        if self.resend_from is not None:
            out["resend_from"] = self.resend_from
        if self.correlation is not None:
            out["corr"] = self.correlation
        return out

    @classmethod
    def from_map(cls, raw: Any) -> Ack:
        if not isinstance(raw, dict):
            raise SchemaError("ack payload must be a map")
        keys = set(raw)
        if not keys >= _REQUIRED or not keys <= _REQUIRED | _OPTIONAL:
            missing, extra = _REQUIRED - keys, keys - _REQUIRED - _OPTIONAL
            unknown = sorted(extra, key=repr)  # keys of any CBOR type: repr orders them all
            raise SchemaError(f"ack fields: missing {sorted(missing)}, unknown {unknown}")
        for name in _OPTIONAL & keys:
            if raw[name] is None:
                raise SchemaError(f"optional ack field {name!r} is absent, never null")
        rejected = raw["rejected"]
        if not isinstance(rejected, list) or len(rejected) > MAX_REJECTIONS:
            raise SchemaError(f"rejected must be an array of at most {MAX_REJECTIONS} entries")
        return cls(
            device_id=raw["dev"],
            device_kid=raw["kid"],
            seq=raw["seq"],
            event_id=raw["id"],
            log_size=raw["log_size"],
            root=raw["root"],
            time_ms=raw["t"],
            rejected=tuple(Rejection.from_map(r) for r in rejected),
            resend_from=raw.get("resend_from"),
            correlation=raw.get("corr"),
            version=raw["v"],
        )


def _protected(ledger_public_key: bytes) -> dict[int, Any]:
    return {
        cose.HDR_ALG: cose.ALG_EDDSA,
        cose.HDR_CONTENT_TYPE: ACK_CONTENT_TYPE,
        cose.HDR_KID: kid_for(ledger_public_key),
    }


def sign_ack(ledger: LedgerKeyPair, ack: Ack) -> bytes:
    """Sign ``ack`` with the ledger's Ed25519 key; the tagged COSE_Sign1 bytes."""
    key = nacl.signing.SigningKey(ledger.signing_seed)
    data = cose.sign1(key, _protected(bytes(key.verify_key)), cbor.encode(ack.to_map()))
    if len(data) > MAX_ACK_BYTES:  # pragma: no cover - the Ack bounds keep it below
        raise SchemaError(f"ack of {len(data)} bytes exceeds {MAX_ACK_BYTES}")
    return data


def verify_ack(
    data: bytes,
    ledger: LedgerPublicKeys,
    *,
    device_id: str,
    device_kid: bytes,
) -> Ack:
    """Strictly decode and verify an ack received by ``device_id`` (key ``device_kid``).

    Checks, in order: size bound; canonical tagged COSE_Sign1; protected labels
    exactly alg, content type, kid, and an empty unprotected header; content
    type ``ACK_CONTENT_TYPE``; kid of the *pinned* ledger key; alg -8 or -19,
    no crit, and the signature under that key; a canonical, schema-valid
    payload; and that it names this device and this device key.

    ``DecodeError`` for malformed or non-canonical bytes, ``SignatureError``
    for alg, kid, signature, or an ack addressed to another device or key,
    ``SchemaError`` for a validly signed payload that is not a valid ack.
    """
    if not isinstance(data, bytes):
        raise DecodeError(f"ack must be bytes, got {type(data).__name__}")
    if len(data) > MAX_ACK_BYTES:
        raise DecodeError(f"ack of {len(data)} bytes exceeds {MAX_ACK_BYTES}")
    msg = cose.decode_sign1(data, require_tag=True)
    if set(msg.protected) != _PROTECTED_LABELS:
        raise DecodeError("ack protected header must hold exactly alg, content type and kid")
    if msg.unprotected:
        raise DecodeError("ack unprotected header must be empty")
    if msg.protected[cose.HDR_CONTENT_TYPE] != ACK_CONTENT_TYPE:
        raise DecodeError(f"content type {msg.protected[cose.HDR_CONTENT_TYPE]!r} is not an ack")
    if msg.protected[cose.HDR_KID] != kid_for(ledger.signing_key):
        raise SignatureError("ack kid does not identify the pinned ledger key")
    cose.verify_sign1(msg, ledger.signing_key)
    try:
        raw = cbor.decode(msg.payload)
    except DecodeError as exc:
        raise DecodeError(f"ack payload: {exc}") from exc
    ack = Ack.from_map(raw)
    if ack.device_id != device_id:
        raise SignatureError(f"ack is for device {ack.device_id!r}, not {device_id!r}")
    if ack.device_kid != device_kid:
        raise SignatureError(
            f"ack is for device key {ack.device_kid.hex()}, not {bytes(device_kid).hex()}"
        )
    return ack
