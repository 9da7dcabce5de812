"""RFID dialects: RDM6300, Wiegand-26 text, UHF R2000 and Chafon (STYLE.md §13).

Fixture corpora live in tests/fixtures/<dialect>/ with each frame's source
(quoted from a manual/third-party test, or constructed from the published
rule). Every case is fed whole, byte by byte, in seeded random chunks and
wrapped in garbage; Hypothesis checks that any byte string yields only frames
and FrameErrors, with bounded buffers and byte accounting that adds up.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import PortConfigError
from firmware_bridge.frames import CommandReply, TagRead
from firmware_bridge.protocols import rfid
from firmware_bridge.protocols.base import FrameError
from firmware_bridge.protocols.rfid import (
    CHAFON_MAX_FRAME,
    R2000_MAX_FRAME,
    RDM6300_MAX_FRAME,
    ChafonParser,
    R2000Parser,
    Rdm6300Parser,
    Wiegand26TextParser,
    chafon_crc16,
    chafon_frame,
    chafon_inventory,
    r2000_checksum,
    r2000_frame,
    r2000_realtime_inventory,
    rdm6300_frame,
    wiegand26_bits,
)
from tests.support import assert_cut_anywhere, feed_chunks, random_chunks

FIXTURES = Path(__file__).parent / "fixtures"
Factory = Callable[[], Any]


# ---------------------------------------------------------------- harness


def _load(dialect: str, name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((FIXTURES / dialect / name).read_text())["cases"]
    return cases


def _raw(case: dict[str, Any]) -> bytes:
    return bytes.fromhex(case["hex"]) if "hex" in case else case["text"].encode("utf-8")


def _feed(factory: Factory, chunks: list[bytes]) -> tuple[list[object], Any]:
    parser = factory()
    return feed_chunks(parser, chunks), parser


def _check(out: list[object], expect: list[dict[str, Any]]) -> None:
    assert [type(o).__name__ for o in out] == [e["type"] for e in expect], out
    for got, want in zip(out, expect, strict=True):
        for key, value in want.items():
            if key == "type":
                continue
            if key == "reason":
                assert isinstance(got, FrameError)
                assert value in got.reason, (got.reason, value)
            elif key == "values":
                assert getattr(got, key) == tuple(value)
            else:
                assert getattr(got, key) == value, (key, got)


def _fixture_roundtrip(
    factory: Factory, case: dict[str, Any], garbage: tuple[bytes, bytes]
) -> None:
    data = _raw(case)
    whole, parser = _feed(factory, [data])
    _check(whole, case["expect"])
    assert parser.stats.checksum_errors == case.get("checksum_errors", 0)
    frames = [o for o in whole if not isinstance(o, FrameError)]
    assert parser.stats.frames == len(frames)
    assert_cut_anywhere(factory, data, whole, parser.stats, max_len=7)
    # Garbage around a case that carries frames: the frames survive, the noise is reported.
    if frames:
        before, after = garbage
        wrapped, p4 = _feed(factory, random_chunks(before + data + after, 99, max_len=7))
        assert [o for o in wrapped if not isinstance(o, FrameError)] == frames
        assert any(isinstance(o, FrameError) and o.raw.startswith(before[:4]) for o in wrapped)
        assert p4.stats.dropped_bytes >= parser.stats.dropped_bytes + len(before.rstrip(b"\r\n"))


# ---------------------------------------------------------------- RDM6300

RDM_CASES = _load("rdm6300", "frames.json")


@pytest.mark.parametrize("case", RDM_CASES, ids=[c["name"] for c in RDM_CASES])
def test_rdm6300_fixtures(case: dict[str, Any]) -> None:
    _fixture_roundtrip(Rdm6300Parser, case, (b"\x00\xffnoise\x13", b"\x01\x7f"))


def test_rdm6300_encoder_matches_quoted_frame() -> None:
    # Hobby Components forum frame, and the Arduino forum byte list (§3.1).
    assert rdm6300_frame("100086F444") == b"\x02100086F44426\x03"
    assert rdm6300_frame("010063e9ae") == bytes(
        [2, 48, 49, 48, 48, 54, 51, 69, 57, 65, 69, 50, 53, 3]
    )
    with pytest.raises(ValueError, match="10 hex digits"):
        rdm6300_frame("1234")


def test_rdm6300_fob_number_is_decimal_of_id_bytes() -> None:
    # The number printed on the fob is the decimal of bytes 2-5 (§3.1).
    (read,) = Rdm6300Parser().feed(b"\x02010063E9AE25\x03")
    assert isinstance(read, TagRead)
    assert f"{int(read.tag_id[2:], 16):010d}" == "0006547886"


_EM_IDS = st.binary(min_size=5, max_size=5).map(lambda b: b.hex().upper())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=24), _EM_IDS.map(rdm6300_frame)), max_size=12))
def test_rdm6300_any_bytes(parts: list[bytes]) -> None:
    data = b"".join(parts)
    parser = Rdm6300Parser()
    out: list[object] = []
    for chunk in random_chunks(data, len(data), max_len=7):
        new = parser.feed(chunk)
        assert all(isinstance(o, (TagRead, FrameError)) for o in new)
        assert parser.buffered <= RDM6300_MAX_FRAME
        assert len(parser._junk.sample) <= 32
        out += new
    # Every byte is in a frame, dropped (counted) or still buffered.
    frames = [o for o in out if isinstance(o, TagRead)]
    assert sum(len(f.raw) for f in frames) + parser.stats.dropped_bytes + parser.buffered == len(
        data
    )
    assert _feed(Rdm6300Parser, [data])[0] == out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=10), _EM_IDS), max_size=8))
def test_rdm6300_frames_survive_garbage_without_stx(items: list[tuple[bytes, str]]) -> None:
    data = b"".join(junk.replace(b"\x02", b"") + rdm6300_frame(i) for junk, i in items)
    out, _ = _feed(Rdm6300Parser, [data])
    assert [o.tag_id for o in out if isinstance(o, TagRead)] == [i for _, i in items]


# ---------------------------------------------------------------- Wiegand-26 text

WIEGAND_CASES = _load("wiegand26-text", "lines.json")


@pytest.mark.parametrize("case", WIEGAND_CASES, ids=[c["name"] for c in WIEGAND_CASES])
def test_wiegand_fixtures(case: dict[str, Any]) -> None:
    def factory() -> Wiegand26TextParser:
        return Wiegand26TextParser(format=case["format"])

    _fixture_roundtrip(factory, case, (b"\x00\x01zz\r\n", b"0101"))


def test_wiegand_encoder_matches_published_vectors() -> None:
    assert wiegand26_bits(100, 60179) == "00110010011101011000100111"  # Sygonix manual
    assert wiegand26_bits(90, 324) == "00101101000000001010001000"  # jessety/wiegand-encoder
    with pytest.raises(ValueError, match="facility"):
        wiegand26_bits(256, 1)


def test_wiegand_bad_format_option_is_a_config_error() -> None:
    with pytest.raises(PortConfigError, match="format"):
        Wiegand26TextParser(format="octal")


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 255), st.integers(0, 65535), st.integers(0, 25))
def test_wiegand_roundtrip_and_every_single_bit_error_detected(
    facility: int, card: int, flip: int
) -> None:
    bits = wiegand26_bits(facility, card)
    (read,) = Wiegand26TextParser(format="bits").feed(bits.encode() + b"\r\n")
    assert isinstance(read, TagRead)
    assert read.tag_id == f"{facility:03d}:{card:05d}"
    # H10301's two parity bits cover disjoint halves: one flipped bit always shows.
    damaged = bits[:flip] + ("1" if bits[flip] == "0" else "0") + bits[flip + 1 :]
    parser = Wiegand26TextParser(format="bits")
    (err,) = parser.feed(damaged.encode() + b"\n")
    assert isinstance(err, FrameError)
    assert parser.stats.checksum_errors == 1
    # The same value as FC,CN text and as 24-bit decimal decodes identically.
    assert Wiegand26TextParser().feed(f"{facility},{card}\n".encode()) == [
        TagRead(
            "wiegand26", read.tag_id, dialect="wiegand26-text", raw=f"{facility},{card}".encode()
        )
    ]
    (dec,) = Wiegand26TextParser(format="decimal").feed(b"%d\n" % (facility << 16 | card))
    assert isinstance(dec, TagRead)
    assert dec.tag_id == read.tag_id


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.sampled_from(rfid.WIEGAND_FORMATS))
def test_wiegand_any_bytes(data: bytes, fmt: str) -> None:
    parser = Wiegand26TextParser(format=fmt)
    out: list[object] = []
    for chunk in random_chunks(data, len(data), max_len=7):
        new = parser.feed(chunk)
        assert all(isinstance(o, (TagRead, FrameError)) for o in new)
        assert len(parser._buf) <= parser.max_line
        out += new
    assert _feed(lambda: Wiegand26TextParser(format=fmt), [data])[0] == out


# ---------------------------------------------------------------- R2000

R2000_CASES = _load("uhf-r2000", "frames.json")


@pytest.mark.parametrize("case", R2000_CASES, ids=[c["name"] for c in R2000_CASES])
def test_r2000_fixtures(case: dict[str, Any]) -> None:
    _fixture_roundtrip(R2000Parser, case, (b"\x00\x11\xffgarbage", b"\x7f\x00"))


def test_r2000_request_encoders_exact_bytes() -> None:
    # Quoted: team0se7en/yr902 cmd.py comment "\xa0\x04\x01\x89\x01\xd1" (§3.3 (c)).
    assert r2000_realtime_inventory() == bytes.fromhex("A0 04 01 89 01 D1")
    # Constructed from the same rule: reset (0x70) to address 1; broadcast inventory x255.
    assert r2000_frame(0x01, 0x70) == bytes.fromhex("A0 03 01 70 EC")
    assert r2000_realtime_inventory(0xFF, 0xFF) == bytes.fromhex("A0 04 FF 89 FF D5")
    assert r2000_checksum(bytes.fromhex("A0 04 01 89 01")) == 0xD1
    for bad in ((256, 1), (1, 256)):
        with pytest.raises(ValueError, match="byte"):
            r2000_frame(*bad)


def test_r2000_frame_check_sums_to_zero() -> None:
    # "Two's complement of the sum" means the whole frame sums to 0 mod 256.
    frame = r2000_frame(0x05, 0x81, bytes(range(40)))
    assert sum(frame) & 0xFF == 0
    assert frame[1] == len(frame) - 2


_EPCS = st.binary(min_size=2, max_size=32).filter(lambda b: len(b) % 2 == 0)


def _r2000_tag(epc: bytes, ant: int, rssi: int) -> bytes:
    pc = (len(epc) // 2) << 11
    return r2000_frame(0x01, 0x89, bytes([ant]) + pc.to_bytes(2, "big") + epc + bytes([rssi]))


_R2000_FRAMES = st.builds(_r2000_tag, _EPCS, st.integers(0, 255), st.integers(0, 255))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), _R2000_FRAMES), max_size=10))
def test_r2000_any_bytes(parts: list[bytes]) -> None:
    data = b"".join(parts)
    parser = R2000Parser()
    out: list[object] = []
    for chunk in random_chunks(data, len(data), max_len=7):
        new = parser.feed(chunk)
        assert all(isinstance(o, (TagRead, CommandReply, FrameError)) for o in new)
        assert parser.buffered < R2000_MAX_FRAME
        out += new
    frames = [o for o in out if isinstance(o, (TagRead, CommandReply))]
    assert sum(len(f.raw) for f in frames) + parser.stats.dropped_bytes + parser.buffered == len(
        data
    )
    assert _feed(R2000Parser, [data])[0] == out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=30), _EPCS, st.integers(0, 3)), max_size=6))
def test_r2000_tags_survive_garbage_without_a0(
    items: list[tuple[bytes, bytes, int]],
) -> None:
    data = b"".join(junk.replace(b"\xa0", b"") + _r2000_tag(e, a, 0x50) for junk, e, a in items)
    out, _ = _feed(R2000Parser, [data])
    reads = [o for o in out if isinstance(o, TagRead)]
    assert [(r.tag_id, r.antenna, r.rssi) for r in reads] == [
        (e.hex().upper(), a + 1, 0x50 - 129) for _, e, a in items
    ]


# ---------------------------------------------------------------- Chafon

CHAFON_CASES = _load("uhf-chafon", "frames.json")


@pytest.mark.parametrize("case", CHAFON_CASES, ids=[c["name"] for c in CHAFON_CASES])
def test_chafon_fixtures(case: dict[str, Any]) -> None:
    _fixture_roundtrip(ChafonParser, case, (b"\x00\x01\x02\x03\x04\x00", b"\x00"))


def test_chafon_request_encoders_exact_bytes() -> None:
    # All four vectors from device-protocols.md §3.3 (b), CRCs recomputed there.
    assert chafon_inventory() == bytes.fromhex("04 00 01 DB 4B")
    assert chafon_frame(0x00, 0x21) == bytes.fromhex("04 00 21 D9 6A")
    assert chafon_frame(0xFF, 0x21) == bytes.fromhex("04 FF 21 19 95")
    assert chafon_crc16(bytes.fromhex("05 00 01 FB")) == 0x3DF2
    # CRC-16/MCRF4XX catalogue check value for "123456789".
    assert chafon_crc16(b"123456789") == 0x6F91


def _mcrf4xx_bitwise(data: bytes) -> int:
    """The manual's definition, bit by bit: preset 0xFFFF, reflected poly 0x8408."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8408 if crc & 1 else crc >> 1
    return crc


@given(st.binary(max_size=300))
def test_chafon_crc16_is_the_bitwise_definition(data: bytes) -> None:
    assert chafon_crc16(data) == _mcrf4xx_bitwise(data)


def test_chafon_keeps_up_with_noise_at_its_baud_rate() -> None:
    # One second of 57600-baud noise (5760 bytes), every byte a plausible frame length, so the
    # sync hunt computes a CRC over up to 254 bytes at each: the parser must stay well ahead
    # of the line (~25 ms here; a bitwise CRC loop in Python needs over a second).
    parser = ChafonParser()
    t0 = time.perf_counter()
    for _ in range(90):
        parser.feed(b"\xff" * 64)
    assert time.perf_counter() - t0 < 0.5
    assert parser.stats.frames == 0


def _chafon_inventory_reply(epcs: list[bytes]) -> bytes:
    body = bytes([0x00, 0x01, 0x01, len(epcs)]) + b"".join(bytes([len(e)]) + e for e in epcs)
    head = bytes([len(body) + 2]) + body
    return head + chafon_crc16(head).to_bytes(2, "little")


_CHAFON_FRAMES = st.lists(st.binary(min_size=2, max_size=12), min_size=1, max_size=4).map(
    _chafon_inventory_reply
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=40), _CHAFON_FRAMES), max_size=10))
def test_chafon_any_bytes(parts: list[bytes]) -> None:
    data = b"".join(parts)
    parser = ChafonParser()
    out: list[object] = []
    for chunk in random_chunks(data, len(data), max_len=7):
        new = parser.feed(chunk)
        assert all(isinstance(o, (TagRead, CommandReply, FrameError)) for o in new)
        assert parser.buffered < CHAFON_MAX_FRAME
        out += new
    assert _feed(ChafonParser, [data])[0] == out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(st.binary(min_size=2, max_size=12), min_size=1, max_size=3), max_size=5))
def test_chafon_back_to_back_replies_all_decoded(replies: list[list[bytes]]) -> None:
    data = b"".join(_chafon_inventory_reply(r) for r in replies)
    out, parser = _feed(ChafonParser, random_chunks(data, 7, max_len=7))
    assert [o.tag_id for o in out] == [e.hex().upper() for r in replies for e in r]
    assert parser.stats.errors == 0


# ---------------------------------------------------------------- dialect table


def test_rfid_dialects_are_described_and_build_parsers() -> None:
    names = [d.name for d in rfid.DIALECTS]
    assert names == ["rdm6300", "wiegand26-text", "uhf-r2000", "uhf-chafon"]
    for d in rfid.DIALECTS:
        assert d.kind == "rfid"
        assert d.description
        assert "device-protocols.md §3" in d.manual
        parser = d.factory()
        assert parser.dialect == d.name
        assert parser.feed(b"") == []
    bauds = {d.name: d.serial.baudrate for d in rfid.DIALECTS}
    assert bauds == {
        "rdm6300": 9600,
        "wiegand26-text": 9600,
        "uhf-r2000": 115200,
        "uhf-chafon": 57600,
    }


def test_registry_builds_every_dialect_of_ours_with_options() -> None:
    from firmware_bridge.protocols import registry

    built = {
        name: type(registry.make_parser(name)).__name__
        for name in ("rdm6300", "wiegand26-text", "uhf-r2000", "uhf-chafon", "scanner-line", "nmea")
    }
    assert built == {
        "rdm6300": "Rdm6300Parser",
        "wiegand26-text": "Wiegand26TextParser",
        "uhf-r2000": "R2000Parser",
        "uhf-chafon": "ChafonParser",
        "scanner-line": "ScannerLineParser",
        "nmea": "NmeaParser",
    }
    parser = registry.make_parser("wiegand26-text", format="fc-cn")
    assert isinstance(parser, Wiegand26TextParser) and parser.format == "fc-cn"
    with pytest.raises(PortConfigError, match="format"):
        registry.make_parser("wiegand26-text", format="octal")
    with pytest.raises(PortConfigError, match="bad option"):
        registry.make_parser("uhf-r2000", baud=9600)
