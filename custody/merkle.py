"""RFC 9162 §2.1 Merkle tree hashing, proofs and their verification (SHA-256).

Theory of operation. The transparency log (ARCHITECTURE.md "Transparency log")
is a list of leaves in arrival order; each leaf's data is a 32-byte event id.

    leaf hash   SHA-256(0x00 || data)                         (§2.1.1)
    node hash   SHA-256(0x01 || left || right)
    MTH({})     SHA-256("")            MTH of one leaf = its leaf hash
    MTH(D[n])   node(MTH(D[0:k]), MTH(D[k:n])), k the largest power of 2 < n

The 0x00/0x01 prefixes separate the two domains, so a leaf can never be passed
off as an interior node (second preimages). Every hash here is 32 bytes.

Three tools, from cheapest to most general:

* ``root(leaves)`` / ``root_from_leaf_hashes(hashes)``: MTH in one pass, O(n)
  hashes and O(log n) memory.
* ``CompactRange``: the right-hand frontier of a growing log, i.e. the roots of
  the perfect subtrees that the binary digits of ``size`` decompose the leaves
  into, largest (leftmost) first. Appending a leaf hash merges equal-sized
  subtrees like a binary counter; ``root()`` folds the frontier from the right.
  The state is ``1 + popcount(size)`` values, persisted with ``to_bytes``:

      0x01 (format version) | size: uint64 big-endian | popcount(size) x 32-byte hash

  The layout is exact: ``from_bytes`` refuses any other length with
  ``DecodeError``.
* ``MerkleReader``: proof generation over leaf hashes that live elsewhere (a
  database). It asks a ``get_leaf_hashes(start, end)`` callback for at most
  ``chunk`` leaf hashes at a time and memoises the roots of perfect subtrees
  wider than ``chunk`` in a bounded LRU. A perfect subtree that lies inside the
  log never changes (the log is append-only), so the memo is valid forever and
  later proofs cost O(log n) hashes plus the leaves of the ragged right edge.

Proofs (§2.1.3.1, §2.1.4.1) are lists of 32-byte hashes, ordered from the leaf
(or the old tree) up to the root, exactly the RFC's ``inclusion_path`` and
``consistency_path``. ``inclusion_proof``/``consistency_proof`` accept a
``MerkleReader`` (or anything with a ``range_hash(start, end)`` method), a
``get_leaf_hashes`` callable, or a plain list of leaf hashes.

Verification (§2.1.3.2, §2.1.4.2) returns ``None`` or raises ``LogProofError``
naming the reason, like the rest of ``custody``. Policy, stricter than the RFC
text in two places:

* every hash (leaf hash, roots, proof elements) must be exactly 32 bytes, and
  a proof must have exactly the length its (index, size) or (size1, size2)
  implies, before anything is hashed;
* a consistency proof needs ``0 < size1 <= size2`` (§2.1.4.2 is stated for
  ``0 < first < second``). ``size1 == size2`` needs an empty proof and equal
  roots; ``size1 == 0`` is refused, since nothing can be proved about the empty
  tree (a client holding no checkpoint simply accepts the first one it gets).

An inclusion proof alone does not bind the tree size: the (size, root) pair
must come from one signed checkpoint. A proof for size 3 checked with size 4
and the size-3 root passes whenever both sizes give the leaf the same path
shape; with the size-4 root it fails, as it must.

Bad *requests* to the generators (an index past the end, ``size1 > size2``, a
source shorter than the requested size, a reader that breaks its contract)
raise ``ValueError``: the ledger checks a client's request against its own log
before asking for a proof.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from custody.errors import DecodeError, LogProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "LEAF_PREFIX",
    "MAX_TREE_SIZE",
    "NODE_PREFIX",
    "CompactRange",
    "LeafHashReader",
    "MerkleReader",
    "ProofSource",
    "RangeHasher",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "root_from_inclusion_proof",
    "root_from_leaf_hashes",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
# RFC 9162 §2.1.1: the hash of an empty tree is the hash of the empty string.
EMPTY_ROOT = hashlib.sha256(b"").digest()
# Sizes and indexes are uint64 on the wire (RFC 9162 §4.1, CBOR major type 0).
MAX_TREE_SIZE = 2**64 - 1

_STATE_VERSION = 1
_STATE_HEADER = 1 + 8

_sha256 = hashlib.sha256

# get_leaf_hashes(start, end) -> the leaf hashes of leaves start .. end-1, in order.
LeafHashReader = Callable[[int, int], Sequence[bytes]]


@runtime_checkable
class RangeHasher(Protocol):
    """Anything that returns MTH(D[start:end]) for a range of the log."""

    def range_hash(self, start: int, end: int) -> bytes: ...


ProofSource = RangeHasher | LeafHashReader | Sequence[bytes]


# --- hashing ----------------------------------------------------------------------


def _bytes(value: object, what: str) -> bytes:
    # bytes(5) would quietly be five zero bytes: accept bytes-like values only.
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"{what} must be bytes, got {type(value).__name__}")
    return bytes(value)


def leaf_hash(data: bytes) -> bytes:
    """RFC 9162 §2.1.1 leaf hash: SHA-256(0x00 || data)."""
    return _sha256(LEAF_PREFIX + _bytes(data, "leaf data")).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """RFC 9162 §2.1.1 interior node hash: SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + _bytes(left, "left") + _bytes(right, "right")).digest()


def root(leaves: Iterable[bytes]) -> bytes:
    """MTH of ``leaves`` (leaf *data*, e.g. event ids), in one O(log n)-memory pass."""
    acc = CompactRange()
    acc.extend_hashes(_sha256(LEAF_PREFIX + _bytes(d, "leaf data")).digest() for d in leaves)
    return acc.root()


def root_from_leaf_hashes(hashes: Iterable[bytes]) -> bytes:
    """MTH of a tree given its leaf *hashes* (each 32 bytes)."""
    acc = CompactRange()
    acc.extend_hashes(hashes)
    return acc.root()


def _split(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2), RFC 9162 §2.1.1."""
    return 1 << ((n - 1).bit_length() - 1)


# --- the incremental frontier ------------------------------------------------------


class CompactRange:
    """The O(log n) state of an append-only Merkle tree: size and frontier.

    ``nodes[i]`` is the root of the i-th perfect subtree from the left; their
    widths are the set bits of ``size``, largest first. Not thread-safe.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @classmethod
    def from_state(cls, size: int, nodes: Sequence[bytes]) -> CompactRange:
        """Rebuild from ``size`` and its frontier; ``DecodeError`` if they do not fit."""
        if isinstance(size, bool) or not isinstance(size, int):
            raise DecodeError(f"size must be an integer, got {type(size).__name__}")
        if not 0 <= size <= MAX_TREE_SIZE:
            raise DecodeError(f"size {size} outside 0..2^64-1")
        if len(nodes) != size.bit_count():
            raise DecodeError(
                f"a tree of {size} leaves has {size.bit_count()} frontier hashes, got {len(nodes)}"
            )
        for node in nodes:
            if not isinstance(node, bytes | bytearray) or len(node) != HASH_SIZE:
                raise DecodeError(f"frontier hashes must be {HASH_SIZE} bytes")
        acc = cls()
        acc._size = size
        acc._nodes = [bytes(n) for n in nodes]
        return acc

    @classmethod
    def from_bytes(cls, data: bytes) -> CompactRange:
        """Parse ``to_bytes`` output; ``DecodeError`` for anything else."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _STATE_HEADER:
            raise DecodeError(f"compact range state of {len(data)} bytes is truncated")
        if data[0] != _STATE_VERSION:
            raise DecodeError(f"compact range state version {data[0]} is not {_STATE_VERSION}")
        size = int.from_bytes(data[1:_STATE_HEADER], "big")
        want = _STATE_HEADER + HASH_SIZE * size.bit_count()
        if len(data) != want:
            raise DecodeError(
                f"compact range state for size {size} must be {want} bytes, got {len(data)}"
            )
        body = data[_STATE_HEADER:]
        nodes = [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
        return cls.from_state(size, nodes)

    def to_bytes(self) -> bytes:
        return bytes([_STATE_VERSION]) + self._size.to_bytes(8, "big") + b"".join(self._nodes)

    @property
    def size(self) -> int:
        return self._size

    @property
    def nodes(self) -> tuple[bytes, ...]:
        return tuple(self._nodes)

    def append_hash(self, leaf_hash: bytes) -> int:
        """Append one leaf hash; return that leaf's index."""
        self.extend_hashes((leaf_hash,))
        return self._size - 1

    def append_leaf(self, data: bytes) -> int:
        """Append a leaf by its data (an event id); return its index."""
        return self.append_hash(leaf_hash(data))

    def extend_hashes(self, hashes: Iterable[bytes]) -> None:
        """Append leaf hashes in order (the hot loop of ``root``; kept inline)."""
        nodes = self._nodes
        sha256 = _sha256
        for node in hashes:
            if type(node) is not bytes:
                if not isinstance(node, bytearray | memoryview):
                    raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
                node = bytes(node)
            if len(node) != HASH_SIZE:
                raise ValueError(f"a leaf hash is {HASH_SIZE} bytes")
            size = self._size
            if size == MAX_TREE_SIZE:
                raise ValueError("the tree is full (2^64-1 leaves)")
            # Binary-counter carry: each trailing 1 bit of the old size is a
            # perfect subtree as wide as ``node``, so the two merge.
            while size & 1:
                node = sha256(NODE_PREFIX + nodes.pop() + node).digest()
                size >>= 1
            nodes.append(node)
            self._size += 1

    def root(self) -> bytes:
        """MTH of the leaves appended so far (``EMPTY_ROOT`` when none)."""
        nodes = self._nodes
        if not nodes:
            return EMPTY_ROOT
        result = nodes[-1]
        for node in reversed(nodes[:-1]):
            result = _sha256(NODE_PREFIX + node + result).digest()
        return result

    def copy(self) -> CompactRange:
        other = CompactRange()
        other._size = self._size
        other._nodes = list(self._nodes)
        return other

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CompactRange):
            return NotImplemented
        return self._size == other._size and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __repr__(self) -> str:
        return f"CompactRange(size={self._size}, root={self.root().hex()})"


# --- proof generation --------------------------------------------------------------


class MerkleReader:
    """Subtree hashes over leaf hashes read on demand, with perfect subtrees memoised.

    ``get_leaf_hashes(start, end)`` must return exactly ``end - start`` 32-byte
    leaf hashes; it is never asked for more than ``chunk`` at once. Memoised
    subtrees are wider than ``chunk`` leaves, at most ``max_cache_entries`` of
    them (LRU; about 200 bytes each). Not thread-safe: one per thread, or a
    lock around it.
    """

    DEFAULT_CHUNK = 256
    DEFAULT_MAX_CACHE_ENTRIES = 16384

    def __init__(
        self,
        get_leaf_hashes: LeafHashReader,
        *,
        chunk: int = DEFAULT_CHUNK,
        max_cache_entries: int = DEFAULT_MAX_CACHE_ENTRIES,
    ) -> None:
        if chunk < 1 or chunk & (chunk - 1):
            raise ValueError(f"chunk must be a power of two, got {chunk}")
        if max_cache_entries < 0:
            raise ValueError("max_cache_entries must be >= 0")
        self._read = get_leaf_hashes
        self._chunk = chunk
        self._max_cache = max_cache_entries
        self._cache: OrderedDict[tuple[int, int], bytes] = OrderedDict()

    @classmethod
    def from_leaf_hashes(cls, hashes: Sequence[bytes], **kwargs: int) -> MerkleReader:
        """A reader over an in-memory list of leaf hashes."""

        def read(start: int, end: int) -> Sequence[bytes]:
            if end > len(hashes):
                raise ValueError(f"leaves up to {end} requested, only {len(hashes)} held")
            return hashes[start:end]

        return cls(read, **kwargs)

    @property
    def cache_size(self) -> int:
        return len(self._cache)

    def clear_cache(self) -> None:
        self._cache.clear()

    def root(self, size: int) -> bytes:
        """MTH of the first ``size`` leaves."""
        return self.range_hash(0, size)

    def range_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]): the binary decomposition of its width, folded from the right."""
        if not 0 <= start <= end:
            raise ValueError(f"bad leaf range [{start}, {end})")
        if start == end:
            return EMPTY_ROOT
        pieces: list[bytes] = []
        pos, width = start, end - start
        while width:
            piece = 1 << (width.bit_length() - 1)
            pieces.append(self._perfect(pos, piece))
            pos += piece
            width -= piece
        result = pieces[-1]
        for piece_hash in reversed(pieces[:-1]):
            result = _sha256(NODE_PREFIX + piece_hash + result).digest()
        return result

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        return _inclusion_proof(self, index, size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        return _consistency_proof(self, size1, size2)

    def _perfect(self, start: int, width: int) -> bytes:
        """Root of the perfect subtree of ``width`` (a power of two) leaves at ``start``."""
        if width <= self._chunk:
            return root_from_leaf_hashes(self._fetch(start, start + width))
        key = (start, width)
        cache = self._cache
        hit = cache.get(key)
        if hit is not None:
            cache.move_to_end(key)
            return hit
        half = width >> 1
        value = _sha256(
            NODE_PREFIX + self._perfect(start, half) + self._perfect(start + half, half)
        ).digest()
        if self._max_cache:
            cache[key] = value
            if len(cache) > self._max_cache:
                cache.popitem(last=False)
        return value

    def _fetch(self, start: int, end: int) -> list[bytes]:
        got = list(self._read(start, end))
        if len(got) != end - start:
            raise ValueError(f"leaf-hash reader returned {len(got)} hashes for [{start}, {end})")
        for h in got:
            if not isinstance(h, bytes | bytearray) or len(h) != HASH_SIZE:
                raise ValueError(f"leaf-hash reader returned a non-{HASH_SIZE}-byte hash")
        return got


def _as_hasher(source: ProofSource) -> tuple[RangeHasher, int | None]:
    """(hasher, known leaf count or None) for any accepted proof source."""
    if isinstance(source, RangeHasher):
        return source, None
    if callable(source):
        return MerkleReader(source), None
    if isinstance(source, bytes | bytearray | str):
        raise TypeError("a proof source is a list of leaf hashes, not one bytes value")
    return MerkleReader.from_leaf_hashes(source), len(source)


def _range(hasher: RangeHasher, start: int, end: int) -> bytes:
    value = hasher.range_hash(start, end)
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise ValueError(f"range_hash({start}, {end}) did not return a {HASH_SIZE}-byte hash")
    return value


def _inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PATH(index, D[0:size]), leaf first (§2.1.3.1)."""
    ranges: list[tuple[int, int]] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[tuple[int, int]]:
    """Leaf ranges whose MTHs form PROOF(size1, D[0:size2]), bottom first (§2.1.4.1).

    SUBPROOF(m, D[start:end], b), unrolled: ``m`` counts the old tree's leaves
    within [start, end); ``b`` stays true while the old tree is a left edge.
    Requires 0 < size1 < size2.
    """
    ranges: list[tuple[int, int]] = []
    start, end, m, whole = 0, size2, size1, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            ranges.append((start + k, end))
            end = start + k
        else:
            ranges.append((start, start + k))
            start += k
            m -= k
            whole = False
    if not whole:
        ranges.append((start, end))
    ranges.reverse()
    return ranges


def _inclusion_proof(hasher: RangeHasher, index: int, size: int) -> list[bytes]:
    _check_request_int("index", index)
    _check_request_int("size", size)
    if not 0 <= index < size:
        raise ValueError(f"no inclusion proof for index {index} in a tree of size {size}")
    return [_range(hasher, a, b) for a, b in _inclusion_ranges(index, size)]


def _consistency_proof(hasher: RangeHasher, size1: int, size2: int) -> list[bytes]:
    _check_request_int("size1", size1)
    _check_request_int("size2", size2)
    if not 0 < size1 <= size2:
        raise ValueError(f"no consistency proof from size {size1} to size {size2}")
    if size1 == size2:
        return []
    return [_range(hasher, a, b) for a, b in _consistency_ranges(size1, size2)]


def _check_request_int(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise ValueError(f"{name} {value} outside 0..2^64-1")


def inclusion_proof(source: ProofSource, index: int, size: int) -> list[bytes]:
    """RFC 9162 §2.1.3.1 PATH(index, D[0:size]), ordered from the leaf up.

    ``source`` is a ``MerkleReader`` (reuse one to keep its memo), anything with
    ``range_hash(start, end)``, a ``get_leaf_hashes(start, end)`` callable, or
    a list of leaf hashes. Bad requests raise ``ValueError``.
    """
    hasher, held = _as_hasher(source)
    if held is not None and size > held:
        raise ValueError(f"size {size} exceeds the {held} leaf hashes given")
    return _inclusion_proof(hasher, index, size)


def consistency_proof(source: ProofSource, size1: int, size2: int) -> list[bytes]:
    """RFC 9162 §2.1.4.1 PROOF(size1, D[0:size2]); empty when the sizes are equal.

    Same sources as ``inclusion_proof``; requires ``0 < size1 <= size2``.
    """
    hasher, held = _as_hasher(source)
    if held is not None and size2 > held:
        raise ValueError(f"size {size2} exceeds the {held} leaf hashes given")
    return _consistency_proof(hasher, size1, size2)


# --- verification ------------------------------------------------------------------


def _hash_arg(name: str, value: object) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise LogProofError(f"{name} must be bytes, got {type(value).__name__}")
    value = bytes(value)
    if len(value) != HASH_SIZE:
        raise LogProofError(f"{name} is {len(value)} bytes, not {HASH_SIZE}")
    return value


def _int_arg(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise LogProofError(f"{name} must be an integer, got {type(value).__name__}")
    if not 0 <= value <= MAX_TREE_SIZE:
        raise LogProofError(f"{name} {value} outside 0..2^64-1")
    return value


def _proof_arg(proof: object, want: int, what: str) -> list[bytes]:
    if isinstance(proof, bytes | bytearray | memoryview | str) or not isinstance(proof, Sequence):
        raise LogProofError("a proof is a list of hashes")
    if len(proof) != want:
        raise LogProofError(f"{what} needs {want} hashes, the proof has {len(proof)}")
    return [_hash_arg(f"proof[{i}]", p) for i, p in enumerate(proof)]


def _same(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` leads to from ``leaf_hash`` at ``index`` of ``size``.

    RFC 9162 §2.1.3.2 steps 1-4; raises ``LogProofError`` for malformed input.
    A COSE receipt (RFC 9942) is checked by computing this root and verifying
    the signature over it.
    """
    r = _hash_arg("leaf hash", leaf_hash)
    index = _int_arg("index", index)
    size = _int_arg("size", size)
    if index >= size:
        raise LogProofError(f"index {index} is not below tree size {size}")
    # Length = levels below the fork with size-1, plus left siblings above it.
    inner = (index ^ (size - 1)).bit_length()
    want = inner + (index >> inner).bit_count()
    path = _proof_arg(proof, want, f"inclusion of index {index} in size {size}")
    fn, sn = index, size - 1
    for p in path:
        if sn == 0:  # unreachable after the length check; kept as the RFC's guard
            raise LogProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _sha256(NODE_PREFIX + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = _sha256(NODE_PREFIX + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofError("inclusion proof is shorter than the tree is deep")
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 §2.1.3.2: raise ``LogProofError`` unless ``proof`` puts the leaf in ``root``.

    ``leaf_hash`` is the leaf's hash (``leaf_hash(event_id)``), not its data.
    """
    expected = _hash_arg("root", root)
    computed = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if not _same(computed, expected):
        raise LogProofError(
            f"inclusion proof for index {index} leads to root {computed.hex()}, "
            f"not {expected.hex()} (size {size})"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 §2.1.4.2: raise ``LogProofError`` unless tree ``size1`` is a prefix of ``size2``.

    Policy for the edges the RFC leaves open: see the module docstring.
    """
    first = _hash_arg("root1", root1)
    second = _hash_arg("root2", root2)
    size1 = _int_arg("size1", size1)
    size2 = _int_arg("size2", size2)
    if size1 > size2:
        raise LogProofError(f"size1 {size1} is greater than size2 {size2}")
    if size1 == 0:
        raise LogProofError("a consistency proof from the empty tree proves nothing")
    if size1 == size2:
        _proof_arg(proof, 0, f"consistency of two trees of size {size1}")
        if not _same(first, second):
            raise LogProofError(f"two roots for the same size {size1} differ")
        return
    path = _proof_arg(
        proof, len(_consistency_ranges(size1, size2)), f"consistency {size1} -> {size2}"
    )
    # Step 2: when size1 is a power of two the old root is the first node.
    if size1 & (size1 - 1) == 0:
        path.insert(0, first)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:  # unreachable after the length check; kept as the RFC's guard
            raise LogProofError("consistency proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            fr = _sha256(NODE_PREFIX + c + fr).digest()
            sr = _sha256(NODE_PREFIX + c + sr).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = _sha256(NODE_PREFIX + sr + c).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise LogProofError("consistency proof is shorter than the tree is deep")
    if not _same(fr, first):
        raise LogProofError(
            f"consistency proof leads to old root {fr.hex()}, not {first.hex()} (size {size1})"
        )
    if not _same(sr, second):
        raise LogProofError(
            f"consistency proof leads to new root {sr.hex()}, not {second.hex()} (size {size2})"
        )
