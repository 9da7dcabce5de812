"""Pure helpers of ``python -m bench peers`` (nothing is downloaded or started here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.peers import _figures, ours, stream, thingsboard
from firmware_bridge.frames import WeightReading
from firmware_bridge.protocols.registry import make_parser
from lab.mosquitto import CONF_TEMPLATE, render_config


def test_frames_carry_the_reading_number_and_parse_back() -> None:
    frame = stream.frame_for(1234)
    assert frame.startswith(b"WG0001234kg") and frame.endswith(b"\r\n")
    (reading,) = make_parser(stream.DIALECT).feed(frame, 0.0)
    assert isinstance(reading, WeightReading)
    assert ours.reading_units(reading) == 12340  # 0.1 kg units
    # The peer ships the line without CR LF; the witness parses it back.
    assert stream.reading_of_line(frame[:-2].decode()) == 1234


def test_a_mangled_line_is_not_counted_as_delivered() -> None:
    line = stream.frame_for(77)[:-2].decode()
    assert stream.reading_of_line(line[:-1] + ("0" if line[-1] != "0" else "1")) is None
    assert stream.reading_of_line(line[:6]) is None
    with pytest.raises(ValueError, match="reading numbers"):
        stream.frame_for(0)


def test_telemetry_payload_yields_every_raw_line_in_order() -> None:
    payload = json.dumps({
        "WB-01": [
            {"ts": 1, "values": {"raw": "WG0000001kg2D"}},
            {"ts": 2, "values": {"raw": "WG0000002kg2E", "other": 3}},
            {"ts": 3, "values": {"other": 1}},
        ]
    }).encode()  # fmt: skip
    assert thingsboard.readings_in_telemetry(payload) == ["WG0000001kg2D", "WG0000002kg2E"]


def test_peer_config_uses_its_durable_settings() -> None:
    cfg = thingsboard.gateway_config("127.0.0.1", 4242)
    tb = cfg["thingsboard"]
    assert (tb["host"], tb["port"], tb["qos"]) == ("127.0.0.1", 4242, 1)
    assert tb["remoteConfiguration"] is False and tb["statistics"]["enable"] is False
    assert tb["reportStrategy"]["type"] == "ON_RECEIVED"
    assert cfg["storage"]["type"] == "sqlite" and cfg["storage"]["data_file_path"].endswith("/")
    (connector,) = cfg["connectors"]
    assert connector["class"] == "SerialConnector"
    serial = thingsboard.serial_config("/tmp/ttyX")
    (device,) = serial["devices"]
    assert device["port"] == "/tmp/ttyX" and device["delimiter"] == "\n"
    assert device["telemetry"][0]["key"] == thingsboard.TELEMETRY_KEY


def test_session_limits_reply_sets_no_rate_limits() -> None:
    reply = thingsboard.session_limits_reply()
    assert reply["rateLimits"] == {} and reply["gatewayRateLimits"] == {}


def test_broker_template_applies_the_acl_to_the_plain_listener(tmp_path: Path) -> None:
    acl = tmp_path / "tb.acl"
    acl.write_text(thingsboard.render_acl())
    template = thingsboard.broker_template(CONF_TEMPLATE.read_text(), acl)
    rendered = render_config(
        template, pki=None, tls_port=0, plain_port=1884,
        persistence_dir=tmp_path, log_file=tmp_path / "log", acl_file=acl,
    )  # fmt: skip
    lines = rendered.splitlines()
    assert f"acl_file {acl}" in lines and "listener 1884 127.0.0.1" in lines
    assert not any(line.startswith("per_listener_settings") for line in lines)
    assert "max_inflight_messages 20" in lines  # the production global settings stay
    text = acl.read_text()
    assert "user tbgw\ntopic write v1/#\n" in text
    assert "topic read v1/devices/me/rpc/response/+" in text


def test_ss_output_is_parsed_per_socket_inode() -> None:
    text = (
        "0 0 127.0.0.1:50000 127.0.0.1:1883 ino:111 sk:1 <->\n"
        "\t ts sack cubic bytes_sent:10 bytes_acked:11 bytes_received:5 segs_out:4\n"
        "0 0 127.0.0.1:50001 127.0.0.1:1883 ino:222 sk:2 <->\n"
        "\t ts sack cubic bytes_acked:1 segs_out:1\n"
    )
    assert stream.parse_ss(text) == {111: (11, 5), 222: (1, 0)}


def test_figures_report_both_sides_and_the_ratio() -> None:
    def side(rate: float, lost: int) -> dict[str, object]:
        load = {"events_per_s": rate, "latency_ms_p50": 1.0, "wire_bytes_per_event": 100.0,
                "rss_mb": 50.0, "rss_anon_mb": 30.0, "cpu_us_per_event": 10.0}  # fmt: skip
        return {
            "fixed": load, "saturation": load,
            "kill": {"lost_offered_before_kill": lost, "duplicates": 1},
            "outage": {"lost": 0, "duplicates": 2},
        }  # fmt: skip

    figures = _figures({"theirs": side(200.0, 5), "ours": side(400.0, 0)})
    assert figures["events_per_s_saturation"] == {"theirs": 200.0, "ours": 400.0, "ratio": 2.0}
    assert figures["lost_after_kill"]["ratio"] == 0.0
    assert figures["duplicates"] == {"theirs": 3, "ours": 3, "ratio": 1.0}
    assert figures["lost_after_outage"]["ratio"] is None  # 0/0
