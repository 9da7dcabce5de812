"""The device clock and how far its time can be trusted.

A gateway without a battery-backed RTC may boot after a power cut with a clock
in 1970 (DOMAIN.md "Conditions"). We never refuse or delay a capture because of
the clock; we record the time with its source and quality instead:

- quality ``none`` when the time is before ``earliest_valid`` (impossible for
  this software, so the clock is not set);
- ``synced``/source ``ntp`` when the kernel reports the clock disciplined
  (adjtimex(2): return value not TIME_ERROR and STA_UNSYNC clear; this is what
  ``timedatectl`` shows as "System clock synchronized");
- otherwise ``unsynced`` with source ``rtc``.
Source ``gps`` (``TimeSource.GPS``) belongs to a GPS-disciplined clock; this
module never reports it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time
from typing import Protocol

from custody.event import DeviceTime, TimeQuality, TimeSource

__all__ = ["Clock", "FixedClock", "SystemClock", "kernel_clock_synchronised"]

_TIME_ERROR = 5  # adjtimex(2) return value: clock not synchronised
_STA_UNSYNC = 0x0040  # <linux/timex.h>


class _Timex(ctypes.Structure):
    # struct timex from <linux/timex.h>: modes, then 10 longs we skip over,
    # status; the tail is reserved padding (11 ints in the kernel ABI + more).
    _fields_ = [
        ("modes", ctypes.c_uint),
        ("offset", ctypes.c_long),
        ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long),
        ("esterror", ctypes.c_long),
        ("status", ctypes.c_int),
        ("constant", ctypes.c_long),
        ("precision", ctypes.c_long),
        ("tolerance", ctypes.c_long),
        ("time_sec", ctypes.c_long),
        ("time_usec", ctypes.c_long),
        ("tick", ctypes.c_long),
        ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long),
        ("shift", ctypes.c_int),
        ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long),
        ("calcnt", ctypes.c_long),
        ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long),
        ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


def kernel_clock_synchronised() -> bool | None:
    """True/False from adjtimex(2) with modes=0 (read-only); None where unavailable."""
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class Clock(Protocol):
    def now(self) -> DeviceTime: ...


class SystemClock:
    """The host clock, with quality from the kernel (re-read at most every 10 s)."""

    RECHECK_S = 10.0

    def __init__(self, earliest_valid_ms: int) -> None:
        self.earliest_valid_ms = earliest_valid_ms
        self._synced: bool | None = None
        self._checked_at = -1e9

    def now(self) -> DeviceTime:
        ms = time.time_ns() // 1_000_000
        mono = time.monotonic()
        if mono - self._checked_at > self.RECHECK_S:
            self._synced = kernel_clock_synchronised()
            self._checked_at = mono
        if ms < self.earliest_valid_ms:
            return DeviceTime(max(ms, 0), TimeSource.NONE, TimeQuality.NONE)
        if self._synced:
            return DeviceTime(ms, TimeSource.NTP, TimeQuality.SYNCED)
        return DeviceTime(ms, TimeSource.RTC, TimeQuality.UNSYNCED)


class FixedClock:
    """A clock for tests and simulations: returns what it is told."""

    def __init__(self, time_: DeviceTime) -> None:
        self.time = time_

    def now(self) -> DeviceTime:
        return self.time
