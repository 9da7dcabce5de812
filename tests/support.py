"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``custody-agent`` as a real process (exit codes, stderr, no traceback)."""
    return subprocess.run(
        [sys.executable, "-m", "agent.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
        check=False,
    )


def feed_chunks(parser: Any, chunks: Iterable[bytes]) -> list[object]:
    """Everything a sans-I/O parser returns for ``chunks`` fed one after another."""
    out: list[object] = []
    for chunk in chunks:
        out += parser.feed(chunk)
    return out


def random_chunks(data: bytes, seed: int, max_len: int = 9) -> list[bytes]:
    """``data`` cut into seeded random pieces of 1..``max_len`` bytes."""
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(data):
        n = rng.randint(1, max_len)
        chunks.append(data[pos : pos + n])
        pos += n
    return chunks


def assert_cut_anywhere(
    make_parser: Callable[[], Any],
    data: bytes,
    whole: list[object],
    stats: object,
    *,
    seeds: Iterable[int] = range(5),
    max_len: int = 9,
) -> None:
    """A serial line may deliver ``data`` in any pieces: fed byte by byte and in seeded
    random chunks, a fresh parser returns exactly ``whole`` (what it returned for the
    data fed at once) and ends with the same ``stats``."""
    cuts = [("byte by byte", [data[i : i + 1] for i in range(len(data))])]
    cuts += [(f"random chunks, seed {s}", random_chunks(data, s, max_len)) for s in seeds]
    for how, chunks in cuts:
        parser = make_parser()
        assert feed_chunks(parser, chunks) == whole, how
        assert parser.stats == stats, how


def wait_until(
    check: Callable[[], T], what: str, timeout: float = 60.0, interval: float = 0.02
) -> T:
    """Poll ``check`` until it returns something truthy and return that; fail the test
    naming ``what`` after ``timeout`` seconds. For conditions other processes or threads
    make true; never a substitute for a timed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting for {what}"
        time.sleep(interval)
