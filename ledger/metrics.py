"""``/metrics`` and ``/healthz`` of ``custody-ledger run``.

Every metric is declared here, once, in a ``CollectorRegistry`` of the service's own
(never prometheus-client's global one: two services in one test process must not
collide). The service's main thread updates them; the HTTP thread only reads them
and a health snapshot the main thread publishes, so nothing here touches the store
(a SQLite connection must not be used from two threads at once).

``/healthz`` answers JSON: ``ok``; ``degraded`` (HTTP 200) while the broker is not
connected or messages were dead-lettered in the last ``DEGRADED_AFTER_DEAD_LETTER_S``;
``failing`` (HTTP 503) while the store is unreachable.

``/`` is the status page for people (``ledger.page``), under ``custody.webpage.Access``:
open on loopback; elsewhere only with ``--http-token-file``'s token (refused with 403
without one); once a token is set, ``/metrics`` and ``/healthz`` need it too.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

from custody.reasons import Reason
from custody.webpage import Access, respond
from ledger.fairness import DeviceLimits, Drop

__all__ = ["DEGRADED_AFTER_DEAD_LETTER_S", "HealthServer", "IntakeMetrics"]

DEGRADED_AFTER_DEAD_LETTER_S = 600.0


class IntakeMetrics:
    """The intake service's metrics, declared once."""

    def __init__(self, limits: DeviceLimits, rejection_retention: int, dead_letter_keep: int):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.messages = Counter(
            "custody_ledger_messages", "Messages from devices' events topics, by outcome "
            "(processed, dropped over a budget, dead_letter, bad_topic).", ["outcome"], registry=r,
        )  # fmt: skip
        self.records = Counter(
            "custody_ledger_records", "Records in processed batches, by outcome "
            "(logged, duplicate, waiting, rejected).", ["outcome"], registry=r,
        )  # fmt: skip
        self.rejections = Counter(
            "custody_ledger_rejections", "Rejected records by reason.", ["reason"], registry=r
        )
        self.forks = Counter(
            "custody_ledger_forks", "Fork alarms raised (two events of one key at one seq).",
            registry=r,
        )  # fmt: skip
        self.device_drops = Counter(
            "custody_ledger_device_drops", "Messages acknowledged and dropped unprocessed, by "
            "device and the limit that refused them.", ["device", "limit"], registry=r,
        )  # fmt: skip
        self.device_limit = Gauge(
            "custody_ledger_device_limit", "The per-device intake budget: rates per second, "
            "bursts, and messages queued per device.", ["limit"], registry=r,
        )  # fmt: skip
        for name in ("messages_per_s", "message_burst", "records_per_s", "record_burst",
                     "bytes_per_s", "byte_burst", "queued_per_device"):  # fmt: skip
            self.device_limit.labels(name).set(getattr(limits, name))
        self.queued = Gauge(
            "custody_ledger_queued_messages", "Admitted messages waiting for the intake.",
            registry=r,
        )  # fmt: skip
        self.dead_letters = Counter(
            "custody_ledger_dead_letters", "Messages the intake could not handle at all, "
            "kept in the store's dead letters and acknowledged.", registry=r,
        )  # fmt: skip
        self.dead_letters_stored = Gauge(
            "custody_ledger_dead_letters_stored", "Dead letters kept in the store.", registry=r
        )
        self.dead_letter_limit = Gauge(
            "custody_ledger_dead_letters_limit", "Dead letters kept at most (oldest go first).",
            registry=r,
        )  # fmt: skip
        self.dead_letter_limit.set(dead_letter_keep)
        self.rejection_rows = Gauge(
            "custody_ledger_rejection_rows", "Rejection rows in the store.", registry=r
        )
        self.rejection_retention = Gauge(
            "custody_ledger_rejection_retention_rows", "Rejection rows kept at most.", registry=r
        )
        self.rejection_retention.set(rejection_retention)
        self.store_seconds = Histogram(
            "custody_ledger_store_seconds", "Wall time of one message's intake (checks and "
            "the store transaction).", registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )  # fmt: skip
        self.store_up = Gauge(
            "custody_ledger_store_up", "1 while the store answers, 0 while it does not.",
            registry=r,
        )  # fmt: skip
        self.broker_connected = Gauge(
            "custody_ledger_broker_connected", "1 while connected to the broker.", registry=r
        )
        self.log_size = Gauge("custody_ledger_log_size", "Leaves in the log.", registry=r)
        # Per device (the device id of a certificate the broker admitted, so bounded by the
        # fleet): when it last sent a batch, and what waits for its missing records.
        self.device_last_seen = Gauge(
            "custody_ledger_device_last_seen_timestamp_seconds", "When a message from the "
            "device's events topic last arrived (Unix time).", ["device"], registry=r,
        )  # fmt: skip
        self.device_waiting = Gauge(
            "custody_ledger_device_waiting_records", "The device's backlog at the ledger: "
            "records that arrived ahead of a missing predecessor and wait for it.", ["device"],
            registry=r,
        )  # fmt: skip
        self.store_up.set(1)
        for reason in Reason:  # every label present from the start: rate() needs a zero
            self.rejections.labels(reason.metric_label)
        for outcome in ("processed", "dropped", "dead_letter", "bad_topic"):
            self.messages.labels(outcome)
        for outcome in ("logged", "duplicate", "waiting", "rejected"):
            self.records.labels(outcome)

    def drop(self, device_id: str, why: Drop) -> None:
        self.messages.labels("dropped").inc()
        self.device_drops.labels(device_id, why.value).inc()


class HealthServer:
    """Serves ``/healthz`` (JSON) and ``/metrics`` (Prometheus text) from one thread."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        health: Callable[[], dict[str, Any]],
        page: Callable[[], bytes] | None = None,
        access: Access | None = None,
    ) -> None:
        self.registry = registry
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
                    realm="custody ledger", page=server.page, health=server.health,
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


def health_report(
    *,
    broker_connected: bool,
    store_up: bool,
    last_dead_letter: float | None,
    queued: int,
    log_size: int,
    now: float | None = None,
    broker_refused: str = "",
    broker_unreachable: str = "",
) -> dict[str, Any]:
    """The /healthz body from what the main thread last saw."""
    now = time.monotonic() if now is None else now
    recent = last_dead_letter is not None and now - last_dead_letter < DEGRADED_AFTER_DEAD_LETTER_S
    problems = []
    if not store_up:
        problems.append("the ledger store does not answer")
    if broker_refused:
        problems.append(f"the broker refuses the ledger's connection: {broker_refused}")
    elif broker_unreachable and not broker_connected:
        problems.append(broker_unreachable)
    elif not broker_connected:
        problems.append("not connected to the broker")
    if recent:
        problems.append("a message was dead-lettered recently (custody-ledger alarms)")
    status = "failing" if not store_up else "degraded" if problems else "ok"
    return {
        "status": status, "problems": problems, "broker_connected": broker_connected,
        "store_up": store_up, "queued_messages": queued, "log_size": log_size,
    }  # fmt: skip
