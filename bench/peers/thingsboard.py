"""ThingsBoard IoT Gateway as the peer: install, configure, answer its handshake, read its uplink.

Facts from ``../shared/reference/peers.md`` §1 and §10, checked against the
installed package (``thingsboard-gateway`` 3.8.5, the version pinned below):

- it is installed into its own throwaway venv under the user's cache
  (``~/.cache/cobalt-custody/peers/tbgw-<version>``), never into ours, with
  ``pyserial`` added by hand (the serial connector imports ``serial.tools``
  outside its try/except, §1.5);
- ``TB_GW_CONFIG_DIR`` points the ``thingsboard-gateway`` console script at a
  config directory we render (``tb_gateway.json``, ``custom_serial.json``, the
  packaged ``logs.json``); it is run with the working directory beside it, where
  it writes ``logs/`` and ``data/`` (§10.1);
- the serial connector is the packaged *custom* example
  (``extensions/serial``), which reads until ``\\n`` one byte per ``read(1)``
  and ships the line as a string telemetry key, unchecked (§1.5);
- on its first connection the SDK asks ``getSessionLimits`` on
  ``v1/devices/me/rpc/request/<id>`` and sends nothing until it is answered
  (§10.1 item 4): ``SessionLimitsResponder`` answers it on the broker;
- it must not read its own publishes back (§10.1 item 5): the broker ACL
  (``render_acl``) lets user ``tbgw`` write ``v1/#`` but read only the RPC and
  attribute responses.

Durability settings are the gateway's documented best (stated in the report):
SQLite storage (the only persistent one that fsyncs through SQLite), QoS 1,
``ON_RECEIVED`` (every reading reported), remote configuration off (#2124:
with it on the SQLite store is recreated on every reconnect), statistics and
remote shell off, and ``keep_alive`` 30 s, our own keepalive, instead of its
default 120 s (a shorter keepalive detects a dead link sooner, §1.4).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "DEVICE_NAME",
    "TBGW_VERSION",
    "TELEMETRY_TOPIC",
    "SessionLimitsResponder",
    "TbInstall",
    "broker_template",
    "ensure_installed",
    "gateway_config",
    "readings_in_telemetry",
    "render_acl",
    "serial_config",
    "session_limits_reply",
    "write_config_dir",
]

TBGW_VERSION = "3.8.5"
DEVICE_NAME = "WB-01"
TELEMETRY_TOPIC = "v1/gateway/telemetry"
RPC_REQUEST_FILTER = "v1/devices/me/rpc/request/+"
RPC_RESPONSE_PREFIX = "v1/devices/me/rpc/response/"
GATEWAY_USER = "tbgw"
BENCH_USER = "bench"
TELEMETRY_KEY = "raw"
# Our uplink's MQTT keepalive (sync.mqtt.BrokerConfig.keepalive_s); the peer's default is 120 s.
KEEPALIVE_S = 30
PIP_TIMEOUT_S = 900.0


def cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cobalt-custody" / "peers"


class TbInstall:
    """A venv holding ``thingsboard-gateway``: its console script and packaged files."""

    def __init__(self, venv: Path) -> None:
        self.venv = venv

    @property
    def script(self) -> Path:
        return self.venv / "bin" / "thingsboard-gateway"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def package_dir(self) -> Path:
        out = subprocess.run(
            [str(self.python), "-c",
             "import os, thingsboard_gateway as t; print(os.path.dirname(t.__file__))"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return Path(out.stdout.strip())

    def version(self) -> str:
        out = subprocess.run(
            [str(self.python), "-c",
             "from importlib.metadata import version; print(version('thingsboard-gateway'))"],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return out.stdout.strip()


def _base_python() -> str:
    """A system interpreter for the peer's venv (not ours: its packages must not mix)."""
    for candidate in (Path(sys.base_prefix) / "bin" / "python3", Path("/usr/bin/python3")):
        if candidate.exists():
            return str(candidate)
    found = shutil.which("python3")
    if found is None:
        raise RuntimeError("no python3 to build the peer's venv with")
    return found


def ensure_installed(version: str = TBGW_VERSION, root: Path | None = None) -> TbInstall:
    """The peer's venv, created and pip-installed on first use and reused after."""
    venv = (root or cache_root()) / f"tbgw-{version}"
    install = TbInstall(venv)
    marker = venv / ".installed"
    if marker.exists() and install.script.exists():
        return install
    if venv.exists():
        shutil.rmtree(venv)  # a half-made venv from an interrupted run
    venv.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([_base_python(), "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(install.python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         f"thingsboard-gateway=={version}", "pyserial"],
        check=True, timeout=PIP_TIMEOUT_S,
    )  # fmt: skip
    marker.write_text(version + "\n")
    return install


# --- configuration (pure) ---


def gateway_config(host: str, port: int, *, read_pack: int = 1000) -> dict[str, Any]:
    """``tb_gateway.json``: SQLite storage, QoS 1, nothing remote (module docstring)."""
    return {
        "thingsboard": {
            "host": host,
            "port": port,
            "remoteShell": False,
            "remoteConfiguration": False,
            "latencyDebugMode": False,
            "statistics": {"enable": False},
            "deviceFiltering": {"enable": False},
            "syncDevicesSharedAttributesOnConnect": False,
            "maxPayloadSizeBytes": 8196,
            "minPackSendDelayMS": 50,
            "checkConnectorsConfigurationInSeconds": 60,
            "handleDeviceRenaming": False,
            "keep_alive": KEEPALIVE_S,
            "security": {
                "type": "usernamePassword",
                "clientId": "tbgw-bench",
                "username": GATEWAY_USER,
                "password": GATEWAY_USER,
            },
            "qos": 1,
            "reportStrategy": {"type": "ON_RECEIVED"},
            "checkingDeviceActivity": {"checkDeviceInactivity": False},
        },
        "storage": {
            "type": "sqlite",
            "data_file_path": "./data/",  # must end with "/" (§10.2)
            # §10.3: the sample's 10 throttles SQLite; 1000 is the SQLite default.
            "max_read_records_count": read_pack,
            "writing_batch_size": 1000,
            "size_limit": 1024,
            "max_db_amount": 10,
            "oversize_check_period": 1,
            "messages_ttl_check_in_hours": 1,
            "messages_ttl_in_days": 7,
        },
        "grpc": {"enabled": False},
        "connectors": [
            {"type": "serial", "name": "Weighbridge", "configuration": "custom_serial.json",
             "class": "SerialConnector"},
        ],
    }  # fmt: skip


def serial_config(port_path: str, *, baudrate: int = 9600) -> dict[str, Any]:
    """``custom_serial.json``: one device, each line one string telemetry value (§10.2)."""
    return {
        "name": "Weighbridge",
        "logLevel": "WARNING",  # its converter logs every frame at DEBUG
        "uplinkQueueSize": 100000,
        "devices": [
            {
                "name": DEVICE_NAME,
                "type": "weighbridge",
                "port": port_path,
                "baudrate": baudrate,
                "delimiter": "\n",
                "converter": "SerialUplinkConverter",
                "telemetry": [{"key": TELEMETRY_KEY, "type": "string", "untilDelimiter": "\r"}],
            }
        ],
    }


def render_acl() -> str:
    """Mosquitto ACL: the gateway writes ``v1/#`` and reads only its responses (§10.1 item 5)."""
    return "\n".join([
        "# Rendered by bench/peers/thingsboard.py for the peer benchmark.",
        f"user {GATEWAY_USER}",
        "topic write v1/#",
        f"topic read {RPC_RESPONSE_PREFIX}+",
        "topic read v1/gateway/attributes/response",
        "",
        f"user {BENCH_USER}",
        "topic readwrite #",
        "",
    ])  # fmt: skip


def broker_template(production: str, acl_file: Path) -> str:
    """A Mosquitto template for ``MosquittoBroker`` with the production global settings
    (queues, inflight, persistence, packet size) and ``render_acl`` applied to the plain
    listener: ``per_listener_settings`` is dropped so that ``acl_file`` is global."""
    lines = []
    for line in production.splitlines():
        directive = line.split(" ", 1)[0] if line and not line.startswith("#") else ""
        if directive == "listener":
            break
        if directive in ("per_listener_settings", "acl_file"):
            continue
        lines.append(line)
    lines += [f"acl_file {acl_file}", "listener 0", ""]
    return "\n".join(lines)


def write_config_dir(
    workdir: Path, install_package_dir: Path, *, host: str, port: int, serial_port: str
) -> Path:
    """Render the config directory; returns it. ``logs/`` and ``data/`` go beside it."""
    config = workdir / "config"
    config.mkdir(parents=True, exist_ok=True)
    (workdir / "logs").mkdir(exist_ok=True)
    (workdir / "data").mkdir(exist_ok=True)
    (config / "tb_gateway.json").write_text(json.dumps(gateway_config(host, port), indent=2))
    (config / "custom_serial.json").write_text(json.dumps(serial_config(serial_port), indent=2))
    shutil.copy(install_package_dir / "config" / "logs.json", config / "logs.json")
    return config


def session_limits_reply() -> dict[str, Any]:
    """The answer a ThingsBoard server gives to ``getSessionLimits`` (§10.1 item 4).

    Empty rate limits: the client then applies none (a plain broker has none either).
    """
    return {
        "rateLimits": {},
        "gatewayRateLimits": {},
        "maxInflightMessages": 100,
        "maxPayloadSize": 65536,
    }


def readings_in_telemetry(payload: bytes) -> list[str]:
    """The raw serial lines in one ``v1/gateway/telemetry`` publish, in order.

    Shape (§10.3): ``{"WB-01": [{"ts": ..., "values": {"raw": "..."}}, ...]}``.
    """
    data = json.loads(payload)
    out: list[str] = []
    for entries in data.values():
        for entry in entries:
            value = entry.get("values", {}).get(TELEMETRY_KEY)
            if isinstance(value, str):
                out.append(value)
    return out


# --- the broker side of the handshake ---


class SessionLimitsResponder:
    """Answers the gateway's ``getSessionLimits`` RPC on the broker, as ThingsBoard would."""

    def __init__(self, host: str, port: int) -> None:
        self.requests = 0
        self._client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id="bench-tb-session-limits",
            protocol=mqtt.MQTTv311,
        )
        self._client.username_pw_set(BENCH_USER)
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.reconnect_delay_set(1, 2)
        self._host, self._port = host, port
        self._lock = threading.Lock()

    def start(self) -> SessionLimitsResponder:
        self._client.connect_async(self._host, self._port, keepalive=10)
        self._client.loop_start()
        return self

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(RPC_REQUEST_FILTER, qos=1)

    def _on_message(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            request = json.loads(msg.payload)
        except ValueError:
            return
        if request.get("method") != "getSessionLimits":
            return
        request_id = msg.topic.rsplit("/", 1)[-1]
        with self._lock:
            self.requests += 1
        client.publish(RPC_RESPONSE_PREFIX + request_id, json.dumps(session_limits_reply()), qos=1)


def gateway_command(install: TbInstall) -> list[str]:
    return [str(install.script)]


def gateway_env(config_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["TB_GW_CONFIG_DIR"] = str(config_dir) + os.sep
    # Its ``TBUpdater`` phones home at start and hourly with no switch to turn it off
    # (§1.2); on this offline loopback bench that fails harmlessly.
    return env


def log_tail(workdir: Path, names: Iterable[str] = ("service", "tb_connection", "storage")) -> str:
    parts = []
    for name in names:
        path = workdir / "logs" / f"{name}.log"
        if path.exists():
            parts.append(f"== {path.name}\n" + path.read_text(errors="replace")[-1500:])
    return "\n".join(parts)
