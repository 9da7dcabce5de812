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

No message stops the intake. On arrival a message passes its device's budget
or is acknowledged and dropped unprocessed (``ledger.fairness``); admitted
messages are served round-robin across devices. Each is then handled in
isolation: whatever it causes ends as recorded rejections and an ack, or, when
the intake cannot handle it at all, as a dead letter (kept once, bounded,
shown by ``custody-ledger alarms``) and an acknowledgement, never as a crash
or a redelivery loop. Only the store being unreachable holds the service: it
retries the same message with capped backoff, acknowledging nothing, and
``/healthz`` says ``failing`` meanwhile.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from custody.errors import CustodyError, StorageError
from custody.webpage import Access
from ledger.fairness import Budget, DeviceLimits, Drop, FairQueue
from ledger.intake import Intake, IntakeResult
from ledger.log import issue_checkpoint
from ledger.metrics import HealthServer, IntakeMetrics, health_report
from sync.mqtt import BrokerConfig, LinkEvent, LinkEventKind, MqttLink, reconnect_delay
from sync.topics import SHARED_EVENTS_SUBSCRIPTION, TopicKind, acks_topic, device_from_topic

__all__ = ["DEAD_LETTER_KEEP", "REJECTION_RETENTION", "IntakeSettings", "LedgerService"]

log = logging.getLogger("ledger.service")

# Rejection rows kept (the newest); one row is about 150 bytes, so about 15 MB.
REJECTION_RETENTION = 100_000
# Dead letters kept (the most recently seen); a payload is at most the broker's
# max_packet_size, so this bounds their space too.
DEAD_LETTER_KEEP = 100
# A message whose intake fails with a store error while the store still answers is
# tried this many times before it is dead-lettered (the store error is about it).
STORE_ATTEMPTS = 3
# How often the store is pruned and the store-derived gauges are refreshed.
HOUSEKEEPING_S = 5.0
MAX_BACKOFF_S = 30.0
# Distinct rejection texts one log line names (a batch can have a reason per record).
MAX_REASONS_LOGGED = 3
# One rejection line per device this often at most: a stolen certificate sending unsigned
# batches at its budget must not flood the journal. The lines in between are counted in the
# next one; every row stays in the store (`custody-ledger rejections`) and in the metrics.
REJECTION_LOG_INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class IntakeSettings:
    limits: DeviceLimits = field(default_factory=DeviceLimits)
    rejection_retention: int = REJECTION_RETENTION
    dead_letter_keep: int = DEAD_LETTER_KEEP
    checkpoint_interval_s: float = 300.0
    http: tuple[str, int] | None = None  # where /metrics and /healthz listen, if anywhere
    page: Callable[[], bytes] | None = None  # the status page at / there (ledger.page)
    access: Access | None = None  # who may read that port (custody.webpage.Access)

    def __post_init__(self) -> None:
        if self.rejection_retention < 1 or self.dead_letter_keep < 1:
            raise ValueError("rejection retention and dead letters kept must be at least 1")


@dataclass(frozen=True, slots=True)
class _Message:
    topic: str
    payload: bytes
    correlation: bytes | None
    mid: int


class LedgerService:
    def __init__(
        self,
        intake: Intake,
        broker: BrokerConfig,
        *,
        settings: IntakeSettings | None = None,
        checkpoint_interval_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings or IntakeSettings()
        self.intake = intake
        self.link = MqttLink(broker, manual_ack=True)
        self.counters: Counter[str] = Counter()
        self.checkpoint_interval_s = (
            self.settings.checkpoint_interval_s
            if checkpoint_interval_s is None
            else checkpoint_interval_s
        )
        self._clock = clock
        self._last_checkpoint: tuple[float, int] | None = None  # (when, size)
        self.budget = Budget(self.settings.limits)
        self.queue: FairQueue[_Message] = FairQueue(self.settings.limits.queued_per_device)
        self.metrics = IntakeMetrics(
            self.settings.limits, self.settings.rejection_retention, self.settings.dead_letter_keep
        )
        self.http: HealthServer | None = None
        if self.settings.http is not None:  # bound now: a busy port fails before anything runs
            host, port = self.settings.http
            self.http = HealthServer(
                host, port, self.metrics.registry, self.health,
                page=self.settings.page, access=self.settings.access,
            )  # fmt: skip
        self._housekeeping_at = 0.0
        self._store_up = True
        self._last_dead_letter: float | None = None
        self._log_size = 0
        self._refused = ""  # the broker's reason while it refuses our CONNECT
        self._waiting_devices: set[str] = set()  # devices with a backlog gauge
        # device -> (when its last rejection line was logged, batches with rejections since)
        self._rejection_lines: dict[str, tuple[float, int]] = {}
        self._connect_failures = 0  # attempts in a row that reached no broker (or lost it)
        self._unreachable = ""  # why the last attempt failed and when the next one is

    # --- lifecycle --------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        if self.http is not None:
            self.http.start()
        self.link.start()
        try:
            while not stop.is_set():
                self._pump(wait=0.0 if len(self.queue) else 0.2)
                popped = self.queue.pop()
                if popped is not None:
                    self._process(*popped, stop)
                self.metrics.queued.set(len(self.queue))
                self._maybe_checkpoint()
                self._housekeeping()
        finally:
            self.link.stop()
            if self.http is not None:
                self.http.stop()

    def health(self) -> dict[str, object]:
        """The /healthz body (read by the HTTP thread; plain values only)."""
        return health_report(
            broker_connected=self.link.connected, store_up=self._store_up,
            last_dead_letter=self._last_dead_letter, queued=len(self.queue),
            log_size=self._log_size, now=self._clock(), broker_refused=self._refused,
            broker_unreachable=self._unreachable,
        )  # fmt: skip

    # --- arrival: budgets and the fair queue ----------------------------------------------
    def _pump(self, wait: float) -> None:
        """Take what the link delivered: admit each message to the fair queue or drop it."""
        try:
            event = self.link.events.get(timeout=wait) if wait else self.link.events.get_nowait()
        except queue.Empty:
            return
        while True:
            self._arrive(event)
            try:
                event = self.link.events.get_nowait()
            except queue.Empty:
                return

    def _arrive(self, event: LinkEvent) -> None:
        if event.kind is LinkEventKind.CONNECTED:
            if self._connect_failures > 1:
                log.warning("connected to the broker %s after %d failed attempts",
                            self.link.config.url, self._connect_failures)  # fmt: skip
            self._refused = self._unreachable = ""
            self._connect_failures = 0
            self.link.subscribe(SHARED_EVENTS_SUBSCRIPTION)
            self.counters["connects"] += 1
            self.metrics.broker_connected.set(1)
            return
        if event.kind is LinkEventKind.REFUSED:
            # Not a network fault: the broker said no (wrong client id for this certificate,
            # revoked certificate). paho keeps retrying; say why, once per refusal.
            self.counters["refused"] += 1
            self.metrics.broker_connected.set(0)
            self._refused = event.reason or "refused"
            log.error(
                "the broker refused the ledger's connection as %r: %s (the client id must be "
                "the certificate's CN, or CN/WORKER for further intake workers)",
                self.link.config.client_id, self._refused,
            )  # fmt: skip
            return
        if event.kind is LinkEventKind.CONNECT_FAILED:
            # paho retries by itself, with backoff: say each time why and when it tries next.
            self._connect_failures += 1
            self.counters["connect_failures"] += 1
            self.metrics.broker_connected.set(0)
            retry = reconnect_delay(self._connect_failures)
            self._unreachable = (
                f"cannot connect to {self.link.config.url}: {event.reason} (attempt "
                f"{self._connect_failures}, next in {retry} s)"
            )
            log.error("%s", self._unreachable, extra={"broker": self.link.config.url,
                                                       "retry_s": retry})  # fmt: skip
            return
        if event.kind is LinkEventKind.DISCONNECTED:
            self._connect_failures = 1  # paho waits RECONNECT_MIN_S, then doubles from there
            log.warning("disconnected from the broker %s: %s; reconnecting",
                        self.link.config.url, event.reason or "no reason given")  # fmt: skip
            # Packet ids belong to the connection that delivered them: what is still
            # queued comes again (DUP) on the next connection, and is processed then.
            self.counters["requeued_on_disconnect"] += len(self.queue.clear())
            self.metrics.broker_connected.set(0)
            return
        if event.kind is not LinkEventKind.MESSAGE:
            return
        try:
            device_id, kind = device_from_topic(event.topic)
        except CustodyError:
            self.counters["bad_topic"] += 1
            self.metrics.messages.labels("bad_topic").inc()
            self.link.ack(event.mid)
            return
        if kind is not TopicKind.EVENTS:
            self.link.ack(event.mid)
            return
        self.metrics.device_last_seen.labels(device_id).set(time.time())
        message = _Message(event.topic, event.payload, _corr(event), event.mid)
        why = self.budget.admit(device_id, len(event.payload), self._clock())
        if why is None and not self.queue.push(device_id, message):
            why = Drop.QUEUE
        if why is not None:
            self.counters["dropped"] += 1
            self.metrics.drop(device_id, why)
            self.link.ack(event.mid)

    # --- one message, in isolation --------------------------------------------------------
    def _process(self, device_id: str, message: _Message, stop: threading.Event) -> None:
        started = time.perf_counter()
        result, error = self._ingest(device_id, message, stop)
        if result is None and error is None:
            return  # stopping while the store is unreachable: not acked, redelivered later
        if result is not None:
            for ack in result.acks:
                self.link.publish(acks_topic(device_id), ack, correlation=message.correlation)
            self._count(result)
            if result.rejected:
                self._log_rejections(device_id, result)
            # Parked records this message released were paid for when they arrived: charging
            # them again would put an honest gateway draining a backlog into debt, its next
            # batches dropped and resent after the ack timeout. Their cost per message is
            # bounded by the intake instead (MAX_RELEASED_PER_MESSAGE).
            self.budget.charge(device_id, result.envelopes, self._clock())
        else:
            assert error is not None
            if not self._dead_letter(device_id, message, error, stop):
                return
            self.budget.charge(device_id, 1, self._clock())
        self.metrics.store_seconds.observe(time.perf_counter() - started)
        self.link.ack(message.mid)

    def _ingest(
        self, device_id: str, message: _Message, stop: threading.Event
    ) -> tuple[IntakeResult | None, str | None]:
        """The intake's result, or why the message cannot be handled (for its dead letter);
        (None, None) when asked to stop while the store is unreachable."""
        attempts = 0
        while True:
            try:
                return (
                    self.intake.ingest(device_id, message.payload, correlation=message.correlation),
                    None,
                )
            except StorageError as exc:
                if not self._wait_for_store(stop):
                    return None, None
                attempts += 1
                if attempts >= STORE_ATTEMPTS:
                    return None, f"store error: {exc}"
                log.warning("intake of a batch from %s failed (%s); trying again", device_id, exc)
            # The one catch-all of the intake, at the per-message boundary: whatever a
            # message makes the code below raise, it must not stop the intake for the
            # whole fleet (a crash would be redelivered after every restart). Kept with
            # its error as a dead letter, logged with the traceback.
            except Exception as exc:  # noqa: BLE001 - per-message boundary, see above
                error = f"{type(exc).__name__}: {exc}"
                log.error(
                    "intake cannot handle a batch from %s (%s); dead-lettered\n%s", device_id,
                    error, "".join(traceback.format_exception(exc)).rstrip(),
                )  # fmt: skip
                return None, error

    def _dead_letter(
        self, device_id: str, message: _Message, error: str, stop: threading.Event
    ) -> bool:
        """Keep the message as a dead letter; False when asked to stop before the store took it."""
        while True:
            try:
                new = self.intake.store.record_dead_letter(
                    device_id, message.topic, message.payload, error[:1000],
                    self.settings.dead_letter_keep,
                )  # fmt: skip
                break
            except StorageError as exc:
                log.error("cannot keep a dead letter from %s: %s", device_id, exc)
                if not self._wait_for_store(stop, probe_write=True):
                    return False
        self.counters["dead_letters"] += 1
        self.metrics.dead_letters.inc()
        self.metrics.messages.labels("dead_letter").inc()
        self._last_dead_letter = self._clock()
        log.error(
            "dead letter from %s (%s, %d bytes): %s", device_id,
            "new" if new else "seen before", len(message.payload), error,
            extra={"alarm": "dead_letter", "device_id": device_id, "error": error},
        )  # fmt: skip
        return True

    def _wait_for_store(self, stop: threading.Event, *, probe_write: bool = False) -> bool:
        """Back off until the store answers again; False when asked to stop meanwhile.

        With ``probe_write`` the first wait is unconditional: the caller has just seen a
        write fail, which a read probe would not notice (a full disk still reads)."""
        delay = 0.5
        must_wait = probe_write
        while True:
            if not must_wait:
                try:
                    self._log_size = self.intake.store.log_size()
                except StorageError as exc:
                    self.counters["store_probes_failed"] += 1
                    log.error("the ledger store does not answer: %s", exc)
                else:
                    self._set_store_up(True)
                    return True
            must_wait = False
            self._set_store_up(False)
            if stop.wait(delay):
                return False
            delay = min(delay * 2, MAX_BACKOFF_S)

    def _set_store_up(self, up: bool) -> None:
        self._store_up = up
        self.metrics.store_up.set(1 if up else 0)

    def _log_rejections(self, device_id: str, result: IntakeResult) -> None:
        """A line for a batch with rejections: how many, and the ledger's reasons (the texts
        the store keeps and ``custody-ledger rejections`` lists); per device at most one every
        ``REJECTION_LOG_INTERVAL_S``, which counts the batches it left out."""
        now = self._clock()
        last = self._rejection_lines.get(device_id)
        if last is not None and now - last[0] < REJECTION_LOG_INTERVAL_S:
            self._rejection_lines[device_id] = (last[0], last[1] + 1)
            return
        self._rejection_lines[device_id] = (now, 0)
        since = (
            f" ({last[1]} more batch(es) with rejections in the {now - last[0]:.0f} s before)"
            if last is not None and last[1] else ""
        )  # fmt: skip
        shown = result.details.most_common(MAX_REASONS_LOGGED)
        more = len(result.details) - len(shown)
        reasons = "; ".join(f"{n}x {text}" for text, n in shown) + (
            f"; and {more} other reason(s)" if more > 0 else ""
        )
        log.warning(
            "rejected %d of %d record(s) from %s: %s%s", result.rejected, result.envelopes,
            device_id, reasons, since,
            extra={"device_id": device_id, "rejected": result.rejected, "reasons": reasons},
        )  # fmt: skip

    def _count(self, result: IntakeResult) -> None:
        self.counters.update(
            batches=1, logged=result.logged, duplicates=result.duplicates, rejected=result.rejected
        )
        m = self.metrics
        m.messages.labels("processed").inc()
        m.records.labels("logged").inc(result.logged)
        m.records.labels("duplicate").inc(result.duplicates)
        m.records.labels("waiting").inc(max(result.waiting, 0))
        m.records.labels("rejected").inc(result.rejected)
        m.forks.inc(result.forks)
        for reason, n in result.reasons.items():
            m.rejections.labels(reason.metric_label).inc(n)

    # --- periodic work ---------------------------------------------------------------------
    def _housekeeping(self) -> None:
        """Prune rejections to their retention and refresh the store-derived gauges."""
        now = self._clock()
        if now < self._housekeeping_at:
            return
        self._housekeeping_at = now + HOUSEKEEPING_S
        store = self.intake.store
        try:
            store.prune_rejections(self.settings.rejection_retention)
            self.metrics.rejection_rows.set(store.rejection_rows())
            self.metrics.dead_letters_stored.set(store.dead_letter_count())
            self._log_size = store.log_size()
            self.metrics.log_size.set(self._log_size)
            waiting = store.waiting_by_device()
            for device_id in self._waiting_devices - waiting.keys():
                self.metrics.device_waiting.labels(device_id).set(0)
            for device_id, n in waiting.items():
                self.metrics.device_waiting.labels(device_id).set(n)
            self._waiting_devices |= waiting.keys()
        except StorageError as exc:
            log.error("ledger store housekeeping failed: %s", exc)
            self._set_store_up(False)
        else:
            self._set_store_up(True)

    def _maybe_checkpoint(self) -> None:
        """Sign a checkpoint every interval while the log grows (ZK.md: signed roots)."""
        now = self._clock()
        if self._last_checkpoint is not None:
            when, size = self._last_checkpoint
            if now - when < self.checkpoint_interval_s:
                return
        try:
            if self._last_checkpoint is not None and self.intake.store.log_size() == size:
                return
            cp, _ = issue_checkpoint(self.intake.store, self.intake.keys)
        except StorageError as exc:
            log.error("cannot sign a checkpoint: %s", exc)
            self._set_store_up(False)
            self._last_checkpoint = (now, -1)  # try again after the interval
            return
        self._last_checkpoint = (now, cp.size)
        self.counters["checkpoints"] += 1


def _corr(event: LinkEvent) -> bytes | None:
    # Echo at most 64 bytes of correlation data (sync.ack bounds it too).
    if event.correlation is None or len(event.correlation) > 64:
        return None
    return event.correlation
