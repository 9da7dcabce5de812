"""The gateway's one device-input pipeline on real pseudo-terminals.

Port workers own the serial ports and publish typed events (``FrameRead``,
``FrameSkipped``, ``StateChanged``) on the service's ``PortBus``; workflows
subscribe by URL. A GNSS receiver on a ``devices.ports`` port corrects the
clock every record's time comes from (``agent.clock.GpsClock``).
"""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from agent.clock import GpsClock, fix_utc_ms
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.recorder import Recorder
from agent.service.gps import GpsWorker, gps_ports
from agent.service.workers import PortBus, PortWorker, Subscription, Worker
from custody.envelope import peek_payload, verify_envelope
from custody.event import DeviceTime, TimeQuality, TimeSource
from firmware_bridge.frames import GpsFix, WeightReading
from firmware_bridge.sim import encoders
from firmware_bridge.sim.runner import PtySink, Simulator
from firmware_bridge.transport import FrameRead, FrameSkipped, PortEvent, PortState, StateChanged
from tests.support import wait_until
from tests.test_service import gw, service, set_config

__all__ = ["gw"]  # the fixture, shared with tests/test_service.py

EARLIEST_MS = 1_700_000_000_000  # 2023-11-14: before it, a clock is implausible
# A time the host clock certainly does not have, so a record carrying it came from the GPS.
GPS_TIME = datetime(2031, 5, 1, 12, 0, 0, tzinfo=UTC)
GPS_MS = int(GPS_TIME.timestamp()) * 1000
# The position rmc() reports (1042.3456 S, 02523.4567 E), as a capture signs it.
SIGNED_POSITION = {"lat": -107057600, "lon": 253909450}
POS = "1042.3456,S,02523.4567,E"  # Kolwezi


def rmc(at: datetime = GPS_TIME, status: str = "A") -> bytes:
    return encoders.nmea_sentence(f"GPRMC,{at:%H%M%S}.00,{status},{POS},0.0,0.0,{at:%d%m%y},,,A")


def fix(utc_time: str | None = "120000.25", utc_date: str | None = "010531") -> GpsFix:
    return GpsFix(
        "RMC", utc_time, utc_date, Decimal("-10.7"), Decimal("25.4"), 1, valid=True
    )  # fmt: skip


class Threads:
    """Workers run as the supervisor runs them: one thread each, one stop event."""

    def __init__(self, *workers: Worker) -> None:
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=w.run, args=(self.stop,)) for w in workers]
        for t in self.threads:
            t.start()

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)


def quiet(*_args: object, **_fields: object) -> None:
    pass


def next_event(
    sub: Subscription, want: Callable[[PortEvent], bool], timeout: float = 10.0
) -> PortEvent:
    """The next event ``want`` accepts (the events before it are skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            event = sub.get(timeout=0.1)
        except queue.Empty:
            continue
        if want(event):
            return event
    raise AssertionError(f"no such event within {timeout} s")


def state(s: PortState) -> Callable[[PortEvent], bool]:
    return lambda e: isinstance(e, StateChanged) and e.state is s


def weight(value: int) -> Callable[[PortEvent], bool]:
    return lambda e: (
        isinstance(e, FrameRead) and isinstance(e.frame, WeightReading) and e.frame.value == value
    )


# --- the clock ----------------------------------------------------------------------------
def test_an_rmc_fix_names_a_utc_time() -> None:
    assert fix_utc_ms(fix()) == GPS_MS + 250
    assert (
        fix_utc_ms(fix(utc_date="010199"))
        == int(datetime(1999, 1, 1, 12, tzinfo=UTC).timestamp()) * 1000 + 250
    )
    assert fix_utc_ms(fix(utc_date=None)) is None  # GGA: time of day only
    assert fix_utc_ms(fix(utc_date="320531")) is None  # no 32nd day
    invalid = GpsFix("RMC", "120000", "010531", None, None, 0, valid=False)
    assert fix_utc_ms(invalid) is None


def test_the_gps_clock_corrects_an_unsynced_clock_and_holds_over() -> None:
    wall = [1_000_000]  # the host believes it is 1970: no RTC after a power cut
    mono = [50.0]
    rtc = FakeInner(TimeSource.RTC, TimeQuality.UNSYNCED, wall)
    clock = GpsClock(
        rtc, earliest_valid_ms=EARLIEST_MS, holdover_s=60.0,
        wall_ms=lambda: wall[0], monotonic=lambda: mono[0],
    )  # fmt: skip
    assert clock.now() == DeviceTime(1_000_000, TimeSource.RTC, TimeQuality.UNSYNCED)
    # A fix read 2 s ago (monotonic 48): the correction accounts for the delay.
    assert clock.observe(fix(), at=48.0)
    assert clock.now() == DeviceTime(GPS_MS + 250 + 2000, TimeSource.GPS, TimeQuality.SYNCED)
    assert clock.position is not None and clock.position.latitude == Decimal("-10.7")
    wall[0] += 30_000
    mono[0] += 30.0
    assert clock.now() == DeviceTime(GPS_MS + 32_250, TimeSource.GPS, TimeQuality.SYNCED)
    mono[0] += 31.0
    wall[0] += 31_000  # past the holdover: still GPS time, no longer vouched for
    assert clock.now() == DeviceTime(GPS_MS + 63_250, TimeSource.GPS, TimeQuality.UNSYNCED)
    rtc.source, rtc.quality = TimeSource.NTP, TimeQuality.SYNCED  # NTP disciplines the host
    assert clock.now().source is TimeSource.NTP
    assert clock.fixes == 1 and clock.rejected == 0


def test_a_fix_before_earliest_valid_is_rejected() -> None:
    """A receiver hit by the GPS week-number rollover reports a date 19.7 years back."""
    clock = GpsClock(FakeInner(TimeSource.RTC, TimeQuality.UNSYNCED, [EARLIEST_MS]),
                     earliest_valid_ms=EARLIEST_MS)  # fmt: skip
    assert not clock.observe(fix(utc_date="150911"), at=time.monotonic())
    assert clock.rejected == 1 and clock.now().source is TimeSource.RTC


class FakeInner:
    def __init__(self, source: TimeSource, quality: TimeQuality, wall: list[int]) -> None:
        self.source, self.quality, self.wall = source, quality, wall

    def now(self) -> DeviceTime:
        return DeviceTime(self.wall[0], self.source, self.quality)


def test_gps_ports_are_the_gps_dialects_among_the_specs() -> None:
    assert gps_ports(["xk3190-a12@/dev/ttyS0", "nmea@/dev/ttyACM0"]) == ("/dev/ttyACM0",)


# --- typed frames to a subscriber, over a pty ---------------------------------------------
@pytest.fixture
def sink(tmp_path: Path) -> Iterator[PtySink]:
    s = PtySink(tmp_path / "ttyUSB-scale")
    yield s
    s.close()


def test_a_subscribed_workflow_receives_typed_frames(sink: PtySink, tmp_path: Path) -> None:
    bus = PortBus()
    scale = PortWorker(f"xk3190-a9@{sink.path}", log=quiet, heartbeat_timeout_s=30, bus=bus)
    other = PtySink(tmp_path / "ttyUSB-rfid")
    rfid = PortWorker(f"rdm6300@{other.path}", log=quiet, heartbeat_timeout_s=30, bus=bus)
    threads = Threads(scale, rfid)
    try:
        wait_until(lambda: bus.state(sink.path) is PortState.OPEN, "the scale port to open")
        wait_until(lambda: bus.state(other.path) is PortState.OPEN, "the RFID port to open")
        sub = bus.subscribe("workflow", [sink.path])
        # Subscribed after the port opened: the subscription starts with its current state.
        first = sub.get(timeout=5)
        assert first == StateChanged(sink.path, PortState.OPEN, first.at)
        other.write(encoders.rdm6300("0A1B2C3D4E"))  # a port this workflow did not ask for
        sink.write(encoders.xk3190_a9(1250))
        read = next_event(sub, lambda e: isinstance(e, FrameRead))
        assert isinstance(read, FrameRead) and read.port == sink.path
        assert isinstance(read.frame, WeightReading) and read.frame.value == 1250
        frames_before = scale.reader.counters.frames
        sink.unplug()
        next_event(sub, state(PortState.DOWN))
        sink.replug()
        next_event(sub, state(PortState.OPEN))
        sink.write(encoders.xk3190_a9(1300))
        next_event(sub, weight(1300))
        # Counters are cumulative over the reconnect (Prometheus counters never go back).
        assert scale.reader.counters.frames == frames_before + 1
        assert scale.reader.counters.reconnects >= 1
        wait_until(lambda: rfid.reader.counters.frames >= 1, "the RFID read")
        seen: list[PortEvent] = []
        while True:
            try:
                seen.append(sub.get(timeout=0.2))
            except queue.Empty:
                break
        assert all(e.port == sink.path for e in seen)  # nothing from the RFID port
        sub.close()
    finally:
        threads.close()
        other.close()


def test_garbage_reaches_the_subscriber_as_a_typed_skip(sink: PtySink) -> None:
    bus = PortBus()
    port = PortWorker(f"nmea@{sink.path}", log=quiet, heartbeat_timeout_s=30, bus=bus)
    sub = bus.subscribe("workflow", [sink.path])
    threads = Threads(port)
    try:
        next_event(sub, state(PortState.OPEN))
        sink.write(b"$GPRMC,garbled*00\r\n")
        skipped = next_event(sub, lambda e: isinstance(e, FrameSkipped))
        assert isinstance(skipped, FrameSkipped) and skipped.error.reason
    finally:
        threads.close()


# --- GPS -> clock -> capture ------------------------------------------------------------------
def test_a_gps_on_a_port_sets_the_time_of_a_capture(recorder: Recorder, sink: PtySink) -> None:
    clock = GpsClock(recorder.clock, earliest_valid_ms=EARLIEST_MS)
    recorder.clock = clock
    bus = PortBus()
    port = PortWorker(f"nmea@{sink.path}", log=quiet, heartbeat_timeout_s=30, bus=bus)
    gps = GpsWorker(bus, [sink.path], clock)
    threads = Threads(port, gps)
    try:
        wait_until(lambda: gps.subscription is not None, "the GPS subscription")
        wait_until(lambda: bus.state(sink.path) is PortState.OPEN, "the port to open")
        sink.write(rmc(status="V"))  # no fix yet: the time is not touched
        sink.write(rmc())
        wait_until(lambda: clock.fixes == 1, "the fix")
        stored = recorder.seal_scan("SEAL-GPS-1")
    finally:
        threads.close()
    payload = verify_envelope(stored.envelope, recorder.key.public_key).payload
    assert payload.time.source is TimeSource.GPS and payload.time.quality is TimeQuality.SYNCED
    assert 0 <= payload.time.ms - GPS_MS < 10_000  # GPS time, plus the seconds since the fix
    assert gps.health().detail["position"] == {"lat": "-10.7057600000", "lon": "25.3909450000"}
    # The capture signs where it was taken: the fix's position in 1e-7 degree.
    assert payload.body["pos"] == SIGNED_POSITION


def test_a_gps_in_devices_ports_times_the_weighbridge_captures(gw: Path, tmp_path: Path) -> None:
    """``custody-agent run`` with a GNSS receiver in devices.ports and a weighbridge: the
    weighbridge's signed weighings carry GPS time."""
    gps_sink = PtySink(tmp_path / "ttyACM-gps")
    scale_sink = PtySink(tmp_path / "ttyWB")
    sim = Simulator("scale", "xk3190-a12", scale_sink, rate=20.0, seed=3)
    stop = threading.Event()

    def gps_feed() -> None:
        t = 0
        while not stop.wait(0.2):
            gps_sink.write(rmc(datetime.fromtimestamp(GPS_MS / 1000 + t, UTC)))
            t += 1

    threads = [threading.Thread(target=sim.run, daemon=True),
               threading.Thread(target=gps_feed, daemon=True)]  # fmt: skip
    set_config(gw, "devices.ports", json.dumps([f"nmea@{gps_sink.path}"]))
    set_config(gw, "weighbridge.port", json.dumps(f"xk3190-a12@{scale_sink.path}"))
    set_config(gw, "weighbridge.window_s", "0.3")
    try:
        for t in threads:
            t.start()
        with service(gw) as svc:
            ready = svc.wait_event("service.ready")
            assert {"gps", "weighbridge", f"port:{gps_sink.path}"} <= set(ready["workers"])

            def captured() -> float:
                v = svc.metric("custody_captures_total", workflow="weighbridge", outcome="captured")
                return v or 0.0

            wait_until(lambda: captured() >= 1, "a truck captured")
            health = svc.health()
            assert health["workers"]["gps"]["state"] == "ok"
            assert health["workers"]["gps"]["time_source"] == "gps"
            assert health["outbox"]["clock_quality"] == "synced"
            assert (svc.metric("custody_gps_fixes_total") or 0) >= 1
            assert 0 <= (svc.metric("custody_gps_position_age_seconds") or -1) < 60
            assert svc.terminate() == 0
    finally:
        stop.set()
        sim.stop()
        for t in threads:
            t.join(10)
        gps_sink.close()
        scale_sink.close()
    outbox = Outbox.open(DataDir(gw).outbox, check=None, create=False)
    try:
        weighings = [e for e in outbox.events() if e.type == "weighing"]
    finally:
        outbox.close()
    assert weighings
    for e in weighings:
        payload = peek_payload(e.envelope)
        when = payload.time
        assert when.source is TimeSource.GPS and GPS_MS <= when.ms < GPS_MS + 600_000
        assert payload.body["pos"] == SIGNED_POSITION
