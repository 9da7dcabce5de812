"""The registry authority's public key, as verifiers and the ledger pin it.

The device registry is written by a registry authority (a consortium key), never by the
ledger: a ledger that could enrol keys could enrol a phantom gateway and log whatever
receipt it likes under it. The authority's public file ``authority-public.json`` is::

    {"format": "cobalt-custody/registry-authority/v1",
     "authority": "consortium-registry", "signing_key": "<64 hex: Ed25519 public key>"}

Its fingerprint is the SHA-256 of the 32-byte key, hex, like a ledger key's
(docs/zk-summaries.md "Which ledger key"), so people can compare it out of band.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from custody.errors import KeyError_, SchemaError
from custody.event import validate_identifier
from custody.keys import check_ed25519_public, kid_for

__all__ = ["AUTHORITY_FORMAT", "AUTHORITY_PUBLIC_FILE", "AuthorityKey", "read_authority_file"]

AUTHORITY_FORMAT = "cobalt-custody/registry-authority/v1"
AUTHORITY_PUBLIC_FILE = "authority-public.json"
MAX_AUTHORITY_FILE_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class AuthorityKey:
    authority_id: str
    signing_key: bytes  # Ed25519

    def __post_init__(self) -> None:
        validate_identifier(self.authority_id, "authority")
        check_ed25519_public(self.signing_key, "registry authority key")

    @property
    def kid(self) -> bytes:
        return kid_for(self.signing_key)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.signing_key).hexdigest()

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": AUTHORITY_FORMAT,
                "authority": self.authority_id,
                "signing_key": self.signing_key.hex(),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str, source: str = "<authority key>") -> AuthorityKey:
        try:
            raw: Any = json.loads(text)
        except json.JSONDecodeError as exc:
            raise KeyError_(f"{source}: not JSON: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != AUTHORITY_FORMAT:
            raise KeyError_(f"{source}: not a registry authority key file ({AUTHORITY_FORMAT})")
        try:
            return cls(str(raw["authority"]), bytes.fromhex(raw["signing_key"]))
        except (KeyError, ValueError, TypeError, SchemaError) as exc:
            raise KeyError_(f"{source}: missing or malformed field: {exc}") from exc


def read_authority_file(path: Path) -> AuthorityKey:
    """An ``authority-public.json``; ``KeyError_`` names the file and the reason."""
    try:
        if path.stat().st_size > MAX_AUTHORITY_FILE_BYTES:
            raise KeyError_(f"{path}: larger than {MAX_AUTHORITY_FILE_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KeyError_(f"{path}: cannot read the registry authority's key: {reason}") from exc
    return AuthorityKey.from_json(text, source=str(path))
