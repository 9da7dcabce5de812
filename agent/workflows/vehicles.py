"""The site's vehicle registry: which truck carries which RFID tag.

An RFID reader at the weighbridge sees a windscreen tag's number, not the truck. The
optional ``weighbridge.vehicles`` file (CSV, UTF-8, one truck a line) says which plate
and haulier a tag belongs to, so records and drivers' tickets name the truck:

    tag,plate,haulier
    0A1B2C3D4E,CD-1234-AB,Kolwezi Haulage
    3F00A1B2C3,CD-5678-KT,

``tag`` is the number the reader gives (EM4100: 10 hex digits; case, ``:`` and ``-`` do not
matter); ``plate`` becomes the record's ``vehicle`` id, so it is written with
A-Z a-z 0-9 . _ - only (``CD 1234 AB`` as ``CD-1234-AB``), and must be unique; ``haulier``
is optional free text for the ticket. A tag not in the file keeps its number as the
vehicle id and prints as ``tag <hex> (not registered)``.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from custody.errors import ConfigError, SchemaError
from custody.event import validate_identifier

__all__ = ["MAX_VEHICLES", "Vehicle", "VehicleRegistry", "load_vehicles", "tag_key"]

# A site's fleet, contractors included, is a few hundred trucks; the cap keeps a wrong file
# (a log, a database dump) from being read whole into memory.
MAX_VEHICLES = 10_000
HEADER = ("tag", "plate", "haulier")


def tag_key(tag: str) -> str:
    """The tag number as the registry compares it: upper case, without separators."""
    return tag.replace(":", "").replace("-", "").strip().upper()


@dataclass(frozen=True, slots=True)
class Vehicle:
    tag: str
    plate: str
    haulier: str = ""


@dataclass(frozen=True, slots=True)
class VehicleRegistry:
    by_tag: dict[str, Vehicle]
    source: str = ""

    def lookup(self, tag: str) -> Vehicle | None:
        return self.by_tag.get(tag_key(tag))

    def by_plate(self, plate: str) -> Vehicle | None:
        return next((v for v in self.by_tag.values() if v.plate == plate), None)


EMPTY = VehicleRegistry({})


def load_vehicles(path: Path, key: str = "weighbridge.vehicles") -> VehicleRegistry:
    """Read the registry; a missing or malformed file is a ``ConfigError`` naming the file,
    the line and what is wrong (the service refuses to start on it, like any bad setting)."""
    source = str(path)
    try:
        with path.open(encoding="utf-8", newline="") as f:
            rows = _rows(f, source, key)
    except FileNotFoundError:
        raise ConfigError(source, key, "the vehicles file does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(source, key, f"cannot read the vehicles file: {exc}") from None
    by_tag: dict[str, Vehicle] = {}
    plates: dict[str, int] = {}
    for line, vehicle in rows:
        where = f"line {line}"
        if vehicle.tag in by_tag:
            raise ConfigError(source, key, f"{where}: tag {vehicle.tag} is listed twice")
        if vehicle.plate in plates:
            raise ConfigError(
                source, key,
                f"{where}: plate {vehicle.plate} is already on line {plates[vehicle.plate]}",
            )  # fmt: skip
        by_tag[vehicle.tag] = vehicle
        plates[vehicle.plate] = line
    return VehicleRegistry(by_tag, source)


def _rows(f: TextIO, source: str, key: str) -> list[tuple[int, Vehicle]]:
    reader = csv.reader(f)
    out: list[tuple[int, Vehicle]] = []
    for row in reader:
        line = reader.line_num
        cells = [c.strip() for c in row]
        if not any(cells) or cells[0].startswith("#"):
            continue
        if tuple(c.lower() for c in cells[:3]) == HEADER[: len(cells[:3])] and line == 1:
            continue
        if len(out) >= MAX_VEHICLES:
            raise ConfigError(source, key, f"more than {MAX_VEHICLES} vehicles")
        if not 2 <= len(cells) <= 3:
            raise ConfigError(
                source, key,
                f"line {line}: expected tag,plate[,haulier], got {len(cells)} column(s)",
            )  # fmt: skip
        tag = tag_key(cells[0])
        if not tag or not tag.isalnum() or not tag.isascii():
            raise ConfigError(
                source, key, f"line {line}: tag {cells[0]!r} is not a tag number (hex digits)"
            )
        try:
            plate = validate_identifier(cells[1], "plate")
        except SchemaError as exc:
            raise ConfigError(
                source, key, f"line {line}: {exc} (write CD 1234 AB as CD-1234-AB)"
            ) from None
        haulier = cells[2] if len(cells) == 3 else ""
        if len(haulier) > 64 or not haulier.isprintable():
            raise ConfigError(
                source, key, f"line {line}: haulier must be 0-64 printable characters"
            )
        out.append((line, Vehicle(tag, plate, haulier)))
    return out
