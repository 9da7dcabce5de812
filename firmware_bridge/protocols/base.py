"""What every sans-I/O device parser has in common (STYLE.md §1, §2).

A parser is fed bytes as they arrive (``feed``) and returns what it could
complete: typed frames and ``FrameError`` items for garbage it skipped. It
never does I/O, never reads a clock (``now`` is passed in), never raises for
bad device bytes (a serial line is not a connection to abort: it resyncs to
the next start marker, counts what it dropped and reports it), and never
buffers more than ``max_buffer`` bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import ClassVar, Protocol

__all__ = [
    "DEFAULT_MAX_LINE",
    "DeviceKind",
    "Dialect",
    "FrameError",
    "LineParser",
    "Parser",
    "ParserStats",
    "SerialDefaults",
]

# Longest line any supported dialect sends is well under 100 bytes (MT-SICS
# replies, NMEA's 82-character limit per NMEA 0183 §5.3); 512 leaves room for
# the regex dialect while bounding memory on a line that never ends.
DEFAULT_MAX_LINE = 512


@dataclass(frozen=True, slots=True)
class FrameError:
    """Bytes skipped as garbage, with the reason (reported, counted, never raised)."""

    reason: str
    raw: bytes


@dataclass
class ParserStats:
    frames: int = 0
    errors: int = 0
    dropped_bytes: int = 0
    checksum_errors: int = 0
    overflows: int = 0


class Parser(Protocol):
    """The interface every dialect implements."""

    dialect: ClassVar[str]
    stats: ParserStats

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        """Consume bytes; return completed frames and ``FrameError`` items, in order."""
        ...

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame: never more than the dialect's documented bound."""
        ...


@dataclass
class LineParser:
    """Base for line-oriented dialects: split on CR/LF, bound the line, parse each.

    Subclasses implement ``parse_line(line, now)`` returning a frame, ``None``
    (an empty or ignorable line), or raising ``ValueError`` with a reason
    (reported as a ``FrameError``, the line is dropped and counted).
    """

    dialect: ClassVar[str] = "line"
    max_line: int = DEFAULT_MAX_LINE
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray)
    _overflowing: bool = False

    def parse_line(self, line: bytes, now: float | None) -> object | None:  # pragma: no cover
        raise NotImplementedError

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete line (at most ``max_line``)."""
        return len(self._buf)

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        out: list[object] = []
        for chunk in _split_keep(data):
            if chunk in (b"\r", b"\n"):
                self._end_line(out, now)
                continue
            room = self.max_line - len(self._buf)
            if len(chunk) > room or self._overflowing:
                # No terminator within max_line: drop the partial line and
                # everything up to the next terminator (resync), count it.
                if not self._overflowing:
                    self.stats.overflows += 1
                    head = (bytes(self._buf) + chunk)[: self.max_line]
                    out.append(FrameError("line longer than the buffer limit", head))
                    self.stats.errors += 1
                self.stats.dropped_bytes += len(self._buf) + len(chunk)
                self._buf.clear()
                self._overflowing = True
                continue
            self._buf += chunk
        return out

    def _end_line(self, out: list[object], now: float | None) -> None:
        if self._overflowing:
            self._overflowing = False
            return
        line = bytes(self._buf)
        self._buf.clear()
        if not line:
            return
        try:
            frame = self.parse_line(line, now)
        except ValueError as exc:
            self.stats.errors += 1
            self.stats.dropped_bytes += len(line)
            if "checksum" in str(exc):
                self.stats.checksum_errors += 1
            out.append(FrameError(str(exc), line))
            return
        if frame is not None:
            self.stats.frames += 1
            out.append(frame)


_TERMINATOR = re.compile(rb"([\r\n])")


def _split_keep(data: bytes) -> list[bytes]:
    """Split into runs of non-terminator bytes and single CR/LF bytes (C-speed split)."""
    return [part for part in _TERMINATOR.split(data) if part]


ParserFactory = Callable[..., Parser]


@dataclass(frozen=True, slots=True)
class SerialDefaults:
    """Line settings a device family ships with (the transport's defaults for it)."""

    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"  # pyserial: N, E, O
    stopbits: int = 1


class DeviceKind(StrEnum):
    """What a dialect's device is for."""

    SCALE = "scale"
    RFID = "rfid"
    SCANNER = "scanner"
    GPS = "gps"


@dataclass(frozen=True, slots=True)
class Dialect:
    """A named dialect: how to build its parser and what it is for."""

    name: str
    kind: DeviceKind
    description: str
    factory: ParserFactory
    serial: SerialDefaults = SerialDefaults()
    manual: str = ""  # the manual/standard the parser follows (cited in docs)
