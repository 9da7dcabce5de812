"""deploy/install.sh into a temporary root, as docs/operations.md "Try it out" does.

The installed venv (not this checkout's) records and verifies events; a second run changes no
data and keeps the operator's edits; the offline bundle installs without an index and refuses a
tampered wheel. The gateway role installs none of the optional extras (OpenCV, numpy, psycopg),
runs without them, and names the extra when a camera is asked for. pip's own cache keeps the
repeated installs fast.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.service_probe import run_until_healthz

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "deploy" / "install.sh"
BUNDLE = REPO / "deploy" / "build-offline-bundle.sh"

pytestmark = pytest.mark.slow

# The optional extras' distributions and modules a camera-less gateway must not have.
EXTRAS_PROJECTS = {"opencv-python-headless", "numpy", "pyzbar", "zxing-cpp", "psycopg"}
EXTRAS_MODULES = ("cv2", "numpy", "pyzbar", "zxingcpp", "psycopg")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"  # not this checkout's .venv
    return env


def _run(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), capture_output=True, text=True, cwd=cwd, env=_env(), timeout=timeout
    )


def _install(prefix: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(str(INSTALL), "--prefix", str(prefix), "--no-systemd", *extra, cwd=prefix.parent)


def _agent(prefix: Path, *args: str) -> subprocess.CompletedProcess[str]:
    data = prefix / "var" / "lib" / "custody"
    exe = prefix / "opt" / "custody" / "bin" / "custody-agent"
    return _run(str(exe), "--data-dir", str(data), *args, cwd=prefix)


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _assert_slim_gateway(prefix: Path) -> None:
    """The venv under ``prefix`` has no optional extra, and the gateway runs without them."""
    python = prefix / "opt/custody/bin/python"
    probe = _run(
        str(python), "-c",
        "import importlib.util, json, sys; import agent.cli, agent.service.main;"
        f"print(json.dumps([m for m in {EXTRAS_MODULES!r} if importlib.util.find_spec(m)]))",
        cwd=prefix,
    )  # fmt: skip
    assert probe.returncode == 0, probe.stderr
    assert json.loads(probe.stdout) == []
    listed = _run(str(python), "-m", "pip", "list", "--format=json", cwd=prefix)
    assert listed.returncode == 0, listed.stderr
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert "cobalt-custody" in installed
    assert installed.isdisjoint(EXTRAS_PROJECTS), installed & EXTRAS_PROJECTS
    helped = _agent(prefix, "--help")
    assert helped.returncode == 0, helped.stderr
    image = prefix / "seal.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    camera = _agent(prefix, "camera", "decode", str(image))
    assert camera.returncode == 3, camera.stderr  # ExitCode.CONFIG
    assert "Traceback" not in camera.stderr
    assert "pip install 'cobalt-custody[camera]'" in camera.stderr
    assert "--role gateway+camera" in camera.stderr


def _record_and_verify(prefix: Path) -> list[str]:
    """Ledger keys, then init, two records and events verify with the installed agent.

    Returns the types of the events listed.
    """
    ledger_dir = prefix / "ledger-keys"
    ledger = _run(
        str(prefix / "opt/custody/bin/custody-ledger"), "--data-dir", str(ledger_dir), "init",
        cwd=prefix,
    )  # fmt: skip
    assert ledger.returncode == 0, ledger.stderr
    ok = _agent(
        prefix, "init", "--site", "KOL-01", "--device", "gw-kol-01",
        "--ledger-key", str(ledger_dir / "ledger-public.json"),
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    for args in (["--gross-kg", "41260", "--vehicle", "CD-KLZ-4471"], ["--gross-kg", "12000"]):
        rec = _agent(prefix, "record", "weighing", *args)
        assert rec.returncode == 0, rec.stderr
    verify = _agent(prefix, "events", "verify", "--json")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    listed = _agent(prefix, "events", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    return [e["type"] for e in json.loads(listed.stdout)]


def test_prefix_install_records_and_verifies_and_is_idempotent(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    first = _install(prefix, "--role", "gateway", "--from-source", str(REPO))
    assert first.returncode == 0, first.stderr
    _assert_slim_gateway(prefix)
    opt, data, etc = prefix / "opt/custody", prefix / "var/lib/custody", prefix / "etc/custody"
    # The console scripts run from the installed venv, not from this checkout.
    where = _run(str(opt / "bin/python"), "-c", "import agent; print(agent.__file__)", cwd=tmp_path)
    assert where.stdout.startswith(str(opt)), where.stdout
    assert (etc / "agent.env").is_file()
    assert not (etc / "ledger.env").exists()  # agent role only
    assert not (prefix / "etc" / "systemd").exists()  # --no-systemd
    assert (data.stat().st_mode & 0o777) == 0o750

    assert _record_and_verify(prefix).count("weighing") == 2
    # The service too runs without the extras.
    port = _agent(prefix, "config", "set", "service.http_port", "0")
    assert port.returncode == 0, port.stderr
    exe = str(opt / "bin" / "custody-agent")
    run = run_until_healthz([exe, "--data-dir", str(data), "run"], env=_env(), cwd=tmp_path)
    assert run.healthz_status in (200, 503), run.log  # it answers: ok or degraded
    assert run.exit_code == 0, run.log
    (etc / "agent.env").write_text("# edited on site\nCUSTODY_DATA_DIR=/var/lib/custody\n")
    before = _digest(data)

    second = _install(prefix, "--role", "agent", "--from-source", str(REPO))  # the old name
    assert second.returncode == 0, second.stderr
    assert "creating the venv" not in second.stderr  # reused
    assert _digest(data) == before  # data untouched
    assert (etc / "agent.env").read_text().startswith("# edited on site")
    verify = _agent(prefix, "events", "verify")
    assert verify.returncode == 0, verify.stderr
    rec = _agent(prefix, "record", "seal", "--seal-id", "SEAL-0001")
    assert rec.returncode == 0, rec.stderr


def test_the_camera_role_installs_the_camera_extra_and_decodes(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    done = _install(prefix, "--role", "gateway+camera", "--from-source", str(REPO))
    assert done.returncode == 0, done.stderr
    python = prefix / "opt/custody/bin/python"
    listed = _run(str(python), "-m", "pip", "list", "--format=json", cwd=prefix)
    installed = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"opencv-python-headless", "numpy", "pyzbar", "zxing-cpp"} <= installed
    assert "psycopg" not in installed  # the central side's alone
    image = REPO / "tests/data/conformance/images/code128-1/1.png"
    found = _agent(prefix, "camera", "decode", "--json", str(image))
    assert found.returncode == 0, found.stderr
    assert [c["text"] for c in json.loads(found.stdout)["codes"]] == ["168901"]


def test_an_unknown_role_is_refused_before_anything_is_installed(tmp_path: Path) -> None:
    prefix = tmp_path / "root"
    refused = _install(prefix, "--role", "camera", "--from-source", str(REPO))
    assert refused.returncode == 2
    assert "--role must be gateway, gateway+camera, ledger or all, not 'camera'" in refused.stderr
    assert not (prefix / "opt").exists()


def test_offline_bundle_installs_without_an_index_and_refuses_tampering(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    built = _run(str(BUNDLE), "--out", str(bundle), "--arch", "host", cwd=tmp_path)
    assert built.returncode == 0, built.stderr
    manifest = json.loads((bundle / "MANIFEST.json").read_text())
    projects = {w["project"] for w in manifest["wheels"]}
    assert {"cobalt-custody", "pynacl", "cbor2", "paho-mqtt"} <= projects
    assert manifest["role"] == "gateway"  # the default: no camera, no PostgreSQL client
    assert projects.isdisjoint(EXTRAS_PROJECTS), projects & EXTRAS_PROJECTS
    for w in manifest["wheels"]:
        assert hashlib.sha256((bundle / w["file"]).read_bytes()).hexdigest() == w["sha256"]
    assert (bundle / "deploy" / "install.sh").is_file()  # the bundle installs itself

    prefix = tmp_path / "root"
    env_installer = str(bundle / "deploy" / "install.sh")
    # No index at all: a wheel missing from the bundle could not be fetched.
    done = _run(
        env_installer, "--prefix", str(prefix), "--no-systemd", "--offline", str(bundle),
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "installed (gateway)" in done.stderr  # the bundle's role
    _assert_slim_gateway(prefix)
    assert _record_and_verify(prefix).count("weighing") == 2

    # Another role from this bundle: refused, naming the bundle to build.
    other = _run(
        env_installer, "--prefix", str(prefix), "--no-systemd", "--offline", str(bundle),
        "--role", "ledger", cwd=tmp_path,
    )  # fmt: skip
    assert other.returncode != 0
    assert "built for role gateway, not ledger" in other.stderr
    assert "build-offline-bundle.sh --role ledger" in other.stderr

    # A wheel altered after the bundle was made: refused before pip runs.
    victim = bundle / next(w["file"] for w in manifest["wheels"] if w["project"] == "cbor2")
    victim.write_bytes(victim.read_bytes() + b"\0")
    refused = _run(
        env_installer, "--prefix", str(prefix), "--no-systemd", "--offline", str(bundle),
        cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode != 0
    assert "hash mismatch" in refused.stderr
    verify = _agent(prefix, "events", "verify")  # the earlier install still works
    assert verify.returncode == 0, verify.stderr


def test_offline_install_fails_cleanly_when_a_wheel_is_missing(tmp_path: Path) -> None:
    """A bundle whose requirements name a wheel it lacks fails at the hash check, not half-way."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "requirements.txt").write_text("cbor2==5.6.5 --hash=sha256:" + "0" * 64 + "\n")
    (bundle / "SHA256SUMS").write_text("0" * 64 + "  cbor2-5.6.5-py3-none-any.whl\n")
    shutil.copytree(REPO / "deploy", bundle / "deploy")
    result = _run(
        str(bundle / "deploy" / "install.sh"), "--prefix", str(tmp_path / "root"),
        "--no-systemd", "--offline", str(bundle), cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode != 0
    assert "hash mismatch" in result.stderr
    assert not (tmp_path / "root" / "opt" / "custody" / "bin" / "custody-agent").exists()
