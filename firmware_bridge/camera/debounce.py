"""Debouncing: one report per code while it stays in view; memory bounded by ``max_entries``."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from firmware_bridge.camera.decode import Decoded

__all__ = ["Debouncer"]


class Debouncer:
    """Report a code once while it stays in view.

    A code is reported when it has not been seen for ``window_s`` seconds; every
    sighting restarts its window, so a seal held in front of the camera for a
    minute is one report, and shown again after ``window_s`` of absence it is a
    new one. Time comes from ``now`` or the injected ``clock`` (never slept on).
    At most ``max_entries`` codes are remembered; the least recently seen is
    forgotten first (it would be reported again if it came back).
    """

    def __init__(
        self,
        window_s: float = 5.0,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_entries: int = 1024,
    ) -> None:
        if not window_s > 0 or not math.isfinite(window_s):
            raise ValueError(f"window_s must be a positive number, got {window_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.window_s = window_s
        self.max_entries = max_entries
        self._clock = clock
        self._last_seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self.suppressed = 0
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._last_seen)

    def admit(self, key: tuple[str, str] | str, now: float | None = None) -> bool:
        """Record a sighting of ``key``; True when it should be reported."""
        t = self._clock() if now is None else now
        k = ("", key) if isinstance(key, str) else key
        last = self._last_seen.pop(k, None)
        self._last_seen[k] = t
        self._expire(t)
        if last is not None and t - last < self.window_s:
            self.suppressed += 1
            return False
        return True

    def filter(self, codes: Iterable[Decoded], now: float | None = None) -> list[Decoded]:
        """The codes among ``codes`` to report now (each key at most once per call)."""
        t = self._clock() if now is None else now
        out: list[Decoded] = []
        keys: set[tuple[str, str]] = set()
        for code in codes:
            if code.key in keys:
                continue
            keys.add(code.key)
            if self.admit(code.key, t):
                out.append(code)
        return out

    def _expire(self, now: float) -> None:
        while self._last_seen:
            key, seen = next(iter(self._last_seen.items()))
            if now - seen >= self.window_s or len(self._last_seen) > self.max_entries:
                del self._last_seen[key]
                if now - seen < self.window_s:
                    self.evicted += 1
            else:
                break
