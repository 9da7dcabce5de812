"""The weighbridge runner: ports in, signed events out (a thin I/O shell, STYLE.md §7).

Theory of operation
-------------------
``Station`` is single-threaded glue. It takes typed port events with the time
they were read (``PortEvent`` from ``firmware_bridge.transport``), feeds indicator
readings to the sans-I/O ``Weighbridge`` cycle, keeps the vehicle id (RFID
tag, a scanned ``VEH:<id>`` code, or manual entry) and the seal codes scanned
during the visit in the ``VisitBook``, and turns what the cycle returns into
signed events through ``Recorder``: a capture becomes a ``weighing`` (pass
``in``/``out``/``single`` per ``visits.plan``), anything else a mass-less
weighing with an ``outcome``. A capture returns only once its event is durable;
then the visit book is updated, and a completed visit prints the driver's
ticket (one structured ``weighbridge.ticket`` event, the text on an ESC/POS
printer when configured). A ticket that cannot be printed is counted and
logged: the signed event is the record, the paper is a copy.

What the station does is said as it happens, as one event each through the
``events`` sink (the service's log): a capture with its pass, vehicle and
masses; an outcome without a mass with its reason; a vehicle identified; a seal
refused. Two checks keep a faulty device from writing nonsense into custody:
a visit takes at most ``max_seals`` seal codes (a scanner left reading, or one
that repeats, is not a load), and a capture outside the plausible truck masses
(``gross_range``, ``tare_range``) is refused as a signed ``implausible`` outcome
that says why. The optional vehicle registry (``agent.workflows.vehicles``)
turns a read RFID tag into the truck's plate, which records and tickets carry.

``WeighbridgeWorker`` is what the gateway service supervises (the service's
``Worker`` shape: ``run(stop)`` until ``stop`` is set, ``alive``, ``health()``,
``metrics()``). It reads no port itself: the service's port workers own the
indicator, RFID reader and scanner ports (``port_specs`` names them, as
``DIALECT@URL``), and the worker subscribes to their typed events on the
service's ``PortBus``: one bounded queue between the ports and the station. A
port is known by its URL everywhere: in the events, in the station's scale
port, in health and metrics. MT-SICS indicators answer requests, so the worker
sends its polls through the bus to the port worker that owns the indicator.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.outbox import Outbox, StoredEvent
from agent.recorder import Recorder
from agent.service.context import PortSpec
from agent.service.workers import PortBus, Sample, Subscription, WorkerHealth, parse_port_spec
from agent.settings import AgentConfig
from agent.workflows import ticket as tickets
from agent.workflows.vehicles import EMPTY, VehicleRegistry, load_vehicles
from agent.workflows.visits import BOOK_FILE, Pending, Plan, VisitBook, plan
from agent.workflows.weighbridge import (
    Captured,
    Outcome,
    Phase,
    StabilityRule,
    VehicleOff,
    VehicleOn,
    Weighbridge,
    ZeroDrift,
    ZeroRestored,
)
from custody.envelope import verify_envelope
from custody.errors import SchemaError
from custody.event import EventType, validate_identifier
from custody.mass import format_kg, kg_to_units, units_to_kg
from firmware_bridge.errors import DeviceError
from firmware_bridge.frames import CommandReply, SealCode, TagRead, WeightReading
from firmware_bridge.protocols.base import FrameError
from firmware_bridge.protocols.registry import dialect as find_dialect
from firmware_bridge.protocols.scales import mt_sics_request
from firmware_bridge.transport import QUEUE_MAX, FrameSkipped, PortEvent, PortState, StateChanged

__all__ = [
    "VEHICLE_PREFIX", "EventSink", "Station", "StationConfig", "WeighbridgeWorker",
    "weighbridge_ports",
]  # fmt: skip

log = logging.getLogger("custody.weighbridge")

VEHICLE_PREFIX = "VEH:"  # a scanned code naming the vehicle, e.g. a windscreen sticker
ZERO_ALARM = "weighbridge_zero_drift"
TICK_S = 0.2  # the worker's idle wake-up: timeouts fire within this of being due
SICS_POLL_S = 0.1  # MT-SICS is request/response: ask for a weight this often


# Where the station says what it did, called as ``sink(level, event, **fields)``: the shape
# of ``agent.service.logs.EventLog.event``.
EventSink = Callable[..., None]


_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}


def _to_logging(level: str, event: str, /, **fields: Any) -> None:
    """The default sink outside the service: the ``logging`` module."""
    text = " ".join(f"{k}={v}" for k, v in fields.items() if v is not None)
    log.log(_LEVELS.get(level, logging.ERROR), "%s %s", event, text)


@dataclass(frozen=True, slots=True)
class StationConfig:
    rule: StabilityRule
    use_stored_tare: bool = False
    single_direction: str = "out"
    max_seals: int = 60  # per visit (weighbridge.max_seals_per_visit)
    # Plausible truck masses in mass units, inclusive (weighbridge.gross_*_kg, tare_*_kg).
    gross_range: tuple[int, int] = (kg_to_units(1500), kg_to_units(100_000))
    tare_range: tuple[int, int] = (kg_to_units(1500), kg_to_units(50_000))

    @classmethod
    def from_agent(cls, cfg: AgentConfig) -> StationConfig:
        rule = StabilityRule(
            on_threshold=kg_to_units(cfg.wb_on_threshold_kg),
            stable_readings=cfg.wb_stable_readings,
            tolerance=kg_to_units(cfg.wb_tolerance_kg),
            window_s=cfg.wb_window_s,
            unstable_timeout_s=cfg.wb_unstable_timeout_s,
            zero_drift_limit=kg_to_units(cfg.wb_zero_drift_limit_kg),
        )
        return cls(
            rule, cfg.wb_stored_tare, cfg.wb_single_pass_direction, cfg.wb_max_seals_per_visit,
            (kg_to_units(cfg.wb_gross_min_kg), kg_to_units(cfg.wb_gross_max_kg)),
            (kg_to_units(cfg.wb_tare_min_kg), kg_to_units(cfg.wb_tare_max_kg)),
        )  # fmt: skip

    def implausible(self, p: Plan) -> str | None:
        """Why the masses of ``p`` cannot be a truck's, or None when they can."""
        gross = p.masses["gross"]
        # A first pass may be an empty truck arriving to load: it is only known to be a truck.
        lo = self.tare_range[0] if p.stage == "in" else self.gross_range[0]
        hi = self.gross_range[1]
        key = "tare_min_kg" if p.stage == "in" else "gross_min_kg"
        what = "reading" if p.stage == "in" else "gross"
        if gross < lo:
            return _out_of_range(what, gross, key, lo)
        if gross > hi:
            return _out_of_range(what, gross, "gross_max_kg", hi)
        tare = p.masses.get("tare")
        if tare is not None and p.tare is None:  # a stored tare was checked when it was weighed
            if tare < self.tare_range[0]:
                return _out_of_range("tare", tare, "tare_min_kg", self.tare_range[0])
            if tare > self.tare_range[1]:
                return _out_of_range("tare", tare, "tare_max_kg", self.tare_range[1])
        return None


def _out_of_range(what: str, units: int, key: str, limit: int) -> str:
    side = "below" if key.endswith("min_kg") else "above"
    return (
        f"{what} {format_kg(units)} kg is {side} weighbridge.{key} = {format_kg(limit)} kg: "
        "not a plausible truck (a fault on the bridge or the indicator?)"
    )


@dataclass
class StationMetrics:
    outcomes: dict[str, int] = field(default_factory=dict)  # captured, unstable, ...
    passes: dict[str, int] = field(default_factory=dict)  # in, out, single
    tickets: int = 0
    ticket_errors: int = 0
    frame_errors: int = 0
    rejected_codes: int = 0
    seals: int = 0
    seals_refused: int = 0
    zero_units: int = 0
    zero_alarm: bool = False
    last_capture_latency_s: float | None = None  # frame read -> event durable


class Station:
    """Feeds one weighbridge's frames through the cycle and records the outcomes."""

    def __init__(
        self,
        recorder: Recorder,
        config: StationConfig,
        *,
        scale: str,
        scale_port: str | None = None,
        book: VisitBook | None = None,
        photo: Callable[[], bytes | None] | None = None,
        alibi_of: Callable[[WeightReading], str | None] | None = None,
        printer: tickets.SerialTicketPrinter | None = None,
        console: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        events: EventSink | None = None,
        vehicles: VehicleRegistry | None = None,
    ) -> None:
        self.recorder = recorder
        self.config = config
        self.scale = scale
        # The indicator's port URL, as port events name it; its loss ends a weighing.
        self.scale_port = scale if scale_port is None else scale_port
        self.photo = photo
        self.alibi_of = alibi_of
        self.printer = printer
        self.console = console  # the ticket's text, besides the printer (None: printer only)
        self.events: EventSink = events if events is not None else _to_logging
        self.vehicles = vehicles if vehicles is not None else EMPTY
        self._seal_limit_said = False  # the refusal is said once per visit, counted always
        self.clock = clock
        self.metrics = StationMetrics()
        self.book = book or VisitBook(recorder.paths.root / BOOK_FILE)
        # Our own read handle: the recorder's belongs to the thread that opened it.
        self._outbox = Outbox.open(recorder.paths.outbox, check=None, create=False)
        self.book.catch_up(self._outbox, self._decode)
        self._pending: Pending = self.book.pending()
        phase = Phase.CAPTURED if self._pending.captured else Phase.IDLE
        self.machine = Weighbridge(config.rule, phase=phase)

    def close(self) -> None:
        self.book.close()
        self._outbox.close()

    # --- inputs ------------------------------------------------------------------------
    def on_port_event(self, event: PortEvent) -> None:
        if isinstance(event, StateChanged):
            if event.port == self.scale_port and event.state is PortState.DOWN:
                self._handle(self.machine.disconnect(event.at), None)
            return
        if isinstance(event, FrameSkipped):
            self.metrics.frame_errors += 1
            return
        self.on_frame(event.frame, event.at)

    def on_frame(self, item: object, at: float) -> None:
        if isinstance(item, WeightReading):
            self._handle(self.machine.feed(item, at), at)
        elif isinstance(item, TagRead):
            known = self.vehicles.lookup(item.tag_id)
            self.enter_vehicle(known.plate if known else item.tag_id.replace(":", "-"), "rfid")
        elif isinstance(item, SealCode):
            if item.text.startswith(VEHICLE_PREFIX):
                self.enter_vehicle(item.text[len(VEHICLE_PREFIX) :], "scan")
            else:
                self.add_seal(item.text)
        elif isinstance(item, CommandReply):
            # MT-SICS I4 (§1.1.4): the indicator's serial number names the scale.
            if item.command == "I4" and item.status == "A" and item.values:
                self.scale = item.values[0]
        elif isinstance(item, FrameError):
            self.metrics.frame_errors += 1

    def tick(self, now: float) -> None:
        self._handle(self.machine.tick(now), None)

    def enter_vehicle(self, vehicle: str, source: str = "manual") -> bool:
        """The vehicle now on (or driving onto) the bridge; False for an invalid id."""
        try:
            validate_identifier(vehicle, "vehicle id")
        except SchemaError as exc:
            self.metrics.rejected_codes += 1
            log.warning("ignored vehicle id: %s", exc)
            return False
        if self._pending.vehicle != vehicle:  # RFID readers repeat a tag many times a second
            self.book.set_vehicle(vehicle, source)
            self._pending = self.book.pending()
            known = self.vehicles.by_plate(vehicle)
            self.events(
                "info", "weighbridge.vehicle", vehicle=vehicle, source=source,
                haulier=known.haulier if known else None,
                registered=known is not None if len(self.vehicles.by_tag) else None,
            )  # fmt: skip
        return True

    def add_seal(self, seal: str) -> bool:
        if not seal.isascii() or not seal.isprintable() or not 0 < len(seal) <= 128:
            self.metrics.rejected_codes += 1
            log.warning("ignored seal code %r: not 1-128 printable ASCII characters", seal)
            return False
        visit = self.book.open_visit(self._pending.vehicle) if self._pending.vehicle else None
        held = set(self._pending.seals) | set(visit.seals if visit else ())
        if seal not in held and len(held) >= self.config.max_seals:
            self.metrics.seals_refused += 1
            self._count("seal_refused")
            if not self._seal_limit_said:
                self._seal_limit_said = True
                self.events(
                    "warning", "weighbridge.seal_refused", seal=seal,
                    vehicle=self._pending.vehicle, seals=len(held),
                    reason=f"this visit already has {len(held)} seals, the most "
                    "weighbridge.max_seals_per_visit allows; further seals are refused until "
                    "the truck leaves (is the scanner stuck or left reading?)",
                )  # fmt: skip
            return False
        added = self.book.add_seal(seal)
        self._pending = self.book.pending()
        self.metrics.seals += added
        return added

    # --- outputs --------------------------------------------------------------------------
    def _handle(self, outputs: list[Any], read_at: float | None) -> None:
        for out in outputs:
            if isinstance(out, Captured):
                self._capture(out, read_at)
            elif isinstance(out, Outcome):
                self._count(out.kind)
                stored = self.recorder.weighing_outcome(
                    out.kind, vehicle=self._pending.vehicle, scale=self.scale, note=out.note
                )
                self.events(
                    "warning", f"weighbridge.{out.kind}", vehicle=self._pending.vehicle,
                    reason=out.note, seq=stored.seq,
                )  # fmt: skip
            elif isinstance(out, ZeroDrift):
                self._count("zero_drift")
                self._zero(out.units, alarm=True)
            elif isinstance(out, ZeroRestored):
                self._zero(out.units, alarm=False)
            elif isinstance(out, VehicleOff):
                self._seal_limit_said = False
                self.book.vehicle_off()
                self._pending = self.book.pending()
            elif not isinstance(out, VehicleOn):  # pragma: no cover - Output is closed
                raise TypeError(f"unexpected output {out!r}")
        self.metrics.zero_units = self.machine.zero_units

    def _capture(self, cap: Captured, read_at: float | None) -> None:
        pending = self._pending
        vehicle = pending.vehicle
        visit = self.book.open_visit(vehicle) if vehicle else None
        stored_tare = self.book.stored_tare(vehicle) if vehicle else None
        p = plan(
            cap.units, vehicle, visit, stored_tare,
            use_stored_tare=self.config.use_stored_tare,
            single_direction=self.config.single_direction,
        )  # fmt: skip
        seals = list(dict.fromkeys((*(visit.seals if visit else ()), *pending.seals)))
        refusal = self.config.implausible(p)
        if refusal is not None:
            self._count("implausible")
            stored_refusal = self.recorder.weighing_outcome(
                "implausible", vehicle=vehicle, scale=self.scale, note=refusal
            )
            self.events(
                "warning", "weighbridge.implausible", vehicle=vehicle, reason=refusal,
                reading_kg=format_kg(cap.units), seq=stored_refusal.seq,
            )  # fmt: skip
            return
        photo = self.photo() if self.photo is not None else None
        alibi = self.alibi_of(cap.reading) if self.alibi_of is not None else None
        stored = self.recorder.weighing(
            gross=p.masses["gross"], tare=p.masses.get("tare"), stage=p.stage, vehicle=vehicle,
            direction=p.direction, seals=seals or None, scale=self.scale, alibi=alibi,
            photo=photo, inbound=p.inbound.inbound if p.inbound else None,
            tare_event=p.tare.event_id if p.tare else None,
        )  # fmt: skip
        if read_at is not None:
            self.metrics.last_capture_latency_s = self.clock() - read_at
        self._count("captured")
        self.metrics.passes[p.stage] = self.metrics.passes.get(p.stage, 0) + 1
        tare, net = p.masses.get("tare"), p.masses.get("net")
        self.events(
            "info", "weighbridge.captured", vehicle=vehicle, **{"pass": p.stage},
            gross_kg=format_kg(p.masses["gross"]),
            tare_kg=None if tare is None else format_kg(tare),
            net_kg=None if net is None else format_kg(net),
            seals=len(seals), seq=stored.seq, event_id=stored.event_id.hex(),
            readings=cap.readings,
        )  # fmt: skip
        body = self._decode(stored)
        assert body is not None  # we just signed it
        self.book.apply(stored, body, p.masses)
        self._pending = self.book.pending()
        if p.complete:
            self._ticket(stored, p, vehicle, tuple(seals), alibi, photo)

    def _ticket(
        self,
        stored: StoredEvent,
        p: Plan,
        vehicle: str | None,
        seals: tuple[str, ...],
        alibi: str | None,
        photo: bytes | None,
    ) -> None:
        cfg = self.recorder.config
        known = self.vehicles.by_plate(vehicle) if vehicle else None
        read_tag = self._pending.source == "rfid" and known is None
        t = tickets.Ticket(
            site=cfg.site_id, device=cfg.device_id, vehicle=vehicle, event_id=stored.event_id,
            seq=stored.seq, time_ms=stored.device_time_ms, stage=p.stage,
            gross=p.masses["gross"], tare=p.masses.get("tare"), net=p.masses.get("net"),
            direction=p.direction,
            inbound_event=p.inbound.inbound if p.inbound else None,
            inbound_time_ms=p.inbound.at_ms if p.inbound else None,
            tare_event=p.tare.event_id if p.tare else None,
            seals=seals, scale=self.scale, alibi=alibi, photo=photo,
            haulier=known.haulier if known else None,
            tag=known.tag if known else vehicle if read_tag else None,
            registered=not read_tag,
        )  # fmt: skip
        self.events("info", "weighbridge.ticket", **tickets.fields(t))
        if self.console is not None:
            self.console(tickets.text(t))
        self.metrics.tickets += 1
        if self.printer is not None:
            try:
                self.printer.print(t)
            except DeviceError as exc:  # expected trouble: paper copy lost, record kept
                self.metrics.ticket_errors += 1
                log.warning("ticket for %s not printed: %s", stored.event_id.hex(), exc)

    def _zero(self, units: int, *, alarm: bool) -> None:
        self.metrics.zero_alarm = alarm
        if alarm:
            note = f"empty bridge reads {format_kg(units)} kg"
            self.recorder.weighing_outcome("zero_drift", scale=self.scale, zero=units, note=note)
            self._outbox.raise_alarm(ZERO_ALARM, f"weighbridge {self.scale}: {note}")
            self.events("warning", "weighbridge.zero_drift", scale=self.scale, reason=note)
        else:
            self._outbox.clear_alarm(ZERO_ALARM)
            self.events(
                "info", "weighbridge.zero_restored", scale=self.scale,
                zero_kg=format_kg(units),
            )  # fmt: skip

    def _count(self, kind: str) -> None:
        self.metrics.outcomes[kind] = self.metrics.outcomes.get(kind, 0) + 1

    def _decode(self, stored: StoredEvent) -> dict[str, Any] | None:
        """The verified body of a weighbridge weighing (has ``pass`` or ``outcome``, not
        manual) under our key; None for any other event."""
        if stored.type != EventType.WEIGHING or stored.kid != self.recorder.key.kid:
            return None
        body = dict(verify_envelope(stored.envelope, self.recorder.key.public_key).payload.body)
        if body.get("manual") or not ({"pass", "outcome"} & set(body)):
            return None
        return body


def weighbridge_ports(port: str, dialect: str, rfid: str, scanner: str) -> list[PortSpec]:
    """The ports a weighbridge reads, as ``DIALECT@URL`` with their settings (the loaded
    config holds the indicator's URL and dialect apart, whichever form the file wrote)."""
    specs = [PortSpec("weighbridge.port", f"{dialect}@{port}")]
    for key, spec in (("weighbridge.rfid", rfid), ("weighbridge.scanner", scanner)):
        if spec:
            specs.append(PortSpec(key, spec))
    return specs


class WeighbridgeWorker:
    """The unattended weighbridge as a supervised worker: port events -> queue -> station."""

    name = "weighbridge"
    STALE_S = 10.0  # the loop turns every TICK_S; a capture waits at most for one fsync

    def __init__(
        self,
        recorder: Recorder,
        bus: PortBus,
        *,
        port: str | None = None,
        dialect: str | None = None,
        rfid: str | None = None,
        scanner: str | None = None,
        config: StationConfig | None = None,
        printer_port: str | None = None,
        photo: Callable[[], bytes | None] | None = None,
        console: Callable[[str], None] | None = None,
        book_path: Path | None = None,
        events: EventSink | None = None,
    ) -> None:
        cfg = recorder.config
        self.recorder = recorder
        self.bus = bus
        self.port = port if port is not None else cfg.wb_port
        self.dialect = dialect if dialect is not None else cfg.wb_dialect
        self.rfid = rfid if rfid is not None else cfg.wb_rfid
        self.scanner = scanner if scanner is not None else cfg.wb_scanner
        self.config = config or StationConfig.from_agent(cfg)
        printer_url = printer_port if printer_port is not None else cfg.wb_printer_port
        self.printer = tickets.SerialTicketPrinter(printer_url) if printer_url else None
        self.photo = photo
        self.console = console
        self.events = events
        self.book_path = book_path
        # A wrong vehicles file stops the start with the file, line and reason (ConfigError).
        self.vehicles = (
            load_vehicles(recorder.paths.root / Path(cfg.wb_vehicles).expanduser())
            if cfg.wb_vehicles
            else EMPTY
        )
        if not self.port:
            raise ValueError("no weighbridge port configured (weighbridge.port)")
        find_dialect(self.dialect)  # PortConfigError when unknown
        self.ports = weighbridge_ports(self.port, self.dialect, self.rfid, self.scanner)
        self.urls = tuple(parse_port_spec(p.spec)[1] for p in self.ports)
        self.subscription: Subscription | None = None
        self.station: Station | None = None
        self.heartbeat = time.monotonic()
        self._manual: queue.Queue[str] = queue.Queue(16)
        self._ran = False
        self._running = False
        self.poll_errors = 0

    @property
    def alive(self) -> bool:
        return self._running and time.monotonic() - self.heartbeat <= self.STALE_S

    def enter_vehicle(self, vehicle: str) -> None:
        """Manual entry from another thread (console, HTTP): only enqueues (STYLE.md §7)."""
        self._manual.put_nowait(vehicle)

    def stats(self) -> dict[str, Any]:
        """The station's counters as plain values (``metrics`` gives them as samples)."""
        m = self.station.metrics if self.station is not None else StationMetrics()
        return {
            "captures_by_outcome": dict(m.outcomes),
            "passes": dict(m.passes),
            "tickets": m.tickets,
            "ticket_errors": m.ticket_errors,
            "frame_errors": m.frame_errors,
            "rejected_codes": m.rejected_codes,
            "zero_drift_kg": float(units_to_kg(m.zero_units)),
            "zero_drift_alarm": m.zero_alarm,
            "capture_latency_s": m.last_capture_latency_s,
        }

    def health(self) -> WorkerHealth:
        ports = {url: str(self.bus.state(url)) for url in self.urls}
        detail: dict[str, object] = {"ports": ports}
        if not self._running:
            return WorkerHealth("stopped" if self._ran else "starting", detail)
        down = [url for url, state in ports.items() if state != PortState.OPEN]
        if down:
            detail["reason"] = "port(s) not open: " + ", ".join(down)
            return WorkerHealth("degraded", detail)
        return WorkerHealth("ok", detail)

    def metrics(self) -> Iterator[Sample]:
        m = self.stats()
        wf = {"workflow": self.name}
        for outcome, n in sorted(m["captures_by_outcome"].items()):
            yield Sample("custody_captures", {**wf, "outcome": outcome}, n)
        for stage, n in sorted(m["passes"].items()):
            yield Sample("custody_weighbridge_passes", {"pass": stage}, n)
        yield Sample("custody_weighbridge_tickets", {"result": "printed"}, m["tickets"])
        yield Sample("custody_weighbridge_tickets", {"result": "error"}, m["ticket_errors"])
        yield Sample("custody_weighbridge_zero_drift_kg", {}, m["zero_drift_kg"])
        yield Sample("custody_weighbridge_zero_drift_alarm", {}, float(m["zero_drift_alarm"]))
        if m["capture_latency_s"] is not None:
            yield Sample("custody_weighbridge_capture_latency_seconds", {}, m["capture_latency_s"])
        if self.subscription is not None:
            yield from self.subscription.queue.samples()

    def run(self, stop: threading.Event) -> None:
        """Until ``stop`` is set; unexpected errors propagate to the supervisor."""
        station = Station(
            self.recorder, self.config, scale=self.port, scale_port=self.port, photo=self.photo,
            printer=self.printer, console=self.console,
            book=VisitBook(self.book_path) if self.book_path else None,
            events=self.events, vehicles=self.vehicles,
        )  # fmt: skip
        self.station = station
        sub = self.subscription = self.bus.subscribe(self.name, self.urls, QUEUE_MAX)
        polling = self.dialect == "mt-sics"
        self._running = self._ran = True
        try:
            next_poll = 0.0
            while not stop.is_set():
                self.heartbeat = now = time.monotonic()
                if polling and now >= next_poll and self.bus.state(self.port) is PortState.OPEN:
                    next_poll = now + SICS_POLL_S
                    self._poll()
                while not self._manual.empty():
                    station.enter_vehicle(self._manual.get_nowait(), "manual")
                try:
                    event = sub.get(timeout=SICS_POLL_S if polling else TICK_S)
                except queue.Empty:
                    station.tick(time.monotonic())
                    continue
                station.on_port_event(event)
                if (
                    polling and isinstance(event, StateChanged) and event.port == self.port
                    and event.state is PortState.OPEN
                ):  # fmt: skip
                    self._poll(b"I4")
        finally:
            self._running = False
            sub.close()
            station.close()

    def _poll(self, command: bytes = b"SI") -> None:
        try:
            self.bus.write(self.port, mt_sics_request(command.decode()))
        except DeviceError as exc:  # the port worker reconnects; the next poll retries
            self.poll_errors += 1
            log.debug("MT-SICS poll not sent: %s", exc)
