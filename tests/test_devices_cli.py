"""Field tools as a site engineer runs them: dialects, a simulator, listen, camera decode."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from tests.support import REPO, run_cli

IMAGES = REPO / "tests" / "data" / "conformance" / "images"


def test_dialects_lists_every_parser_with_its_serial_defaults() -> None:
    result = run_cli("devices", "dialects", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    for name in ("mt-sics", "toledo-continuous", "sma", "ad-cas", "xk3190-a9", "xk3190-a12",
                 "regex", "rdm6300", "uhf-r2000", "scanner-line", "nmea"):  # fmt: skip
        assert name in rows, name
        assert rows[name]["description"] and rows[name]["serial"]
    assert rows["nmea"]["kind"] == "gps" and rows["rdm6300"]["kind"] == "rfid"


def test_simulator_on_a_pty_decoded_by_listen(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB-bridge"
    with subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "sim", "scale", "--dialect", "xk3190-a12",
         "--pty", "--link", str(link), "--rate", "50", "--duration", "6", "--seed", "4"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as sim:  # fmt: skip
        try:
            assert sim.stdout is not None
            assert sim.stdout.readline().strip() == str(link)  # the port to configure
            listen = run_cli(
                "devices", "listen", "--port", str(link), "--dialect", "xk3190-a12",
                "--duration", "2", "--json",
            )  # fmt: skip
            assert listen.returncode == 0, listen.stderr
            lines = [json.loads(line) for line in listen.stdout.splitlines()]
            frames = [x["item"] for x in lines if x["kind"] == "frame"]
            assert len(frames) >= 20
            assert all(f["type"] == "WeightReading" and f["unit"] == "kg" for f in frames)
            assert lines[-1]["kind"] == "counters" and lines[-1]["item"]["frames"] == len(frames)
            assert any(x["kind"] == "state" and x["item"] == "open" for x in lines)
        finally:
            sim.terminate()
            sim.wait(10)


def test_listen_on_a_missing_port_keeps_retrying_and_says_so(tmp_path: Path) -> None:
    result = run_cli(
        "devices", "listen", "--port", str(tmp_path / "nothing"), "--dialect", "nmea",
        "--duration", "1",
    )  # fmt: skip
    assert result.returncode == 0
    assert "port down" in result.stdout
    assert "open_failures" in result.stderr


def test_unknown_dialect_is_a_config_error() -> None:
    result = run_cli("devices", "listen", "--port", "loop://", "--dialect", "nope")
    assert result.returncode == 3
    assert "unknown dialect" in result.stderr and "Traceback" not in result.stderr


def test_camera_decode_reports_each_image(tmp_path: Path) -> None:
    good = sorted((IMAGES / "qrcode-1").glob("*.png"))[:2]
    none = sorted((IMAGES / "falsepositives-1").glob("*.png"))[:1]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = run_cli("camera", "decode", "--json", *map(str, [*good, *none, broken]))
    assert result.returncode == 0, result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["path"] for o in out] == [str(p) for p in [*good, *none, broken]]
    for o, path in zip(out[: len(good)], good, strict=True):
        expected = path.with_suffix(".txt").read_text(encoding="utf-8", newline="")
        assert [c["text"] for c in o["codes"]] == [expected]
    assert out[len(good)]["codes"] == []
    assert out[-1]["codes"] == [] and "error" in out[-1]


def test_simulator_writes_to_a_port_url(tmp_path: Path) -> None:
    """`sim --port URL`: the simulator drives an existing serial port (here a pty)."""
    from firmware_bridge.sim.runner import PtySink

    bench_cable = PtySink()  # stands in for a USB-serial cable on the bench
    try:
        result = run_cli(
            "sim", "gps", "--port", bench_cable.slave_path, "--frames", "4", "--rate", "100"
        )
        assert result.returncode == 0, result.stderr
        received = b""
        deadline = time.monotonic() + 5
        while received.count(b"\r\n") < 4 and time.monotonic() < deadline:
            received += bench_cable.read_available()
        assert received.count(b"$GPGGA") == 2 and received.count(b"$GPRMC") == 2
    finally:
        bench_cable.close()
