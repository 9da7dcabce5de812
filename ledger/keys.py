"""The ledger's key files: ``ledger.key`` (secret, 0600) and ``ledger-public.json``.

The public file is what ``custody-agent init --ledger-key FILE`` pins on a
gateway: the Ed25519 key that signs acks and checkpoints, and the X25519 key
mass openings are sealed to.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from custody.errors import KeyError_, KeyPermissionError
from custody.keys import LedgerKeyPair

__all__ = ["create_ledger_keys", "load_ledger_keypair"]

SECRET_FILE = "ledger.key"  # noqa: S105 - a file name, not a secret
PUBLIC_FILE = "ledger-public.json"


def create_ledger_keys(data_dir: Path, ledger_id: str) -> LedgerKeyPair:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    secret, public = data_dir / SECRET_FILE, data_dir / PUBLIC_FILE
    if secret.exists():
        raise KeyError_(f"{secret} already exists; refusing to replace the ledger's keys")
    pair = LedgerKeyPair.generate(ledger_id)
    body = json.dumps(
        {
            "ledger_id": ledger_id,
            "signing_seed": pair.signing_seed.hex(),
            "sealing_secret": pair.sealing_secret.hex(),
        }
    ).encode()
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    public.write_text(pair.public.to_json() + "\n", encoding="utf-8")
    return pair


def load_ledger_keypair(data_dir: Path) -> LedgerKeyPair:
    path = data_dir / SECRET_FILE
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyPermissionError(f"{path}: readable by others; run `chmod 600 {path}`")
        raw = json.loads(path.read_text(encoding="utf-8"))
        return LedgerKeyPair(
            raw["ledger_id"],
            bytes.fromhex(raw["signing_seed"]),
            bytes.fromhex(raw["sealing_secret"]),
        )
    except FileNotFoundError as exc:
        raise KeyError_(f"{path}: no ledger keys (run `custody-ledger init`)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyError_(f"{path}: unreadable or malformed: {exc}") from exc
