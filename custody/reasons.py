"""Why the ledger refuses a record: one enum, shared by both ends of the link.

The ledger stores a rejection as ``Reason`` plus free detail, counts it by
reason (a metric label), and tells the device the text ``"<reason>: <detail>"``
in its signed ack (``sync.ack``: printable ASCII, at most 200 characters). The
gateway shows that text to its operator and groups by the part before the
first colon, which is the enum's value. Adding a member is compatible; renaming
a value changes what older gateways display, so values stay put.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = ["Reason", "Refusal"]


class Reason(StrEnum):
    # The message as a whole: not a batch of this device that we can read.
    BATCH = "batch"
    # One envelope, before any key is known: nobody we know signed it.
    UNDECODABLE = "undecodable envelope"
    NO_KEY_ID = "envelope has no key id"
    UNKNOWN_KEY = "unknown device key"
    FOREIGN_KEY = "key belongs to another device"
    # Signed by an enrolled key of this device, but not acceptable.
    SIGNATURE = "does not verify"
    DEVICE_MISMATCH = "payload device id is not the topic's"
    SITE_MISMATCH = "site is not the key's enrolled site"
    MASS = "mass"
    REVOKED = "device key revoked"
    NOT_YET_VALID = "key not yet valid"
    CHAIN = "chain"
    FORK = "fork"
    ROTATION = "rotation"

    @property
    def metric_label(self) -> str:
        """A Prometheus label value: the member name in lower case."""
        return self.name.lower()

    @property
    def ackable(self) -> bool:
        """Whether the envelope names an enrolled key of the topic's device, so that an ack
        for that key may report it. The others could have been made up by anyone holding a
        broker certificate: they are counted and summarised, one row per batch and reason."""
        return self not in _UNACKABLE


_UNACKABLE = frozenset(
    {Reason.BATCH, Reason.UNDECODABLE, Reason.NO_KEY_ID, Reason.UNKNOWN_KEY, Reason.FOREIGN_KEY}
)


@dataclass(frozen=True, slots=True)
class Refusal:
    """A reason with its detail (which key, which seq, what did not open)."""

    reason: Reason
    detail: str = ""

    @property
    def text(self) -> str:
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

    def __str__(self) -> str:
        return self.text
