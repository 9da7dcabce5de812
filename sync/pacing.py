"""Pacing the uplink for the link it has: a byte-rate cap and adaptive batch sizes.

Sites pay per megabyte on VSAT and 3G (DOMAIN.md "Conditions"), so an
operator can cap the uplink's rate (``TokenBucket``); and links range from a
LAN to 2G, so the batch size follows the link (``BatchSizer``): it grows while
the broker acknowledges batches quickly and halves when a PUBACK is slow or a
connection drops (additive increase, multiplicative decrease, as TCP does).
Both take an injected clock; neither sleeps.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["BatchSizer", "TokenBucket"]


@dataclass
class TokenBucket:
    """At most ``rate`` bytes per second on average, bursts up to ``burst`` bytes."""

    rate: float  # bytes per second; 0 means unlimited
    burst: float
    _tokens: float = field(default=0.0, init=False)
    _at: float | None = field(default=None, init=False)

    def wait_time(self, size: int, now: float) -> float:
        """Seconds until ``size`` bytes may be sent (0.0 when they may go now)."""
        if self.rate <= 0:
            return 0.0
        self._refill(now)
        needed = min(size, self.burst)  # a batch larger than the burst waits for a full bucket
        return 0.0 if self._tokens >= needed else (needed - self._tokens) / self.rate

    def spend(self, size: int, now: float) -> None:
        if self.rate <= 0:
            return
        self._refill(now)
        self._tokens -= min(size, self.burst)

    def _refill(self, now: float) -> None:
        if self._at is None:
            self._at, self._tokens = now, self.burst
            return
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now


@dataclass
class BatchSizer:
    """Batch byte budget between ``minimum`` and ``maximum``, following PUBACK latency."""

    minimum: int = 4 * 1024
    maximum: int = 256 * 1024
    target_rtt_s: float = 2.0  # a PUBACK slower than this means the link is struggling
    step: int = 16 * 1024
    current: int = 32 * 1024

    def __post_init__(self) -> None:
        self.current = max(self.minimum, min(self.maximum, self.current))

    def on_puback(self, rtt_s: float) -> None:
        if rtt_s > self.target_rtt_s:
            self.current = max(self.minimum, self.current // 2)
        else:
            self.current = min(self.maximum, self.current + self.step)

    def on_disconnect(self) -> None:
        self.current = max(self.minimum, self.current // 2)
