"""The workflow plug-ins the service runs when their settings are present.

Each plug-in (``agent.service.context.WorkflowPlugin``) names the serial ports
its workflow reads, so that the supervisor runs one port worker per port, and
builds its worker, with a settings fingerprint so that a reload restarts the
worker only when its settings changed. The workers implement the service's
``Worker`` shape themselves.

- ``WeighbridgePlugin``: the unattended weighbridge (``weighbridge.port``).
- ``GpsPlugin``: a GNSS receiver on a ``devices.ports`` port with a GPS dialect
  (NMEA); its fixes correct the clock every record's time comes from.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields

from agent.service.context import PortSpec, ServiceContext, WorkflowPlugin
from agent.service.gps import GpsWorker, gps_ports
from agent.service.workers import Worker
from agent.settings import AgentConfig
from agent.workflows.station import StationConfig, WeighbridgeWorker, weighbridge_ports

__all__ = ["GpsPlugin", "WeighbridgePlugin", "default_workflows"]


class WeighbridgePlugin:
    """The unattended weighbridge, when ``weighbridge.port`` is set."""

    name = "weighbridge"

    def port_specs(self, cfg: AgentConfig) -> Sequence[PortSpec]:
        if not cfg.wb_port:
            return []
        return weighbridge_ports(cfg.wb_port, cfg.wb_dialect, cfg.wb_rfid, cfg.wb_scanner)

    def build(self, ctx: ServiceContext) -> tuple[Worker, object] | None:
        cfg = ctx.config
        if not cfg.wb_port:
            return None
        # Captures, outcomes and the driver's ticket are events of the service log, each one
        # line of named fields; the ticket's printed text goes to the printer only.
        worker = WeighbridgeWorker(
            ctx.recorder, ctx.bus, port=cfg.wb_port, dialect=cfg.wb_dialect, rfid=cfg.wb_rfid,
            scanner=cfg.wb_scanner, config=StationConfig.from_agent(cfg),
            printer_port=cfg.wb_printer_port, events=ctx.log.event,
        )  # fmt: skip
        fingerprint = tuple(
            (f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name.startswith("wb_")
        )
        # An edited vehicles file takes effect on reload even when its setting is unchanged.
        vehicles = tuple(sorted(worker.vehicles.by_tag.items()))
        return worker, (*fingerprint, ("vehicles", vehicles))


class GpsPlugin:
    """Clock correction from the GNSS receivers among ``devices.ports``."""

    name = "gps"

    def port_specs(self, cfg: AgentConfig) -> Sequence[PortSpec]:
        return []  # its ports are devices.ports entries, which the service runs anyway

    def build(self, ctx: ServiceContext) -> tuple[Worker, object] | None:
        urls = gps_ports(ctx.config.device_ports)
        if not urls:
            return None
        return GpsWorker(ctx.bus, urls, ctx.clock), urls


def default_workflows() -> list[WorkflowPlugin]:
    return [WeighbridgePlugin(), GpsPlugin()]
