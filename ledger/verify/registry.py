"""The device registry: entries signed by the registry authority and logged by the ledger.

Only the registry authority (``ledger.verify.authority``) writes the registry; the ledger
logs each entry as a leaf of its transparency log (leaf input: the entry id, SHA-256 of the
entry's bytes, as for device records), so whether a key was enrolled or retired *before* a
record is judged by log index, never by a device's clock. docs/zk-summaries.md §2.1 is the
byte layout this module enforces.

An entry is a tagged COSE_Sign1 by the authority's Ed25519 key: protected header exactly alg
(EdDSA), content type ``ENTRY_CONTENT_TYPE`` and kid (``custody.keys.kid_for`` of the
authority key), empty unprotected header, payload the deterministic-CBOR map::

    {"v": 1, "authority": id, "seq": n, "prev": 32 bytes, "t": Unix ms, "op": op, ...}

    op "enrol":     "device": id, "site": id, "key": 32-byte Ed25519 public key
    op "retire":    "kid": 8 bytes, "last_seq": n, and "last_checkpoint": 32-byte event id
                    when the key's chain holds a checkpoint at or before last_seq
    op "stock":     "site": id, "record": 32-byte event id of the site's opening_stock record
    op "heartbeat": nothing more

``seq`` counts from 1; ``prev`` is the entry id of seq − 1 (32 zero bytes at seq 1). The
chain is gapless, so a verifier that holds entries 1..n logged before some log index, with
entry n logged after it, holds every entry logged before that index: the heartbeat exists
to be such a fence when nothing else changed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from custody import cbor, cose
from custody.errors import KeyError_, ProofError, SchemaError
from custody.event import validate_identifier
from custody.keys import KID_BYTES, check_ed25519_public, kid_for
from ledger.verify.authority import AuthorityKey

__all__ = [
    "ENTRY_CONTENT_TYPE",
    "GENESIS_ENTRY_PREV",
    "Enrolment",
    "LoggedEntry",
    "Op",
    "RegistryEntry",
    "RegistryState",
    "Retirement",
    "decode_entry",
    "entry_id_of",
    "entry_payload",
    "replay",
]

ENTRY_CONTENT_TYPE = "application/vnd.cobalt-custody.registry-entry+cbor;v=1"
GENESIS_ENTRY_PREV = bytes(32)
MAX_ENTRY_BYTES = 4096
MAX_TIME_MS = 2**63 - 1
MAX_SEQ = 2**63 - 1


class Op(StrEnum):
    ENROL = "enrol"
    RETIRE = "retire"
    STOCK = "stock"
    HEARTBEAT = "heartbeat"


_OP_FIELDS: dict[Op, tuple[frozenset[str], frozenset[str]]] = {
    # op -> (required, optional) fields beyond the common ones
    Op.ENROL: (frozenset({"device", "site", "key"}), frozenset()),
    Op.RETIRE: (frozenset({"kid", "last_seq"}), frozenset({"last_checkpoint"})),
    Op.STOCK: (frozenset({"site", "record"}), frozenset()),
    Op.HEARTBEAT: (frozenset(), frozenset()),
}
_COMMON = frozenset({"v", "authority", "seq", "prev", "t", "op"})


@dataclass(frozen=True, slots=True)
class RegistryEntry:
    """One verified entry. Fields an op does not carry keep their empty defaults."""

    authority_id: str
    seq: int
    prev: bytes
    time_ms: int
    op: Op
    entry_id: bytes
    device_id: str = ""  # enrol
    site_id: str = ""  # enrol, stock
    public_key: bytes = b""  # enrol
    kid: bytes = b""  # enrol (of public_key), retire
    last_seq: int = 0  # retire
    last_checkpoint: bytes | None = None  # retire
    record: bytes = b""  # stock


def entry_id_of(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def entry_payload(
    authority_id: str, seq: int, prev: bytes, time_ms: int, op: Op, fields: Mapping[str, Any]
) -> dict[str, Any]:
    """The payload map an authority signs (checked as strictly as ``decode_entry`` would)."""
    raw = {"v": 1, "authority": authority_id, "seq": seq, "prev": prev, "t": time_ms,
           "op": str(op), **fields}  # fmt: skip
    _check_payload(raw)
    return raw


def decode_entry(data: bytes, authority: AuthorityKey) -> RegistryEntry:
    """Verify one entry under the pinned authority key and decode it strictly."""
    msg = cose.verify_signed_document(
        data, authority.signing_key, authority.kid, content_type=ENTRY_CONTENT_TYPE,
        max_bytes=MAX_ENTRY_BYTES,
    )  # fmt: skip
    raw = cbor.decode(msg.payload)
    op = _check_payload(raw)
    if raw["authority"] != authority.authority_id:
        raise SchemaError(
            f"entry names authority {raw['authority']!r}, the key is {authority.authority_id!r}'s"
        )
    base = RegistryEntry(raw["authority"], raw["seq"], raw["prev"], raw["t"], op,
                         entry_id_of(data))  # fmt: skip
    if op is Op.ENROL:
        return _replace(base, device_id=raw["device"], site_id=raw["site"],
                        public_key=raw["key"], kid=kid_for(raw["key"]))  # fmt: skip
    if op is Op.RETIRE:
        return _replace(base, kid=raw["kid"], last_seq=raw["last_seq"],
                        last_checkpoint=raw.get("last_checkpoint"))  # fmt: skip
    if op is Op.STOCK:
        return _replace(base, site_id=raw["site"], record=raw["record"])
    return base


def _replace(entry: RegistryEntry, **changes: Any) -> RegistryEntry:
    values = {name: getattr(entry, name) for name in RegistryEntry.__slots__}
    values.update(changes)
    return RegistryEntry(**values)


def _check_payload(raw: Any) -> Op:
    if not isinstance(raw, dict) or not set(raw) >= _COMMON:
        raise SchemaError("registry entry: missing common fields (v, authority, seq, prev, t, op)")
    if raw["v"] != 1 or isinstance(raw["v"], bool):
        raise SchemaError("registry entry: not version 1")
    if not isinstance(raw["op"], str) or raw["op"] not in set(Op):
        raise SchemaError(f"registry entry: unknown op {raw['op']!r}")
    op = Op(raw["op"])
    required, optional = _OP_FIELDS[op]
    extra = set(raw) - _COMMON - required - optional
    missing = required - set(raw)
    if extra or missing:
        unknown = sorted(extra, key=repr)  # keys of any CBOR type: repr orders them all
        raise SchemaError(
            f"registry entry {op}: fields missing {sorted(missing)} or unknown {unknown}"
        )
    validate_identifier(raw["authority"], "authority")
    if not _uint(raw["seq"], MAX_SEQ) or raw["seq"] < 1:
        raise SchemaError("registry entry: seq must be a positive integer")
    if not _bytes(raw["prev"], 32):
        raise SchemaError("registry entry: prev must be 32 bytes")
    if (raw["seq"] == 1) != (raw["prev"] == GENESIS_ENTRY_PREV):
        raise SchemaError("registry entry: seq 1, and only seq 1, has an all-zero prev")
    if not _uint(raw["t"], MAX_TIME_MS):
        raise SchemaError("registry entry: t must be a time in Unix ms")
    if op is Op.ENROL:
        validate_identifier(raw["device"], "device")
        validate_identifier(raw["site"], "site")
        if not _bytes(raw["key"], 32):
            raise SchemaError("registry entry enrol: key must be 32 bytes")
        try:
            check_ed25519_public(raw["key"], "registry entry key")
        except KeyError_ as exc:  # bad content of a signed entry, like any other field
            raise SchemaError(str(exc)) from exc
    elif op is Op.RETIRE:
        if not _bytes(raw["kid"], KID_BYTES):
            raise SchemaError(f"registry entry retire: kid must be {KID_BYTES} bytes")
        if not _uint(raw["last_seq"], MAX_SEQ):
            raise SchemaError("registry entry retire: last_seq must be a non-negative integer")
        if "last_checkpoint" in raw and not _bytes(raw["last_checkpoint"], 32):
            raise SchemaError("registry entry retire: last_checkpoint must be a 32-byte event id")
    elif op is Op.STOCK:
        validate_identifier(raw["site"], "site")
        if not _bytes(raw["record"], 32):
            raise SchemaError("registry entry stock: record must be a 32-byte event id")
    return op


def _uint(value: Any, maximum: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= maximum


def _bytes(value: Any, length: int) -> bool:
    return isinstance(value, bytes) and len(value) == length


# --- the chain, replayed ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LoggedEntry:
    index: int  # its leaf's position in the ledger's log
    entry: RegistryEntry


@dataclass(frozen=True, slots=True)
class Enrolment:
    kid: bytes
    device_id: str
    site_id: str
    public_key: bytes
    index: int  # log index of the enrol entry


@dataclass(frozen=True, slots=True)
class Retirement:
    kid: bytes
    last_seq: int
    last_checkpoint: bytes | None
    index: int  # log index of the retire entry


@dataclass
class RegistryState:
    """What entries 1..n say, with the log index of each statement."""

    entries: tuple[LoggedEntry, ...]
    enrolments: dict[bytes, Enrolment] = field(default_factory=dict)
    retirements: dict[bytes, Retirement] = field(default_factory=dict)
    stocks: dict[str, tuple[bytes, int]] = field(default_factory=dict)  # site -> (record, index)

    @property
    def last_index(self) -> int:
        """Log index of the newest entry shown: nothing logged before it is missing."""
        return self.entries[-1].index


def replay(entries: Iterable[LoggedEntry]) -> RegistryState:
    """Check the chain (gapless from seq 1, linked, logged in seq order) and what it says.

    Raises ``ProofError`` naming the entry. An authority never enrols one key twice,
    retires one key twice or pins two opening stocks for one site; a chain that does is
    refused whole (whichever statement was meant, the ledger must not get to choose).
    """
    shown = tuple(entries)
    if not shown:
        raise ProofError("no registry entries")
    state = RegistryState(shown)
    keys_seen: set[bytes] = set()
    prev_id, prev_index = GENESIS_ENTRY_PREV, -1
    for expected_seq, logged in enumerate(shown, start=1):
        e = logged.entry
        where = f"registry entry seq {e.seq} (log index {logged.index})"
        if e.seq != expected_seq:
            raise ProofError(f"{where}: expected seq {expected_seq} (the chain has a gap)")
        if e.prev != prev_id:
            raise ProofError(f"{where}: prev is not the entry id of seq {e.seq - 1}")
        if logged.index <= prev_index:
            raise ProofError(f"{where}: logged before the entry it follows")
        prev_id, prev_index = e.entry_id, logged.index
        if e.op is Op.ENROL:
            if e.kid in state.enrolments or e.public_key in keys_seen:
                raise ProofError(f"{where}: key {e.kid.hex()} is enrolled twice")
            keys_seen.add(e.public_key)
            state.enrolments[e.kid] = Enrolment(e.kid, e.device_id, e.site_id, e.public_key,
                                                logged.index)  # fmt: skip
        elif e.op is Op.RETIRE:
            if e.kid in state.retirements:
                raise ProofError(f"{where}: key {e.kid.hex()} is retired twice")
            state.retirements[e.kid] = Retirement(e.kid, e.last_seq, e.last_checkpoint,
                                                  logged.index)  # fmt: skip
        elif e.op is Op.STOCK:
            if e.site_id in state.stocks:
                raise ProofError(f"{where}: site {e.site_id} has a second opening stock pinned")
            state.stocks[e.site_id] = (e.record, logged.index)
    return state
