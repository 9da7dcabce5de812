"""Signed event envelopes and the per-device hash chain.

An envelope is a tagged COSE_Sign1 (RFC 9052 §4.2) whose protected header holds
exactly ``alg`` (EdDSA), ``content type`` (``CONTENT_TYPE``) and ``kid`` (the
device key id), with an empty unprotected header, over a deterministic-CBOR
``Payload``. Its event id is SHA-256 of the complete COSE bytes.

The chain: ``seq`` counts a device key's events from 1 without gaps and ``prev``
is the event id of seq-1 (all zero at seq 1). ``check_link`` checks one link;
``ChainVerifier`` walks a whole sequence and names the first bad seq.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from custody import cbor, cose
from custody.errors import CaptureError, ChainError, DecodeError, SignatureError
from custody.event import CONTENT_TYPE, GENESIS_PREV, Payload, follows, next_seq
from custody.keys import DeviceKey, kid_for

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "ChainVerifier",
    "Envelope",
    "EventSigner",
    "check_link",
    "event_id_of",
    "peek",
    "peek_payload",
    "verify_envelope",
]

# Bound on what we will even try to decode: a weighing is ~400 bytes; void and
# aggregation events with long child lists stay far below this.
MAX_ENVELOPE_BYTES = 64 * 1024
_PROTECTED_LABELS = {cose.HDR_ALG, cose.HDR_CONTENT_TYPE, cose.HDR_KID}


def event_id_of(cose_bytes: bytes) -> bytes:
    """Event id = SHA-256 of the complete COSE_Sign1 bytes (ARCHITECTURE.md)."""
    return hashlib.sha256(cose_bytes).digest()


@dataclass(frozen=True, slots=True)
class Envelope:
    cose: bytes
    event_id: bytes
    kid: bytes
    payload: Payload

    @property
    def seq(self) -> int:
        return self.payload.seq


class EventSigner:
    """Signs payloads for one device key; the protected header is encoded once."""

    def __init__(self, key: DeviceKey) -> None:
        self._signing_key = key.signing_key
        self.kid = key.kid
        self.public_key = key.public_key
        self._protected = cose.encode_protected(
            {
                cose.HDR_ALG: cose.ALG_EDDSA,
                cose.HDR_CONTENT_TYPE: CONTENT_TYPE,
                cose.HDR_KID: self.kid,
            }
        )

    def sign(self, payload: Payload) -> Envelope:
        data = cose.sign1(
            self._signing_key,
            {},
            cbor.encode(payload.to_map()),
            protected_bytes=self._protected,
        )
        # Never sign what ``verify_envelope`` would refuse: the schema allows
        # lists (children, seals) long enough to exceed the bound, and an event
        # the ledger can never accept would block every later seq of the chain.
        if len(data) > MAX_ENVELOPE_BYTES:
            raise CaptureError(
                f"the signed event would be {len(data)} bytes, over the {MAX_ENVELOPE_BYTES} limit"
            )
        return Envelope(data, event_id_of(data), self.kid, payload)


def peek(data: bytes) -> dict[Any, Any]:
    """The payload map a COSE_Sign1 carries, decoded WITHOUT checking its signature.

    For records already verified when they were stored (a gateway's own outbox, the
    ledger's log) and for naming what an unverified input claims to be; never a reason to
    believe it (``verify_envelope`` is). Raises ``DecodeError`` when ``data`` is not a
    tagged COSE_Sign1 over a CBOR map.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise DecodeError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    payload = cbor.decode(cose.decode_sign1(data, require_tag=True).payload)
    if not isinstance(payload, dict):
        raise DecodeError("COSE_Sign1 payload is not a CBOR map")
    return payload


def peek_payload(data: bytes) -> Payload:
    """``peek`` as our event payload (schema-checked, signature not checked)."""
    return Payload.from_map(peek(data))


def verify_envelope(data: bytes, public_key: bytes) -> Envelope:
    """Strictly decode and verify one envelope against a device public key.

    Checks, in order: size bound, canonical COSE_Sign1 with tag 18, our exact
    protected header (alg, content type, kid of *this* key), empty unprotected
    header, the Ed25519 signature, and the canonical, schema-valid payload.
    """
    if len(data) > MAX_ENVELOPE_BYTES:
        raise DecodeError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
    msg = cose.decode_sign1(data, require_tag=True)
    if set(msg.protected) != _PROTECTED_LABELS:
        raise DecodeError("protected header must hold exactly alg, content type and kid")
    if msg.unprotected:
        raise DecodeError("unprotected header must be empty")
    if msg.protected[cose.HDR_CONTENT_TYPE] != CONTENT_TYPE:
        raise DecodeError(f"content type {msg.protected[cose.HDR_CONTENT_TYPE]!r} is not ours")
    kid = msg.protected[cose.HDR_KID]
    if kid != kid_for(public_key):
        raise SignatureError("kid does not identify the given device key")
    cose.verify_sign1(msg, public_key)
    try:
        payload = Payload.from_map(cbor.decode(msg.payload))
    except DecodeError as exc:
        raise DecodeError(f"payload: {exc}") from exc
    return Envelope(data, event_id_of(data), kid, payload)


def check_link(previous: Envelope | None, current: Envelope) -> None:
    """Raise ``ChainError`` unless ``current`` directly continues ``previous``."""
    p = current.payload
    if previous is None:
        if p.seq != 1 or p.prev != GENESIS_PREV:
            raise ChainError(f"seq {p.seq}: chain must start at seq 1 with an all-zero prev")
        return
    q = previous.payload
    if current.kid != previous.kid or p.device_id != q.device_id:
        raise ChainError(f"seq {p.seq}: device or key changed inside one chain")
    if not follows(q.seq, p.seq, p.type):
        raise ChainError(f"seq {p.seq}: expected seq {next_seq(q.seq, p.type)} (gap or reordering)")
    if p.prev != previous.event_id:
        raise ChainError(f"seq {p.seq}: prev does not match the event id of seq {q.seq}")


class ChainVerifier:
    """Verifies envelopes one by one, in seq order, for one device key."""

    def __init__(self, public_key: bytes, *, start: Envelope | None = None) -> None:
        self.public_key = public_key
        self.head = start
        self.count = 0

    def feed(self, data: bytes) -> Envelope:
        env = verify_envelope(data, self.public_key)
        check_link(self.head, env)
        self.head = env
        self.count += 1
        return env

    def feed_all(self, items: Iterable[bytes]) -> int:
        for data in items:
            self.feed(data)
        return self.count
