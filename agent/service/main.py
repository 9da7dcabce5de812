"""``run_service``: the service with the default workflow plug-ins, logging to stdout.

Kept apart from the supervisor so that the supervisor and the plug-ins, which
both import ``agent.service.context``, never import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from agent.service.context import WorkflowPlugin
from agent.service.logs import EventLog, LoggingBridge
from agent.service.plugins import default_workflows
from agent.service.supervisor import Service

__all__ = ["run_service"]


def run_service(
    data_dir: Path,
    *,
    broker_url: str | None = None,
    log_format: str = "text",
    workflows: Iterable[WorkflowPlugin] | None = None,
) -> int:
    """Run the gateway service in this process (main thread); return its exit code."""
    log = EventLog(log_format)
    bridge = LoggingBridge(log)
    root = logging.getLogger()
    root.addHandler(bridge)
    old_level = root.level
    root.setLevel(min(old_level or logging.INFO, logging.INFO))
    try:
        service = Service(
            data_dir,
            broker_url=broker_url,
            log=log,
            workflows=default_workflows() if workflows is None else workflows,
        )
        return service.run()
    finally:
        root.removeHandler(bridge)
        root.setLevel(old_level)
