"""Workflow workers the service runs when their settings are present.

Each entry is a ``WorkflowFactory``: given the ``ServiceContext`` it returns
``(worker, settings fingerprint)`` or ``None`` when its workflow is not
configured. Workflows are found here, not in the supervisor, so that adding
one is one line in ``default_workflows``.
"""

from __future__ import annotations

from agent.service.supervisor import WorkflowFactory

__all__ = ["default_workflows"]


def default_workflows() -> list[WorkflowFactory]:
    return []
