"""``/healthz`` and ``/metrics`` on localhost, for operators and Prometheus.

Every metric is declared once in ``METRICS`` (name, type, help, labels);
workers report ``Sample``s by name and the collector turns them into
Prometheus families at scrape time, in a ``CollectorRegistry`` of its own
(never the process-global one, so two services in one test process, or a
library user, cannot collide). Counter names get ``_total`` from
prometheus-client (OpenMetrics counters).

``/healthz`` answers JSON: ``status`` is ``ok`` when every worker is ok,
``degraded`` when some worker is retrying expected trouble (device
unplugged, broker down: HTTP 200, the service is doing what it can), and
``failing`` when a worker is not alive (HTTP 503: the watchdog is being
withheld and systemd will restart the service).

``/`` is the status page for people (``agent.service.page``). Access follows
``custody.webpage.Access``: on loopback everything is open; on any other address the
page needs ``service.http_token_file``'s token and is refused (403) without one; once
a token is set, ``/metrics`` and ``/healthz`` need it too (Prometheus sends it with
``authorization: credentials_file``).

The server is ``http.server.ThreadingHTTPServer`` on 127.0.0.1 by default;
it reads state, never changes it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Protocol, TypeVar

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.clock import Clock
from agent.outbox import Outbox, RecordState
from agent.service.workers import Sample
from agent.status import GatewayStatus, read_status
from custody.event import TimeQuality
from custody.webpage import Access, respond

__all__ = ["METRICS", "HealthServer", "MetricSpec", "OutboxGauges", "SampleCollector"]


@dataclass(frozen=True, slots=True)
class MetricSpec:
    kind: str  # "gauge" | "counter"
    help: str
    labels: tuple[str, ...] = ()


_DECLARED: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    # (name, type, labels, help)
    # outbox (read from the database at scrape time: survives restarts, sees other processes)
    ("custody_outbox_events", "gauge", ("state",),
     "Events in the outbox by delivery state."),
    ("custody_outbox_oldest_unacked_age_seconds", "gauge", (),
     "Age of the oldest event the ledger has not acknowledged (0 when none)."),
    ("custody_outbox_disk_used_bytes", "gauge", (),
     "Bytes the outbox uses on disk (database, WAL, shared memory)."),
    ("custody_outbox_disk_budget_bytes", "gauge", (),
     "The outbox disk budget (outbox.budget_mb)."),
    ("custody_outbox_disk_budget_used_ratio", "gauge", (),
     "Share of the disk budget in use (0..1); captures are refused at 1."),
    ("custody_alarms_active", "gauge", ("kind",),
     "Active alarms by kind."),
    ("custody_clock_quality", "gauge", ("quality",),
     "1 for the device clock's current time quality, 0 for the others."),
    ("custody_boot_counter", "gauge", (),
     "The outbox boot counter of this service run."),
    ("custody_gps_fixes", "counter", (),
     "Valid GNSS fixes that set the clock since start."),
    ("custody_gps_fixes_rejected", "counter", (),
     "Valid GNSS fixes whose date was implausible (before clock.earliest_valid)."),
    ("custody_gps_position_age_seconds", "gauge", (),
     "Age of the last valid GNSS position (absent before the first)."),
    # sync
    ("custody_sync_connected", "gauge", (),
     "1 while connected to the broker."),
    ("custody_sync_batches_sent", "counter", (),
     "Batches published since the service started."),
    ("custody_sync_events_sent", "counter", (),
     "Events published (resends included) since start."),
    ("custody_sync_acked", "counter", (),
     "Events released by verified ledger acks since start."),
    ("custody_sync_rejected", "counter", (),
     "Events the ledger rejected since start (kept in the outbox)."),
    ("custody_sync_bad_acks", "counter", (),
     "Acks that failed verification and released nothing."),
    ("custody_sync_requeued", "counter", (),
     "Sent events put back to pending (timeout, reconnect, gap)."),
    ("custody_sync_reconnects", "counter", (),
     "Broker reconnections since start."),
    ("custody_sync_last_ack_timestamp_seconds", "gauge", (),
     "Unix time of the last verified ledger ack (absent before the first)."),
    # devices
    ("custody_port_up", "gauge", ("port", "dialect"),
     "1 while the serial port is open."),
    ("custody_port_bytes", "counter", ("port", "dialect"),
     "Bytes read from the port."),
    ("custody_port_frames", "counter", ("port", "dialect"),
     "Frames decoded from the port."),
    ("custody_port_frame_errors", "counter", ("port", "dialect"),
     "Frame errors (garbage, bad checksums)."),
    ("custody_port_checksum_errors", "counter", ("port", "dialect"),
     "Frames with a bad checksum."),
    ("custody_port_dropped_bytes", "counter", ("port", "dialect"),
     "Bytes skipped while resynchronising."),
    ("custody_port_reconnects", "counter", ("port", "dialect"),
     "Times the port was reopened after the device went away."),
    ("custody_port_open_failures", "counter", ("port", "dialect"),
     "Failed attempts to open the port."),
    ("custody_port_queue_drops", "counter", ("port", "dialect"),
     "Frames dropped because the consumer was behind."),
    # workflows
    ("custody_captures", "counter", ("workflow", "outcome"),
     "Workflow outcomes (captured, unstable, ...)."),
    ("custody_weighbridge_passes", "counter", ("pass",),
     "Weighbridge captures by pass (in, out, single)."),
    ("custody_weighbridge_tickets", "counter", ("result",),
     "Driver's tickets printed, and ones the printer failed."),
    ("custody_weighbridge_zero_drift_kg", "gauge", (),
     "The empty weighbridge's distance from zero."),
    ("custody_weighbridge_zero_drift_alarm", "gauge", (),
     "1 while zero drift is past weighbridge.zero_drift_limit_kg."),
    ("custody_weighbridge_capture_latency_seconds", "gauge", (),
     "Last capture: from the stable reading's arrival to the durable event."),
    ("custody_checkpoints_signed", "counter", (),
     "Checkpoints of the running sums the service signed since start."),
    # queues (STYLE.md §7: every queue has a metric)
    ("custody_queue_depth", "gauge", ("queue",),
     "Items waiting in a bounded queue."),
    ("custody_queue_capacity", "gauge", ("queue",),
     "The bounded queue's size limit."),
    ("custody_queue_dropped", "counter", ("queue",),
     "Items dropped because the queue was full."),
    # the service itself
    ("custody_worker_up", "gauge", ("worker",),
     "1 while the worker is alive (heartbeat fresh)."),
    ("custody_worker_degraded", "gauge", ("worker",),
     "1 while the worker retries expected trouble."),
    ("custody_service_reloads", "counter", ("result",),
     "SIGHUP reloads by result."),
    ("custody_service_start_timestamp_seconds", "gauge", (),
     "Unix time the service started."),
)  # fmt: skip
METRICS: dict[str, MetricSpec] = {n: MetricSpec(k, h, labels) for n, k, labels, h in _DECLARED}
T = TypeVar("T")


class SampleSource(Protocol):
    def samples(self) -> Iterable[Sample]: ...


class SampleCollector(Collector):
    """Turns ``Sample``s into Prometheus families declared in ``METRICS``."""

    def __init__(self, source: SampleSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {}
        for s in self.source.samples():
            spec = METRICS.get(s.name)
            if spec is None:
                raise ValueError(f"metric {s.name!r} is not declared in METRICS")
            if set(s.labels) != set(spec.labels):
                raise ValueError(f"metric {s.name}: labels {sorted(s.labels)} != {spec.labels}")
            fam = families.get(s.name)
            if fam is None:
                cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
                fam = families[s.name] = cls(s.name, spec.help, labels=list(spec.labels))
            fam.add_metric([s.labels[n] for n in spec.labels], s.value)
        yield from families.values()


class OutboxGauges:
    """Outbox state read at scrape time over a connection of its own (``agent.status``)."""

    def __init__(
        self, path: Path, *, budget_bytes: int, alarm_percent: int, clock: Clock, boot: int
    ) -> None:
        self.outbox = Outbox.open(path, check=None, create=False)
        self.budget_bytes = budget_bytes
        self.alarm_percent = alarm_percent
        self.clock = clock
        self.boot = boot
        self._lock = threading.Lock()  # HTTP requests are served on several threads

    def status(self) -> GatewayStatus:
        with self._lock:
            return read_status(
                self.outbox,
                budget_bytes=self.budget_bytes,
                alarm_percent=self.alarm_percent,
                clock_quality=str(self.clock.now().quality),
            )

    def snapshot(self) -> dict[str, Any]:
        return self.status().as_json()

    def read(self, fn: Callable[[Outbox], T]) -> T:
        """``fn`` run on the scrape connection, one HTTP thread at a time."""
        with self._lock:
            return fn(self.outbox)

    def samples(self) -> Iterator[Sample]:
        st = self.status()
        for state in RecordState:
            yield Sample("custody_outbox_events", {"state": str(state)}, st.events[str(state)])
        age = st.oldest_unacked_age_s or 0.0  # 0 when nothing waits (docs/operations.md)
        yield Sample("custody_outbox_oldest_unacked_age_seconds", {}, age)
        yield Sample("custody_outbox_disk_used_bytes", {}, st.disk_used_bytes)
        yield Sample("custody_outbox_disk_budget_bytes", {}, st.disk_budget_bytes)
        yield Sample("custody_outbox_disk_budget_used_ratio", {}, st.disk_used_ratio)
        for kind in sorted({a["kind"] for a in st.alarms}):
            yield Sample("custody_alarms_active", {"kind": kind}, 1.0)
        for q in TimeQuality:
            current = 1.0 if str(q) == st.clock_quality else 0.0
            yield Sample("custody_clock_quality", {"quality": str(q)}, current)
        yield Sample("custody_boot_counter", {}, self.boot)

    def close(self) -> None:
        with self._lock:
            self.outbox.close()


class HealthServer:
    """Serves ``/healthz`` (JSON) and ``/metrics`` (Prometheus text) from one thread."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        health: Callable[[], dict[str, Any]],
        samples: SampleSource,
        page: Callable[[], bytes] | None = None,
        access: Access | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(SampleCollector(samples))
        self.health = health
        self.page = page
        self.access = access or Access(host)
        self.httpd = ThreadingHTTPServer((host, port), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="http"
        )
        self.thread.daemon = True

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # the name http.server dispatches to
                answer = respond(
                    self.path, self.headers.get("Authorization"), access=server.access,
                    realm="custody gateway", page=server.page, health=server.health,
                    metrics=lambda: (CONTENT_TYPE_LATEST, generate_latest(server.registry)),
                )  # fmt: skip
                self.send_response(answer.status)
                for name, value in answer.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(answer.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the service log

        return Handler
