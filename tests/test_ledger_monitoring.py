"""deploy/monitoring for the ledger intake: every alert uses metrics and labels that a real
``LedgerService`` exposes on its /metrics (scraped over HTTP), and the scrape job points at the
intake's default address."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from custody.keys import LedgerKeyPair
from ledger.cli import build_parser
from ledger.fairness import Drop
from ledger.intake import Intake
from ledger.service import IntakeSettings, LedgerService
from ledger.store import LedgerStore
from sync.mqtt import BrokerConfig

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
RULES = MONITORING / "custody-ledger-alerts.yml"
CONFIG = MONITORING / "prometheus.yml"
_SELECTOR = re.compile(r"\b(custody_ledger_[a-z0-9_]+)\b(\{[^}]*\})?")
_BY = re.compile(r"by \(([^)]*)\)")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def exposed(tmp_path: Path) -> dict[str, set[str]]:
    """Sample name -> label names, from a real scrape of an intake's /metrics."""
    store = LedgerStore(tmp_path / "ledger.sqlite")
    service = LedgerService(
        Intake(store, LedgerKeyPair.generate("monitoring")),
        BrokerConfig(url="mqtt://127.0.0.1:1", client_id="ledger"),
        settings=IntakeSettings(http=("127.0.0.1", 0)),
    )
    assert service.http is not None
    service.http.start()
    service.metrics.drop("gw-x", Drop.MESSAGES)  # a labelled child appears once used
    try:
        host, port = service.http.address
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as r:
            text = r.read().decode()
    finally:
        service.http.stop()
        store.close()
    out: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, set()).update(sample.labels)
    return out


def test_every_ledger_alert_uses_exposed_metrics_and_labels(tmp_path: Path) -> None:
    samples = exposed(tmp_path)
    for rule in _rules():
        expr = rule["expr"]
        names = [n for n, _ in _SELECTOR.findall(expr)]
        labels = set().union(*(samples.get(n, set()) for n in names)) if names else set()
        for name in names:
            assert name in samples, f"{rule['alert']}: {name} is not exposed by the intake"
        for group in _BY.findall(expr):
            for label in (x.strip() for x in group.split(",")):
                assert label in labels | {"instance", "job"}, (rule["alert"], label)
        for label in re.findall(r"\$labels\.(\w+)", str(rule["annotations"])):
            assert label in labels | {"instance", "job"}, (rule["alert"], label)
        assert rule["labels"]["severity"] in {"info", "warning", "critical"}
    # The limits and the failures the operator must see are all there.
    for name in (
        "custody_ledger_device_limit", "custody_ledger_rejection_retention_rows",
        "custody_ledger_dead_letters_limit", "custody_ledger_store_seconds_bucket",
        "custody_ledger_queued_messages",
    ):  # fmt: skip
        assert name in samples
    assert {"device", "limit"} <= samples["custody_ledger_device_drops_total"]


def test_the_scrape_job_targets_the_intakes_default_address() -> None:
    default = build_parser().parse_args(["run", "--broker", "mqtt://127.0.0.1:1883"]).http
    config = yaml.safe_load(CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "custody-ledger")
    assert default in [t for sc in job["static_configs"] for t in sc["targets"]]
    assert RULES.name in config["rule_files"]
    assert any('job="custody-ledger"' in r["expr"] for r in _rules())


def test_promtool_checks_the_ledger_rules() -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run(
        [tool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
