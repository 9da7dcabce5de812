"""A GNSS receiver on a serial port: its fixes correct the clock every record's time comes from.

The receiver is an ordinary ``devices.ports`` entry with a GPS dialect (e.g.
``nmea@/dev/serial/by-id/usb-u-blox...``), so its port worker reads it like any
other port. ``GpsWorker`` subscribes to the typed events of those ports and
hands each ``GpsFix`` to the service's ``GpsClock`` (``agent.clock``): from
then on records carry time source ``gps``, quality ``synced`` while fixes keep
coming, and the clock-quality gauge says so. The last valid position shows in
``/healthz``.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator, Sequence

from agent.clock import GpsClock
from agent.service.workers import (
    Heartbeat,
    PortBus,
    Sample,
    Subscription,
    WorkerHealth,
    parse_port_spec,
)
from custody.event import TimeQuality
from firmware_bridge.frames import GpsFix
from firmware_bridge.protocols import registry
from firmware_bridge.protocols.base import DeviceKind
from firmware_bridge.transport import FrameRead

__all__ = ["GpsWorker", "gps_ports"]

TICK_S = 0.5  # the longest the loop waits for a fix before beating its heartbeat again
HEARTBEAT_S = 10.0


def gps_ports(specs: Iterable[str]) -> tuple[str, ...]:
    """The URLs of the ``DIALECT@URL`` specs whose dialect is a GPS receiver's."""
    urls = []
    for spec in specs:
        dialect, url = parse_port_spec(spec)
        if registry.dialect(dialect).kind is DeviceKind.GPS:
            urls.append(url)
    return tuple(urls)


class GpsWorker:
    """Feeds the GPS fixes of some ports to the clock."""

    name = "gps"

    def __init__(self, bus: PortBus, urls: Sequence[str], clock: GpsClock) -> None:
        self.bus = bus
        self.urls = tuple(urls)
        self.clock = clock
        self.heartbeat = Heartbeat(HEARTBEAT_S)
        self.subscription: Subscription | None = None
        self._running = False

    def run(self, stop: threading.Event) -> None:
        sub = self.subscription = self.bus.subscribe(self.name, self.urls)
        self._running = True
        try:
            while not stop.is_set():
                self.heartbeat.beat()
                try:
                    event = sub.get(timeout=TICK_S)
                except queue.Empty:
                    continue
                if isinstance(event, FrameRead) and isinstance(event.frame, GpsFix):
                    self.clock.observe(event.frame, event.at)
        finally:
            self._running = False
            sub.close()

    @property
    def alive(self) -> bool:
        return self._running and self.heartbeat.fresh

    def health(self) -> WorkerHealth:
        now = self.clock.now()
        detail: dict[str, object] = {
            "ports": list(self.urls), "fixes": self.clock.fixes, "rejected": self.clock.rejected,
            "time_source": str(now.source), "time_quality": str(now.quality),
        }  # fmt: skip
        pos = self.clock.position
        if pos is not None:
            detail["position"] = {"lat": str(pos.latitude), "lon": str(pos.longitude)}
        if not self._running:
            return WorkerHealth("starting" if self.subscription is None else "stopped", detail)
        if now.quality is TimeQuality.SYNCED:  # by GPS, or by NTP with GPS standing by
            return WorkerHealth("ok", detail)
        detail["reason"] = "no recent valid GPS fix"
        return WorkerHealth("degraded", detail)

    def metrics(self) -> Iterator[Sample]:
        yield Sample("custody_gps_fixes", {}, self.clock.fixes)
        yield Sample("custody_gps_fixes_rejected", {}, self.clock.rejected)
        pos = self.clock.position
        if pos is not None:
            age = max(0.0, time.monotonic() - pos.at)
            yield Sample("custody_gps_position_age_seconds", {}, round(age, 3))
        if self.subscription is not None:
            yield from self.subscription.queue.samples()
