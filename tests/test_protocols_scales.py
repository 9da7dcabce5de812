"""Scale dialects (``firmware_bridge/protocols/scales.py``) on a corpus of raw bytes.

The corpus is ``tests/fixtures/<dialect>/frames.json``. Each case names its
manual page (through device-protocols.md) and whether the frame is quoted from
the manual or constructed from its rules. Each case is fed whole, byte by byte,
in seeded random chunks and wrapped in garbage, and the same frames must come
out every time (STYLE.md §13). Hypothesis then checks that for any bytes a
parser returns only frames and ``FrameError`` items, never raises, and never
buffers more than its documented limit.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import PortConfigError
from firmware_bridge.frames import CommandReply, WeightMode, WeightReading
from firmware_bridge.protocols import scales
from firmware_bridge.protocols.base import FrameError, LineParser, Parser
from firmware_bridge.protocols.scales import (
    DIALECTS,
    AdCasParser,
    MtSicsParser,
    RegexParser,
    SmaParser,
    ToledoContinuousParser,
    Xk3190A9Parser,
    Xk3190A12Parser,
    mt_sics_request,
    sma_request,
    xk3190_request,
)
from tests.support import random_chunks

FIXTURES = Path(__file__).parent / "fixtures"
NAMES = ["mt-sics", "toledo-continuous", "sma", "ad-cas", "xk3190-a9", "xk3190-a12", "regex"]
LINE_DIALECTS = {"mt-sics", "sma", "ad-cas", "xk3190-a12", "regex"}
BY_NAME = {d.name: d for d in DIALECTS}

# Garbage with no start marker of any dialect (no STX, no 0x82 = STX with a
# parity bit, no '='), ended by CR LF so that line dialects see a line of it.
GARBAGE = b"\x00\xfe#junk\x7f\xff\r\n"


# --- the corpus ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    dialect: str
    name: str
    kind: str
    source: str
    data: bytes
    expect: tuple[object, ...]
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def frames(self) -> list[object]:
        return [x for x in self.expect if not isinstance(x, FrameError)]

    @property
    def errors(self) -> list[FrameError]:
        return [x for x in self.expect if isinstance(x, FrameError)]

    @property
    def dropped(self) -> int:
        return sum(len(e.raw) for e in self.errors)

    @property
    def checksum_errors(self) -> int:
        return sum("checksum" in e.reason for e in self.errors)

    def parser(self) -> Parser:
        return BY_NAME[self.dialect].factory(**self.options)


def _bytes(obj: dict[str, Any], key: str) -> bytes:
    if key + "_hex" in obj:
        return bytes.fromhex(obj[key + "_hex"])
    return str(obj[key]).encode("latin-1")


def _expected(dialect: str, item: dict[str, Any]) -> object:
    ((kind, f),) = item.items()
    if kind == "weight":
        return WeightReading(
            value=f["value"],
            decimals=f["decimals"],
            unit=f["unit"],
            stable=f["stable"],
            mode=WeightMode(f["mode"]),
            overload=f.get("overload", False),
            underload=f.get("underload", False),
            center_of_zero=f.get("center_of_zero"),
            dialect=dialect,
            raw=_bytes(f, "raw"),
            tare=f.get("tare"),
            division=f.get("division"),
            flags=frozenset(f.get("flags", ())),
        )
    if kind == "reply":
        return CommandReply(
            f["command"], f["status"], tuple(f["values"]), dialect, _bytes(f, "raw")
        )
    assert kind == "error", kind
    # The reason is for people; tests compare the bytes and whether it is a checksum error.
    return FrameError("checksum" if f["checksum"] else "", _bytes(f, "raw"))


def load_cases() -> list[Case]:
    cases: list[Case] = []
    for name in NAMES:
        doc = json.loads((FIXTURES / name / "frames.json").read_text(encoding="utf-8"))
        assert doc["dialect"] == name
        for c in doc["cases"]:
            assert c["kind"] in ("quoted", "constructed") and c["source"], c["name"]
            data = bytes.fromhex(c["hex"]) if "hex" in c else c["data"].encode("latin-1")
            expect = tuple(_expected(name, e) for e in c["expect"])
            options = c.get("options", {})
            cases.append(Case(name, c["name"], c["kind"], c["source"], data, expect, options))
    return cases


CASES = load_cases()
CASE_IDS = [f"{c.dialect}:{c.name}" for c in CASES]


def buffered(parser: Parser) -> tuple[int, int]:
    """Bytes the parser holds between calls, and its documented limit."""
    if isinstance(parser, LineParser):
        return len(parser._buf), parser.max_line
    assert isinstance(parser, scales._MarkerParser)
    return len(parser._buf), parser.max_frame


def feed_all(parser: Parser, pieces: Iterable[bytes]) -> list[object]:
    out: list[object] = []
    for piece in pieces:
        out += parser.feed(piece)
        size, limit = buffered(parser)
        assert size <= limit
    return out


def chunks_of(data: bytes, seed: int) -> list[bytes]:
    return random_chunks(data, seed, max_len=17)


def frames_of(items: list[object]) -> list[object]:
    return [x for x in items if not isinstance(x, FrameError)]


def same_items(got: list[object], expect: Iterable[object]) -> None:
    expect = list(expect)
    assert len(got) == len(expect), got
    for g, e in zip(got, expect, strict=True):
        if isinstance(e, FrameError):
            assert isinstance(g, FrameError), g
            assert g.raw == e.raw
            assert ("checksum" in g.reason) == ("checksum" in e.reason), g.reason
        else:
            assert g == e


def test_corpus_covers_every_dialect_with_quoted_or_constructed_frames() -> None:
    assert {c.dialect for c in CASES} == set(NAMES) == set(BY_NAME)
    for name in NAMES:
        assert sum(c.dialect == name and bool(c.frames) for c in CASES) >= 3, name
    # Every dialect but Toledo continuous has frames quoted from a manual (§1.2: none exist).
    quoted = {c.dialect for c in CASES if c.kind == "quoted"}
    assert quoted == set(NAMES) - {"toledo-continuous"}


# --- fixtures: whole, byte by byte, random chunks, in garbage ----------------------------
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fixture_fed_whole(case: Case) -> None:
    parser = case.parser()
    out = parser.feed(case.data)
    same_items(out, case.expect)
    assert parser.stats.frames == len(case.frames)
    assert parser.stats.errors == len(case.errors)
    assert parser.stats.dropped_bytes == case.dropped
    assert parser.stats.checksum_errors == case.checksum_errors
    assert buffered(parser)[0] == 0  # every byte of the case was decided


@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fixture_fed_byte_by_byte(case: Case) -> None:
    parser = case.parser()
    out = feed_all(parser, (case.data[i : i + 1] for i in range(len(case.data))))
    assert frames_of(out) == case.frames
    assert parser.stats.dropped_bytes == case.dropped
    assert parser.stats.checksum_errors == case.checksum_errors
    assert parser.stats.errors >= len(case.errors) and parser.stats.errors == len(out) - len(
        case.frames
    )


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fixture_fed_in_random_chunks(case: Case, seed: int) -> None:
    parser = case.parser()
    out = feed_all(parser, chunks_of(case.data, seed))
    assert frames_of(out) == case.frames
    assert parser.stats.dropped_bytes == case.dropped
    assert parser.stats.checksum_errors == case.checksum_errors
    assert parser.stats.frames == len(case.frames)


@pytest.mark.parametrize("chunked", [False, True], ids=["whole", "chunks"])
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_fixture_wrapped_in_garbage(case: Case, chunked: bool) -> None:
    data = GARBAGE + case.data + GARBAGE
    parser = case.parser()
    out = feed_all(parser, chunks_of(data, 99) if chunked else [data])
    assert frames_of(out) == case.frames  # the same frames come out
    # A line dialect drops the garbage line (its terminators end it); a marker
    # dialect drops every byte before a start marker.
    per_garbage = len(GARBAGE) - 2 if case.dialect in LINE_DIALECTS else len(GARBAGE)
    assert parser.stats.dropped_bytes == case.dropped + 2 * per_garbage
    assert parser.stats.checksum_errors == case.checksum_errors
    errors = [x for x in out if isinstance(x, FrameError)]
    assert len(errors) == parser.stats.errors >= len(case.errors) + 1
    assert errors[0].raw == GARBAGE[:per_garbage] or chunked


# --- checksums ----------------------------------------------------------------------------
GOOD = {
    "toledo-continuous": bytes.fromhex("022A3020303132333430303030303030 0D2D"),
    "xk3190-a9": bytes.fromhex("022B30313233343030314603"),
    "xk3190-a12": b"WG004.139kg3D\r\n",
}


# Positions of the weight/tare digits in each frame.
DIGITS = {
    "toledo-continuous": range(4, 16),
    "xk3190-a9": range(2, 8),
    "xk3190-a12": (2, 3, 4, 6, 7, 8),
}


@pytest.mark.parametrize("name", sorted(GOOD))
def test_every_single_digit_change_is_a_counted_checksum_error(name: str) -> None:
    frame = GOOD[name]
    assert frames_of(BY_NAME[name].factory().feed(frame))
    for i in DIGITS[name]:
        assert 0x30 <= frame[i] <= 0x39
        for digit in b"0123456789":
            if digit == frame[i]:
                continue
            bad = frame[:i] + bytes([digit]) + frame[i + 1 :]
            parser = BY_NAME[name].factory()
            out = parser.feed(bad)
            assert not frames_of(out), (i, bad)
            assert parser.stats.checksum_errors == parser.stats.errors == 1, (i, bad)
            assert parser.stats.dropped_bytes == len(bad.rstrip(b"\r\n"))


def test_toledo_detects_checksum_mode_and_keeps_it() -> None:
    frame = GOOD["toledo-continuous"]
    parser = ToledoContinuousParser()
    assert parser.checksum is None
    assert len(frames_of(parser.feed(frame + frame))) == 2
    assert parser.checksum is True
    plain = ToledoContinuousParser()
    out = plain.feed(frame[:-1] + frame[:-1] + b"\x02")
    assert len(frames_of(out)) == 2 and plain.checksum is False
    assert buffered(plain)[0] == 1  # the next frame's STX


def test_toledo_without_checksum_emits_at_cr_and_with_it_waits_for_chk() -> None:
    frame = GOOD["toledo-continuous"]
    assert len(ToledoContinuousParser(checksum=False).feed(frame[:-1])) == 1
    waiting = ToledoContinuousParser(checksum=True)
    assert waiting.feed(frame[:-1]) == []
    assert len(frames_of(waiting.feed(frame[-1:]))) == 1


# --- bounded buffers ----------------------------------------------------------------------
def _first_frame_case(name: str) -> Case:
    return next(c for c in CASES if c.dialect == name and c.frames and not c.errors)


@pytest.mark.parametrize("name", sorted(LINE_DIALECTS))
def test_overlong_line_is_dropped_counted_and_bounded(name: str) -> None:
    case = _first_frame_case(name)
    parser = case.parser()
    assert isinstance(parser, LineParser)
    limit = parser.max_line
    flood = b"A" * (10 * limit + 3)
    out = feed_all(parser, chunks_of(flood, 5))
    assert buffered(parser)[0] <= limit
    assert len(out) == 1 and isinstance(out[0], FrameError) and len(out[0].raw) <= limit
    assert parser.stats.overflows == 1
    # Resync at the next terminator: the frame after it parses.
    out = feed_all(parser, [b"\r\n", case.data])
    assert frames_of(out) == case.frames
    assert parser.stats.dropped_bytes == len(flood)


@pytest.mark.parametrize("name", ["toledo-continuous", "xk3190-a9"])
def test_marker_dialect_holds_at_most_one_partial_frame(name: str) -> None:
    parser = BY_NAME[name].factory()
    limit = buffered(parser)[1]
    assert limit == {"toledo-continuous": 18, "xk3190-a9": 14}[name]
    rng = random.Random(3)
    noise = bytes(rng.choice(b"\x02=0123456789+-AB\r\x03") for _ in range(5000))
    out = feed_all(parser, chunks_of(noise, 8))
    assert all(isinstance(x, WeightReading | FrameError) for x in out)
    # A start marker followed by bytes that never complete a frame stays bounded too.
    feed_all(parser, [b"\x02" + b"1" * 5 for _ in range(50)])
    assert buffered(parser)[0] < limit


# --- never raises, for any bytes (Hypothesis) ---------------------------------------------
def _pieces_for(name: str) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes mixed with this dialect's real frames, their pieces and markers."""
    samples = [c.data for c in CASES if c.dialect == name]
    fragments = [s[i:j] for s in samples for i, j in ((0, len(s) // 2), (len(s) // 2, len(s)))]
    markers = [b"\x02", b"\x03", b"\r", b"\n", b"\r\n", b"=", b"\x82", b",", b" "]
    return st.one_of(
        st.binary(max_size=40),
        st.sampled_from(samples + fragments + markers),
    )


def _property(name: str, options: dict[str, Any], pieces: list[bytes]) -> None:
    parser = BY_NAME[name].factory(**options)
    out = feed_all(parser, pieces)
    assert all(isinstance(x, WeightReading | CommandReply | FrameError) for x in out)
    errors = sum(isinstance(x, FrameError) for x in out)
    assert parser.stats.errors == errors
    assert parser.stats.frames == len(out) - errors
    for x in out:
        if isinstance(x, WeightReading | CommandReply):
            assert x.dialect == name and x.raw
    # How the bytes were cut changes nothing but the number of garbage reports.
    whole = BY_NAME[name].factory(**options)
    assert frames_of(whole.feed(b"".join(pieces))) == frames_of(out)
    assert whole.stats.dropped_bytes == parser.stats.dropped_bytes
    assert whole.stats.checksum_errors == parser.stats.checksum_errors
    assert bytes(whole._buf) == bytes(parser._buf)


_REGEX_OPTIONS = next(c.options for c in CASES if c.dialect == "regex")


@pytest.mark.parametrize("name", NAMES)
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_any_bytes_give_frames_or_errors_within_the_buffer_limit(
    name: str, data: st.DataObject
) -> None:
    pieces = data.draw(st.lists(_pieces_for(name), max_size=30), label="pieces")
    _property(name, _REGEX_OPTIONS if name == "regex" else {}, pieces)


# --- request encoders ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "kwargs", "wire"),
    [
        (("S",), {}, b"S\r\n"),
        (("SI",), {}, b"SI\r\n"),
        (("SIR",), {}, b"SIR\r\n"),
        (("SR",), {}, b"SR\r\n"),
        (("Z",), {}, b"Z\r\n"),
        (("ZI",), {}, b"ZI\r\n"),
        (("T",), {}, b"T\r\n"),
        (("TI",), {}, b"TI\r\n"),
        (("TAC",), {}, b"TAC\r\n"),
        (("TA", "2.486", "g"), {}, b"TA 2.486 g\r\n"),
        (("@",), {}, b"@\r\n"),
        (("I4",), {}, b"I4\r\n"),
        (("SIX1",), {}, b"SIX1\r\n"),
        (("M21", 0, 0), {}, b"M21 0 0\r\n"),
        (("D",), {"text": "LOAD TRUCK"}, b'D "LOAD TRUCK"\r\n'),
    ],
)
def test_mt_sics_request_bytes(args: tuple[Any, ...], kwargs: dict[str, Any], wire: bytes) -> None:
    assert mt_sics_request(*args, **kwargs) == wire
    assert MtSicsParser.request(*args, **kwargs) == wire


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("s",), {}),
        (("S I",), {}),
        (("",), {}),
        (("TA", "2 g"), {}),
        (("TA", True), {}),
        (("D",), {"text": 'say "hi"'}),
        (("D",), {"text": "line\r\n"}),
    ],
)
def test_mt_sics_request_refuses_what_the_spec_cannot_carry(
    args: tuple[Any, ...], kwargs: dict[str, Any]
) -> None:
    with pytest.raises(ValueError, match="MT-SICS"):
        mt_sics_request(*args, **kwargs)


def test_sma_request_bytes() -> None:
    assert sma_request("W") == b"\nW\r"
    assert sma_request("Z") == b"\nZ\r"
    assert sma_request("R") == b"\nR\r"
    assert sma_request("H") == b"\nH\r"
    assert sma_request("M") == b"\nM\r"
    assert sma_request("\x1b") == b"\n\x1b\r"
    assert sma_request("T") == b"\nT\r"
    assert sma_request("T", "000250.500") == b"\nT000250.500\r"
    assert SmaParser.request("C") == b"\nC\r"
    for bad in [("X",), ("WW",), ("W", "000250.500"), ("T", "250.5")]:
        with pytest.raises(ValueError, match=r"SMA|tare"):
            sma_request(*bad)


def test_xk3190_request_bytes() -> None:
    # §1.6: the host sends 02 41 42 30 33 03 to read gross from address A.
    assert xk3190_request() == bytes.fromhex("024142303303")
    assert Xk3190A9Parser.request("B", "B") == b"\x02BB00\x03"
    with pytest.raises(ValueError, match="address"):
        xk3190_request("1")


def test_sics_request_and_reply_round_trip() -> None:
    parser = MtSicsParser()
    assert mt_sics_request("@") == b"@\r\n"
    (reply,) = parser.feed(b'I4 A "B123456789"\r\n')
    assert reply == CommandReply("I4", "A", ("B123456789",), "mt-sics", b'I4 A "B123456789"')


# --- dialect table, registry and options --------------------------------------------------
def test_dialect_table() -> None:
    assert [d.name for d in DIALECTS] == NAMES
    for d in DIALECTS:
        assert d.kind == "scale" and d.description and d.manual
        assert d.serial.parity in ("N", "E", "O") and d.serial.bytesize in (7, 8)
        assert d.factory is not None
    assert BY_NAME["toledo-continuous"].serial.bytesize == 7  # §1.2: 7E1
    assert BY_NAME["toledo-continuous"].serial.parity == "E"
    assert BY_NAME["mt-sics"].serial.baudrate == 9600


@pytest.mark.parametrize("name", NAMES)
def test_each_dialect_builds_from_its_table_entry(name: str) -> None:
    case = _first_frame_case(name)
    parser = BY_NAME[name].factory(**case.options)
    assert parser.dialect == name
    assert frames_of(parser.feed(case.data)) == case.frames


@pytest.mark.parametrize("name", NAMES)
def test_registry_makes_each_scale_parser(name: str) -> None:
    from firmware_bridge.protocols import registry

    case = _first_frame_case(name)
    parser = registry.make_parser(name, **case.options)
    assert frames_of(parser.feed(case.data)) == case.frames
    assert registry.dialect(name) is BY_NAME[name]
    with pytest.raises(PortConfigError, match="bad option"):
        registry.make_parser(name, no_such_option=1)
    if name == "regex":
        with pytest.raises(PortConfigError, match="pattern"):
            registry.make_parser(name)


@pytest.mark.parametrize(
    ("factory", "options", "match"),
    [
        (RegexParser, {}, "pattern"),
        (RegexParser, {"pattern": "("}, "compile"),
        (RegexParser, {"pattern": "[0-9]+"}, "group 'value'"),
        (RegexParser, {"pattern": "(?P<value>[0-9]+)(?P<weight>x)"}, "unknown named groups"),
        (RegexParser, {"pattern": 42}, "pattern"),
        (RegexParser, {"pattern": "(?P<value>.*)", "decimals": 7}, "decimals"),
        (RegexParser, {"pattern": "(?P<value>.*)", "decimals": True}, "decimals"),
        (RegexParser, {"pattern": "(?P<value>.*)", "unit": "oz"}, "unit"),
        (RegexParser, {"pattern": "(?P<value>.*)", "units": {"K": "stone"}}, "units"),
        (RegexParser, {"pattern": "(?P<value>.*)", "units": ["kg"]}, "units"),
        (RegexParser, {"pattern": "(?P<value>.*)", "modes": {"G": "heavy"}}, "modes"),
        (RegexParser, {"pattern": "(?P<value>.*)", "assume_stable": "yes"}, "assume_stable"),
        (RegexParser, {"pattern": "(?P<value>.*)", "max_line": 0}, "max_line"),
        (ToledoContinuousParser, {"checksum": "yes"}, "checksum"),
        (Xk3190A9Parser, {"unit": "oz"}, "unit"),
        (Xk3190A12Parser, {"unit": "KG"}, "unit"),
        (Xk3190A12Parser, {"max_line": 5}, "max_line"),
        (MtSicsParser, {"default_unit": "mg"}, "default_unit"),
        (SmaParser, {"max_line": 10}, "max_line"),
        (AdCasParser, {"max_line": "64"}, "max_line"),
    ],
)
def test_bad_options_fail_at_construction(
    factory: Any, options: dict[str, Any], match: str
) -> None:
    with pytest.raises(PortConfigError, match=match):
        factory(**options)


# --- the benchmark's streams are valid frames ---------------------------------------------
def test_bench_parsers_small_run() -> None:
    from bench import parsers

    args = argparse.Namespace(mb=0.02, chunk=4096, runs=1, dialect=None)
    result = parsers.run(args)
    assert set(NAMES) <= set(result["dialects"])
    assert {"rdm6300", "scanner-line", "nmea", "wiegand26-text"} <= set(result["dialects"])
    for name, r in result["dialects"].items():
        assert r["errors"] == 0, name
        assert r["frames"] == r["frames_sent"], name
        assert r["line_dialect"] == (name in parsers.LINE_DIALECTS)
    assert "machine" in result and isinstance(result["meets_targets"], bool)
    assert "frames/s" in parsers.render(result)
