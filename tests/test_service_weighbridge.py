"""``custody-agent run`` with ``weighbridge.port`` set: the unattended weighbridge as a worker.

A simulated XK3190 indicator on a real pseudo-terminal sends truck visits;
the service's weighbridge worker captures them as signed weighings, and the
captures show in ``/metrics`` by outcome and in the outbox.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.sim.runner import PtySink, Simulator
from tests.support import run_cli
from tests.test_service import gw, service, set_config, wait_until

__all__ = ["gw"]  # the fixture, shared with tests/test_service.py


@pytest.fixture
def indicator(tmp_path: Path) -> Iterator[Path]:
    link = tmp_path / "ttyWB"
    sink = PtySink(link)
    sim = Simulator("scale", "xk3190-a12", sink, rate=20.0, seed=3)
    thread = threading.Thread(target=sim.run, daemon=True)
    thread.start()
    yield link
    sim.stop()
    thread.join(10)
    sink.close()


def test_the_weighbridge_worker_captures_trucks_and_reports_them(gw: Path, indicator: Path) -> None:
    set_config(gw, "weighbridge.port", json.dumps(f"xk3190-a12@{indicator}"))
    # The simulator holds a truck still for 12 frames (0.6 s at 20 frames/s).
    set_config(gw, "weighbridge.window_s", "0.3")
    with service(gw) as svc:
        ready = svc.wait_event("service.ready")
        assert "weighbridge" in ready["workers"]

        def captured() -> float:
            value = svc.metric("custody_captures_total", workflow="weighbridge", outcome="captured")
            return value or 0.0

        wait_until(lambda: captured() >= 2, "two trucks captured")
        health = svc.health()["workers"]["weighbridge"]
        assert health["state"] == "ok" and health["ports"] == {str(indicator): "open"}
        labels = {"port": str(indicator), "dialect": "xk3190-a12"}
        assert (svc.metric("custody_port_frames_total", **labels) or 0) > 0
        assert svc.find("weighbridge.ticket")  # the driver's ticket, as one log event
        n = captured()
        assert svc.terminate() == 0
    listed = run_cli("--data-dir", str(gw), "events", "list", "--json")
    weighings = [e for e in json.loads(listed.stdout) if e["type"] == "weighing"]
    assert len(weighings) >= n and all("gross" in e["mass_kg"] for e in weighings)
    verified = run_cli("--data-dir", str(gw), "events", "verify")
    assert verified.returncode == 0, verified.stderr
