"""Every fuzz target on its committed corpus and on a fixed-seed mutation pass; no fuzzer needed.

The targets (``bench.fuzz.targets``) are plain functions that raise only for a crash: an
exception the decoder does not document, or a broken invariant (a strict decoder accepting
what its encoder would not write, a serial parser over its buffer bound or depending on how
the bytes were chunked). ``tests/fuzz_corpus/<target>/`` holds the seeds and every input that
once crashed a target. Coverage-guided fuzzing is ``python -m bench fuzz`` (atheris).
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from bench.fuzz.corpus import CORPUS, entries, mutants
from bench.fuzz.targets import TARGETS, Target
from tests.support import REPO

# Per target: the whole pass takes a few seconds (the bundle's proofs run only for the rare
# mutant that still decodes).
MUTANTS = 500
# Whole corpus, all targets: the committed files stay small.
MAX_CORPUS_BYTES = 2 * 1024 * 1024


def _run(target: Target, data: bytes, where: str) -> None:
    try:
        target(data)
    except Exception as exc:
        shown = data.hex() if len(data) <= 1024 else data[:1024].hex() + "..."
        raise AssertionError(
            f"{where}: {type(exc).__name__}: {exc}\ninput ({len(data)} bytes, hex): {shown}"
        ) from exc


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_the_corpus_replays_without_a_crash(name: str) -> None:
    corpus = entries(name)
    assert corpus, f"no seeds in tests/fuzz_corpus/{name} (python -m bench.fuzz.seeds)"
    for file, data in corpus:
        _run(TARGETS[name], data, f"{name}/{file}")


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutants_of_the_corpus_do_not_crash(name: str) -> None:
    # A str seed is hashed with SHA-512 by random.Random: the same inputs everywhere.
    rng = random.Random(f"cobalt-custody/fuzz/{name}")
    seeds = [data for _, data in entries(name)]
    for i, data in enumerate(mutants(seeds, rng, MUTANTS)):
        _run(TARGETS[name], data, f"{name} mutant {i}")


def test_the_corpus_is_small_and_names_only_targets() -> None:
    assert {p.name for p in CORPUS.iterdir()} == set(TARGETS)
    total = sum(f.stat().st_size for f in CORPUS.rglob("*") if f.is_file())
    assert total < MAX_CORPUS_BYTES


def test_mutants_are_deterministic() -> None:
    seeds = [b"\xa1\x61v\x01", b"S S     100.00 g\r\n"]
    first = list(mutants(seeds, random.Random("x"), 50))
    assert first == list(mutants(seeds, random.Random("x"), 50))
    assert len(set(first)) > 40


def test_bench_fuzz_runs_a_target_under_atheris(tmp_path: Path) -> None:
    pytest.importorskip("atheris")
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "fuzz", "--seconds", "3", "--target",
         "checkpoint_payload", "--workdir", str(tmp_path), "--json"],
        capture_output=True, text=True, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    run = result["targets"]["checkpoint_payload"]
    assert run["executions"] > 0
    assert run["crashes"] == 0, run["artifacts"]
    assert result["crash_dir"] == str(tmp_path.resolve() / "crashes")
