"""The gateway's identity on disk: its Ed25519 key file and the pinned ledger keys.

The key file holds the 32-byte RFC 8032 seed as hex. It is created with mode
0600 (never widened by the umask), written and fsynced before the directory
entry is fsynced, and refused at load time if group or others can read or
write it: a leaked device key lets anyone forge that site's records.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from custody.errors import KeyError_, KeyPermissionError
from custody.keys import DeviceKey, LedgerPublicKeys

__all__ = ["create_device_key", "fsync_dir", "load_device_key", "load_ledger_keys", "write_new"]


def fsync_dir(path: Path) -> None:
    """Make a new directory entry durable (a file's fsync does not cover its name)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode``, write, fsync file and directory."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError as exc:
        raise KeyError_(f"{path} already exists; refusing to overwrite it") from exc
    except OSError as exc:
        raise KeyError_(f"cannot create {path}: {exc.strerror}") from exc
    try:
        os.fchmod(fd, mode)  # the umask may have narrowed or (never) widened it
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    fsync_dir(path.parent)


def create_device_key(path: Path) -> DeviceKey:
    key = DeviceKey.generate()
    write_new(path, key.seed.hex().encode() + b"\n", 0o600)
    return key


def load_device_key(path: Path) -> DeviceKey:
    try:
        st = path.stat()
    except FileNotFoundError as exc:
        raise KeyError_(f"{path}: no device key (run `custody-agent init`)") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise KeyPermissionError(
            f"{path}: mode {stat.S_IMODE(st.st_mode):04o} lets others read the device key; "
            f"run `chmod 600 {path}`"
        )
    try:
        text = path.read_text(encoding="ascii").strip()
        seed = bytes.fromhex(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyError_(f"{path}: unreadable or malformed device key: {exc}") from exc
    return DeviceKey(seed)


def load_ledger_keys(path: Path) -> LedgerPublicKeys:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise KeyError_(
            f"{path}: no ledger public keys; copy the file from `custody-ledger init` there "
            "(or pass --ledger-key to `custody-agent init`)"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyError_(f"{path}: cannot read: {exc}") from exc
    return LedgerPublicKeys.from_json(text, str(path))
