"""What the supervisor hands to workflow plug-ins, and what a plug-in is.

A plug-in names the serial ports its workflow reads (``port_specs``); the
supervisor runs one ``PortWorker`` per port, whoever asked for it, so every
serial port has exactly one reader. The plug-in then builds its worker from the
``ServiceContext`` and subscribes to those ports on ``ctx.bus``. This module
imports neither the supervisor nor any plug-in: both import it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from agent.clock import GpsClock
from agent.recorder import Recorder
from agent.service.logs import EventLog
from agent.service.workers import PortBus, Worker
from agent.settings import AgentConfig

__all__ = ["PortSpec", "ServiceContext", "WorkflowPlugin"]


@dataclass(frozen=True, slots=True)
class PortSpec:
    """A port a workflow reads: ``DIALECT@URL`` and the setting it comes from (for errors)."""

    key: str  # e.g. "weighbridge.port"
    spec: str


@dataclass
class ServiceContext:
    """What a workflow plug-in may use to build its worker."""

    data_dir: Path
    config: AgentConfig
    recorder: Recorder
    log: EventLog
    bus: PortBus  # typed port events by URL (``PortBus.subscribe``)
    clock: GpsClock  # the recorder's clock; GPS fixes correct it


class WorkflowPlugin(Protocol):
    """A workflow the service runs when its settings are present."""

    @property
    def name(self) -> str: ...

    def port_specs(self, cfg: AgentConfig) -> Sequence[PortSpec]:
        """The serial ports the workflow reads (the supervisor runs their port workers)."""

    def build(self, ctx: ServiceContext) -> tuple[Worker, object] | None:
        """The worker and its settings fingerprint (a reload restarts the worker only when
        it changed), or None when the workflow is not configured."""
