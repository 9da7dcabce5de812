"""Child process for tests/test_crash.py: record events until killed.

    python tests/crash_writer.py DATA_DIR [--pause-ms N] [--max-seconds S]

Prints ``opening`` before the outbox is opened, then one line per event whose
record call has RETURNED (i.e. the event is durable and was acknowledged):

    ev SEQ EVENT_ID_HEX TYPE BOOT

The boot event that ``Recorder`` writes at start comes first; then two producer
threads record a mix of weighings (gross + tare, so a derived net, or a single
bag) and seal scans. Each line goes out with one ``os.write`` on an unbuffered
pipe, so the parent never sees half a line and a line it sees was acknowledged
before the kill. The parent SIGKILLs this process; ``--max-seconds`` only stops
an orphan whose parent died.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from pathlib import Path

from agent.outbox import StoredEvent
from agent.recorder import Recorder

PRODUCERS = 2
FAILED = threading.Event()


def acknowledge(event: StoredEvent) -> None:
    line = f"ev {event.seq} {event.event_id.hex()} {event.type} {event.boot}\n"
    os.write(sys.stdout.fileno(), line.encode("ascii"))


def produce(rec: Recorder, index: int, pause_s: float, stop: threading.Event) -> None:
    n = 0
    try:
        while not stop.is_set():
            n += 1
            kind = n % 3
            if kind == 0:
                event = rec.seal_scan(f"SEAL-{index}-{n}", lot="LOT-CRASH")
            elif kind == 1:
                event = rec.weighing(gross=20_000 + n, tare=8_000 + index, vehicle=f"T{index}")
            else:
                event = rec.weighing(bag=5_000 + n % 100, lot="LOT-CRASH")
            acknowledge(event)
            if pause_s:
                stop.wait(pause_s)  # pacing, like a real capture rate
    except Exception as exc:  # e.g. the parent closed the pipe: stop, exit non-zero
        print(f"producer {index} stopped: {exc!r}", file=sys.stderr, flush=True)
        FAILED.set()
        stop.set()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--pause-ms", type=float, default=0.0)
    parser.add_argument("--max-seconds", type=float, default=60.0)
    args = parser.parse_args()

    os.write(sys.stdout.fileno(), b"opening\n")
    rec = Recorder(args.data_dir, boot_reason="crash-test")
    acknowledge(rec.boot_event)
    stop = threading.Event()
    workers = [
        threading.Thread(
            target=produce, args=(rec, i, args.pause_ms / 1000, stop), name=f"producer-{i}"
        )
        for i in range(PRODUCERS)
    ]
    for w in workers:
        w.start()
    stop.wait(args.max_seconds)
    stop.set()
    for w in workers:
        w.join()
    rec.close()
    return 1 if FAILED.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
