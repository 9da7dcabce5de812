"""``custody-agent scan``: the terminal front end of the scan-and-tag session.

Theory of operation (STYLE.md §7, §9, §12). One main thread owns the session, the
recorder and the screen. Everything else only enqueues into ``inbox`` (bounded,
``INBOX_MAX``): a thread reading stdin lines (keyboard and keyboard-wedge scanners), the
same port workers as the gateway service's (``agent.service.workers.PortWorker``: one per
serial port, publishing typed events on a ``PortBus``) for a serial scanner and the
platform scale, with a pump thread per subscription forwarding their events, and an
optional camera thread. Signal handlers only set flags. Full policy of ``inbox``: an
operator's line or a scanned code waits for room (a person cannot outrun the console);
a scale reading is dropped and counted (the next one follows within a second).

The outbox is the truth. At start the ``ScanIndex`` is rebuilt from every event in the
outbox, unfinished bag records left by a killed console are voided (see
``agent.scan.index``), and before each input the index is caught up with what other
processes (the gateway service, ``custody-agent record``) wrote. Only the current lot is
kept outside the outbox, in ``scan-state.json`` (written atomically), because a lot is
chosen before its first bag is recorded. One console per data directory (``scan.lock``).

Output never exceeds the terminal: the screen is laid out for
``shutil.get_terminal_size()`` at every redraw (and on SIGWINCH), in colour only when
stdout is a terminal, ``NO_COLOR`` is unset and ``TERM`` is not ``dumb``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import queue
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import FrameType
from typing import Any, TextIO

from agent.outbox import StoredEvent
from agent.paths import DataDir
from agent.recorder import Recorder
from agent.scan.index import ScanIndex, observe_rows
from agent.scan.messages import Catalogue, choose_language
from agent.scan.screen import Screen, layout
from agent.scan.session import (
    Effect,
    Mode,
    Quit,
    RecordBag,
    SaveLot,
    ScanSession,
    Step,
    VoidBag,
)
from agent.service.workers import PortBus, PortWorker, Subscription
from custody.errors import CaptureError, CustodyError, SchemaError
from custody.event import EventType, validate_identifier
from custody.files import replace_file
from firmware_bridge.errors import DeviceError, DisconnectedError, PortConfigError, ProtocolError
from firmware_bridge.frames import SealCode, WeightReading
from firmware_bridge.protocols import registry
from firmware_bridge.protocols.codes import ScannerLineParser, classify_code
from firmware_bridge.transport import (
    Backoff,
    FrameRead,
    FrameSkipped,
    PortEvent,
    PortState,
    StateChanged,
)

__all__ = ["INBOX_MAX", "ConsoleOptions", "load_lot", "run_console", "save_lot"]

INBOX_MAX = 256
STATE_FILE = "scan-state.json"
LOCK_FILE = "scan.lock"
VOID_REASON = "voided by the operator at the scan console (last bag)"
ORPHAN_REASON = "unfinished bag record: the scan console stopped before the bag joined its lot"
_POLL_S = 0.2  # how often the main loop looks at signal flags while idle
_CAMERA_FRAME_GAP_S = 0.2  # at most ~5 decoded frames a second: a 2-core gateway shares it
_PORT_HEARTBEAT_S = 30.0  # the console has no watchdog; the port workers' heartbeat goes unread
_PORT_STOP_S = 5.0  # a port worker stops within a read timeout; this bounds a stuck close

_log = logging.getLogger("custody.scan")


@dataclass(frozen=True, slots=True)
class ConsoleOptions:
    data_dir: Path
    language: str | None = None  # None: config scan.language, else LANG
    scale_port: str | None = None  # None: config scan.scale_port
    scale_dialect: str | None = None
    scanner_port: str | None = None
    camera: str | None = None
    colour: bool | None = None  # None: decide from the terminal and NO_COLOR


# --- the lot, the one thing kept outside the outbox -------------------------------------
def load_lot(data_dir: Path) -> str | None:
    """The lot saved by ``save_lot``; None when absent or unreadable (the outbox decides)."""
    try:
        raw = json.loads((data_dir / STATE_FILE).read_text(encoding="utf-8"))
        return validate_identifier(raw["lot"], "lot")
    except (OSError, ValueError, KeyError, TypeError, SchemaError):
        return None


def save_lot(data_dir: Path, lot: str) -> None:
    """Write the lot atomically and durably (``custody.files``), so a power cut leaves the
    old or the new lot, never a torn file."""
    replace_file(data_dir / STATE_FILE, json.dumps({"lot": lot}).encode(), 0o644)


def _lock(data_dir: Path) -> int:
    fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise CaptureError(
            f"another scan console is running on {data_dir} (one console per data directory)"
        ) from None
    return fd  # released by the kernel when the process ends, even on SIGKILL


# --- the terminal -----------------------------------------------------------------------
class Terminal:
    """Draws screens on a text stream, fitting its current size."""

    def __init__(self, out: TextIO, colour: bool | None = None) -> None:
        self.out = out
        self.tty = out.isatty()
        if colour is None:
            colour = (
                self.tty
                and not os.environ.get("NO_COLOR")  # https://no-color.org: set and non-empty
                and os.environ.get("TERM", "") != "dumb"
            )
        self.colour = colour
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self.unicode = encoding == "utf8"

    def draw(self, screen: Screen) -> None:
        size = shutil.get_terminal_size()
        lines = layout(screen, size.columns, size.lines, colour=self.colour, unicode=self.unicode)
        bell = "\a" * screen.bell
        if self.tty:
            # ECMA-48: CUP home, ED erase below; then the rows and the input prompt.
            self.out.write("\x1b[H\x1b[2J" + "\n".join(lines) + "\n> " + bell)
        else:
            self.out.write("\n".join(line for line in lines if line) + "\n" + bell)
        self.out.flush()


# --- the console --------------------------------------------------------------------------
class Console:
    def __init__(self, opts: ConsoleOptions, out: TextIO, inp: TextIO) -> None:
        self.opts = opts
        self.inp = inp
        self.data_dir = opts.data_dir
        self._lock_fd = _lock(self.data_dir)
        try:
            self.rec = Recorder(self.data_dir, boot_reason="scan")
        except BaseException:
            os.close(self._lock_fd)
            raise
        cfg = self.rec.config
        language = choose_language(opts.language or cfg.scan_language or None)
        self.catalogue = Catalogue(language)
        self.scale_port = cfg.scan_scale_port if opts.scale_port is None else opts.scale_port
        self.scale_dialect = opts.scale_dialect or cfg.scan_scale_dialect
        self.scanner_port = (
            cfg.scan_scanner_port if opts.scanner_port is None else opts.scanner_port
        )
        self.camera = cfg.scan_camera if opts.camera is None else opts.camera
        self.term = Terminal(out, opts.colour)
        self.index = ScanIndex()
        self.catch_up()
        recovered = self._void_orphans()
        self.session = ScanSession(
            self.catalogue, self.index, lot=load_lot(self.data_dir),
            scale=bool(self.scale_port), stable_readings=cfg.scan_stable_readings,
            bag_range=(Decimal(cfg.scan_bag_min_kg), Decimal(cfg.scan_bag_max_kg)),
            numeric_seals=cfg.scan_numeric_seals,
        )  # fmt: skip
        self.inbox: queue.Queue[tuple[str, Any]] = queue.Queue(INBOX_MAX)
        self.stop = threading.Event()
        self.scale_drops = 0
        self._resized = False
        self.bus = PortBus()
        self._ports: list[threading.Thread] = []
        self._first = self.session.start(self.now_ms(), recovered)

    # --- the outbox ------------------------------------------------------------------------
    def now_ms(self) -> int:
        return self.rec.clock.now().ms

    def catch_up(self) -> None:
        for ev in observe_rows(self.rec.outbox, self.index.cursor):
            self.index.apply(ev)

    def _void_orphans(self) -> list[str]:
        seals = []
        for event_id, _lot, seal in self.index.orphans():
            self.rec.void(event_id, ORPHAN_REASON)
            seals.append(seal)
        self.catch_up()
        return seals

    # --- effects -------------------------------------------------------------------------------
    def execute(self, effect: Effect) -> Step | None:
        if isinstance(effect, RecordBag):
            return self._record_bag(effect)
        if isinstance(effect, VoidBag):
            return self._void_bag(effect)
        if isinstance(effect, SaveLot):
            save_lot(self.data_dir, effect.lot)
            return None
        if isinstance(effect, Quit):
            self.stop.set()
            return None
        raise TypeError(f"unknown effect {effect!r}")  # pragma: no cover

    def _record_bag(self, e: RecordBag) -> Step:
        weighing: StoredEvent | None = None
        try:
            if e.mass is not None:
                # The weighing first; the aggregation after it is the bag's commit point.
                weighing = self.rec.weighing(
                    bag=e.mass, lot=e.lot, seals=[e.seal], manual=e.manual_mass, direction="out",
                    scale=None if e.manual_mass else self.scale_port,
                )  # fmt: skip
            agg = self.rec.record(
                EventType.AGGREGATION, {"lot": e.lot, "children": [e.seal], "action": "ADD"}
            )
        except CustodyError as exc:
            if weighing is not None:
                # Do not leave a weighing without its bag; if this fails too, the next
                # start voids it (ScanIndex.orphans).
                with contextlib.suppress(CustodyError):
                    self.rec.void(weighing.event_id, ORPHAN_REASON)
            self.catch_up()
            return self.session.failed(str(exc), self.now_ms())
        self.catch_up()
        return self.session.recorded(agg.event_id, self.now_ms())

    def _void_bag(self, e: VoidBag) -> Step:
        try:
            self.rec.void(e.bag.event_id, VOID_REASON)
            if e.bag.weighing is not None:
                self.rec.void(e.bag.weighing, VOID_REASON)
        except CustodyError as exc:
            self.catch_up()
            return self.session.failed(str(exc), self.now_ms())
        self.catch_up()
        return self.session.voided(e.bag, self.now_ms())

    def show(self, step: Step) -> None:
        """Draw a step, carry out its effects, and show what they lead to, in order.

        A saved lot is on disk before the screen says "Lot X" (a kill right after the
        operator saw it must not bring back the old lot); recording and voiding run after
        their "Recording..." screen and report through the step they return."""
        todo = [step]
        while todo:
            current = todo.pop(0)
            for effect in current.effects:
                if isinstance(effect, SaveLot):
                    self.execute(effect)
            self.term.draw(current.screen)
            for effect in current.effects:
                nxt = None if isinstance(effect, SaveLot) else self.execute(effect)
                if nxt is not None:
                    todo.append(nxt)

    # --- inputs ----------------------------------------------------------------------------
    def dispatch(self, tag: str, item: Any) -> Step | None:
        now = self.now_ms()
        s = self.session
        if tag == "line":
            return s.handle(item, now)
        if tag == "eof":
            return None if s.mode is Mode.CLOSED else s.handle(self.catalogue("cmd.quit"), now)
        if tag == "scanner":
            ev: PortEvent = item
            if isinstance(ev, FrameRead) and isinstance(ev.frame, SealCode):
                return s.scan_code(ev.frame, now)
            if isinstance(ev, FrameSkipped):
                return s.scan_error(ev.error.reason, now)
            return None
        if tag == "scale":
            ev = item
            if isinstance(ev, FrameRead) and isinstance(ev.frame, WeightReading):
                return s.scale_reading(ev.frame, now)
            if isinstance(ev, StateChanged):
                return s.scale_state(ev.state, now)
            return None
        if tag == "camera":
            text, symbology = item
            try:
                return s.scan_code(classify_code(text, symbology), now)
            except ProtocolError as exc:
                return s.scan_error(str(exc), now)
        if tag == "camera_error":
            return s.scan_error(str(item), now)
        return None  # pragma: no cover

    def _read_stdin(self) -> None:
        try:
            for line in self.inp:
                self.inbox.put(("line", line))
        except (OSError, ValueError):  # the terminal went away
            pass
        self.inbox.put(("eof", None))

    def _pump(self, sub: Subscription, tag: str, on_open: Callable[[], None] | None) -> None:
        while not self.stop.is_set():
            try:
                ev = sub.get(timeout=0.5)
            except queue.Empty:
                continue
            if isinstance(ev, StateChanged) and ev.state is PortState.OPEN and on_open is not None:
                with contextlib.suppress(DeviceError):
                    on_open()
            if tag == "scale" and isinstance(ev, FrameRead):
                try:
                    self.inbox.put_nowait((tag, ev))
                except queue.Full:
                    self.scale_drops += 1
                continue
            self.inbox.put((tag, ev))

    def _camera_loop(self, url: str) -> None:
        from firmware_bridge import camera  # OpenCV is heavy: only when a camera is set

        debounce = camera.Debouncer(5.0)
        backoff = Backoff()
        while not self.stop.is_set():
            try:
                with camera.CameraSource(url) as source:
                    for frame in source.frames():
                        codes = camera.decode_image(frame.image, passes=camera.FAST_PASSES)
                        for d in debounce.filter(codes):
                            self.inbox.put(("camera", (d.text, _aim(d.symbology, d.gs1))))
                        if self.stop.wait(_CAMERA_FRAME_GAP_S):
                            return
                    if not source.live:
                        return  # a file source ends
            except DeviceError as exc:
                if not isinstance(exc, DisconnectedError):
                    self.inbox.put(("camera_error", str(exc)))
                    return
                self.stop.wait(backoff.next_delay())

    def start_devices(self) -> None:
        if self.camera:
            # First, and not only in the thread: without the optional camera extra this raises
            # CameraUnavailableError (naming the extra) before any device starts.
            from firmware_bridge import camera  # noqa: F401  # OpenCV is heavy: only when set
        if self.scanner_port:
            self._start_port(f"{ScannerLineParser.dialect}@{self.scanner_port}", "scanner", None)
        if self.scale_port:
            d = registry.dialect(self.scale_dialect)
            url = self.scale_port
            on_open = None
            request = getattr(d.factory, "request", None)
            if d.name == "mt-sics" and request is not None:
                # MT-SICS answers requests only: SIR asks for a weight "immediately and
                # repeated" (MT-SICS Reference Manual, SIR), re-sent after every reconnect.
                on_open = lambda: self.bus.write(url, request("SIR"))  # noqa: E731
            self._start_port(f"{d.name}@{url}", "scale", on_open)
        if self.camera:
            threading.Thread(
                target=self._camera_loop, args=(self.camera,), name="camera", daemon=True
            ).start()

    def _start_port(self, spec: str, tag: str, on_open: Callable[[], None] | None) -> None:
        worker = PortWorker(
            spec, log=_log_port, heartbeat_timeout_s=_PORT_HEARTBEAT_S, bus=self.bus
        )
        sub = self.bus.subscribe(f"scan-{tag}", [worker.url])
        thread = threading.Thread(
            target=self._run_port, args=(worker,), name=f"port:{tag}", daemon=True
        )
        thread.start()
        self._ports.append(thread)
        threading.Thread(
            target=self._pump, args=(sub, tag, on_open), name=f"pump:{tag}", daemon=True
        ).start()

    def _run_port(self, worker: PortWorker) -> None:
        # A URL pyserial refuses ends the port worker; its FAILED state already reached the
        # screen through the subscription, and the console goes on without that device.
        with contextlib.suppress(PortConfigError):
            worker.run(self.stop)

    # --- the loop --------------------------------------------------------------------------
    def run(self) -> int:
        previous = {
            sig: signal.signal(sig, self._on_signal)
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGWINCH)
        }
        try:
            self.start_devices()
            threading.Thread(target=self._read_stdin, name="stdin", daemon=True).start()
            self.show(self._first)
            while not self.stop.is_set():
                if self._resized:
                    self._resized = False
                    self.term.draw(self.session.redraw(self.now_ms()))
                try:
                    tag, item = self.inbox.get(timeout=_POLL_S)
                except queue.Empty:
                    continue
                self.catch_up()  # what other processes recorded counts before deciding
                step = self.dispatch(tag, item)
                if step is not None:
                    self.show(step)
        except KeyboardInterrupt:
            self.term.draw(Screen(status="", lines=(self.catalogue("msg.bye"),)))
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self.close()
        return 0

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Handlers only set flags (STYLE.md §9); the loop polls them every _POLL_S.
        if signum == signal.SIGWINCH:
            self._resized = True
        else:
            self.stop.set()

    def close(self) -> None:
        self.stop.set()
        for thread in self._ports:  # each closes its port on the way out
            thread.join(_PORT_STOP_S)
        self.rec.close()
        os.close(self._lock_fd)


def _log_port(level: str, event: str, **fields: Any) -> None:
    """Port workers' events (state changes) into the Python log; the screen shows them."""
    _log.log(logging.WARNING if level == "warning" else logging.DEBUG, "%s %s", event, fields)


def _aim(symbology: str, gs1: bool) -> str | None:
    """The ISO/IEC 15424 identifier for a camera read with FNC1 in first position, so
    ``classify_code`` checks it strictly as GS1 (GS1 QR ]Q3, GS1-128 ]C1, GS1 DataMatrix ]d2)."""
    if not gs1:
        return symbology
    return {"QRCODE": "]Q3", "CODE128": "]C1", "DATAMATRIX": "]d2"}.get(symbology, symbology)


def run_console(opts: ConsoleOptions, out: TextIO | None = None, inp: TextIO | None = None) -> int:
    """Run the console until the operator quits (q), stdin ends, or SIGTERM/SIGHUP."""
    if not DataDir(opts.data_dir).config.exists():
        from custody.errors import NotInitialisedError

        raise NotInitialisedError(f"{opts.data_dir}: not initialised (run `custody-agent init`)")
    console = Console(opts, out or sys.stdout, inp or sys.stdin)
    return console.run()
