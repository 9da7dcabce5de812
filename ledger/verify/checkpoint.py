"""A ledger-signed log checkpoint, as a verifier reads it (needs only ``custody``).

A checkpoint is a COSE_Sign1 by the ledger's Ed25519 key over the deterministic-CBOR map
``{"v": 1, "ledger": id, "size": n, "root": h, "t": ms}`` (content type
``CHECKPOINT_CONTENT_TYPE``); ``ledger.log`` signs them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from custody import cbor, cose
from custody.errors import SchemaError
from custody.keys import LedgerPublicKeys, kid_for

__all__ = ["CHECKPOINT_CONTENT_TYPE", "MAX_CHECKPOINT_BYTES", "Checkpoint", "verify_checkpoint"]

CHECKPOINT_CONTENT_TYPE = "application/vnd.cobalt-custody.checkpoint+cbor;v=1"
MAX_CHECKPOINT_BYTES = 1024


@dataclass(frozen=True, slots=True)
class Checkpoint:
    ledger_id: str
    size: int
    root: bytes
    time_ms: int

    def __post_init__(self) -> None:
        if not isinstance(self.ledger_id, str):
            raise SchemaError("checkpoint ledger id must be text")
        if not _uint(self.size):
            raise SchemaError("checkpoint size must be a non-negative integer")
        if not isinstance(self.root, bytes) or len(self.root) != 32:
            raise SchemaError("checkpoint root must be 32 bytes")
        if not _uint(self.time_ms):
            raise SchemaError("checkpoint time must be non-negative Unix milliseconds")

    def to_map(self) -> dict[str, Any]:
        return {"v": 1, "ledger": self.ledger_id, "size": self.size, "root": self.root,
                "t": self.time_ms}  # fmt: skip


def verify_checkpoint(data: bytes, ledger: LedgerPublicKeys) -> Checkpoint:
    """Strictly decode and verify a checkpoint under the ledger's public key."""
    msg = cose.verify_signed_document(
        data, ledger.signing_key, kid_for(ledger.signing_key),
        content_type=CHECKPOINT_CONTENT_TYPE, max_bytes=MAX_CHECKPOINT_BYTES,
    )  # fmt: skip
    raw = cbor.decode(msg.payload)
    if not isinstance(raw, dict) or set(raw) != {"v", "ledger", "size", "root", "t"}:
        raise SchemaError("checkpoint payload fields")
    # The integer 1: CBOR true compares equal to it in Python but is another encoding.
    if raw["v"] != 1 or isinstance(raw["v"], bool):
        raise SchemaError("checkpoint payload version")
    return Checkpoint(raw["ledger"], raw["size"], raw["root"], raw["t"])


def _uint(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
