"""The declarative settings table, the TOML loader and `config check`."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from agent.settings import OLDER_KEYS, SETTINGS, check_config, load_config, render_config
from custody.errors import ConfigError
from tests.support import run_cli


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_rendered_config_loads_with_every_default(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path / "c.toml", render_config("gw-1", "KOL-01")))
    assert (cfg.device_id, cfg.site_id) == ("gw-1", "KOL-01")
    for s in SETTINGS:
        if s.default is not None:
            assert getattr(cfg, s.attr) == s.default, s.key


def test_rendered_config_documents_every_setting() -> None:
    text = render_config("gw-1", "KOL-01")
    for s in SETTINGS:
        assert (s.help in text) == (s.key not in OLDER_KEYS)
        assert s.help.strip() and s.help[0].isupper()
    # The older port-and-dialect pairs are read, never written: a new file has one form.
    assert set(_flat(tomllib.loads(text))) == {s.key for s in SETTINGS} - OLDER_KEYS
    assert {"weighbridge.dialect", "scan.scale_dialect"} == OLDER_KEYS


def _flat(raw: dict[str, dict[str, object]]) -> list[str]:
    return [f"{sec}.{k}" for sec, t in raw.items() for k in t]


@pytest.mark.parametrize(
    ("snippet", "key", "reason_part"),
    [
        ('[device]\nsite = "KOL-01"\n', "device.id", "required"),
        ('[device]\nid = "gw 1"\nsite = "KOL-01"\n', "device.id", "A-Z a-z 0-9"),
        ('[device]\nid = "gw"\nsite = "K"\n[outbox]\nbudget_mb = "big"\n', "outbox.budget_mb",
         "integer"),
        ('[device]\nid = "gw"\nsite = "K"\n[outbox]\nalarm_percent = 150\n',
         "outbox.alarm_percent", "between 1 and 99"),
        ('[device]\nid = "gw"\nsite = "K"\n[outbox]\ncolour = 1\n', "outbox.colour", "unknown"),
        ('[device]\nid = "gw"\nsite = "K"\n[clock]\nearliest_valid = "soon"\n',
         "clock.earliest_valid", "date"),
        ('[device]\nid = "gw"\nsite = "K"\n[outbox]\nstartup_check = "none"\n',
         "outbox.startup_check", "one of"),
        # A TOML date-time is a datetime, a subclass of date: refused here, not where it is used.
        ('[device]\nid = "gw"\nsite = "K"\n[clock]\nearliest_valid = 2026-01-01T00:00:00\n',
         "clock.earliest_valid", "not a date and time"),
        # Paths that would only fail where they are used: "~user" of no user, a NUL.
        ('[device]\nid = "gw"\nsite = "K"\n[ledger]\npublic_keys = "~no-such-user-x/l.json"\n',
         "ledger.public_keys", "home directory"),
        ('[device]\nid = "gw"\nsite = "K"\n[sync]\nca_file = "ca\\u0000.pem"\n', "sync.ca_file",
         "NUL"),
        ("[device\nid=", "-", "not valid TOML"),
    ],
)  # fmt: skip
def test_bad_values_name_file_key_and_reason(
    tmp_path: Path, snippet: str, key: str, reason_part: str
) -> None:
    path = write(tmp_path / "config.toml", snippet)
    problems = check_config(path)
    assert [p.key for p in problems] == [key]
    assert reason_part in problems[0].reason
    assert problems[0].source == str(path)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and key in str(err.value)


def test_check_reports_every_problem_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "c.toml", "[outbox]\nbudget_mb = 1\nalarm_percent = 0\n")
    keys = sorted(p.key for p in check_config(path))
    assert keys == ["device.id", "device.site", "outbox.alarm_percent", "outbox.budget_mb"]


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    problems = check_config(tmp_path / "absent.toml")
    assert len(problems) == 1 and "not found" in problems[0].reason


def test_cli_config_check(gateway) -> None:  # type: ignore[no-untyped-def]
    ok = run_cli("config", "check", "--data-dir", str(gateway.data_dir))
    assert ok.returncode == 0, ok.stderr
    cfg = gateway.data_dir / "config.toml"
    cfg.write_text(cfg.read_text() + "\n[extra]\nthing = 1\n")
    bad = run_cli("config", "check", "--json", "--data-dir", str(gateway.data_dir))
    assert bad.returncode == 3
    out = json.loads(bad.stdout)
    assert out["ok"] is False and out["problems"] == [
        {"key": "extra.thing", "reason": "unknown setting"}
    ]
    # Every other command refuses to run on it with one line naming file and key.
    status = run_cli("status", "--data-dir", str(gateway.data_dir))
    assert status.returncode == 3
    assert "extra.thing" in status.stderr and str(cfg) in status.stderr
    assert "Traceback" not in status.stderr and len(status.stderr.strip().splitlines()) == 1
