"""The gateway service's status page, read in a real headless Chromium (tests/browser.py),
and who may read the service's HTTP port.

The browser loads the page from the real service process; the test asserts on the DOM
Chromium built: the tables are there, and seal codes written to attack the page (a
``<script>``, an ``<img onerror>``) are text in a cell, never elements. A screenshot shows
the page was painted: many colours, not one. No pixel is compared with a golden image.
"""

from __future__ import annotations

import base64
import json
import os
import signal
from pathlib import Path

import pytest

from agent.service.health import HealthServer
from agent.service.workers import Sample
from custody.webpage import Access
from tests.browser import (
    IMG_SEAL,
    SCRIPT_SEAL,
    Dom,
    assert_attacks_are_text,
    dump_dom,
    get,
    needs_chromium,
    screenshot,
)
from tests.conftest import Gateway
from tests.support import run_cli, wait_until
from tests.test_service import scale_pty, service, set_config

__all__ = ["scale_pty"]  # the pty fixture, used here by name


# --- the gateway ------------------------------------------------------------------------------
@pytest.fixture
def gw(gateway: Gateway) -> Path:
    set_config(gateway.data_dir, "service.http_port", "0")
    return gateway.data_dir


@needs_chromium
def test_the_gateway_page_shows_today_ports_and_backlog_with_hostile_seals_as_text(
    gw: Path, scale_pty: tuple[object, Path], tmp_path: Path
) -> None:
    _sink, link = scale_pty
    set_config(gw, "devices.ports", json.dumps([f"xk3190-a12@{link}"]))
    for seal in (SCRIPT_SEAL, IMG_SEAL):
        done = run_cli("--data-dir", str(gw), "record", "seal", "--seal-id", seal, "--lot", "LOT-7")
        assert done.returncode == 0, done.stderr
    done = run_cli("--data-dir", str(gw), "record", "weighing", "--gross-kg", "31250",
                   "--tare-kg", "11200", "--vehicle", "TRK-042")  # fmt: skip
    assert done.returncode == 0, done.stderr
    with service(gw) as svc:
        svc.wait_event("service.ready")
        labels = {"port": str(link), "dialect": "xk3190-a12"}
        wait_until(lambda: (svc.metric("custody_port_frames_total", **labels) or 0) > 0, "frames")
        url = svc.url + "/"
        dom = Dom(dump_dom(tmp_path / "profile", url))

        assert {"summary", "trucks", "bags", "ports", "workers", "alarms"} <= dom.ids
        assert_attacks_are_text(dom, "bags")
        trucks = dom.rows("trucks")
        assert len(trucks) == 1 and trucks[0][1] == "TRK-042", trucks
        assert "gross 31250.0 kg" in trucks[0][4] and "tare 11200.0 kg" in trucks[0][4]
        ports = dom.rows("ports")
        assert [p[:3] for p in ports] == [[str(link), "xk3190-a12", "open"]], ports
        assert ports[0][4].startswith("WeightReading "), ports  # the indicator's last frame
        # Nothing is synced here: every record is backlog, and no ack has come.
        summary = dom.rows("summary")[0]
        backlog = sum(svc.health()["outbox"]["events"][s] for s in ("pending", "sent"))
        assert int(summary[1]) == backlog >= 4, summary  # boot + 2 seals + the weighing
        assert summary[3] == "\u2014", summary

        width, height, colours = screenshot(tmp_path / "profile", url, tmp_path / "gw.png")
        assert (width, height) == (1024, 768)
        assert len(colours) > 16, f"the screenshot has {len(colours)} colours: blank?"
        assert svc.terminate() == 0


def test_off_loopback_without_a_token_the_page_is_refused_and_metrics_stay() -> None:
    # The rule judges the configured address; the socket itself stays on loopback here.
    server = HealthServer(
        "127.0.0.1", 0, health=lambda: {"status": "ok"}, samples=_NoSamples(),
        page=lambda: b"<p>page</p>", access=Access("0.0.0.0", None, "service.http_token_file"),  # noqa: S104
    )  # fmt: skip
    server.start()
    try:
        host, port = server.address
        base = f"http://{host}:{port}"
        code, body = get(base + "/")
        assert code == 403 and b"service.http_token_file is not set" in body, body
        assert get(base + "/metrics")[0] == 200
        assert get(base + "/healthz")[0] == 200
    finally:
        server.stop()


class _NoSamples:
    def samples(self) -> list[Sample]:
        return []


def test_with_a_token_file_the_page_metrics_and_healthz_need_it(gw: Path) -> None:
    token = "s3cr3t-" + os.urandom(12).hex()
    (gw / "http.token").write_text(token + "\n")
    set_config(gw, "service.http_token_file", '"http.token"')
    with service(gw) as svc:
        svc.wait_event("service.ready")
        base = svc.url
        for path in ("/", "/metrics", "/healthz"):
            code, _ = get(base + path)
            assert code == 401, path
            assert get(base + path, {"Authorization": "Bearer wrong-token-xxxxxxxx"})[0] == 401
        code, body = get(base + "/", {"Authorization": f"Bearer {token}"})
        assert code == 200 and b'id="summary"' in body
        basic = base64.b64encode(f"supervisor:{token}".encode()).decode()
        assert get(base + "/metrics", {"Authorization": f"Basic {basic}"})[0] == 200

        rotated = "r0tated-" + os.urandom(12).hex()  # a new token, taken by a reload
        (gw / "http.token").write_text(rotated + "\n")
        svc.signal(signal.SIGHUP)
        svc.wait_event("config.reloaded")
        assert get(base + "/healthz", {"Authorization": f"Bearer {token}"})[0] == 401
        assert get(base + "/healthz", {"Authorization": f"Bearer {rotated}"})[0] == 200
        assert svc.terminate() == 0


def test_a_short_token_file_fails_the_start_naming_the_key(gw: Path) -> None:
    (gw / "http.token").write_text("short\n")
    set_config(gw, "service.http_token_file", '"http.token"')
    with service(gw) as svc:
        assert svc.wait_exit() != 0
        assert "service.http_token_file" in svc.log_text()
        assert "at least 16 characters" in svc.log_text()


def test_access_rule() -> None:
    assert Access("127.0.0.1").open and Access("::1").open and Access("localhost").open
    assert Access("0.0.0.0").refusal() is not None  # noqa: S104 - the case under test
    assert Access("10.0.0.5", "t" * 20).refusal() is None
    locked = Access("127.0.0.1", "t" * 20)
    assert not locked.open and not locked.allows(None) and not locked.allows("Bearer x")
    assert locked.allows("Bearer " + "t" * 20)
    assert locked.allows("Basic " + base64.b64encode(b"any:" + b"t" * 20).decode())
    assert not locked.allows("Basic !!!not-base64")
