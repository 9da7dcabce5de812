"""The signed device registry, as a verifier reads it (needs only ``custody``).

A registry snapshot is a COSE_Sign1 by the ledger's Ed25519 key (content type
``REGISTRY_CONTENT_TYPE``) over the deterministic-CBOR map
``{"v": 1, "ledger": id, "t": ms, "devices": [entry...]}``, each entry
``{"device", "site", "kid", "key", "enrolled", "valid_from"?, "revoked"?}``
sorted by kid (times in Unix ms). ``valid_from`` is when the key's validity
starts (``custody-ledger enroll --valid-from``); snapshots made before it
existed omit it, and then the enrolment time stands for it. A buyer's verifier
uses the registry to check that a record was signed by a key that was enrolled
to a site, valid and not revoked, when the record was made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from custody import cbor, cose
from custody.errors import KeyError_, SchemaError
from custody.event import validate_identifier
from custody.keys import LedgerPublicKeys, check_ed25519_public, kid_for

__all__ = ["REGISTRY_CONTENT_TYPE", "Registry", "RegistryEntry", "decode_registry"]

REGISTRY_CONTENT_TYPE = "application/vnd.cobalt-custody.registry+cbor;v=1"
MAX_REGISTRY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    device_id: str
    site_id: str
    kid: bytes
    public_key: bytes
    enrolled_ms: int
    revoked_ms: int | None = None
    valid_from_ms: int | None = None  # None: from enrolment

    @property
    def valid_from(self) -> int:
        return self.enrolled_ms if self.valid_from_ms is None else self.valid_from_ms

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "device": self.device_id, "site": self.site_id, "kid": self.kid,
            "key": self.public_key, "enrolled": self.enrolled_ms,
        }  # fmt: skip
        if self.valid_from_ms is not None:
            out["valid_from"] = self.valid_from_ms
        if self.revoked_ms is not None:
            out["revoked"] = self.revoked_ms
        return out

    def valid_at(self, time_ms: int) -> bool:
        return self.valid_from <= time_ms and (self.revoked_ms is None or time_ms < self.revoked_ms)


@dataclass(frozen=True, slots=True)
class Registry:
    ledger_id: str
    time_ms: int
    entries: tuple[RegistryEntry, ...]
    # site -> Pedersen commitment to its declared opening stock (docs/zk-summaries.md §2),
    # for the mass balance proofs; a registry without ``sites`` declares none.
    opening_stocks: Mapping[str, bytes] = field(default_factory=dict)

    def by_kid(self, kid: bytes) -> RegistryEntry | None:
        return next((e for e in self.entries if e.kid == kid), None)

    def to_map(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "v": 1, "ledger": self.ledger_id, "t": self.time_ms,
            "devices": [e.to_map() for e in sorted(self.entries, key=lambda e: e.kid)],
        }  # fmt: skip
        if self.opening_stocks:
            out["sites"] = [{"site": s, "stock": c} for s, c in sorted(self.opening_stocks.items())]
        return out


def decode_registry(data: bytes, ledger: LedgerPublicKeys) -> Registry:
    """Strictly decode and verify a registry snapshot under the pinned ledger key."""
    msg = cose.verify_signed_document(
        data, ledger.signing_key, kid_for(ledger.signing_key),
        content_type=REGISTRY_CONTENT_TYPE, max_bytes=MAX_REGISTRY_BYTES,
    )  # fmt: skip
    raw = cbor.decode(msg.payload)
    if (
        not isinstance(raw, dict)
        or not {"v", "ledger", "t", "devices"}
        <= set(raw)
        <= {"v", "ledger", "t", "devices", "sites"}
        or raw["v"] != 1
        or isinstance(raw["v"], bool)  # true == 1 in Python, but it is another encoding
    ):
        raise SchemaError("registry payload fields")
    if (
        not isinstance(raw["devices"], list)
        or not isinstance(raw["ledger"], str)
        or not _time(raw["t"])
    ):
        raise SchemaError("registry payload values")
    entries = tuple(_entry(e) for e in raw["devices"])
    kids = [e.kid for e in entries]
    if kids != sorted(kids) or len(set(kids)) != len(kids):
        raise SchemaError("registry entries must be sorted by kid, without duplicates")
    return Registry(raw["ledger"], raw["t"], entries, _sites(raw.get("sites")))


def _time(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _sites(raw: Any) -> dict[str, bytes]:
    if raw is None:
        return {}
    if not isinstance(raw, list) or not raw:
        raise SchemaError("registry sites must be a non-empty list when present")
    out: dict[str, bytes] = {}
    for item in raw:
        if not isinstance(item, dict) or set(item) != {"site", "stock"}:
            raise SchemaError("registry site fields")
        site = validate_identifier(item["site"], "site")
        if not isinstance(item["stock"], bytes) or len(item["stock"]) != 32:
            raise SchemaError("registry site stock must be a 32-byte commitment")
        out[site] = item["stock"]
    if list(out) != sorted(out) or len(out) != len(raw):
        raise SchemaError("registry sites must be sorted, without duplicates")
    return out


def _entry(raw: Any) -> RegistryEntry:
    if not isinstance(raw, dict) or not {"device", "site", "kid", "key", "enrolled"} <= set(raw):
        raise SchemaError("registry entry fields")
    if set(raw) - {"device", "site", "kid", "key", "enrolled", "valid_from", "revoked"}:
        raise SchemaError("registry entry has unknown fields")
    if not isinstance(raw["key"], bytes):
        raise SchemaError("registry entry key must be a byte string")
    try:
        key = check_ed25519_public(raw["key"], "registry entry key")
    except KeyError_ as exc:
        # A bad key inside a signed snapshot is bad content, like any other field.
        raise SchemaError(str(exc)) from exc
    if raw["kid"] != kid_for(key):
        raise SchemaError("registry entry kid does not match its key")
    for name in ("enrolled", "valid_from", "revoked"):
        if name in raw and not _time(raw[name]):
            raise SchemaError(f"registry entry {name} must be an integer time")
    return RegistryEntry(
        validate_identifier(raw["device"], "device"), validate_identifier(raw["site"], "site"),
        raw["kid"], key, raw["enrolled"], raw.get("revoked"), raw.get("valid_from"),
    )  # fmt: skip
