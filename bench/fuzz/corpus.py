"""The committed corpus and a deterministic mutator: fuzzing without a fuzzer, for ``make test``.

``tests/fuzz_corpus/<target>/`` holds the seeds (``bench.fuzz.seeds``), inputs that once
crashed a target (named ``crash-*``, kept as regressions) and whatever ``python -m bench fuzz
--update-corpus`` merged in. ``mutants`` derives inputs from them the way a fuzzer's first
rounds would (bit flips, boundary bytes, truncations, deletions, duplications, insertions,
splices of two entries), driven only by the ``random.Random`` it is given, so one seed gives the
same inputs on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from pathlib import Path

__all__ = ["CORPUS", "entries", "mutants"]

CORPUS = Path(__file__).resolve().parents[2] / "tests" / "fuzz_corpus"

# Bytes at the edges of the formats we decode: CBOR heads (24-27 argument widths, 31
# indefinite, 0x5f/0x9f/0xbf indefinite strings, arrays and maps, 0xf4-0xf7 simple values),
# STX/ETX/CR/LF/GS/'$' framing, 0xA0 (R2000 start) and the signed/unsigned wraps.
_INTERESTING = bytes(
    [0x00, 0x01, 0x02, 0x03, 0x0A, 0x0D, 0x17, 0x18, 0x19, 0x1A, 0x1B, 0x1C, 0x1D, 0x1F,
     0x20, 0x24, 0x2A, 0x2C, 0x3F, 0x40, 0x5F, 0x7F, 0x80, 0x9F, 0xA0, 0xBF, 0xC0, 0xD2,
     0xF4, 0xF5, 0xF6, 0xF7, 0xFE, 0xFF]
)  # fmt: skip


def entries(target: str) -> list[tuple[str, bytes]]:
    """``(file name, content)`` of every corpus file of ``target``, sorted by name."""
    directory = CORPUS / target
    if not directory.is_dir():
        return []
    return [(p.name, p.read_bytes()) for p in sorted(directory.iterdir()) if p.is_file()]


def mutants(seeds: Sequence[bytes], rng: random.Random, count: int) -> Iterator[bytes]:
    """``count`` inputs, each one to three mutations of a seed (or of a splice of two)."""
    if not seeds:
        return
    for _ in range(count):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 3)):
            _mutate(data, seeds, rng)
        yield bytes(data)


def _mutate(data: bytearray, seeds: Sequence[bytes], rng: random.Random) -> None:
    op = rng.randrange(8)
    n = len(data)
    if n == 0 or op == 0:  # insert a few random or boundary bytes
        at = rng.randint(0, n)
        fresh = bytes(rng.choice(_INTERESTING) for _ in range(rng.randint(1, 4)))
        data[at:at] = fresh
    elif op == 1:  # flip one bit
        i = rng.randrange(n)
        data[i] ^= 1 << rng.randrange(8)
    elif op == 2:  # a boundary byte
        data[rng.randrange(n)] = rng.choice(_INTERESTING)
    elif op == 3:  # nudge a byte (lengths and counts off by one)
        i = rng.randrange(n)
        data[i] = (data[i] + rng.choice((-1, 1))) & 0xFF
    elif op == 4:  # truncate
        del data[rng.randint(0, n - 1) :]
    elif op == 5:  # delete a range
        a = rng.randrange(n)
        del data[a : a + rng.randint(1, max(1, n // 8))]
    elif op == 6:  # duplicate a range in place
        a = rng.randrange(n)
        piece = data[a : a + rng.randint(1, 16)]
        data[a:a] = piece
    else:  # splice: this one's head, another seed's tail
        other = rng.choice(seeds)
        data[rng.randint(0, n) :] = other[rng.randint(0, len(other)) :]
