"""Field tools behind ``custody-agent devices``, ``sim`` and ``camera``.

What a site engineer runs when commissioning: list the dialects, listen to a
port and see every decoded frame with the port's counters, run a simulated
device, decode photographs of seal labels.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from firmware_bridge.protocols import registry
from firmware_bridge.transport import FrameRead, PortEvent, PortReader, PortState, StateChanged

__all__ = ["describe_dialects", "frame_json", "listen"]


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, frozenset | set):
        return sorted(_plain(v) for v in value)
    return value


def frame_json(item: object) -> dict[str, Any]:
    """A frame (or FrameError) as a JSON-ready dict with its type name."""
    out: dict[str, Any] = {"type": type(item).__name__}
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        for f in dataclasses.fields(item):
            out[f.name] = _plain(getattr(item, f.name))
    else:
        out["value"] = repr(item)
    return out


def describe_dialects() -> list[dict[str, Any]]:
    out = []
    for name, d in sorted(registry.all_dialects().items()):
        s = d.serial
        out.append(
            {
                "name": name,
                "kind": d.kind,
                "description": d.description,
                "serial": f"{s.baudrate} {s.bytesize}{s.parity}{s.stopbits}",
                "manual": d.manual,
            }
        )
    return out


def listen(
    url: str,
    dialect_name: str,
    *,
    duration: float | None = None,
    baudrate: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[PortEvent | dict[str, int]]:
    """Yield every event from a port until ``duration`` or ``should_stop``; then its counters."""
    d = registry.dialect(dialect_name)
    settings = d.serial if baudrate is None else dataclasses.replace(d.serial, baudrate=baudrate)
    reader = PortReader(url, d.factory, settings=settings).start()
    deadline = None if duration is None else time.monotonic() + duration
    try:
        while not should_stop():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                yield reader.out.get(timeout=min(0.2, remaining) if remaining else 0.2)
            except queue.Empty:
                if reader.state is PortState.FAILED:
                    break
    finally:
        reader.stop()
    yield reader.counters.as_dict()


def event_line(event: PortEvent) -> str:
    if isinstance(event, StateChanged):
        return f"[{event.port}] port {event.state}"
    body = frame_json(event.frame if isinstance(event, FrameRead) else event.error)
    kind = body.pop("type")
    body.pop("raw", None)
    fields = " ".join(f"{k}={v}" for k, v in body.items() if v not in (None, "", (), []))
    return f"[{event.port}] {kind} {fields}"


def event_json(event: PortEvent) -> str:
    """One event as a JSON line; ``kind`` is ``frame``, ``error`` or ``state`` (a stable format)."""
    item: object
    if isinstance(event, StateChanged):
        kind, item = "state", str(event.state)
    elif isinstance(event, FrameRead):
        kind, item = "frame", frame_json(event.frame)
    else:
        kind, item = "error", frame_json(event.error)
    return json.dumps({"port": event.port, "kind": kind, "at": event.at, "item": item})


def decode_images(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """One result per image: the codes found, or the error for an unreadable image."""
    from firmware_bridge import camera  # opencv is heavy: import only when asked
    from firmware_bridge.errors import DeviceError
    from firmware_bridge.protocols.codes import classify_code

    for path in paths:
        try:
            found = camera.decode_file(path)
        except DeviceError as exc:
            yield {"path": str(path), "codes": [], "error": str(exc)}
            continue
        codes = []
        for d in found:
            code = frame_json(d)
            seal = classify_code(d.text, d.symbology)
            code["seal_kind"] = seal.kind
            codes.append(code)
        yield {"path": str(path), "codes": codes}
