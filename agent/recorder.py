"""Captures: the library call behind every way a record is taken.

``Recorder`` opens a gateway data directory (config, device key, pinned ledger
keys, outbox), runs the crypto self-test, increments the boot counter and
records a signed ``boot`` event, then turns captures into drafts (committing
masses and sealing their openings in the caller's thread, which is the
expensive, parallel part) and hands them to the single ``OutboxWriter``.
A capture method returns only once its event is durable.
"""

from __future__ import annotations

import contextlib
import fcntl
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from pathlib import Path
from types import TracebackType
from typing import Any

import custody
from agent import balance, rotation
from agent.clock import Clock, PositionSource, SystemClock
from agent.identity import create_device_key, load_device_key, load_ledger_keys
from agent.outbox import DiskBudget, Draft, Outbox, OutboxWriter, StoredEvent
from agent.outbox.writer import ChainMovedError
from agent.paths import DataDir
from agent.settings import AgentConfig, load_config
from custody.commitment import (
    MASS_UNIT_G,
    MAX_SUM_UNITS,
    Opening,
    commit_masses,
    seal_openings,
)
from custody.envelope import EventSigner, verify_envelope
from custody.errors import CaptureError, InvalidMassError, NotInitialisedError
from custody.event import MAX_TEXT, EventType, next_seq
from custody.files import move_file
from custody.group import ED25519
from custody.keys import DeviceKey, LedgerPublicKeys
from custody.mass import units_to_kg

__all__ = ["Recorder"]

# Captures say where they were taken when the clock knows (a GNSS receiver's fix); system
# and proof records do not: a checkpoint's place would say nothing about the mass it sums.
POSITIONED = frozenset({EventType.WEIGHING, EventType.SEAL_SCAN, EventType.AGGREGATION})
# A checkpoint is prepared again when another process wrote meanwhile; it settles at once
# unless something writes without pause.
CHECKPOINT_ATTEMPTS = 20


class Recorder:
    """An open gateway: records captures durably and signed."""

    def __init__(
        self,
        data_dir: Path,
        *,
        clock: Clock | None = None,
        boot_reason: str = "start",
    ) -> None:
        self.paths = DataDir(data_dir)
        self._checkpoint_mutex = threading.Lock()
        if not self.paths.config.exists():
            raise NotInitialisedError(f"{data_dir}: not initialised (run `custody-agent init`)")
        self.config: AgentConfig = load_config(self.paths.config)
        ED25519.self_test()
        # Build the small-value table of H now (~25 ms), not inside the first capture.
        ED25519.mul_h_small(1)
        self.key: DeviceKey = load_device_key(self.paths.device_key)
        self.ledger_keys: LedgerPublicKeys | None = _optional_ledger_keys(
            self.config.ledger_keys_path(data_dir)
        )
        self.clock: Clock = clock or SystemClock(self.config.earliest_valid_ms)
        self.signer = EventSigner(self.key)
        self.outbox = Outbox.open(
            self.paths.outbox, check=self.config.startup_check, salvage_verify=self._verifies
        )
        report = self.outbox.report
        if report.quarantined is not None and report.salvaged == 0:
            self._replace_key_after_lost_chain()
        recovered = rotation.recover(self.paths, self.outbox, self.key)
        if recovered is not None:  # a rotation a crash interrupted after its event
            self.key, self.signer = recovered, EventSigner(recovered)
        self.boot = self.outbox.next_boot()
        mib = 2**20
        self.writer = OutboxWriter(
            self.paths.outbox,
            self.signer,
            device_id=self.config.device_id,
            site_id=self.config.site_id,
            boot=self.boot,
            budget=DiskBudget(
                limit_bytes=self.config.budget_mb * mib,
                alarm_bytes=self.config.budget_mb * mib * self.config.alarm_percent // 100,
                min_free_bytes=self.config.min_free_mb * mib,
            ),
            batch_max=self.config.batch_max,
        ).start()
        body: dict[str, Any] = {"software": f"cobalt-custody {custody.__version__}"}
        body["reason"] = boot_reason
        if report.quarantined is not None:
            body["quarantined"] = str(report.quarantined.name)
        self.boot_event = self.record(EventType.BOOT, body)

    # --- capture API ----------------------------------------------------------------
    def weighing(
        self,
        *,
        gross: int | None = None,
        tare: int | None = None,
        bag: int | None = None,
        manual: bool = False,
        stage: str | None = None,
        vehicle: str | None = None,
        lot: str | None = None,
        direction: str | None = None,
        seals: list[str] | None = None,
        note: str | None = None,
        scale: str | None = None,
        alibi: str | None = None,
        photo: bytes | None = None,
        inbound: bytes | None = None,
        tare_event: bytes | None = None,
    ) -> StoredEvent:
        """A weighing; masses in integer units (``custody.mass.kg_to_units``).

        ``stage`` is the weighbridge pass (``in``, ``out`` or ``single``, signed as
        ``pass``); ``direction`` says whether material was received or shipped.
        ``inbound`` is the event id of the pass-in weighing a pass-out completes;
        ``tare_event`` the weighing a stored tare was measured in.
        """
        masses = {
            n: v for n, v in (("gross", gross), ("tare", tare), ("bag", bag)) if v is not None
        }
        if not masses:
            raise CaptureError("a weighing needs at least one mass (gross, tare or bag)")
        fields = {
            "pass": stage, "vehicle": vehicle, "lot": lot, "direction": direction,
            "seals": seals, "note": note, "scale": scale, "alibi": alibi, "photo": photo,
            "inbound": inbound, "tare_event": tare_event,
        }  # fmt: skip
        # No checkpoint after an output: checkpoints follow a fixed schedule (the service's
        # checkpoint worker), so their number and times never say how many bags were weighed
        # (docs/zk-summaries.md §1, §6).
        return self.record(EventType.WEIGHING, _body(fields, manual), masses=masses)

    def weighing_outcome(
        self,
        outcome: str,
        *,
        stage: str | None = None,
        vehicle: str | None = None,
        scale: str | None = None,
        zero: int | None = None,
        note: str | None = None,
    ) -> StoredEvent:
        """A weighbridge attempt that gave no reading (``unstable``, ``overload``,
        ``left_unweighed``, ``disconnected``) or an empty bridge off zero
        (``zero_drift``, ``zero`` in signed mass units): signed, and without a mass."""
        fields = {
            "outcome": outcome, "pass": stage, "vehicle": vehicle, "scale": scale,
            "zero": zero, "note": note,
        }  # fmt: skip
        return self.record(EventType.WEIGHING, _body(fields, False))

    def checkpoint(self) -> StoredEvent:
        """Sign the chain's running sums of inputs and outputs (docs/zk-summaries.md §1).

        Serialised across processes sharing the outbox (a lock file in the data dir), so epochs
        never repeat; ``upto`` names the head it covers, so records another process writes
        meanwhile simply fall into the next checkpoint.
        """
        with self._checkpoint_lock():
            return self._checkpoint_locked()

    def lot_close(self, lot: str) -> tuple[StoredEvent, StoredEvent]:
        """Commit to this gateway's share of ``lot`` (the sum of its bags), then checkpoint.

        Refused when the lot has no bags here or was closed already (a second contribution
        would count its bags twice).
        """
        kid = self.key.kid
        with self._checkpoint_lock():
            if balance.lot_closed(self.outbox, kid, lot):
                raise CaptureError(f"lot {lot} is already closed on this gateway")
            total, bags = balance.lot_bags(self.outbox, kid, lot)
            if bags == 0:
                raise CaptureError(f"no bags of lot {lot} were weighed on this gateway")
            contribution = self.record(
                EventType.LOT_CONTRIBUTION, {"lot": lot}, masses={"total": total}
            )
            return contribution, self._checkpoint_locked()

    def declare_stock(self, units: int, *, note: str | None = None) -> StoredEvent:
        """Sign the site's opening stock: the base of its mass balance (docs/protocol.md §3).

        ``units`` is the stock in mass units, committed and sealed like any mass. A site declares
        its opening stock once (the registry authority pins that record), so a second declaration
        from this outbox is refused, under any of its keys.
        """
        if isinstance(units, bool) or not isinstance(units, int) or not 0 <= units <= MAX_SUM_UNITS:
            raise InvalidMassError(
                f"opening stock must be a whole number of {MASS_UNIT_G / 1000} kg units from 0 to "
                f"{MAX_SUM_UNITS} ({units_to_kg(MAX_SUM_UNITS)} kg), got {units!r}"
            )
        if note is not None and not 0 < len(note) <= MAX_TEXT:
            raise CaptureError(f"the note must be 1-{MAX_TEXT} characters, got {len(note)}")
        body = {} if note is None else {"note": note}
        # Under the cross-process lock, so two processes cannot both find none and both sign.
        with self._checkpoint_lock():
            existing = self._opening_stock()
            if existing is not None:
                raise CaptureError(
                    "this gateway has already declared its site's opening stock (event "
                    f"{existing.event_id.hex()}); a site declares it once"
                )
            return self.record(EventType.OPENING_STOCK, body, masses={"stock": units})

    def rotate_key(self) -> StoredEvent:
        """Announce a new signing key under the current one, then sign with it (agent/rotation.py).

        The ``key_rotation`` event is the old chain's last record; the new key starts its own
        chain at seq 1. The old key is kept under ``retired-keys/``. The writer is drained and
        restarted around the swap so that no record is signed by the old key after the event.
        """
        old = self.key
        new = rotation.prepare(self.paths)
        with self._checkpoint_lock():
            if self.ledger_keys is not None:
                # The old chain's sums are closed right before it ends: a verifier accepts
                # the rotation as the end of the chain only when it directly follows a
                # checkpoint (docs/zk-summaries.md §2.3), so nothing between can go uncounted.
                self._checkpoint_locked()
            event = self.record(EventType.KEY_ROTATION, {"new_key": new.public_key})
        writer = self.writer
        writer.close()
        rotation.commit(self.paths, old, new)
        self.key, self.signer = new, EventSigner(new)
        self.writer = OutboxWriter(
            self.paths.outbox, self.signer, device_id=self.config.device_id,
            site_id=self.config.site_id, boot=self.boot, budget=writer.budget,
            batch_max=writer.batch_max,
        ).start()  # fmt: skip
        return event

    def seal_scan(self, seal: str, *, manual: bool = False, **fields: Any) -> StoredEvent:
        return self.record(EventType.SEAL_SCAN, _body({"seal": seal, **fields}, manual))

    def void(self, target: bytes, reason: str) -> StoredEvent:
        """A signed correction pointing at a mistaken event; nothing is edited or deleted."""
        if self.outbox.find(target.hex()) is None:
            raise CaptureError(f"no event {target.hex()} in this outbox to void")
        return self.record(EventType.VOID, {"target": target, "reason": reason})

    def record(
        self, type_: EventType, body: Mapping[str, Any], *, masses: Mapping[str, int] | None = None,
        after: int | None = None,
    ) -> StoredEvent:  # fmt: skip
        """Record one event and return it once durable (``after``: see ``Draft.after``)."""
        return self.submit(type_, body, masses=masses, after=after).result()

    def submit(
        self, type_: EventType, body: Mapping[str, Any], *, masses: Mapping[str, int] | None = None,
        after: int | None = None,
    ) -> Future[StoredEvent]:  # fmt: skip
        """Prepare a draft in this thread and queue it; the future resolves when durable."""
        now = self.clock.now()
        full = dict(body)
        if type_ in POSITIONED and "pos" not in full and isinstance(self.clock, PositionSource):
            where = self.clock.fresh_position()
            if where is not None:
                full["pos"] = where.signed()
        openings: dict[str, Opening] = {}
        if masses:
            if self.ledger_keys is None:
                raise CaptureError(
                    "no ledger public key is configured, so masses cannot be sealed: "
                    f"put the ledger's key file at {self.config.ledger_keys_path(self.paths.root)}"
                )
            points, openings = commit_masses(masses)
            full["mass"] = {n: p.encoded for n, p in points.items()}
            full["sealed"] = seal_openings(openings, self.ledger_keys.sealing_key)
        return self.writer.submit(Draft(type_, full, now, openings, after))

    # --- lifecycle --------------------------------------------------------------------------
    def close(self) -> None:
        self.writer.close()
        self.outbox.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _checkpoint_lock(self) -> Iterator[None]:
        with self._checkpoint_mutex, open(self.paths.root / "checkpoint.lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _checkpoint_locked(self) -> StoredEvent:
        """The sums up to the chain's head, in a checkpoint that follows that head directly
        (its seq padded, docs/protocol.md §4), so it covers every record before it: ``upto`` is
        its seq − 1. Another process that writes in between makes the writer refuse it, and
        the sums are taken again."""
        kid = self.key.kid
        for _ in range(CHECKPOINT_ATTEMPTS):
            state = balance.last_checkpoint(self.outbox, kid)
            head = self.outbox.head(kid)
            head_seq = head[0] if head is not None else 0
            inputs, outputs = balance.next_sums(self.outbox, kid, state, head_seq)
            upto = next_seq(head_seq, EventType.CHECKPOINT) - 1
            body: dict[str, Any] = {"epoch": state.epoch + 1, "upto": upto}
            if state.event_id is not None:
                body["prev_checkpoint"] = state.event_id
            voided = balance.voided_contributions(self.outbox, kid, state.seq, head_seq)
            if voided:
                body["voided"] = voided
            try:
                masses = {"in": inputs, "out": outputs}
                return self.record(EventType.CHECKPOINT, body, masses=masses, after=head_seq)
            except ChainMovedError:
                continue
        raise CaptureError(
            f"the chain kept moving while a checkpoint was taken ({CHECKPOINT_ATTEMPTS} tries)"
        )

    def _opening_stock(self) -> StoredEvent | None:
        """The declaration in this outbox, under the current key or a retired one."""
        for kid in self.outbox.kids():
            found = self.outbox.of_type(kid, EventType.OPENING_STOCK.value, limit=1)
            if found:
                return found[0]
        return None

    def _verifies(self, kid: bytes, envelope: bytes) -> bool:
        if kid != self.key.kid:
            return False
        verify_envelope(envelope, self.key.public_key)
        return True

    def _replace_key_after_lost_chain(self) -> None:
        """The quarantined outbox gave back no chain head: continuing this key's
        chain would fork it (a second event at a seq the ledger may hold). Retire
        the key (kept, never deleted) and start a new chain under a new key; the
        alarm tells operations to enrol it."""
        retired = self.paths.quarantine / f"device.key-{time.strftime('%Y%m%dT%H%M%SZ')}"
        move_file(self.paths.device_key, retired)  # both directories fsynced
        self.key = create_device_key(self.paths.device_key)
        self.signer = EventSigner(self.key)
        self.outbox.raise_alarm(
            "device_key_replaced",
            f"no chain head could be salvaged; the old key was moved to {retired} and a new "
            f"device key (kid {self.key.kid.hex()}) must be enrolled at the ledger",
        )


def _body(fields: Mapping[str, Any], manual: bool) -> dict[str, Any]:
    body = {k: v for k, v in fields.items() if v is not None}
    if manual:
        body["manual"] = True
    return body


def _optional_ledger_keys(path: Path) -> LedgerPublicKeys | None:
    return load_ledger_keys(path) if path.exists() else None
