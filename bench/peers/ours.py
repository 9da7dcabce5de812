"""Our side of the peer comparison: every serial frame becomes a signed record, synced to a ledger.

Why not ``custody-agent run`` with ``weighbridge.*``: the unattended weighbridge
turns a truck visit (about 60 indicator frames in the simulator's scenario) into
one or two signed weighings, whereas the peer's serial connector ships every
frame as a telemetry value. Per event the two would not be comparable, and a
per-reading loss and duplicate count would be impossible. So the gateway
process here (``python -m bench.peers.ours``) runs the same library path as the
service's workers, one record per frame:

    pty ─▶ firmware_bridge.transport.PortReader (the dialect's sans-I/O parser)
        ─▶ agent.recorder.Recorder.submit (Pedersen commitment of the gross mass,
           opening sealed to the ledger, Ed25519 COSE_Sign1, fsynced in the outbox)
        ─▶ sync.uplink.Uplink (agent.uplink.build_uplink, as ``custody-agent sync``)
        ─▶ Mosquitto ─▶ ``custody-ledger run`` ─▶ ledger-signed ack releases the record.

Every setting is the gateway's default (``config.toml`` from ``custody-agent
init``): ``synchronous=FULL``, group commit, QoS 1, window 4, ack timeout 60 s.
"""

from __future__ import annotations

import argparse
import collections
import queue
import signal
import sqlite3
import sys
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from types import FrameType

from agent.outbox import Outbox, StoredEvent
from agent.paths import DataDir
from agent.recorder import Recorder
from agent.uplink import build_uplink
from custody.errors import InvalidMassError
from custody.event import EventType
from custody.mass import kg_to_units
from firmware_bridge.frames import WeightReading
from firmware_bridge.protocols.registry import dialect, make_parser
from firmware_bridge.transport import FrameRead, PortEvent, PortReader
from sync.mqtt import BrokerConfig

__all__ = ["MASS_FIELD", "ledger_readings", "main", "reading_units"]

MASS_FIELD = "gross"
# Futures awaited in order; bounded so a slow disk back-pressures the reader
# (which then blocks on its own bounded queue) instead of growing memory.
MAX_PENDING = 1024
READY_LINE = "ours: ready"


def reading_units(reading: WeightReading) -> int:
    """Mass units (0.1 kg, ``custody.commitment.MASS_UNIT_G``) of a kg reading."""
    if reading.unit != "kg" or reading.value < 0:
        raise ValueError(f"the bench stream sends positive kg readings, got {reading}")
    try:
        return kg_to_units(reading.kg)
    except InvalidMassError as exc:
        raise ValueError(f"{reading}: {exc}") from exc


def ledger_readings(ledger_db: Path) -> dict[bytes, int]:
    """Event id -> reading number (whole kg of the gross mass) of every logged weighing."""
    uri = f"file:{ledger_db}?mode=ro"
    with sqlite3.connect(uri, uri=True, timeout=30) as db:
        rows = db.execute(
            "SELECT event_id, value FROM masses WHERE field = ?", (MASS_FIELD,)
        ).fetchall()
    return {bytes(event_id): int(value) // 10 for event_id, value in rows}


def _capture(rec: Recorder, events: queue.Queue[PortEvent], stop: threading.Event) -> None:
    pending: collections.deque[Future[StoredEvent]] = collections.deque()
    while not stop.is_set():
        while pending and (pending[0].done() or len(pending) >= MAX_PENDING):
            pending.popleft().result()  # raises if a capture failed: the process exits
        try:
            event = events.get(timeout=0.1)
        except queue.Empty:
            continue
        if not isinstance(event, FrameRead) or not isinstance(event.frame, WeightReading):
            continue
        units = reading_units(event.frame)
        pending.append(
            rec.submit(EventType.WEIGHING, {"scale": "WB-01"}, masses={MASS_FIELD: units})
        )
    for f in pending:
        f.result()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.peers.ours",
        description="Bench gateway: one signed record per serial frame, synced to the ledger.",
    )
    parser.add_argument("--data-dir", type=Path, required=True, help="initialised gateway dir")
    parser.add_argument("--port", required=True, help="serial port URL of the indicator")
    parser.add_argument("--dialect", default="xk3190-a12", help="indicator dialect")
    parser.add_argument("--broker", required=True, help="mqtt://host:port")
    args = parser.parse_args(argv)

    stop = threading.Event()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # handlers only flag (STYLE.md §9)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    d = dialect(args.dialect)
    with Recorder(args.data_dir, boot_reason="bench") as rec:
        reader = PortReader(
            args.port, lambda: make_parser(args.dialect), settings=d.serial, name="WB-01"
        ).start()
        capture = threading.Thread(target=_capture, args=(rec, reader.out, stop), daemon=True)
        capture.start()
        outbox = Outbox.open(DataDir(args.data_dir).outbox, check=None, create=False)
        try:
            broker = BrokerConfig(url=args.broker, client_id=f"custody-{rec.config.device_id}")
            uplink = build_uplink(args.data_dir, outbox, broker)
            print(READY_LINE, flush=True)
            uplink.run(stop, until_drained=False)
        finally:
            reader.stop()
            capture.join(30)
            outbox.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
