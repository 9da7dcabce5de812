"""Crash safety: SIGKILL the recording process at random moments, then audit the outbox.

The child (``tests/crash_writer.py``) records from two threads and prints every
event whose record call returned. After each kill the parent checks that what
was acknowledged is on disk, byte for byte by event id, that the chain is
gapless and verifies (signatures, links, commitments), and that SQLite's own
integrity check passes, then restarts the child on the same data directory.

Kill times come from a seeded RNG; the seed is printed (and shown on failure).
Reproduce a failure with ``CUSTODY_CRASH_SEED=<seed>``.
"""

from __future__ import annotations

import os
import random
import selectors
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

from agent import enrol
from agent.audit import verify_outbox
from agent.identity import load_device_key
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.recorder import Recorder
from ledger.keys import PUBLIC_FILE
from tests.conftest import Gateway

CRASH_WRITER = Path(__file__).with_name("crash_writer.py")
RESTARTS = 30
KILL_AFTER_S = (0.05, 0.6)  # after the child's first acknowledged event
# The child pauses between records so the chain (re-verified in full after every
# kill) stays a few thousand events long; commits are still in flight all the time.
PAUSE_MS = 10
START_DEADLINE_S = 30.0  # a loaded CI machine can be slow to import and open
EXIT_DEADLINE_S = 10.0
FIRST_START_ATTEMPTS = 8
FIRST_START_STEP_S = 0.005  # attempt k is killed (k .. k+1) * 5 ms after "opening"


def _seed() -> int:
    env = os.environ.get("CUSTODY_CRASH_SEED")
    seed = int(env) if env else random.SystemRandom().randrange(2**32)
    print(f"crash test seed: {seed} (rerun with CUSTODY_CRASH_SEED={seed})")
    return seed


@dataclass
class ChildRun:
    """What one child printed before it was killed."""

    lines: list[str] = field(default_factory=list)
    stderr: str = ""
    returncode: int | None = None

    @property
    def acked(self) -> list[tuple[int, str, str, int]]:
        """(seq, event id hex, type, boot) of every acknowledged event."""
        out = []
        for line in self.lines:
            tag, *rest = line.split()
            if tag == "ev":
                seq, event_id, type_, boot = rest
                out.append((int(seq), event_id, type_, int(boot)))
        return out


class LineReader:
    """Reads whole lines from a child's stdout, each wait bounded by a deadline."""

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        self.fd = proc.stdout.fileno()
        self.selector = selectors.DefaultSelector()
        self.selector.register(self.fd, selectors.EVENT_READ)
        self.buffer = b""
        self.lines: list[str] = []
        self.eof = False

    def read_until(self, deadline: float, *, want: int | None = None) -> None:
        """Collect lines until ``deadline`` (monotonic), EOF, or ``want`` lines in total."""
        while not self.eof and (want is None or len(self.lines) < want):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            if not self.selector.select(remaining):
                continue
            chunk = os.read(self.fd, 65536)
            if not chunk:
                self.eof = True
                break
            self.buffer += chunk
            *complete, self.buffer = self.buffer.split(b"\n")
            self.lines += [c.decode("ascii") for c in complete]

    def close(self) -> None:
        self.selector.close()


def run_child_and_kill(
    data_dir: Path, stderr_path: Path, *, after_line: int, delay_s: float
) -> ChildRun:
    """Start the child, SIGKILL it ``delay_s`` after its ``after_line``-th line appears."""
    with (
        stderr_path.open("wb") as stderr,
        subprocess.Popen(
            [sys.executable, str(CRASH_WRITER), str(data_dir), "--pause-ms", str(PAUSE_MS)],
            stdout=subprocess.PIPE,
            stderr=stderr,
            bufsize=0,
        ) as proc,
    ):
        reader = LineReader(proc)
        try:
            reader.read_until(time.monotonic() + START_DEADLINE_S, want=after_line)
            assert len(reader.lines) >= after_line, (
                f"child printed {reader.lines} before the deadline; "
                f"stderr: {stderr_path.read_text(errors='replace')}"
            )
            reader.read_until(time.monotonic() + delay_s)
            proc.send_signal(signal.SIGKILL)
            # Whatever reached the pipe before the kill was acknowledged too.
            reader.read_until(time.monotonic() + EXIT_DEADLINE_S)
            assert reader.eof, "the child's stdout did not close after SIGKILL"
            returncode = proc.wait(timeout=EXIT_DEADLINE_S)
        finally:
            reader.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=EXIT_DEADLINE_S)
    return ChildRun(reader.lines, stderr_path.read_text(errors="replace"), returncode)


def integrity(path: Path) -> list[str]:
    """``PRAGMA integrity_check`` on a plain connection, before anything else opens the file."""
    conn = sqlite3.connect(path)
    try:
        return [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
    finally:
        conn.close()


def audit(data_dir: Path) -> tuple[dict[int, bytes], int]:
    """Audit the outbox after a crash; return the device key's {seq: event id} and boot counter."""
    paths = DataDir(data_dir)
    assert integrity(paths.outbox) == ["ok"]
    key = load_device_key(paths.device_key)
    # check=None: never quarantine (that would hide corruption); integrity was checked above.
    outbox = Outbox.open(paths.outbox, check=None, create=False)
    try:
        report = verify_outbox(outbox, key)
        assert report.ok, report.error
        assert report.skipped_foreign_keys == []
        chain = {e.seq: e.event_id for e in outbox.iter_chain(key.kid)}
        assert sorted(chain) == list(range(1, len(chain) + 1)), "seqs are not gapless from 1"
        assert report.checked == len(chain)
        return chain, outbox.boot_counter()
    finally:
        outbox.close()


def test_sigkill_while_recording_loses_nothing_acknowledged(
    gateway: Gateway, tmp_path: Path
) -> None:
    rng = random.Random(_seed())
    boot_counter = 0
    acked_ever: dict[int, str] = {}  # seq -> event id hex, over all restarts
    for restart in range(1, RESTARTS + 1):
        delay = rng.uniform(*KILL_AFTER_S)
        # Line 1 is "opening", line 2 the boot event: kill only after it is durable.
        run = run_child_and_kill(
            gateway.data_dir, tmp_path / "child.stderr", after_line=2, delay_s=delay
        )
        context = f"restart {restart}, kill {delay:.3f} s after boot; child stderr: {run.stderr}"
        assert run.returncode == -signal.SIGKILL, context
        acked = run.acked
        assert acked and acked[0][2] == "boot", context

        chain, counter = audit(gateway.data_dir)

        assert counter == boot_counter + 1, f"boot counter {counter} after {boot_counter}"
        boot_counter = counter
        for seq, event_id, _, boot in acked:
            assert boot == counter, context
            assert acked_ever.setdefault(seq, event_id) == event_id, f"seq {seq} reused; {context}"
        for seq, event_id in acked_ever.items():  # this run's and every earlier run's
            assert chain.get(seq) == bytes.fromhex(event_id), f"seq {seq} lost; {context}"
    # The runs must have recorded well past their boot events for the test to mean much.
    assert len(acked_ever) > 3 * RESTARTS


def test_sigkill_during_first_start_leaves_a_usable_outbox(
    gateway: Gateway, ledger_dir: Path, tmp_path: Path
) -> None:
    """Killed while first opening a freshly initialised gateway (check, boot counter, boot event).

    Opening takes some tens of milliseconds after the child prints ``opening``;
    the kill delays are spread over that window (stratified, seeded).
    """
    rng = random.Random(_seed())
    killed_before_boot_event = 0
    for attempt in range(FIRST_START_ATTEMPTS):
        data_dir = gateway.data_dir if attempt == 0 else tmp_path / f"gw-{attempt}"
        if attempt:
            enrol.initialise(
                data_dir, site_id="KOL-01", device_id="gw-kol-01",
                ledger_key_file=ledger_dir / PUBLIC_FILE,
            )  # fmt: skip
        with closing(Outbox.open(DataDir(data_dir).outbox, check=None, create=False)) as fresh:
            assert fresh.events() == [] and fresh.boot_counter() == 0
        delay = rng.uniform(attempt, attempt + 1) * FIRST_START_STEP_S
        run = run_child_and_kill(data_dir, tmp_path / "child.stderr", after_line=1, delay_s=delay)
        assert run.returncode == -signal.SIGKILL, run.stderr
        killed_before_boot_event += not run.acked

        with Recorder(data_dir) as rec:  # the next open works ...
            event = rec.weighing(gross=30_000, tare=10_000, vehicle="T1")
            boot = rec.boot
        chain, counter = audit(data_dir)  # ... and everything verifies
        assert chain[event.seq] == event.event_id
        assert counter == boot >= 1
        for seq, event_id, _, _ in run.acked:  # if the child got that far
            assert chain[seq] == bytes.fromhex(event_id)
    assert killed_before_boot_event, "no kill landed before the first boot event was durable"
