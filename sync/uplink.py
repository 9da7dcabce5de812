"""Store-and-forward uplink: drain the outbox to the broker, release on ledger acks.

Theory of operation (one loop in the caller's thread; paho runs its own
network thread and only enqueues events, see ``sync.mqtt``):

    connected?  ──no──▶ wait (paho reconnects with backoff)
        │yes
    publish batches of the oldest pending records while fewer than
    ``window`` batches await their PUBACK; each published batch is marked
    ``sent`` (handed to MQTT; a PUBACK changes nothing else)
        │
    ledger ack arrives ─▶ verify with the PINNED ledger key, for this device
    and key ─▶ release the prefix it covers (event id checked against ours),
    mark rejections (kept), requeue from ``resend_from`` on a gap
        │
    no ack progress for ``ack_timeout_s`` while records are sent ─▶ back
    to pending (resent)
    reconnect ─▶ every sent-but-unacked record back to pending
    PUBACK refused ─▶ that batch back to pending; pause publishing (see
    "Refused publishes")

Live records before backlog. A gateway back from weeks offline has a long
backlog, and a record captured now (a truck on the weighbridge) should reach
the ledger in seconds, not after the backlog. At every connect the uplink
notes ``live_from`` = the outbox head + 1: records from there on are *live*,
everything before is *backlog* (records captured during an outage become
backlog at the next connect). While backlog is pending, each publish round
first sends up to ``live_batch_events`` live records as their own batch, then
backlog batches oldest first. The ledger cannot log a live record before its
predecessors (the chain), so it parks it in its wait list (``ledger.intake``,
at most 10,000 per key) and logs it the moment the backlog reaches it; acks
stay prefix-based, so nothing is released early. Three rules keep this sound:

- at most ``max_live_ahead`` live records are sent-but-unacked at a time
  (default 2,000, a fifth of the ledger's wait list), so the lane can never
  push parked records out of the ledger's bounded wait list;
- the ack timeout counts from the last ack *progress*, not from each
  record's send time: parked live records legitimately wait for as long as
  the backlog takes, and a per-record timeout would resend all of them every
  ``ack_timeout_s`` (a storm on the very links that have backlogs). While
  acks advance nothing is resent; when they stop for ``ack_timeout_s``
  everything sent goes back to pending;
- an ack's ``resend_from`` (a gap at the ledger) requeues only when the
  record at the gap went out in a batch published no later than the one the
  ack answers (by correlation number; one MQTT session delivers in order), and
  then only the backlog from the gap: live batches get ``resend_from`` in
  every ack while the backlog drains, and must not trigger resends.

Refused publishes. The broker answers a batch it will not take with a failed
PUBACK. Mosquitto 2.0.11 refuses a device's publishes beyond its per-device
publish budget with 0x87 "Not authorized" (deploy/mosquitto/custody_identity.c;
2.0 has no other code for a plugin's refusal), and refuses messages beyond a
client's incoming quota with 0x97 "Quota exceeded". Neither is final: the
client id is the certificate's CN, so the ACL allows our own events topic,
and a refused publish was not delivered and is simply sent again. The
batch's records go back to pending and nothing is published for
``REFUSED_PAUSE_S``, doubling while refusals continue up to the ack timeout
(a paid link must not resend in a loop) and reset by the next accepted batch.
Any other failure code (0x95 "Packet too large", 0x90 "Topic Name invalid",
...) cannot change on a retry and stops the uplink, as before.

The outbox is behind the ``DeliveryStore`` protocol so that ``sync`` never
imports the agent (ARCHITECTURE.md "Layout").
"""

from __future__ import annotations

import itertools
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import cbor2

from custody.errors import CustodyError, SyncError
from custody.keys import LedgerPublicKeys
from sync.ack import verify_ack
from sync.batch import encode_batch
from sync.mqtt import BrokerConfig, LinkEvent, LinkEventKind, MqttLink
from sync.pacing import BatchSizer, TokenBucket
from sync.topics import acks_topic, events_topic, status_topic

__all__ = [
    "LIVE_BATCH_EVENTS",
    "MAX_LIVE_AHEAD",
    "REFUSED_PAUSE_S",
    "RETRYABLE_PUBACKS",
    "DeliveryStore",
    "Outgoing",
    "Uplink",
    "UplinkStats",
]

LIVE_BATCH_EVENTS = 50  # live records per live batch while a backlog drains
# Live records sent ahead of the backlog and not yet acked: well below the
# ledger's wait list of 10,000 per key (ledger.intake.MAX_WAITING_PER_KEY).
MAX_LIVE_AHEAD = 2_000
# PUBACK reason codes (MQTT 5.0 §3.4.2.1) that mean "not delivered, send again later":
# 0x87 Not authorized (Mosquitto 2.0's per-device publish budget) and 0x97 Quota exceeded.
RETRYABLE_PUBACKS = frozenset({0x87, 0x97})
# First pause after a refused publish: the broker's budget refills in well under a second.
REFUSED_PAUSE_S = 1.0


@dataclass(frozen=True, slots=True)
class Outgoing:
    seq: int
    event_id: bytes
    envelope: bytes


class DeliveryStore(Protocol):
    """What the uplink needs from the outbox (``agent`` provides it)."""

    def next_to_send(
        self, max_events: int, max_bytes: int, *, from_seq: int = 1, before_seq: int | None = None
    ) -> list[Outgoing]: ...
    def mark_sent(self, seqs: list[int]) -> None: ...
    def apply_ack(
        self, seq: int, event_id: bytes, rejected: list[tuple[int, bytes, str]]
    ) -> tuple[int, int]: ...
    def requeue_sent(
        self, sent_before_ms: int | None, *, from_seq: int = 1, before_seq: int | None = None
    ) -> int: ...
    def unacked(self) -> int: ...
    def head_seq(self) -> int: ...


@dataclass
class UplinkStats:
    batches_sent: int = 0
    events_sent: int = 0
    payload_bytes: int = 0  # batch payloads published (MQTT overhead not included)
    acks: int = 0
    acked: int = 0
    rejected: int = 0
    bad_acks: int = 0
    refused_publishes: int = 0  # failed PUBACKs that stopped the uplink (not retryable)
    retried_publishes: int = 0  # failed PUBACKs whose batch went back to pending
    requeued: int = 0
    live_batches: int = 0  # batches of live records sent ahead of a backlog
    reconnects: int = 0
    last_ack_ms: int | None = None
    bad_ack_reasons: list[str] = field(default_factory=list)


class Uplink:
    def __init__(
        self,
        store: DeliveryStore,
        *,
        device_id: str,
        device_kid: bytes,
        boot: int,
        ledger: LedgerPublicKeys,
        broker: BrokerConfig,
        window: int = 4,
        batch_events: int = 500,
        max_batch_bytes: int = 256 * 1024,
        max_bytes_per_s: int = 0,
        ack_timeout_s: float = 60.0,
        live_batch_events: int = LIVE_BATCH_EVENTS,
        max_live_ahead: int = MAX_LIVE_AHEAD,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.device_id = device_id
        self.device_kid = device_kid
        self.ledger = ledger
        self.window = window
        self.batch_events = batch_events
        self.sizer = BatchSizer(maximum=max_batch_bytes)
        self.bucket = TokenBucket(
            rate=max_bytes_per_s, burst=max(max_batch_bytes, 2 * max_bytes_per_s)
        )
        self.ack_timeout_s = ack_timeout_s
        self.clock = clock
        self.stats = UplinkStats()
        self._boot = boot
        self._awaiting_puback: dict[int, tuple[float, int]] = {}  # mid -> (when, correlation)
        self._refused_pause_s = 0.0  # the pause after the last refused publish, 0 after a success
        # When the last pause after a refused publish began and ends.
        self._paused_at = self._paused_until = float("-inf")
        self._correlation = itertools.count(1)
        self.live_batch_events = live_batch_events
        self.max_live_ahead = max_live_ahead
        self._live_from: int | None = None  # first live seq (head + 1 at connect)
        self._live_out: set[int] = set()  # live seqs sent and not yet acked
        self._batches: dict[int, tuple[int, int]] = {}  # correlation -> (first, last seq)
        self._acked_through = 0  # highest seq a verified ack has covered
        self._last_progress = clock()
        self._connected = False
        self._ever_connected = False
        death = cbor2.dumps({"state": "offline", "boot": boot})
        self.link = MqttLink(broker, will=(status_topic(device_id), death))

    def run(
        self,
        stop: threading.Event,
        *,
        until_drained: bool = False,
        timeout_s: float | None = None,
        progress: Callable[[int], None] | None = None,
    ) -> UplinkStats:
        """Run until ``stop`` is set, or (``until_drained``) every record is acked."""
        deadline = None if timeout_s is None else self.clock() + timeout_s
        self.link.start()
        try:
            while not stop.is_set():
                if deadline is not None and self.clock() >= deadline:
                    break
                self._handle_events()
                if self._connected:
                    self._publish_more()
                    self._expire_unacked()
                if progress is not None:
                    progress(self.stats.acked)
                if until_drained and self._ever_connected and self.store.unacked() == 0:
                    break
        finally:
            death = cbor2.dumps({"state": "offline", "boot": self._boot, "clean": True})
            self.link.stop(final=(status_topic(self.device_id), death))
        return self.stats

    # --- the loop's steps --------------------------------------------------------------------
    def _handle_events(self) -> None:
        try:
            event: LinkEvent | None = self.link.events.get(timeout=0.05)
        except queue.Empty:
            return
        while event is not None:
            self._handle(event)
            try:
                event = self.link.events.get_nowait()
            except queue.Empty:
                event = None

    def _handle(self, event: LinkEvent) -> None:
        if event.kind is LinkEventKind.CONNECTED:
            if self._ever_connected:
                self.stats.reconnects += 1
            self._connected = self._ever_connected = True
            self._awaiting_puback.clear()
            self.stats.requeued += self.store.requeue_sent(None)  # resend all unacked
            self._live_out.clear()
            self._batches.clear()
            self._live_from = self.store.head_seq() + 1
            self._last_progress = self.clock()
            self.link.subscribe(acks_topic(self.device_id))
            birth = cbor2.dumps({"state": "online", "boot": self._boot})
            self.link.publish(status_topic(self.device_id), birth, retain=True)
        elif event.kind is LinkEventKind.DISCONNECTED:
            self._connected = False
            self._awaiting_puback.clear()
            self.sizer.on_disconnect()
        elif event.kind is LinkEventKind.REFUSED:
            # CONNACK "Not authorized": the broker admits a certificate only under its own CN
            # as client id. Retrying cannot help; stop and say so.
            raise SyncError(
                f"the broker refused our connection ({event.reason}): check that this "
                f"gateway's certificate CN is {self.device_id!r}, its client id"
            )
        elif event.kind is LinkEventKind.PUBACK:
            sent = self._awaiting_puback.pop(event.mid, None)
            if sent is None:
                return  # not a batch (the birth status), or forgotten after the ack timeout
            sent_at, corr = sent
            self.sizer.on_puback(self.clock() - sent_at)
            if not event.reason:
                self._refused_pause_s = 0.0
            elif event.code in RETRYABLE_PUBACKS:
                self._on_refused(corr, sent_at)
            else:
                # Refused for good (the packet or the topic itself): retrying cannot help.
                self.stats.refused_publishes += 1
                raise SyncError(
                    f"the broker refused our publish ({event.reason}): check that this "
                    f"gateway's certificate CN is {self.device_id!r} and the broker ACL"
                )
        elif event.kind is LinkEventKind.MESSAGE and event.topic == acks_topic(self.device_id):
            self._on_ack(event.payload)

    def _on_ack(self, data: bytes) -> None:
        try:
            ack = verify_ack(
                data, self.ledger, device_id=self.device_id, device_kid=self.device_kid
            )
            rejected = [(r.seq, r.event_id, r.reason) for r in ack.rejected]
            acked, rejected_n = self.store.apply_ack(ack.seq, ack.event_id, rejected)
        except CustodyError as exc:
            # A forged, foreign or mismatched ack releases nothing; count it.
            self.stats.bad_acks += 1
            self.stats.bad_ack_reasons = [*self.stats.bad_ack_reasons[-9:], str(exc)]
            return
        self.stats.acks += 1
        self.stats.acked += acked
        self.stats.rejected += rejected_n
        self.stats.last_ack_ms = time.time_ns() // 1_000_000
        if ack.seq > self._acked_through:
            self._acked_through = ack.seq
            self._last_progress = self.clock()
            self._live_out = {s for s in self._live_out if s > ack.seq}
            self._batches = {c: r for c, r in self._batches.items() if r[1] > ack.seq}
        for r in ack.rejected:
            self._live_out.discard(r.seq)
        if ack.resend_from is not None:
            self._on_gap(ack.resend_from, ack.correlation)

    def _on_refused(self, corr: int, sent_at: float) -> None:
        """The broker did not take batch ``corr``: back to pending, and pause (module docstring)."""
        self.stats.retried_publishes += 1
        batch = self._batches.pop(corr, None)
        if batch is not None:
            first, last = batch
            self.stats.requeued += self.store.requeue_sent(
                None, from_seq=first, before_seq=last + 1
            )
            self._live_out = {s for s in self._live_out if not first <= s <= last}
        if sent_at <= self._paused_at:
            return  # published before the current pause began: that pause answers it already
        self._refused_pause_s = min(
            self.ack_timeout_s, max(REFUSED_PAUSE_S, 2 * self._refused_pause_s)
        )
        self._paused_at = self.clock()
        self._paused_until = self._paused_at + self._refused_pause_s

    def _on_gap(self, gap: int, correlation: bytes | None) -> None:
        """Resend from ``gap`` only if the ledger has seen the batch that carried it."""
        answered = int.from_bytes(correlation, "big") if correlation else None
        lost = answered is not None and any(
            corr <= answered and first <= gap <= last
            for corr, (first, last) in self._batches.items()
        )
        if not lost:
            return  # still on its way, or never sent: nothing to resend yet
        live_from = self._live_from
        upper = live_from if live_from is not None and gap < live_from else None
        requeued = self.store.requeue_sent(None, from_seq=gap, before_seq=upper)
        self.stats.requeued += requeued
        end = upper if upper is not None else 1 << 63

        def kept(first: int, last: int) -> bool:
            return last < gap or first >= end

        self._batches = {c: (f, la) for c, (f, la) in self._batches.items() if kept(f, la)}
        self._live_out = {s for s in self._live_out if s < gap or s >= end}

    def _next_batch(self) -> tuple[list[Outgoing], bool]:
        """The next records to publish and whether they are live ones sent ahead."""
        budget = self.sizer.current
        start = self._acked_through + 1  # everything below is acked
        live_from = self._live_from
        if live_from is not None and live_from > start:
            backlog = self.store.next_to_send(
                self.batch_events, budget, from_seq=start, before_seq=live_from
            )
            if backlog:
                room = self.max_live_ahead - len(self._live_out)
                if room > 0:
                    live = self.store.next_to_send(
                        min(self.live_batch_events, room), budget, from_seq=live_from
                    )
                    if live:
                        return live, True
                return backlog, False
        return self.store.next_to_send(self.batch_events, budget, from_seq=start), False

    def _publish_more(self) -> None:
        if self.clock() < self._paused_until:
            return  # a batch was refused: give the broker's budget time to refill
        while len(self._awaiting_puback) < self.window:
            batch, ahead = self._next_batch()
            if not batch:
                return
            payload = encode_batch(self.device_id, [o.envelope for o in batch])
            now = self.clock()
            if self.bucket.wait_time(len(payload), now) > 0:
                return  # over the operator's byte-rate cap: try again on a later turn
            self.bucket.spend(len(payload), now)
            corr = next(self._correlation)
            mid = self.link.publish(
                events_topic(self.device_id),
                payload,
                response_topic=acks_topic(self.device_id),
                correlation=corr.to_bytes(8, "big"),
            )
            if mid is None:  # not connected after all: try again after reconnect
                self._connected = False
                return
            self._awaiting_puback[mid] = (now, corr)
            self.store.mark_sent([o.seq for o in batch])
            if not self._batches:
                self._last_progress = now  # the ack clock starts with the first outstanding batch
            self._batches[corr] = (batch[0].seq, batch[-1].seq)
            if ahead:
                self._live_out.update(o.seq for o in batch)
                self.stats.live_batches += 1
            self.stats.batches_sent += 1
            self.stats.events_sent += len(batch)
            self.stats.payload_bytes += len(payload)

    def _expire_unacked(self) -> None:
        # A PUBACK that never came (or whose event the bounded queue dropped) must
        # not shrink the window for ever: forget it after the ack timeout.
        now = self.clock()
        stale = now - self.ack_timeout_s
        for mid in [m for m, (at, _) in self._awaiting_puback.items() if at < stale]:
            del self._awaiting_puback[mid]
        # No ack progress for the timeout while batches are out: resend what is sent.
        # Progress, not per-record age: parked live records wait for the backlog.
        if self._batches and now - self._last_progress >= self.ack_timeout_s:
            self.stats.requeued += self.store.requeue_sent(None)
            self._batches.clear()
            self._live_out.clear()
            self._last_progress = now
