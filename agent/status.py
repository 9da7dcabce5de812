"""A gateway's state as operators see it, computed once for ``custody-agent status`` and
for the service's ``/healthz`` and ``/metrics``.

Both read the outbox the same way, so the command on the gateway and the dashboard at
the centre cannot disagree about the backlog, the disk budget or the alarms. What they
differ in is where the clock quality comes from: the running service asks its live
clock; the command, which may run while the service is stopped, reports the quality of
the newest record written.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from agent.outbox import Outbox

__all__ = ["GatewayStatus", "read_status"]


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    events: dict[str, int]  # records by lifecycle state
    oldest_unacked_age_s: float | None  # None when the ledger has acknowledged everything
    disk_used_bytes: int
    disk_budget_bytes: int
    alarm_percent: int  # the budget share at which the disk alarm is raised
    clock_quality: str | None  # None before the first record, when no clock was asked
    boot_counter: int
    alarms: tuple[dict[str, Any], ...]  # active alarms: kind, message, raised_ms
    rejected_reasons: dict[str, int]  # records the ledger refused, by its stated reason

    @property
    def disk_used_ratio(self) -> float:
        return self.disk_used_bytes / self.disk_budget_bytes if self.disk_budget_bytes else 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "events": dict(self.events),
            "oldest_unacked_age_s": self.oldest_unacked_age_s,
            "disk_budget": {
                "used_bytes": self.disk_used_bytes,
                "budget_bytes": self.disk_budget_bytes,
                "used_percent": round(100 * self.disk_used_ratio, 2),
                "alarm_percent": self.alarm_percent,
            },
            "clock_quality": self.clock_quality,
            "boot_counter": self.boot_counter,
            "alarms": [dict(a) for a in self.alarms],
            "rejected_reasons": dict(self.rejected_reasons),
        }


def read_status(
    outbox: Outbox,
    *,
    budget_bytes: int,
    alarm_percent: int,
    clock_quality: str | None = None,
    now_ms: int | None = None,
) -> GatewayStatus:
    """The gateway's state from its outbox; ``clock_quality`` from a live clock if given,
    else the newest record's."""
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    counts = outbox.counts_by_state()
    oldest = outbox.oldest_unacked_ms()
    if clock_quality is None:
        latest = outbox.events(limit=1, newest_first=True)
        clock_quality = latest[0].time_quality if latest else None
    return GatewayStatus(
        events=counts,
        oldest_unacked_age_s=None if oldest is None else round(max(0, now_ms - oldest) / 1000, 1),
        disk_used_bytes=outbox.usage_bytes(),
        disk_budget_bytes=budget_bytes,
        alarm_percent=alarm_percent,
        clock_quality=clock_quality,
        boot_counter=outbox.boot_counter(),
        alarms=tuple(outbox.active_alarms()),
        rejected_reasons=outbox.rejected_reasons() if counts.get("rejected") else {},
    )
