"""MQTT topic names of the sync link (ARCHITECTURE.md "Topics").

Every device has exactly three topics, one per ``TopicKind``::

    custody/v1/dev/{device_id}/events   device -> ledger, QoS 1, a batch (sync.batch)
    custody/v1/dev/{device_id}/acks     ledger -> device, a signed ack (sync.ack)
    custody/v1/dev/{device_id}/status   retained birth/death, death as Last Will

Ledger intake workers share the events through one MQTT 5 shared subscription
(``SHARED_EVENTS_SUBSCRIPTION``, MQTT 5.0 §4.8.2); the broker delivers each
message with its real topic name, which ``device_from_topic`` parses back into
the device id the payload must then match.

Device ids use the identifier alphabet of ``custody.event.validate_identifier``
(``[A-Za-z0-9._-]{1,64}``), so an id can never be empty, contain a level
separator ``/``, a wildcard ``+`` or ``#`` (MQTT 5.0 §4.7.1), a ``$`` prefix
(§4.7.2), a NUL (§1.5.4) or anything non-ASCII. The broker ACL binds these
topics to the certificate identity (deploy/), not to anything parsed here.
"""

from __future__ import annotations

from enum import StrEnum

from custody.errors import DecodeError, SchemaError
from custody.event import validate_identifier

__all__ = [
    "EVENTS_FILTER",
    "MAX_TOPIC_CHARS",
    "SHARED_EVENTS_SUBSCRIPTION",
    "SHARE_GROUP",
    "TOPIC_PREFIX",
    "TopicKind",
    "acks_topic",
    "device_from_topic",
    "events_topic",
    "status_topic",
    "topic_for",
]

TOPIC_PREFIX = "custody/v1/dev"
SHARE_GROUP = "ledger"


class TopicKind(StrEnum):
    """The last topic level: what flows on the topic."""

    EVENTS = "events"
    ACKS = "acks"
    STATUS = "status"


EVENTS_FILTER = f"{TOPIC_PREFIX}/+/{TopicKind.EVENTS}"
# MQTT 5.0 §4.8.2: "$share/{ShareName}/{filter}"; workers in one group split the load.
SHARED_EVENTS_SUBSCRIPTION = f"$share/{SHARE_GROUP}/{EVENTS_FILTER}"

_DEVICE_ID_MAX = 64  # custody.event._IDENT
# The longest name we ever produce; anything longer is refused before it is split.
MAX_TOPIC_CHARS = len(TOPIC_PREFIX) + 1 + _DEVICE_ID_MAX + 1 + max(len(k) for k in TopicKind)
_PREFIX_LEVELS = tuple(TOPIC_PREFIX.split("/"))


def topic_for(device_id: str, kind: TopicKind) -> str:
    """The topic of ``kind`` for ``device_id``; ``SchemaError`` for an invalid id."""
    validate_identifier(device_id, "device id")
    return f"{TOPIC_PREFIX}/{device_id}/{TopicKind(kind)}"


def events_topic(device_id: str) -> str:
    return topic_for(device_id, TopicKind.EVENTS)


def acks_topic(device_id: str) -> str:
    return topic_for(device_id, TopicKind.ACKS)


def status_topic(device_id: str) -> str:
    return topic_for(device_id, TopicKind.STATUS)


def device_from_topic(topic: str) -> tuple[str, TopicKind]:
    """Parse a received topic name into ``(device_id, kind)``.

    Accepts exactly the names ``topic_for`` produces and raises ``DecodeError``
    for anything else: another prefix, a missing or extra level, an unknown
    kind, an empty or invalid device id, wildcards, or an over-long name.
    """
    if not isinstance(topic, str):
        raise DecodeError(f"topic must be text, got {type(topic).__name__}")
    if len(topic) > MAX_TOPIC_CHARS:
        raise DecodeError(f"topic of {len(topic)} characters exceeds {MAX_TOPIC_CHARS}")
    levels = topic.split("/")
    if len(levels) != len(_PREFIX_LEVELS) + 2 or tuple(levels[:-2]) != _PREFIX_LEVELS:
        raise DecodeError(f"topic {topic!r} is not {TOPIC_PREFIX}/<device id>/<kind>")
    device_id, kind = levels[-2], levels[-1]
    try:
        validate_identifier(device_id, "device id in topic")
    except SchemaError as exc:
        raise DecodeError(str(exc)) from exc
    try:
        return device_id, TopicKind(kind)
    except ValueError:
        raise DecodeError(f"topic kind {kind!r} is not one of {', '.join(TopicKind)}") from None
