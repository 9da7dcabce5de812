"""Start ``custody-agent run`` as a real process, ask its /healthz, stop it with SIGTERM."""

from __future__ import annotations

import re
import signal
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tests.support import wait_until


@dataclass(frozen=True, slots=True)
class ServiceRun:
    healthz_status: int  # the HTTP status /healthz answered with
    exit_code: int  # after SIGTERM
    log: str  # its stderr


def run_until_healthz(cmd: list[str], *, env: dict[str, str], cwd: Path) -> ServiceRun:
    """``cmd`` runs the gateway service on a data dir whose ``service.http_port`` is 0: its
    ``http.listening`` log line names the port; it is stopped once /healthz answered."""
    log_path = cwd / "service.stderr"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env)
    try:

        def listening() -> str | None:
            assert proc.poll() is None, log_path.read_text(errors="replace")
            found = re.search(r"http://127\.0\.0\.1:(\d+)", log_path.read_text(errors="replace"))
            return found.group(1) if found else None

        port = wait_until(listening, "the service's http.listening line")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as answer:
                status = answer.status
        except urllib.error.HTTPError as exc:  # 503: up, but not healthy
            status = exc.code
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return ServiceRun(status, code, log_path.read_text(errors="replace"))
