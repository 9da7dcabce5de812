"""COSE_Sign1 with EdDSA over Ed25519 (RFC 9052 §4.2, §4.4; RFC 9053 §2.2).

Signing builds the Sig_structure ``["Signature1", protected, external_aad,
payload]`` in deterministic CBOR and signs it with pure Ed25519 (no pre-hash).
Verification always hashes the *received* protected-header bytes, never a
re-encoding (RFC 9052 §4.4), and decodes everything strictly (``custody.cbor``).

Algorithms: we emit ``EdDSA`` (-8) because the independent verifier we test
against (pycose 1.1.0) knows only that; we also accept the fully-specified
``Ed25519`` (-19) of RFC 9864 when verifying.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import nacl.exceptions
import nacl.signing

from custody import cbor
from custody.errors import DecodeError, SignatureError

__all__ = [
    "ALG_ED25519",
    "ALG_EDDSA",
    "COSE_SIGN1_TAG",
    "HDR_ALG",
    "HDR_CONTENT_TYPE",
    "HDR_CRIT",
    "HDR_KID",
    "Sign1",
    "decode_sign1",
    "encode_protected",
    "sig_structure",
    "sign1",
    "verify_sign1",
    "verify_signed_document",
]

COSE_SIGN1_TAG = 18  # RFC 9052 §4.2
ALG_EDDSA = -8  # RFC 9053 §2.2
ALG_ED25519 = -19  # RFC 9864 §2.2
ACCEPTED_ALGS = frozenset({ALG_EDDSA, ALG_ED25519})

# RFC 9052 §3.1 common header parameters.
HDR_ALG = 1
HDR_CRIT = 2
HDR_CONTENT_TYPE = 3
HDR_KID = 4

ED25519_SIGNATURE_BYTES = 64


@dataclass(frozen=True, slots=True)
class Sign1:
    """A decoded COSE_Sign1; ``protected_bytes`` are exactly what was received."""

    protected_bytes: bytes
    protected: dict[int, Any]
    unprotected: dict[int, Any]
    payload: bytes
    signature: bytes
    tagged: bool

    def header(self, label: int) -> Any:
        """A header value, protected first (RFC 9052 §3: a label is in one bucket only)."""
        if label in self.protected:
            return self.protected[label]
        return self.unprotected.get(label)


def encode_protected(headers: dict[int, Any]) -> bytes:
    """The protected bucket: zero-length when empty (RFC 9052 §3), else deterministic CBOR."""
    return cbor.encode(headers) if headers else b""


def sig_structure(protected_bytes: bytes, payload: bytes, external_aad: bytes = b"") -> bytes:
    """The to-be-signed bytes for COSE_Sign1 (RFC 9052 §4.4)."""
    return cbor.encode(["Signature1", protected_bytes, external_aad, payload])


def sign1(
    key: nacl.signing.SigningKey,
    protected: dict[int, Any],
    payload: bytes,
    *,
    unprotected: dict[int, Any] | None = None,
    external_aad: bytes = b"",
    protected_bytes: bytes | None = None,
) -> bytes:
    """Sign ``payload`` and return the tagged COSE_Sign1 bytes.

    ``protected_bytes`` lets a caller supply an already encoded protected
    bucket (the per-device header is encoded once and reused).
    """
    pbytes = encode_protected(protected) if protected_bytes is None else protected_bytes
    signature = key.sign(sig_structure(pbytes, payload, external_aad)).signature
    message = [pbytes, unprotected or {}, payload, signature]
    return cbor.encode(cbor.Tag(COSE_SIGN1_TAG, message))


def decode_sign1(data: bytes, *, require_tag: bool = True) -> Sign1:
    """Strictly decode a COSE_Sign1 (no signature check)."""
    item = cbor.decode(data, allow_tags=(COSE_SIGN1_TAG,))
    tagged = isinstance(item, cbor.Tag)
    if tagged:
        if item.tag != COSE_SIGN1_TAG:  # pragma: no cover - decode already restricts tags
            raise DecodeError(f"CBOR tag {item.tag} is not COSE_Sign1 ({COSE_SIGN1_TAG})")
        item = item.value
    elif require_tag:
        raise DecodeError("COSE_Sign1 must carry CBOR tag 18")
    if not isinstance(item, list) or len(item) != 4:
        raise DecodeError("COSE_Sign1 must be an array of four items")
    pbytes, unprotected, payload, signature = item
    if not isinstance(pbytes, bytes):
        raise DecodeError("protected header must be a byte string")
    protected: Any = {} if pbytes == b"" else cbor.decode(pbytes)
    if not isinstance(protected, dict):
        raise DecodeError("protected header must encode a map")
    if not isinstance(unprotected, dict):
        raise DecodeError("unprotected header must be a map")
    for bucket in (protected, unprotected):
        if any(not isinstance(k, int) for k in bucket):
            raise DecodeError("header labels must be integers")
    if set(protected) & set(unprotected):
        raise DecodeError("a header label appears in both buckets (RFC 9052 §3)")
    if not isinstance(payload, bytes):
        raise DecodeError("payload must be a byte string (detached payloads are not used)")
    if not isinstance(signature, bytes):
        raise DecodeError("signature must be a byte string")
    return Sign1(pbytes, protected, unprotected, payload, signature, tagged)


def verify_signed_document(
    data: bytes, public_key: bytes, kid: bytes, *, content_type: str, max_bytes: int
) -> Sign1:
    """Verify one of our single-purpose signed documents (checkpoint, registry, ...).

    The profile every such document follows: at most ``max_bytes``; tagged;
    protected header exactly alg, content type ``content_type`` and ``kid``;
    empty unprotected header; a valid EdDSA signature under ``public_key``.
    """
    if len(data) > max_bytes:
        raise DecodeError(f"document of {len(data)} bytes exceeds {max_bytes}")
    msg = decode_sign1(data)
    if msg.unprotected or set(msg.protected) != {HDR_ALG, HDR_CONTENT_TYPE, HDR_KID}:
        raise DecodeError("header must hold exactly alg, content type and kid (all protected)")
    if msg.protected[HDR_CONTENT_TYPE] != content_type:
        raise DecodeError(f"content type is not {content_type}")
    if msg.protected[HDR_KID] != kid:
        raise SignatureError("kid is not the expected signer's")
    return verify_sign1(msg, public_key)


def verify_sign1(
    data: bytes | Sign1,
    public_key: bytes,
    *,
    external_aad: bytes = b"",
    require_tag: bool = True,
) -> Sign1:
    """Decode (if needed) and verify a COSE_Sign1 under an Ed25519 public key.

    Raises ``DecodeError`` for malformed input and ``SignatureError`` for an
    unknown algorithm, a critical header we do not understand, or a bad signature.
    """
    msg = data if isinstance(data, Sign1) else decode_sign1(data, require_tag=require_tag)
    alg = msg.header(HDR_ALG)
    # isinstance first: a decoded alg may be an (unhashable) array or map.
    if not isinstance(alg, int) or isinstance(alg, bool) or alg not in ACCEPTED_ALGS:
        raise SignatureError(f"algorithm {alg!r} is not EdDSA/Ed25519")
    # RFC 9052 §3.1: a recipient must reject a message with a critical header it
    # does not understand; we understand no optional critical headers. ``crit``
    # belongs in the protected bucket only, so one in the unprotected bucket is
    # refused as well rather than silently ignored.
    for bucket in (msg.protected, msg.unprotected):
        if HDR_CRIT in bucket:
            raise SignatureError(f"critical headers {bucket[HDR_CRIT]!r} are not understood")
    if len(msg.signature) != ED25519_SIGNATURE_BYTES:
        raise SignatureError(f"Ed25519 signature must be 64 bytes, got {len(msg.signature)}")
    tbs = sig_structure(msg.protected_bytes, msg.payload, external_aad)
    try:
        nacl.signing.VerifyKey(public_key).verify(tbs, msg.signature)
    except nacl.exceptions.BadSignatureError as exc:
        raise SignatureError("signature does not verify") from exc
    except (nacl.exceptions.ValueError, nacl.exceptions.TypeError) as exc:
        raise SignatureError(f"unusable public key: {exc}") from exc
    return msg
