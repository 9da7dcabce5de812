"""deploy/: systemd units, udev rules, the Mosquitto drop-in and the shell scripts.

External checkers run when installed and are skipped by name otherwise: systemd-analyze verify,
udevadm verify (systemd >= 254's udev), shellcheck. The checks of our own do not depend on them:
the units' required settings, a small udev rule evaluator that shows which names two adapters of
the same kind get, and a real Mosquitto reading the drop-in through a Debian-style main file.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from agent.settings import SETTINGS
from tests.brokers import TestPKI, free_port, identity_plugin, mosquitto_binary

REPO = Path(__file__).resolve().parents[1]
DEPLOY = REPO / "deploy"
UNITS = DEPLOY / "systemd"
RULES = DEPLOY / "udev" / "99-custody-serial.rules"


def _default(key: str) -> object:
    return next(s.default for s in SETTINGS if s.key == key)


# --- systemd ---------------------------------------------------------------------------------


def parse_unit(path: Path) -> dict[str, dict[str, list[str]]]:
    """systemd unit syntax (systemd.syntax(7)): sections of KEY=VALUE, keys may repeat."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        assert current is not None, f"{path.name}: {line!r} outside a section"
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def _seconds(value: str) -> float:
    m = re.fullmatch(r"(\d+)(s|min)?", value)
    assert m, f"unexpected time span {value!r}"
    return int(m[1]) * (60 if m[2] == "min" else 1)


def render_units(dest: Path, opt: Path, etc: Path) -> list[Path]:
    """The units with their paths moved, as deploy/install.sh --prefix writes them."""
    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for unit in sorted(UNITS.glob("*.service")):
        text = unit.read_text().replace("/opt/custody", str(opt)).replace("/etc/custody", str(etc))
        (dest / unit.name).write_text(text)
        out.append(dest / unit.name)
    return out


def test_agent_unit_has_the_required_settings() -> None:
    svc = parse_unit(UNITS / "custody-agent.service")["Service"]
    one = {k: v[-1] for k, v in svc.items()}
    assert one["Type"] == "notify"
    assert one["NotifyAccess"] == "main"
    assert one["Restart"] == "on-failure"
    assert one["ExecStart"].split()[:2] == ["/opt/custody/bin/custody-agent", "run"]
    assert one["ExecReload"] == "/bin/kill -HUP $MAINPID"
    # Stop timeout above the drain deadline, or systemd SIGKILLs a drain in progress.
    assert _seconds(one["TimeoutStopSec"]) > int(str(_default("service.drain_deadline_s")))
    # The watchdog must outlast the heartbeat timeout, so that a stale heartbeat (not a slow
    # ping) is what stops the pings.
    assert _seconds(one["WatchdogSec"]) > int(str(_default("service.heartbeat_timeout_s")))
    for key, value in {
        "ProtectSystem": "strict",
        "ReadWritePaths": "/var/lib/custody",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "DevicePolicy": "closed",
        "User": "custody",
    }.items():
        assert one[key] == value, key
    assert "dialout" in one["SupplementaryGroups"].split()
    assert "OPENBLAS_NUM_THREADS=1" in svc["Environment"]
    allowed = {v.split()[0] for v in svc["DeviceAllow"]}
    assert {"char-ttyUSB", "char-ttyACM", "char-ttyAMA", "char-video4linux"} <= allowed
    assert all(v.split()[1] == "rw" for v in svc["DeviceAllow"])
    # adjtimex(2) tells the agent whether the clock is synchronised; ProtectClock denies it.
    assert "ProtectClock" not in svc
    assert "PrivateDevices" not in svc  # would hide the serial ports despite DeviceAllow
    assert parse_unit(UNITS / "custody-agent.service")["Install"]["WantedBy"] == [
        "multi-user.target"
    ]


def test_ledger_unit_passes_every_run_option_from_the_environment_file() -> None:
    svc = parse_unit(UNITS / "custody-ledger.service")["Service"]
    exec_start = svc["ExecStart"][-1]
    assert svc["EnvironmentFile"] == ["/etc/custody/ledger.env"]
    env_file = {
        k: v
        for k, _, v in (
            line.partition("=")
            for line in (UNITS / "ledger.env").read_text().splitlines()
            if line and not line.startswith("#")
        )
    }
    defaults = {v.partition("=")[0] for v in svc["Environment"]}
    for var in re.findall(r"\$\{?(\w+)\}?", exec_start):
        if var == "MAINPID":
            continue
        assert var in env_file or var in defaults, f"${var} is set nowhere"
    # Every required option of `custody-ledger run` is on the command line.
    for option in ("--broker", "--ca-file", "--cert-file", "--key-file"):
        assert option in exec_start.split()


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.skip("systemd-analyze is not installed")
    # verify needs the ExecStart binaries and the EnvironmentFile to exist: stubs in tmp_path.
    opt, etc = tmp_path / "opt", tmp_path / "etc"
    (opt / "bin").mkdir(parents=True)
    etc.mkdir()
    for name in ("custody-agent", "custody-ledger"):
        stub = opt / "bin" / name
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    shutil.copy(UNITS / "ledger.env", etc / "ledger.env")
    units = render_units(tmp_path / "units", opt, etc)

    def verify(paths: list[Path]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [tool, "verify", *map(str, paths)], capture_output=True, text=True, timeout=120
        )

    result = verify(units)
    # verify exits 0 on unknown keys or unparsable values and only prints them: any line naming
    # one of our files is a finding.
    ours = [ln for ln in (result.stdout + result.stderr).splitlines() if str(tmp_path) in ln]
    assert result.returncode == 0, result.stderr
    assert ours == []
    # The check is not vacuous: a misspelt hardening key is reported.
    bad = tmp_path / "units" / "custody-agent.service"
    bad.write_text(bad.read_text().replace("ProtectSystem=strict", "ProtectSystm=strict"))
    result = verify([bad])
    assert "ProtectSystm" in result.stdout + result.stderr


# --- udev ------------------------------------------------------------------------------------

_TOKEN = re.compile(r'\s*([A-Z_]+(?:\{[^}]*\})?)\s*(==|!=|\+=|-=|:=|=)\s*"([^"]*)"\s*(?:,|$)')


def parse_rules(path: Path) -> list[list[tuple[str, str, str]]]:
    """udev(7) rule lines as (key, operator, value) triples; fails on anything it cannot read."""
    rules = []
    for n, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        pos, triples = 0, []
        while pos < len(line):
            m = _TOKEN.match(line, pos)
            assert m, f"{path.name}:{n}: cannot parse at {line[pos:]!r}"
            triples.append((m[1], m[2], m[3]))
            pos = m.end()
        rules.append(triples)
    return rules


def evaluate_rules(rules: list[list[tuple[str, str, str]]], env: dict[str, str]) -> dict[str, str]:
    """Runs the rules over one device's properties: the symlinks, group and mode it gets.

    Enough of udev(7) for this file: SUBSYSTEM/ACTION/ENV matches with globs and "|",
    GOTO/LABEL, IMPORT (the properties are given), SYMLINK+=, GROUP, MODE, ENV{...}=.
    """
    out: dict[str, str] = {"SYMLINK": ""}
    goto: str | None = None
    for rule in rules:
        if goto is not None:
            if ("LABEL", "=", goto) in rule:
                goto = None
            continue
        matched = True
        for key, op, value in rule:
            if op not in ("==", "!="):
                continue
            name = key[4:-1] if key.startswith("ENV{") else key
            actual = env.get(name, "")
            hit = any(fnmatch.fnmatchcase(actual, alt) for alt in value.split("|"))
            if hit != (op == "=="):
                matched = False
                break
        if not matched:
            continue
        for key, op, value in rule:
            if op in ("==", "!=") or key.startswith("IMPORT"):
                continue
            value = re.sub(r"\$env\{(\w+)\}", lambda m: env.get(m[1], ""), value)
            if key == "GOTO":
                goto = value
            elif key == "SYMLINK":
                out["SYMLINK"] = (out["SYMLINK"] + " " + value).strip()
            elif key != "LABEL":
                out[key] = value
    return out


def _usb_tty(vendor: str, model: str, serial: str, path_tag: str) -> dict[str, str]:
    env = {
        "ACTION": "add",
        "SUBSYSTEM": "tty",
        "ID_BUS": "usb",
        "ID_VENDOR_ID": vendor,
        "ID_MODEL_ID": model,
        "ID_USB_INTERFACE_NUM": "00",
        "ID_PATH_TAG": path_tag,
    }
    if serial:
        env["ID_SERIAL_SHORT"] = serial
    return env


ADAPTERS = {
    "ftdi": ("0403", "6001", "A10K3XYZ"),
    "ftdi-x": ("0403", "6015", "DN04ABCD"),
    "ch340": ("1a86", "7523", ""),
    "cp210x": ("10c4", "ea60", "0001"),
    "pl2303": ("067b", "2303", ""),
}


def test_udev_rules_have_the_expected_keys() -> None:
    rules = parse_rules(RULES)
    naming = [r for r in rules if any(k == "SYMLINK" for k, _, _ in r)]
    assert len(naming) >= 4
    vendors = set()
    for rule in naming:
        keys = {k: (op, v) for k, op, v in rule}
        assert keys["ENV{ID_VENDOR_ID}"][0] == "=="
        assert keys["ENV{ID_MODEL_ID}"][0] == "=="
        vendors.add(keys["ENV{ID_VENDOR_ID}"][1])
        op, link = keys["SYMLINK"]
        assert op == "+=" and link.startswith("custody/")
        # Each name carries what tells two adapters of a kind apart.
        assert "$env{ID_SERIAL_SHORT}" in link or "$env{ID_PATH_TAG}" in link
        assert keys["GROUP"] == ("=", "dialout")
        assert keys["MODE"] == ("=", "0660")
        assert keys["ENV{ID_MM_DEVICE_IGNORE}"] == ("=", "1")
    assert vendors == {"0403", "1a86", "10c4", "067b"}
    # Every GOTO has its LABEL.
    gotos = {v for r in rules for k, _, v in r if k == "GOTO"}
    labels = {v for r in rules for k, _, v in r if k == "LABEL"}
    assert gotos <= labels


@pytest.mark.parametrize("kind", sorted(ADAPTERS))
def test_two_adapters_of_one_kind_get_different_names(kind: str) -> None:
    rules = parse_rules(RULES)
    vendor, model, serial = ADAPTERS[kind]
    a = evaluate_rules(rules, _usb_tty(vendor, model, serial, "platform-xhci-usb-0_1_1_0"))
    b_serial = serial[:-1] + "9" if serial else ""
    b = evaluate_rules(rules, _usb_tty(vendor, model, b_serial, "platform-xhci-usb-0_1_2_1_0"))
    links_a, links_b = set(a["SYMLINK"].split()), set(b["SYMLINK"].split())
    assert links_a and links_b
    assert links_a.isdisjoint(links_b)
    assert all(link.startswith("custody/") and "$" not in link for link in links_a | links_b)
    assert a["GROUP"] == "dialout" and a["MODE"] == "0660"
    if serial:
        assert f"custody/{kind.split('-')[0]}-{serial}-if00" in links_a


def test_udev_rules_leave_other_devices_alone() -> None:
    rules = parse_rules(RULES)
    # An unknown USB-serial chip, a non-USB UART and a removal get nothing from this file.
    assert evaluate_rules(rules, _usb_tty("2341", "0043", "X", "p")) == {"SYMLINK": ""}
    uart = {"ACTION": "add", "SUBSYSTEM": "tty", "ID_PATH_TAG": "platform-uart"}
    assert evaluate_rules(rules, uart) == {"SYMLINK": ""}
    removal = {**_usb_tty("0403", "6001", "A1", "p"), "ACTION": "remove"}
    assert evaluate_rules(rules, removal) == {"SYMLINK": ""}


def test_udevadm_verify(tmp_path: Path) -> None:
    tool = shutil.which("udevadm")
    if tool is None:
        pytest.skip("udevadm is not installed")
    if subprocess.run([tool, "verify", "--help"], capture_output=True).returncode != 0:
        pytest.skip("this udevadm has no verify command (systemd < 254)")
    result = subprocess.run([tool, "verify", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


# --- Mosquitto drop-in -----------------------------------------------------------------------


def _debian_main_conf(workdir: Path, conf_d: Path) -> str:
    """Debian 12's stock /etc/mosquitto/mosquitto.conf with its paths moved into ``workdir``."""
    return "\n".join(
        [
            *(["user root"] if os.geteuid() == 0 else []),
            f"pid_file {workdir}/mosquitto.pid",
            "persistence true",
            f"persistence_location {workdir}/",
            f"log_dest file {workdir}/mosquitto.log",
            f"include_dir {conf_d}",
            "",
        ]
    )


def _start(config: Path, port: int, timeout: float = 20.0) -> subprocess.Popen[bytes]:
    with (config.parent / "stderr.txt").open("ab") as err:
        proc = subprocess.Popen([mosquitto_binary(), "-c", str(config)], stderr=err)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.1)
    return proc


def test_mosquitto_reads_the_drop_in_through_a_debian_main_file(tmp_path: Path) -> None:
    pki = TestPKI.create(tmp_path / "pki", ["gw-1"])
    etc = tmp_path / "etc-mosquitto"
    (etc / "certs").mkdir(parents=True)
    for src, name in [
        (pki.ca_file, "custody-ca.crt"),
        (pki.broker.cert, "broker.crt"),
        (pki.broker.key, "broker.key"),
        (pki.crl_file, "custody.crl"),
    ]:
        shutil.copy(src, etc / "certs" / name)
    shutil.copy(DEPLOY / "mosquitto" / "custody.acl", etc / "custody.acl")
    dropin = subprocess.run(
        [str(DEPLOY / "mosquitto" / "render-dropin.sh"), "--etc", str(etc),
         "--plugin", str(identity_plugin())],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert "@" not in "".join(ln for ln in dropin.splitlines() if not ln.startswith("#"))
    port = free_port()
    assert "\nlistener 8883\n" in dropin
    dropin = dropin.replace("\nlistener 8883\n", f"\nlistener {port} 127.0.0.1\n")
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "custody.conf").write_text(dropin)
    main = tmp_path / "mosquitto.conf"
    main.write_text(_debian_main_conf(tmp_path, conf_d))

    proc = _start(main, port)
    try:
        assert proc.poll() is None, (tmp_path / "stderr.txt").read_text()
        # Mutual TLS with a gateway certificate from the CA the drop-in names.
        ctx = pki.client_context(pki.device("gw-1"))
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
            # The identity plugin is loaded: without it the listener refuses every CONNECT. An
            # MQTT 3.1.1 CONNECT, clean session, under the certificate's CN; CONNACK 0 = accepted.
            body = b"\x00\x04MQTT\x04\x02\x00\x1e\x00\x04gw-1"
            tls.sendall(bytes([0x10, len(body)]) + body)
            assert tls.recv(4) == b"\x20\x02\x00\x00"
    finally:
        proc.terminate()
        proc.wait(timeout=20)

    # Why the drop-in drops persistence_location: custody.conf as-is stops Mosquitto.
    (conf_d / "custody.conf").write_text(
        (DEPLOY / "mosquitto" / "custody.conf")
        .read_text()
        .replace("listener 8883", f"listener {port}")
    )
    proc = _start(main, port, timeout=10)
    try:
        assert proc.wait(timeout=20) != 0
        assert "Duplicate persistence_location" in (tmp_path / "stderr.txt").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- shell scripts ---------------------------------------------------------------------------


def test_shellcheck_on_every_deploy_script() -> None:
    tool = shutil.which("shellcheck")
    if tool is None:
        pytest.skip("shellcheck is not installed")
    scripts = sorted(DEPLOY.rglob("*.sh"))
    assert DEPLOY / "install.sh" in scripts
    result = subprocess.run([tool, *map(str, scripts)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_scripts_are_strict_bash() -> None:
    for script in sorted(DEPLOY.rglob("*.sh")):
        text = script.read_text()
        assert text.startswith("#!/usr/bin/env bash\n"), script
        assert "set -euo pipefail" in text, script
        assert os.access(script, os.X_OK), script


def test_install_rejects_bad_options(tmp_path: Path) -> None:
    for args, message in [
        (["--role", "printer"], "--role must be gateway, gateway+camera, ledger or all"),
        (["--offline", str(tmp_path)], "no requirements.txt/SHA256SUMS"),
        (["--bogus"], "unknown option"),
    ]:
        result = subprocess.run(
            [str(DEPLOY / "install.sh"), "--prefix", str(tmp_path / "p"), "--no-systemd", *args],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert result.returncode == 2, (args, result.stderr)
        assert message in result.stderr
    assert not (tmp_path / "p" / "opt").exists()
