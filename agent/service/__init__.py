"""The gateway service behind ``custody-agent run``: supervisor, workers, health, systemd.

The workflow plug-ins (``agent.service.plugins``) import the workflows, which
import this package's worker types; so this package imports the plug-ins only
when the service is run (``run_service``), never when it is imported.
"""

from pathlib import Path

from agent.service.context import PortSpec, ServiceContext, WorkflowPlugin
from agent.service.logs import EventLog
from agent.service.notify import Notifier
from agent.service.supervisor import Service
from agent.service.workers import Heartbeat, PortBus, Sample, Subscription, Worker, WorkerHealth

__all__ = [
    "EventLog",
    "Heartbeat",
    "Notifier",
    "PortBus",
    "PortSpec",
    "Sample",
    "Service",
    "ServiceContext",
    "Subscription",
    "Worker",
    "WorkerHealth",
    "WorkflowPlugin",
    "run_service",
]


def run_service(data_dir: Path, *, broker_url: str | None = None, log_format: str = "text") -> int:
    """``agent.service.main.run_service`` with the default workflow plug-ins."""
    from agent.service.main import run_service as run

    return run(data_dir, broker_url=broker_url, log_format=log_format)
