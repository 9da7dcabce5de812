"""``custody-agent keys rotate``: move the gateway to a new signing key, announced in its chain.

Theory of operation. The ledger accepts a new device key only through a signed
``key_rotation`` event (body ``{new_key}``) chained under the OLD key
(ARCHITECTURE.md "Event types", ledger/intake.py). The gateway therefore:

1. writes the new Ed25519 key to ``device.key.new`` (0600, fsynced);
2. records ``key_rotation {new_key}`` under the old key and waits until it is durable;
3. keeps the old key as ``retired-keys/<kid>.key`` (a hard link: never deleted, it signed
   records that still have to be verified and resent) and renames ``device.key.new`` over
   ``device.key``;
4. signs every later record with the new key, on a NEW chain: seq 1, prev = 32 zero bytes.
   Seqs are per key (ARCHITECTURE.md "Event envelope"); the old chain ends at the rotation
   event, and the ledger links the two chains through it.

A crash between 2 and 3 leaves ``device.key.new`` beside the old key; ``recover`` (called by
``Recorder`` at start) finishes step 3 when the outbox holds the old key's ``key_rotation``
naming it, and otherwise removes it (it was never announced and never signed anything).

One writer: the rotation swaps the key of the process doing it. Another process holding the old
key in memory (the service, the scan console) would go on signing under a key the ledger has
retired, so ``keys rotate`` refuses while the service runs; stop the scan console too.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from agent.identity import create_device_key, load_device_key
from agent.outbox import Outbox
from agent.paths import DataDir
from custody.envelope import verify_envelope
from custody.errors import CaptureError, VerificationError
from custody.event import EventType
from custody.files import fsync_directory, link_file, move_file
from custody.keys import DeviceKey

__all__ = ["RETIRED_DIR", "commit", "pending_key_path", "prepare", "recover", "retired_key_path"]

RETIRED_DIR = "retired-keys"
# Written by the running service (agent/service/supervisor.py SERVICE_FILE): its pid.
_SERVICE_FILE = "service.json"


def pending_key_path(paths: DataDir) -> Path:
    return paths.root / "device.key.new"


def retired_key_path(paths: DataDir, kid: bytes) -> Path:
    return paths.root / RETIRED_DIR / f"{kid.hex()}.key"


def refuse_if_service_running(paths: DataDir) -> None:
    try:
        pid = int(json.loads((paths.root / _SERVICE_FILE).read_text(encoding="utf-8"))["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return  # a stale file from a crash
    except PermissionError:
        pass  # alive, another user's
    raise CaptureError(
        f"the gateway service (pid {pid}) is running with the current key: stop it first "
        "(systemctl stop custody-agent), rotate, then start it again"
    )


def prepare(paths: DataDir) -> DeviceKey:
    """Step 1: the new key, on disk before anything names it."""
    pending = pending_key_path(paths)
    pending.unlink(missing_ok=True)  # left by a rotation that never recorded its event
    return create_device_key(pending)


def commit(paths: DataDir, old: DeviceKey, new: DeviceKey) -> Path:
    """Step 3: keep the old key under ``retired-keys/``, make the new one current."""
    retired = retired_key_path(paths, old.kid)
    retired.parent.mkdir(mode=0o700, exist_ok=True)
    if not retired.exists():
        link_file(paths.device_key, retired)  # same inode: mode 0600 kept, nothing copied
    move_file(pending_key_path(paths), paths.device_key)
    assert load_device_key(paths.device_key).kid == new.kid
    return retired


def announced_key(outbox: Outbox, key: DeviceKey) -> bytes | None:
    """The ``new_key`` of the latest ``key_rotation`` signed by ``key``, if any."""
    found = outbox.of_type(key.kid, str(EventType.KEY_ROTATION), newest_first=True)
    if not found:
        return None
    try:
        body = verify_envelope(found[0].envelope, key.public_key).payload.body
    except VerificationError:
        return None
    new_key = body.get("new_key")
    return new_key if isinstance(new_key, bytes) else None


def recover(paths: DataDir, outbox: Outbox, current: DeviceKey) -> DeviceKey | None:
    """Finish or undo a rotation a crash interrupted; the key to use when it changed."""
    pending = pending_key_path(paths)
    if not pending.exists():
        return None
    new = load_device_key(pending)
    if announced_key(outbox, current) == new.public_key:
        commit(paths, current, new)
        return new
    pending.unlink()
    fsync_directory(paths.root)
    return None
