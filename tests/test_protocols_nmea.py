"""NMEA 0183 GGA/RMC, checked against ``pynmea2`` (STYLE.md §13).

pynmea2 (Knio/pynmea2, MIT) is a test-only oracle: on every published and
generated sentence our position, time, date, fix quality and satellite count
must match what it reads, and it must reject the checksums we reject.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pynmea2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from firmware_bridge.frames import GpsFix
from firmware_bridge.protocols import nmea
from firmware_bridge.protocols.base import FrameError
from firmware_bridge.protocols.nmea import (
    NMEA_MAX_SENTENCE,
    NmeaParser,
    nmea_checksum,
    nmea_sentence,
)
from tests.support import assert_cut_anywhere, feed_chunks, random_chunks

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "nmea" / "sentences.json").read_text()
)["cases"]


def _feed(chunks: list[bytes]) -> tuple[list[object], NmeaParser]:
    parser = NmeaParser()
    return feed_chunks(parser, chunks), parser


def _hms(utc_time: str) -> dt.time:
    frac = utc_time[6:]
    micro = round(float(frac) * 1_000_000) if frac else 0
    return dt.time(int(utc_time[:2]), int(utc_time[2:4]), int(utc_time[4:6]), micro, tzinfo=dt.UTC)


def _assert_agrees_with_pynmea2(fix: GpsFix, line: str) -> None:
    theirs: Any = pynmea2.parse(line, check=True)
    assert fix.utc_time is not None
    assert _hms(fix.utc_time) == theirs.timestamp
    if fix.latitude is None:
        assert theirs.lat == ""
    else:
        assert abs(float(fix.latitude) - theirs.latitude) < 1e-9
        assert fix.longitude is not None
        assert abs(float(fix.longitude) - theirs.longitude) < 1e-9
    if fix.sentence == "GGA":
        assert fix.fix_quality == int(theirs.gps_qual)
        assert fix.satellites == (int(theirs.num_sats) if theirs.num_sats else None)
    else:
        assert fix.fix_quality == (1 if theirs.status == "A" else 0)
        if fix.utc_date is not None:
            # ddmmyy carries no century; compare with the same %y pivot pynmea2 uses.
            assert theirs.datestamp == dt.datetime.strptime(fix.utc_date, "%d%m%y").date()


# ---------------------------------------------------------------- fixture corpus


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_nmea_fixtures(case: dict[str, Any]) -> None:
    data = case["text"].encode("ascii")
    whole, parser = _feed([data])
    assert [type(o).__name__ for o in whole] == [e["type"] for e in case["expect"]]
    for got, want in zip(whole, case["expect"], strict=True):
        for key, value in want.items():
            if key == "type":
                continue
            if key == "reason":
                assert isinstance(got, FrameError)
                assert value in got.reason, got.reason
            elif key in ("latitude", "longitude") and value is not None:
                assert getattr(got, key) == Decimal(value)
            else:
                assert getattr(got, key) == value, (key, got)
        if isinstance(got, GpsFix):
            _assert_agrees_with_pynmea2(got, got.raw.decode())
    assert parser.stats.checksum_errors == case.get("checksum_errors", 0)
    assert dict(parser.ignored) == case.get("ignored", {})
    fixes = [o for o in whole if isinstance(o, GpsFix)]
    assert parser.stats.frames == len(fixes)
    assert_cut_anywhere(NmeaParser, data, whole, parser.stats)
    if fixes:
        noise = b"\x00\xffgarbage,*"
        wrapped, p4 = _feed(random_chunks(noise + data + b"$GPG", 7))
        assert [o for o in wrapped if isinstance(o, GpsFix)] == fixes
        assert isinstance(wrapped[0], FrameError)
        assert wrapped[0].raw.startswith(noise)
        assert p4.stats.dropped_bytes == parser.stats.dropped_bytes + len(noise)


def test_pynmea2_rejects_the_checksum_we_reject() -> None:
    (bad,) = [c for c in CASES if c["name"] == "bad-checksum"]
    line = bad["text"].strip()
    with pytest.raises(pynmea2.ChecksumError):
        pynmea2.parse(line, check=True)


def test_sentence_encoder_and_checksum() -> None:
    body = "GPGGA,184353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000"
    assert nmea_sentence(body) == f"${body}*6D\r\n".encode()
    assert nmea_checksum(body) == nmea_checksum(body.encode()) == 0x6D


def test_82_character_limit_is_exact() -> None:
    # NMEA 0183 §5.3: 82 characters including $ and CR LF -> 80 before the terminator.
    body = "GPTXT,01,01,02," + "A" * (NMEA_MAX_SENTENCE - 19)
    line = nmea_sentence(body)
    assert len(line) == 82
    parser = NmeaParser()
    assert parser.feed(line) == []  # accepted (and ignored: TXT)
    assert parser.ignored["GPTXT"] == 1
    longer = nmea_sentence(body + "A")
    out = parser.feed(longer)
    assert len(out) == 1 and isinstance(out[0], FrameError)
    assert parser.stats.overflows == 1


def test_other_talkers_and_kinds_are_ignored_not_errors() -> None:
    parser = NmeaParser(talkers=frozenset({"GP"}))
    data = (
        nmea_sentence("GNRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E")
        + nmea_sentence("PUBX,41,1,0007,0003,19200,0")
        + nmea_sentence("GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E")
    )
    out = parser.feed(data)
    assert [type(o) for o in out] == [GpsFix]
    assert parser.ignored == {"GNRMC": 1, "PUBX": 1}
    assert parser.stats.errors == 0


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        ("GPGGA,184353.07,9929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000", "range"),
        ("GPGGA,184353.07,1960.000,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000", "range"),
        ("GPGGA,184353.07,1929.045,X,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000", "coordinate"),
        ("GPGGA,254353.07,1929.045,S,02410.506,E,1,04,2.6,100.00,M,-33.9,M,,0000", "time"),
        ("GPGGA,184353.07,1929.045,S,02410.506,E,9,04,2.6,100.00,M,-33.9,M,,0000", "quality"),
        ("GPGGA,184353.07,1929.045,S,02410.506,E,1,04", "fields"),
        ("GPRMC,225446,X,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E", "status"),
        ("GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,321394,020.3,E", "date"),
    ],
)
def test_malformed_fields_are_frame_errors(body: str, reason: str) -> None:
    parser = NmeaParser()
    (err,) = parser.feed(nmea_sentence(body))
    assert isinstance(err, FrameError)
    assert reason in err.reason
    assert parser.stats.errors == 1
    assert parser.stats.checksum_errors == 0


def test_whole_minutes_accepted() -> None:
    (fix,) = NmeaParser().feed(nmea_sentence("GPGGA,000000,4916,N,12311,W,1,05,0.9,5.4,M,,M,,"))
    assert isinstance(fix, GpsFix)
    assert fix.latitude == Decimal("49.2666666667")
    assert fix.longitude == Decimal("-123.1833333333")


def test_rmc_mode_n_is_not_a_valid_fix() -> None:
    (fix,) = NmeaParser().feed(
        nmea_sentence("GPRMC,225446,A,4916.45,N,12311.12,W,000.5,054.7,191194,020.3,E,N")
    )
    assert isinstance(fix, GpsFix)
    assert fix.fix_quality == 1 and not fix.valid


# ---------------------------------------------------------------- generated vs pynmea2


@st.composite
def coords(draw: st.DrawFn, width: int, limit: int, hemis: str) -> str:
    degrees = draw(st.integers(0, limit - 1))
    minutes = draw(st.integers(0, 59))
    # Receivers send 1-5 decimals of minutes; pynmea2 insists on the decimal
    # point (we also accept whole minutes, see test_whole_minutes_accepted).
    places = draw(st.integers(1, 5))
    frac = draw(st.integers(0, 10**places - 1))
    text = f"{degrees:0{width}d}{minutes:02d}.{frac:0{places}d}"
    return f"{text},{draw(st.sampled_from(hemis))}"


@st.composite
def utc_times(draw: st.DrawFn) -> str:
    hh, mm, ss = draw(st.integers(0, 23)), draw(st.integers(0, 59)), draw(st.integers(0, 59))
    frac = draw(st.sampled_from(["", ".00", ".5", ".07", ".123"]))
    return f"{hh:02d}{mm:02d}{ss:02d}{frac}"


TALKERS = st.sampled_from(["GP", "GN", "GL"])


@st.composite
def gga(draw: st.DrawFn) -> str:
    return (
        f"{draw(TALKERS)}GGA,{draw(utc_times())},{draw(coords(2, 90, 'NS'))},"
        f"{draw(coords(3, 180, 'EW'))},{draw(st.integers(0, 8))},{draw(st.integers(0, 24)):02d},"
        "0.9,545.4,M,46.9,M,,"
    )


@st.composite
def rmc(draw: st.DrawFn) -> str:
    day, month, year = draw(st.integers(1, 28)), draw(st.integers(1, 12)), draw(st.integers(0, 79))
    return (
        f"{draw(TALKERS)}RMC,{draw(utc_times())},{draw(st.sampled_from('AV'))},"
        f"{draw(coords(2, 90, 'NS'))},{draw(coords(3, 180, 'EW'))},"
        f"0.004,77.52,{day:02d}{month:02d}{year:02d},,,{draw(st.sampled_from('ADE'))}"
    )


@settings(max_examples=400, deadline=None)
@given(st.one_of(gga(), rmc()))
def test_generated_sentences_agree_with_pynmea2(body: str) -> None:
    line = nmea_sentence(body)
    (fix,) = NmeaParser().feed(line)
    assert isinstance(fix, GpsFix)
    assert fix.sentence == body[2:5]
    _assert_agrees_with_pynmea2(fix, line.decode().strip())
    # Sign convention: negative exactly for S and W.
    hemis = body.split(",")[3:7] if fix.sentence == "RMC" else body.split(",")[2:6]
    assert fix.latitude is not None and fix.longitude is not None
    assert (fix.latitude < 0) == (hemis[1] == "S" and fix.latitude != 0)
    assert (fix.longitude < 0) == (hemis[3] == "W" and fix.longitude != 0)


@settings(max_examples=200, deadline=None)
@given(st.one_of(gga(), rmc()), st.integers(0, 6), st.integers(1, 0x5E))
def test_any_corrupted_character_is_caught_by_the_checksum(
    body: str, where: int, delta: int
) -> None:
    line = bytearray(nmea_sentence(body))
    pos = 1 + where * (len(body) - 1) // 6  # somewhere between "$" and "*"
    line[pos] = 0x20 + (line[pos] - 0x20 + delta) % 0x5F  # another printable character
    if line[pos] in b"$*,":
        return  # a new delimiter changes the framing, not just the content
    parser = NmeaParser()
    out = parser.feed(bytes(line))
    assert [type(o) for o in out] == [FrameError]
    assert parser.stats.checksum_errors == 1
    # pynmea2 rejects it too (ChecksumError, or ParseError when the address broke).
    with pytest.raises(pynmea2.ParseError):
        pynmea2.parse(bytes(line).decode().strip(), check=True)


# ---------------------------------------------------------------- robustness

_GOOD = st.one_of(gga(), rmc()).map(nmea_sentence)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=50), _GOOD), max_size=10))
def test_nmea_any_bytes(parts: list[bytes]) -> None:
    data = b"".join(parts)
    parser = NmeaParser()
    out: list[object] = []
    for chunk in random_chunks(data, len(data)):
        new = parser.feed(chunk)
        assert all(isinstance(o, (GpsFix, FrameError)) for o in new)
        assert len(parser._buf) <= NMEA_MAX_SENTENCE
        out += new
    assert _feed([data])[0] == out


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.binary(max_size=20), _GOOD), max_size=6))
def test_sentences_survive_noise_without_terminators(items: list[tuple[bytes, bytes]]) -> None:
    # Noise with no CR/LF/$ glued in front of each sentence: the "$" resyncs.
    data = b"".join(junk.translate(None, b"\r\n$") + sentence for junk, sentence in items)
    out, _ = _feed(random_chunks(data, 3))
    assert [o.raw + b"\r\n" for o in out if isinstance(o, GpsFix)] == [s for _, s in items]


def test_nmea_dialect_entry() -> None:
    (d,) = nmea.DIALECTS
    assert (d.name, d.kind, d.serial.baudrate) == ("nmea", "gps", 9600)
    assert "NMEA 0183" in d.manual
    assert d.factory().dialect == "nmea"
