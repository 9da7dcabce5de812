"""Installed size and idle memory of each install role (docs/operations.md "Roles").

For each role a fresh venv is made and the project wheel installed with the role's extras,
exactly as ``deploy/install.sh --role ROLE`` does (gateway: none; gateway+camera: ``[camera]``;
ledger: ``[postgres]``). pip resolves through its usual configuration and cache.

Measured, from outside the programs:

- ``site_packages_mb``: the bytes of every file under the venv's ``site-packages`` (what
  ``du --apparent-size`` counts), and ``distributions``, the number installed.
- ``extras_present``: which of OpenCV, numpy, pyzbar, zxing-cpp and psycopg the venv can import
  (``importlib.util.find_spec``); a slim gateway has none.
- ``service_rss_mb``: ``VmRSS`` (``/proc/PID/status``) of the role's service with its default
  configuration, idle, ``--settle`` seconds after it is up: ``custody-agent run`` on a freshly
  initialised gateway (ready = its ``/healthz`` answers; only ``service.http_port`` is moved to a
  free port so the bench runs beside others) for the gateway roles, and ``custody-ledger run`` on
  a fresh ledger with the default SQLite store, connected to a private Mosquitto (ready = it
  printed its "ledger intake on" line) for the ledger role. The largest of ``--samples`` readings
  one second apart.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from lab.mosquitto import MosquittoBroker, free_port

SUMMARY = "installed size and idle service RSS of each install role (gateway, +camera, ledger)"

REPO = Path(__file__).resolve().parents[1]
# role -> the extras install.sh installs for it
ROLES: dict[str, str] = {"gateway": "", "gateway+camera": "camera", "ledger": "postgres"}
EXTRA_MODULES = ("cv2", "numpy", "pyzbar", "zxingcpp", "psycopg")
START_TIMEOUT_S = 60.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--role", action="append", choices=sorted(ROLES),
        help="measure only this role (repeatable; default: all three)",
    )  # fmt: skip
    parser.add_argument(
        "--settle", type=float, default=3.0, help="seconds idle after start before sampling"
    )
    parser.add_argument("--samples", type=int, default=3, help="VmRSS readings, 1 s apart")
    parser.add_argument(
        "--keep", type=Path, metavar="DIR", help="build the venvs in DIR and keep them"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    roles = args.role or list(ROLES)
    results: dict[str, Any] = {}
    with _workdir(args.keep) as root:
        wheel = _project_wheel(root / "wheel")
        for role in roles:
            venv = root / role.replace("+", "-")
            _install(venv, wheel, ROLES[role])
            site = _site_packages(venv)
            found = _python(
                venv, "import importlib.util as u, sys; "
                f"print(' '.join(m for m in {EXTRA_MODULES!r} if u.find_spec(m)))",
            ).split()  # fmt: skip
            entry: dict[str, Any] = {
                "extras": ROLES[role] or None,
                "site_packages_mb": round(_tree_bytes(site) / 1e6, 1),
                "distributions": sum(1 for _ in site.glob("*.dist-info")),
                "extras_present": found,
            }
            if role == "ledger":
                entry["service"] = "custody-ledger run"
                entry["service_rss_mb"] = _ledger_rss(venv, root / f"{role}-run", args)
            else:
                entry["service"] = "custody-agent run"
                entry["service_rss_mb"] = _agent_rss(venv, root / f"{role}-run", args)
            results[role] = entry
    return {"python": sys.version.split()[0], "roles": results}


def render(result: Mapping[str, Any]) -> str:
    lines = [
        f"{'role':<16} {'site-packages':>14} {'dists':>6} {'service RSS':>12}  extras importable",
    ]
    for role, r in result["roles"].items():
        lines.append(
            f"{role:<16} {r['site_packages_mb']:>11.1f} MB {r['distributions']:>6} "
            f"{r['service_rss_mb']:>9.1f} MB  {', '.join(r['extras_present']) or '-'}"
        )
    lines.append(f"(CPython {result['python']}; RSS of {', '.join(_services(result))}, idle)")
    return "\n".join(lines)


def _services(result: Mapping[str, Any]) -> list[str]:
    return sorted({r["service"] for r in result["roles"].values()})


@contextlib.contextmanager
def _workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="custody-footprint-") as tmp:
        yield Path(tmp)


def _env() -> dict[str, str]:
    """This process's environment without the checkout's venv or custody settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUSTODY_", "VIRTUAL_ENV"))}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    return env


def _check(cmd: list[str], cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, env=_env(), cwd=cwd, timeout=1800)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def _project_wheel(out: Path) -> Path:
    _check([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
            str(REPO)])  # fmt: skip
    return next(out.glob("cobalt_custody-*.whl"))


def _install(venv: Path, wheel: Path, extras: str) -> None:
    if not (venv / "bin" / "python").exists():
        _check([sys.executable, "-m", "venv", str(venv)])
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    # The project first, replacing a kept venv's copy of the same version; then its extras.
    _check([*pip, "--force-reinstall", "--no-deps", str(wheel)])
    _check([*pip, f"{wheel}[{extras}]" if extras else str(wheel)])


def _python(venv: Path, code: str) -> str:
    return _check([str(venv / "bin" / "python"), "-c", code])


def _site_packages(venv: Path) -> Path:
    return Path(_python(venv, "import sysconfig; print(sysconfig.get_paths()['purelib'])").strip())


def _tree_bytes(root: Path) -> int:
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def _vmrss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no VmRSS for process {pid}")
    return int(match.group(1)) / 1024


def _sample(proc: subprocess.Popen[bytes], args: argparse.Namespace) -> float:
    time.sleep(args.settle)
    readings = []
    for i in range(max(1, args.samples)):
        if proc.poll() is not None:
            raise RuntimeError(f"the service exited ({proc.returncode}) while idle")
        readings.append(_vmrss_mb(proc.pid))
        if i + 1 < args.samples:
            time.sleep(1.0)
    return round(max(readings), 1)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _agent_rss(venv: Path, work: Path, args: argparse.Namespace) -> float:
    work.mkdir(parents=True, exist_ok=True)
    ledger, data = work / "ledger", work / "gateway"
    bin_ = venv / "bin"
    _check([str(bin_ / "custody-ledger"), "--data-dir", str(ledger), "init"])
    key = ledger / "ledger-public.json"
    _check([str(bin_ / "custody-agent"), "--data-dir", str(data), "init", "--site", "KOL-01",
            "--device", "gw-footprint", "--ledger-key", str(key)])  # fmt: skip
    port = free_port()
    _check([str(bin_ / "custody-agent"), "--data-dir", str(data), "config", "set",
            "service.http_port", str(port)])  # fmt: skip
    log = (work / "agent.stderr").open("wb")
    proc = subprocess.Popen(
        [str(bin_ / "custody-agent"), "--data-dir", str(data), "run"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_env(),
    )  # fmt: skip
    log.close()
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"custody-agent run exited ({proc.returncode}):\n"
                    f"{(work / 'agent.stderr').read_text(errors='replace')[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2):
                    break
            except urllib.error.HTTPError:
                break  # it answers (degraded is still up)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("custody-agent run did not serve /healthz") from None
                time.sleep(0.1)
        return _sample(proc, args)
    finally:
        _stop(proc)


def _ledger_rss(venv: Path, work: Path, args: argparse.Namespace) -> float:
    work.mkdir(parents=True, exist_ok=True)
    ledger = work / "ledger"
    _check([str(venv / "bin" / "custody-ledger"), "--data-dir", str(ledger), "init"])
    with MosquittoBroker(work / "mosquitto", None) as broker:
        err = work / "ledger.stderr"
        log = err.open("wb")
        proc = subprocess.Popen(
            [str(venv / "bin" / "custody-ledger"), "--data-dir", str(ledger), "run",
             "--broker", f"mqtt://{broker.host}:{broker.plain_port}", "--http", "127.0.0.1:0"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=_env(),
        )  # fmt: skip
        log.close()
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while "ledger intake on" not in err.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"custody-ledger run did not start:\n{err.read_text()[-2000:]}"
                    )
                time.sleep(0.1)
            return _sample(proc, args)
        finally:
            _stop(proc)
