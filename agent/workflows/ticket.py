"""The driver's ticket for a completed weighbridge visit: plain text and ESC/POS.

DOMAIN.md "Weighbridges": disputes are settled against tickets and the
indicator's alibi memory, so the ticket carries what the signed events carry
(vehicle, both passes with their times, gross/tare/net, seals, indicator and
alibi id) and a QR code of the completing event's id, which anyone can later
look up in the ledger.

ESC/POS commands, by their names in the Epson "ESC/POS Command Reference"
(TM printers): ``ESC @`` initialize printer; ``ESC t n`` select character
code table (n = 16, WPC1252, so French names print); ``ESC a n`` select
justification; ``ESC E n`` turn emphasized mode on/off; ``LF`` print and line
feed; ``GS ( k`` QR Code functions 165 (select the model: model 2), 167 (set
the size of the module), 169 (select the error correction level), 180 (store
the data in the symbol storage area) and 181 (print the symbol data in the
symbol storage area); ``GS V m n`` select cut mode and cut paper (function B,
m = 65: feed n and full cut).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from custody.mass import format_kg
from firmware_bridge.errors import DisconnectedError
from firmware_bridge.protocols.base import SerialDefaults

__all__ = ["SerialTicketPrinter", "Ticket", "escpos", "fields", "qr_commands", "text"]

ESC, GS, LF = b"\x1b", b"\x1d", b"\n"
WIDTH = 42  # characters per line of 80 mm paper in font A (Epson TM-T20/T88: 42 or 48)
CODE_PAGE_WPC1252 = 16  # ESC t n, n = 16
QR_MODULE_SIZE = 6  # GS ( k fn 167: 1-16 dots per module
QR_ERROR_M = 49  # GS ( k fn 169: 48 L, 49 M, 50 Q, 51 H
# GS ( k fn 180: pL + pH*256 = k + 3 and the store holds at most 7089 bytes.
QR_MAX_DATA = 7089


@dataclass(frozen=True, slots=True)
class Ticket:
    """What a completed visit's ticket says; masses in record units."""

    site: str
    device: str
    vehicle: str | None  # the record's vehicle id: the plate when registered, else what was read
    event_id: bytes  # the completing weighing (pass out or single)
    seq: int
    time_ms: int
    stage: str
    gross: int
    tare: int | None = None
    net: int | None = None
    direction: str | None = None
    inbound_event: bytes | None = None
    inbound_time_ms: int | None = None
    tare_event: bytes | None = None
    seals: tuple[str, ...] = ()
    scale: str | None = None
    alibi: str | None = None
    photo: bytes | None = None
    haulier: str | None = None
    tag: str | None = None  # the RFID tag number the vehicle was identified by
    registered: bool = True  # False: ``tag`` is not in the vehicle registry

    @property
    def vehicle_text(self) -> str:
        if self.vehicle is None:
            return "(not identified)"
        if self.tag is not None and not self.registered:
            return f"tag {self.tag} (not registered)"
        return self.vehicle

    @property
    def qr_payload(self) -> str:
        return self.event_id.hex()


def _kg(units: int) -> str:
    return f"{format_kg(units, group=' ')} kg"


def _when(ms: int) -> str:
    # Katanga is UTC+2 (DOMAIN.md) but the ticket states UTC: it matches the signed time.
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _pair(left: str, right: str) -> str:
    return f"{left}{right:>{max(1, WIDTH - len(left))}}"


def text(t: Ticket) -> str:
    """The ticket as plain text (console, and the body of the printed ticket)."""
    direction = {"in": "received", "out": "shipped"}.get(t.direction or "", "")
    lines = [
        "WEIGHBRIDGE TICKET".center(WIDTH),
        f"{t.site} / {t.device}".center(WIDTH),
        "-" * WIDTH,
        _pair("Vehicle", t.vehicle_text),
    ]
    if t.haulier:
        lines.append(_pair("Haulier", t.haulier))
    if t.tag is not None and t.registered:
        lines.append(_pair("Tag", t.tag))
    lines.append(_pair("Ticket (seq)", str(t.seq)))
    if t.inbound_time_ms is not None:
        lines.append(_pair("In", _when(t.inbound_time_ms)))
    lines.append(_pair("Out" if t.stage == "out" else "Weighed", _when(t.time_ms)))
    lines += ["-" * WIDTH, _pair("Gross", _kg(t.gross))]
    if t.tare is not None:
        stored = " (stored)" if t.tare_event is not None else ""
        lines.append(_pair(f"Tare{stored}", _kg(t.tare)))
    if t.net is not None:
        lines.append(_pair("NET", _kg(t.net)))
    if direction:
        lines.append(_pair("Material", direction))
    lines.append("-" * WIDTH)
    if t.seals:
        lines.append(f"Seals ({len(t.seals)}):")
        lines += [f"  {s}" for s in t.seals]
    if t.scale:
        lines.append(_pair("Indicator", t.scale))
    if t.alibi:
        lines.append(_pair("Alibi id", t.alibi))
    if t.photo:
        lines.append(f"Photo sha256 {t.photo.hex()[:16]}...")
    if t.inbound_event is not None:
        lines.append(f"In event  {t.inbound_event.hex()}")
    lines.append(f"Event     {t.event_id.hex()}")
    return "\n".join(lines) + "\n"


def fields(t: Ticket) -> dict[str, object]:
    """The ticket as flat, named values (one structured log event; the text is for paper)."""
    out: dict[str, object] = {
        "seq": t.seq, "event_id": t.event_id.hex(), "site": t.site, "device": t.device,
        "vehicle": t.vehicle_text, "haulier": t.haulier or None, "tag": t.tag,
        "pass": t.stage, "time": _when(t.time_ms), "gross_kg": format_kg(t.gross),
        "tare_kg": None if t.tare is None else format_kg(t.tare),
        "tare_stored": t.tare_event is not None or None,
        "net_kg": None if t.net is None else format_kg(t.net),
        "material": {"in": "received", "out": "shipped"}.get(t.direction or ""),
        "inbound_time": None if t.inbound_time_ms is None else _when(t.inbound_time_ms),
        "seals": len(t.seals), "scale": t.scale, "alibi": t.alibi,
    }  # fmt: skip
    return {k: v for k, v in out.items() if v is not None}


def qr_commands(data: bytes, *, module: int = QR_MODULE_SIZE, ecc: int = QR_ERROR_M) -> bytes:
    """GS ( k: model 2, module size, error correction, store ``data``, print it."""
    if not 0 < len(data) <= QR_MAX_DATA:
        raise ValueError(f"QR data must be 1-{QR_MAX_DATA} bytes")
    if not 1 <= module <= 16 or ecc not in (48, 49, 50, 51):
        raise ValueError("module size 1-16 and error correction 48-51")
    store_len = len(data) + 3  # cn fn m + data
    return b"".join(
        (
            GS + b"(k" + bytes((4, 0, 49, 65, 50, 0)),  # fn 165: model 2
            GS + b"(k" + bytes((3, 0, 49, 67, module)),  # fn 167: module size
            GS + b"(k" + bytes((3, 0, 49, 69, ecc)),  # fn 169: error correction
            GS + b"(k" + bytes((store_len & 0xFF, store_len >> 8, 49, 80, 48)) + data,  # fn 180
            GS + b"(k" + bytes((3, 0, 49, 81, 48)),  # fn 181: print
        )
    )


def escpos(t: Ticket) -> bytes:
    """The ticket as ESC/POS bytes: init, code page, text, QR of the event id, cut."""
    body = text(t)
    title, rest = body.split("\n", 1)
    return b"".join(
        (
            ESC + b"@",  # initialize printer
            ESC + b"t" + bytes((CODE_PAGE_WPC1252,)),
            ESC + b"a\x01" + ESC + b"E\x01",  # centred, emphasized title
            title.strip().encode("cp1252", "replace") + LF,
            ESC + b"E\x00" + ESC + b"a\x00",
            rest.encode("cp1252", "replace"),
            ESC + b"a\x01",
            qr_commands(t.qr_payload.encode("ascii")),
            LF + b"Check this ticket against the ledger" + LF,
            ESC + b"a\x00",
            GS + b"VA" + bytes((3,)),  # function B: feed 3 units, full cut
        )
    )


class SerialTicketPrinter:
    """An ESC/POS printer on a serial port URL (opened per ticket: printers get unplugged)."""

    def __init__(self, url: str, settings: SerialDefaults | None = None) -> None:
        self.url = url
        self.settings = settings or SerialDefaults(9600, 8, "N", 1)  # Epson TM default 9600 8N1

    def print(self, ticket: Ticket) -> None:
        # Raises DisconnectedError / PortConfigError (firmware_bridge.errors) for the caller.
        from firmware_bridge.transport import open_port  # the only pyserial user

        port = open_port(self.url, self.settings, timeout=1.0)
        try:
            port.write(escpos(ticket))
            port.flush()
        except OSError as exc:  # pyserial's SerialException is an OSError
            raise DisconnectedError(f"{self.url}: ticket not printed: {exc}") from exc
        finally:
            port.close()
