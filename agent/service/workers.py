"""The service's workers: what each runs, how it proves it is alive, what it reports.

A worker is anything with the ``Worker`` shape: a ``name``, a blocking
``run(stop)`` that returns once ``stop`` is set, an ``alive`` property that
is true while its heartbeat is fresh, ``health()`` for ``/healthz`` and
``metrics()`` samples for ``/metrics``. The supervisor runs each in its own
thread. Inside ``run``, expected trouble (a device unplugged, the broker
down) is retried and shows as ``degraded`` health; anything raised out of
``run`` is unexpected and stops the service (STYLE.md §8).

Workers built in here:

- ``PortWorker``: one ``firmware_bridge.transport.PortReader`` per serial
  port the service reads (``devices.ports`` and the ports workflows declare,
  e.g. ``weighbridge.port``). The reader's bounded queue (``QUEUE_MAX`` events)
  is drained here; state changes are logged; every typed event (``PortEvent``:
  frame, skipped garbage, state change) is published on the service's
  ``PortBus``, which hands it to each ``Subscription`` to that port: a
  ``BoundedQueue`` that drops the newest item when full and counts it, so a
  slow workflow never stalls a serial port. Subscriptions belong to the bus,
  not to a port worker, so a port worker restarted by a reload keeps feeding
  the workflows that subscribed to its URL.
- ``CheckpointWorker``: signs a checkpoint of the running input/output sums
  at every multiple of ``service.checkpoint_interval_s`` of UTC time (``Recorder.checkpoint``, which
  serialises with other processes on the data dir).
- ``SyncWorker``: ``sync.uplink.Uplink`` over the outbox, as ``custody-agent
  sync --once`` builds it, run until stopped instead of until drained. It
  opens its own outbox connection (SQLite connections are not shared across
  threads here).
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, Protocol, TypeVar, runtime_checkable

from agent.identity import load_ledger_keys
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.recorder import Recorder
from agent.settings import AgentConfig
from agent.uplink import OutboxDelivery, broker_config, drain_order
from custody.errors import ConfigError
from custody.keys import DeviceKey
from firmware_bridge.errors import DisconnectedError, PortConfigError
from firmware_bridge.protocols import registry
from firmware_bridge.transport import FrameRead, PortEvent, PortReader, PortState, StateChanged
from sync.uplink import Uplink, UplinkStats

__all__ = [
    "BoundedQueue",
    "CheckpointWorker",
    "Heartbeat",
    "PortBus",
    "PortWorker",
    "Sample",
    "Subscription",
    "SyncWorker",
    "Worker",
    "WorkerHealth",
    "parse_port_spec",
    "port_samples",
]

T = TypeVar("T")

# Frames waiting for one workflow: a weighbridge indicator sends ~10 frames/s,
# so this is about 25 s of readings, far more than a healthy consumer lags.
SUBSCRIBER_QUEUE_MAX = 256


@dataclass(frozen=True, slots=True)
class Sample:
    """One metric value; ``name`` is a family declared in ``agent.service.health.METRICS``."""

    name: str
    labels: Mapping[str, str]
    value: float


@dataclass(frozen=True, slots=True)
class WorkerHealth:
    """``ok``: doing its job; ``degraded``: retrying expected trouble (``detail`` says what)."""

    state: str  # "ok" | "degraded" | "starting" | "stopped"
    detail: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in ("ok", "degraded", "starting", "stopped"):
            raise ValueError(f"unknown worker state {self.state!r}")


@runtime_checkable
class Worker(Protocol):
    """What the supervisor needs from a worker (workflows implement it too)."""

    @property
    def name(self) -> str: ...

    def run(self, stop: threading.Event) -> None:
        """Work until ``stop`` is set; raise only for the unexpected."""

    @property
    def alive(self) -> bool:
        """True while the worker's loop is turning (its heartbeat is fresh)."""

    def health(self) -> WorkerHealth: ...

    def metrics(self) -> Iterable[Sample]: ...


class Heartbeat:
    """Monotonic time of the last sign of life (gunicorn ``workertmp``, in memory)."""

    def __init__(self, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self._clock = clock
        self._last: float | None = None

    def beat(self) -> None:
        self._last = self._clock()

    def age(self) -> float | None:
        return None if self._last is None else self._clock() - self._last

    @property
    def fresh(self) -> bool:
        age = self.age()
        return age is not None and age <= self.timeout_s


class BoundedQueue(Generic[T]):
    """A named queue with a fixed size; when full the newest item is dropped and counted."""

    def __init__(self, name: str, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError("a bounded queue needs maxsize >= 1")
        self.name = name
        self.maxsize = maxsize
        self.dropped = 0
        self._q: queue.Queue[T] = queue.Queue(maxsize)

    def put(self, item: T) -> bool:
        try:
            self._q.put_nowait(item)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def get(self, timeout: float | None = None) -> T:
        """The next item; raises ``queue.Empty`` after ``timeout`` seconds."""
        return self._q.get(timeout=timeout)

    def depth(self) -> int:
        return self._q.qsize()

    def samples(self) -> list[Sample]:
        labels = {"queue": self.name}
        return [
            Sample("custody_queue_depth", labels, self.depth()),
            Sample("custody_queue_capacity", labels, self.maxsize),
            Sample("custody_queue_dropped", labels, self.dropped),
        ]


def parse_port_spec(spec: str) -> tuple[str, str]:
    """``"DIALECT@URL"`` (``devices.ports``) to ``(dialect, url)``."""
    dialect, sep, url = spec.partition("@")
    if not sep or not url:
        raise PortConfigError(f'{spec!r}: expected "DIALECT@URL"')
    return dialect, url


Log = Callable[..., None]  # EventLog.event(level, event, **fields)


def port_samples(url: str, dialect: str, reader: PortReader) -> Iterator[Sample]:
    """One serial port's state and counters (cumulative over its reconnects)."""
    labels = {"port": url, "dialect": dialect}
    c = reader.counters
    yield Sample("custody_port_up", labels, 1.0 if reader.state is PortState.OPEN else 0.0)
    yield Sample("custody_port_bytes", labels, c.bytes_in)
    yield Sample("custody_port_frames", labels, c.frames)
    yield Sample("custody_port_frame_errors", labels, c.frame_errors)
    yield Sample("custody_port_checksum_errors", labels, c.checksum_errors)
    yield Sample("custody_port_dropped_bytes", labels, c.dropped_bytes)
    yield Sample("custody_port_reconnects", labels, c.reconnects)
    yield Sample("custody_port_open_failures", labels, c.open_failures)
    yield Sample("custody_port_queue_drops", labels, c.queue_drops)


class Subscription:
    """One consumer's bounded queue of the typed events of some ports (by URL)."""

    def __init__(self, bus: PortBus, name: str, urls: frozenset[str], maxsize: int) -> None:
        self.bus = bus
        self.name = name
        self.urls = urls
        self.queue: BoundedQueue[PortEvent] = BoundedQueue(name, maxsize)

    def get(self, timeout: float | None = None) -> PortEvent:
        """The next event; raises ``queue.Empty`` after ``timeout`` seconds."""
        return self.queue.get(timeout)

    def close(self) -> None:
        self.bus.unsubscribe(self)


class PortBus:
    """The service's running port workers by URL, and who subscribes to which port.

    Port workers ``publish`` from their own threads; ``publish`` only enqueues
    (STYLE.md §7). A new subscription starts with the current state of each of
    its ports that is running, so a consumer that starts after the port opened
    still sees it open.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._ports: dict[str, PortWorker] = {}
        self._subs: list[Subscription] = []
        self._clock = clock

    # --- the supervisor's side --------------------------------------------------------
    def attach(self, worker: PortWorker) -> None:
        with self._lock:
            self._ports[worker.url] = worker

    def detach(self, worker: PortWorker) -> None:
        with self._lock:
            if self._ports.get(worker.url) is worker:
                del self._ports[worker.url]

    def publish(self, event: PortEvent) -> None:
        with self._lock:
            subs = [s for s in self._subs if event.port in s.urls]
        for sub in subs:
            sub.queue.put(event)

    # --- the consumers' side ------------------------------------------------------------
    def subscribe(
        self, name: str, urls: Iterable[str], maxsize: int = SUBSCRIBER_QUEUE_MAX
    ) -> Subscription:
        """A queue of the typed events of the ports at ``urls``, for one consumer."""
        sub = Subscription(self, name, frozenset(urls), maxsize)
        with self._lock:
            self._subs.append(sub)
            running = [w for url, w in sorted(self._ports.items()) if url in sub.urls]
        now = self._clock()
        for w in running:
            if w.reader.state is not PortState.STOPPED:
                sub.queue.put(StateChanged(w.url, w.reader.state, now))
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def state(self, url: str) -> PortState:
        """The port's reader state; ``stopped`` when no port worker runs it."""
        with self._lock:
            worker = self._ports.get(url)
        return worker.reader.state if worker is not None else PortState.STOPPED

    def write(self, url: str, data: bytes) -> None:
        """Send a request to the device on ``url`` (``DisconnectedError`` when not open)."""
        with self._lock:
            worker = self._ports.get(url)
        if worker is None:
            raise DisconnectedError(f"{url}: no port worker runs this port")
        worker.reader.write(data)


class PortWorker:
    """Reads one serial port; reconnects by itself; publishes typed events on the bus."""

    def __init__(
        self, spec: str, *, log: Log, heartbeat_timeout_s: float, bus: PortBus | None = None
    ) -> None:
        dialect_name, url = parse_port_spec(spec)
        dialect = registry.dialect(dialect_name)
        self.spec = spec
        self.dialect = dialect_name
        self.kind = dialect.kind
        self.url = url
        self.reader = PortReader(url, dialect.factory, settings=dialect.serial, name=url)
        self.heartbeat = Heartbeat(heartbeat_timeout_s)
        self.bus = bus if bus is not None else PortBus()
        self._log = log
        self._running = False
        self._ran = False  # health says starting, not stopped, before the first run
        # The newest frame and when it arrived (wall time), for the status page.
        self.last_frame: FrameRead | None = None
        self.last_frame_at: float | None = None

    @property
    def name(self) -> str:
        return f"port:{self.url}"

    def run(self, stop: threading.Event) -> None:
        self.bus.attach(self)
        self.reader.start()
        self._running = True
        self._ran = True
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                try:
                    event = self.reader.out.get(timeout=0.2)
                except queue.Empty:
                    self._check_reader()
                    continue
                self._handle(event)
        finally:
            self._running = False
            self.reader.stop()
            self.bus.detach(self)

    def _check_reader(self) -> None:
        if self.reader.state is PortState.FAILED:
            # A port URL pyserial refuses: retrying cannot help (firmware_bridge.errors).
            raise PortConfigError(f"devices.ports {self.spec!r}: {self.reader.last_error}")
        if not self.reader.alive:
            raise RuntimeError(f"the reader thread of {self.url} ended without being stopped")

    def _handle(self, event: PortEvent) -> None:
        if isinstance(event, FrameRead):
            self.last_frame, self.last_frame_at = event, time.time()
        if isinstance(event, StateChanged):
            down = event.state is PortState.DOWN
            reason = self.reader.last_error if down else None
            self._log(
                "warning" if down else "info", "port.state", port=self.url,
                state=str(event.state), reason=reason,
            )  # fmt: skip
        self.bus.publish(event)

    @property
    def alive(self) -> bool:
        return self._running and self.reader.alive and self.heartbeat.fresh

    def health(self) -> WorkerHealth:
        state = self.reader.state
        detail: dict[str, object] = {"port": self.url, "dialect": self.dialect, "port_state": state}
        if state is not PortState.OPEN and self.reader.last_error:
            detail["last_error"] = self.reader.last_error
        if not self._running:
            return WorkerHealth("stopped" if self._ran else "starting", detail)
        return WorkerHealth("ok" if state is PortState.OPEN else "degraded", detail)

    def metrics(self) -> Iterable[Sample]:
        c = self.reader.counters
        yield from port_samples(self.url, self.dialect, self.reader)
        reader_q = {"queue": f"port<-{self.url}"}
        yield Sample("custody_queue_depth", reader_q, self.reader.out.qsize())
        yield Sample("custody_queue_capacity", reader_q, self.reader.out.maxsize)
        yield Sample("custody_queue_dropped", reader_q, c.queue_drops)


def _check_files(cfg: AgentConfig, data_dir: Path) -> None:
    for key, value in (
        ("sync.ca_file", cfg.ca_file),
        ("sync.cert_file", cfg.cert_file),
        ("sync.key_file", cfg.key_file),
    ):
        if value:
            path = Path(value).expanduser()
            path = path if path.is_absolute() else data_dir / path
            if not path.is_file():
                raise ConfigError(cfg.source, key, f"file not found: {path}")


class SyncWorker:
    """Store-and-forward to the ledger, for as long as the service runs."""

    name = "sync"

    def __init__(
        self,
        data_dir: Path,
        cfg: AgentConfig,
        key: DeviceKey,
        *,
        boot: int,
        broker_url: str | None,
        heartbeat_timeout_s: float,
    ) -> None:
        _check_files(cfg, data_dir)
        self.paths = DataDir(data_dir)
        self.broker = broker_config(cfg, data_dir, broker_url)
        self.broker.host_port()  # a malformed URL is a ConfigError at start, not in the thread
        self.cfg = cfg
        self.key = key
        self.boot = boot
        self.ledger = load_ledger_keys(cfg.ledger_keys_path(data_dir))
        self.heartbeat = Heartbeat(heartbeat_timeout_s)
        self.uplink: Uplink | None = None
        self._running = False

    def run(self, stop: threading.Event) -> None:
        outbox = Outbox.open(self.paths.outbox, check=None, create=False)
        try:
            # Retired keys' tails first (agent/uplink.py drain_order): the ledger enrols the
            # current key only when it logs the old chain's key_rotation event.
            for kid in drain_order(outbox, self.key.kid):
                if kid != self.key.kid and not stop.is_set():
                    self._run_key(outbox, kid, stop, until_drained=True)
            if not stop.is_set():
                self._run_key(outbox, self.key.kid, stop, until_drained=False)
        finally:
            self._running = False
            outbox.close()

    def _run_key(
        self, outbox: Outbox, kid: bytes, stop: threading.Event, *, until_drained: bool
    ) -> None:
        self.uplink = Uplink(
            OutboxDelivery(outbox, kid),
            device_id=self.cfg.device_id,
            device_kid=kid,
            boot=self.boot,
            ledger=self.ledger,
            broker=self.broker,
            window=self.cfg.sync_window,
            max_bytes_per_s=self.cfg.max_bytes_per_s,
            ack_timeout_s=self.cfg.ack_timeout_s,
        )
        self._running = True
        # The uplink calls ``progress`` once per turn of its loop: our heartbeat.
        self.uplink.run(stop, until_drained=until_drained, progress=lambda _: self._beat())

    def _beat(self) -> None:
        self.heartbeat.beat()

    @property
    def connected(self) -> bool:
        return self.uplink is not None and self.uplink.link.connected

    @property
    def stats(self) -> UplinkStats:
        return self.uplink.stats if self.uplink is not None else UplinkStats()

    @property
    def alive(self) -> bool:
        return self._running and self.heartbeat.fresh

    def health(self) -> WorkerHealth:
        detail: dict[str, object] = {"broker": self.broker.url, "connected": self.connected}
        s = self.stats
        detail.update(acked=s.acked, rejected=s.rejected, bad_acks=s.bad_acks)
        if s.last_ack_ms is not None:
            detail["last_ack_ms"] = s.last_ack_ms
        if not self._running:
            return WorkerHealth("starting" if self.uplink is None else "stopped", detail)
        if not self.connected:
            detail["reason"] = "broker unreachable; retrying"
            return WorkerHealth("degraded", detail)
        return WorkerHealth("ok", detail)

    def metrics(self) -> Iterable[Sample]:
        s = self.stats
        none: dict[str, str] = {}
        yield Sample("custody_sync_connected", none, 1.0 if self.connected else 0.0)
        yield Sample("custody_sync_batches_sent", none, s.batches_sent)
        yield Sample("custody_sync_events_sent", none, s.events_sent)
        yield Sample("custody_sync_acked", none, s.acked)
        yield Sample("custody_sync_rejected", none, s.rejected)
        yield Sample("custody_sync_bad_acks", none, s.bad_acks)
        yield Sample("custody_sync_requeued", none, s.requeued)
        yield Sample("custody_sync_reconnects", none, s.reconnects)
        if s.last_ack_ms is not None:
            yield Sample("custody_sync_last_ack_timestamp_seconds", none, s.last_ack_ms / 1000)
        if self.uplink is not None:
            dropped = self.uplink.link.dropped_events
            q = {"queue": "mqtt-events"}
            yield Sample("custody_queue_depth", q, self.uplink.link.events.qsize())
            yield Sample("custody_queue_capacity", q, self.uplink.link.events.maxsize)
            yield Sample("custody_queue_dropped", q, dropped)


class CheckpointWorker:
    """Signs a checkpoint at every multiple of ``interval_s`` seconds of UTC time (the hour, by
    default), whether records arrived or not.

    A checkpoint's existence, time and seq must not say whether the site was busy: on a fixed
    schedule they reveal the schedule only (docs/zk-summaries.md §6). A slot missed while the
    gateway was off is not made up, and the slot a start falls in is skipped: the first
    checkpoint comes at the first slot a whole interval after the start (records of the
    partial slot go into it), so a service that runs for less than an interval signs none."""

    name = "checkpoint"

    def __init__(
        self, recorder: Recorder, *, interval_s: float, heartbeat_timeout_s: float,
        wall: Callable[[], float] = time.time,
    ) -> None:  # fmt: skip
        self.recorder = recorder
        self.interval_s = interval_s
        self.heartbeat = Heartbeat(heartbeat_timeout_s)
        self.signed = 0
        self.due_count = 0  # slots that came due
        self.last_seq: int | None = None
        self._wall = wall
        self._running = False
        self._ran = False  # health says starting, not stopped, before the first run

    def next_slot(self, now: float) -> float:
        """The UTC time (s) of the first slot after ``now``."""
        return (math.floor(now / self.interval_s) + 1) * self.interval_s

    def run(self, stop: threading.Event) -> None:
        self._running = True
        self._ran = True
        due = self.next_slot(self._wall() + self.interval_s)
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                now = self._wall()
                if now >= due:
                    self.due_count += 1
                    event = self.recorder.checkpoint()  # CustodyError: unexpected
                    self.signed += 1
                    self.last_seq = event.seq
                    due = self.next_slot(now)
                # Wake often enough to keep the heartbeat fresh while waiting.
                stop.wait(min(1.0, max(0.0, due - self._wall())))
        finally:
            self._running = False

    @property
    def alive(self) -> bool:
        return self._running and self.heartbeat.fresh

    def health(self) -> WorkerHealth:
        detail: dict[str, object] = {
            "interval_s": self.interval_s, "signed": self.signed, "due": self.due_count,
        }  # fmt: skip
        if self.last_seq is not None:
            detail["last_seq"] = self.last_seq
        if not self._running:
            return WorkerHealth("stopped" if self._ran else "starting", detail)
        return WorkerHealth("ok", detail)

    def metrics(self) -> Iterable[Sample]:
        yield Sample("custody_checkpoints_signed", {}, self.signed)
