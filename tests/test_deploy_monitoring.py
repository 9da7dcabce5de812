"""deploy/monitoring: the Prometheus scrape config and alert rules.

Every custody_* metric an alert uses must be declared in agent/service/health.py METRICS, with
the labels it matches on, so the alerts cannot drift from the code. promtool checks the files
when it is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.service.health import METRICS

MONITORING = Path(__file__).resolve().parents[1] / "deploy" / "monitoring"
RULES = MONITORING / "custody-alerts.yml"
CONFIG = MONITORING / "prometheus.yml"

# Selectors: a metric name, optionally followed by {label matchers}.
_SELECTOR = re.compile(r"\b(custody_[a-z0-9_]+)\b(\{[^}]*\})?")
_MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"")


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def declared(exposed: str) -> tuple[str, tuple[str, ...]]:
    """The METRICS entry behind an exposed name (counters get _total from prometheus-client)."""
    if exposed in METRICS and METRICS[exposed].kind == "gauge":
        return exposed, METRICS[exposed].labels
    base = exposed.removesuffix("_total")
    if exposed.endswith("_total") and base in METRICS and METRICS[base].kind == "counter":
        return base, METRICS[base].labels
    raise AssertionError(f"{exposed} is not a metric the gateway exposes")


def test_every_alert_uses_declared_metrics_and_labels() -> None:
    used = set()
    for rule in _rules():
        expr = rule["expr"]
        for name, matchers in _SELECTOR.findall(expr):
            base, labels = declared(name)
            used.add(base)
            for label, _op in _MATCHER.findall(matchers):
                assert label in labels, f"{rule['alert']}: {name} has no label {label!r}"
        for label in re.findall(r"\$labels\.(\w+)", str(rule.get("annotations", {}))):
            metric_labels = {lab for n, _ in _SELECTOR.findall(expr) for lab in declared(n)[1]}
            assert label in metric_labels | {"instance", "job", "site", "device"}, (
                f"{rule['alert']} annotates with $labels.{label}, which its expression lacks"
            )
    # The alerts the issue asks for are there, on the metrics that carry them.
    for metric in (
        "custody_outbox_oldest_unacked_age_seconds",
        "custody_port_up",
        "custody_clock_quality",
        "custody_outbox_disk_budget_used_ratio",
        "custody_sync_rejected",
    ):
        assert metric in used


def test_declared_lookup_rejects_drift() -> None:
    # The check above would catch a renamed metric or a counter written without _total.
    with pytest.raises(AssertionError):
        declared("custody_outbox_oldest_age_seconds")
    with pytest.raises(AssertionError):
        declared("custody_sync_rejected")
    assert declared("custody_sync_rejected_total")[0] == "custody_sync_rejected"


def test_alert_shape() -> None:
    rules = _rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names))
    assert any(r["expr"].startswith('up{job="custody-gateway"} == 0') for r in rules)
    assert any(r["expr"].startswith("absent(") for r in rules)
    backlog = next(r for r in rules if "oldest_unacked" in r["expr"])
    assert backlog["expr"].endswith("> 3600")
    disk = [r for r in rules if "disk_budget_used_ratio" in r["expr"]]
    assert any(r["expr"].endswith("> 0.8") for r in disk)
    for r in rules:
        assert r["labels"]["severity"] in {"info", "warning", "critical"}
        assert r["annotations"]["summary"]


def test_scrape_config_targets_the_default_metrics_address() -> None:
    from agent.settings import SETTINGS

    port = next(s.default for s in SETTINGS if s.key == "service.http_port")
    config = yaml.safe_load(CONFIG.read_text())
    job = next(j for j in config["scrape_configs"] if j["job_name"] == "custody-gateway")
    assert job["metrics_path"] == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    assert f"127.0.0.1:{port}" in targets
    assert (MONITORING / config["rule_files"][0]) == RULES
    # Alerts select the job by the name the scrape config gives it.
    assert any('job="custody-gateway"' in r["expr"] for r in _rules())


@pytest.mark.parametrize(("what", "path"), [("rules", RULES), ("config", CONFIG)])
def test_promtool_check(what: str, path: Path) -> None:
    tool = shutil.which("promtool")
    if tool is None:
        pytest.skip("promtool is not installed")
    result = subprocess.run(
        [tool, "check", what, str(path)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stdout + result.stderr
