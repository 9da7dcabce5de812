"""What the uplink does with a failed PUBACK, step by step with an injected clock and no broker.

Mosquitto 2.0 refuses a device's publishes over its publish budget with PUBACK 0x87
(deploy/mosquitto/custody_identity.c). That batch was not delivered: its records go back to
pending and are sent again after a pause that doubles while refusals continue (sync/uplink.py
"Refused publishes"). Codes a retry cannot change still stop the uplink. The real broker's side
is in tests/test_broker_budget.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from agent.outbox import Outbox
from agent.uplink import build_uplink
from custody.errors import SyncError
from sync.mqtt import BrokerConfig, LinkEvent, LinkEventKind
from sync.topics import events_topic
from sync.uplink import REFUSED_PAUSE_S, Uplink
from tests.conftest import Gateway

NOT_AUTHORIZED = LinkEvent(LinkEventKind.PUBACK, reason="Not authorized", code=0x87)
QUOTA_EXCEEDED = LinkEvent(LinkEventKind.PUBACK, reason="Quota exceeded", code=0x97)
ACK_TIMEOUT_S = 20.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeLink:
    """Stands in for MqttLink: records publishes, hands out message ids."""

    published: list[tuple[int, str]] = field(default_factory=list)  # (mid, topic)

    def publish(self, topic: str, payload: bytes, **_: object) -> int:
        mid = len(self.published) + 1
        self.published.append((mid, topic))
        return mid

    def subscribe(self, topic: str) -> None:
        pass

    def batches(self) -> list[int]:
        return [mid for mid, topic in self.published if topic == events_topic("gw-kol-01")]


@dataclass
class Rig:
    uplink: Uplink
    link: FakeLink
    clock: Clock
    outbox: Outbox

    def refuse(self, mid: int, event: LinkEvent = NOT_AUTHORIZED) -> None:
        self.uplink._handle(LinkEvent(event.kind, mid=mid, reason=event.reason, code=event.code))

    def accept(self, mid: int) -> None:
        self.uplink._handle(LinkEvent(LinkEventKind.PUBACK, mid=mid))

    def counts(self) -> dict[str, int]:
        return self.outbox.counts_by_state()


@pytest.fixture
def rig(gateway: Gateway) -> Iterator[Rig]:
    with gateway.recorder() as rec:
        for i in range(99):  # with the boot record: 100 records
            rec.seal_scan(f"S-{i}")
    outbox = Outbox.open(gateway.data_dir / "outbox.sqlite", check=None, create=False)
    clock = Clock()
    link = FakeLink()
    broker = BrokerConfig(url="mqtt://127.0.0.1:1", client_id=gateway.device_id)
    uplink = build_uplink(
        gateway.data_dir, outbox, broker,
        clock=clock, window=2, batch_events=10, ack_timeout_s=ACK_TIMEOUT_S,
    )  # fmt: skip
    uplink.link = link  # type: ignore[assignment]
    uplink._handle(LinkEvent(LinkEventKind.CONNECTED))
    try:
        yield Rig(uplink, link, clock, outbox)
    finally:
        outbox.close()


def test_a_refused_batch_goes_back_to_pending_and_is_sent_again_after_a_pause(rig: Rig) -> None:
    rig.uplink._publish_more()
    first, second = rig.link.batches()
    assert rig.counts()["sent"] == 20

    rig.refuse(first)  # over the broker's budget: not delivered, and not the end of the uplink
    counts = rig.counts()
    assert (counts["pending"], counts["sent"]) == (90, 10)
    assert rig.uplink.stats.retried_publishes == 1 and rig.uplink.stats.refused_publishes == 0
    rig.accept(second)
    rig.uplink._publish_more()
    assert rig.link.batches() == [first, second]  # paused, although the window has room

    rig.clock.now += REFUSED_PAUSE_S
    rig.uplink._publish_more()
    assert len(rig.link.batches()) == 4  # the window (2) again
    # The refused records first (the oldest pending), then the next ones; nothing skipped.
    assert sorted(rig.uplink._batches.values()) == [(1, 10), (11, 20), (21, 30)]
    assert rig.counts()["pending"] == 70


def test_the_pause_doubles_while_refusals_continue_and_resets_on_success(rig: Rig) -> None:
    pauses = []
    for _ in range(6):
        rig.uplink._publish_more()
        mids = rig.link.batches()[-2:]
        for mid in mids:  # the whole window refused: one pause, not one per batch
            rig.refuse(mid)
        paused_at = rig.clock.now
        while rig.link.batches()[-1] in mids:
            rig.clock.now += 0.25
            rig.uplink._publish_more()
        pauses.append(rig.clock.now - paused_at)
    # Doubling from REFUSED_PAUSE_S, capped at the ack timeout: a paid link does not loop.
    assert pauses == [1.0, 2.0, 4.0, 8.0, 16.0, ACK_TIMEOUT_S]
    assert rig.counts()["pending"] + rig.counts()["sent"] == 100

    for mid in rig.link.batches()[-2:]:
        rig.accept(mid)
    rig.uplink._publish_more()
    rig.refuse(rig.link.batches()[-1], QUOTA_EXCEEDED)  # 0x97 is retried the same way
    assert rig.uplink._paused_until - rig.clock.now == pytest.approx(REFUSED_PAUSE_S)


def test_a_refusal_a_retry_cannot_change_stops_the_uplink(rig: Rig) -> None:
    rig.uplink._publish_more()
    first = rig.link.batches()[0]
    with pytest.raises(SyncError, match="refused our publish"):
        rig.refuse(first, LinkEvent(LinkEventKind.PUBACK, reason="Packet too large", code=0x95))
    assert rig.uplink.stats.refused_publishes == 1


def test_a_refused_status_publish_is_not_a_batch(rig: Rig) -> None:
    status_mid = rig.link.published[0][0]  # the birth message, published at connect
    assert status_mid not in rig.link.batches()
    rig.refuse(status_mid)
    rig.uplink._publish_more()
    assert len(rig.link.batches()) == 2  # nothing paused, nothing requeued
    assert rig.uplink.stats.retried_publishes == 0
