"""The gateway service behind ``custody-agent run``: supervisor, workers, health, systemd."""

from agent.service.logs import EventLog
from agent.service.notify import Notifier
from agent.service.supervisor import Service, ServiceContext, WorkflowFactory, run_service
from agent.service.workers import Heartbeat, Sample, Worker, WorkerHealth

__all__ = [
    "EventLog",
    "Heartbeat",
    "Notifier",
    "Sample",
    "Service",
    "ServiceContext",
    "Worker",
    "WorkerHealth",
    "WorkflowFactory",
    "run_service",
]
