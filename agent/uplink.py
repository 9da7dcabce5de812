"""The agent's side of the sync link: the outbox as the uplink's ``DeliveryStore``.

``custody-agent sync --once`` drains what is pending through ``sync.Uplink``
(progress bar, then exit); the gateway service (issue 5) runs the same uplink
as a worker.
"""

from __future__ import annotations

import threading
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
from custody.errors import ConfigError
from sync.mqtt import BrokerConfig
from sync.uplink import Outgoing, Uplink, UplinkStats

__all__ = ["OutboxDelivery", "broker_config", "build_uplink", "sync_once"]


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
        # Called on every turn of the uplink loop: an index range (events_state),
        # not a GROUP BY over the whole table.
        row = self.outbox.conn.execute(
            "SELECT COUNT(*) FROM events WHERE kid = ? AND state IN ('pending', 'sent')",
            (self.kid,),
        ).fetchone()
        return int(row[0])


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
        client_id=f"custody-{cfg.device_id}",
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


def sync_once(
    data_dir: Path,
    *,
    broker_url: str | None = None,
    timeout_s: float | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[UplinkStats, dict[str, int]]:
    """Drain the outbox: publish every pending record until the ledger acks all of them."""
    paths = DataDir(data_dir)
    cfg = load_config(paths.config)
    outbox = Outbox.open(paths.outbox, check=None, create=False)
    try:
        uplink = build_uplink(data_dir, outbox, broker_config(cfg, data_dir, broker_url))
        stats = uplink.run(
            threading.Event(), until_drained=True, timeout_s=timeout_s, progress=progress
        )
        return stats, outbox.counts_by_state()
    finally:
        outbox.close()
