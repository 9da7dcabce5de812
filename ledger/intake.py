"""Ledger intake: verify a device batch and log each record exactly once.

For one batch received on ``custody/v1/dev/{device}/events``, in ONE store
transaction, each envelope goes through, in order:

1. strict COSE decode; the ``kid`` must be an enrolled key of *this* device
   (the topic's device, itself bound to the broker certificate by the ACL);
   unknown and revoked keys are rejected;
2. full envelope verification (signature with the registered key, canonical
   payload, schema) and device-id agreement between payload and topic;
3. dedupe: an event id already logged is a harmless resend, skipped;
   a *different* event at a seq we already logged is a fork: rejected, counted;
4. chain: seq must be head+1 and prev the head's event id; a record from
   further ahead waits (bounded) for its predecessor and the ack asks the
   device to resend from head+1;
5. the sealed mass openings are opened with the ledger key and every
   commitment must open (and net = gross - tare); the clear masses are stored;
6. append to the transparency log (RFC 9162 leaf = the event id) and advance
   the device's head; waiting successors are then taken in order.

Then one ledger-signed ack per device key says: highest contiguous seq now
logged and its event id, the log size and root, rejections with reasons, and
a resend request when there is a gap. A rejected record is never logged; the
device keeps it (state ``rejected``) for operators to see.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import cbor2

from custody import cose
from custody.commitment import open_sealed, verify_opening
from custody.envelope import Envelope, event_id_of, verify_envelope
from custody.errors import CommitmentError, CustodyError, DecodeError, VerificationError
from custody.group import ED25519
from custody.keys import LedgerKeyPair
from custody.merkle import CompactRange, leaf_hash
from ledger.store import Store
from sync.ack import MAX_REASON_CHARS, Ack, Rejection, sign_ack
from sync.batch import decode_batch

__all__ = ["MAX_WAITING_PER_KEY", "Intake", "IntakeResult"]

# Out-of-order records held per device key while their predecessor is missing.
# A gateway sends in seq order, so only a resend race or reordering across
# intake workers lands here; beyond this the record is dropped from the wait
# list (not rejected) and the resend request brings it back.
MAX_WAITING_PER_KEY = 10_000


@dataclass
class IntakeResult:
    acks: list[bytes] = field(default_factory=list)  # signed acks, one per device key
    logged: int = 0
    duplicates: int = 0
    waiting: int = 0
    rejected: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class _Checked:
    """One envelope after the lock-free checks: ready to place, or a rejection."""

    kid: bytes | None = None
    seq: int | None = None
    event_id: bytes | None = None
    env: Envelope | None = None
    masses: dict[str, int] = field(default_factory=dict)
    site_id: str = ""
    reason: str = ""
    ackable: bool = True  # False: the key is not this device's, so no ack speaks for it


@dataclass
class _KeyProgress:
    kid: bytes
    rejections: list[Rejection] = field(default_factory=list)
    gap: bool = False


def _ack_reason(reason: str) -> str:
    """Acks carry short printable-ASCII reasons (``sync.ack``); keep the gist."""
    text = "".join(c if " " <= c <= "~" else "?" for c in reason)
    return text[:MAX_REASON_CHARS] or "rejected"


def _claimed_seq(payload: bytes) -> int | None:
    """The seq a record that failed verification claims (lenient read, for the report only)."""
    try:
        seq = cbor2.loads(payload).get("seq")
    except (cbor2.CBORDecodeError, AttributeError, ValueError, TypeError, RecursionError):
        return None
    return seq if isinstance(seq, int) and not isinstance(seq, bool) and seq >= 1 else None


class Intake:
    """Verifies and logs device batches into a ``LedgerStore``."""

    def __init__(self, store: Store, keys: LedgerKeyPair) -> None:
        self.store = store
        self.keys = keys
        self.counters: Counter[str] = Counter()
        ED25519.self_test()

    def ingest(
        self, device_id: str, payload: bytes, *, correlation: bytes | None = None
    ) -> IntakeResult:
        """Process one batch payload from ``device_id``'s events topic."""
        result = IntakeResult()
        try:
            batch = decode_batch(payload, device_id=device_id)
        except CustodyError as exc:
            self._count(result, "batch: " + str(exc))
            with self.store.transaction():
                self.store.record_rejection(device_id, None, None, None, f"batch: {exc}")
            return result
        progress: dict[bytes, _KeyProgress] = {}
        # The expensive part (signatures, opening sealed masses) runs before the
        # transaction, so the log's sequencer lock is held only for the cheap
        # chain checks and appends: several intake workers then overlap.
        checked = [self._check(device_id, data) for data in batch.envelopes]
        with self.store.transaction():
            log = self.store.log_range()
            for item in checked:
                self._apply(device_id, item, log, progress, result)
            self.store.save_log(log)
            acks = [self._ack(device_id, p, log, correlation) for p in progress.values()]
        result.acks = acks
        self.counters.update(
            logged=result.logged, duplicates=result.duplicates, rejected=result.rejected
        )
        return result

    # --- one envelope ------------------------------------------------------------------
    def _check(self, device_id: str, data: bytes) -> _Checked:
        """Everything about one envelope that needs no lock: decode, key, signature, masses."""
        try:
            msg = cose.decode_sign1(data)
        except DecodeError as exc:
            return _Checked(reason=f"undecodable envelope: {exc}")
        kid = msg.protected.get(cose.HDR_KID)
        if not isinstance(kid, bytes):
            return _Checked(reason="envelope has no key id")
        key = self.store.key(kid)
        if key is None or key.device_id != device_id:
            # No ack: we cannot speak for a key that is not this device's.
            reason = "unknown device key" if key is None else "key belongs to another device"
            return _Checked(kid=kid, reason=reason, ackable=False)
        try:
            env = verify_envelope(data, key.public_key)
        except VerificationError as exc:
            # Only this device can publish on its topic (broker ACL), so name the
            # seq it claims: the device then marks that record rejected, not resent.
            return _Checked(
                kid=kid, seq=_claimed_seq(msg.payload), event_id=event_id_of(data),
                reason=f"does not verify: {exc}",
            )  # fmt: skip
        p = env.payload
        if p.device_id != device_id:
            return _Checked(kid=kid, seq=p.seq, event_id=env.event_id,
                            reason="payload device id is not the topic's")  # fmt: skip
        try:
            masses = self._open_masses(env)
        except CommitmentError as exc:
            return _Checked(kid=kid, seq=p.seq, event_id=env.event_id, reason=f"mass: {exc}")
        return _Checked(kid=kid, seq=p.seq, event_id=env.event_id, env=env, masses=masses,
                        site_id=key.site_id)  # fmt: skip

    def _apply(
        self,
        device_id: str,
        item: _Checked,
        log: CompactRange,
        progress: dict[bytes, _KeyProgress],
        result: IntakeResult,
    ) -> None:
        """Inside the transaction: revocation (read now), dedupe, chain, append."""
        if not item.ackable or item.kid is None:
            self._reject(device_id, item.kid, None, None, item.reason, result)
            return
        prog = progress.setdefault(item.kid, _KeyProgress(item.kid))
        if item.env is None:
            self._reject(device_id, item.kid, item.seq, item.event_id, item.reason, result, prog)
            return
        key = self.store.key(item.kid)
        if key is None or key.revoked:
            self._reject(
                device_id, item.kid, item.seq, item.event_id, "device key revoked", result, prog
            )
            return
        self._place(device_id, item.site_id, item.env, log, prog, result, item.masses)

    def _place(
        self,
        device_id: str,
        site_id: str,
        env: Envelope,
        log: CompactRange,
        prog: _KeyProgress,
        result: IntakeResult,
        masses: dict[str, int] | None = None,
    ) -> None:
        # A loop, not recursion: one append can release up to MAX_WAITING_PER_KEY parked
        # successors (batches that overtook their predecessor, e.g. on another intake
        # worker), far more than Python's recursion limit.
        due: Envelope | None = env
        while due is not None:
            due = self._place_one(device_id, site_id, due, log, prog, result, masses)
            masses = None  # parked successors are opened when they become due

    def _place_one(
        self,
        device_id: str,
        site_id: str,
        env: Envelope,
        log: CompactRange,
        prog: _KeyProgress,
        result: IntakeResult,
        masses: dict[str, int] | None = None,
    ) -> Envelope | None:
        """Place one record; returns its parked successor when that is now due."""
        kid, seq = env.kid, env.payload.seq
        head_seq, head_id = self.store.head(kid)
        if seq <= head_seq:
            if self.store.event_id_at(kid, seq) == env.event_id:
                result.duplicates += 1
                return None
            self._reject(
                device_id, kid, seq, env.event_id,
                f"fork: a different event is already logged at seq {seq}", result, prog,
            )  # fmt: skip
            return None
        if seq > head_seq + 1:
            prog.gap = True
            if self.store.waiting_count(kid) < MAX_WAITING_PER_KEY:
                self.store.wait(kid, seq, env.cose)
                result.waiting += 1
            return None
        if env.payload.prev != head_id:
            self._reject(
                device_id, kid, seq, env.event_id,
                f"chain: prev does not match the event logged at seq {head_seq}", result, prog,
            )  # fmt: skip
            return None
        if masses is None:
            try:
                masses = self._open_masses(env)
            except CommitmentError as exc:
                self._reject(device_id, kid, seq, env.event_id, f"mass: {exc}", result, prog)
                return None
        self.store.append_event(
            log, event_id=env.event_id, kid=kid, seq=seq, device_id=device_id,
            type_=str(env.payload.type), device_time_ms=env.payload.time.ms,
            envelope=env.cose, masses=masses, leaf_hash=leaf_hash(env.event_id),
        )  # fmt: skip
        result.logged += 1
        # Successors that arrived early can follow now, in order.
        successor = self.store.take_waiting(kid, seq + 1)
        if successor is not None:
            result.waiting -= 1 if result.waiting else 0
            key = self.store.key(kid)
            assert key is not None
            try:
                nxt = verify_envelope(successor, key.public_key)
            except VerificationError:  # pragma: no cover - it verified when it was parked
                return None
            return nxt
        return None

    def _open_masses(self, env: Envelope) -> dict[str, int]:
        body = env.payload.body
        committed: dict[str, Any] = body.get("mass") or {}
        if not committed:
            return {}
        openings = open_sealed(
            body["sealed"], self.keys.public.sealing_key, self.keys.sealing_secret
        )
        if set(openings) != set(committed):
            raise CommitmentError(
                f"sealed openings for {sorted(openings)}, signed {sorted(committed)}"
            )
        points = {name: ED25519.point(encoded) for name, encoded in committed.items()}
        for name, opening in openings.items():
            if not verify_opening(points[name], opening):
                raise CommitmentError(f"{name} commitment does not open to the sealed value")
        if "net" in points and ED25519.sub(points["gross"], points["tare"]) != points["net"]:
            raise CommitmentError("net commitment is not gross - tare")
        return {name: o.value for name, o in openings.items()}

    # --- outcomes ------------------------------------------------------------------------
    def _reject(
        self,
        device_id: str,
        kid: bytes | None,
        seq: int | None,
        event_id: bytes | None,
        reason: str,
        result: IntakeResult,
        prog: _KeyProgress | None = None,
    ) -> None:
        self.store.record_rejection(device_id, kid, seq, event_id, reason)
        self._count(result, reason)
        if prog is not None and seq is not None and event_id is not None:
            prog.rejections.append(Rejection(seq, event_id, _ack_reason(reason)))

    def _count(self, result: IntakeResult, reason: str) -> None:
        result.rejected += 1
        result.reasons[reason.split(":")[0]] += 1

    def _ack(
        self, device_id: str, prog: _KeyProgress, log: CompactRange, correlation: bytes | None
    ) -> bytes:
        seq, event_id = self.store.head(prog.kid)
        ack = Ack(
            device_id=device_id,
            device_kid=prog.kid,
            seq=seq,
            event_id=event_id,
            log_size=log.size,
            root=log.root(),
            time_ms=time.time_ns() // 1_000_000,
            rejected=tuple(prog.rejections),
            resend_from=seq + 1 if prog.gap else None,
            correlation=correlation,
        )
        return sign_ack(self.keys, ack)
