"""End to end: the scale simulator on a real pty -> port worker -> bus -> weighbridge worker ->
outbox -> audit."""

from __future__ import annotations

import os
import select
import threading
import tty
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.audit import verify_outbox
from agent.recorder import Recorder
from agent.service.workers import PortBus, PortWorker, Worker
from agent.workflows.station import StationConfig, WeighbridgeWorker
from agent.workflows.weighbridge import StabilityRule
from custody.envelope import verify_envelope
from firmware_bridge.sim import encoders
from firmware_bridge.sim.runner import PtySink, Simulator
from firmware_bridge.sim.scenarios import Phases
from firmware_bridge.transport import PortState
from tests.support import wait_until
from tests.test_ticket import parse_escpos

SEED = 11
# 500 kg on, 4 stable readings within 20 kg, no time span (tests use no timing thresholds),
# a timeout far beyond the run, and a zero limit the simulator's drift never reaches.
CONFIG = StationConfig(StabilityRule(5000, 4, 200, 0.0, 600.0, 1000))


class PtyDrain:
    """The printer end of a pty: collects whatever the worker prints."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.data = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                self.data.extend(os.read(self.master, 4096))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        os.close(self.slave)
        os.close(self.master)


@pytest.fixture
def printer() -> Iterator[PtyDrain]:
    drain = PtyDrain()
    yield drain
    drain.close()


def weighings(rec: Recorder) -> list[dict[str, Any]]:
    out = []
    for e in rec.outbox.events():
        if e.type == "weighing":
            body = dict(verify_envelope(e.envelope, rec.key.public_key).payload.body)
            clear = {k: v for k, (v, _) in rec.outbox.openings(e.event_id).items()}
            out.append(body | {"_id": e.event_id, "_clear": clear})
    return out


class Pipeline:
    """What the service runs for a weighbridge: one port worker per port, the workflow
    subscribed to them on a bus, each in its own thread."""

    def __init__(self, worker: WeighbridgeWorker) -> None:
        self.worker = worker
        self.ports = [
            PortWorker(p.spec, log=lambda *a, **k: None, heartbeat_timeout_s=30, bus=worker.bus)
            for p in worker.ports
        ]
        self.stop = threading.Event()
        workers: list[Worker] = [*self.ports, worker]
        self.threads = [threading.Thread(target=w.run, args=(self.stop,)) for w in workers]
        for t in self.threads:
            t.start()

    @property
    def scale(self) -> PortWorker:
        return self.ports[0]

    def scale_open(self) -> bool:
        return self.worker.bus.state(self.worker.port) is PortState.OPEN

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        assert not any(t.is_alive() for t in self.threads)


def test_simulated_trucks_over_a_pty_become_verified_signed_visits(
    recorder: Recorder, printer: PtyDrain
) -> None:
    sink = PtySink()
    tickets: list[str] = []
    worker = WeighbridgeWorker(
        recorder, PortBus(), port=sink.path, dialect="toledo-continuous", rfid="", scanner="",
        config=CONFIG, printer_port=printer.path, console=tickets.append,
    )  # fmt: skip
    pipeline = Pipeline(worker)
    sim = Simulator("scale", "toledo-continuous", sink, rate=200, seed=SEED, truck=Phases())
    try:
        wait_until(pipeline.scale_open, "the port to open")
        wait_until(lambda: worker.station is not None, "the station")
        station = worker.station
        assert station is not None
        for n in (1, 2, 3):  # the same truck three times, its plate typed in by hand
            worker.enter_vehicle("TRUCK-7")
            wait_until(lambda: station._pending.vehicle == "TRUCK-7", "the entry")
            sim.run(frames=56 * n)  # one visit of the simulator's scenario
            want = {"captured": n}
            wait_until(lambda: worker.stats()["captures_by_outcome"] == want, f"capture {n}")  # noqa: B023
            wait_until(lambda: station.machine.phase == "idle", "the truck to leave")
        wait_until(lambda: printer.data.endswith(b"\x1dVA\x03"), "the ticket")
    finally:
        pipeline.close()
        sink.close()

    first, second, third = weighings(recorder)
    assert [w["pass"] for w in (first, second, third)] == ["in", "out", "in"]
    g1 = first["_clear"]["gross"]
    out = second["_clear"]
    assert out["net"] == out["gross"] - out["tare"] and g1 in (out["gross"], out["tare"])
    for units in (g1, out["gross"], out["tare"], third["_clear"]["gross"]):
        assert (
            280_000 <= units <= 480_000 and units % 200 == 0
        )  # the simulator's trucks, 20 kg division
    assert second["inbound"] == first["_id"] and second["vehicle"] == "TRUCK-7"
    assert all(w["scale"] == sink.path for w in (first, second, third))

    report = verify_outbox(recorder.outbox, recorder.key)
    assert report.ok and report.checked == 4  # boot + three weighings
    assert len(tickets) == 1 and second["_id"].hex() in tickets[0]
    parsed = parse_escpos(bytes(printer.data))
    assert parsed.qr_stored == [second["_id"].hex().encode()]
    m = worker.stats()
    assert m["passes"] == {"in": 2, "out": 1} and m["tickets"] == 1 and m["ticket_errors"] == 0
    assert pipeline.scale.reader.counters.frames >= 3 * 56 - 1


def test_indicator_unplugged_mid_weighing(recorder: Recorder, tmp_path: Path) -> None:
    link = tmp_path / "ttyWB"
    sink = PtySink(link)
    worker = WeighbridgeWorker(
        recorder, PortBus(), port=str(link), dialect="toledo-continuous", rfid="", scanner="",
        config=CONFIG, printer_port="", console=lambda _: None,
    )  # fmt: skip
    pipeline = Pipeline(worker)

    def send(kg: int, stable: bool, n: int = 1) -> None:
        for _ in range(n):
            sink.write(encoders.toledo_continuous(kg, motion=not stable))

    try:
        wait_until(pipeline.scale_open, "the port to open")
        wait_until(lambda: worker.subscription is not None, "the subscription")
        send(0, True, 3)
        send(20_000, False, 3)  # driving on
        station = worker.station
        assert station is not None
        wait_until(lambda: station.machine.phase == "settling", "settling")
        sink.unplug()  # USB adapter pulled out while the truck settles
        wait_until(lambda: "disconnected" in worker.stats()["captures_by_outcome"], "the outcome")
        sink.replug()
        wait_until(pipeline.scale_open, "the port to reopen")
        send(38_000, True, 6)  # plugged back: settles and is captured
        wait_until(lambda: "captured" in worker.stats()["captures_by_outcome"], "the capture")
    finally:
        pipeline.close()
        sink.close()
    lost, taken = weighings(recorder)
    assert lost["outcome"] == "disconnected" and "mass" not in lost
    assert taken["_clear"] == {"gross": 380_000} and taken["pass"] == "single"
    assert pipeline.scale.reader.counters.reconnects >= 1  # cumulative over the reconnect
    assert verify_outbox(recorder.outbox, recorder.key).ok
