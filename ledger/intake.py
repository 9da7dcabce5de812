"""Ledger intake: verify a device batch and log each record exactly once.

For one batch received on ``custody/v1/dev/{device}/events``, in ONE store
transaction, each envelope goes through, in order:

1. strict COSE decode; the ``kid`` must be an enrolled key of *this* device
   (the topic's device, itself bound to the broker certificate by the ACL);
   unknown, revoked and not-yet-valid keys are rejected (revocation and the
   validity start are read inside the transaction, at intake time);
2. full envelope verification (signature with the registered key, canonical
   payload, schema) and device-id agreement between payload and topic;
3. dedupe: an event id already logged is a harmless resend, skipped;
   a *different* event at a seq we already logged (or hold waiting) is a fork:
   rejected, counted, logged at ERROR and kept as a durable alarm in the
   store's ``forks`` table with both event ids and the forked envelope;
4. chain: seq must be head+1 and prev the head's event id; a record from
   further ahead waits (bounded) for its predecessor and the ack asks the
   device to resend from head+1;
5. the sealed mass openings are opened with the ledger key and every
   commitment must open (and net = gross - tare); the clear masses are stored;
6. append to the transparency log (RFC 9162 leaf = the event id) and advance
   the device's head; waiting successors are then taken in order.

Key rotation. A device key is enrolled by the registry authority (its entry,
logged with ``custody-ledger registry add``) or by one route only: a
``key_rotation`` event (body ``{new_key}``)
signed by an enrolled, unrevoked key of the same device and logged in its
chain. In the same transaction as that append the new key is enrolled for the
device and site (valid from the event's device time, or now if that is later)
and the old key is retired (revoked just after the event's device time: the
rotation is its last record). A rotation naming a key enrolled for another
device is rejected. Records signed by a key nobody enrolled stay rejected as
``unknown device key``. A resend of a record already logged under a key
revoked since is a harmless duplicate, not a rejection.

Stages 1, 2 and 5 need no lock: they run before the transaction, for a large
batch split over ``workers`` processes (this one and a ``ProcessPoolExecutor``
of spawned workers, which hold the sealing key from their start). The
transaction, sequencing and appends stay in this process, one batch at a time,
so exactly-once is untouched by the parallelism. The appends of a batch go to
the store in one ``append_events`` call. ``stage_seconds`` keeps this
process's time per stage (decode, verify, unseal, opening, store).

Then one ledger-signed ack per device key says: highest contiguous seq now
logged and its event id, the log size and root, rejections with reasons, and
a resend request when there is a gap. A rejected record is never logged; the
device keeps it (state ``rejected``) for operators to see.
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from custody import cbor, cose
from custody.commitment import Opening, open_sealed, verify_openings
from custody.envelope import event_id_of, peek, verify_envelope
from custody.errors import (
    CommitmentError,
    CustodyError,
    DecodeError,
    KeyError_,
    VerificationError,
)
from custody.event import MAX_SEQ, MAX_TIME_MS, EventType, next_seq
from custody.group import ED25519, Point
from custody.keys import LedgerKeyPair, check_ed25519_public, kid_for
from custody.merkle import CompactRange, leaf_hash
from custody.reasons import Reason, Refusal
from ledger.store import DeviceKeyRecord, NewEvent, Store
from sync.ack import MAX_REASON_CHARS, MAX_REJECTIONS, Ack, Rejection, sign_ack
from sync.batch import decode_batch

__all__ = [
    "MAX_RELEASED_PER_MESSAGE",
    "MAX_WAITING_PER_KEY",
    "PARALLEL_MIN_ENVELOPES",
    "Intake",
    "IntakeResult",
]

log = logging.getLogger("ledger.intake")

# Out-of-order records held per device key while their predecessor is missing.
# A gateway sends in seq order, so only a resend race or reordering across
# intake workers lands here; beyond this the record is dropped from the wait
# list (not rejected) and the resend request brings it back.
MAX_WAITING_PER_KEY = 10_000
# Parked records one message may release. Each release is a full signature check and
# append; they were charged to the sender's record budget when they arrived, and this
# bounds what one message can make the intake do on top. The rest stay parked and the
# sender's next message (its resend of the first missing record) releases more.
# An honest gateway parks at most its live lane (sync.uplink.MAX_LIVE_AHEAD) ahead
# of its backlog, which the backlog's last batch releases whole.
MAX_RELEASED_PER_MESSAGE = 2_000
# Below this many envelopes a batch is checked in this process: shipping a few
# envelopes to a worker and back costs more than it saves.
PARALLEL_MIN_ENVELOPES = 32


@dataclass
class IntakeResult:
    acks: list[bytes] = field(default_factory=list)  # signed acks, one per device key
    logged: int = 0
    duplicates: int = 0
    waiting: int = 0
    rejected: int = 0
    forks: int = 0
    envelopes: int = 0  # in the batch (1 for a message that is not a batch)
    released: int = 0  # parked records of earlier messages checked and placed by this one
    reasons: Counter[Reason] = field(default_factory=Counter)
    # The stored rejection texts ("mass: sealed opening does not open ..."), for the log line.
    details: Counter[str] = field(default_factory=Counter)


@dataclass
class _Checked:
    """One envelope after the lock-free checks: ready to place (``masses`` set), or a
    rejection (``refusal`` set). Plain values only: it crosses process boundaries."""

    kid: bytes | None = None
    seq: int | None = None
    event_id: bytes | None = None
    prev: bytes = b""
    type_: str = ""
    time_ms: int = 0
    envelope: bytes = b""
    masses: dict[str, int] | None = None
    refusal: Refusal | None = None
    new_key: bytes = b""  # a key_rotation's announced key
    site_id: str = ""


@dataclass(frozen=True)
class _Task:
    data: bytes
    public_key: bytes
    device_id: str
    kid: bytes  # the enrolled key the lenient read picked: the one verified against


@dataclass
class _KeyProgress:
    kid: bytes
    rejections: dict[tuple[int, bytes], Rejection] = field(default_factory=dict)
    gap: bool = False


@dataclass
class _Summary:
    """Unackable rejections of one reason in one batch: the first, and how many."""

    first: Refusal
    kid: bytes | None
    count: int = 0


def _ack_reason(refusal: Refusal) -> str:
    """Acks carry short printable-ASCII reasons (``sync.ack``); keep the gist."""
    text = "".join(c if " " <= c <= "~" else "?" for c in refusal.text)
    return text[:MAX_REASON_CHARS] or "rejected"


def _claimed_seq(payload: bytes) -> int | None:
    """The seq a record that failed verification claims (lenient read, for the report only).

    Only a seq the schema could hold (1..2^63-1, ``custody.event.MAX_SEQ``) is used: it
    goes into the store's 64-bit integer column and into the ack's unsigned field."""
    try:
        decoded = cbor.decode_lenient(payload)
    except DecodeError:
        return None
    seq = decoded.get("seq") if isinstance(decoded, dict) else None
    if isinstance(seq, int) and not isinstance(seq, bool) and 1 <= seq <= MAX_SEQ:
        return seq
    return None


def _parked_prev(envelope: bytes) -> bytes | None:
    """The ``prev`` of a parked record (verified strictly when it parked)."""
    try:
        payload = peek(envelope)
    except CustodyError:
        return None
    prev = payload.get("prev") if isinstance(payload, dict) else None
    return prev if isinstance(prev, bytes) else None


def _protected_bytes(data: bytes) -> bytes | None:
    """The protected-header bstr of a tagged COSE_Sign1 (RFC 9052 §4.2: tag 18, an array
    of four, the first a byte string), sliced without decoding the rest; None otherwise.
    RFC 8949 §3: 0xd2 is tag 18, 0x84 an array of 4, 0x40-0x57 a bstr of 0-23 bytes and
    0x58 one with a 1-byte length (a protected header is far below 256 bytes)."""
    if len(data) < 3 or data[0] != 0xD2 or data[1] != 0x84:
        return None
    head = data[2]
    if 0x40 <= head <= 0x57:
        start, size = 3, head - 0x40
    elif head == 0x58 and len(data) > 3:
        start, size = 4, data[3]
    else:
        return None
    return data[start : start + size] if start + size <= len(data) else None


def _lenient_kid(data: bytes, seen: dict[bytes, bytes | None] | None = None) -> bytes | None:
    """The kid a COSE_Sign1 names, read leniently: only to pick the key. The strict
    decode follows in ``verify_envelope``; decoding strictly twice was ~8 % of the intake.

    The protected header is sliced, not decoded with the whole envelope, and ``seen``
    remembers each distinct header of a batch: one key's envelopes share it, so a batch
    of a thousand costs a thousand slices and one decode."""
    # Outside bytes are read with custody.cbor's lenient decoder (screened: bounded, and
    # never cbor2's failure paths); any malformed input is the strict path's to name.
    protected = _protected_bytes(data)
    if protected is None:
        try:
            item = cbor.decode_lenient(data, allow_tags=(cose.COSE_SIGN1_TAG,))
        except DecodeError:
            return None
        value = item.value if isinstance(item, cbor.Tag) else None
        protected = value[0] if isinstance(value, list) and value else None
    if not isinstance(protected, bytes):
        return None
    if seen is not None and protected in seen:
        return seen[protected]
    try:
        header = cbor.decode_lenient(protected)
    except DecodeError:
        header = None
    kid = header.get(cose.HDR_KID) if isinstance(header, dict) else None
    found = kid if isinstance(kid, bytes) else None
    if seen is not None and len(seen) < _SEEN_HEADERS_MAX:
        seen[protected] = found
    return found


# Distinct protected headers remembered per batch (a batch of one device has one or two).
_SEEN_HEADERS_MAX = 64


# --- the lock-free checks (this process or a pool worker) ---------------------------------------
def check_envelopes(
    tasks: Sequence[_Task], seal_public: bytes, seal_secret: bytes
) -> tuple[list[_Checked], dict[str, float]]:
    """Signature, device id, unseal and opening checks of envelopes whose key is known.

    Returns one ``_Checked`` per task, in order, and the seconds spent per stage.
    """
    clock = time.perf_counter
    times: defaultdict[str, float] = defaultdict(float)
    out: list[_Checked] = []
    # (result index, field, commitment bytes, opening) of every gross/tare/bag mass.
    pairs: list[tuple[int, str, bytes, Opening]] = []
    nets: list[tuple[int, dict[str, bytes], dict[str, Opening]]] = []
    for task in tasks:
        t0 = clock()
        item, committed, sealed = _verify(task)
        t1 = clock()
        times["verify"] += t1 - t0
        out.append(item)
        if item.refusal or not committed:
            continue
        try:
            openings = open_sealed(sealed, seal_public, seal_secret)
        except CommitmentError as exc:
            _fail(item, Reason.MASS, str(exc))
            continue
        finally:
            times["unseal"] += clock() - t1
        if set(openings) != set(committed):
            _fail(
                item,
                Reason.MASS,
                f"sealed openings for {sorted(openings)}, signed {sorted(committed)}",
            )
            continue
        index = len(out) - 1
        for name, opening in openings.items():
            if name != "net":
                pairs.append((index, name, committed[name], opening))
        if "net" in committed:
            nets.append((index, committed, openings))
        item.masses = {name: o.value for name, o in openings.items()}
    t2 = clock()
    failed = verify_openings([(c, o) for _, _, c, o in pairs])
    for k in failed:
        index, name, _, _ = pairs[k]
        if not out[index].refusal:
            _fail(out[index], Reason.MASS, f"{name} commitment does not open to the sealed value")
    for index, committed, openings in nets:
        if not out[index].refusal:
            problem = _net_problem(committed, openings)
            if problem:
                _fail(out[index], Reason.MASS, problem)
    times["opening"] += clock() - t2
    return out, dict(times)


def _verify(task: _Task) -> tuple[_Checked, dict[str, bytes], bytes]:
    """Decode, signature, schema, device id; also the signed commitments and sealed box."""
    try:
        env = verify_envelope(task.data, task.public_key)
    except VerificationError as exc:
        try:
            msg = cose.decode_sign1(task.data)
        except DecodeError as undecodable:
            return _Checked(refusal=Refusal(Reason.UNDECODABLE, str(undecodable))), {}, b""
        # Only this device can publish on its topic (broker ACL), so name the
        # seq it claims: the device then marks that record rejected, not resent.
        failed = _Checked(
            kid=task.kid, seq=_claimed_seq(msg.payload),
            event_id=event_id_of(task.data), refusal=Refusal(Reason.SIGNATURE, str(exc)),
        )  # fmt: skip
        return failed, {}, b""
    p = env.payload
    item = _Checked(
        kid=env.kid, seq=p.seq, event_id=env.event_id, prev=p.prev, type_=str(p.type),
        time_ms=p.time.ms, envelope=env.cose, masses={}, site_id=p.site_id,
    )  # fmt: skip
    if p.type == EventType.KEY_ROTATION:
        item.new_key = p.body["new_key"]  # 32 bytes (the body schema)
    if p.device_id != task.device_id:
        _fail(item, Reason.DEVICE_MISMATCH)
        return item, {}, b""
    # The schema (custody.event) guarantees 32-byte commitments, a sealed box with
    # them, and net only beside gross and tare.
    return item, p.body.get("mass") or {}, p.body.get("sealed", b"")


def _fail(item: _Checked, reason: Reason, detail: str = "") -> None:
    item.refusal = Refusal(reason, detail)
    item.masses = None


def _net_problem(committed: dict[str, bytes], openings: dict[str, Opening]) -> str:
    """The net commitment, given that gross and tare opened (checked before this).

    C_net must be C_gross - C_tare, and then it opens to (v_g - v_t, r_g - r_t):
    the sealed net opening must be exactly that, which costs one point
    subtraction and one scalar subtraction instead of a second commitment.
    (A different (v, r) opening the same point would need log_G(H).)
    """
    if "gross" not in committed or "tare" not in committed:
        return "net commitment without gross and tare"
    # Gross and tare equal points libsodium computed, so they are valid subgroup points.
    difference = ED25519.sub(Point(committed["gross"]), Point(committed["tare"]))
    if difference is None or difference.encoded != committed["net"]:
        return "net commitment is not gross - tare"
    net, g, t = openings["net"], openings["gross"], openings["tare"]
    if net.value != g.value - t.value or net.blinding != ED25519.scalar_sub(g.blinding, t.blinding):
        return "net commitment does not open to the sealed value"
    return ""


# Pool workers: the sealing key pair, set once by the initializer.
_WORKER_KEYS: tuple[bytes, bytes] | None = None


def _init_worker(seal_public: bytes, seal_secret: bytes) -> None:
    global _WORKER_KEYS
    ED25519.self_test()
    ED25519.mul_h_small(1)  # build the H table before the first batch
    _WORKER_KEYS = (seal_public, seal_secret)


def _worker_check(tasks: Sequence[_Task]) -> tuple[list[_Checked], dict[str, float]]:
    assert _WORKER_KEYS is not None, "pool worker without keys"
    return check_envelopes(tasks, *_WORKER_KEYS)


def _worker_ready() -> bool:
    return _WORKER_KEYS is not None


# --- the transaction's view -------------------------------------------------------------------
class _Tx:
    """Chain heads, keys and appends of one transaction, so that a batch costs one
    read per key and one insert statement per table, not several per event."""

    def __init__(self, store: Store, log: CompactRange) -> None:
        self.store = store
        self.log = log
        self.heads: dict[bytes, tuple[int, bytes]] = {}
        self.keys: dict[bytes, DeviceKeyRecord | None] = {}
        self.waiting: dict[bytes, int] = {}  # records parked per key (read once, then kept)
        self.parked_here: set[tuple[bytes, int]] = set()  # parked by this transaction
        self.pending: list[NewEvent] = []
        self.pending_ids: dict[tuple[bytes, int], bytes] = {}

    def key(self, kid: bytes) -> DeviceKeyRecord | None:
        if kid not in self.keys:
            self.keys[kid] = self.store.key(kid)
        return self.keys[kid]

    def head(self, kid: bytes) -> tuple[int, bytes]:
        if kid not in self.heads:
            self.heads[kid] = self.store.head(kid)
        return self.heads[kid]

    def event_id_at(self, kid: bytes, seq: int) -> bytes | None:
        found = self.pending_ids.get((kid, seq))
        return found if found is not None else self.store.event_id_at(kid, seq)

    def append(self, event: NewEvent) -> None:
        self.pending.append(event)
        self.pending_ids[(event.kid, event.seq)] = event.event_id
        self.heads[event.kid] = (event.seq, event.event_id)

    def waiting_count(self, kid: bytes) -> int:
        # Counted once per transaction: a COUNT per parked record would cost a flooding
        # device's batch time proportional to its (bounded but long) wait list.
        if kid not in self.waiting:
            self.waiting[kid] = self.store.waiting_count(kid)
        return self.waiting[kid]

    def flush(self) -> None:
        self.store.append_events(self.log, self.pending)
        self.pending = []
        self.pending_ids = {}


class Intake:
    """Verifies and logs device batches into a ``LedgerStore``.

    ``workers``: processes that share the lock-free checks of a large batch,
    this one included (1: no pool). Call ``close`` to stop the pool.
    """

    def __init__(
        self,
        store: Store,
        keys: LedgerKeyPair,
        *,
        workers: int = 1,
        parallel_min: int = PARALLEL_MIN_ENVELOPES,
        clock_ms: Callable[[], int] | None = None,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.store = store
        self.keys = keys
        self.counters: Counter[str] = Counter()
        self.stage_seconds: defaultdict[str, float] = defaultdict(float)
        self.workers = workers
        self.parallel_min = parallel_min
        self._clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        # Derived once: LedgerKeyPair.public recomputes both public keys per call.
        self._seal_public = keys.public.sealing_key
        self._pool: ProcessPoolExecutor | None = None
        ED25519.self_test()

    # --- lifecycle -----------------------------------------------------------------------
    def warm_up(self) -> None:
        """Build the H table and start the pool's workers now rather than on the first batch."""
        ED25519.mul_h_small(1)
        pool = self._pool_or_none()
        if pool is not None:
            for f in [pool.submit(_worker_ready) for _ in range(self.workers - 1)]:
                f.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def _pool_or_none(self) -> ProcessPoolExecutor | None:
        if self.workers > 1 and self._pool is None:
            # spawn, not fork: the service has MQTT threads, and a forked child of a
            # threaded process may inherit a held lock. The sealing secret goes to the
            # workers once, through the pool's local pipe.
            self._pool = ProcessPoolExecutor(
                self.workers - 1,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(self._seal_public, self.keys.sealing_secret),
            )
        return self._pool

    # --- one batch -----------------------------------------------------------------------
    def ingest(
        self, device_id: str, payload: bytes, *, correlation: bytes | None = None
    ) -> IntakeResult:
        """Process one batch payload from ``device_id``'s events topic."""
        result = IntakeResult()
        clock = time.perf_counter
        t0 = clock()
        try:
            batch = decode_batch(payload, device_id=device_id)
        except CustodyError as exc:
            result.envelopes = 1
            refusal = Refusal(Reason.BATCH, str(exc))
            self._count(result, refusal.reason, text=refusal.text)
            with self.store.transaction():
                self.store.record_rejection(device_id, None, None, None, refusal.text)
            self._update_counters(result)
            return result
        result.envelopes = len(batch.envelopes)
        # Keys are read here only to pick the public key; revocation and the validity
        # start are re-read inside the transaction.
        keys: dict[bytes, DeviceKeyRecord | None] = {}
        checked: list[_Checked | None] = []
        tasks: list[_Task] = []
        slots: list[int] = []
        headers: dict[bytes, bytes | None] = {}
        for data in batch.envelopes:
            kid = _lenient_kid(data, headers)
            if kid is not None and kid not in keys:
                keys[kid] = self.store.key(kid)
            key = None if kid is None else keys[kid]
            if kid is None:
                checked.append(self._unkeyed(device_id, data))
                continue
            if key is None or key.device_id != device_id:
                # Nobody we could ack for signed it: the reason from the key alone. A
                # strict decode of each would cost a flood of them three times as much.
                reason = Reason.UNKNOWN_KEY if key is None else Reason.FOREIGN_KEY
                checked.append(_Checked(kid=kid, refusal=Refusal(reason)))
                continue
            slots.append(len(checked))
            checked.append(None)
            tasks.append(_Task(data, key.public_key, device_id, kid))
        self.stage_seconds["decode"] += clock() - t0
        # The expensive part (signatures, opening sealed masses) runs before the
        # transaction, so the log's sequencer lock is held only for the cheap
        # chain checks and appends: several intake workers then overlap.
        for slot, item in zip(slots, self._check(tasks), strict=True):
            checked[slot] = item
        t1 = clock()
        progress: dict[bytes, _KeyProgress] = {}
        unackable: dict[Reason, _Summary] = {}
        with self.store.transaction():
            tx = _Tx(self.store, self.store.log_range())
            now_ms = self._clock_ms()
            for one in checked:
                assert one is not None
                self._apply(device_id, one, tx, progress, result, now_ms, unackable)
            for reason, summary in unackable.items():
                # Anyone holding a broker certificate can make these up by the thousand:
                # one row per batch and reason, with the count, keeps the store bounded.
                self.store.record_rejection(
                    device_id, summary.kid, None, None, summary.first.text, count=summary.count
                )
                self._count(result, reason, summary.count, text=summary.first.text)
            tx.flush()
            self.store.save_log(tx.log)
            acks = [self._ack(device_id, p, tx, correlation) for p in progress.values()]
        self.stage_seconds["store"] += clock() - t1
        result.acks = acks
        self._update_counters(result)
        return result

    def _update_counters(self, result: IntakeResult) -> None:
        self.counters.update(
            logged=result.logged, duplicates=result.duplicates, rejected=result.rejected,
            forks=result.forks,
        )  # fmt: skip
        self.counters.update({f"rejected: {r.value}": n for r, n in result.reasons.items()})

    def _check(self, tasks: list[_Task]) -> list[_Checked]:
        pool = self._pool_or_none() if len(tasks) >= self.parallel_min else None
        if pool is None:
            return self._check_here(tasks)
        n = self.workers
        bounds = [len(tasks) * i // n for i in range(n + 1)]
        chunks = [tasks[bounds[i] : bounds[i + 1]] for i in range(n)]
        try:
            futures: list[Future[tuple[list[_Checked], dict[str, float]]]] = [
                pool.submit(_worker_check, chunk) for chunk in chunks[1:]
            ]
        except BrokenProcessPool:
            return self._pool_broken(tasks)
        out = self._check_here(chunks[0])
        for f in futures:
            try:
                items, _times = f.result()
            except BrokenProcessPool:
                return self._pool_broken(tasks)
            out.extend(items)
        return out

    def _pool_broken(self, tasks: list[_Task]) -> list[_Checked]:
        # A worker died (OOM killer, a signal): check here, start a new pool next time.
        log.warning("intake check worker died; checking this batch in process")
        self.counters["pool_restarts"] += 1
        broken, self._pool = self._pool, None
        if broken is not None:
            broken.shutdown(wait=False, cancel_futures=True)
        return self._check_here(tasks)

    def _check_here(self, tasks: Sequence[_Task]) -> list[_Checked]:
        if not tasks:
            return []
        items, times = check_envelopes(tasks, self._seal_public, self.keys.sealing_secret)
        for stage, seconds in times.items():
            self.stage_seconds[stage] += seconds
        return items

    def _unkeyed(self, device_id: str, data: bytes) -> _Checked:
        """An envelope whose kid the lenient read did not find: the reason, strictly."""
        try:
            msg = cose.decode_sign1(data)
        except DecodeError as exc:
            return _Checked(refusal=Refusal(Reason.UNDECODABLE, str(exc)))
        kid = msg.protected.get(cose.HDR_KID)
        if not isinstance(kid, bytes):
            return _Checked(refusal=Refusal(Reason.NO_KEY_ID))
        key = self.store.key(kid)
        if (
            key is not None and key.device_id == device_id
        ):  # pragma: no cover - lenient kid differed
            return check_envelopes(
                [_Task(data, key.public_key, device_id, kid)], self._seal_public,
                self.keys.sealing_secret,
            )[0][0]  # fmt: skip
        # No ack: we cannot speak for a key that is not this device's.
        reason = Reason.UNKNOWN_KEY if key is None else Reason.FOREIGN_KEY
        return _Checked(kid=kid, refusal=Refusal(reason))

    # --- inside the transaction -------------------------------------------------------------
    def _apply(
        self,
        device_id: str,
        item: _Checked,
        tx: _Tx,
        progress: dict[bytes, _KeyProgress],
        result: IntakeResult,
        now_ms: int,
        unackable: dict[Reason, _Summary],
    ) -> None:
        """Revocation, validity start and site (read now), dedupe, chain, append."""
        refusal = item.refusal
        if item.kid is None or (refusal is not None and not refusal.reason.ackable):
            assert refusal is not None
            summary = unackable.setdefault(refusal.reason, _Summary(refusal, item.kid))
            summary.count += 1
            return
        prog = progress.setdefault(item.kid, _KeyProgress(item.kid))
        if refusal is not None:
            self._reject(device_id, item.kid, item.seq, item.event_id, refusal, result, prog)
            return
        key = tx.key(item.kid)
        seq = item.seq
        assert seq is not None
        if (
            (key is None or key.revoked)
            and seq <= tx.head(item.kid)[0]
            and tx.event_id_at(item.kid, seq) == item.event_id
        ):
            result.duplicates += 1  # logged before the revocation: a resend
            return
        refusal = _key_refusal(key, item, now_ms)
        if refusal is not None:
            self._reject(device_id, item.kid, seq, item.event_id, refusal, result, prog)
            return
        # Parked records that are due go first: they arrived before this one, and a
        # record resent while its copy waits must meet that copy as logged (duplicate
        # or fork), not leave it parked behind the head for ever.
        due = self._take_due(device_id, item.kid, tx, prog, result, now_ms)
        while due is not None:
            due = self._place_one(device_id, due, tx, prog, result, now_ms)
        # A loop, not recursion: one append can release up to MAX_RELEASED_PER_MESSAGE
        # parked successors, more than Python's recursion limit.
        due = item
        while due is not None:
            due = self._place_one(device_id, due, tx, prog, result, now_ms)

    def _place_one(
        self,
        device_id: str,
        item: _Checked,
        tx: _Tx,
        prog: _KeyProgress,
        result: IntakeResult,
        now_ms: int,
    ) -> _Checked | None:
        """Place one checked record; returns its parked successor when that is now due."""
        kid, seq, event_id = item.kid, item.seq, item.event_id
        assert kid is not None
        assert seq is not None
        assert event_id is not None
        assert item.masses is not None
        head_seq, head_id = tx.head(kid)
        if seq <= head_seq:
            kept = tx.event_id_at(kid, seq)
            if kept == event_id:
                result.duplicates += 1
                return None
            self._fork(device_id, item, kept or bytes(32), "logged", result, prog)
            return None
        padded_next = seq == next_seq(head_seq, EventType(item.type_)) and item.prev == head_id
        if seq > head_seq + 1 and not padded_next:
            # A padded record (docs/protocol.md §4) at the next stride waits too when its
            # prev is a record still missing between the head and it.
            prog.gap = True
            parked = self.store.waiting_envelope(kid, seq)
            if parked is not None and parked != item.envelope:
                self._fork(device_id, item, event_id_of(parked), "waiting", result, prog)
            elif parked is not None:
                result.waiting += 1  # a resend of the record already waiting there
            elif tx.waiting_count(kid) < MAX_WAITING_PER_KEY:
                self.store.wait(kid, seq, item.envelope)
                tx.waiting[kid] += 1
                tx.parked_here.add((kid, seq))
                result.waiting += 1
            return None
        if item.prev != head_id:
            refusal = Refusal(
                Reason.CHAIN, f"prev does not match the event logged at seq {head_seq}"
            )
            self._reject(device_id, kid, seq, event_id, refusal, result, prog)
            return None
        enrol_new = False
        if item.new_key:
            problem, enrol_new = self._rotation_problem(device_id, item.new_key, tx)
            if problem:
                self._reject(device_id, kid, seq, event_id, Refusal(Reason.ROTATION, problem),
                             result, prog)  # fmt: skip
                return None
        tx.append(
            NewEvent(event_id, kid, seq, device_id, item.type_, item.time_ms, item.envelope,
                     item.masses, leaf_hash(event_id))
        )  # fmt: skip
        result.logged += 1
        self._drop_parked_copy(device_id, kid, seq, event_id, tx, result)
        if item.new_key:
            self._rotate(device_id, item, enrol_new, tx, result, prog)
            return None  # the rotation is the old key's last record: nothing follows it
        # Successors that arrived early can follow now, in order.
        return self._take_due(device_id, kid, tx, prog, result, now_ms)

    def _drop_parked_copy(
        self, device_id: str, kid: bytes, seq: int, logged: bytes, tx: _Tx, result: IntakeResult
    ) -> None:
        """A copy of the record just logged may still be parked at its seq (a message that
        released its quota placed a resend of it directly): remove it, or it would hold a
        place in the bounded wait list for ever. A different record parked there is the
        other branch of a fork."""
        if not tx.waiting_count(kid):
            return
        parked = self.store.take_waiting(kid, seq)
        if parked is None:
            return
        tx.waiting[kid] -= 1
        if (kid, seq) in tx.parked_here:
            result.waiting -= 1
        other = event_id_of(parked)
        if other != logged:
            new = self.store.record_fork(device_id, kid, seq, logged, other, parked)
            result.forks += 1
            log.error(
                "fork: device %s key %s seq %d: logged %s, parked %s (%s)", device_id, kid.hex(),
                seq, logged.hex(), other.hex(), "new alarm" if new else "seen before",
                extra={"alarm": "fork", "device_id": device_id, "kid": kid.hex(), "seq": seq,
                       "kept_event_id": logged.hex(), "forked_event_id": other.hex(),
                       "new_alarm": new},
            )  # fmt: skip

    def _take_due(
        self,
        device_id: str,
        kid: bytes,
        tx: _Tx,
        prog: _KeyProgress,
        result: IntakeResult,
        now_ms: int,
    ) -> _Checked | None:
        """The parked record that follows the key's head, checked again, if any is due
        and this message may still release one."""
        if not tx.waiting_count(kid) or result.released >= MAX_RELEASED_PER_MESSAGE:
            return None
        head_seq, head_id = tx.head(kid)
        seq = head_seq + 1
        parked = self.store.take_waiting(kid, seq)
        if parked is None:
            # Or a padded record at the next stride, if it follows the head itself (its
            # type was checked when it parked; it is checked again below).
            seq = next_seq(head_seq, EventType.CHECKPOINT)
            waiting = self.store.waiting_envelope(kid, seq) if seq != head_seq + 1 else None
            if waiting is None or _parked_prev(waiting) != head_id:
                return None
            parked = self.store.take_waiting(kid, seq)
            if parked is None:
                return None
        tx.waiting[kid] -= 1
        if (kid, seq) in tx.parked_here:
            result.waiting -= 1  # parked and released within this message
        else:
            result.released += 1
        key = tx.key(kid)
        if key is None:
            return None  # unreachable: a parked record's key was enrolled when it parked
        (nxt,), times = check_envelopes(
            [_Task(parked, key.public_key, device_id, kid)], self._seal_public,
            self.keys.sealing_secret,
        )  # fmt: skip
        for stage, seconds in times.items():
            self.stage_seconds[stage] += seconds
        # A parked record was checked against its key when it arrived; the key may have
        # been revoked or retired since, so its validity is judged again now, at release.
        late = nxt.refusal or _key_refusal(key, nxt, now_ms)
        if late is not None:
            self._reject(device_id, kid, nxt.seq, nxt.event_id or event_id_of(parked), late,
                         result, prog)  # fmt: skip
            return None
        return nxt

    def _rotation_problem(self, device_id: str, new_key: bytes, tx: _Tx) -> tuple[str, bool]:
        """Why a key_rotation cannot be logged (empty when it can), and whether its key is new."""
        try:
            check_ed25519_public(new_key, "new_key")
        except KeyError_ as exc:
            return str(exc), False
        existing = tx.key(kid_for(new_key))
        if existing is None:
            return "", True
        if existing.device_id != device_id:
            return "the new key is enrolled for another device", False
        if existing.revoked:
            return "the new key is revoked", False
        return "", False  # already enrolled for this device (by an operator): just retire

    def _rotate(
        self,
        device_id: str,
        item: _Checked,
        enrol_new: bool,
        tx: _Tx,
        result: IntakeResult,
        prog: _KeyProgress,
    ) -> None:
        assert item.kid is not None
        assert item.seq is not None
        old = tx.key(item.kid)
        assert old is not None  # checked valid in _apply
        new_kid = kid_for(item.new_key)
        now_ms = self._clock_ms()
        # The new key stays at the old key's enrolled site whatever the payload says
        # (equal anyway: _key_refusal checked the site); moving a device between
        # sites is a registry action, never something the device can declare.
        self.store.rotate_key(
            device_id, old.site_id, item.kid, new_kid, item.new_key,
            valid_from_ms=min(item.time_ms, now_ms),
            retired_ms=min(item.time_ms + 1, MAX_TIME_MS), enrol_new=enrol_new,
            last_seq=item.seq,
        )  # fmt: skip
        tx.keys.pop(item.kid, None)  # re-read: now retired
        tx.keys.pop(new_kid, None)
        # Records of the old key parked beyond the rotation can never be logged: the
        # rotation is that key's last record. Refuse them now, with the reason.
        for seq, envelope in self.store.take_all_waiting(item.kid):
            refusal = Refusal(Reason.REVOKED, f"retired by its key_rotation at seq {item.seq}")
            self._reject(device_id, item.kid, seq, event_id_of(envelope), refusal, result, prog)
        tx.waiting[item.kid] = 0
        log.info(
            "key rotation: device %s key %s -> %s at seq %d", device_id, item.kid.hex(),
            new_kid.hex(), item.seq,
            extra={"device_id": device_id, "old_kid": item.kid.hex(), "new_kid": new_kid.hex()},
        )  # fmt: skip

    # --- outcomes ------------------------------------------------------------------------
    def _fork(
        self,
        device_id: str,
        item: _Checked,
        kept: bytes,
        where: str,
        result: IntakeResult,
        prog: _KeyProgress,
    ) -> None:
        """Two different signed events of one key at one seq: the key is in two places."""
        kid, seq, event_id = item.kid, item.seq, item.event_id
        assert kid is not None
        assert seq is not None
        assert event_id is not None
        new = self.store.record_fork(device_id, kid, seq, kept, event_id, item.envelope)
        result.forks += 1
        log.error(
            "fork: device %s key %s seq %d: %s event %s, received %s (%s)",
            device_id, kid.hex(), seq, where, kept.hex(), event_id.hex(),
            "new alarm" if new else "seen before",
            extra={"alarm": "fork", "device_id": device_id, "kid": kid.hex(), "seq": seq,
                   "kept_event_id": kept.hex(), "forked_event_id": event_id.hex(),
                   "new_alarm": new},
        )  # fmt: skip
        refusal = Refusal(Reason.FORK, f"a different event is already {where} at seq {seq}")
        self._reject(device_id, kid, seq, event_id, refusal, result, prog)

    def _reject(
        self,
        device_id: str,
        kid: bytes | None,
        seq: int | None,
        event_id: bytes | None,
        refusal: Refusal,
        result: IntakeResult,
        prog: _KeyProgress,
    ) -> None:
        if seq is not None and event_id is not None:
            if (seq, event_id) in prog.rejections:
                return  # the same envelope twice in one batch is one rejection
            prog.rejections[(seq, event_id)] = Rejection(seq, event_id, _ack_reason(refusal))
        self.store.record_rejection(device_id, kid, seq, event_id, refusal.text)
        self._count(result, refusal.reason, text=refusal.text)

    def _count(self, result: IntakeResult, reason: Reason, n: int = 1, text: str = "") -> None:
        result.rejected += n
        result.reasons[reason] += n
        result.details[text or str(reason)] += n

    def _ack(self, device_id: str, prog: _KeyProgress, tx: _Tx, correlation: bytes | None) -> bytes:
        seq, event_id = tx.head(prog.kid)
        # One encoding per ack (sync.ack): sorted by (seq, id), each once, and at most
        # MAX_REJECTIONS of them. Those left out stay unacked on the device, which sends
        # them again and hears the reason then.
        rejected = tuple(prog.rejections[k] for k in sorted(prog.rejections)[:MAX_REJECTIONS])
        ack = Ack(
            device_id=device_id,
            device_kid=prog.kid,
            seq=seq,
            event_id=event_id,
            log_size=tx.log.size,
            root=tx.log.root(),
            time_ms=time.time_ns() // 1_000_000,
            rejected=rejected,
            resend_from=seq + 1 if prog.gap and seq < MAX_SEQ else None,
            correlation=correlation,
        )
        return sign_ack(self.keys, ack)


def _key_refusal(key: DeviceKeyRecord | None, item: _Checked, now_ms: int) -> Refusal | None:
    """Whether ``key`` may log ``item`` now: unrevoked, valid from before now, and the
    record names the site the key was enrolled at (a device cannot credit its output to
    another site)."""
    if key is None:
        return Refusal(Reason.REVOKED)
    if key.revoked:
        # A retirement by the registry authority fixes where the chain ends: records up to
        # there still count (they arrive late from a device that lost its link), later ones
        # never. Revoked by the ledger alone (no last seq yet): nothing more is logged.
        if key.last_seq is None:
            return Refusal(Reason.REVOKED)
        if item.seq is None or item.seq > key.last_seq:
            return Refusal(Reason.REVOKED, f"after its key's last seq {key.last_seq}")
    if not key.valid_yet(now_ms):
        return Refusal(Reason.NOT_YET_VALID)
    if item.site_id != key.site_id:
        return Refusal(
            Reason.SITE_MISMATCH,
            f"the record names site {item.site_id}, its key is enrolled at {key.site_id}",
        )
    return None
