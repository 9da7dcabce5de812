"""``custody-agent init``: create a gateway identity in a data directory.

Writes the device key (0600), the pinned ledger public keys when given, a
commented config file generated from the settings table and an empty outbox,
then returns the
enrolment record the ledger needs (device id, site, public key, kid).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.identity import create_device_key, load_device_key, load_ledger_keys, write_new
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.settings import render_config
from custody.errors import ConfigError, SchemaError
from custody.event import validate_identifier

__all__ = ["EnrolmentRecord", "enrolment_record", "initialise"]


@dataclass(frozen=True, slots=True)
class EnrolmentRecord:
    device_id: str
    site_id: str
    public_key: bytes
    kid: bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "format": "cobalt-custody/enrolment/v1",
            "device_id": self.device_id,
            "site_id": self.site_id,
            "algorithm": "Ed25519",
            "public_key": self.public_key.hex(),
            "kid": self.kid.hex(),
        }


def initialise(
    data_dir: Path, *, site_id: str, device_id: str, ledger_key_file: Path | None = None
) -> EnrolmentRecord:
    """Create identity and config; refuse to touch an already initialised directory."""
    for value, what in ((device_id, "device id"), (site_id, "site id")):
        try:
            validate_identifier(value, what)
        except SchemaError as exc:
            raise ConfigError("command line", what.replace(" ", "_"), str(exc)) from exc
    paths = DataDir(data_dir)
    if paths.config.exists() or paths.device_key.exists():
        raise ConfigError(
            str(paths.config),
            "-",
            "this data directory is already initialised; refusing to "
            "replace its identity (use another --data-dir)",
        )
    ledger_json = None
    if ledger_key_file is not None:
        ledger_json = load_ledger_keys(ledger_key_file).to_json()
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(data_dir, 0o700)
    key = create_device_key(paths.device_key)
    if ledger_json is not None:
        write_new(paths.ledger_keys, ledger_json.encode() + b"\n", 0o644)
    write_new(paths.config, render_config(device_id, site_id).encode(), 0o644)
    Outbox.open(paths.outbox).close()  # created and migrated now, so every command works
    return EnrolmentRecord(device_id, site_id, key.public_key, key.kid)


def enrolment_record(data_dir: Path, device_id: str, site_id: str) -> EnrolmentRecord:
    key = load_device_key(DataDir(data_dir).device_key)
    return EnrolmentRecord(device_id, site_id, key.public_key, key.kid)
