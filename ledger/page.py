"""The ledger's status page: ``/`` on ``custody-ledger run``'s HTTP port, for its operator.

Server-rendered HTML (``custody.webpage``), no JavaScript; it reloads itself every 30 s.
It shows every enrolled device (last seen, the backlog waiting at the ledger for a
missing record, rejections kept and the newest one's reason, forks), the alarms (forks
and dead letters, as ``custody-ledger alarms``) and the lots of the newest records.

The HTTP thread never touches the intake's store connection (``ledger.metrics``): each
request opens a store of its own through ``open_store``, reads, and closes it. Record
bodies are decoded, not re-verified (they were verified when logged). Every value that
came from a device, a scanned code or a rejection is escaped by ``custody.webpage``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from custody.envelope import peek
from custody.errors import CustodyError
from custody.event import EventType
from custody.webpage import Html, document, iso_ms, table
from ledger.store import Store

__all__ = ["LOTS_FROM_RECORDS", "LedgerPage", "LotRow", "recent_lots"]

LOTS_FROM_RECORDS = 2000  # the newest lot records read for "recent lots"
LOTS_MAX = 50


@dataclass
class LotRow:
    lot: str
    last_ms: int
    devices: set[str] = field(default_factory=set)
    bags: int = 0  # bags added minus removed, in the records read
    closed: bool = False  # a lot contribution (the site's signed total) is logged


def recent_lots(store: Store) -> list[LotRow]:
    """Lots named by the newest ``LOTS_FROM_RECORDS`` aggregation and lot contribution
    records, the most recently active first."""
    types = (str(EventType.AGGREGATION), str(EventType.LOT_CONTRIBUTION))
    lots: dict[str, LotRow] = {}
    for event, received_ms in store.recent_events(types, LOTS_FROM_RECORDS):
        body = _body(event.envelope)
        lot = body.get("lot")
        if not isinstance(lot, str):
            continue
        row = lots.setdefault(lot, LotRow(lot, received_ms))
        row.devices.add(event.device_id)
        if event.type == EventType.LOT_CONTRIBUTION:
            row.closed = True
        else:
            children = body.get("children")
            n = len(children) if isinstance(children, list) else 0
            row.bags += n if body.get("action") == "ADD" else -n
    return sorted(lots.values(), key=lambda r: (-r.last_ms, r.lot))[:LOTS_MAX]


def _body(envelope: bytes) -> Mapping[str, Any]:
    try:
        payload = peek(envelope)
    except CustodyError:
        return {}
    body = payload.get("body")
    return body if isinstance(body, Mapping) else {}


def _device_rows(store: Store, now_ms: int) -> tuple[list[tuple[object, ...]], list[str]]:
    seen = store.last_received_by_device()
    rejected = store.rejections_by_device()
    forks: dict[str, int] = {}
    for fork in store.forks():
        forks[fork.device_id] = forks.get(fork.device_id, 0) + 1
    keys: dict[str, list[Any]] = {}
    for k in store.device_keys():
        keys.setdefault(k.device_id, []).append(k)
    rows: list[tuple[object, ...]] = []
    classes: list[str] = []
    for device_id in sorted(keys | seen.keys() | rejected.keys()):
        ks = keys.get(device_id, [])
        current = [k for k in ks if not k.revoked]
        state = "enrolled" if current else "revoked" if ks else "not enrolled"
        head = max((store.head(k.kid)[0] for k in ks), default=0)
        waiting = sum(store.waiting_count(k.kid) for k in ks)
        n_rejected, last_ms, reason = rejected.get(device_id, (0, None, ""))
        rows.append((
            device_id, ", ".join(sorted({k.site_id for k in ks})), state, head,
            iso_ms(seen.get(device_id)), waiting, n_rejected,
            f"{iso_ms(last_ms)}: {reason}" if reason else "\u2014", forks.get(device_id, 0),
        ))  # fmt: skip
        bad = forks.get(device_id) or state != "enrolled"
        classes.append("bad" if bad else "warn" if n_rejected or waiting else "")
    return rows, classes


class LedgerPage:
    """Builds the page on an HTTP thread from a store of its own."""

    def __init__(self, open_store: Callable[[], Store], wall: Callable[[], float] = time.time):
        self.open_store = open_store
        self.wall = wall

    def __call__(self) -> bytes:
        now_ms = int(self.wall() * 1000)
        store = self.open_store()
        try:
            devices, classes = _device_rows(store, now_ms)
            forks = store.forks()
            dead = store.dead_letters()
            lots = recent_lots(store)
            log_size = store.log_size()
        finally:
            store.close()
        alarms = [
            ("fork", a.device_id, f"kid {a.kid.hex()} seq {a.seq}: kept "
             f"{a.kept_event_id.hex()[:16]}, rejected {a.forked_event_id.hex()[:16]} "
             f"({a.count}x)", iso_ms(a.first_seen_ms))
            for a in forks
        ] + [
            ("dead letter", d.device_id, f"{len(d.payload)} bytes on {d.topic}: {d.error} "
             f"({d.count}x)", iso_ms(d.first_seen_ms))
            for d in dead
        ]  # fmt: skip
        sections: list[tuple[str, Html]] = [
            (f"Devices ({len(devices)})", table(
                ("device", "site", "key", "head seq", "last seen", "waiting (backlog)",
                 "rejected", "newest rejection", "forks"),
                devices, table_id="devices", empty="no devices enrolled", row_class=classes,
            )),
            (f"Alarms ({len(alarms)})", table(
                ("alarm", "device", "what", "first seen"), alarms, table_id="alarms",
                empty="no alarms", row_class=["bad"] * len(alarms),
            )),
            (f"Recent lots ({len(lots)})", table(
                ("lot", "devices", "bags", "site total logged", "last record"),
                [(r.lot, ", ".join(sorted(r.devices)), r.bags, "yes" if r.closed else "no",
                  iso_ms(r.last_ms)) for r in lots],
                table_id="lots", empty="no lots yet",
            )),
        ]  # fmt: skip
        subtitle = f"log size {log_size}; {iso_ms(now_ms)}; reloads every 30 s"
        return document("Custody ledger", subtitle, sections)
