"""Key material as values: device signing keys, key ids, the ledger's public keys.

No file I/O here (``custody`` is pure): the agent reads and writes key files
and hands bytes to these constructors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

import nacl.bindings as sodium
import nacl.public
import nacl.signing

from custody.errors import KeyError_

__all__ = [
    "KID_BYTES",
    "LEDGER_KEYS_FORMAT",
    "DeviceKey",
    "LedgerKeyPair",
    "LedgerPublicKeys",
    "check_ed25519_public",
    "kid_for",
]

KID_BYTES = 8
_KID_DOMAIN = b"cobalt-custody/v1/kid"
LEDGER_KEYS_FORMAT = "cobalt-custody/ledger-public-keys/v1"


def kid_for(public_key: bytes) -> bytes:
    """The COSE ``kid`` of a device key: the first 8 bytes of a domain-separated SHA-256."""
    return hashlib.sha256(_KID_DOMAIN + public_key).digest()[:KID_BYTES]


def check_ed25519_public(public_key: bytes, what: str) -> bytes:
    """Reject keys libsodium would refuse anyway, and small-order keys (standards.md §2.3)."""
    if len(public_key) != 32:
        raise KeyError_(f"{what}: an Ed25519 public key is 32 bytes, got {len(public_key)}")
    if not sodium.crypto_core_ed25519_is_valid_point(public_key):
        raise KeyError_(f"{what}: not a valid Ed25519 public key (small order or off the curve)")
    return public_key


@dataclass(frozen=True, slots=True)
class DeviceKey:
    """A gateway's Ed25519 signing key (the 32-byte RFC 8032 seed)."""

    seed: bytes

    def __post_init__(self) -> None:
        if len(self.seed) != 32:
            raise KeyError_(f"a device key seed is 32 bytes, got {len(self.seed)}")

    @classmethod
    def generate(cls) -> DeviceKey:
        return cls(bytes(nacl.signing.SigningKey.generate()))

    @property
    def signing_key(self) -> nacl.signing.SigningKey:
        return nacl.signing.SigningKey(self.seed)

    @property
    def public_key(self) -> bytes:
        return bytes(self.signing_key.verify_key)

    @property
    def kid(self) -> bytes:
        return kid_for(self.public_key)


@dataclass(frozen=True, slots=True)
class LedgerPublicKeys:
    """What a gateway pins at enrolment: the ledger's ack-signing and sealing keys."""

    ledger_id: str
    signing_key: bytes  # Ed25519: verifies ledger acks and checkpoints
    sealing_key: bytes  # X25519: mass openings are sealed to it

    def __post_init__(self) -> None:
        check_ed25519_public(self.signing_key, "ledger signing key")
        if len(self.sealing_key) != 32 or self.sealing_key == bytes(32):
            raise KeyError_("ledger sealing key: an X25519 public key is 32 non-zero bytes")

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": LEDGER_KEYS_FORMAT,
                "ledger_id": self.ledger_id,
                "signing_key": self.signing_key.hex(),
                "sealing_key": self.sealing_key.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<ledger keys>") -> LedgerPublicKeys:
        try:
            raw: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyError_(f"{source}: not JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != LEDGER_KEYS_FORMAT:
            raise KeyError_(f"{source}: not a ledger public-key file ({LEDGER_KEYS_FORMAT})")
        try:
            return cls(
                ledger_id=str(raw["ledger_id"]),
                signing_key=bytes.fromhex(raw["signing_key"]),
                sealing_key=bytes.fromhex(raw["sealing_key"]),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise KeyError_(f"{source}: missing or malformed field: {exc}") from exc


@dataclass(frozen=True, slots=True)
class LedgerKeyPair:
    """The ledger's secret keys (used by the ledger and by tests; never on a gateway)."""

    ledger_id: str
    signing_seed: bytes
    sealing_secret: bytes

    @classmethod
    def generate(cls, ledger_id: str) -> LedgerKeyPair:
        return cls(
            ledger_id,
            bytes(nacl.signing.SigningKey.generate()),
            bytes(nacl.public.PrivateKey.generate()),
        )

    @property
    def public(self) -> LedgerPublicKeys:
        return LedgerPublicKeys(
            self.ledger_id,
            bytes(nacl.signing.SigningKey(self.signing_seed).verify_key),
            bytes(nacl.public.PrivateKey(self.sealing_secret).public_key),
        )
