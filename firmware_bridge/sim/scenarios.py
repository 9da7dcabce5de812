"""What happens on a weighbridge, as a stream of readings (DOMAIN.md "Weighbridges").

A truck visit: the reading climbs as the truck drives on (motion), rocks,
settles within a division and the indicator flags it stable, holds while the
operator or gateway takes it, then falls as the truck drives off; between
trucks the empty bridge drifts slowly around zero. Faults a real site shows
are injected on request: noise bytes on the line, frames with a bad checksum,
an overload, and a frame cut in the middle by a disconnect.

Everything is driven by a seeded ``random.Random`` so a scenario is
reproducible, and by a sample index instead of a clock (the runner paces it).
``Phases`` says how many samples each part of a visit lasts; ``Phases.lasting``
turns a ``TruckTiming`` in seconds into samples at the runner's rate.

``REAL_TRUCK`` is how long a truck takes on a real two-axle-group weighbridge:
it drives on at walking pace, the driver stops and sets the brake, the deck
and suspension rock for a couple of seconds, then the truck stands still while
the indicator settles and the reading is taken (weighbridge codes of practice
ask the driver to stay stopped until the signal or the operator says so:
several seconds, not one), and it drives off. The gateway's default
``weighbridge.window_s`` (2 s of stable readings) fits inside that hold with
room to spare, so the simulator exercises the same defaults a site runs.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["REAL_TRUCK", "Phases", "Sample", "TruckTiming", "seal_codes", "tag_ids", "truck_visits"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One indicator update: weight in kg (whole division), and whether stable."""

    kg: int
    stable: bool
    overload: bool = False
    event: str = ""  # "arrive", "stable", "leave" marks for the tag/scanner streams


@dataclass(frozen=True, slots=True)
class TruckTiming:
    """Seconds each part of a truck visit lasts."""

    empty_s: float = 3.0  # the bridge empty between two trucks
    drive_on_s: float = 4.0  # the reading climbs with motion
    settle_s: float = 2.0  # stopped: deck and suspension rock, then settle
    hold_s: float = 8.0  # standing still while the indicator settles and the reading is taken
    drive_off_s: float = 4.0

    def __post_init__(self) -> None:
        if min(self.empty_s, self.drive_on_s, self.settle_s, self.hold_s, self.drive_off_s) <= 0:
            raise ValueError("every phase of a truck visit lasts more than 0 s")


REAL_TRUCK = TruckTiming()


@dataclass(frozen=True, slots=True)
class Phases:
    """Samples each part of a truck visit lasts. The defaults are a compact visit
    (56 samples) for tests that pace trucks by sample count, not by the clock."""

    empty: int = 12
    drive_on: int = 12
    settle: int = 6
    hold: int = 12
    drive_off: int = 12

    def __post_init__(self) -> None:
        if min(self.empty, self.drive_on, self.settle, self.hold, self.drive_off) < 1:
            raise ValueError("every phase of a truck visit lasts at least one sample")

    @classmethod
    def lasting(cls, timing: TruckTiming, rate: float) -> Phases:
        """The phases of ``timing`` at ``rate`` samples per second."""

        def n(seconds: float) -> int:
            return max(1, round(seconds * rate))

        return cls(
            n(timing.empty_s), n(timing.drive_on_s), n(timing.settle_s), n(timing.hold_s),
            n(timing.drive_off_s),
        )  # fmt: skip

    @property
    def per_visit(self) -> int:
        """Samples in one visit (the arrive and leave marks included)."""
        return self.empty + 1 + self.drive_on + self.settle + self.hold + self.drive_off + 1


def _round(kg: float, division: int) -> int:
    return round(kg / division) * division


def truck_visits(
    rng: random.Random,
    *,
    trucks: int | None = None,
    division: int = 20,
    capacity_kg: int = 100_000,
    frames_per_phase: int = 12,
    overload_every: int = 0,
    phases: Phases | None = None,
) -> Iterator[Sample]:
    """Samples for ``trucks`` visits (forever when None). ``phases`` sets each part's
    length; without it every part lasts ``frames_per_phase`` samples (settling half)."""
    f = frames_per_phase
    ph = phases or Phases(f, f, max(1, f // 2), f, f)
    n = 0
    while trucks is None or n < trucks:
        n += 1
        gross = _round(rng.uniform(28_000, 48_000), division)
        if overload_every and n % overload_every == 0:
            gross = capacity_kg + 5 * division
        # empty bridge, slight zero drift
        for _ in range(ph.empty):
            yield Sample(_round(rng.gauss(0, division / 3), division), True)
        yield Sample(0, False, event="arrive")
        # driving on: ramp with motion
        for i in range(1, ph.drive_on + 1):
            yield Sample(_round(gross * i / ph.drive_on + rng.gauss(0, 400), division), False)
        # stopped: rocking that dies down
        for i in range(ph.settle):
            amplitude = 300 * (ph.settle - i) / ph.settle
            yield Sample(_round(gross + rng.uniform(-amplitude, amplitude), division), False)
        over = gross > capacity_kg
        for i in range(ph.hold):
            yield Sample(gross, True, overload=over, event="stable" if i == 0 else "")
        # driving off
        for i in range(ph.drive_off, 0, -1):
            yield Sample(_round(gross * (i - 1) / ph.drive_off, division), False)
        yield Sample(0, True, event="leave")


def tag_ids(rng: random.Random) -> Iterator[str]:
    """EM4100 ids (10 hex digits) for trucks: a small fleet that comes back."""
    fleet = [f"{rng.randrange(1 << 40):010X}" for _ in range(8)]
    while True:
        yield rng.choice(fleet)


def seal_codes(rng: random.Random, *, gs1: bool = True) -> Iterator[str]:
    """Seal codes as a scanner reads them: GS1 SSCC element strings or plain serials."""
    serial = rng.randrange(100_000, 900_000)
    while True:
        serial += 1
        if gs1:
            body = f"0614141{serial:010d}"  # extension, company prefix, serial: 17 digits
            yield "00" + body + str(_gs1_check_digit(body))
        else:
            yield f"SEAL-{serial:06d}"


def _gs1_check_digit(digits: str) -> int:
    """GS1 mod-10 (General Specifications §7.9.1): weights 3,1 from the right."""
    total = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(digits)))
    return (10 - total % 10) % 10
