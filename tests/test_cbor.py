"""custody.cbor against RFC 8949 Appendix A (cbor/test-vectors) and §4.2.1.

The encoder must reproduce every Appendix A encoding that lies in our subset,
byte for byte; the strict decoder must accept exactly those and refuse with
``DecodeError`` everything else the appendix contains (floats, tags, simple
values, bignums, indefinite lengths), whatever the file's ``roundtrip`` flag.
"""

from __future__ import annotations

import json
import time
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from custody.cbor import MAX_DEPTH, Tag, decode, decode_lenient, encode
from custody.errors import DecodeError

VECTORS = Path(__file__).parent / "vectors" / "cbor" / "appendix_a.json"

INT_MIN = -(2**64)
INT_MAX = 2**64 - 1

# Entries that carry only "diagnostic" notation but whose value is in our subset.
DIAGNOSTIC_VALUES: dict[str, Any] = {
    "{1: 2, 3: 4}": {1: 2, 3: 4},
    "h''": b"",
    "h'01020304'": b"\x01\x02\x03\x04",
}


def _load_vectors() -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return entries


def _in_subset(value: Any) -> bool:
    """True for values our deterministic subset can represent."""
    if value is None or isinstance(value, bool | str | bytes):
        return True
    if isinstance(value, int):
        return INT_MIN <= value <= INT_MAX
    if isinstance(value, list):
        return all(_in_subset(v) for v in value)
    if isinstance(value, dict):
        return all(
            isinstance(k, int | str | bytes) and not isinstance(k, bool) and _in_subset(v)
            for k, v in value.items()
        )
    return False  # floats and anything else


def _value_of(entry: dict[str, Any]) -> tuple[bool, Any]:
    """(known, value) for an Appendix A entry."""
    if "decoded" in entry:
        return True, entry["decoded"]
    if entry.get("diagnostic") in DIAGNOSTIC_VALUES:
        return True, DIAGNOSTIC_VALUES[entry["diagnostic"]]
    return False, None


def _indefinite(data: bytes) -> bool:
    # Additional information 31 on a byte/text string, array or map head.
    return data[0] in (0x5F, 0x7F, 0x9F, 0xBF)


def _classify() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    accepted, rejected = [], []
    for entry in _load_vectors():
        known, value = _value_of(entry)
        data = bytes.fromhex(entry["hex"])
        if entry["roundtrip"] and known and _in_subset(value) and not _indefinite(data):
            accepted.append(entry)
        else:
            rejected.append(entry)
    return accepted, rejected


def strict_equal(a: Any, b: Any) -> bool:
    """Equality that also distinguishes True from 1 and bytes from str."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(strict_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        if len(a) != len(b):
            return False
        bk = {(type(k), k): k for k in b}
        for k, v in a.items():
            if (type(k), k) not in bk or not strict_equal(v, b[bk[(type(k), k)]]):
                return False
        return True
    return bool(a == b)


ACCEPTED, REJECTED = _classify() if VECTORS.exists() else ([], [])


def test_vector_file_partition_is_what_we_expect() -> None:
    entries = _load_vectors()
    accepted, rejected = _classify()
    assert len(entries) == 82
    # 37 in-subset round-trip entries; the other 45 (floats, tags, simple values,
    # bignums, undefined, and indefinite lengths) must be refused.
    assert len(accepted) == 37
    assert len(rejected) == 45
    assert {e["hex"] for e in accepted} >= {"a201020304", "40", "4401020304", "1bffffffffffffffff"}
    assert {"5f42010243030405ff", "7f657374726561646d696e67ff", "c249010000000000000000"} <= {
        e["hex"] for e in rejected
    }


@pytest.mark.parametrize("entry", ACCEPTED, ids=lambda e: e["hex"][:24])
def test_appendix_a_in_subset_encodes_and_decodes(entry: dict[str, Any]) -> None:
    _, value = _value_of(entry)
    data = bytes.fromhex(entry["hex"])
    assert encode(value) == data
    assert strict_equal(decode(data), value)


@pytest.mark.parametrize("entry", REJECTED, ids=lambda e: e["hex"][:24])
def test_appendix_a_outside_subset_is_refused(entry: dict[str, Any]) -> None:
    data = bytes.fromhex(entry["hex"])
    with pytest.raises(DecodeError):
        decode(data)


@pytest.mark.parametrize(
    "entry",
    [e for e in REJECTED if _value_of(e)[0] and not _in_subset(_value_of(e)[1])],
    ids=lambda e: e["hex"][:24],
)
def test_appendix_a_values_outside_subset_cannot_be_encoded(entry: dict[str, Any]) -> None:
    # Floats and 65-bit integers are programming errors on the encode side.
    with pytest.raises(TypeError):
        encode(_value_of(entry)[1])


def test_rfc8949_4_2_1_key_order_example() -> None:
    # RFC 8949 §4.2.1: 10, 100, -1, "z", "aa", [100], [-1] (then false, which
    # is outside our subset). Arrays as keys are tuples in Python.
    keys: list[Any] = [(-1,), "aa", -1, 100, (100,), "z", 10]
    expected_order = ["0a", "1864", "20", "617a", "626161", "811864", "8120"]
    for rotation in range(len(keys)):
        rotated = keys[rotation:] + keys[:rotation]
        data = encode({k: 0 for k in rotated})
        assert data == bytes.fromhex("a7" + "".join(k + "00" for k in expected_order))
    assert decode(data) == {10: 0, 100: 0, -1: 0, "z": 0, "aa": 0, (100,): 0, (-1,): 0}


def _keys_in_keys(levels: int) -> bytes:
    """{["k", {["k", ... {["k", 0]: 1} ...]: 1}]: 1}: each level a map and an array key."""
    return b"\xa1\x82\x61k" * levels + b"\x00" + b"\x01" * levels


def test_keys_nested_in_keys_decode_in_linear_time() -> None:
    # A decoder that orders each level's key twice doubles the work per level (20 levels of
    # 4 bytes each take over a minute); ordering each key once keeps this linear. 16 levels
    # (32 containers) is within MAX_DEPTH.
    t0 = time.perf_counter()
    value = decode(_keys_in_keys(MAX_DEPTH // 2))
    assert time.perf_counter() - t0 < 1
    assert encode(value) == _keys_in_keys(MAX_DEPTH // 2)


def _with_stack(frames: int, fn: Callable[[], Any]) -> Any:
    return fn() if frames == 0 else _with_stack(frames - 1, fn)


@pytest.mark.parametrize("caller_frames", [0, 600])
def test_nesting_is_bounded_whatever_the_callers_stack(caller_frames: int) -> None:
    # The same bytes are accepted or refused wherever decode is called from: refused past
    # MAX_DEPTH with a DecodeError, never a RecursionError.
    ok = b"\x81" * MAX_DEPTH + b"\x00"
    assert _with_stack(caller_frames, lambda: decode(ok)) is not None
    for deep in (b"\x81" * (MAX_DEPTH + 1) + b"\x00", b"\x81" * 399 + b"\x00",
                 _keys_in_keys(MAX_DEPTH // 2 + 1), _keys_in_keys(199)):  # fmt: skip
        with pytest.raises(DecodeError):
            _with_stack(caller_frames, lambda data=deep: decode(data))


class _Sentinel:
    pass


# cbor2 5.x's C decoder leaks the chained error it raises for invalid UTF-8 and for bad
# contents of tags 1, 30, 35, 36 and 37, and with it every frame of the stack that called it
# (and their buffers): outside bytes like these must never reach it.
@pytest.mark.parametrize(
    "data",
    [b"\x62\xff\xfe", b"\xa1\x62\xc3\x28\x00", b"\xc1\x1b" + b"\xff" * 8,
     b"\xd8\x1e\x80", b"\xd8\x23\x01", b"\xd8\x24\x01", b"\xd8\x25\x41\x00"],
)  # fmt: skip
def test_a_refused_input_keeps_nothing_of_its_caller_alive(data: bytes) -> None:
    refs: list[weakref.ref[_Sentinel]] = []

    def caller() -> None:
        local = _Sentinel()
        refs.append(weakref.ref(local))
        with pytest.raises(DecodeError):
            decode(data, allow_tags=(18,))

    caller()
    assert refs[0]() is None


def test_the_lenient_decoder_reads_non_canonical_cbor_but_screens_it() -> None:
    # Unsorted keys and a non-shortest integer: refused by decode, read by decode_lenient.
    assert decode_lenient(b"\xa2\x63seq\x18\x07\x61a\x01") == {"seq": 7, "a": 1}
    assert decode_lenient(b"\xd2\x80", allow_tags=(18,)) == Tag(18, [])
    for data in (b"\xa1\x63seq\x62\xff\xfe", b"\xc1\x1b" + b"\xff" * 8, b"\x9f\xff", b"",
                 b"\x81" * (MAX_DEPTH + 1) + b"\x00"):  # fmt: skip
        refs: list[weakref.ref[_Sentinel]] = []

        def caller(data: bytes = data, refs: list[weakref.ref[_Sentinel]] = refs) -> None:
            local = _Sentinel()
            refs.append(weakref.ref(local))
            with pytest.raises(DecodeError):
                decode_lenient(data)

        caller()
        assert refs[0]() is None


def test_false_as_map_key_is_outside_the_subset() -> None:
    with pytest.raises(TypeError):
        encode({10: 0, False: 0})
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("a1f400"))  # {false: 0}


def test_bytewise_order_differs_from_cbor2_canonical_length_first() -> None:
    # standards.md §2.6: keys 4, -1, 394. §4.2.1 bytewise: 04, 19018a, 20.
    headers = {4: b"k", -1: 6, 394: 1}
    ours = encode(headers)
    assert ours == bytes.fromhex("a3" + "04416b" + "19018a01" + "2006")
    length_first = cbor2.dumps(headers, canonical=True)
    assert length_first == bytes.fromhex("a3" + "04416b" + "2006" + "19018a01")
    with pytest.raises(DecodeError):
        decode(length_first)
    assert decode(ours) == headers


@pytest.mark.parametrize(
    "hexdata",
    ["0000", "a000", "f6f6", "8001", "6161ff", "d28440a04040" + "00"],
)
def test_trailing_bytes_rejected(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(hexdata))


@pytest.mark.parametrize(
    "hexdata",
    [
        "1817",  # 23 with a one-byte argument
        "190017",
        "1a00000017",
        "1b0000000000000017",
        "1900ff",  # 255 in two bytes
        "3817",  # -24 with a one-byte argument
        "390000",  # -1 in two bytes
        "580100",  # one-byte bstr with a one-byte length head
        "780161",  # "a" with a one-byte length head
        "980100",  # [0] with a one-byte length head
        "b8010000",  # {0: 0} with a one-byte length head
        "d8126140",  # tag 18 with a one-byte argument
    ],
)
def test_non_shortest_heads_rejected(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(hexdata), allow_tags=(18,))


@pytest.mark.parametrize(
    "hexdata",
    [
        "a201000100",  # {1: 0, 1: 0}
        "a201000101",  # {1: 0, 1: 1}
        "a2616100616101",  # {"a": 0, "a": 1}
        "a2410000410001",  # {h'00': 0, h'00': 1}
    ],
)
def test_duplicate_map_keys_rejected(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(hexdata))


@pytest.mark.parametrize(
    "hexdata",
    [
        "a203040102",  # {3: 4, 1: 2}
        "a2616201616100",  # {"b": 1, "a": 0}
        "a220000100",  # {-1: 0, 1: 0}: 0x20 sorts after 0x01
        "a262616100616201",  # {"aa": 0, "b": 1}: "b" (0x6162) sorts first
    ],
)
def test_unsorted_maps_rejected(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(hexdata))


def test_unsorted_map_inside_an_array_key_rejected() -> None:
    # {[{2: 0, 1: 0}]: 0}: the nested map inside the key is out of order.
    with pytest.raises(DecodeError):
        decode(bytes.fromhex("a181a20200010000"))
    canonical = bytes.fromhex("a181a20100020000")
    assert encode(decode(canonical)) == canonical


@pytest.mark.parametrize(
    "hexdata",
    [
        "c5821bffffffffffffffff01",  # bigfloat: decimal.Overflow inside cbor2
        "c4821b7fffffffffffffff01",  # decimal fraction: decimal.InvalidOperation
        "c4820000",  # decimal fraction 0
        "d8236128",  # tag 35 regex "(" (invalid)
        "d8254100",  # tag 37 UUID of one byte
        "d9d9f700",  # self-described CBOR
        "c11a514b67b0",  # epoch date
        "d81d00",  # shared reference
        "9bffffffffffffffff",  # array of 2^64-1 items
        "5bffffffffffffffff",  # byte string of 2^64-1 bytes
        "81" * 1000 + "00",  # nesting deeper than cbor2 allows
        "f97e00",  # NaN
        "f7",  # undefined
        "",  # empty
        "1c",  # reserved additional information
        "ff",  # lone break
    ],
)
def test_hostile_inputs_raise_decode_error_only(hexdata: str) -> None:
    with pytest.raises(DecodeError):
        decode(bytes.fromhex(hexdata))


def test_tags_only_when_allowed() -> None:
    data = encode(Tag(18, [b"", {}, b"", b""]))
    assert data == bytes.fromhex("d28440a04040")
    with pytest.raises(DecodeError):
        decode(data)
    assert decode(data, allow_tags=(18,)) == Tag(18, [b"", {}, b"", b""])
    with pytest.raises(DecodeError):
        decode(encode(Tag(998, 0)), allow_tags=(18,))


def test_decode_refuses_non_bytes() -> None:
    with pytest.raises(DecodeError):
        decode("a0")


def test_integer_range_edges() -> None:
    assert encode(INT_MAX) == bytes.fromhex("1bffffffffffffffff")
    assert encode(INT_MIN) == bytes.fromhex("3bffffffffffffffff")
    for bad in (INT_MAX + 1, INT_MIN - 1):
        with pytest.raises(TypeError):
            encode(bad)


# --- properties -------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=INT_MIN, max_value=INT_MAX)
    | st.binary(max_size=40)
    | st.text(max_size=20)
)
_keys = (
    st.integers(min_value=INT_MIN, max_value=INT_MAX) | st.text(max_size=8) | st.binary(max_size=8)
)
subset_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(_keys, children, max_size=5),
    max_leaves=25,
)


@given(subset_values)
@settings(max_examples=400)
def test_property_round_trip(value: Any) -> None:
    data = encode(value)
    assert strict_equal(decode(data), value)
    assert encode(decode(data)) == data


def _head(major: int, arg: int, width: int | None) -> bytes:
    """A CBOR head with ``arg`` in a chosen (possibly non-shortest) width."""
    if width is None:
        if arg < 24:
            return bytes([major << 5 | arg])
        width = 1 if arg < 2**8 else 2 if arg < 2**16 else 4 if arg < 2**32 else 8
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | ai]) + (arg % 2 ** (8 * width)).to_bytes(width, "big")


_INTERESTING_TAGS = [0, 1, 2, 3, 4, 5, 18, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 256, 258, 260]


@st.composite
def cbor_like(draw: st.DrawFn, depth: int = 0) -> bytes:
    """Mostly well-formed CBOR with hostile details: odd widths, tags, floats, breaks."""
    kind = draw(st.integers(0, 9 if depth < 3 else 4))
    width = draw(st.sampled_from([None, None, None, 1, 2, 4, 8]))
    if kind == 0:
        return _head(draw(st.sampled_from([0, 1])), draw(st.integers(0, 2**64 - 1)), width)
    if kind == 1:
        payload = draw(st.binary(max_size=12))
        return _head(draw(st.sampled_from([2, 3])), len(payload), width) + payload
    if kind == 2:
        return draw(st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf0", b"\xf8\xff"]))
    if kind == 3:
        head, size = draw(st.sampled_from([(b"\xf9", 2), (b"\xfa", 4), (b"\xfb", 8)]))
        return head + draw(st.binary(min_size=size, max_size=size))
    if kind == 4:
        return draw(st.binary(max_size=3))  # raw noise, including breaks and reserved bytes
    if kind in (5, 6):
        items = draw(st.lists(cbor_like(depth + 1), max_size=4))
        indefinite = draw(st.booleans()) and draw(st.booleans())
        head = b"\x9f" if indefinite else _head(4, len(items), width)
        return head + b"".join(items) + (b"\xff" if indefinite else b"")
    if kind in (7, 8):
        pairs = draw(st.lists(st.tuples(cbor_like(depth + 1), cbor_like(depth + 1)), max_size=3))
        return _head(5, len(pairs), width) + b"".join(k + v for k, v in pairs)
    tag = draw(st.sampled_from(_INTERESTING_TAGS) | st.integers(0, 2**64 - 1))
    return _head(6, tag, width) + draw(cbor_like(depth + 1))


def _decode_or_decode_error(data: bytes) -> None:
    try:
        value = decode(data, allow_tags=(18,))
    except DecodeError:
        return
    # Accepted input must be the one canonical encoding of what it decodes to.
    assert encode(value) == data


@given(st.binary(max_size=64))
@settings(max_examples=1000)
def test_property_arbitrary_bytes_decode_or_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)


@given(cbor_like())
@settings(max_examples=1500)
def test_property_cbor_like_bytes_decode_or_decode_error(data: bytes) -> None:
    _decode_or_decode_error(data)
