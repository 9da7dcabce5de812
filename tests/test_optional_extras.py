"""The optional extras' boundary: a gateway without ``[camera]`` or ``[postgres]`` still runs.

This checkout's venv has every extra installed, so absence is simulated: each command runs in a
subprocess whose ``sys.meta_path`` starts with a finder that refuses the extras' top-level modules
(``ModuleNotFoundError``, exactly what Python raises when a package is not installed). A real
install without them is in tests/test_deploy_install.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from custody.exits import ExitCode
from tests.service_probe import run_until_healthz

CAMERA = ("cv2", "numpy", "pyzbar", "zxingcpp")
POSTGRES = ("psycopg", "psycopg_binary")

# Runs before the program: the blocker, then argv[1] (code) with the rest as sys.argv[1:].
_PRELUDE = """
import sys

BLOCKED = set(sys.argv[1].split(","))


class Absent:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, Absent())
code = sys.argv[2]
sys.argv = [sys.argv[0], *sys.argv[3:]]
exec(compile(code, "<program>", "exec"))
"""

_AGENT = "from agent.cli import main; sys.exit(main(sys.argv[1:]))"
_LEDGER = "from ledger.cli import main; sys.exit(main(sys.argv[1:]))"


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CUSTODY_")}


def _argv(blocked: tuple[str, ...], code: str, *args: str) -> list[str]:
    return [sys.executable, "-c", _PRELUDE, ",".join(blocked), code, *args]


def _without(
    blocked: tuple[str, ...], code: str, *args: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _argv(blocked, code, *args), capture_output=True, text=True, cwd=cwd, env=_env(),
        stdin=subprocess.DEVNULL, timeout=120,
    )  # fmt: skip


def test_the_blocker_really_hides_a_module(tmp_path: Path) -> None:
    hidden = _without(CAMERA, "import cv2", cwd=tmp_path)
    assert hidden.returncode != 0
    assert "No module named 'cv2'" in hidden.stderr
    present = _without((), "import cv2", cwd=tmp_path)
    assert present.returncode == 0, present.stderr


def test_the_gateway_and_ledger_import_without_the_extras(tmp_path: Path) -> None:
    code = (
        "import json, agent.cli, agent.service.main, agent.scan.console, ledger.cli, ledger.stores;"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)))"
    )
    result = _without(CAMERA + POSTGRES, code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_importing_the_gateway_loads_no_camera_or_postgres_library(tmp_path: Path) -> None:
    """Even where the extras are installed, the gateway does not load them until asked.

    numpy is left out: sqlite-utils imports it when it happens to be installed (to adapt numpy
    values), and it is installed only with the camera extra.
    """
    heavy = {"cv2", "pyzbar", "zxingcpp", *POSTGRES}
    code = (
        "import json, agent.cli, agent.service.main, agent.scan.console;"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))"
    )
    result = _without((), code, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_camera_decode_without_the_extra_names_it(tmp_path: Path) -> None:
    image = tmp_path / "seal.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n")
    for missing in CAMERA:
        result = _without((missing,), _AGENT, "camera", "decode", str(image), cwd=tmp_path)
        assert result.returncode == ExitCode.CONFIG, result.stderr
        assert "Traceback" not in result.stderr
        assert f"lacks '{missing}'" in result.stderr
        assert "pip install 'cobalt-custody[camera]'" in result.stderr
        assert "--role gateway+camera" in result.stderr


def _initialised(tmp_path: Path) -> Path:
    ledger_dir, data = tmp_path / "ledger", tmp_path / "gw"
    made = _without(CAMERA + POSTGRES, _LEDGER, "--data-dir", str(ledger_dir), "init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    init = _without(
        CAMERA + POSTGRES, _AGENT, "--data-dir", str(data), "init", "--site", "KOL-01",
        "--device", "gw-kol-01", "--ledger-key", str(ledger_dir / "ledger-public.json"),
        cwd=tmp_path,
    )  # fmt: skip
    assert init.returncode == 0, init.stderr
    return data


def test_a_gateway_without_the_extras_records_and_reports(tmp_path: Path) -> None:
    data = _initialised(tmp_path)
    for args in (
        ["record", "weighing", "--gross-kg", "41260"],
        ["status"],
        ["events", "verify"],
    ):
        result = _without(CAMERA + POSTGRES, _AGENT, "--data-dir", str(data), *args, cwd=tmp_path)
        assert result.returncode == 0, f"{args}: {result.stderr}"


def test_the_gateway_service_and_scan_console_run_without_the_extras(tmp_path: Path) -> None:
    data = _initialised(tmp_path)
    blocked = CAMERA + POSTGRES
    port = _without(
        blocked, _AGENT, "--data-dir", str(data), "config", "set", "service.http_port", "0",
        cwd=tmp_path,
    )  # fmt: skip
    assert port.returncode == 0, port.stderr
    run = run_until_healthz(
        _argv(blocked, _AGENT, "--data-dir", str(data), "run"), env=_env(), cwd=tmp_path
    )
    assert run.healthz_status in (200, 503), run.log  # it answers: ok or degraded
    assert run.exit_code == 0, run.log
    assert "Traceback" not in run.log
    # The console without a camera: stdin at its end is the operator leaving.
    scan = _without(blocked, _AGENT, "--data-dir", str(data), "scan", cwd=tmp_path)
    assert scan.returncode == 0, scan.stderr
    assert "Bye" in scan.stdout


def test_scan_with_a_camera_without_the_extra_stops_before_starting(tmp_path: Path) -> None:
    data = _initialised(tmp_path)
    result = _without(
        CAMERA, _AGENT, "--data-dir", str(data), "scan", "--camera", "/dev/video0", cwd=tmp_path
    )
    assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'cobalt-custody[camera]'" in result.stderr


@pytest.mark.parametrize("scheme", ["postgresql", "postgres"])
def test_a_postgres_store_without_the_extra_names_it(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}://custody:s3cret@db.example:5432/ledger"
    made = _without(POSTGRES, _LEDGER, "--data-dir", str(tmp_path / "ledger"), "init", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    result = _without(
        POSTGRES, _LEDGER, "--data-dir", str(tmp_path / "ledger"), "--db", url, "alarms",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == ExitCode.STORAGE, result.stderr
    assert "Traceback" not in result.stderr
    assert "pip install 'cobalt-custody[postgres]'" in result.stderr
    assert "--role ledger" in result.stderr
    assert "s3cret" not in result.stderr
    assert f"{scheme}://custody:***@db.example:5432/ledger" in result.stderr
