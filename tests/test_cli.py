"""The command lines, run as real processes where exit codes and output matter."""

from __future__ import annotations

import argparse
import json
import stat
from pathlib import Path

import pytest
from pycose.keys import OKPKey
from pycose.keys.curves import Ed25519
from pycose.messages import Sign1Message

from agent.cli import build_parser
from agent.clock import SystemClock
from agent.paths import DataDir
from agent.service.health import OutboxGauges
from tests.conftest import Gateway
from tests.support import run_cli


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_every_agent_command_has_help() -> None:
    commands = list(_walk(build_parser()))
    assert len(commands) >= 15
    for path, parser in commands:
        text = parser.format_help()
        assert parser.description or path == (), path
        for action in parser._actions:
            if action.option_strings and action.dest != "help":
                assert action.help, f"{' '.join(path)} {action.option_strings} has no help"
        assert "usage:" in text


@pytest.mark.parametrize("prog", ["agent.cli", "ledger.cli", "ledger.verify.cli"])
def test_console_scripts_print_help(prog: str) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", prog, "--help"], capture_output=True, text=True, check=True
    )
    assert "usage:" in out.stdout


def test_init_prints_enrolment_and_protects_the_key(tmp_path: Path, ledger_dir: Path) -> None:
    data = tmp_path / "gw"
    result = run_cli(
        "init", "--site", "KOL-01", "--device", "gw-9", "--data-dir", str(data),
        "--ledger-key", str(ledger_dir / "ledger-public.json"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["device_id"] == "gw-9" and record["site_id"] == "KOL-01"
    assert len(bytes.fromhex(record["public_key"])) == 32
    assert stat.S_IMODE((data / "device.key").stat().st_mode) == 0o600
    shown = json.loads(run_cli("keys", "show", "--json", "--data-dir", str(data)).stdout)
    assert shown == record
    again = run_cli("init", "--site", "KOL-01", "--device", "gw-9", "--data-dir", str(data))
    assert again.returncode == 3 and "already initialised" in again.stderr


def test_init_rejects_bad_ids(tmp_path: Path) -> None:
    result = run_cli("init", "--site", "K O L", "--device", "gw", "--data-dir", str(tmp_path / "x"))
    assert result.returncode == 3
    assert "A-Z a-z 0-9" in result.stderr and "Traceback" not in result.stderr


def test_data_dir_from_environment(gateway: Gateway) -> None:
    result = run_cli("status", "--json", env={"CUSTODY_DATA_DIR": str(gateway.data_dir)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["device_id"] == "gw-kol-01"


def test_record_list_show_export_verify_status(gateway: Gateway, tmp_path: Path) -> None:
    d = ("--data-dir", str(gateway.data_dir))
    w = run_cli("record", "weighing", "--gross-kg", "31250.5", "--tare-kg", "12000",
                "--vehicle", "TRK-7", "--json", *d)  # fmt: skip
    assert w.returncode == 0, w.stderr
    weighing = json.loads(w.stdout)
    assert weighing["manual"] is True
    assert weighing["mass_kg"] == {"gross": "31250.5", "net": "19250.5", "tare": "12000"}
    s = run_cli("record", "seal", "--seal-id", "SEAL-000123", "--lot", "LOT-1", *d)
    assert s.returncode == 0 and "seal_scan" in s.stdout
    v = run_cli("record", "void", weighing["event_id"][:12], "--reason", "wrong truck", *d)
    assert v.returncode == 0, v.stderr

    listed = json.loads(run_cli("events", "list", "--json", *d).stdout)
    assert [e["type"] for e in listed] == [
        "boot", "weighing", "boot", "seal_scan", "boot", "void",
    ]  # fmt: skip
    assert [e["seq"] for e in listed] == [1, 2, 3, 4, 5, 6]
    human = run_cli("events", "list", *d).stdout
    assert "gross=31250.5kg" in human and "seal=SEAL-000123" in human

    shown = json.loads(run_cli("events", "show", weighing["event_id"], *d).stdout)
    assert shown["signature"] == "valid"
    assert shown["payload"]["body"]["vehicle"] == "TRK-7"
    assert "gross" in shown["payload"]["body"]["mass"]
    assert run_cli("events", "show", "ffffffffffff", *d).returncode == 6

    out = tmp_path / "export"
    e = run_cli("events", "export", "--format", "cose", "--out", str(out), *d)
    assert e.returncode == 0, e.stderr
    files = sorted(out.glob("*.cose"), key=lambda p: int(p.stem))
    assert [p.name for p in files] == [f"{i}.cose" for i in range(1, 7)]
    public = bytes.fromhex(json.loads(run_cli("keys", "show", "--json", *d).stdout)["public_key"])
    for f in files:  # an independent implementation verifies every exported envelope
        msg = Sign1Message.decode(f.read_bytes())
        msg.key = OKPKey(crv=Ed25519, x=public)
        assert msg.verify_signature(), f.name

    ok = run_cli("events", "verify", *d)
    assert ok.returncode == 0 and "6 event(s)" in ok.stdout

    status = json.loads(run_cli("status", "--json", *d).stdout)
    assert status["events"] == {"pending": 6, "sent": 0, "acked": 0, "rejected": 0}
    assert status["boot_counter"] == 3
    assert status["oldest_unacked_age_s"] >= 0
    assert 0 < status["disk_budget"]["used_bytes"] < status["disk_budget"]["budget_bytes"]
    assert status["clock_quality"] in {"synced", "unsynced", "none"}
    assert status["alarms"] == []
    # /healthz reads the same outbox through the same function: one meaning for both.
    gauges = OutboxGauges(
        DataDir(gateway.data_dir).outbox,
        budget_bytes=status["disk_budget"]["budget_bytes"],
        alarm_percent=status["disk_budget"]["alarm_percent"],
        clock=SystemClock(earliest_valid_ms=0),
        boot=status["boot_counter"],
    )
    try:
        served = gauges.snapshot()
    finally:
        gauges.close()
    assert served["clock_quality"] in {"synced", "unsynced", "none"}
    for key in ("events", "disk_budget", "boot_counter", "alarms", "rejected_reasons"):
        assert served[key] == status[key], key


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (("record", "weighing", "--gross-kg", "12.345"), 6, "resolution"),
        (("record", "weighing", "--gross-kg", "10", "--tare-kg", "20"), 6, "exceeds gross"),
        (("record", "weighing", "--gross-kg", "-5"), 6, "non-negative"),
        (("record", "seal", "--seal-id", "x" * 200), 6, "printable"),
        (("record", "weighing"), 2, "--gross-kg"),
        (("events", "list", "--state", "lost"), 2, "invalid choice"),
    ],
)
def test_user_errors_are_one_line_with_an_exit_code(
    gateway: Gateway, args: tuple[str, ...], code: int, needle: str
) -> None:
    result = run_cli(*args, "--data-dir", str(gateway.data_dir))
    assert result.returncode == code, result.stderr
    assert needle in result.stderr
    assert "Traceback" not in result.stderr


def test_commands_on_an_uninitialised_dir_say_so(tmp_path: Path) -> None:
    result = run_cli("status", "--data-dir", str(tmp_path / "nothing"))
    assert result.returncode == 3 and "custody-agent init" in result.stderr


def test_ledger_init_writes_keys_gateways_can_pin(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(tmp_path / "l"), "init"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    public = Path(out.stdout.strip())
    assert public.name == "ledger-public.json" and public.exists()
    assert stat.S_IMODE((tmp_path / "l" / "ledger.key").stat().st_mode) == 0o600
    again = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "--data-dir", str(tmp_path / "l"), "init"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert again.returncode == 4 and "refusing" in again.stderr
