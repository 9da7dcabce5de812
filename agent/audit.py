"""``custody-agent events verify``: re-check everything the outbox holds.

For every device key with events here, in seq order: the envelope decodes
strictly and its signature verifies (for the current key; events of a retired
key are checked against the kid recorded with them and reported), the chain
links (seq gapless, prev = event id of seq-1), the stored columns agree with
the signed payload, every committed mass opens with the locally kept clear
value, and a net commitment equals gross - tare. It stops at the first bad
seq and names it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from agent.outbox import Outbox, StoredEvent
from custody.commitment import Opening, verify_opening
from custody.envelope import Envelope, check_link, verify_envelope
from custody.errors import CommitmentError, SchemaError, VerificationError
from custody.group import ED25519
from custody.keys import DeviceKey

__all__ = ["AuditReport", "verify_outbox"]


@dataclass
class AuditReport:
    checked: int = 0
    ok: bool = True
    first_bad_seq: int | None = None
    error: str | None = None
    skipped_foreign_keys: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "checked": self.checked,
            "first_bad_seq": self.first_bad_seq,
            "error": self.error,
            "skipped_keys": self.skipped_foreign_keys,
        }


def verify_outbox(
    outbox: Outbox, key: DeviceKey, progress: Callable[[int], None] | None = None
) -> AuditReport:
    report = AuditReport()
    for kid in outbox.kids():
        if kid != key.kid:
            report.skipped_foreign_keys.append(kid.hex())
            continue
        previous: Envelope | None = None
        for stored in outbox.iter_chain(kid):
            try:
                env = verify_envelope(stored.envelope, key.public_key)
                check_link(previous, env)
                _check_columns(stored, env)
                _check_masses(outbox, stored, env)
            except VerificationError as exc:
                report.ok = False
                report.first_bad_seq = stored.seq
                report.error = f"seq {stored.seq}: {exc}"
                return report
            previous = env
            report.checked += 1
            if progress is not None:
                progress(report.checked)
    return report


def _check_columns(stored: StoredEvent, env: Envelope) -> None:
    p = env.payload
    if (stored.seq, stored.event_id, stored.prev, stored.type) != (
        p.seq, env.event_id, p.prev, str(p.type)
    ):  # fmt: skip
        raise SchemaError("stored columns disagree with the signed envelope")


def _check_masses(outbox: Outbox, stored: StoredEvent, env: Envelope) -> None:
    mass = env.payload.body.get("mass")
    if not mass:
        return
    clear = outbox.openings(stored.event_id)
    if set(clear) != set(mass):
        raise CommitmentError(f"clear values kept for {sorted(clear)}, signed {sorted(mass)}")
    points = {name: ED25519.point(encoded) for name, encoded in mass.items()}
    for name, (value, blinding) in clear.items():
        if not verify_opening(points[name], Opening(value, ED25519.scalar(blinding))):
            raise CommitmentError(f"{name} commitment does not open to the kept value {value}")
    if "net" in points and ED25519.sub(points["gross"], points["tare"]) != points["net"]:
        raise CommitmentError("net commitment is not gross - tare")
