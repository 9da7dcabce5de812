"""Field tools as a site engineer runs them: dialects, a simulator, listen, camera decode."""

from __future__ import annotations

import contextlib
import errno
import grp
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware_bridge.sim.runner import KINDS
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


@pytest.mark.parametrize(
    ("port", "code", "reason"),
    [
        ("{tmp}/ttyUSB9", 8, "no such device"),
        ("foo://bar", 3, "unsupported URL scheme 'foo://'"),
        ("{tmp}/regular", 3, "not a serial device ({tmp}/regular is a regular file)"),
        ("{tmp}", 3, "not a serial device ({tmp} is a directory)"),
        ("socket://127.0.0.1:1", 8, "cannot open: Connection refused (is the serial server on"),
    ],
)
def test_listen_on_a_port_that_never_opens_names_the_reason(
    tmp_path: Path, port: str, code: int, reason: str
) -> None:
    (tmp_path / "regular").write_text("not a serial port\n", encoding="utf-8")
    url = port.format(tmp=tmp_path)
    result = run_cli("devices", "listen", "--port", url, "--dialect", "nmea", "--duration", "5")
    assert result.returncode == code, result.stderr
    assert reason.format(tmp=tmp_path) in result.stderr
    assert result.stderr.startswith(f"custody-agent: error: {url}")
    assert "Traceback" not in result.stderr and "port down" not in result.stdout


def test_open_failures_in_words_for_permission_and_busy() -> None:
    """EACCES names the device's group; EBUSY names who holds it (here: this test)."""
    from firmware_bridge.sim.runner import PtySink
    from firmware_bridge.transport import explain_open_failure

    sink = PtySink()
    try:
        path = sink.slave_path
        with open(path, "rb", buffering=0):  # a holder /proc can show
            reason, must_act = explain_open_failure(path, PermissionError(errno.EACCES, "x"))
            group = grp.getgrgid(os.stat(path).st_gid).gr_name
            assert reason.startswith("permission denied") and must_act
            assert f"group {group!r}" in reason and f"usermod -aG {group}" in reason
            reason, must_act = explain_open_failure(path, OSError(errno.EBUSY, "busy"))
            assert f"device busy (held by pid {os.getpid()} " in reason and not must_act
    finally:
        sink.close()


def test_wrong_dialect_shows_raw_bytes_and_suggests_the_right_one(tmp_path: Path) -> None:
    with _sim(tmp_path, "scale", "xk3190-a12") as link:
        result = run_cli(
            "devices", "listen", "--port", f"toledo-continuous@{link}", "--duration", "2",
        )  # fmt: skip
    assert result.returncode == 0, result.stderr
    errors = [line for line in result.stdout.splitlines() if "frame error" in line]
    assert errors and "§" not in result.stdout
    # hex and printable text of what the indicator sent ("WG004.139kg3D" CR LF)
    assert any(' 0d 0a "' in line and '\\r\\n"' in line for line in errors), errors
    assert "the bytes look like: xk3190-a12 (100%)" in result.stdout
    assert f"try `--port xk3190-a12@{link}`" in result.stdout


@contextlib.contextmanager
def _sim(tmp_path: Path, kind: str, dialect: str, *extra: str) -> Iterator[Path]:
    link = tmp_path / f"tty-{dialect}"
    with subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "sim", kind, "--dialect", dialect,
         "--pty", "--link", str(link), "--rate", "20", "--duration", "60", "--seed", "4", *extra],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as sim:  # fmt: skip
        try:
            assert sim.stdout is not None
            assert sim.stdout.readline().strip() == str(link)
            yield link
        finally:
            sim.terminate()
            sim.wait(10)


@pytest.mark.parametrize(
    ("kind", "dialect"), [(kind, d) for kind, dialects in KINDS.items() for d in dialects]
)
def test_detect_ranks_the_simulated_dialect_first(tmp_path: Path, kind: str, dialect: str) -> None:
    with _sim(tmp_path, kind, dialect) as link:
        result = run_cli("devices", "detect", "--port", str(link), "--seconds", "1.5", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    best = report["best"]
    print(f"detect: {dialect} -> {best['dialect']} confidence {best['confidence']}")
    assert best["dialect"] == dialect and best["kind"] == kind
    assert best["baud"] == "any (pseudo-terminal)"  # a pty ignores baud rates: said, not guessed
    assert best["frames"] > 0 and best["confidence"] > 0
    assert [r["confidence"] for r in report["results"]] == sorted(
        (r["confidence"] for r in report["results"]), reverse=True
    )
    assert any(dialect in c["command"] and str(link) in c["command"] for c in report["config"])


@pytest.mark.parametrize("dialect", ["xk3190-a12", "ad-cas"])
def test_detect_on_a_noisy_line_keeps_the_catch_all_below(tmp_path: Path, dialect: str) -> None:
    """Garbage in a third of the frames: scanner-line reads more of the garbled lines than the
    right dialect accepts, and still ranks below it."""
    with _sim(tmp_path, "scale", dialect, "--noise", "0.3") as link:
        result = run_cli("devices", "detect", "--port", str(link), "--seconds", "2", "--json")
    assert result.returncode == 0, result.stderr
    results = json.loads(result.stdout)["results"]
    assert results[0]["dialect"] == dialect and results[0]["errors"] > 0
    assert results[1]["dialect"] == "scanner-line" and results[1]["outranked"]


def test_detect_over_a_network_socket(tmp_path: Path) -> None:
    """A serial-over-IP box (socket://) ignores baud rates as a pty does: one capture, said so."""
    with subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "sim", "rfid", "--listen", "127.0.0.1:0",
         "--rate", "20", "--duration", "60"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as sim:  # fmt: skip
        try:
            assert sim.stdout is not None
            url = sim.stdout.readline().strip()
            result = run_cli("devices", "detect", "--port", url, "--seconds", "1.5")
        finally:
            sim.terminate()
            sim.wait(10)
    assert result.returncode == 0, result.stderr
    first = result.stdout.splitlines()[0].split()
    assert first[:2] == ["rdm6300", "100%"] and "baud any (network socket) any" in result.stdout
    assert f"custody-agent config set weighbridge.rfid rdm6300@{url}" in result.stdout
    assert result.stderr.count("listened at") == 1


def test_line_settings_of_a_real_port_are_every_baud_and_format() -> None:
    """A port that honours line settings gets every baud rate in each format the dialects use;
    a device found at settings other than its dialect's is told so."""
    from agent import devices

    settings = devices._line_settings("rfc2217://127.0.0.1:1")
    assert len(settings) == len(devices.DETECT_BAUDS) * 2
    assert {(b, f) for b, f, _ in settings} >= {("2400", "7E1"), ("115200", "8N1")}
    sample = b"WG004.139kg3D\r\n" * 3
    ranked = devices.rank([devices.Capture("2400", "8N1", "", sample)])
    assert ranked[0].score.dialect == "xk3190-a12"
    note = devices.baud_note(ranked[0])
    assert note is not None and "sends at 2400 8N1" in note and "at 9600 8N1" in note


def test_listen_says_when_no_dialect_decodes_the_bytes() -> None:
    from agent import devices

    garbage = bytes(range(0x80, 0x100)) * 4
    assert not any(s.frames for s in devices.score_dialects(garbage))
    lines = devices.hint_lines(devices.DialectHint("/dev/ttyUSB0", "nmea", (), garbage))
    assert "no dialect decodes them either" in lines[1] and "devices detect" in lines[1]
    assert lines[0].count("\\x") == 64 and "more bytes" in lines[0]


def test_detect_on_a_silent_port_says_nothing_was_heard() -> None:
    from firmware_bridge.sim.runner import PtySink

    sink = PtySink()
    try:
        result = run_cli("devices", "detect", "--port", sink.slave_path, "--seconds", "0.3")
        asked = sink.read_available()
    finally:
        sink.close()
    assert result.returncode == 8, result.stderr
    assert "nothing heard at any line setting, even when asked" in result.stderr
    assert b"SI\r\n" in asked  # a polled scale was asked for a weight


def test_unknown_dialect_is_a_config_error() -> None:
    result = run_cli("devices", "listen", "--port", "loop://", "--dialect", "nope")
    assert result.returncode == 3
    assert "unknown dialect" in result.stderr and "Traceback" not in result.stderr


def _expected(image: Path) -> str:
    """The image's expected text, byte-exact (several hold CR LF)."""
    with image.with_suffix(".txt").open(encoding="utf-8", newline="") as f:
        return f.read()


def test_camera_decode_reports_each_image(tmp_path: Path) -> None:
    good = sorted(p for p in (IMAGES / "qrcode-1").iterdir() if p.suffix != ".txt")[:2]
    none = sorted((IMAGES / "falsepositives-1").glob("*.png"))[:1]
    assert len(good) == 2 and len(none) == 1
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    result = run_cli("camera", "decode", "--json", *map(str, [*good, *none, broken]))
    assert result.returncode == 13, result.stderr
    assert "2 of 4 image(s) gave no code" in result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["path"] for o in out] == [str(p) for p in [*good, *none, broken]]
    for o, path in zip(out[: len(good)], good, strict=True):
        expected = _expected(path)
        assert [c["text"] for c in o["codes"]] == [expected] and o["status"] == "codes"
    assert out[len(good)]["codes"] == [] and out[len(good)]["status"] == "no code"
    assert out[-1]["status"] == "unreadable" and "not a readable image" in out[-1]["error"]
    every = run_cli("camera", "decode", *map(str, good))
    assert every.returncode == 0, every.stderr


def test_camera_decode_keeps_going_past_control_characters() -> None:
    """Every vendored photograph gets its line; vCards and CR LF codes are shown escaped."""
    images = sorted(p for p in IMAGES.glob("*/*") if p.suffix in (".png", ".jpg", ".webp"))
    result = run_cli("camera", "decode", "--json", *map(str, images))
    assert result.returncode == 13, result.stderr  # falsepositives-1 has no code, by design
    out = {o["path"]: o for o in map(json.loads, result.stdout.splitlines())}
    assert list(out) == [str(p) for p in images]
    with_text = [p for p in images if p.with_suffix(".txt").exists()]
    control = 0
    for p in with_text:
        expected = _expected(p)
        texts = [c["text"] for c in out[str(p)]["codes"]]
        control += any(not t.isprintable() for t in texts)
        if expected in texts:
            continue
        assert out[str(p)]["status"] != "codes", p  # a code, but a wrong one: never
    decoded = sum(out[str(p)]["status"] == "codes" for p in with_text)
    print(f"camera decode: {decoded} of {len(with_text)} images with an expected text decoded")
    assert decoded >= 80 and control >= 5
    assert all(o["status"] != "codes" for p, o in out.items() if "falsepositives" in p)
    human = run_cli("camera", "decode", *map(str, with_text))
    lines = human.stdout.splitlines()
    assert len(lines) >= len(with_text)  # one line per code: no code text breaks a line
    assert any("\\r\\n" in line for line in lines)


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
