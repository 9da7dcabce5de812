"""The agent's side of the sync link: the outbox as the uplink's ``DeliveryStore``.

``custody-agent sync --once`` drains what is pending through ``sync.Uplink``
(progress bar, then exit); the gateway service (``agent.service``) runs the same uplink
as a worker.

One uplink speaks for one device key (acks are per key). After a key rotation
(agent/rotation.py) the outbox holds several chains: they drain oldest key
first, because the ledger enrols the new key only when it logs the old chain's
``key_rotation`` event, and records of a key it does not know yet get no ack.

``sync_from_db`` sends what a broken gateway's outbox (recovered from its SD
card) still holds: the envelopes are already signed, so only the outbox, the
broker settings and ledger keys of the gateway doing the sending, and a client
certificate for the OLD device id (the broker's ACL admits a device's events
only from its own certificate CN) are needed; the old signing key is not.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.identity import load_device_key, load_ledger_keys
from agent.outbox import Outbox
from agent.outbox.delivery import (
    apply_ack,
    head_seq,
    mark_sent,
    next_to_send,
    requeue_sent,
)
from agent.paths import DataDir
from agent.settings import AgentConfig, load_config
from custody.envelope import peek
from custody.errors import ConfigError, CustodyError, SyncError
from custody.keys import LedgerPublicKeys
from sync.mqtt import BrokerConfig
from sync.uplink import Outgoing, Uplink, UplinkStats

__all__ = [
    "OutboxDelivery",
    "broker_config",
    "build_uplink",
    "drain_order",
    "sync_from_db",
    "sync_once",
]


class OutboxDelivery:
    """``sync.uplink.DeliveryStore`` over one device key's records in the outbox."""

    def __init__(self, outbox: Outbox, kid: bytes) -> None:
        self.outbox = outbox
        self.kid = kid

    def next_to_send(
        self, max_events: int, max_bytes: int, *, from_seq: int = 1, before_seq: int | None = None
    ) -> list[Outgoing]:
        found = next_to_send(
            self.outbox, self.kid, max_events=max_events, max_bytes=max_bytes,
            from_seq=from_seq, before_seq=before_seq,
        )  # fmt: skip
        return [Outgoing(e.seq, e.event_id, e.envelope) for e in found]

    def mark_sent(self, seqs: list[int]) -> None:
        mark_sent(self.outbox, self.kid, seqs)

    def apply_ack(
        self, seq: int, event_id: bytes, rejected: list[tuple[int, bytes, str]]
    ) -> tuple[int, int]:
        outcome = apply_ack(self.outbox, self.kid, seq=seq, event_id=event_id, rejected=rejected)
        return outcome.acked, outcome.rejected

    def requeue_sent(
        self, sent_before_ms: int | None, *, from_seq: int = 1, before_seq: int | None = None
    ) -> int:
        return requeue_sent(
            self.outbox, self.kid, sent_before_ms=sent_before_ms,
            from_seq=from_seq, before_seq=before_seq,
        )  # fmt: skip

    def head_seq(self) -> int:
        return head_seq(self.outbox, self.kid)

    def unacked(self) -> int:
        return self.outbox.unacked_count(self.kid)


def broker_config(cfg: AgentConfig, data_dir: Path, url: str | None) -> BrokerConfig:
    broker = url or cfg.broker_url
    if not broker:
        raise ConfigError(cfg.source, "sync.broker", "no broker configured (or pass --broker)")

    def path(value: str) -> Path | None:
        if not value:
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else data_dir / p

    return BrokerConfig(
        url=broker,
        # The certificate's CN is the device id, and the broker admits a certificate only under
        # its own CN as client id (deploy/mosquitto/custody_identity.c).
        client_id=cfg.device_id,
        ca_file=path(cfg.ca_file),
        cert_file=path(cfg.cert_file),
        key_file=path(cfg.key_file),
    )


def build_uplink(data_dir: Path, outbox: Outbox, broker: BrokerConfig, **overrides: Any) -> Uplink:
    """An ``Uplink`` for the gateway in ``data_dir`` over an open ``outbox``.

    Settings come from the gateway's ``config.toml``; ``overrides`` are passed
    to ``Uplink`` as keyword arguments (benchmarks and the service use them).
    """
    paths = DataDir(data_dir)
    cfg = load_config(paths.config)
    key = load_device_key(paths.device_key)
    options: dict[str, Any] = {
        "window": cfg.sync_window,
        "max_bytes_per_s": cfg.max_bytes_per_s,
        "ack_timeout_s": cfg.ack_timeout_s,
        **overrides,
    }
    return Uplink(
        OutboxDelivery(outbox, key.kid),
        device_id=cfg.device_id,
        device_kid=key.kid,
        boot=outbox.boot_counter(),
        ledger=load_ledger_keys(cfg.ledger_keys_path(data_dir)),
        broker=broker,
        **options,
    )


def drain_order(outbox: Outbox, current_kid: bytes | None = None) -> list[bytes]:
    """Keys with records the ledger has not acked, oldest key first (``current_kid`` last)."""
    with_backlog = [kid for kid in outbox.kids() if outbox.has_unacked(kid)]
    return sorted(with_backlog, key=lambda kid: kid == current_kid)  # stable: oldest first


def _drain_keys(
    outbox: Outbox,
    kids: list[bytes],
    *,
    device_id: str,
    ledger: LedgerPublicKeys,
    broker: BrokerConfig,
    timeout_s: float | None,
    progress: Callable[[int], None] | None,
    options: dict[str, Any],
) -> UplinkStats:
    """Run one uplink per key, in order, each until the ledger has acked all of its records."""
    total = UplinkStats()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    done = 0
    for kid in kids:
        remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
        if remaining == 0.0:
            break
        uplink = Uplink(
            OutboxDelivery(outbox, kid), device_id=device_id, device_kid=kid,
            boot=outbox.boot_counter(), ledger=ledger, broker=broker, **options,
        )  # fmt: skip

        def step(acked: int, base: int = done) -> None:
            if progress is not None:
                progress(base + acked)

        stats = uplink.run(threading.Event(), until_drained=True, timeout_s=remaining,
                           progress=step)  # fmt: skip
        done += stats.acked
        _add(total, stats)
        if OutboxDelivery(outbox, kid).unacked():
            break  # a later key cannot be accepted before this chain's tail is logged
    return total


def _add(total: UplinkStats, s: UplinkStats) -> None:
    for name in (
        "batches_sent", "events_sent", "payload_bytes", "acks", "acked", "rejected",
        "bad_acks", "refused_publishes", "retried_publishes", "requeued", "live_batches",
        "reconnects",
    ):  # fmt: skip
        setattr(total, name, getattr(total, name) + getattr(s, name))
    total.last_ack_ms = s.last_ack_ms or total.last_ack_ms
    total.bad_ack_reasons = [*total.bad_ack_reasons, *s.bad_ack_reasons][-10:]


def sync_once(
    data_dir: Path,
    *,
    broker_url: str | None = None,
    timeout_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[UplinkStats, dict[str, int]]:
    """Drain the outbox: publish every pending record until the ledger acks all of them.

    Every key's chain drains, retired keys (before a rotation) first.
    """
    paths = DataDir(data_dir)
    cfg = load_config(paths.config)
    outbox = Outbox.open(paths.outbox, check=None, create=False)
    try:
        key = load_device_key(paths.device_key)
        kids = drain_order(outbox, key.kid) or [key.kid]
        stats = _drain_keys(
            outbox, kids, device_id=cfg.device_id,
            ledger=load_ledger_keys(cfg.ledger_keys_path(data_dir)),
            broker=broker_config(cfg, data_dir, broker_url), timeout_s=timeout_s,
            progress=progress, options=_options(cfg),
        )  # fmt: skip
        return stats, outbox.counts_by_state()
    finally:
        outbox.close()


def _options(cfg: AgentConfig) -> dict[str, Any]:
    return {
        "window": cfg.sync_window,
        "max_bytes_per_s": cfg.max_bytes_per_s,
        "ack_timeout_s": cfg.ack_timeout_s,
    }


def outbox_device_id(outbox: Outbox, source: str) -> str:
    """The device id the outbox's records are signed for (one per outbox)."""
    ids: set[str] = set()
    for kid in outbox.kids():
        first = next(outbox.iter_chain(kid), None)
        if first is None:
            continue
        try:
            payload = peek(first.envelope)
        except CustodyError as exc:
            raise ConfigError(source, "-", f"undecodable record in the outbox: {exc}") from exc
        ids.add(str(payload.get("dev")))
    if len(ids) != 1:
        raise ConfigError(source, "-", f"expected records of one device, found {sorted(ids)}")
    return ids.pop()


def sync_from_db(
    data_dir: Path,
    db_file: Path,
    *,
    cert_file: Path | None = None,
    key_file: Path | None = None,
    broker_url: str | None = None,
    timeout_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[str, UplinkStats, dict[str, int]]:
    """Send the unacked records of another gateway's outbox file (see the module docstring).

    ``data_dir`` is the gateway doing the sending: its broker URL, CA and pinned ledger keys
    are used. ``cert_file``/``key_file`` are a client certificate for the OLD device id (the
    one recovered from its card, or one the CA issues for the recovery); without them the
    configured certificate is used, which the broker only accepts when its CN is that id.
    The file's records are marked acked in place, so the same file can be resumed.
    Returns the old device id, the counters and the file's counts by state.
    """
    paths = DataDir(data_dir)
    if db_file.resolve() == paths.outbox.resolve():
        raise ConfigError(str(db_file), "-", "this is the gateway's own outbox; use `sync --once`")
    if not db_file.is_file():
        raise ConfigError(str(db_file), "-", "no such outbox file")
    cfg = load_config(paths.config)
    outbox = Outbox.open(db_file, check=None, create=False)
    try:
        device_id = outbox_device_id(outbox, str(db_file))
        base = broker_config(cfg, data_dir, broker_url)
        broker = BrokerConfig(
            url=base.url,
            # The old gateway's own client id, the only one the broker admits for a certificate
            # of that id: its persistent session (and any acks the broker queued for it) is taken
            # over; the old gateway is gone.
            client_id=device_id,
            ca_file=base.ca_file,
            cert_file=cert_file or base.cert_file,
            key_file=key_file or base.key_file,
        )
        kids = drain_order(outbox)
        if not kids:
            return device_id, UplinkStats(), outbox.counts_by_state()
        stats = _drain_keys(
            outbox, kids, device_id=device_id,
            ledger=load_ledger_keys(cfg.ledger_keys_path(data_dir)), broker=broker,
            timeout_s=timeout_s, progress=progress, options=_options(cfg),
        )  # fmt: skip
        if stats.refused_publishes:
            raise SyncError(f"the broker refused the records of {device_id}")
        return device_id, stats, outbox.counts_by_state()
    finally:
        outbox.close()
