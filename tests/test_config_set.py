"""``custody-agent config set`` and ``config check`` as a site engineer types them: every
refusal is one plain line naming the key, the value and what is expected, with exit 3, and
the file is left as it was."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import enrol
from tests.support import run_cli


@pytest.fixture
def gw(tmp_path: Path) -> Path:
    data_dir = tmp_path / "gw"
    enrol.initialise(data_dir, site_id="KOL-01", device_id="gw-kol-01")
    return data_dir


@pytest.mark.parametrize(
    ("key", "value", "says"),
    [("sync.window", "abc", "sync.window: must be an integer between 1 and 64, got 'abc'"),
     ("sync.window", "0", "sync.window: must be an integer between 1 and 64, got 0"),
     ("weighbridge.window_s", "fast",
      "weighbridge.window_s: must be a number of seconds between 0 and 600, got 'fast'"),
     ("weighbridge.stored_tare", "yes",
      "weighbridge.stored_tare: must be true or false, got 'yes'"),
     ("devices.ports", "X", """devices.ports: 'X': expected "DIALECT@URL\""""),
     ("devices.ports", "[x", "devices.ports: '[x' starts like a list but is not one"),
     ("devices.ports", "nope@/dev/ttyUSB0", "unknown dialect 'nope'; known:"),
     ("sync.windw", "3", "sync.windw: unknown setting; did you mean sync.window?"),
     ("service.http_host", "0.0.0.0",  # noqa: S104 - the refusal under test
      "service.http_host: 0.0.0.0 is not a loopback address"),
     ("service.http_host", "localhost",
      "service.http_host: must be an IP address such as 127.0.0.1, got 'localhost'"),
     ("weighbridge.gross_min_kg", "200000",
      "weighbridge.gross_min_kg: 200000 is above weighbridge.gross_max_kg = 100000"),
     ("weighbridge.max_seals_per_visit", "0",
      "weighbridge.max_seals_per_visit: must be an integer between 1 and 1000, got 0")],
)  # fmt: skip
def test_a_refused_value_says_key_value_and_what_is_expected(
    gw: Path, key: str, value: str, says: str
) -> None:
    before = (gw / "config.toml").read_text()
    done = run_cli("--data-dir", str(gw), "config", "set", key, value)
    assert done.returncode == 3, done.stderr
    assert says in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr  # one line, no traceback
    for noise in ("invalid literal", "Expecting value", "JSON", " -:", ": :"):
        assert noise not in done.stderr
    assert (gw / "config.toml").read_text() == before


def test_lists_are_typed_as_comma_separated_items(gw: Path) -> None:
    spec = "xk3190-a12@/dev/ttyUSB0,rdm6300@/dev/ttyUSB1"
    done = run_cli("--data-dir", str(gw), "config", "set", "devices.ports", spec)
    assert done.returncode == 0, done.stderr
    assert (
        'ports = ["xk3190-a12@/dev/ttyUSB0", "rdm6300@/dev/ttyUSB1"]'
        in (gw / "config.toml").read_text()
    )
    assert run_cli("--data-dir", str(gw), "config", "check").returncode == 0


def test_a_non_loopback_address_is_accepted_with_a_token_file(gw: Path) -> None:
    (gw / "http.token").write_text("0123456789abcdef0123\n")
    done = run_cli(
        "--data-dir", str(gw), "config", "set", "service.http_token_file", "http.token",
        "service.http_host", "10.8.0.2",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert 'http_host = "10.8.0.2"' in (gw / "config.toml").read_text()


def test_file_level_errors_carry_no_stray_key(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    done = run_cli("--data-dir", str(missing), "config", "set", "sync.window", "3")
    assert done.returncode == 3, done.stderr
    assert f"{missing / 'config.toml'}: file not found (run `custody-agent init`)" in done.stderr
    assert "Traceback" not in done.stderr and "-:" not in done.stderr


def test_config_check_names_a_broken_file_without_a_stray_key(gw: Path) -> None:
    (gw / "config.toml").write_text("[device\nid=")
    done = run_cli("--data-dir", str(gw), "config", "check")
    assert done.returncode == 3, done.stderr
    assert done.stdout.startswith(f"{gw / 'config.toml'}: not valid TOML"), done.stdout
    assert "-:" not in done.stdout
