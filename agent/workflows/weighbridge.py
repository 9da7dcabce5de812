"""The unattended weighbridge cycle: a sans-I/O state machine declared as a table.

Theory of operation
-------------------
``Weighbridge`` is fed typed indicator frames (``WeightReading`` from
``firmware_bridge.protocols``) with the time they were read, and returns what
happened (``Captured``, ``Outcome``, ``ZeroDrift``...). It never does I/O,
never reads a clock and keeps no history beyond its stability window; the
runner (``agent.workflows.station``) records what it returns.

Each reading is first classified into a ``Signal``:

* ``EMPTY`` / ``ON``: the bridge was empty and the reading is below / at or
  above ``on_threshold``;
* ``OFF``: a vehicle was on and the reading fell below the threshold;
* ``STABLE`` / ``MOTION``: a vehicle is on and the stability window is / is
  not satisfied;
* ``OVERLOAD``: the indicator flags over- or underload (no mass to record);
* ``TIMEOUT`` (from ``tick`` or before a reading) and ``DISCONNECT`` (the
  port went down) come from the runner.

``TABLE`` then maps (phase, signal) to the next phase and the actions taken.
A pair missing from the table cannot happen by construction; feeding it
raises ``IllegalTransition`` (a test walks the whole table).

Stability (OIML R76 "stable equilibrium"): the indicator's own no-motion flag
AND at least ``stable_readings`` readings, all within ``tolerance`` of each
other, spanning ``window_s`` seconds. Dialects that do not report motion
(flag ``stability_unreported``, XK3190) rely on the window alone. One capture
per stable period: after ``CAPTURE`` the machine waits for ``OFF``. A vehicle
that has not settled ``unstable_timeout_s`` after driving on gets an
``unstable`` outcome instead of a guessed weight; should it settle later, that
stable period is still captured.

Zero tracking: while the bridge is empty, ``stable_readings`` consecutive
indicator-stable readings further than ``zero_drift_limit`` from zero raise
``ZeroDrift`` once; back within the limit gives ``ZeroRestored``.

Masses are integers in the record's mass units (``MASS_UNIT_G`` grams).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

from custody.errors import CustodyError
from custody.mass import reading_to_units
from firmware_bridge.frames import WeightReading

__all__ = [
    "MAX_WINDOW",
    "TABLE",
    "Act",
    "Captured",
    "IllegalTransition",
    "Outcome",
    "Phase",
    "Signal",
    "StabilityRule",
    "VehicleOff",
    "VehicleOn",
    "Weighbridge",
    "ZeroDrift",
    "ZeroRestored",
    "reading_units",
]

# The stability window keeps the readings since the last motion, trimmed to the
# shortest run that still spans window_s with stable_readings readings. A fast
# indicator (Toledo continuous sends ~20 frames/s) over a long window would
# still be bounded by this cap; the oldest readings go first.
MAX_WINDOW = 4096


def reading_units(reading: WeightReading) -> int:
    """The reading in mass units; sub-unit remainders (lb indicators) round half-even."""
    return reading_to_units(reading.kg)


class IllegalTransition(CustodyError):
    """A (phase, signal) pair the table does not allow: a bug, never device trouble."""


class Phase(StrEnum):
    IDLE = "idle"  # bridge empty; zero tracked
    SETTLING = "settling"  # vehicle on, waiting for a stable period
    UNSTABLE = "unstable"  # timed out settling (outcome recorded); a late stable is captured
    OVERLOAD = "overload"  # indicator out of range (outcome recorded)
    CAPTURED = "captured"  # one capture taken; waiting for the vehicle to drive off


class Signal(StrEnum):
    EMPTY = "empty"
    ON = "on"
    OFF = "off"
    MOTION = "motion"
    STABLE = "stable"
    OVERLOAD = "overload"
    TIMEOUT = "timeout"
    DISCONNECT = "disconnect"


class Act(StrEnum):
    TRACK_ZERO = "track_zero"
    START = "start"  # vehicle on: start the settle timer and the window
    RESTART = "restart"  # settle again from scratch (after a disconnect or overload)
    CAPTURE = "capture"
    UNSTABLE = "unstable"
    OVERLOAD = "overload"
    LEFT_UNWEIGHED = "left_unweighed"
    DISCONNECTED = "disconnected"
    END = "end"  # vehicle off


P, S, A = Phase, Signal, Act
# (phase, signal) -> (next phase, actions in order). STYLE.md §4: the cycle is data.
TABLE: dict[tuple[Phase, Signal], tuple[Phase, tuple[Act, ...]]] = {
    (P.IDLE, S.EMPTY): (P.IDLE, (A.TRACK_ZERO,)),
    (P.IDLE, S.ON): (P.SETTLING, (A.START,)),
    (P.IDLE, S.OVERLOAD): (P.OVERLOAD, (A.START, A.OVERLOAD)),
    (P.IDLE, S.TIMEOUT): (P.IDLE, ()),
    (P.IDLE, S.DISCONNECT): (P.IDLE, ()),
    (P.SETTLING, S.MOTION): (P.SETTLING, ()),
    (P.SETTLING, S.STABLE): (P.CAPTURED, (A.CAPTURE,)),
    (P.SETTLING, S.TIMEOUT): (P.UNSTABLE, (A.UNSTABLE,)),
    (P.SETTLING, S.OVERLOAD): (P.OVERLOAD, (A.OVERLOAD,)),
    (P.SETTLING, S.OFF): (P.IDLE, (A.LEFT_UNWEIGHED, A.END)),
    (P.SETTLING, S.DISCONNECT): (P.SETTLING, (A.DISCONNECTED, A.RESTART)),
    (P.UNSTABLE, S.MOTION): (P.UNSTABLE, ()),
    (P.UNSTABLE, S.STABLE): (P.CAPTURED, (A.CAPTURE,)),
    (P.UNSTABLE, S.TIMEOUT): (P.UNSTABLE, ()),
    (P.UNSTABLE, S.OVERLOAD): (P.OVERLOAD, (A.OVERLOAD,)),
    (P.UNSTABLE, S.OFF): (P.IDLE, (A.END,)),
    (P.UNSTABLE, S.DISCONNECT): (P.UNSTABLE, ()),
    (P.OVERLOAD, S.OVERLOAD): (P.OVERLOAD, ()),
    (P.OVERLOAD, S.MOTION): (P.SETTLING, (A.RESTART,)),
    (P.OVERLOAD, S.STABLE): (P.CAPTURED, (A.CAPTURE,)),
    (P.OVERLOAD, S.TIMEOUT): (P.OVERLOAD, ()),
    (P.OVERLOAD, S.OFF): (P.IDLE, (A.END,)),
    (P.OVERLOAD, S.DISCONNECT): (P.OVERLOAD, ()),
    (P.CAPTURED, S.MOTION): (P.CAPTURED, ()),
    (P.CAPTURED, S.STABLE): (P.CAPTURED, ()),
    (P.CAPTURED, S.TIMEOUT): (P.CAPTURED, ()),
    (P.CAPTURED, S.OVERLOAD): (P.CAPTURED, ()),
    (P.CAPTURED, S.OFF): (P.IDLE, (A.END,)),
    (P.CAPTURED, S.DISCONNECT): (P.CAPTURED, ()),
}
del P, S, A


# --- what the machine returns ---------------------------------------------------------
@dataclass(frozen=True, slots=True)
class VehicleOn:
    at: float


@dataclass(frozen=True, slots=True)
class VehicleOff:
    at: float


@dataclass(frozen=True, slots=True)
class Captured:
    """A stable reading to record: ``units`` in mass units; ``reading`` the last frame."""

    units: int
    at: float
    reading: WeightReading = field(repr=False)
    readings: int = 0  # how many readings the stability window held


@dataclass(frozen=True, slots=True)
class Outcome:
    """No reading could be taken: ``unstable``, ``overload``, ``left_unweighed``,
    ``disconnected`` (the values of the signed weighing ``outcome`` field)."""

    kind: str
    at: float
    note: str


@dataclass(frozen=True, slots=True)
class ZeroDrift:
    units: int  # the empty bridge's signed reading
    at: float


@dataclass(frozen=True, slots=True)
class ZeroRestored:
    units: int
    at: float


Output = VehicleOn | VehicleOff | Captured | Outcome | ZeroDrift | ZeroRestored


@dataclass(frozen=True, slots=True)
class StabilityRule:
    """The configurable parts of the cycle (``weighbridge.*`` settings), in mass units."""

    on_threshold: int
    stable_readings: int
    tolerance: int
    window_s: float
    unstable_timeout_s: float
    zero_drift_limit: int  # 0 = no check

    def __post_init__(self) -> None:
        if self.on_threshold < 1 or self.stable_readings < 1 or self.tolerance < 0:
            raise ValueError("threshold and stable readings must be positive, tolerance >= 0")
        if self.window_s < 0 or self.unstable_timeout_s <= 0 or self.zero_drift_limit < 0:
            raise ValueError("window >= 0, timeout > 0 and zero drift limit >= 0")


@dataclass
class Weighbridge:
    """The cycle of one weighbridge. ``phase=CAPTURED`` resumes a vehicle that was
    captured before a restart and may still be on the bridge."""

    rule: StabilityRule
    phase: Phase = Phase.IDLE
    counts: dict[str, int] = field(default_factory=dict)  # outcomes by kind, for metrics
    zero_units: int = 0  # last stable empty-bridge reading
    zero_alarmed: bool = False
    _window: deque[tuple[float, int]] = field(default_factory=deque)
    _settle_since: float | None = None
    _zero_run: int = 0
    _last: WeightReading | None = None

    # --- inputs ----------------------------------------------------------------------
    def feed(self, reading: WeightReading, now: float) -> list[Output]:
        """One indicator frame read at monotonic time ``now``."""
        out: list[Output] = []
        if self._timed_out(now):
            self._step(Signal.TIMEOUT, now, out)
        self._last = reading
        self._step(self._classify(reading, now), now, out)
        return out

    def tick(self, now: float) -> list[Output]:
        """Time passes without frames (a silent indicator still times out)."""
        out: list[Output] = []
        if self._timed_out(now):
            self._step(Signal.TIMEOUT, now, out)
        return out

    def disconnect(self, now: float) -> list[Output]:
        """The indicator's port went down."""
        out: list[Output] = []
        self._step(Signal.DISCONNECT, now, out)
        return out

    # --- the table -------------------------------------------------------------------------
    def _step(self, signal: Signal, now: float, out: list[Output]) -> None:
        try:
            nxt, acts = TABLE[(self.phase, signal)]
        except KeyError:
            raise IllegalTransition(f"no transition from {self.phase} on {signal}") from None
        for act in acts:
            self._do(act, now, out)
        self.phase = nxt

    def _do(self, act: Act, now: float, out: list[Output]) -> None:
        reading = self._last
        if act is Act.TRACK_ZERO:
            self._track_zero(reading, now, out)
        elif act is Act.START:
            self._settle_since = now
            out.append(VehicleOn(now))
        elif act is Act.RESTART:
            self._settle_since = now
            self._window.clear()
        elif act is Act.CAPTURE:
            assert reading is not None  # STABLE comes only from a reading
            n = len(self._window)
            self._window.clear()
            self._settle_since = None
            self._count("captured")
            out.append(Captured(reading_units(reading), now, reading, n))
        elif act is Act.UNSTABLE:
            self._outcome(
                "unstable", now, out,
                f"no stable reading within {self.rule.unstable_timeout_s:g} s of driving on",
            )  # fmt: skip
        elif act is Act.OVERLOAD:
            under = reading is not None and reading.underload
            self._outcome("overload", now, out, "underload" if under else "overload")
            self._window.clear()
        elif act is Act.LEFT_UNWEIGHED:
            self._outcome("left_unweighed", now, out, "drove off before a stable reading")
        elif act is Act.DISCONNECTED:
            self._outcome("disconnected", now, out, "indicator port lost while settling")
        elif act is Act.END:
            self._window.clear()
            self._settle_since = None
            out.append(VehicleOff(now))

    def _outcome(self, kind: str, now: float, out: list[Output], note: str) -> None:
        self._count(kind)
        out.append(Outcome(kind, now, note))

    def _count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    # --- classification ----------------------------------------------------------------
    def _timed_out(self, now: float) -> bool:
        return (
            self.phase is Phase.SETTLING
            and self._settle_since is not None
            and now - self._settle_since >= self.rule.unstable_timeout_s
        )

    def _classify(self, reading: WeightReading, now: float) -> Signal:
        if reading.overload or reading.underload:
            return Signal.OVERLOAD
        units = reading_units(reading)
        on = units >= self.rule.on_threshold
        if self.phase is Phase.IDLE:
            if on:
                self._window.clear()
                self._observe(reading, units, now)
                return Signal.ON
            return Signal.EMPTY
        if not on:
            return Signal.OFF
        return Signal.STABLE if self._observe(reading, units, now) else Signal.MOTION

    def _observe(self, reading: WeightReading, units: int, now: float) -> bool:
        """Add a reading to the window; True when the window is stable."""
        w = self._window
        flag_ok = reading.stable or "stability_unreported" in reading.flags
        if not flag_ok:
            w.clear()  # the indicator says motion: a new stable period starts after it
            return False
        if w:
            lo = min(min(u for _, u in w), units)
            hi = max(max(u for _, u in w), units)
            if hi - lo > self.rule.tolerance:
                w.clear()
        w.append((now, units))
        horizon = now - self.rule.window_s
        while len(w) > self.rule.stable_readings and w[1][0] <= horizon:
            w.popleft()
        while len(w) > MAX_WINDOW:
            w.popleft()
        return len(w) >= self.rule.stable_readings and w[-1][0] - w[0][0] >= self.rule.window_s

    def _track_zero(self, reading: WeightReading | None, now: float, out: list[Output]) -> None:
        if reading is None or not (reading.stable or "stability_unreported" in reading.flags):
            self._zero_run = 0
            return
        units = reading_units(reading)
        self.zero_units = units
        limit = self.rule.zero_drift_limit
        if not limit:
            return
        off = abs(units) > limit
        if off == self.zero_alarmed:
            self._zero_run = 0
            return
        # The state flips only after stable_readings consecutive readings agree.
        self._zero_run += 1
        if self._zero_run < self.rule.stable_readings:
            return
        self._zero_run = 0
        self.zero_alarmed = off
        if off:
            self._count("zero_drift")
            out.append(ZeroDrift(units, now))
        else:
            out.append(ZeroRestored(units, now))
