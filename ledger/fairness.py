"""Per-device budgets and a fair queue in front of the intake.

Theory of operation. Every message on a device's events topic costs the ledger
one store transaction and, per record, a signature and opening check. One
enrolled device, stolen or buggy, must not be able to buy more than its share:

* a **budget** per device (token buckets for messages, records and bytes per
  second, each with a burst) decides at arrival whether a message is taken at
  all. A message over budget is acknowledged to the broker and dropped
  unprocessed: nothing of it is queued or stored, a per-device counter says so,
  and the device, which keeps every record until the ledger's signed ack,
  sends it again later. Messages and bytes are charged on arrival; records
  only after decoding, so the debt of a large batch delays the next one.
* a **fair queue** holds the admitted messages per device (at most
  ``queued_per_device`` each; more are dropped like over-budget ones) and hands
  them out round-robin, so a device with a deep backlog waits its turn behind
  every other device's one message instead of ahead of them.

Sans-I/O: the clock is passed in, nothing here touches MQTT or the store.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Generic, TypeVar

__all__ = ["Budget", "DeviceLimits", "Drop", "FairQueue"]

T = TypeVar("T")

# Devices whose state is kept. Topics name only devices whose certificate the broker
# accepted (the ACL binds the topic to the certificate), so this is a bound on memory,
# not a policy: an idle device's full buckets are the same as new ones and are forgotten.
MAX_TRACKED_DEVICES = 100_000


class Drop(StrEnum):
    """Why a message was acknowledged without being processed."""

    MESSAGES = "messages"  # over the device's messages per second
    RECORDS = "records"  # still paying for earlier records
    BYTES = "bytes"  # over the device's bytes per second
    QUEUE = "queue"  # the device already has its share of messages waiting


@dataclass(frozen=True, slots=True)
class DeviceLimits:
    """What one device may cost the intake. The defaults leave an honest gateway's
    backlog drain (batches of up to 1,000 records, 256 KiB) far from every limit while
    keeping a flooding device to a small share of one core."""

    messages_per_s: float = 50.0
    message_burst: float = 100.0
    records_per_s: float = 1_000.0
    record_burst: float = 2_000.0
    bytes_per_s: float = 1024 * 1024
    byte_burst: float = 4 * 1024 * 1024
    queued_per_device: int = 4

    def __post_init__(self) -> None:
        for name in ("messages_per_s", "message_burst", "records_per_s", "record_burst",
                     "bytes_per_s", "byte_burst"):  # fmt: skip
            value = getattr(self, name)
            if not value > 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if self.queued_per_device < 1:
            raise ValueError(f"queued_per_device must be at least 1, got {self.queued_per_device}")


@dataclass(slots=True)
class _Bucket:
    rate: float
    burst: float
    tokens: float
    at: float

    def refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now

    @property
    def full(self) -> bool:
        return self.tokens >= self.burst


@dataclass(slots=True)
class _Device:
    messages: _Bucket
    records: _Bucket
    bytes: _Bucket

    def refill(self, now: float) -> None:
        self.messages.refill(now)
        self.records.refill(now)
        self.bytes.refill(now)

    @property
    def idle(self) -> bool:
        return self.messages.full and self.records.full and self.bytes.full


@dataclass
class Budget:
    """Token buckets per device; ``admit`` on arrival, ``charge`` once the records are known."""

    limits: DeviceLimits
    _devices: OrderedDict[str, _Device] = field(default_factory=OrderedDict)

    def _device(self, device_id: str, now: float) -> _Device:
        device = self._devices.get(device_id)
        if device is None:
            lim = self.limits
            device = _Device(
                _Bucket(lim.messages_per_s, lim.message_burst, lim.message_burst, now),
                _Bucket(lim.records_per_s, lim.record_burst, lim.record_burst, now),
                _Bucket(lim.bytes_per_s, lim.byte_burst, lim.byte_burst, now),
            )
            self._devices[device_id] = device
            self._forget_idle(now)
        else:
            self._devices.move_to_end(device_id)
            device.refill(now)
        return device

    def _forget_idle(self, now: float) -> None:
        # Oldest first; a device that is still paying (not idle) is kept whatever the bound.
        while len(self._devices) > MAX_TRACKED_DEVICES:
            oldest_id, oldest = next(iter(self._devices.items()))
            oldest.refill(now)
            if not oldest.idle:
                return
            del self._devices[oldest_id]

    def admit(self, device_id: str, size: int, now: float) -> Drop | None:
        """Take one message of ``size`` bytes, or say which limit refuses it."""
        device = self._device(device_id, now)
        if device.messages.tokens < 1:
            return Drop.MESSAGES
        if device.records.tokens <= 0:
            return Drop.RECORDS
        if device.bytes.tokens <= 0:
            return Drop.BYTES
        device.messages.tokens -= 1
        # Bytes may go into debt: one message larger than the burst still passes when the
        # bucket is full, and the debt delays the next.
        device.bytes.tokens -= size
        return None

    def charge(self, device_id: str, records: int, now: float) -> None:
        """Pay for the records a processed message held (possibly into debt)."""
        self._device(device_id, now).records.tokens -= records

    def tokens(self, device_id: str, now: float) -> dict[str, float]:
        """What the device has left now (for /metrics and tests)."""
        device = self._device(device_id, now)
        return {
            "messages": device.messages.tokens,
            "records": device.records.tokens,
            "bytes": device.bytes.tokens,
        }


class FairQueue(Generic[T]):
    """Per-device FIFO queues served round-robin; each holds at most ``per_device`` items."""

    def __init__(self, per_device: int) -> None:
        self.per_device = per_device
        self._queues: dict[str, deque[T]] = {}
        self._turns: deque[str] = deque()  # devices with something queued, next first
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def push(self, device_id: str, item: T) -> bool:
        """Queue ``item``; False (nothing queued) when the device already has its share."""
        queue = self._queues.get(device_id)
        if queue is None:
            queue = self._queues[device_id] = deque()
        if len(queue) >= self.per_device:
            return False
        if not queue:
            self._turns.append(device_id)
        queue.append(item)
        self._size += 1
        return True

    def pop(self) -> tuple[str, T] | None:
        """The next device's oldest item, or None when nothing is queued."""
        if not self._turns:
            return None
        device_id = self._turns.popleft()
        queue = self._queues[device_id]
        item = queue.popleft()
        self._size -= 1
        if queue:
            self._turns.append(device_id)
        else:
            del self._queues[device_id]
        return device_id, item

    def clear(self) -> list[tuple[str, T]]:
        """Remove everything (the connection that delivered it is gone)."""
        out = [(d, item) for d, q in self._queues.items() for item in q]
        self._queues.clear()
        self._turns.clear()
        self._size = 0
        return out

    def depth(self, device_id: str) -> int:
        queue = self._queues.get(device_id)
        return 0 if queue is None else len(queue)
