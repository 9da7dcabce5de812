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

``GpsClock`` wraps that clock for a gateway with a GNSS receiver on a serial
port (``devices.ports``, an NMEA dialect). Each valid RMC fix carries the UTC
date and time (NMEA 0183 v4.10 §6.3, RMC); the difference between that time
and the host clock when the sentence was read becomes the correction. While
the kernel reports NTP sync, NTP wins (it disciplines the host clock far more
finely than NMEA, which is sent some hundreds of milliseconds after the second
it names and has no PPS edge here). Otherwise the time is the host clock plus
the correction, source ``gps``: quality ``synced`` while the last fix is at most
``holdover_s`` old, ``unsynced`` after that (a free-running clock last set by
GPS). A fix whose time is before ``earliest_valid`` (a receiver hit by the GPS
week-number rollover) is ignored and counted.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Protocol, runtime_checkable

from custody.event import (
    MAX_TIME_MS,
    POSITION_UNITS_PER_DEGREE,
    DeviceTime,
    TimeQuality,
    TimeSource,
)
from firmware_bridge.frames import GpsFix

__all__ = [
    "GPS_HOLDOVER_S",
    "Clock",
    "FixedClock",
    "GpsClock",
    "GpsPosition",
    "SystemClock",
    "fix_utc_ms",
    "kernel_clock_synchronised",
]

# A receiver sends RMC once a second; a minute without a valid fix means the antenna lost the
# sky (or the receiver its power), and the host clock is then only as good as its oscillator.
GPS_HOLDOVER_S = 60.0

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


def fix_utc_ms(fix: GpsFix) -> int | None:
    """The UTC time (ms) an RMC fix names; None for a fix without a valid date and time.

    NMEA years have two digits: 80-99 are 1980-1999 (GPS time starts in 1980), the rest 20xx.
    """
    if not fix.valid or fix.utc_date is None or fix.utc_time is None:
        return None
    d, t = fix.utc_date, fix.utc_time
    try:
        yy = int(d[4:6])
        whole = datetime(
            (1900 if yy >= 80 else 2000) + yy, int(d[2:4]), int(d[0:2]),
            int(t[0:2]), int(t[2:4]), int(t[4:6]), tzinfo=UTC,
        )  # fmt: skip
        frac = Decimal("0" + t[6:]) if len(t) > 6 else Decimal(0)
    except (ValueError, ArithmeticError):
        return None
    return int(whole.timestamp()) * 1000 + int(frac * 1000)


@dataclass(frozen=True, slots=True)
class GpsPosition:
    """Where the receiver last had a valid fix, and when (monotonic seconds)."""

    latitude: Decimal
    longitude: Decimal
    satellites: int | None
    at: float

    def signed(self) -> dict[str, int]:
        """The body field ``pos`` (docs/protocol.md §2): integer 1e-7 degrees."""
        return {
            "lat": _degrees_to_units(self.latitude),
            "lon": _degrees_to_units(self.longitude),
        }


def _degrees_to_units(degrees: Decimal) -> int:
    scaled = degrees * POSITION_UNITS_PER_DEGREE
    return int(scaled.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


@runtime_checkable
class PositionSource(Protocol):
    """A clock that also knows where the gateway is (a GNSS receiver's)."""

    def fresh_position(self) -> GpsPosition | None: ...


class GpsClock:
    """A clock corrected by a GNSS receiver's fixes (module doc); thread-safe."""

    def __init__(
        self,
        inner: Clock,
        *,
        earliest_valid_ms: int,
        holdover_s: float = GPS_HOLDOVER_S,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.inner = inner
        self.earliest_valid_ms = earliest_valid_ms
        self.holdover_s = holdover_s
        self._wall_ms = wall_ms
        self._mono = monotonic
        self._lock = threading.Lock()
        self._offset_ms: int | None = None
        self._synced_at: float | None = None  # monotonic time of the last fix used
        self.position: GpsPosition | None = None
        self.fixes = 0  # valid fixes that set the time
        self.rejected = 0  # valid fixes with an implausible time (before earliest_valid)

    def observe(self, fix: GpsFix, at: float) -> bool:
        """A fix read at monotonic time ``at``; True when it set the time."""
        if fix.valid and fix.latitude is not None and fix.longitude is not None:
            self.position = GpsPosition(fix.latitude, fix.longitude, fix.satellites, at)
        utc = fix_utc_ms(fix)
        if utc is None:
            return False
        if not self.earliest_valid_ms <= utc <= MAX_TIME_MS:
            self.rejected += 1
            return False
        # The host's wall time when the sentence was read, not when we got to it.
        host_at_read = self._wall_ms() - round((self._mono() - at) * 1000)
        with self._lock:
            self._offset_ms = utc - host_at_read
            self._synced_at = at
        self.fixes += 1
        return True

    def fresh_position(self) -> GpsPosition | None:
        """The last valid fix's position while it is no older than the holdover: a capture
        signs where it was taken only when the receiver says so recently."""
        pos = self.position
        if pos is None or self._mono() - pos.at > self.holdover_s:
            return None
        return pos

    def now(self) -> DeviceTime:
        inner = self.inner.now()
        with self._lock:
            offset, synced_at = self._offset_ms, self._synced_at
        if inner.quality is TimeQuality.SYNCED or offset is None or synced_at is None:
            return inner
        ms = min(max(self._wall_ms() + offset, 0), MAX_TIME_MS)
        fresh = self._mono() - synced_at <= self.holdover_s
        return DeviceTime(ms, TimeSource.GPS, TimeQuality.SYNCED if fresh else TimeQuality.UNSYNCED)
