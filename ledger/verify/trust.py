"""Which ledger keys a buyer trusts, and which ledger a bundle says it came from.

A bundle names the ledger that signed it (the ``kid`` and ledger id of its log checkpoint), but
naming a ledger is no reason to trust its key: anyone can run a ledger of their own and prove
whatever they logged. So the verifier takes a ledger's keys only from what the buyer pinned,
``--ledger-key FILE`` or a trust file, and uses what the bundle names only to pick among the
pinned ledgers and to say which one was missing.

The trust file (docs/zk-summaries.md §3) maps ledger ids to keys: each value is the content of
that ledger's ``ledger-public.json``, or only its two keys::

    {"format": "cobalt-custody/trusted-ledgers/v1",
     "ledgers": {"consortium-ledger": {"signing_key": "<hex>", "sealing_key": "<hex>"}}}

It may also pin registry authorities (``ledger.verify.authority``), by authority id, under
``"authorities": {"consortium-registry": {"signing_key": "<hex>"}}``: the keys whose entries
the verifier accepts as the device registry.

It is found from ``--trust FILE``, else ``$CUSTODY_TRUST_FILE``, else the per-user file
``$XDG_CONFIG_HOME/custody/trusted-ledgers.json`` (``~/.config/...``) when it exists; never
next to the bundle, where whoever hands over the bundle would choose it.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from custody import cbor, cose
from custody.envelope import peek
from custody.errors import ConfigError, CustodyError, KeyError_, ProofError, StorageError
from custody.files import replace_file
from custody.keys import LEDGER_KEYS_FORMAT, LedgerPublicKeys, kid_for
from ledger.verify.authority import AUTHORITY_FORMAT, AuthorityKey

__all__ = [
    "TRUST_ENV",
    "TRUST_FORMAT",
    "AuthorityPin",
    "BundleLedger",
    "NotPinned",
    "Pin",
    "TrustFile",
    "bundle_authority",
    "bundle_ledger",
    "choose",
    "choose_authority",
    "configured_trust_file",
    "key_fingerprint",
    "read_key_file",
    "user_trust_file",
]

TRUST_FORMAT = "cobalt-custody/trusted-ledgers/v1"
TRUST_ENV = "CUSTODY_TRUST_FILE"
USER_TRUST_FILE = Path("custody") / "trusted-ledgers.json"
# A trust file lists public keys only; anything larger is not one.
MAX_TRUST_BYTES = 1024 * 1024
_ENTRY_FIELDS = {"format", "ledger_id", "signing_key", "sealing_key"}
_AUTHORITY_FIELDS = {"format", "authority", "signing_key"}


def key_fingerprint(keys: LedgerPublicKeys) -> str:
    """SHA-256 of the ledger's Ed25519 signing key, hex: what a buyer compares out of band.

    The full hash, not the 8-byte ``kid``: a fingerprint a person checks must not be one an
    attacker can match by generating keys.
    """
    return hashlib.sha256(keys.signing_key).hexdigest()


def user_trust_file(env: Mapping[str, str]) -> Path:
    """The per-user trust file (XDG Base Directory: a relative XDG_CONFIG_HOME is ignored)."""
    config = env.get("XDG_CONFIG_HOME", "")
    if os.path.isabs(config):
        return Path(config) / USER_TRUST_FILE
    home = env.get("HOME")
    return (Path(home) if home else Path.home()) / ".config" / USER_TRUST_FILE


def configured_trust_file(env: Mapping[str, str]) -> tuple[Path, str] | None:
    """The trust file the buyer configured, with how it was configured; None if none is."""
    named = env.get(TRUST_ENV, "")
    if named:
        return Path(named), f"${TRUST_ENV}"
    user = user_trust_file(env)
    if user.exists():
        return user, "the per-user trust file"
    return None


@dataclass(frozen=True, slots=True)
class Pin:
    """A ledger key the buyer pinned, and where the verifier read it."""

    keys: LedgerPublicKeys
    source: Path
    how: str  # "--ledger-key", "--trust", "$CUSTODY_TRUST_FILE", ...

    @property
    def fingerprint(self) -> str:
        return key_fingerprint(self.keys)

    @property
    def kid(self) -> bytes:
        return kid_for(self.keys.signing_key)

    def describe(self) -> str:
        return (
            f"ledger {self.keys.ledger_id!r}, signing key fingerprint (SHA-256) "
            f"{self.fingerprint}, pinned in {self.source} ({self.how})"
        )

    def to_map(self) -> dict[str, str]:
        return {
            "id": self.keys.ledger_id, "key_fingerprint": self.fingerprint,
            "kid": self.kid.hex(), "key_file": str(self.source), "pinned_by": self.how,
        }  # fmt: skip


def read_key_file(path: Path) -> LedgerPublicKeys:
    """A ledger's ``ledger-public.json``; ``KeyError_`` names the file and the reason."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise KeyError_(f"{path}: cannot read the ledger's public keys: {reason}") from exc
    return LedgerPublicKeys.from_json(text, source=str(path))


@dataclass(frozen=True, slots=True)
class AuthorityPin:
    """A registry authority key the buyer pinned, and where the verifier read it."""

    key: AuthorityKey
    source: Path
    how: str

    def describe(self) -> str:
        return (
            f"registry authority {self.key.authority_id!r}, key fingerprint (SHA-256) "
            f"{self.key.fingerprint}, pinned in {self.source} ({self.how})"
        )

    def to_map(self) -> dict[str, str]:
        return {
            "id": self.key.authority_id, "key_fingerprint": self.key.fingerprint,
            "key_file": str(self.source), "pinned_by": self.how,
        }  # fmt: skip


@dataclass
class TrustFile:
    """The pinned ledgers of one trust file, by ledger id."""

    path: Path
    ledgers: dict[str, LedgerPublicKeys] = field(default_factory=dict)
    authorities: dict[str, AuthorityKey] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, *, missing_ok: bool = False) -> TrustFile:
        """Read and check the whole file; ``ConfigError`` names the file, the entry, the reason."""
        try:
            st = path.stat()
            if stat.S_ISREG(st.st_mode) and st.st_mode & stat.S_IWOTH:
                raise ConfigError(
                    str(path), "(file)",
                    f"writable by anyone, so anyone could pin a ledger; run `chmod o-w {path}`",
                )  # fmt: skip
            if st.st_size > MAX_TRUST_BYTES:
                raise ConfigError(str(path), "(file)", f"larger than {MAX_TRUST_BYTES} bytes")
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError as exc:
            if missing_ok:
                return cls(path)
            raise ConfigError(str(path), "(file)", "no such file") from exc
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError(str(path), "(file)", f"cannot read it: {reason}") from exc
        return cls(path, *_parse(text, str(path)))

    def to_json(self) -> str:
        ledgers = {
            lid: {
                "format": LEDGER_KEYS_FORMAT, "ledger_id": lid,
                "signing_key": k.signing_key.hex(), "sealing_key": k.sealing_key.hex(),
            }
            for lid, k in sorted(self.ledgers.items())
        }  # fmt: skip
        out: dict[str, Any] = {"format": TRUST_FORMAT, "ledgers": ledgers}
        if self.authorities:
            out["authorities"] = {
                aid: {"format": AUTHORITY_FORMAT, "authority": aid,
                      "signing_key": k.signing_key.hex()}
                for aid, k in sorted(self.authorities.items())
            }  # fmt: skip
        return json.dumps(out, indent=2) + "\n"

    def save(self) -> None:
        """Replace the file whole (``custody.files``): a crash leaves the old pins or the new."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {self.path.parent}: {exc.strerror}") from exc
        replace_file(self.path, self.to_json().encode("utf-8"), 0o644)

    def pins(self, how: str) -> list[Pin]:
        return [Pin(k, self.path, how) for _, k in sorted(self.ledgers.items())]

    def authority_pins(self, how: str) -> list[AuthorityPin]:
        return [AuthorityPin(k, self.path, how) for _, k in sorted(self.authorities.items())]


def _parse(text: str, source: str) -> tuple[dict[str, LedgerPublicKeys], dict[str, AuthorityKey]]:
    try:
        raw: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(source, "(file)", f"not JSON: {exc}") from exc
    if not isinstance(raw, dict) or raw.get("format") != TRUST_FORMAT:
        raise ConfigError(source, "format", f'not a trust file ("format": "{TRUST_FORMAT}")')
    if not {"format", "ledgers"} <= set(raw) <= {"format", "ledgers", "authorities"}:
        raise ConfigError(source, "ledgers", "the fields are ledgers and, optionally, authorities")
    if not isinstance(raw["ledgers"], dict):
        raise ConfigError(source, "ledgers", "must map ledger ids to keys")
    out: dict[str, LedgerPublicKeys] = {}
    for lid, entry in raw["ledgers"].items():
        where = f"ledgers.{lid}"
        if not isinstance(entry, dict) or not {"signing_key", "sealing_key"} <= set(entry):
            raise ConfigError(source, where, "must hold signing_key and sealing_key (hex)")
        if set(entry) - _ENTRY_FIELDS:
            raise ConfigError(source, where, f"unknown fields {sorted(set(entry) - _ENTRY_FIELDS)}")
        if entry.get("format", LEDGER_KEYS_FORMAT) != LEDGER_KEYS_FORMAT:
            raise ConfigError(source, where, f"format must be {LEDGER_KEYS_FORMAT}")
        if entry.get("ledger_id", lid) != lid:
            raise ConfigError(source, where, f"holds the keys of ledger {entry['ledger_id']!r}")
        try:
            out[lid] = LedgerPublicKeys(
                lid, bytes.fromhex(entry["signing_key"]), bytes.fromhex(entry["sealing_key"])
            )
        except (ValueError, TypeError, CustodyError) as exc:
            raise ConfigError(source, where, f"not a valid key: {exc}") from exc
    return out, _parse_authorities(raw.get("authorities", {}), source)


def _parse_authorities(raw: Any, source: str) -> dict[str, AuthorityKey]:
    if not isinstance(raw, dict):
        raise ConfigError(source, "authorities", "must map authority ids to keys")
    out: dict[str, AuthorityKey] = {}
    for aid, entry in raw.items():
        where = f"authorities.{aid}"
        if not isinstance(entry, dict) or "signing_key" not in entry:
            raise ConfigError(source, where, "must hold signing_key (hex)")
        if set(entry) - _AUTHORITY_FIELDS:
            raise ConfigError(
                source, where, f"unknown fields {sorted(set(entry) - _AUTHORITY_FIELDS)}"
            )
        if entry.get("format", AUTHORITY_FORMAT) != AUTHORITY_FORMAT:
            raise ConfigError(source, where, f"format must be {AUTHORITY_FORMAT}")
        if entry.get("authority", aid) != aid:
            raise ConfigError(source, where, f"holds the key of authority {entry['authority']!r}")
        try:
            out[aid] = AuthorityKey(aid, bytes.fromhex(entry["signing_key"]))
        except (ValueError, TypeError, CustodyError) as exc:
            raise ConfigError(source, where, f"not a valid key: {exc}") from exc
    return out


# --- the ledger a bundle names ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleLedger:
    """The ledger a bundle says signed it: unverified until a pinned key verifies the bundle."""

    ledger_id: str
    kid: bytes

    def to_map(self) -> dict[str, str]:
        return {"id": self.ledger_id, "kid": self.kid.hex()}


def bundle_ledger(data: bytes, max_bytes: int) -> BundleLedger:
    """Read the ledger id and key id of a bundle's log checkpoint, without checking anything.

    ``ProofError`` if the bundle is not readable that far (the verifier would reject it too).
    """
    if len(data) > max_bytes:
        raise ProofError(f"bundle of {len(data)} bytes exceeds {max_bytes}")
    try:
        raw = cbor.decode(data)
        log = raw.get("log") if isinstance(raw, dict) else None
        if not isinstance(log, bytes):
            raise ProofError("decoding: the bundle has no log checkpoint")
        msg = cose.decode_sign1(log)
        payload = cbor.decode(msg.payload)
    except CustodyError as exc:
        if isinstance(exc, ProofError):
            raise
        raise ProofError(f"decoding: {exc}") from exc
    kid = msg.protected.get(cose.HDR_KID)
    lid = payload.get("ledger") if isinstance(payload, dict) else None
    if not isinstance(kid, bytes) or not isinstance(lid, str):
        raise ProofError("decoding: the log checkpoint names no ledger or key id")
    return BundleLedger(lid, kid)


class NotPinned(ProofError):
    """The bundle's ledger is not among the ledgers the buyer pinned."""


def choose(pins: list[Pin], named: BundleLedger, source: Path) -> Pin:
    """The pinned key that can have signed the bundle: matched by key id, not by name.

    A ledger id is only a name, and a seller's own ledger can take the genuine one's: a pin
    with the bundle's ledger id but another key is a mismatch, never a match.
    """
    for pin in pins:
        if pin.kid == named.kid:
            return pin
    said = f"ledger {named.ledger_id!r} (key id {named.kid.hex()})"
    same_name = [p for p in pins if p.keys.ledger_id == named.ledger_id]
    if same_name:
        pin = same_name[0]
        raise NotPinned(
            f"the bundle names {said}, but the key pinned for {named.ledger_id!r} in {source} "
            f"is another (key id {pin.kid.hex()}): the bundle was not made by the ledger you "
            f"pinned"
        )
    listed = ", ".join(f"{p.keys.ledger_id!r} (key id {p.kid.hex()})" for p in pins) or "none"
    raise NotPinned(f"the bundle names {said}, which is not pinned in {source} (pinned: {listed})")


def bundle_authority(data: bytes) -> str | None:
    """The registry authority a bundle's first registry entry names (unverified), if any."""
    try:
        raw = cbor.decode(data)
        first = raw["registry"][0]["entry"]
        named = peek(first)["authority"]
    except (CustodyError, KeyError, IndexError, TypeError):
        return None
    return named if isinstance(named, str) else None


def choose_authority(pins: list[AuthorityPin], named: str | None) -> AuthorityPin:
    """The pinned authority for a bundle: by the id its entries name, or the only one pinned.

    Whatever is chosen, every entry is verified under the pinned key: a bundle naming an
    authority that is not pinned, or pinned with another key, fails there."""
    for pin in pins:
        if pin.key.authority_id == named:
            return pin
    if len(pins) == 1:
        return pins[0]
    listed = ", ".join(repr(p.key.authority_id) for p in pins)
    raise NotPinned(
        f"the bundle's registry names authority {named!r}, which is not pinned (pinned: {listed})"
    )
