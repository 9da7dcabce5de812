"""What happens on a weighbridge, as a stream of readings (DOMAIN.md "Weighbridges").

A truck visit: the reading climbs as the truck drives on (motion), rocks,
settles within a division and the indicator flags it stable, holds while the
operator or gateway takes it, then falls as the truck drives off; between
trucks the empty bridge drifts slowly around zero. Faults a real site shows
are injected on request: noise bytes on the line, frames with a bad checksum,
an overload, and a frame cut in the middle by a disconnect.

Everything is driven by a seeded ``random.Random`` so a scenario is
reproducible, and by a sample index instead of a clock (the runner paces it).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Sample", "seal_codes", "tag_ids", "truck_visits"]


@dataclass(frozen=True, slots=True)
class Sample:
    """One indicator update: weight in kg (whole division), and whether stable."""

    kg: int
    stable: bool
    overload: bool = False
    event: str = ""  # "arrive", "stable", "leave" marks for the tag/scanner streams


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
) -> Iterator[Sample]:
    """Samples for ``trucks`` visits (forever when None)."""
    n = 0
    while trucks is None or n < trucks:
        n += 1
        gross = _round(rng.uniform(28_000, 48_000), division)
        if overload_every and n % overload_every == 0:
            gross = capacity_kg + 5 * division
        # empty bridge, slight zero drift
        for _ in range(frames_per_phase):
            yield Sample(_round(rng.gauss(0, division / 3), division), True)
        yield Sample(0, False, event="arrive")
        # driving on: ramp with motion
        for i in range(1, frames_per_phase + 1):
            yield Sample(_round(gross * i / frames_per_phase + rng.gauss(0, 400), division), False)
        # rocking, then settling
        for i in range(frames_per_phase // 2):
            amplitude = 300 * (frames_per_phase // 2 - i) / (frames_per_phase // 2)
            yield Sample(_round(gross + rng.uniform(-amplitude, amplitude), division), False)
        over = gross > capacity_kg
        for i in range(frames_per_phase):
            yield Sample(gross, True, overload=over, event="stable" if i == 0 else "")
        # driving off
        for i in range(frames_per_phase, 0, -1):
            yield Sample(_round(gross * (i - 1) / frames_per_phase, division), False)
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
