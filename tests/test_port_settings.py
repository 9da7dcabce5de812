"""One way to name a device port, DIALECT@URL, in settings and options; older files still load."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.settings import check_config, deprecation_notes, load_config, parse_setting
from agent.workflows.station import weighbridge_ports
from tests.support import REPO, run_cli

DEVICE = '[device]\nid = "gw-1"\nsite = "KOL-01"\n'
INDICATOR = "/dev/serial/by-id/usb-FTDI_A1-if00-port0"


def write(path: Path, text: str) -> Path:
    path.write_text(DEVICE + text, encoding="utf-8")
    return path


def test_an_older_file_loads_into_the_same_station(tmp_path: Path) -> None:
    old = write(
        tmp_path / "old.toml",
        f'[weighbridge]\nport = "{INDICATOR}"\ndialect = "xk3190-a9"\n'
        'rfid = "rdm6300@/dev/ttyUSB1"\n'
        '[scan]\nscale_port = "/dev/ttyUSB2"\nscale_dialect = "mt-sics"\n'
        'scanner_port = "/dev/ttyACM0"\n',
    )
    new = write(
        tmp_path / "new.toml",
        f'[weighbridge]\nport = "xk3190-a9@{INDICATOR}"\nrfid = "rdm6300@/dev/ttyUSB1"\n'
        '[scan]\nscale_port = "mt-sics@/dev/ttyUSB2"\n'
        'scanner_port = "scanner-line@/dev/ttyACM0"\n',
    )
    a, b = load_config(old), load_config(new)
    assert (a.wb_port, a.wb_dialect) == (b.wb_port, b.wb_dialect) == (INDICATOR, "xk3190-a9")
    assert (a.scan_scale_port, a.scan_scale_dialect) == ("/dev/ttyUSB2", "mt-sics")
    assert (b.scan_scale_port, b.scan_scale_dialect) == ("/dev/ttyUSB2", "mt-sics")
    assert a.scan_scanner_port == b.scan_scanner_port == "/dev/ttyACM0"
    station = weighbridge_ports(a.wb_port, a.wb_dialect, a.wb_rfid, a.wb_scanner)
    assert station == weighbridge_ports(b.wb_port, b.wb_dialect, b.wb_rfid, b.wb_scanner)
    assert [p.spec for p in station] == [f"xk3190-a9@{INDICATOR}", "rdm6300@/dev/ttyUSB1"]


def test_an_older_bare_url_keeps_its_default_dialect(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.toml", f'[weighbridge]\nport = "{INDICATOR}"\n'))
    assert (cfg.wb_port, cfg.wb_dialect) == (INDICATOR, "xk3190-a12")
    notes = deprecation_notes(tmp_path / "c.toml")
    assert notes == [
        f"{tmp_path / 'c.toml'}: weighbridge.port: a bare URL is the older form and still "
        f'works; write the dialect in the port: weighbridge.port = "xk3190-a12@{INDICATOR}"'
    ]


def test_config_check_notes_the_older_form_with_its_one_line_replacement(
    tmp_path: Path,
) -> None:
    data = tmp_path / "gw"
    data.mkdir()
    write(data / "config.toml", f'[weighbridge]\nport = "{INDICATOR}"\ndialect = "sma"\n')
    result = run_cli("--data-dir", str(data), "config", "check")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (
        f"note: {data / 'config.toml'}: weighbridge.port: a bare URL with weighbridge.dialect "
        f"is the older form and still works; write the dialect in the port: "
        f'weighbridge.port = "sma@{INDICATOR}" and remove the weighbridge.dialect line'
    ) in result.stdout
    assert result.stdout.rstrip().endswith(": ok")
    # The one-line replacement, written by `config set`, loads the same; the note then only
    # asks for the leftover line to go, and without it the file is current.
    set_ = run_cli("--data-dir", str(data), "config", "set", "weighbridge.port", f"sma@{INDICATOR}")
    assert set_.returncode == 0, set_.stderr
    cfg = load_config(data / "config.toml")
    assert (cfg.wb_port, cfg.wb_dialect) == (INDICATOR, "sma")
    again = run_cli("--data-dir", str(data), "config", "check")
    assert (
        "weighbridge.dialect: no longer needed, weighbridge.port names the dialect sma; "
        "remove the weighbridge.dialect line"
    ) in again.stdout
    write(data / "config.toml", f'[weighbridge]\nport = "sma@{INDICATOR}"\n')
    current = run_cli("--data-dir", str(data), "config", "check")
    assert current.stdout == f"{data / 'config.toml'}: ok\n"


@pytest.mark.parametrize(
    ("snippet", "key", "reason_part"),
    [
        ('[weighbridge]\nport = "rdm6300@/dev/ttyUSB0"\n', "weighbridge.port",
         "rdm6300 is not a scale dialect"),
        ('[weighbridge]\nport = "xk3190@/dev/ttyUSB0"\n', "weighbridge.port",
         "unknown dialect 'xk3190'"),
        ('[weighbridge]\nport = "xk3190-a12@"\n', "weighbridge.port", "port URL after"),
        ('[scan]\nscanner_port = "rdm6300@/dev/ttyUSB0"\n', "scan.scanner_port",
         "not a scanner dialect"),
    ],
)  # fmt: skip
def test_a_wrong_port_names_the_key_and_why(
    tmp_path: Path, snippet: str, key: str, reason_part: str
) -> None:
    problems = check_config(write(tmp_path / "c.toml", snippet))
    assert [p.key for p in problems] == [key]
    assert reason_part in problems[0].reason


def test_the_port_s_dialect_wins_over_an_older_line_and_the_note_says_so(
    tmp_path: Path,
) -> None:
    path = write(
        tmp_path / "c.toml", f'[weighbridge]\nport = "sma@{INDICATOR}"\ndialect = "xk3190-a12"\n'
    )
    cfg = load_config(path)
    assert (cfg.wb_port, cfg.wb_dialect) == (INDICATOR, "sma")
    assert deprecation_notes(path) == [
        f"{path}: weighbridge.dialect: no longer needed, weighbridge.port names the dialect "
        "sma ('xk3190-a12' is ignored); remove the weighbridge.dialect line"
    ]


def test_config_set_takes_dialect_at_url() -> None:
    assert parse_setting("weighbridge.port", f"xk3190-a12@{INDICATOR}") == (
        f"xk3190-a12@{INDICATOR}"
    )
    with pytest.raises(ValueError, match="not a scale dialect"):
        parse_setting("scan.scale_port", "nmea@/dev/ttyUSB0")


@pytest.fixture
def scale_link(tmp_path: Path) -> Iterator[Path]:
    link = tmp_path / "scale"
    with subprocess.Popen(
        [sys.executable, "-m", "agent.cli", "sim", "scale", "--dialect", "xk3190-a12",
         "--pty", "--link", str(link), "--rate", "20"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    ) as sim:  # fmt: skip
        try:
            assert sim.stdout is not None
            assert sim.stdout.readline().strip() == str(link)  # printed once the link exists
            yield link
        finally:
            sim.terminate()
            sim.wait(10)


def test_listen_takes_the_port_as_dialect_at_url(scale_link: Path) -> None:
    result = run_cli(
        "devices", "listen", "--port", f"xk3190-a12@{scale_link}", "--duration", "1.5", "--json"
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    frames = [x["item"] for x in lines if x["kind"] == "frame"]
    assert frames and all(f["type"] == "WeightReading" for f in frames)


def test_listen_refuses_a_port_without_a_dialect_or_with_two() -> None:
    bare = run_cli("devices", "listen", "--port", "loop://", "--duration", "1")
    assert bare.returncode == 2, bare.stderr
    assert "--port loop://: name the dialect, as --port DIALECT@URL" in bare.stderr
    both = run_cli("devices", "listen", "--port", "sma@loop://", "--dialect", "xk3190-a12")
    assert both.returncode == 2, both.stderr
    assert "--port names dialect sma but --dialect says xk3190-a12" in both.stderr
