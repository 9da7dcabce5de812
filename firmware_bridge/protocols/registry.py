"""All dialects by name: each protocol module exports ``DIALECTS: list[Dialect]``."""

from __future__ import annotations

import importlib

from firmware_bridge.errors import PortConfigError
from firmware_bridge.protocols.base import Dialect, Parser

__all__ = ["all_dialects", "dialect", "make_parser"]

_MODULES = (
    "firmware_bridge.protocols.scales",
    "firmware_bridge.protocols.rfid",
    "firmware_bridge.protocols.codes",
    "firmware_bridge.protocols.nmea",
)


def all_dialects() -> dict[str, Dialect]:
    found: dict[str, Dialect] = {}
    for name in _MODULES:
        module = importlib.import_module(name)
        for d in module.DIALECTS:
            if d.name in found:
                raise RuntimeError(f"dialect {d.name} is defined twice")
            found[d.name] = d
    return found


def dialect(name: str) -> Dialect:
    dialects = all_dialects()
    try:
        return dialects[name]
    except KeyError:
        raise PortConfigError(
            f"unknown dialect {name!r}; known: {', '.join(sorted(dialects))}"
        ) from None


def make_parser(name: str, **options: object) -> Parser:
    try:
        return dialect(name).factory(**options)
    except TypeError as exc:
        raise PortConfigError(f"dialect {name}: bad option: {exc}") from exc
