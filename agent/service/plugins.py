"""Workflow workers the service runs when their settings are present.

Each entry of ``default_workflows`` is a ``WorkflowFactory``: given the
``ServiceContext`` it returns ``(worker, settings fingerprint)``, or ``None``
when its workflow is not configured. A reload restarts the worker only when
its fingerprint changed.

The unattended weighbridge (``agent.workflows.station.WeighbridgeWorker``)
owns its own port readers and queue and reports a plain dict of metrics;
``WeighbridgeAdapter`` gives it the service's ``Worker`` shape (health from
its ports, metrics as declared ``Sample``s) without changing it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import fields
from typing import Any

from agent.service.supervisor import ServiceContext, WorkflowFactory
from agent.service.workers import Sample, Worker, WorkerHealth, port_samples

__all__ = ["WeighbridgeAdapter", "default_workflows", "weighbridge"]


class WeighbridgeAdapter:
    """``WeighbridgeWorker`` as a service ``Worker``."""

    name = "weighbridge"

    def __init__(self, worker: Any, dialects: dict[str, str]) -> None:
        self.worker = worker
        self.dialects = dialects  # reader name -> dialect, for metric labels
        self._running = False

    def run(self, stop: threading.Event) -> None:
        self._running = True
        try:
            self.worker.run(stop)
        finally:
            self._running = False

    @property
    def alive(self) -> bool:
        return self._running and bool(self.worker.alive)

    def health(self) -> WorkerHealth:
        readers = list(self.worker.readers)
        detail: dict[str, object] = {"ports": {r.url: r.state for r in readers}}
        if not self._running:
            return WorkerHealth("stopped" if readers else "starting", detail)
        down = [r.url for r in readers if r.state != "open"]
        if down:
            detail["reason"] = "port(s) not open: " + ", ".join(down)
            return WorkerHealth("degraded", detail)
        return WorkerHealth("ok", detail)

    def metrics(self) -> Iterator[Sample]:
        m = self.worker.metrics()
        wf = {"workflow": self.name}
        for outcome, n in sorted(m["captures_by_outcome"].items()):
            yield Sample("custody_captures", {**wf, "outcome": outcome}, n)
        for stage, n in sorted(m["passes"].items()):
            yield Sample("custody_weighbridge_passes", {"pass": stage}, n)
        yield Sample("custody_weighbridge_tickets", {"result": "printed"}, m["tickets"])
        yield Sample("custody_weighbridge_tickets", {"result": "error"}, m["ticket_errors"])
        yield Sample("custody_weighbridge_zero_drift_kg", {}, m["zero_drift_kg"])
        yield Sample("custody_weighbridge_zero_drift_alarm", {}, float(m["zero_drift_alarm"]))
        if m["capture_latency_s"] is not None:
            yield Sample("custody_weighbridge_capture_latency_seconds", {}, m["capture_latency_s"])
        drops = 0
        for r in list(self.worker.readers):
            drops += r.counters.queue_drops
            yield from port_samples(r.url, self.dialects.get(r.name, ""), r)
        q = {"queue": "weighbridge"}
        yield Sample("custody_queue_depth", q, self.worker.queue.qsize())
        yield Sample("custody_queue_capacity", q, self.worker.queue.maxsize)
        yield Sample("custody_queue_dropped", q, drops)


def weighbridge(ctx: ServiceContext) -> tuple[Worker, object] | None:
    """The unattended weighbridge, when ``weighbridge.port`` is set."""
    cfg = ctx.config
    if not getattr(cfg, "wb_port", ""):
        return None
    from agent.workflows.station import StationConfig, WeighbridgeWorker

    log = ctx.log

    def console(text: str) -> None:
        # The driver's ticket goes into the service log as one event (stdout is the log).
        log.info("weighbridge.ticket", text=text)

    worker = WeighbridgeWorker(
        ctx.recorder, port=cfg.wb_port, dialect=cfg.wb_dialect, rfid=cfg.wb_rfid,
        scanner=cfg.wb_scanner, config=StationConfig.from_agent(cfg),
        printer_port=cfg.wb_printer_port, console=console,
    )  # fmt: skip
    dialects = {"weighbridge": cfg.wb_dialect}
    for name, spec in (("weighbridge-rfid", cfg.wb_rfid), ("weighbridge-scan", cfg.wb_scanner)):
        if spec:
            dialects[name] = spec.partition("@")[0]
    fingerprint = tuple(
        (f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name.startswith("wb_")
    )
    return WeighbridgeAdapter(worker, dialects), fingerprint


def default_workflows() -> Iterable[WorkflowFactory]:
    return [weighbridge]
