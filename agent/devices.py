"""Field tools behind ``custody-agent devices``, ``sim`` and ``camera``.

What a site engineer runs when commissioning: list the dialects, listen to a
port and see every decoded frame with the port's counters (a port that will not
open says why; a frame error shows its raw bytes and, when nothing decodes, which
dialects the bytes look like), detect an unknown device's dialect and line settings,
run a simulated device, decode photographs of seal labels.
"""

from __future__ import annotations

import dataclasses
import json
import queue
import re
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

from firmware_bridge.errors import PortConfigError
from firmware_bridge.protocols import registry
from firmware_bridge.protocols.base import Dialect, FrameError, SerialDefaults
from firmware_bridge.transport import (
    FrameRead,
    FrameSkipped,
    PortEvent,
    PortReader,
    PortState,
    StateChanged,
)

__all__ = [
    "DialectHint",
    "DialectScore",
    "describe_dialects",
    "frame_json",
    "listen",
    "raw_bytes_text",
    "score_dialects",
]

# Frame errors before `listen` guesses the dialect when nothing has decoded yet.
HINT_AFTER_ERRORS = 3
# A dialect that reads any printable line as a frame (every other text dialect's lines too,
# and on a noisy line the garbled ones the right dialect rejects): it ranks below any dialect
# whose format and checksum at least half as many frames passed in the same bytes.
CATCH_ALL = frozenset({"scanner-line"})


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


@dataclasses.dataclass(frozen=True, slots=True)
class DialectScore:
    """How well one dialect's parser reads a sample of bytes."""

    dialect: str
    kind: str
    frames: int
    errors: int
    dropped_bytes: int
    bytes_in: int
    outranked: bool = False  # a catch-all that a specific dialect outranks (``CATCH_ALL``)

    @property
    def confidence(self) -> float:
        """Frames / (frames + errors), scaled by the share of bytes not dropped; 0 with no frame."""
        if self.frames == 0 or self.bytes_in == 0:
            return 0.0
        kept = 1.0 - min(self.dropped_bytes, self.bytes_in) / self.bytes_in
        return round(self.frames / (self.frames + self.errors) * kept, 3)

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "confidence": self.confidence}


@dataclasses.dataclass(frozen=True, slots=True)
class DialectHint:
    """``listen``'s guess at the right dialect when the chosen one decodes nothing."""

    port: str
    chosen: str
    candidates: tuple[DialectScore, ...]  # best first; only dialects that decoded a frame
    raw: bytes  # the sample the guess was made from


def _parsers() -> list[tuple[Dialect, Any]]:
    """Every dialect whose parser works without options (``regex`` needs a pattern)."""
    out = []
    for d in registry.all_dialects().values():
        try:
            out.append((d, d.factory()))
        except (TypeError, ValueError, PortConfigError):
            continue
    return out


def score_dialects(sample: bytes) -> list[DialectScore]:
    """Feed ``sample`` to every dialect's parser; best first (confidence, then frames).

    The sample usually starts mid-frame; that first partial frame costs every dialect the
    same one error, so the ranking holds.
    """
    scores = []
    for d, parser in _parsers():
        items = parser.feed(sample, 0.0)
        errors = sum(isinstance(i, FrameError) for i in items)
        scores.append(
            DialectScore(
                d.name,
                str(d.kind),
                len(items) - errors,
                errors,
                parser.stats.dropped_bytes,
                len(sample),
            )
        )
    specific = max((c.frames for c in scores if c.dialect not in CATCH_ALL), default=0)
    scores = [
        dataclasses.replace(c, outranked=c.dialect in CATCH_ALL and 0 < c.frames <= 2 * specific)
        for c in scores
    ]
    return sorted(scores, key=_rank_key)


def _rank_key(c: DialectScore) -> tuple[bool, float, bool, int, str]:
    return (c.outranked, -c.confidence, c.dialect in CATCH_ALL, -c.frames, c.dialect)


def listen(
    url: str,
    dialect_name: str,
    *,
    duration: float | None = None,
    baudrate: int | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> Iterator[PortEvent | DialectHint | dict[str, int]]:
    """Yield every event from a port until ``duration`` or ``should_stop``; then its counters.

    A port that never opened raises its ``PortOpenError`` (the OS reason in words) or
    ``PortConfigError`` instead of retrying quietly: at commissioning, the engineer is
    there to act on it. Once open, a port that goes down is retried as in the service.
    After ``HINT_AFTER_ERRORS`` frame errors with no frame, a ``DialectHint`` says which
    other dialects decode the bytes seen so far.
    """
    d = registry.dialect(dialect_name)
    settings = d.serial if baudrate is None else dataclasses.replace(d.serial, baudrate=baudrate)
    reader = PortReader(url, d.factory, settings=settings).start()
    deadline = None if duration is None else time.monotonic() + duration
    hinted = False
    try:
        while not should_stop():
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                break
            try:
                event = reader.out.get(timeout=min(0.2, remaining) if remaining else 0.2)
            except queue.Empty:
                if reader.state is PortState.FAILED:
                    raise PortConfigError(reader.last_error or f"{url}: cannot open") from None
                continue
            if isinstance(event, StateChanged) and not reader.ever_opened:
                if event.state is PortState.DOWN and reader.open_error is not None:
                    raise reader.open_error
                if event.state is PortState.FAILED:
                    raise PortConfigError(reader.last_error or f"{url}: cannot open")
            yield event
            c = reader.counters
            if (
                not hinted
                and isinstance(event, FrameSkipped)
                and c.frames == 0
                and c.frame_errors >= HINT_AFTER_ERRORS
            ):
                hinted = True
                sample = reader.recent_bytes()
                better = [s for s in score_dialects(sample) if s.frames and s.dialect != d.name]
                yield DialectHint(reader.name, d.name, tuple(better), sample)
    finally:
        reader.stop()
    yield reader.counters.as_dict()


_CITATION = re.compile(r"\s*\([^()]*§[^()]*\)")
_RAW_SHOWN = 64  # bytes of a frame error shown on a line; the count says if there were more


def raw_bytes_text(raw: bytes) -> str:
    """Bytes as hex and as printable text with escapes, e.g. ``02 41 0d "\\x02A\\r"``."""
    shown = raw[:_RAW_SHOWN]
    text = "".join(
        chr(b) if 0x20 <= b < 0x7F and b not in (0x22, 0x5C) else _ESCAPES.get(b, f"\\x{b:02x}")
        for b in shown
    )
    more = f" (+{len(raw) - len(shown)} more bytes)" if len(raw) > len(shown) else ""
    return f'{shown.hex(" ")} "{text}"{more}'


_ESCAPES = {0x0D: "\\r", 0x0A: "\\n", 0x09: "\\t", 0x22: '\\"', 0x5C: "\\\\"}


def hint_lines(hint: DialectHint) -> list[str]:
    """What ``listen`` prints when the chosen dialect decodes nothing."""
    head = f"[{hint.port}] {hint.chosen} decodes none of these bytes: {raw_bytes_text(hint.raw)}"
    if not hint.candidates:
        return [
            head,
            f"[{hint.port}] no dialect decodes them either: check the baud rate and line "
            f"format (`custody-agent devices detect --port {hint.port}` tries them all)",
        ]
    names = ", ".join(f"{c.dialect} ({c.confidence:.0%})" for c in hint.candidates[:3])
    return [
        head,
        f"[{hint.port}] the bytes look like: {names}; try "
        f"`--port {hint.candidates[0].dialect}@{hint.port}`, or `custody-agent devices detect "
        f"--port {hint.port}`",
    ]


def event_line(event: PortEvent) -> str:
    """One event as a line for a person: a frame's fields, a frame error's reason and raw bytes."""
    if isinstance(event, StateChanged):
        return f"[{event.port}] port {event.state}"
    if isinstance(event, FrameSkipped):
        reason = _CITATION.sub("", event.error.reason)
        return f"[{event.port}] frame error: {reason}: {raw_bytes_text(event.error.raw)}"
    body = frame_json(event.frame)
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
        item["text"] = raw_bytes_text(event.error.raw)
    return json.dumps({"port": event.port, "kind": kind, "at": event.at, "item": item})


def hint_json(hint: DialectHint) -> str:
    """The dialect guess as a JSON line of ``kind`` ``hint``."""
    item = {
        "chosen": hint.chosen,
        "raw": hint.raw.hex(),
        "candidates": [c.as_dict() for c in hint.candidates],
    }
    return json.dumps({"port": hint.port, "kind": "hint", "item": item})


def decode_images(paths: list[Path]) -> Iterator[dict[str, Any]]:
    """One result per image, never a raise for one image's trouble.

    ``status`` is ``codes`` (``codes`` lists them), ``no code`` or ``unreadable``
    (``error`` says why). A code whose text is not a valid seal (control characters,
    malformed GS1) keeps its text and gets ``seal_kind`` null with ``seal_error``.
    """
    from firmware_bridge import camera  # opencv is heavy: import only when asked
    from firmware_bridge.errors import ProtocolError
    from firmware_bridge.protocols.codes import classify_code

    for result in camera.decode_files(paths):
        if not result.ok:
            yield {"path": result.path, "status": "unreadable", "codes": [], "error": result.error}
            continue
        codes = []
        for d in result.codes:
            code = frame_json(d)
            try:
                code["seal_kind"] = classify_code(d.text, d.symbology).kind
            except ProtocolError as exc:
                code["seal_kind"] = None
                code["seal_error"] = str(exc)
            codes.append(code)
        yield {"path": result.path, "status": "codes" if codes else "no code", "codes": codes}


# --- devices detect ---------------------------------------------------------------------
# Baud rates indicators and readers ship with or offer (the XK3190 family 1200-9600, A&D
# 2400, RFID readers up to 115200); line formats are the dialects' own (8N1, 7E1).
DETECT_BAUDS = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


@dataclasses.dataclass(frozen=True, slots=True)
class Capture:
    """What one capture heard: its line settings, the request sent (if any), the bytes."""

    baud: str  # "9600", or "any (pseudo-terminal)" where the port ignores baud rates
    line_format: str  # "8N1", "7E1", or "any" where ignored
    request: str  # "" (listened only), or the request sent: "MT-SICS SI", "SMA W"
    data: bytes


def _requests() -> tuple[tuple[str, bytes], ...]:
    from firmware_bridge.protocols.scales import mt_sics_request, sma_request

    # A request/response scale says nothing until asked: ask for a weight, read-only commands.
    return (("MT-SICS SI", mt_sics_request("SI")), ("SMA W", sma_request("W")))


def _line_settings(url: str) -> list[tuple[str, str, SerialDefaults]]:
    from firmware_bridge.transport import is_pseudo_terminal

    # rfc2217:// sets the remote port's line settings, so it is tried like a local port.
    ignored = (
        "pseudo-terminal"
        if is_pseudo_terminal(url)
        else "network socket"
        if url.startswith("socket://")
        else "loopback"
        if url.startswith("loop://")
        else None
    )
    if ignored:
        return [(f"any ({ignored})", "any", SerialDefaults())]
    formats = sorted({(s.bytesize, s.parity, s.stopbits) for s in _serials()})
    return [
        (str(baud), f"{b}{p}{st}", SerialDefaults(baud, b, p, st))
        for b, p, st in formats
        for baud in DETECT_BAUDS
    ]


def _serials() -> list[SerialDefaults]:
    return [d.serial for d in registry.all_dialects().values()]


def detect_captures(
    url: str, seconds: float, *, on_capture: Callable[[Capture], None] = lambda c: None
) -> list[Capture]:
    """Listen on ``url`` at every line setting; where silent, ask as each polled dialect would."""
    from firmware_bridge.transport import capture

    out: list[Capture] = []
    for baud, fmt, settings in _line_settings(url):
        c = Capture(baud, fmt, "", capture(url, settings, seconds))
        if not c.data:
            for label, request in _requests():
                c = Capture(baud, fmt, label, capture(url, settings, seconds, request=request))
                if c.data:
                    break
        on_capture(c)
        out.append(c)
    return out


@dataclasses.dataclass(frozen=True, slots=True)
class Detection:
    """One dialect's score on one capture."""

    capture: Capture
    score: DialectScore

    def as_dict(self) -> dict[str, Any]:
        c = self.capture
        return {
            "baud": c.baud, "format": c.line_format, "request": c.request, **self.score.as_dict(),
        }  # fmt: skip


def rank(captures: list[Capture]) -> list[Detection]:
    """Every dialect that decoded at least one frame on some capture, best first."""
    found = [
        Detection(c, s) for c in captures if c.data for s in score_dialects(c.data) if s.frames
    ]
    return sorted(found, key=lambda d: _rank_key(d.score))


def config_lines(url: str, best: Detection) -> list[tuple[str, str]]:
    """(what for, ``config set`` command) pairs that make the service read this device."""
    d, kind = best.score.dialect, best.score.kind
    if kind == "scale":
        return [
            ("the weighbridge indicator",
             f"custody-agent config set weighbridge.port {d}@{url}"),
            ("or a bag scale at a bagging station",
             f"custody-agent config set scan.scale_port {d}@{url}"),
        ]  # fmt: skip
    if kind == "rfid":
        return [("the weighbridge's vehicle tag reader",
                 f"custody-agent config set weighbridge.rfid {d}@{url}")]  # fmt: skip
    if kind == "scanner":
        return [
            ("the weighbridge's code scanner",
             f"custody-agent config set weighbridge.scanner {d}@{url}"),
            ("or a scanner at a bagging station",
             f"custody-agent config set scan.scanner_port {d}@{url}"),
        ]  # fmt: skip
    return [("a device the service reads", f"custody-agent config set devices.ports {d}@{url}")]


def baud_note(best: Detection) -> str | None:
    """When the device's line settings differ from those the gateway opens the dialect with."""
    c = best.capture
    s = registry.dialect(best.score.dialect).serial
    default = f"{s.bytesize}{s.parity}{s.stopbits}"
    if c.line_format == "any" or (c.baud == str(s.baudrate) and c.line_format == default):
        return None
    return (
        f"the device sends at {c.baud} {c.line_format}; the gateway opens {best.score.dialect} "
        f"at {s.baudrate} {default}: set the device to {s.baudrate} {default} "
        f"(`devices listen --baud {c.baud}` reads it as it is)"
    )
