"""The ledger's key files: ``ledger.key`` (secret, 0600) and ``ledger-public.json``.

The public file is what ``custody-agent init --ledger-key FILE`` pins on a
gateway: the Ed25519 key that signs acks and checkpoints, and the X25519 key
mass openings are sealed to.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

from custody.errors import KeyError_, KeyPermissionError
from custody.files import create_file, fsync_directory, replace_file
from custody.keys import LedgerKeyPair

__all__ = ["create_ledger_keys", "load_ledger_keypair"]

SECRET_FILE = "ledger.key"  # noqa: S105 - a file name, not a secret
PUBLIC_FILE = "ledger-public.json"


def create_ledger_keys(data_dir: Path, ledger_id: str) -> LedgerKeyPair:
    data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    fsync_directory(data_dir.parent)  # a new data dir's own name, or the keys vanish with it
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
    # The secret first, exclusively: the public file written next always matches the key
    # that is on disk, never one a concurrent `init` lost the race with.
    try:
        create_file(secret, body, 0o600)
    except FileExistsError as exc:
        raise KeyError_(f"{secret} already exists; refusing to replace the ledger's keys") from exc
    replace_file(public, (pair.public.to_json() + "\n").encode())
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
