"""Scanner lines and seal-code classification, checked against ``biip`` (STYLE.md §13).

biip (jodal/biip, Apache-2.0) is a test-only oracle written independently of
GS1's own syntax engine; the Digital Link vectors come from the engine
(gs1/gs1-syntax-engine dl.c, device-protocols.md §4.2), so each published
case is checked three ways: our DL parser, our element-string parser on the
engine's expected output, and biip.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import biip
import pytest
from biip.checksums import gs1_standard_check_digit
from biip.gs1_application_identifiers import _GS1_APPLICATION_IDENTIFIERS
from biip.gs1_messages import GS1Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge.errors import ProtocolError
from firmware_bridge.frames import SealCode
from firmware_bridge.protocols import codes
from firmware_bridge.protocols.base import FrameError
from firmware_bridge.protocols.codes import (
    AI_FORMATS,
    GS,
    PREDEFINED_LENGTH,
    ScannerLineParser,
    classify_code,
    gs1_check_digit,
    parse_digital_link,
    parse_element_string,
    parse_hri,
)
from tests.support import assert_cut_anywhere, feed_chunks, random_chunks

CASES: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent / "fixtures" / "scanner-line" / "lines.json").read_text()
)["cases"]


def _feed(chunks: list[bytes]) -> tuple[list[object], ScannerLineParser]:
    parser = ScannerLineParser()
    return feed_chunks(parser, chunks), parser


def _pairs(elements: Any) -> list[tuple[str, str]]:
    return [(e.ai.ai, e.value) for e in elements]


# ---------------------------------------------------------------- fixture corpus


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_scanner_fixtures(case: dict[str, Any]) -> None:
    data = case["text"].encode("utf-8")
    whole, parser = _feed([data])
    assert [type(o).__name__ for o in whole] == [e["type"] for e in case["expect"]]
    for got, want in zip(whole, case["expect"], strict=True):
        for key, value in want.items():
            if key == "type":
                continue
            if key == "reason":
                assert isinstance(got, FrameError)
                assert value in got.reason
            elif key == "elements":
                assert got.elements == tuple(tuple(p) for p in value)
            else:
                assert getattr(got, key) == value, (key, got)
        if isinstance(got, SealCode):
            assert got.dialect == "scanner-line"
            assert got.raw and got.raw in data
    assert parser.stats.checksum_errors == case.get("checksum_errors", 0)
    frames = [o for o in whole if isinstance(o, SealCode)]
    assert parser.stats.frames == len(frames)
    assert_cut_anywhere(ScannerLineParser, data, whole, parser.stats)
    if frames:
        noise = b"\x00\x01\x02\r\n"
        wrapped, _ = _feed(random_chunks(noise + data + b"\x00partial", 42))
        assert [o for o in wrapped if isinstance(o, SealCode)] == frames
        assert isinstance(wrapped[0], FrameError)
        assert wrapped[0].raw == noise.rstrip()


# ---------------------------------------------------------------- AI table and check digits


def test_ai_table_agrees_with_biip() -> None:
    # Every AI we know has biip's format string and separator rule
    # (GS1 General Specifications §3.2 / Figure 7.8.5-2, transcribed independently).
    for ai, fmt in AI_FORMATS.items():
        theirs = _GS1_APPLICATION_IDENTIFIERS[ai]
        assert theirs.format == fmt, ai
        assert theirs.separator_required == (ai[:2] not in PREDEFINED_LENGTH), ai
    # Only 8043 (a format with a digit range that our notation lacks) is left out.
    assert set(_GS1_APPLICATION_IDENTIFIERS) - set(AI_FORMATS) == {"8043"}
    assert len(AI_FORMATS) > 500


def test_no_ai_is_a_prefix_of_another() -> None:
    # The parser finds an AI by trying 2, 3 and 4 digits; that is only sound
    # because the AI table is prefix-free.
    for ai in AI_FORMATS:
        assert not any(other != ai and other.startswith(ai) for other in AI_FORMATS), ai


def test_predefined_lengths_match_the_formats() -> None:
    for ai, fmt in AI_FORMATS.items():
        total = PREDEFINED_LENGTH.get(ai[:2])
        if total is not None:
            parts = fmt.split("+")
            assert len(parts) == 2 and ".." not in parts[1] and "[" not in parts[1], ai
            assert len(ai) + int(parts[1][1:]) == total, ai


def test_check_digit_published_values() -> None:
    # device-protocols.md §4.1, recomputed there.
    assert gs1_check_digit("10614141234567890") == 8
    assert gs1_check_digit("0952012345678") == 8
    assert gs1_check_digit("0061414112345") == 2


@given(st.text(alphabet="0123456789", min_size=1, max_size=30))
def test_check_digit_agrees_with_biip(payload: str) -> None:
    assert gs1_check_digit(payload) == gs1_standard_check_digit(payload)


# ---------------------------------------------------------------- element strings vs biip

# biip additionally lints these AIs with GS1 Barcode Syntax Dictionary rules
# beyond the format (country codes, 0/1 flags, date-times, 8003's leading 0,
# 8010's minimum length, 8030 padding). We check the format, check digits and
# the YYMMDD dates of 11-17, 4326, 7006 only, so generated values for these
# AIs may legitimately differ.
_LINTED_BY_BIIP = {
    "423", "425", "4307", "4317", "4321", "4322", "4323", "4324", "4325",
    "7003", "7007", "7011", "7250", "7251", "7258", "8003", "8008", "8010", "8030",
}  # fmt: skip
_GEN_AIS = sorted(set(AI_FORMATS) - _LINTED_BY_BIIP)


def _fix_value(ai: str, value: str) -> str:
    spec = codes._AIS[ai]
    if spec.check_digits:
        n = len(value) if spec.check_digits < 0 else spec.check_digits
        value = value[: n - 1] + str(gs1_standard_check_digit(value[: n - 1])) + value[n:]
    if spec.date:
        value = f"{value[:2]}{int(value[2:4]) % 12 + 1:02d}{int(value[4:6]) % 29:02d}"
    return value


@st.composite
def element_strings(draw: st.DrawFn) -> list[tuple[str, str]]:
    ais = draw(st.lists(st.sampled_from(_GEN_AIS), min_size=1, max_size=5, unique=True))
    out = []
    for ai in ais:
        raw = draw(st.from_regex(codes._AIS[ai].pattern, fullmatch=True))
        out.append((ai, _fix_value(ai, raw)))
    return out


def _concatenate(elements: list[tuple[str, str]]) -> str:
    # §7.8.5: FNC1 after every element whose AI is not of predefined length, except the last.
    text = ""
    for i, (ai, value) in enumerate(elements):
        text += ai + value
        if i < len(elements) - 1 and ai[:2] not in PREDEFINED_LENGTH:
            text += GS
    return text


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(element_strings(), st.sampled_from(["]C1", "]d2", "]Q3", "]e0", "]J1"]))
def test_generated_element_strings_agree_with_biip(
    elements: list[tuple[str, str]], aim: str
) -> None:
    text = _concatenate(elements)
    code = classify_code(aim + text)
    assert code.kind == "gs1"
    assert code.symbology == aim
    assert list(code.elements) == elements
    assert code.text == "".join(f"({ai}){v}" for ai, v in elements)
    # biip does not know DotCode's ]J1, so it is always given GS1-128's ]C1.
    result = biip.parse("]C1" + text)
    assert result.gs1_message is not None, result.gs1_message_error
    assert _pairs(result.gs1_message.element_strings) == elements
    # A leading FNC1 and a trailing one change nothing (§7.8.4).
    assert parse_element_string(GS + text + GS) == code.elements


_KEY_AIS = st.sampled_from(["00", "01", "02", "03", "410", "411", "412", "413", "414", "415"])


@settings(max_examples=200, deadline=None)
@given(_KEY_AIS, st.data())
def test_check_digit_failures_agree_with_biip(ai: str, data: st.DataObject) -> None:
    size = 18 if ai == "00" else 14 if ai[0] == "0" else 13
    payload = data.draw(st.text(alphabet="0123456789", min_size=size - 1, max_size=size - 1))
    good = gs1_standard_check_digit(payload)
    wrong = data.draw(st.integers(0, 9).filter(lambda d: d != good))
    text = f"{ai}{payload}{wrong}"
    with pytest.raises(ProtocolError, match="check digit"):
        classify_code("]C1" + text)
    element = biip.parse("]C1" + text).gs1_message.element_strings[0]  # type: ignore[union-attr]
    assert element.gtin_error or element.sscc_error or element.gln_error
    # Undeclared (no AIM identifier): a numeric serial, not an error.
    assert classify_code(text).kind == "opaque"
    assert classify_code(f"{ai}{payload}{good}").kind == "gs1"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("]C1", "empty code"),
        ("]C1019520123456788", "truncated"),  # 13 digits where (01) has 14
        ("]C11712133110ABC", "month 13"),
        ("]C11717023010ABC", "day 30"),
        ("]C199" + "A" * 91, "format"),
        ("]C110" + "A" * 21, "format"),  # no FNC1: lot longer than an..20
        ("]C10109520123456788\x1d10A\x1d10B", "repeats"),
        ("]C1" + "8043" + "1" * 18, "unknown GS1 Application Identifier"),
        ("]E0123", "not a GTIN"),
    ],
)
def test_declared_gs1_faults_are_typed_errors(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        classify_code(text)


def test_leap_day_needs_a_leap_year() -> None:
    with pytest.raises(ProtocolError, match="day 29"):
        classify_code("]C117170229")
    assert classify_code("]C117160229").elements == (("17", "160229"),)
    assert classify_code("]C117170200").elements == (("17", "170200"),)  # DD 00 = end of month


# ---------------------------------------------------------------- the bracketed form


def test_typed_sscc_with_a_wrong_check_digit_is_refused_in_every_form() -> None:
    # The SSCC of GS1 General Specifications' examples has check digit 2 (recomputed by
    # test_check_digit_published_values' method); 6 is a misread.
    wrong = "00" + "061414112345678906"
    for text in (hri(wrong), "]C1" + wrong, f"(00) {wrong[2:]}"):
        with pytest.raises(ProtocolError, match="check digit wrong: expected 2, got 6"):
            classify_code(text)
    (element,) = GS1Message.parse_hri(hri(wrong)).element_strings
    assert element.sscc_error is not None and "Expected 2, got 6" in element.sscc_error
    good = classify_code(hri("00061414112345678902"))
    assert (good.kind, good.elements) == ("gs1", (("00", "061414112345678902"),))


def hri(element_string: str) -> str:
    """One fixed-length element string (AI 00/01) in the bracketed form."""
    return f"({element_string[:2]}){element_string[2:]}"


def _no_brackets(elements: list[tuple[str, str]]) -> bool:
    # A value holding "(" cannot be told from the next AI in the bracketed form (§4.15).
    return not any("(" in v or ")" in v for _, v in elements)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(element_strings().filter(_no_brackets), st.booleans())
def test_generated_bracketed_codes_agree_with_biip_and_the_aim_form(
    elements: list[tuple[str, str]], spaced: bool
) -> None:
    sep = " " if spaced else ""
    text = sep.join(f"({ai}){sep}{value}" for ai, value in elements)
    code = classify_code(text)
    assert (code.kind, list(code.elements)) == ("gs1", elements)
    assert code.text == "".join(f"({ai}){v}" for ai, v in elements)
    assert classify_code("]C1" + _concatenate(elements)).elements == code.elements
    assert _pairs(GS1Message.parse_hri(text).element_strings) == elements


@settings(max_examples=200, deadline=None)
@given(_KEY_AIS, st.data())
def test_bracketed_check_digit_failures_agree_with_biip(ai: str, data: st.DataObject) -> None:
    size = 18 if ai == "00" else 14 if ai[0] == "0" else 13
    payload = data.draw(st.text(alphabet="0123456789", min_size=size - 1, max_size=size - 1))
    good = gs1_standard_check_digit(payload)
    wrong = data.draw(st.integers(0, 9).filter(lambda d: d != good))
    with pytest.raises(ProtocolError, match="check digit"):
        classify_code(f"({ai}){payload}{wrong}")
    (element,) = GS1Message.parse_hri(f"({ai}){payload}{wrong}").element_strings
    assert element.gtin_error or element.sscc_error or element.gln_error
    assert parse_hri(f"({ai}){payload}{good}") == ((ai, f"{payload}{good}"),)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("(01)0952012345678", "does not match format"),  # 13 digits where (01) has 14
        ("(01)095201234567881", "does not match format"),  # 15: the AI's length is fixed
        ("(00)06141411234567890", "does not match format"),  # 17 digits, SSCC has 18
        ("(10)" + "A" * 21, "does not match format"),  # lot longer than an..20
        ("(8043)1", "unknown GS1 Application Identifier"),
        ("(10)", "has no value"),
        ("(01)09520123456788(10)", "has no value"),
        ("(01)09520123456788 junk", "does not match format"),
        ("(17)171302", "month 13"),
        ("(01)09520123456788(01)09520123456795", "repeats"),
    ],
)
def test_bracketed_faults_are_typed_errors(text: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        classify_code(text)


def test_brackets_that_are_no_ai_are_not_gs1() -> None:
    # Only "(" + 2-4 digits + ")" at the start is the bracketed GS1 form.
    for text in ("(1)SEAL-9", "(SEAL)123", "SEAL(01)09520123456788", "(12345)X"):
        assert classify_code(text).kind == "opaque"


# ---------------------------------------------------------------- Digital Link

# gs1/gs1-syntax-engine dl.c "Examples from DL specification" (device-protocols.md §4.2):
# URI -> element string with ^ for FNC1.
ENGINE_DL = [
    ("https://id.gs1.org/01/09520123456788", "^0109520123456788"),
    ("https://id.gs1.org/01/09520123456788/22/2A", "^0109520123456788222A"),
    ("https://id.gs1.org/01/09520123456788/10/ABC123", "^010952012345678810ABC123"),
    ("https://id.gs1.org/01/09520123456788/21/12345", "^01095201234567882112345"),
    (
        "https://id.gs1.org/01/09520123456788/10/ABC1/21/12345?17=180426",
        "^010952012345678810ABC1^2112345^17180426",
    ),
    (
        "https://id.gs1.org/01/09520123456788?3103=000195&3922=0299&17=201225",
        "^0109520123456788310300019539220299^17201225",
    ),
    ("https://id.gs1.org/00/952012345678912345", "^00952012345678912345"),
    (
        "https://id.gs1.org/00/952012345678912345?02=09520123456788&37=25&10=ABC123",
        "^0095201234567891234502095201234567883725^10ABC123",
    ),
    ("https://id.gs1.org/414/9520123456788/254/32a%2Fb", "^414952012345678825432a/b"),
    (
        "https://example.com/8004/9520614141234567?01=9520123456788",
        "^80049520614141234567^0109520123456788",
    ),
]


@pytest.mark.parametrize(("uri", "element_string"), ENGINE_DL, ids=[u for u, _ in ENGINE_DL])
def test_engine_digital_link_examples(uri: str, element_string: str) -> None:
    code = classify_code(uri)
    assert code.kind == "digital_link"
    assert code.text == uri
    assert code.elements == parse_element_string(element_string.replace("^", GS))
    result = biip.parse(uri)
    if "?01=9520123456788" in uri:
        # The engine pads a 13-digit GTIN in the query; biip rejects it. We follow GS1.
        assert result.gs1_digital_link_uri is None
    else:
        assert result.gs1_digital_link_uri is not None
        assert _pairs(result.gs1_digital_link_uri.element_strings) == list(code.elements)


@pytest.mark.parametrize(
    ("uri", "elements"),
    [
        # gs1-syntax-engine accept cases: percent escapes, custom stems, unknown
        # non-AI parameters and fragments ignored.
        ("https://id.gs1.org/01/09520123456788/10/ABC%2d123", [("10", "ABC-123")]),
        ("https://example.com/stem/00/106141412345678908", []),
        ("https://id.gs1.org/01/09520123456788?foo=bar&17=201225", [("17", "201225")]),
        ("https://id.gs1.org/01/09520123456788#frag", []),
        ("HTTPS://id.gs1.org/01/9520123456788", []),  # GTIN-13 padded to 14
        # biip's fixture (jodal/biip tests/test_gs1_digital_link_uris.py).
        (
            "https://id.gs1.org/00/106141412345678908?02=00614141123452&37=25&10=ABC123",
            [("02", "00614141123452"), ("37", "25"), ("10", "ABC123")],
        ),
    ],
)
def test_digital_link_accepts(uri: str, elements: list[tuple[str, str]]) -> None:
    got = parse_digital_link(uri)
    assert got is not None
    assert list(got[1:]) == elements
    assert got[0][0] in ("00", "01")


@pytest.mark.parametrize(
    ("uri", "reason"),
    [
        # gs1-syntax-engine reject cases and biip's error fixtures.
        ("https://id.gs1.org/01/09520123456788?10=ABC123", "belongs in the Digital Link path"),
        ("https://id.gs1.org/01/09520123456788?17=201225&17=201225", "twice"),
        ("https://id.gs1.org/01/09520123456788?9999=1", "unknown AI"),
        ("https://id.gs1.org/01/09520123456788/", "trailing"),
        ("https://id.gs1.org/01/09520123456788?17=", "empty value"),
        ("https://id.gs1.org/01/09520123456788/15/200101", "not allowed"),  # biip: '15' qualifier
        ("https://id.gs1.org/00/106141412345678908/10/ABC", "not allowed"),  # SSCC: no qualifier
        ("https://id.gs1.org/01/09520123456788/21/1/10/2", "not allowed"),  # order 22 -> 10 -> 21
        ("https://id.gs1.org/01/09520123456788/10", "pairs"),  # odd number of segments
        ("https://id.gs1.org/01/09520123456789", "check digit"),
        ("https://id.gs1.org/01/09520123456788?17=201332", "month 13"),
    ],
)
def test_digital_link_rejects(uri: str, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        parse_digital_link(uri)
    with pytest.raises(ProtocolError, match=reason):
        classify_code(uri)


@pytest.mark.parametrize(
    "uri",
    [
        "https://verify.example.com/seal/ZA0012345",
        "https://id.gs1.org/01/notagtin",  # no key AI followed by a value in its format
        "ftp://id.gs1.org/01/09520123456788",
        "https:///01/09520123456788",
    ],
)
def test_urls_that_are_not_digital_links_are_opaque(uri: str) -> None:
    assert parse_digital_link(uri) is None
    assert classify_code(uri).kind == "opaque"


_CSET82 = st.text(alphabet=st.sampled_from(codes._CHARSETS["X"][1:-1]), min_size=1).filter(bool)
_X20 = st.from_regex(codes._AIS["10"].pattern, fullmatch=True)
_QUERY_AIS = ["11", "13", "15", "17", "3103", "3922", "37", "400", "8200"]


@st.composite
def digital_links(draw: st.DrawFn) -> tuple[str, list[tuple[str, str]]]:
    payload = draw(st.text(alphabet="0123456789", min_size=13, max_size=13))
    gtin = payload + str(gs1_standard_check_digit(payload))
    elements = [("01", gtin)]
    path = f"/01/{gtin}"
    for q in ("22", "10", "21"):
        if draw(st.booleans()):
            value = draw(_X20)
            elements.append((q, value))
            path += f"/{q}/{quote(value, safe='')}"
    query = []
    for ai in draw(st.lists(st.sampled_from(_QUERY_AIS), unique=True, max_size=3)):
        value = _fix_value(ai, draw(st.from_regex(codes._AIS[ai].pattern, fullmatch=True)))
        elements.append((ai, value))
        query.append(f"{ai}={quote(value, safe='')}")
    host = draw(st.sampled_from(["https://id.gs1.org", "https://example.com/some/stem"]))
    return host + path + ("?" + "&".join(query) if query else ""), elements


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(digital_links())
def test_generated_digital_links_agree_with_biip(
    case: tuple[str, list[tuple[str, str]]],
) -> None:
    uri, elements = case
    code = classify_code(uri)
    assert code.kind == "digital_link"
    assert list(code.elements) == elements
    result = biip.parse(uri)
    assert result.gs1_digital_link_uri is not None, result.gs1_digital_link_uri_error
    assert _pairs(result.gs1_digital_link_uri.element_strings) == elements


# ---------------------------------------------------------------- classification decisions


def test_camera_symbology_names_pass_through() -> None:
    code = classify_code("ZA-H-0012345", "QRCODE")
    assert (code.kind, code.symbology, code.text, code.dialect) == (
        "opaque",
        "QRCODE",
        "ZA-H-0012345",
        "",
    )
    # An AIM identifier in the text wins over the decoder's name.
    assert classify_code("]C1" + "00106141412345678908", "CODE128").symbology == "]C1"


def test_fnc1_in_the_text_declares_gs1_even_without_aim() -> None:
    code = classify_code("010952012345678810ABC\x1d2112345")
    assert code.kind == "gs1"
    with pytest.raises(ProtocolError, match="check digit"):
        classify_code("010952012345678910ABC\x1d2112345")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=120), st.one_of(st.none(), st.sampled_from(["]C1", "]Q1", "QRCODE"])))
def test_classify_any_text_is_a_code_or_typed_error(text: str, symbology: str | None) -> None:
    try:
        code = classify_code(text, symbology)
    except ProtocolError:
        return
    assert code.kind in ("gs1", "digital_link", "opaque")
    assert code.text
    if code.kind == "opaque":
        assert code.text.isprintable()
        assert code.elements == ()
    else:
        assert code.elements


# ---------------------------------------------------------------- parser properties


def test_line_longer_than_a_qr_code_is_dropped_and_counted() -> None:
    parser = ScannerLineParser()
    out = parser.feed(b"A" * 5000 + b"\r\nSEAL-1\r\n")
    assert isinstance(out[0], FrameError)
    assert "buffer limit" in out[0].reason
    assert out[1] == SealCode("SEAL-1", "opaque", dialect="scanner-line", raw=b"SEAL-1")
    assert parser.stats.overflows == 1
    assert parser.stats.dropped_bytes == 5000


def test_non_utf8_line_is_a_frame_error() -> None:
    parser = ScannerLineParser()
    (err,) = parser.feed(b"\xff\xfeSEAL\r\n")
    assert isinstance(err, FrameError)
    assert "UTF-8" in err.reason
    assert parser.stats.errors == 1


_SCANNER_LINES = st.sampled_from([c["text"].encode() for c in CASES])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.binary(max_size=60), _SCANNER_LINES), max_size=10))
def test_scanner_any_bytes(parts: list[bytes]) -> None:
    data = b"".join(parts)
    parser = ScannerLineParser()
    out: list[object] = []
    for chunk in random_chunks(data, len(data)):
        new = parser.feed(chunk)
        assert all(isinstance(o, (SealCode, FrameError)) for o in new)
        assert len(parser._buf) <= parser.max_line
        out += new
    assert _feed([data])[0] == out


def test_scanner_dialect_entry() -> None:
    (d,) = codes.DIALECTS
    assert (d.name, d.kind, d.serial.baudrate) == ("scanner-line", "scanner", 9600)
    assert "GS1 General Specifications" in d.manual
    assert d.factory().dialect == "scanner-line"
