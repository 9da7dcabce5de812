"""Deterministic CBOR (RFC 8949 §4.2.1) for the subset our records use.

Theory of operation. We encode with cbor2's C encoder, but first rebuild every
map with its keys in bytewise order of their encodings (§4.2.1 "core
deterministic encoding"). cbor2's own ``canonical=True`` is the *length-first*
order of RFC 7049 §3.9 / RFC 8949 §4.2.3, which differs from §4.2.1 as soon as
keys have different encoded lengths (e.g. ``4, 394, -1``), so we do not use it.
cbor2 already emits shortest-form integer and length heads and definite lengths.

Decoding is strict by round trip: decode with cbor2, re-encode with ``encode``,
and accept only if the bytes are identical. That one rule rejects trailing
bytes, indefinite lengths, non-shortest heads, unsorted or duplicate map keys
and anything outside the subset.

Before cbor2 sees the bytes, one pass over the item heads (``_screen``) refuses
what the subset excludes and cbor2 would otherwise build first: tags not allowed,
floats and simple values, indefinite lengths, text that is not UTF-8, nesting
deeper than ``MAX_DEPTH``, truncation and trailing bytes. Besides failing early,
this keeps outside bytes away from cbor2 5.x's C decoder where it fails with a
chained error (invalid UTF-8; bad tag 1, 30, 35, 36, 37 contents): that path
leaks the error, and with it every frame and buffer of the stack that called
``loads`` (agronholm/cbor2 issue 257).

The subset (enough for COSE and our payloads): unsigned/negative integers in
64-bit range, byte strings, text strings, arrays, maps with int/str/bytes keys,
booleans, null, and the tags a caller allows (COSE_Sign1 is tag 18). Floats are
excluded on purpose: masses are integers in fixed units.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import Any

import cbor2

from custody.errors import DecodeError

__all__ = ["MAX_DEPTH", "Tag", "decode", "decode_lenient", "encode"]

# RFC 8949 §3.1: major types 0/1 carry an argument of at most 64 bits.
_INT_MIN = -(2**64)
_INT_MAX = 2**64 - 1
# Arrays, maps and tags nested in one another (a map key counts as inside its map). Our
# records nest 4 deep at most. The canonical check recurses per level, about 5 Python frames
# for a map in an array key, so cbor2's own limit of 400 would let the outcome depend on how
# deep the caller's stack already is (RecursionError); 32 keeps it well clear, and keeps the
# re-encoding of nested keys, quadratic in their depth, cheap.
MAX_DEPTH = 32

Tag = cbor2.CBORTag


def encode(obj: Any) -> bytes:
    """Encode ``obj`` in RFC 8949 §4.2.1 core deterministic encoding."""
    try:
        return cbor2.dumps(_ordered(obj, frozenset(), allow_any_tag=True))
    except _Unsupported as exc:
        # Our own code built a value outside the subset: a programming error.
        raise TypeError(f"cannot encode deterministically: {exc}") from exc


def decode(data: bytes, *, allow_tags: Iterable[int] = ()) -> Any:
    """Decode ``data``, accepting only its one deterministic encoding.

    Raises ``DecodeError`` for malformed input, trailing bytes, any
    non-canonical encoding, floats, and tags not in ``allow_tags``.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise DecodeError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise DecodeError("empty input")
    tags = frozenset(allow_tags)
    _screen(data, tags)
    try:
        # str_errors: should invalid UTF-8 ever get past _screen, no chained error (above).
        value = cbor2.loads(data, str_errors="replace")
    # ArithmeticError: cbor2 builds Decimals for tags 4/5 and a huge exponent
    # raises decimal.Overflow/InvalidOperation (both ArithmeticError), not ValueError.
    except (cbor2.CBORDecodeError, ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise DecodeError(f"malformed CBOR: {exc}") from exc
    try:
        normalised = _ordered(value, tags, allow_any_tag=False)
    except _Unsupported as exc:
        raise DecodeError(str(exc)) from exc
    again = cbor2.dumps(normalised)
    if again != data:
        if data.startswith(again):
            raise DecodeError(f"{len(data) - len(again)} trailing byte(s) after the CBOR item")
        raise DecodeError("not in RFC 8949 §4.2.1 deterministic encoding")
    return normalised


_UTF8 = "utf-8"


def _screen(data: bytes, tags: frozenset[int]) -> None:
    """Walk the item heads of ``data``; ``DecodeError`` for anything outside the subset."""
    end = len(data)
    pos = 0
    left = 1  # items still to read in the innermost open array, map or tag
    outer: list[int] = []  # the same count for each enclosing one
    while True:
        while not left:
            if not outer:
                if pos != end:
                    raise DecodeError(f"{end - pos} trailing byte(s) after the CBOR item")
                return
            left = outer.pop()
        if pos >= end:
            raise DecodeError("malformed CBOR: truncated")
        head = data[pos]
        major, info = head >> 5, head & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info == 24 and pos < end:  # the common one-byte argument, without a slice
            arg = data[pos]
            pos += 1
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > end:
                raise DecodeError("malformed CBOR: truncated")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif major == 7 and info == 31:
            raise DecodeError("malformed CBOR: break outside an indefinite-length item")
        else:
            raise DecodeError("indefinite length or reserved head: not deterministic CBOR")
        left -= 1
        if major <= 1:  # integers
            continue
        if major <= 3:  # byte and text strings
            if pos + arg > end:
                raise DecodeError("malformed CBOR: truncated")
            if major == 3:
                try:
                    data[pos : pos + arg].decode(_UTF8)
                except UnicodeDecodeError:
                    raise DecodeError("malformed CBOR: text string is not UTF-8") from None
            pos += arg
            continue
        if major == 7:
            if not 20 <= info <= 22:  # false, true, null
                raise DecodeError("floats and simple values other than false/true/null")
            continue
        if major == 6 and arg not in tags:
            raise DecodeError(f"CBOR tag {arg} is not accepted here")
        if len(outer) >= MAX_DEPTH:
            raise DecodeError(f"nested deeper than {MAX_DEPTH} arrays, maps and tags")
        outer.append(left)
        left = 1 if major == 6 else arg if major == 4 else 2 * arg


def decode_lenient(data: bytes, *, allow_tags: Iterable[int] = ()) -> Any:
    """Decode ``data`` without the canonical check: to read one field of outside bytes that
    ``decode`` judges strictly later (a record's key id or claimed seq, for a report).

    ``data`` is screened as in ``decode`` (tags, floats, indefinite lengths, UTF-8, depth),
    so cbor2 never fails on it with the leaking chained error; ``DecodeError`` otherwise.
    """
    if not isinstance(data, bytes | bytearray | memoryview) or not data:
        raise DecodeError("expected non-empty bytes")
    data = bytes(data)
    _screen(data, frozenset(allow_tags))
    try:
        return cbor2.loads(data, str_errors="replace")
    except (cbor2.CBORDecodeError, ValueError, TypeError, ArithmeticError, RecursionError) as exc:
        raise DecodeError(f"malformed CBOR: {exc}") from exc


class _Unsupported(Exception):
    """A value outside the subset (internal; mapped by ``encode``/``decode``)."""


# Encoded map keys, cached: our payloads repeat the same few dozen short keys,
# and encoding each key for sorting dominated encode time. Bounded (STYLE.md §2).
_KEY_CACHE: dict[Any, bytes] = {}
_KEY_CACHE_MAX = 4096


def _key_bytes(key: Any, tags: frozenset[int], allow_any_tag: bool) -> bytes:
    cacheable = (type(key) is str and len(key) <= 64) or type(key) is int
    if cacheable:
        hit = _KEY_CACHE.get((type(key), key))
        if hit is not None:
            return hit
    encoded: bytes = cbor2.dumps(_ordered(key, tags, allow_any_tag))
    if cacheable and len(_KEY_CACHE) < _KEY_CACHE_MAX:
        _KEY_CACHE[(type(key), key)] = encoded
    return encoded


def _ordered(obj: Any, tags: frozenset[int], allow_any_tag: bool, depth: int = 0) -> Any:
    """Return ``obj`` rebuilt with §4.2.1 map order; raise for types outside the subset.

    ``depth`` counts the arrays, maps and tags around ``obj``.
    """
    # Fast path on the exact built-in types our payloads are made of; subclasses
    # (enums, frozendict, ...) and everything else take the general path below,
    # which decides the same way.
    kind = type(obj)
    if kind is bytes or kind is str:
        return obj
    if kind is int:
        if not _INT_MIN <= obj <= _INT_MAX:
            raise _Unsupported(f"integer {obj} outside the 64-bit CBOR range")
        return obj
    if kind is dict:
        return _ordered_map(obj, tags, allow_any_tag, _deeper(depth))
    # bool before int: bool is a subclass of int in Python.
    if obj is None or isinstance(obj, bool):
        return obj
    if isinstance(obj, int):
        if not _INT_MIN <= obj <= _INT_MAX:
            raise _Unsupported(f"integer {obj} outside the 64-bit CBOR range")
        return obj
    if isinstance(obj, bytes | str):
        return obj
    if isinstance(obj, bytearray | memoryview):
        return bytes(obj)
    if isinstance(obj, list | tuple):
        inner = _deeper(depth)
        return [_ordered(item, tags, allow_any_tag, inner) for item in obj]
    if isinstance(obj, Mapping):  # cbor2 yields frozendict inside tags
        return _ordered_map(obj, tags, allow_any_tag, _deeper(depth))
    if isinstance(obj, cbor2.CBORTag):
        if not allow_any_tag and obj.tag not in tags:
            raise _Unsupported(f"CBOR tag {obj.tag} is not accepted here")
        return cbor2.CBORTag(obj.tag, _ordered(obj.value, tags, allow_any_tag, _deeper(depth)))
    raise _Unsupported(f"{type(obj).__name__} is outside the accepted CBOR subset")


def _deeper(depth: int) -> int:
    if depth >= MAX_DEPTH:
        raise _Unsupported(f"nested deeper than {MAX_DEPTH} arrays, maps and tags")
    return depth + 1


def _ordered_map(
    obj: Mapping[Any, Any], tags: frozenset[int], allow_any_tag: bool, depth: int
) -> Any:
    """``obj`` rebuilt in §4.2.1 key order; ``depth`` counts the map itself."""
    items = []
    for key, value in obj.items():
        key_kind = type(key)
        # A cache hit means the key is a str or int that was already encoded once.
        kb = _KEY_CACHE.get((key_kind, key)) if key_kind is str or key_kind is int else None
        if kb is None:
            if not isinstance(key, int | str | bytes | tuple) or isinstance(key, bool):
                raise _Unsupported(f"map key of type {type(key).__name__} is outside the subset")
            if isinstance(key, tuple):
                # Rebuild the key from its ordered form: a key that is an array holding a
                # map must carry that map in sorted order too, or a non-canonical nested
                # map inside a key would round-trip unchanged and be accepted. Ordered
                # once and reused for the sort bytes: ordering it twice per level made
                # keys nested in keys cost exponential time in their depth.
                ordered_key = _ordered(key, tags, allow_any_tag, depth)
                kb = cbor2.dumps(ordered_key)
                key = _freeze(ordered_key)
            else:
                kb = _key_bytes(key, tags, allow_any_tag)
        value_kind = type(value)
        if value_kind is not bytes and value_kind is not str:
            value = _ordered(value, tags, allow_any_tag, depth)
        items.append((kb, key, value))
    items.sort(key=_first)
    for (a, _, _), (b, _, _) in itertools.pairwise(items):
        if a == b:
            raise _Unsupported("duplicate map key")
    return {key: value for _, key, value in items}


def _first(item: tuple[bytes, Any, Any]) -> bytes:
    return item[0]


def _freeze(key: Any) -> Any:
    """A hashable form of an already ordered map key (arrays -> tuples, maps -> FrozenDict)."""
    if isinstance(key, list | tuple):
        return tuple(_freeze(item) for item in key)
    if isinstance(key, Mapping):
        return cbor2.FrozenDict((_freeze(k), _freeze(v)) for k, v in key.items())
    if isinstance(key, cbor2.CBORTag):
        return cbor2.CBORTag(key.tag, _freeze(key.value))
    return key
