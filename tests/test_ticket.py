"""The driver's ticket: text, ESC/POS bytes parsed back, and a real pty to the printer."""

from __future__ import annotations

import os
import select
import threading
import tty
from dataclasses import dataclass, field

import pytest

from agent.workflows.ticket import SerialTicketPrinter, Ticket, escpos, qr_commands, text
from firmware_bridge.errors import DisconnectedError

EVENT = bytes(range(32))
TICKET = Ticket(
    site="KOL-01", device="gw-kol-01", vehicle="CD-KLZ-4471", event_id=EVENT, seq=42,
    time_ms=1_767_261_600_000, stage="out", gross=412_600, tare=150_200, net=262_400,
    direction="out", inbound_event=bytes(32), inbound_time_ms=1_767_258_000_000,
    seals=("SEAL-000101", "SEAL-000102"), scale="SIM0042", alibi="A-000731",
)  # fmt: skip


@dataclass
class Parsed:
    commands: list[str] = field(default_factory=list)
    text: bytearray = field(default_factory=bytearray)
    qr_stored: list[bytes] = field(default_factory=list)
    qr_printed: int = 0
    cut: bool = False


def parse_escpos(data: bytes) -> Parsed:
    """A tiny ESC/POS reader for the commands the ticket uses (Epson command names)."""
    out = Parsed()
    i = 0
    while i < len(data):
        b = data[i]
        if b == 0x1B:  # ESC
            cmd = data[i + 1 : i + 2]
            if cmd == b"@":
                out.commands.append("ESC @")
                i += 2
            elif cmd in (b"t", b"a", b"E"):
                out.commands.append(f"ESC {cmd.decode()} {data[i + 2]}")
                i += 3
            else:
                raise AssertionError(f"unexpected ESC {cmd!r} at {i}")
        elif b == 0x1D:  # GS
            cmd = data[i + 1 : i + 2]
            if cmd == b"(" and data[i + 2 : i + 3] == b"k":
                n = data[i + 3] + 256 * data[i + 4]
                params = data[i + 5 : i + 5 + n]
                assert params[0] == 49, "cn 49 = QR Code"
                fn = params[1]
                out.commands.append(f"GS ( k fn {fn}")
                if fn == 80:  # function 180: store the data (m = 48)
                    assert params[2] == 48
                    out.qr_stored.append(bytes(params[3:]))
                elif fn == 81:  # function 181: print the symbol
                    out.qr_printed += 1
                i += 5 + n
            elif cmd == b"V":
                m = data[i + 2]
                assert m in (65, 66), "function B cut takes a feed amount"
                out.commands.append(f"GS V {m}")
                out.cut = True
                i += 4
            else:
                raise AssertionError(f"unexpected GS {cmd!r} at {i}")
        elif b == 0x0A or b >= 0x20:
            out.text.append(b)
            i += 1
        else:
            raise AssertionError(f"unexpected control byte {b:#x} at {i}")
    return out


def test_text_ticket_names_the_visit() -> None:
    t = text(TICKET)
    wanted = ["CD-KLZ-4471", "41 260.0 kg", "15 020.0 kg", "26 240.0 kg", "shipped"]
    wanted += ["SEAL-000102", "SIM0042", "A-000731", EVENT.hex(), "2026-01-01 10:00:00 UTC"]
    for expected in wanted:
        assert expected in t, expected
    assert all(len(line) <= 64 + 10 for line in t.splitlines())  # event ids are 64 hex digits


def test_escpos_bytes_parse_back_with_the_event_id_in_the_qr_code() -> None:
    parsed = parse_escpos(escpos(TICKET))
    assert parsed.commands[0] == "ESC @" and parsed.commands[1] == "ESC t 16"
    qr = [c for c in parsed.commands if c.startswith("GS ( k")]
    assert qr == [
        f"GS ( k fn {fn}" for fn in (65, 67, 69, 80, 81)
    ]  # model, size, ecc, store, print
    assert parsed.qr_stored == [EVENT.hex().encode()] and parsed.qr_printed == 1
    assert parsed.commands[-1] == "GS V 65" and parsed.cut
    body = parsed.text.decode("cp1252")
    assert "WEIGHBRIDGE TICKET" in body and "26 240.0 kg" in body and "CD-KLZ-4471" in body


def test_qr_store_length_counts_its_header() -> None:
    cmd = qr_commands(b"x" * 300)
    store = [i for i in range(len(cmd)) if cmd.startswith(b"\x1d(k", i)][3]
    pl, ph = cmd[store + 3], cmd[store + 4]
    assert pl + 256 * ph == 303
    with pytest.raises(ValueError, match="QR data"):
        qr_commands(b"")


def test_french_names_survive_the_code_page() -> None:
    t = Ticket(site="KOL-01", device="gw", vehicle=None, event_id=EVENT, seq=1, time_ms=0,
               stage="single", gross=10, seals=("Scellé-1",))  # fmt: skip
    parsed = parse_escpos(escpos(t))
    assert "Scellé-1" in parsed.text.decode("cp1252")
    assert "(not identified)" in parsed.text.decode("cp1252")


def test_ticket_arrives_intact_through_a_real_pty() -> None:
    master, slave = os.openpty()
    tty.setraw(slave)
    received = bytearray()
    expected = escpos(TICKET)

    def read() -> None:
        while len(received) < len(expected):
            ready, _, _ = select.select([master], [], [], 10)
            if not ready:
                break
            received.extend(os.read(master, 4096))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        SerialTicketPrinter(os.ttyname(slave)).print(TICKET)
        reader.join(30)
    finally:
        os.close(slave)
        os.close(master)
    assert bytes(received) == expected
    assert parse_escpos(bytes(received)).qr_stored == [EVENT.hex().encode()]


def test_unplugged_printer_is_a_disconnected_error() -> None:
    with pytest.raises(DisconnectedError):
        SerialTicketPrinter("/dev/nonexistent-printer").print(TICKET)
