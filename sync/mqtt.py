"""The paho-mqtt boundary: one thin client wrapper used by both ends of the link.

The only module that imports paho (ARCHITECTURE.md "Layout"). Callbacks run
on paho's network thread; they only put events on a bounded queue (STYLE.md
§7: no user code inside a library callback that holds a lock). Everything else
happens in the owner's thread, which reads ``events``.

Broker URLs: ``mqtt://host:port`` (plain, loopback tests only) and
``mqtts://host:port`` (TLS with a client certificate; the broker maps the
certificate CN to the username for its ACL).
"""

from __future__ import annotations

import contextlib
import queue
import ssl
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from custody.errors import ConfigError, SyncError

__all__ = [
    "RECONNECT_MAX_S",
    "RECONNECT_MIN_S",
    "REFUSED_CONNACKS",
    "BrokerConfig",
    "LinkEvent",
    "LinkEventKind",
    "MqttLink",
    "reconnect_delay",
]

EVENT_QUEUE_MAX = 10_000
# CONNACK reason codes that retrying cannot change (MQTT 5.0 §3.2.2.2; paho maps MQTT 3.1.1's
# return codes 2, 4 and 5 onto 0x85-0x87): the broker does not accept this certificate under
# this client id (deploy/mosquitto/custody_identity.c), or bans it.
REFUSED_CONNACKS = frozenset({0x85, 0x86, 0x87, 0x8A})


@dataclass(frozen=True, slots=True)
class BrokerConfig:
    url: str
    client_id: str
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive_s: int = 30  # a silent link drop is noticed within 1.5× this (MQTT 5 §3.1.2.10)
    session_expiry_s: int = 30 * 24 * 3600  # weeks offline must not lose the session

    def host_port(self) -> tuple[str, int, bool]:
        u = urlparse(self.url)
        if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
            raise ConfigError(
                "broker", "url", f"expected mqtt://host:port or mqtts://host:port, got {self.url!r}"
            )
        tls = u.scheme == "mqtts"
        return u.hostname, u.port or (8883 if tls else 1883), tls


# paho's reconnect backoff: the first retry after RECONNECT_MIN_S, doubling up to the max.
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


def reconnect_delay(failures: int) -> int:
    """Seconds paho waits before its next attempt after ``failures`` failed ones in a row."""
    return min(RECONNECT_MIN_S << min(max(failures - 1, 0), 16), RECONNECT_MAX_S)


class LinkEventKind(StrEnum):
    """What happened on the link (the paho callback that enqueued it)."""

    CONNECTED = "connected"
    DISCONNECTED = "disconnected"
    REFUSED = "refused"  # a CONNACK in REFUSED_CONNACKS: retrying cannot help
    # No connection at all (DNS, TCP or TLS failed); ``reason`` says why. paho retries after
    # reconnect_delay(failures).
    CONNECT_FAILED = "connect_failed"
    MESSAGE = "message"
    PUBACK = "puback"


@dataclass(frozen=True, slots=True)
class LinkEvent:
    kind: LinkEventKind
    topic: str = ""
    payload: bytes = b""
    correlation: bytes | None = None
    mid: int = 0
    reason: str = ""  # a failed CONNACK's or PUBACK's reason, "" on success
    code: int = 0  # its MQTT 5 reason code


class MqttLink:
    """A persistent-session MQTT 5 client whose callbacks only enqueue."""

    def __init__(
        self,
        config: BrokerConfig,
        *,
        will: tuple[str, bytes] | None = None,
        manual_ack: bool = False,
    ) -> None:
        self.config = config
        self.events: queue.Queue[LinkEvent] = queue.Queue(EVENT_QUEUE_MAX)
        self.dropped_events = 0
        host, port, tls = config.host_port()
        self._host, self._port = host, port
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=paho.MQTTv5,
            manual_ack=manual_ack,
        )
        if tls:
            if not (config.ca_file and config.cert_file and config.key_file):
                raise ConfigError("broker", "tls", "mqtts:// needs a CA file, certificate and key")
            context = ssl.create_default_context(
                ssl.Purpose.SERVER_AUTH, cafile=str(config.ca_file)
            )
            context.load_cert_chain(str(config.cert_file), str(config.key_file))
            self.client.tls_set_context(context)
        if will is not None:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.reconnect_delay_set(min_delay=RECONNECT_MIN_S, max_delay=RECONNECT_MAX_S)
        self.client.max_inflight_messages_set(20)
        self.client.max_queued_messages_set(0)  # our outbox is the queue; paho's is memory
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_connect_fail = self._on_connect_fail
        self.client.on_message = self._on_message
        self.client.on_publish = self._on_publish

    # --- lifecycle -----------------------------------------------------------------
    def start(self) -> None:
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.config.session_expiry_s
        try:
            self.client.connect_async(
                self._host, self._port, keepalive=self.config.keepalive_s,
                clean_start=False, properties=props,
            )  # fmt: skip
        except (OSError, ValueError) as exc:
            raise SyncError(f"cannot reach {self.config.url}: {exc}") from exc
        self.client.loop_start()

    def stop(self, final: tuple[str, bytes] | None = None) -> None:
        if final is not None and self.client.is_connected():
            with contextlib.suppress(RuntimeError, ValueError, OSError):  # best effort at shutdown
                self.client.publish(final[0], final[1], qos=1, retain=True).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()

    @property
    def connected(self) -> bool:
        return bool(self.client.is_connected())

    # --- operations ------------------------------------------------------------------
    def subscribe(self, topic: str) -> None:
        self.client.subscribe(topic, qos=1)

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        retain: bool = False,
        response_topic: str | None = None,
        correlation: bytes | None = None,
    ) -> int | None:
        """Publish at QoS 1; returns the message id, or None when not connected."""
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if response_topic is not None:
            props.ResponseTopic = response_topic
        if correlation is not None:
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos=1, retain=retain, properties=props)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return None
        return int(info.mid)

    def ack(self, mid: int) -> None:
        """With ``manual_ack``: PUBACK a received message once it is durably handled."""
        self.client.ack(mid, 1)

    # --- callbacks: enqueue only ---------------------------------------------------------
    def _put(self, event: LinkEvent) -> None:
        try:
            self.events.put_nowait(event)
        except queue.Full:
            self.dropped_events += 1

    def _on_connect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            refused = getattr(rc, "value", None) in REFUSED_CONNACKS
            kind = LinkEventKind.REFUSED if refused else LinkEventKind.DISCONNECTED
            self._put(LinkEvent(kind, reason=str(rc)))
        else:
            self._put(LinkEvent(LinkEventKind.CONNECTED))

    def _on_connect_fail(self, client: Any, userdata: Any) -> None:
        # paho calls this inside its ``except OSError`` around the connect attempt and passes
        # no error: the one in flight is the reason (refused, unreachable, TLS handshake).
        exc = sys.exc_info()[1]
        reason = f"{type(exc).__name__}: {exc}" if exc is not None else "connection failed"
        self._put(LinkEvent(LinkEventKind.CONNECT_FAILED, reason=reason))

    def _on_disconnect(self, client: Any, userdata: Any, flags: Any, rc: Any, props: Any) -> None:
        self._put(LinkEvent(LinkEventKind.DISCONNECTED, reason=str(rc)))

    def _on_message(self, client: Any, userdata: Any, msg: Any) -> None:
        correlation = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        self._put(
            LinkEvent(
                LinkEventKind.MESSAGE, msg.topic, bytes(msg.payload), correlation, int(msg.mid)
            )
        )

    def _on_publish(self, client: Any, userdata: Any, mid: int, rc: Any, props: Any) -> None:
        # MQTT 5 PUBACK reason codes: 0x87 "Not authorized" is how Mosquitto 2.0
        # refuses a publish its ACL or a plugin (the per-device publish budget)
        # forbids; the connection stays up.
        failed = bool(getattr(rc, "is_failure", False))
        code = int(getattr(rc, "value", 0)) if failed else 0
        self._put(
            LinkEvent(LinkEventKind.PUBACK, mid=mid, reason=str(rc) if failed else "", code=code)
        )
