"""``custody-agent run`` with every weighbridge setting at its default, fed by the README's
own simulators on real pseudo-terminals: every simulated truck is weighed, and the service
log says what happened to each one (capture, ticket, refused seals, sync not configured)."""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

from firmware_bridge.sim.runner import PtySink, Simulator
from firmware_bridge.sim.scenarios import REAL_TRUCK
from tests.support import wait_until
from tests.test_service import gw, service, set_config

__all__ = ["gw"]  # the fixture, shared with tests/test_service.py

TRUCKS = 2
RATE = 10.0  # `custody-agent sim`'s default frame rate


def test_with_default_settings_every_simulated_truck_is_weighed(gw: Path, tmp_path: Path) -> None:
    scale, scanner = PtySink(tmp_path / "ttyWB"), PtySink(tmp_path / "ttySCAN")
    # Only where the devices are: the dialect, window and thresholds stay at their defaults.
    set_config(gw, "weighbridge.port", json.dumps(scale.path))
    set_config(gw, "weighbridge.scanner", json.dumps(f"scanner-line@{scanner.path}"))
    trucks = Simulator("scale", "xk3190-a12", scale, rate=RATE, seed=3)
    assert trucks.truck == REAL_TRUCK
    codes = Simulator("scanner", "scanner-line", scanner, rate=RATE, seed=4)  # 10 codes/s
    frames = TRUCKS * trucks.phases.per_visit
    driving = threading.Thread(target=trucks.run, kwargs={"frames": frames}, daemon=True)
    scanning = threading.Thread(target=codes.run, daemon=True)
    try:
        with service(gw) as svc:
            svc.wait_event("service.ready")
            (said,) = svc.find("sync.not_configured")
            assert said["level"] == "warning" and "sync.broker is empty" in said["reason"]

            def ports_open() -> bool:
                ports = svc.health()["workers"]["weighbridge"]["ports"]
                return set(ports.values()) == {"open"}

            wait_until(ports_open, "the indicator and scanner ports to open")
            driving.start()
            scanning.start()
            driving.join(frames / RATE + 60)
            assert not driving.is_alive()

            def captured() -> float:
                v = svc.metric("custody_captures_total", workflow="weighbridge", outcome="captured")
                return v or 0.0

            wait_until(lambda: captured() >= TRUCKS, f"{TRUCKS} trucks captured")
            outcomes = {
                labels: value for (name, labels), value in svc.metrics().items()
                if name == "custody_captures_total"
            }  # fmt: skip
            kinds = {dict(labels)["outcome"] for labels, v in outcomes.items() if v}
            assert kinds == {"captured", "seal_refused"}, outcomes  # no truck left unweighed
            caps = svc.find("weighbridge.captured")
            assert len(caps) == TRUCKS
            assert all(c["pass"] == "single" and 28_000 <= float(c["gross_kg"]) <= 48_000
                       for c in caps)  # fmt: skip
            tickets = wait_until(lambda: svc.find("weighbridge.ticket"), "the tickets")
            assert all(0 < t["seals"] <= 60 for t in tickets)  # the per-visit limit
            refused = svc.find("weighbridge.seal_refused")
            assert refused and "weighbridge.max_seals_per_visit" in refused[0]["reason"]
            # Named fields, not a multi-line text escaped into one line (JSON writes \n).
            assert not any("\\n" in line for line in svc.raw if '"weighbridge.' in line)
            assert "text" not in tickets[0]

            health = svc.health()
            assert health["status"] == "degraded"
            assert health["workers"]["sync"]["state"] == "degraded"
            assert "sync not configured" in health["workers"]["sync"]["reason"]
            assert health["workers"]["weighbridge"]["state"] == "ok"
            assert svc.terminate() == 0
    finally:
        trucks.stop()
        codes.stop()
        for t in (driving, scanning):
            if t.is_alive():
                t.join(10)
        scale.close()
        scanner.close()


def test_the_vehicles_file_is_read_at_start_and_on_reload(gw: Path, tmp_path: Path) -> None:
    scale = PtySink(tmp_path / "ttyWB")
    set_config(gw, "weighbridge.port", json.dumps(scale.path))
    set_config(gw, "weighbridge.vehicles", '"vehicles.csv"')
    vehicles = gw / "vehicles.csv"
    vehicles.write_text("tag,plate,haulier\n3C00A1B2C4,CD 1187\n")
    try:
        with service(gw) as svc:  # a bad line stops the start, naming the file and line
            assert svc.wait_exit() == 3
            assert f"{vehicles}: weighbridge.vehicles: line 2: plate must be" in svc.stderr
        vehicles.write_text("tag,plate,haulier\n3C00A1B2C4,CD-LSH-1187,Kolwezi Haulage\n")
        with service(gw) as svc:
            svc.wait_event("service.ready")
            vehicles.write_text(vehicles.read_text() + "4A0017F3D2,CD-KLZ-4471,\n")
            svc.signal(signal.SIGHUP)  # the setting is unchanged; the file is not
            assert "weighbridge" in svc.wait_event("config.reloaded")["restarted"]
            assert svc.terminate() == 0
    finally:
        scale.close()
