"""``custody-ledger run``: the intake service on MQTT.

It subscribes to every device's events through the shared subscription
``$share/ledger/custody/v1/dev/+/events`` (several workers may share the load),
hands each batch to ``Intake`` (one durable transaction), publishes the signed
acks to that device's ``acks`` topic, and only then PUBACKs the message
(``manual_ack``): a ledger killed mid-batch leaves the message with the broker,
and the device resends what stays unacked anyway.

What a message can make the ledger do is deliberately small: the device id
comes from the topic (bound to the device certificate by the broker ACL), the
ack always goes to that device's own acks topic whatever Response Topic the
message names, and the correlation data is echoed opaquely.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import Counter
from collections.abc import Callable

from custody.errors import CustodyError
from ledger.intake import Intake
from ledger.log import issue_checkpoint
from sync.mqtt import BrokerConfig, LinkEvent, MqttLink
from sync.topics import SHARED_EVENTS_SUBSCRIPTION, TopicKind, acks_topic, device_from_topic

__all__ = ["LedgerService"]


class LedgerService:
    def __init__(
        self,
        intake: Intake,
        broker: BrokerConfig,
        *,
        checkpoint_interval_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.intake = intake
        self.link = MqttLink(broker, manual_ack=True)
        self.counters: Counter[str] = Counter()
        self.checkpoint_interval_s = checkpoint_interval_s
        self._clock = clock
        self._last_checkpoint: tuple[float, int] | None = None  # (when, size)

    def run(self, stop: threading.Event) -> None:
        self.link.start()
        try:
            while not stop.is_set():
                try:
                    event = self.link.events.get(timeout=0.2)
                except queue.Empty:
                    event = None
                if event is not None:
                    self._handle(event)
                self._maybe_checkpoint()
        finally:
            self.link.stop()

    def _handle(self, event: LinkEvent) -> None:
        if event.kind == "connected":
            self.link.subscribe(SHARED_EVENTS_SUBSCRIPTION)
            self.counters["connects"] += 1
            return
        if event.kind != "message":
            return
        try:
            device_id, kind = device_from_topic(event.topic)
        except CustodyError:
            self.counters["bad_topic"] += 1
            self.link.ack(event.mid)
            return
        if kind is not TopicKind.EVENTS:
            self.link.ack(event.mid)
            return
        result = self.intake.ingest(device_id, event.payload, correlation=_corr(event))
        self.counters.update(
            batches=1, logged=result.logged, duplicates=result.duplicates, rejected=result.rejected
        )
        for ack in result.acks:
            self.link.publish(acks_topic(device_id), ack, correlation=_corr(event))
        self.link.ack(event.mid)

    def _maybe_checkpoint(self) -> None:
        """Sign a checkpoint every interval while the log grows (ZK.md: signed roots)."""
        now = self._clock()
        if self._last_checkpoint is not None:
            when, size = self._last_checkpoint
            if now - when < self.checkpoint_interval_s or self.intake.store.log_size() == size:
                return
        cp, _ = issue_checkpoint(self.intake.store, self.intake.keys)
        self._last_checkpoint = (now, cp.size)
        self.counters["checkpoints"] += 1


def _corr(event: LinkEvent) -> bytes | None:
    # Echo at most 64 bytes of correlation data (sync.ack bounds it too).
    if event.correlation is None or len(event.correlation) > 64:
        return None
    return event.correlation
