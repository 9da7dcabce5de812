"""``python -m bench fuzz``: coverage-guided fuzzing of every decoder that takes outside bytes.

Theory of operation. ``bench.fuzz.targets`` holds one plain function per decoder,
``f(data: bytes) -> None``, that returns when the decoder accepts the bytes or refuses them
with its documented typed error and raises anything else (an unexpected exception, or an
``InvariantViolation`` of a property the decoder promises). The functions need no fuzzing
library: ``tests/test_fuzz_corpus.py`` replays the committed corpus
(``tests/fuzz_corpus/<target>/``) and a fixed-seed mutation pass through them in ``make test``.

This benchmark runs them under atheris (libFuzzer for Python), one subprocess per target
(``bench.fuzz.worker``), because ``atheris.Fuzz`` never returns and the target's packages must
be imported under instrumentation in a fresh interpreter. ``--seconds`` is split evenly across
the targets run. A crash ends a libFuzzer run, so a target is restarted with its grown corpus
until its share of the time is spent (or ``--max-crashes`` inputs were saved). Per target it
reports executions (libFuzzer's ``stat::number_of_executed_units``, summed over runs), crashes
and timeouts (inputs saved under ``WORKDIR/crashes/<target>/``) and the inputs that added
coverage (``WORKDIR/corpus/<target>/``). ``--update-corpus`` merges those into the committed
corpus, keeping only inputs that add coverage (libFuzzer ``-merge=1``).
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.machine import machine

__all__ = ["SUMMARY", "add_arguments", "render", "run"]

SUMMARY = "coverage-guided fuzzing (atheris) of every decoder of outside bytes: execs, crashes"

REPO = Path(__file__).resolve().parents[2]
CORPUS = REPO / "tests" / "fuzz_corpus"
# libFuzzer's exit codes: a crash (-error_exitcode), a slow input (-timeout_exitcode).
_EXIT_CRASH = 77
_EXIT_TIMEOUT = 70
_STAT = re.compile(rb"^stat::(\w+):\s*(\d+)", re.MULTILINE)
# Below this a run is not worth starting (interpreter start and instrumentation take ~1 s).
_MIN_RUN_S = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # Imported here, not at module level: the worker imports this package, and nothing of
    # ours may be imported in the worker before atheris instruments it.
    from bench.fuzz.targets import TARGETS

    parser.add_argument(
        "--seconds",
        type=_positive,
        default=60,
        help="total fuzzing time, split evenly across the targets (default 60)",
    )
    parser.add_argument(
        "--target",
        action="append",
        choices=sorted(TARGETS),
        metavar="T",
        help=f"only this target (repeatable; default: all). Targets: {', '.join(sorted(TARGETS))}",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="where crashes/<target>/ and corpus/<target>/ go (default: a new temporary dir)",
    )
    parser.add_argument(
        "--update-corpus",
        action="store_true",
        help="merge new coverage-adding inputs into tests/fuzz_corpus/<target>/",
    )
    parser.add_argument(
        "--max-crashes",
        type=_positive,
        default=5,
        help="stop a target after this many saved crash/timeout inputs (default 5)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive,
        default=10,
        help="seconds one input may take before it is saved as a timeout (default 10)",
    )
    parser.add_argument(
        "--rss-limit-mb", type=_positive, default=2048, help="libFuzzer memory limit (2048)"
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    from bench.fuzz.targets import TARGETS

    if importlib.util.find_spec("atheris") is None:
        raise SystemExit(
            "python -m bench fuzz needs atheris: pip install -e '.[fuzz]' (wheels exist for "
            "x86_64 Linux only); make test replays the corpus without it"
        )
    names: list[str] = sorted(set(args.target or TARGETS))
    workdir: Path = args.workdir or Path(tempfile.mkdtemp(prefix="cobalt-fuzz-"))
    workdir = workdir.resolve()
    share = max(_MIN_RUN_S, args.seconds // len(names))
    results: dict[str, Any] = {}
    for name in names:
        results[name] = _fuzz_target(name, share, workdir, args)
        if args.update_corpus:
            results[name]["merged_into_corpus"] = _merge(name, workdir)
    return {
        "benchmark": "fuzz",
        "targets": results,
        "executions": sum(r["executions"] for r in results.values()),
        "crashes": sum(r["crashes"] for r in results.values()),
        "crash_dir": str(workdir / "crashes"),
        "new_inputs_dir": str(workdir / "corpus"),
        "parameters": {
            "seconds": args.seconds,
            "seconds_per_target": share,
            "timeout_s": args.timeout,
            "rss_limit_mb": args.rss_limit_mb,
            "update_corpus": bool(args.update_corpus),
        },
        "machine": machine(),
    }


def render(result: Mapping[str, Any]) -> str:
    lines = [f"{'target':<26}{'seconds':>8}{'execs':>12}{'exec/s':>9}{'crashes':>9}{'new':>6}"]
    for name, r in result["targets"].items():
        rate = r["executions"] / r["seconds"] if r["seconds"] else 0.0
        lines.append(
            f"{name:<26}{r['seconds']:>8.0f}{r['executions']:>12,}{rate:>9,.0f}"
            f"{r['crashes']:>9}{r['new_inputs']:>6}"
        )
        lines.extend(f"    {a}" for a in r["artifacts"])
    p, m = result["parameters"], result["machine"]
    lines.append("")
    lines.append(f"total: {result['executions']:,} executions, {result['crashes']} crash inputs")
    lines.append(f"crashes: {result['crash_dir']}   new inputs: {result['new_inputs_dir']}")
    lines.append(
        f"parameters: {p['seconds']} s ({p['seconds_per_target']} s per target), "
        f"per-input timeout {p['timeout_s']} s"
    )
    lines.append(
        f"machine: {m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('python', '?')}"
    )
    return "\n".join(lines)


# --- one target -----------------------------------------------------------------------------
def _fuzz_target(
    name: str, seconds: int, workdir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    from bench.fuzz.targets import TARGETS

    target = TARGETS[name]
    crashes = workdir / "crashes" / name
    found = workdir / "corpus" / name
    logs = workdir / "logs"
    for directory in (crashes, found, logs):
        directory.mkdir(parents=True, exist_ok=True)
    seeds = CORPUS / name
    executions = runs = 0
    slowest = 0
    t0 = time.monotonic()
    while True:
        left = seconds - (time.monotonic() - t0)
        if left < _MIN_RUN_S or _artifact_count(crashes) >= args.max_crashes:
            break
        options = [
            f"-max_total_time={int(left)}",
            f"-max_len={target.max_len}",
            f"-timeout={args.timeout}",
            f"-rss_limit_mb={args.rss_limit_mb}",
            f"-artifact_prefix={crashes}/",
            "-print_final_stats=1",
        ]
        dirs = [str(found)] + ([str(seeds)] if seeds.is_dir() else [])
        log = logs / f"{name}-{runs + 1}.log"
        returncode = _worker(name, [*options, *dirs], log, timeout=left + 120)
        runs += 1
        output = log.read_bytes()
        stats = {k.decode(): int(v) for k, v in _STAT.findall(output)}
        executions += stats.get("number_of_executed_units", 0)
        slowest = max(slowest, stats.get("slowest_unit_time_sec", 0))
        if returncode not in (0, _EXIT_CRASH, _EXIT_TIMEOUT) and not _artifact_count(crashes):
            # Neither a clean end nor a saved input: the harness itself failed; show why.
            tail = output.decode(errors="replace")[-2000:]
            raise RuntimeError(f"fuzz worker for {name} exited {returncode} ({log}):\n{tail}")
        if returncode == 0:
            break
    artifacts = sorted(p.name for p in crashes.iterdir())
    return {
        "seconds": round(time.monotonic() - t0, 1),
        "runs": runs,
        "executions": executions,
        "crashes": len(artifacts),
        # libFuzzer names each input by what it did: crash-, timeout-, oom-.
        "kinds": dict(Counter(a.partition("-")[0] for a in artifacts)),
        "artifacts": [str(crashes / a) for a in artifacts],
        "new_inputs": sum(1 for _ in found.iterdir()),
        "slowest_input_s": slowest,
        "max_len": target.max_len,
    }


def _merge(name: str, workdir: Path) -> int:
    """Add the inputs of WORKDIR/corpus/<name> that add coverage to the committed corpus."""
    committed = CORPUS / name
    committed.mkdir(parents=True, exist_ok=True)
    before = sum(1 for _ in committed.iterdir())
    log = workdir / "logs" / f"{name}-merge.log"
    returncode = _worker(name, ["-merge=1", str(committed), str(workdir / "corpus" / name)], log)
    if returncode != 0:
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"corpus merge for {name} exited {returncode} ({log}):\n{tail}")
    return sum(1 for _ in committed.iterdir()) - before


def _worker(name: str, options: list[str], log: Path, timeout: float = 3600) -> int:
    """Run one libFuzzer session of ``name``; its output goes to ``log``; the exit code."""
    with log.open("wb") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.fuzz.worker", name, *options],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=timeout,
            check=False,
        )
    return proc.returncode


def _artifact_count(directory: Path) -> int:
    return sum(1 for _ in directory.iterdir())


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value
