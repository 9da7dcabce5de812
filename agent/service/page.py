"""The gateway's status page: ``/`` on the service's HTTP port, for a site supervisor.

Server-rendered HTML (``custody.webpage``), no JavaScript; it reloads itself every 30 s.
It shows the service's health, today's trucks (weighings without a bag, and the signed
outcomes of attempts that yielded no reading) and bags (seal scans, bag weighings and
bags put into lots), each serial port's state and last frame, the outbox backlog and the
time of the last ledger ack.

"Today" is the current UTC day by the records' device time; the lists show the newest
``ROWS_MAX`` records of each kind. Everything is read at request time: the outbox over the
scrape connection of ``OutboxGauges`` (decoded, not re-verified: ``custody-agent events
verify`` verifies), the ports from their running workers. Every value that came from a
device or a scanned code is escaped by ``custody.webpage`` before it enters the markup.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.outbox import Outbox, StoredEvent
from agent.service.workers import PortWorker
from agent.settings import AgentConfig
from agent.status import GatewayStatus
from custody.envelope import peek
from custody.errors import CustodyError
from custody.event import EventType
from custody.mass import format_kg
from custody.webpage import Access, Html, document, iso_ms, read_token, table

__all__ = [
    "ROWS_MAX",
    "BagRow",
    "GatewayPage",
    "PortView",
    "TruckRow",
    "access_for",
    "render",
    "todays_rows",
]

ROWS_MAX = 200  # per list: a busy weighbridge sees well under this many trucks a day
FRAME_TEXT_MAX = 120  # characters of a frame's raw bytes shown

_CAPTURE_TYPES = (str(EventType.WEIGHING), str(EventType.SEAL_SCAN), str(EventType.AGGREGATION))
_STATE_CLASS = {"open": "ok", "ok": "ok", "connecting": "warn", "degraded": "warn"}


@dataclass(frozen=True, slots=True)
class TruckRow:
    time_ms: int
    vehicle: str
    stage: str  # the weighbridge pass: in, out, single
    direction: str
    masses: str  # "gross 31250.0 kg, tare 11200.0 kg"
    seals: str
    outcome: str  # "captured", or the signed outcome of an attempt without a reading


@dataclass(frozen=True, slots=True)
class BagRow:
    time_ms: int
    seal: str
    lot: str
    what: str  # "seal scan", "bag weighing", "added to lot", "removed from lot"
    mass: str


@dataclass(frozen=True, slots=True)
class PortView:
    url: str
    dialect: str
    state: str
    reason: str  # why the port is not open, when it is not
    frame: str  # the last frame's type and raw bytes, printable
    frame_at: float | None  # wall time it arrived


def port_view(worker: PortWorker) -> PortView:
    state = str(worker.reader.state)
    frame = ""
    if worker.last_frame is not None:
        f = worker.last_frame.frame
        raw = getattr(f, "raw", b"")
        frame = f"{type(f).__name__} {_printable(raw) if isinstance(raw, bytes) else ''}"
    return PortView(
        worker.url, worker.dialect, state,
        "" if state == "open" else str(worker.reader.last_error or ""),
        frame.strip(), worker.last_frame_at,
    )  # fmt: skip


def _printable(raw: bytes) -> str:
    """Bytes as text with control and non-ASCII bytes as ``\\xNN`` (escaped again for HTML)."""
    shown = "".join(chr(b) if 0x20 <= b < 0x7F else f"\\x{b:02x}" for b in raw)
    return shown if len(shown) <= FRAME_TEXT_MAX else shown[:FRAME_TEXT_MAX] + "\u2026"


def day_bounds_ms(now_ms: int) -> tuple[int, int]:
    """The UTC day around ``now_ms`` as ``[start, end)`` in milliseconds."""
    day = dt.datetime.fromtimestamp(now_ms / 1000, dt.UTC).date()
    start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
    start_ms = int(start.timestamp() * 1000)
    return start_ms, start_ms + 86_400_000


def todays_rows(outbox: Outbox, now_ms: int) -> tuple[list[TruckRow], list[BagRow]]:
    """Today's trucks and bags from the outbox, newest first, at most ``ROWS_MAX`` each."""
    start, end = day_bounds_ms(now_ms)
    trucks: list[TruckRow] = []
    bags: list[BagRow] = []
    # Captures of both kinds share one newest-first query; a day with more than this many
    # records of one kind shows its newest ROWS_MAX.
    for ev in outbox.captures_between(_CAPTURE_TYPES, start, end, limit=3 * ROWS_MAX):
        body = _body(ev)
        if body is None:
            continue
        if ev.type == EventType.WEIGHING and "bag" not in _mass_fields(body):
            if len(trucks) < ROWS_MAX:
                trucks.append(_truck(ev, body, outbox))
        elif len(bags) < ROWS_MAX:
            bags.extend(_bags(ev, body, outbox))
    return trucks, bags[:ROWS_MAX]


def _body(ev: StoredEvent) -> Mapping[str, Any] | None:
    try:
        payload = peek(ev.envelope)
    except CustodyError:
        return None  # reported by `custody-agent events verify`, not guessed at here
    body = payload.get("body")
    return body if isinstance(body, Mapping) else None


def _mass_fields(body: Mapping[str, Any]) -> list[str]:
    mass = body.get("mass")
    return [str(k) for k in mass] if isinstance(mass, Mapping) else []


def _masses(ev: StoredEvent, outbox: Outbox) -> str:
    opened = outbox.openings(ev.event_id)
    return ", ".join(f"{name} {format_kg(v)} kg" for name, (v, _) in sorted(opened.items()))


def _truck(ev: StoredEvent, body: Mapping[str, Any], outbox: Outbox) -> TruckRow:
    seals = body.get("seals")
    return TruckRow(
        ev.device_time_ms,
        str(body.get("vehicle", "")),
        str(body.get("pass", "")),
        str(body.get("direction", "")),
        _masses(ev, outbox) if "mass" in body else "",
        ", ".join(str(s) for s in seals) if isinstance(seals, list) else "",
        str(body.get("outcome", "captured")),
    )


def _bags(ev: StoredEvent, body: Mapping[str, Any], outbox: Outbox) -> list[BagRow]:
    lot = str(body.get("lot", ""))
    if ev.type == EventType.SEAL_SCAN:
        return [BagRow(ev.device_time_ms, str(body.get("seal", "")), lot, "seal scan", "")]
    if ev.type == EventType.WEIGHING:
        seals = body.get("seals")
        seal = ", ".join(str(s) for s in seals) if isinstance(seals, list) else ""
        return [BagRow(ev.device_time_ms, seal, lot, "bag weighing", _masses(ev, outbox))]
    what = "added to lot" if body.get("action") == "ADD" else "removed from lot"
    children = body.get("children")
    seals = [str(c) for c in children] if isinstance(children, list) else []
    return [BagRow(ev.device_time_ms, s, lot, what, "") for s in seals]


def _ago(then_s: float | None, now_s: float) -> str:
    if then_s is None:
        return "\u2014"
    return f"{max(0.0, now_s - then_s):.0f} s ago"


def render(
    *,
    device_id: str,
    site_id: str,
    health: Mapping[str, Any],
    status: GatewayStatus,
    last_ack_ms: int | None,
    trucks: Iterable[TruckRow],
    bags: Iterable[BagRow],
    ports: Iterable[PortView],
    now_ms: int,
) -> bytes:
    """The page's HTML; every argument's strings are escaped here."""
    now_s = now_ms / 1000
    overall = str(health.get("status", "unknown"))
    summary = table(
        ("service", "backlog (not yet acked)", "oldest unacked", "last ledger ack",
         "rejected by the ledger", "disk budget used", "clock"),
        [(
            overall,
            sum(status.events.get(s, 0) for s in ("pending", "sent")),
            "\u2014" if status.oldest_unacked_age_s is None
            else f"{status.oldest_unacked_age_s:.0f} s",
            iso_ms(last_ack_ms),
            status.events.get("rejected", 0),
            f"{100 * status.disk_used_ratio:.1f} %",
            status.clock_quality or "\u2014",
        )],
        table_id="summary", row_class=[_STATE_CLASS.get(overall, "bad")],
    )  # fmt: skip
    workers = health.get("workers", {})
    worker_rows = [
        (name, str(w.get("state", "")), _worker_detail(w))
        for name, w in sorted(workers.items())
        if isinstance(w, Mapping)
    ]
    ports = list(ports)
    trucks = list(trucks)
    bags = list(bags)
    alarms = [(a["kind"], a["message"], iso_ms(a["raised_ms"])) for a in status.alarms]
    reasons = sorted(status.rejected_reasons.items(), key=lambda kv: (-kv[1], kv[0]))
    sections: list[tuple[str, Html]] = [
        ("Summary", summary),
        (f"Trucks today ({len(trucks)})", table(
            ("time", "vehicle", "pass", "direction", "masses", "seals", "outcome"),
            [(iso_ms(t.time_ms), t.vehicle, t.stage, t.direction, t.masses, t.seals, t.outcome)
             for t in trucks],
            table_id="trucks", empty="no trucks today",
            row_class=["" if t.outcome == "captured" else "warn" for t in trucks],
        )),
        (f"Bags and seals today ({len(bags)})", table(
            ("time", "seal", "lot", "what", "mass"),
            [(iso_ms(b.time_ms), b.seal, b.lot, b.what, b.mass) for b in bags],
            table_id="bags", empty="no bags today",
        )),
        ("Serial ports", table(
            ("port", "dialect", "state", "reason", "last frame", "received"),
            [(p.url, p.dialect, p.state, p.reason, p.frame or "\u2014", _ago(p.frame_at, now_s))
             for p in ports],
            table_id="ports", empty="no serial ports configured",
            row_class=[_STATE_CLASS.get(p.state, "bad") for p in ports],
        )),
        ("Workers", table(
            ("worker", "state", "detail"), worker_rows, table_id="workers",
            row_class=[_STATE_CLASS.get(r[1], "bad") for r in worker_rows],
        )),
        ("Alarms", table(
            ("kind", "message", "raised"), alarms, table_id="alarms", empty="no alarms",
            row_class=["bad"] * len(alarms),
        )),
        ("Rejected by the ledger", table(
            ("reason", "records"), reasons, table_id="rejections", empty="no rejections",
        )),
    ]  # fmt: skip
    subtitle = f"device {device_id}, site {site_id}; {iso_ms(now_ms)}; reloads every 30 s"
    return document(f"Gateway {device_id}", subtitle, sections)


def _worker_detail(w: Mapping[str, Any]) -> str:
    keep = ("reason", "last_error", "connected", "broker", "port_state")
    return ", ".join(f"{k}: {w[k]}" for k in keep if k in w and w[k] not in (None, ""))


class GatewayPage:
    """Builds the page from the running service's parts, on an HTTP thread."""

    def __init__(
        self,
        *,
        device_id: str,
        site_id: str,
        health: Callable[[], Mapping[str, Any]],
        status: Callable[[], GatewayStatus],
        read: Callable[[Callable[[Outbox], Any]], Any],
        ports: Callable[[], Iterable[PortWorker]],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.device_id = device_id
        self.site_id = site_id
        self.health = health
        self.status = status
        self.read = read  # runs a function on the outbox under the scrape connection's lock
        self.ports = ports
        self.wall = wall

    def __call__(self) -> bytes:
        now_ms = int(self.wall() * 1000)

        def rows(outbox: Outbox) -> tuple[list[TruckRow], list[BagRow], int | None]:
            trucks, bags = todays_rows(outbox, now_ms)
            return trucks, bags, outbox.last_acked_ms()

        trucks, bags, last_ack = self.read(rows)
        return render(
            device_id=self.device_id, site_id=self.site_id, health=self.health(),
            status=self.status(), last_ack_ms=last_ack, trucks=trucks, bags=bags,
            ports=sorted((port_view(w) for w in self.ports()), key=lambda p: p.url),
            now_ms=now_ms,
        )  # fmt: skip


def access_for(cfg: AgentConfig, data_dir: Path) -> Access:
    """Who may read the service's HTTP port: ``service.http_token_file``'s token, if set."""
    token = None
    if cfg.http_token_file:
        path = Path(cfg.http_token_file).expanduser()
        path = path if path.is_absolute() else data_dir / path
        token = read_token(path, source=cfg.source, key="service.http_token_file")
    return Access(cfg.http_host, token, "service.http_token_file")
