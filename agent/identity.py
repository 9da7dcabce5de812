"""The gateway's identity on disk: its Ed25519 key file and the pinned ledger keys.

The key file holds the 32-byte RFC 8032 seed as hex. It is created with mode
0600 (never widened by the umask), whole or not at all, and durably
(``custody.files``), and refused at load time if group or others can read or
write it: a leaked device key lets anyone forge that site's records.
"""

from __future__ import annotations

import stat
from pathlib import Path

from custody.errors import KeyError_, KeyPermissionError
from custody.files import create_file
from custody.keys import DeviceKey, LedgerPublicKeys

__all__ = ["create_device_key", "load_device_key", "load_ledger_keys", "write_new"]


def write_new(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` exclusively with ``mode``, durably (``custody.files.create_file``)."""
    try:
        create_file(path, data, mode)
    except FileExistsError as exc:
        raise KeyError_(f"{path} already exists; refusing to overwrite it") from exc


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
