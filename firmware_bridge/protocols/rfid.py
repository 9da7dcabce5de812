"""RFID reader dialects: RDM6300 (EM4100), Wiegand-26 as text, UHF R2000 and Chafon.

Theory of operation (STYLE.md §1, §2): every parser is sans-I/O. ``feed``
takes whatever bytes the port delivered and returns the frames it completed
plus ``FrameError`` items for bytes it had to skip; it never raises for device
bytes. Binary dialects scan for their start marker (STX for RDM6300, 0xA0 for
R2000; Chafon has none, see ``ChafonParser``), wait for a whole frame, verify
its check and either emit it or drop *only the start byte* and rescan, so a
corrupted length byte can delay but never swallow the good frames behind it.
Bytes between frames are collected into one "junk" report per run (at most
``JUNK_REPORT_BYTES`` each), which keeps the output independent of how the
stream was chunked. Buffers are bounded by each dialect's longest frame.

References (device-protocols.md §3): RDM6300 datasheet frame (§3.1), HID H10301
26-bit format (§3.2), "UHF RFID Reader Serial Interface Protocol V3.7" for the
Impinj R2000 "A0" family and the UHFReader18 / CF-RU5102 manual for Chafon (§3.3).
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass, field
from typing import ClassVar

from firmware_bridge.errors import PortConfigError
from firmware_bridge.frames import CommandReply, TagRead
from firmware_bridge.protocols.base import (
    DeviceKind,
    Dialect,
    FrameError,
    LineParser,
    ParserStats,
    SerialDefaults,
)
from firmware_bridge.protocols.epc import epc_uri

__all__ = [
    "DIALECTS",
    "JUNK_REPORT_BYTES",
    "WIEGAND_FORMATS",
    "ChafonParser",
    "R2000Parser",
    "Rdm6300Parser",
    "Wiegand26TextParser",
    "chafon_crc16",
    "chafon_frame",
    "chafon_inventory",
    "r2000_checksum",
    "r2000_frame",
    "r2000_realtime_inventory",
    "rdm6300_frame",
    "wiegand26_bits",
]

# Unframed bytes are reported as one FrameError per run, and at least every
# 256 bytes so a port spewing noise (wrong baud rate) is visible promptly; the
# report carries the first 32 bytes as a sample, enough to recognise a baud or
# dialect mismatch by eye.
JUNK_REPORT_BYTES = 256
_JUNK_SAMPLE = 32


@dataclass
class _Junk:
    """Bytes outside any frame: counted at once, reported per run (chunking-independent)."""

    count: int = 0
    sample: bytearray = field(default_factory=bytearray)

    def add(self, data: bytes, stats: ParserStats, out: list[object]) -> None:
        pos = 0
        while pos < len(data):
            take = min(len(data) - pos, JUNK_REPORT_BYTES - self.count)
            piece = data[pos : pos + take]
            room = _JUNK_SAMPLE - len(self.sample)
            if room > 0:
                self.sample += piece[:room]
            self.count += take
            stats.dropped_bytes += take
            pos += take
            if self.count >= JUNK_REPORT_BYTES:
                self.flush(stats, out)

    def flush(self, stats: ParserStats, out: list[object]) -> None:
        if self.count:
            out.append(FrameError(f"{self.count} bytes outside any frame", bytes(self.sample)))
            stats.errors += 1
            self.count = 0
            self.sample.clear()


def _reject(
    stats: ParserStats, out: list[object], reason: str, raw: bytes, *, checksum: bool = False
) -> None:
    stats.errors += 1
    stats.dropped_bytes += len(raw)
    if checksum:
        stats.checksum_errors += 1
    out.append(FrameError(reason, raw))


# --------------------------------------------------------------------------
# RDM6300 / RDM630 and ID-Innovations ID-12/ID-20 (125 kHz EM4100, ASCII hex)
# --------------------------------------------------------------------------

_STX, _ETX, _CR, _LF = 0x02, 0x03, 0x0D, 0x0A
_HEX = frozenset(b"0123456789ABCDEFabcdef")
# RDM6300 datasheet: STX + 10 hex data + 2 hex checksum + ETX = 14 bytes;
# ID-12/ID-20 insert CR LF before ETX (16 bytes). Nothing longer is buffered.
RDM6300_MAX_FRAME = 16


def rdm6300_frame(tag_id: str) -> bytes:
    """Encode a reader frame for a 10-hex-digit EM4100 id (for simulators and tests)."""
    data = bytes.fromhex(tag_id)
    if len(data) != 5:
        raise ValueError("EM4100 id is 10 hex digits (version byte + 32-bit id)")
    check = 0
    for b in data:
        check ^= b  # §3.1: checksum = XOR of the 5 data bytes
    return bytes([_STX]) + f"{tag_id.upper()}{check:02X}".encode() + bytes([_ETX])


@dataclass
class Rdm6300Parser:
    """RDM6300 (and ID-12/ID-20) frames -> ``TagRead(kind="em4100")``.

    The reader repeats a frame about every 50 ms while a fob is in the field
    (§3.1); de-duplicating reads is the workflow's job, not the parser's.
    """

    dialect: ClassVar[str] = "rdm6300"
    stats: ParserStats = field(default_factory=ParserStats)
    _frame: bytearray = field(default_factory=bytearray)
    _junk: _Junk = field(default_factory=_Junk)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (at most ``RDM6300_MAX_FRAME``)."""
        return len(self._frame)

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        out: list[object] = []
        for b in data:
            self._step(b, out)
        return out

    def _step(self, b: int, out: list[object]) -> None:
        frame = self._frame
        if not frame:
            if b == _STX:
                self._junk.flush(self.stats, out)
                frame.append(b)
            else:
                self._junk.add(bytes([b]), self.stats, out)
                if b == _ETX:  # an ETX closes whatever that run was: report it now
                    self._junk.flush(self.stats, out)
            return
        if b == _STX:
            # A new start marker inside a frame: the partial frame is lost.
            _reject(self.stats, out, "frame restarted before its ETX", bytes(frame))
            frame[:] = bytes([_STX])
            return
        if len(frame) < 13:  # STX + 12 hex digits
            if b in _HEX:
                frame.append(b)
            else:
                _reject(self.stats, out, "non-hex byte inside the frame", bytes(frame) + bytes([b]))
                frame.clear()
            return
        if b == _ETX:
            self._complete(bytes(frame) + bytes([b]), out)
            frame.clear()
        elif (len(frame) == 13 and b == _CR) or (len(frame) == 14 and b == _LF):
            frame.append(b)  # ID-12/ID-20: CR LF before ETX
        else:
            _reject(
                self.stats,
                out,
                "frame too long (no ETX after 12 digits)",
                bytes(frame) + bytes([b]),
            )
            frame.clear()

    def _complete(self, raw: bytes, out: list[object]) -> None:
        digits = raw[1:13].decode("ascii").upper()
        data = bytes.fromhex(digits[:10])
        check = 0
        for byte in data:
            check ^= byte
        if check != int(digits[10:12], 16):
            _reject(
                self.stats,
                out,
                f"checksum mismatch: XOR of data is {check:02X}, frame says {digits[10:12]}",
                raw,
                checksum=True,
            )
            return
        self.stats.frames += 1
        out.append(TagRead(kind="em4100", tag_id=digits[:10], dialect=self.dialect, raw=raw))


# --------------------------------------------------------------------------
# Wiegand-26 (HID H10301) printed as text by Wiegand-to-serial converters
# --------------------------------------------------------------------------

WIEGAND_FORMATS = ("auto", "bits", "fc-cn", "decimal", "hex")
_BITS_RE = re.compile(r"[01]{26}")
_FC_CN_RE = re.compile(r"(\d{1,3})\s*[,:/ ]\s*(\d{1,5})")
_DECIMAL_RE = re.compile(r"\d{1,10}")
_HEX_RE = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{6,7})")


def wiegand26_bits(facility: int, card: int) -> str:
    """The 26-bit H10301 string for a facility code and card number (§3.2)."""
    if not 0 <= facility <= 0xFF or not 0 <= card <= 0xFFFF:
        raise ValueError("facility is 0..255 and card 0..65535")
    data = f"{facility:08b}{card:016b}"
    even = data[:12].count("1") % 2  # bit 0 makes bits 0..12 even
    odd = 1 - data[12:].count("1") % 2  # bit 25 makes bits 13..25 odd
    return f"{even}{data}{odd}"


def _check_parity(bits: str) -> None:
    # H10301 (§3.2): bit 0 = even parity over bits 1-12, bit 25 = odd parity over 13-24.
    if bits[:13].count("1") % 2 != 0:
        raise ValueError("Wiegand-26 leading even parity (checksum) failed")
    if bits[13:].count("1") % 2 != 1:
        raise ValueError("Wiegand-26 trailing odd parity (checksum) failed")


@dataclass
class Wiegand26TextParser(LineParser):
    """One Wiegand-26 read per line -> ``TagRead(kind="wiegand26", tag_id="FFF:CCCCC")``.

    "Wiegand as text" is not standardised (§3.2), so ``format`` selects it:
    ``bits`` (26 "0"/"1", both parity bits checked), ``fc-cn`` ("100,60179"),
    ``decimal`` (the 24 data bits as a number, e.g. "6613779"), ``hex`` (6
    digits = 24 data bits, or 7 digits = all 26 bits with parity checked), or
    ``auto``: 26 binary digits are bits, two numbers are FC/CN, all digits are
    decimal, anything else hex. Only the bit forms carry parity to check.
    """

    dialect: ClassVar[str] = "wiegand26-text"
    format: str = "auto"
    # Longest accepted form is 26 bits plus separators/prefixes; 64 bounds a
    # line that never ends without rejecting any converter's output.
    max_line: int = 64

    def __post_init__(self) -> None:
        if self.format not in WIEGAND_FORMATS:
            raise PortConfigError(
                f"wiegand26-text format must be one of {', '.join(WIEGAND_FORMATS)}, "
                f"got {self.format!r}"
            )

    def parse_line(self, line: bytes, now: float | None) -> object | None:
        try:
            text = line.decode("ascii").strip()
        except UnicodeDecodeError:
            raise ValueError("non-ASCII bytes in a Wiegand text line") from None
        if not text:
            return None
        facility, card = self._decode(text)
        return TagRead(
            kind="wiegand26",
            tag_id=f"{facility:03d}:{card:05d}",
            dialect=self.dialect,
            raw=line,
        )

    def _decode(self, text: str) -> tuple[int, int]:
        fmt = self.format
        if fmt == "auto":
            if _BITS_RE.fullmatch(text):
                fmt = "bits"
            elif _FC_CN_RE.fullmatch(text):
                fmt = "fc-cn"
            elif _DECIMAL_RE.fullmatch(text):
                fmt = "decimal"
            else:
                fmt = "hex"
        if fmt == "bits":
            if not _BITS_RE.fullmatch(text):
                raise ValueError(f"expected 26 binary digits, got {text!r}")
            _check_parity(text)
            return int(text[1:9], 2), int(text[9:25], 2)
        if fmt == "fc-cn":
            m = _FC_CN_RE.fullmatch(text)
            if m is None:
                raise ValueError(f"expected 'FC,CN', got {text!r}")
            facility, card = int(m[1]), int(m[2])
            if facility > 0xFF or card > 0xFFFF:
                raise ValueError(f"facility {facility} or card {card} out of range")
            return facility, card
        if fmt == "decimal":
            if not _DECIMAL_RE.fullmatch(text) or int(text) > 0xFFFFFF:
                raise ValueError(f"expected a 24-bit decimal number, got {text!r}")
            value = int(text)
            return value >> 16, value & 0xFFFF
        m = _HEX_RE.fullmatch(text)
        if m is None:
            raise ValueError(f"unrecognised Wiegand text {text!r}")
        value = int(m[1], 16)
        if len(m[1]) == 7:
            if value >> 26:
                raise ValueError(f"more than 26 bits in {text!r}")
            bits = f"{value:026b}"
            _check_parity(bits)
            return int(bits[1:9], 2), int(bits[9:25], 2)
        return value >> 16, value & 0xFFFF


# --------------------------------------------------------------------------
# Impinj R2000 "A0" serial protocol (YR902/YR903 and many OEM readers)
# --------------------------------------------------------------------------

_A0 = 0xA0
# Frame: A0 | Len | Addr | Cmd | Data | Check, Len = bytes after Len (one byte),
# so no frame exceeds 2 + 255 bytes; that is the buffer bound.
R2000_MAX_FRAME = 2 + 255
_R2000_INVENTORY_CMDS = frozenset({0x89, 0x8A, 0x8B})  # real-time, fast-switch, session


def r2000_checksum(data: bytes) -> int:
    """Two's complement of the byte sum over A0 … last data byte (§3.3 (c))."""
    return (-sum(data)) & 0xFF


def r2000_frame(address: int, command: int, data: bytes = b"") -> bytes:
    """A host->reader command frame."""
    if not 0 <= address <= 0xFF or not 0 <= command <= 0xFF:
        raise ValueError("address and command are bytes")
    if len(data) > 252:
        raise ValueError("R2000 data is at most 252 bytes (Len is one byte)")
    body = bytes([_A0, len(data) + 3, address, command]) + data
    return body + bytes([r2000_checksum(body)])


def r2000_realtime_inventory(address: int = 0x01, repeat: int = 0x01) -> bytes:
    """cmd 0x89 real-time inventory; ``A0 04 01 89 01 D1`` for the defaults (§3.3 (c)).

    The reader runs ``repeat`` inventory rounds, streams one reply per tag
    seen and ends with a summary reply; the host re-sends to keep reading.
    """
    if not 0 <= repeat <= 0xFF:
        raise ValueError("repeat is a byte")
    return r2000_frame(address, 0x89, bytes([repeat]))


@dataclass
class R2000Parser:
    """R2000 replies -> ``TagRead(kind="epc")`` per tag, ``CommandReply`` otherwise.

    Tag reply to 0x89/0x8A/0x8B: ``FreqAnt(1) PC(2) EPC(n) RSSI(1)``: antenna
    = low 2 bits of FreqAnt + 1, RSSI in dBm = byte - 129, EPC length from the
    PC word's bits 15-11 (Gen2 words), as decoded by the V3.7 reference driver
    (hex-in/pyImpinj). Len 0x04 = error reply (``status="error"``, value the
    error code in hex); Len 0x0A = end-of-round summary (``status="done"``),
    which tells the host to send the next inventory command. Any other valid
    reply becomes ``CommandReply(command="<cmd hex>", status="", values=(data hex,))``.
    """

    dialect: ClassVar[str] = "uhf-r2000"
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray)
    _junk: _Junk = field(default_factory=_Junk)

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (bounded by the dialect's longest frame)."""
        return len(self._buf)

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        out: list[object] = []
        buf = self._buf
        buf += data
        i = 0
        while i < len(buf):
            start = buf.find(_A0, i)
            if start < 0:
                self._junk.add(bytes(buf[i:]), self.stats, out)
                i = len(buf)
                break
            if start > i:
                self._junk.add(bytes(buf[i:start]), self.stats, out)
                i = start
            if len(buf) - i < 2:
                break  # need the Len byte
            length = buf[i + 1]
            if length < 3:  # Addr + Cmd + Check at least: this A0 is not a frame start
                self._junk.add(bytes(buf[i : i + 1]), self.stats, out)
                i += 1
                continue
            end = i + 2 + length
            if end > len(buf):
                break  # wait for the rest (at most R2000_MAX_FRAME bytes buffered)
            frame = bytes(buf[i:end])
            self._junk.flush(self.stats, out)
            if r2000_checksum(frame[:-1]) != frame[-1]:
                # Drop only the A0 and rescan: a corrupted Len must not eat good frames.
                self.stats.errors += 1
                self.stats.checksum_errors += 1
                self.stats.dropped_bytes += 1
                out.append(
                    FrameError(
                        f"checksum mismatch: expected {r2000_checksum(frame[:-1]):02X}, "
                        f"got {frame[-1]:02X}",
                        frame,
                    )
                )
                i += 1
                continue
            self._handle(frame, out)
            i = end
        del buf[:i]
        return out

    def _handle(self, frame: bytes, out: list[object]) -> None:
        length, command, payload = frame[1], frame[3], frame[4:-1]
        cmd = f"{command:02X}"
        if command not in _R2000_INVENTORY_CMDS:
            self._reply(out, CommandReply(cmd, "", (payload.hex().upper(),), self.dialect, frame))
            return
        if length == 0x04:
            self._reply(
                out, CommandReply(cmd, "error", (f"{payload[0]:02X}",), self.dialect, frame)
            )
            return
        if length == 0x0A:
            values: tuple[str, ...]
            if command == 0x8A:  # TotalRead(3) CommandDuration(4)
                values = (
                    f"total_read={int.from_bytes(payload[0:3], 'big')}",
                    f"duration_ms={int.from_bytes(payload[3:7], 'big')}",
                )
            else:  # AntID(1) ReadRate(2) TotalRead(4)
                values = (
                    f"antenna={payload[0] + 1}",
                    f"read_rate={int.from_bytes(payload[1:3], 'big')}",
                    f"total_read={int.from_bytes(payload[3:7], 'big')}",
                )
            self._reply(out, CommandReply(cmd, "done", values, self.dialect, frame))
            return
        if len(payload) < 4:
            _reject(
                self.stats, out, f"inventory reply too short ({len(payload)} data bytes)", frame
            )
            return
        pc = int.from_bytes(payload[1:3], "big")
        epc = payload[3:-1]
        words = pc >> 11  # Gen2 PC bits 15-11: EPC length in 16-bit words (§3.4)
        if words * 2 != len(epc) or not epc:
            _reject(
                self.stats,
                out,
                f"PC word 0x{pc:04X} announces {words * 2} EPC bytes, frame carries {len(epc)}",
                frame,
            )
            return
        self.stats.frames += 1
        out.append(
            TagRead(
                kind="epc",
                tag_id=epc.hex().upper(),
                uri=epc_uri(epc),
                rssi=payload[-1] - 129,
                antenna=(payload[0] & 0x03) + 1,
                dialect=self.dialect,
                raw=frame,
            )
        )

    def _reply(self, out: list[object], reply: CommandReply) -> None:
        self.stats.frames += 1
        out.append(reply)


# --------------------------------------------------------------------------
# Chafon "UHFReader18" / CF-RU5102 / IQRFID-5102 family
# --------------------------------------------------------------------------

# Reply: Len | Adr | reCmd | Status | Data | CRC-16 LSB | MSB; Len counts the
# bytes after itself (one byte), so a frame is at most 256 bytes.
CHAFON_MAX_FRAME = 1 + 255
_CHAFON_MIN_REPLY_LEN = 5  # Adr + reCmd + Status + CRC(2)


# CRC-16/MCRF4XX is the CCITT CRC (poly 0x1021) with reflected input and output, so it is
# binascii.crc_hqx (C, unreflected) over bit-reversed bytes, its result bit-reversed. Speed
# matters: hunting for sync computes a CRC over up to 254 bytes at every byte of noise, and a
# bitwise Python loop took over a second of CPU per second of noise at 57600 baud.
_BIT_REVERSED = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


def chafon_crc16(data: bytes) -> int:
    """CRC-16/MCRF4XX: preset 0xFFFF, reflected poly 0x8408, no final XOR (§3.3 (b))."""
    crc = binascii.crc_hqx(bytes(data).translate(_BIT_REVERSED), 0xFFFF)
    return _BIT_REVERSED[crc & 0xFF] << 8 | _BIT_REVERSED[crc >> 8]


def chafon_frame(address: int, command: int, data: bytes = b"") -> bytes:
    """A host->reader command: ``Len Adr Cmd Data CRC-LSB CRC-MSB``."""
    if not 0 <= address <= 0xFF or not 0 <= command <= 0xFF:
        raise ValueError("address and command are bytes")
    if len(data) > 251:
        raise ValueError("Chafon data is at most 251 bytes (Len is one byte)")
    body = bytes([len(data) + 4, address, command]) + data
    return body + chafon_crc16(body).to_bytes(2, "little")


def chafon_inventory(address: int = 0x00) -> bytes:
    """EPC Gen2 inventory, cmd 0x01: ``04 00 01 DB 4B`` for address 0 (§3.3 (b))."""
    return chafon_frame(address, 0x01)


@dataclass
class ChafonParser:
    """Chafon replies -> one ``TagRead(kind="epc")`` per EPC, ``CommandReply`` otherwise.

    The protocol has no start marker, so sync is found by the CRC: a
    candidate frame starts at the first buffered byte; when its CRC fails the
    first byte is dropped and the next byte tried. A CRC failure counts as a
    checksum error only while the parser was in sync (at stream start or right
    after a good frame); failures while hunting for sync are ordinary junk.
    Inventory reply (cmd 0x01) data: ``Num`` then ``Num`` x (``EPClen`` EPC);
    other replies become ``CommandReply(command, status=<status hex>, values=(data hex,))``.
    """

    dialect: ClassVar[str] = "uhf-chafon"
    stats: ParserStats = field(default_factory=ParserStats)
    _buf: bytearray = field(default_factory=bytearray)
    _junk: _Junk = field(default_factory=_Junk)
    _in_sync: bool = True

    @property
    def buffered(self) -> int:
        """Bytes held for an incomplete frame (bounded by the dialect's longest frame)."""
        return len(self._buf)

    def feed(self, data: bytes, now: float | None = None) -> list[object]:
        out: list[object] = []
        buf = self._buf
        buf += data
        i = 0
        while i < len(buf):
            length = buf[i]
            if length < _CHAFON_MIN_REPLY_LEN:
                self._junk.add(bytes(buf[i : i + 1]), self.stats, out)
                self._in_sync = False
                i += 1
                continue
            end = i + 1 + length
            if end > len(buf):
                break
            frame = bytes(buf[i:end])
            if chafon_crc16(frame[:-2]) != int.from_bytes(frame[-2:], "little"):
                if self._in_sync:
                    self._junk.flush(self.stats, out)
                    self.stats.errors += 1
                    self.stats.checksum_errors += 1
                    self.stats.dropped_bytes += 1
                    out.append(FrameError("CRC-16 mismatch", frame))
                    self._in_sync = False
                else:
                    self._junk.add(frame[:1], self.stats, out)
                i += 1
                continue
            self._junk.flush(self.stats, out)
            self._in_sync = True
            self._handle(frame, out)
            i = end
        del buf[:i]
        return out

    def _handle(self, frame: bytes, out: list[object]) -> None:
        command, status, payload = frame[2], frame[3], frame[4:-2]
        cmd = f"{command:02X}"
        # Inventory status 0x01 done, 0x02 timeout, 0x03 more frames follow,
        # 0x04 buffer full: all carry tags; 0xFB "no tag" carries none.
        if command == 0x01 and status in (0x01, 0x02, 0x03, 0x04):
            tags = self._inventory_tags(payload)
            if tags is None:
                _reject(
                    self.stats, out, "inventory reply: EPC list does not match its length", frame
                )
                return
            for epc in tags:
                self.stats.frames += 1
                out.append(
                    TagRead(
                        kind="epc",
                        tag_id=epc.hex().upper(),
                        uri=epc_uri(epc),
                        dialect=self.dialect,
                        raw=frame,
                    )
                )
            return
        self.stats.frames += 1
        out.append(
            CommandReply(cmd, f"{status:02X}", (payload.hex().upper(),), self.dialect, frame)
        )

    @staticmethod
    def _inventory_tags(payload: bytes) -> list[bytes] | None:
        if not payload:
            return None
        count, pos, tags = payload[0], 1, []
        for _ in range(count):
            if pos >= len(payload):
                return None
            n = payload[pos]
            epc = payload[pos + 1 : pos + 1 + n]
            if n == 0 or len(epc) != n:
                return None
            tags.append(epc)
            pos += 1 + n
        return tags if pos == len(payload) else None


DIALECTS: list[Dialect] = [
    Dialect(
        name="rdm6300",
        kind=DeviceKind.RFID,
        description="125 kHz EM4100 reader, ASCII hex frames (RDM6300/RDM630, ID-12/ID-20)",
        factory=Rdm6300Parser,
        serial=SerialDefaults(baudrate=9600),
        manual="RDM6300 datasheet: STX, 10 hex, 2 hex XOR checksum, ETX (device-protocols.md §3.1)",
    ),
    Dialect(
        name="wiegand26-text",
        kind=DeviceKind.RFID,
        description="Wiegand-26 (HID H10301) printed as text by a converter; option format=",
        factory=Wiegand26TextParser,
        serial=SerialDefaults(baudrate=9600),
        manual="HID H10301 26-bit format, RF IDeas card-format notes (device-protocols.md §3.2)",
    ),
    Dialect(
        name="uhf-r2000",
        kind=DeviceKind.RFID,
        description="Impinj R2000 'A0' serial protocol UHF reader, real-time inventory",
        factory=R2000Parser,
        serial=SerialDefaults(baudrate=115200),
        manual="UHF RFID Reader Serial Interface Protocol V3.7 (device-protocols.md §3.3 (c))",
    ),
    Dialect(
        name="uhf-chafon",
        kind=DeviceKind.RFID,
        description="Chafon UHFReader18 / CF-RU5102 family UHF reader, CRC-16/MCRF4XX frames",
        factory=ChafonParser,
        serial=SerialDefaults(baudrate=57600),
        manual="UHFReader18 user manual, command set and CRC (device-protocols.md §3.3 (b))",
    ),
]
