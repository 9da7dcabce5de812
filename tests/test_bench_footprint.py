"""``python -m bench footprint`` re-measures the documented figures (docs/operations.md "Roles").

Only the gateway role here, to keep it to about a minute: a fresh venv from the project wheel,
the idle service's VmRSS after its /healthz answered.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from bench import footprint
from tests.support import REPO

pytestmark = pytest.mark.slow


def test_the_gateway_footprint_is_measured_without_the_extras() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "footprint", "--role", "gateway", "--json",
         "--settle", "0", "--samples", "1"],
        capture_output=True, text=True, cwd=REPO, timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    gateway = result["roles"]["gateway"]
    assert list(result["roles"]) == ["gateway"]
    assert gateway["extras_present"] == []
    assert gateway["service"] == "custody-agent run"
    assert gateway["site_packages_mb"] > 0
    assert gateway["service_rss_mb"] > 0
    assert gateway["distributions"] >= 5  # the project and its base dependencies
    table = footprint.render(result)
    assert table.splitlines()[1].startswith("gateway ")
    assert "custody-agent run" in table
