"""``custody-agent init --replace``: move a gateway to another ledger (a trial's to the real one).

Theory of operation. A ledger holds a gateway's chain from seq 1 and every mass opening is
sealed to that ledger's key, so a gateway cannot be re-pointed: the records the old ledger
has are the old ledger's, and the new ledger must see a chain that starts at seq 1 and whose
openings are sealed to it. Moving therefore means a new identity (device key, TLS key and
CSR, outbox, pinned ledger keys) in the same data directory, while the old identity and
everything it signed is kept, never deleted:

1. the service lock (``service.lock``, held by ``custody-agent run``) and the scan console's
   lock are taken, so nothing records while the directory changes hands;
2. records the old ledger has not acknowledged are counted by type; they are never sent
   anywhere after the move, so the move is refused unless the caller abandons them;
3. every file of the data directory (outbox with its WAL, keys, retired keys, config,
   certificates, quarantine) is moved with fsync'd renames into
   ``archive/<UTC time>-<old ledger id>/``, which stays a data directory that
   ``custody-agent --data-dir ARCHIVE events verify`` checks; ``config.toml`` and
   ``device.key`` move last, so a crash part way leaves a directory that still reads as
   initialised and a second ``--replace`` archives the rest;
4. the new identity is written as ``init`` writes one, with the old ``config.toml`` (its
   comments, devices and tuning) except the settings that point at the old ledger:
   ``sync.broker``, ``sync.ca_file``, ``sync.cert_file``, ``sync.key_file`` and
   ``ledger.public_keys``.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.identity import load_ledger_keys
from agent.outbox import Outbox
from agent.paths import DataDir
from agent.settings import load_config
from custody.errors import CaptureError, NotInitialisedError, StorageError
from custody.files import fsync_directory, move_file

__all__ = [
    "ARCHIVE_DIR", "LEDGER_SETTINGS", "Archived", "archive_identity", "exclusive",
    "require_initialised", "unsynced_by_type",
]  # fmt: skip

ARCHIVE_DIR = "archive"
# Lock files stay: another process may hold one open, and they carry no data.
_KEEP = frozenset({ARCHIVE_DIR, "service.lock", "scan.lock", "checkpoint.lock"})
_LAST = ("config.toml", "device.key")
# Settings that name the old ledger's broker, certificates or keys; reset to their defaults.
LEDGER_SETTINGS: tuple[tuple[str, str], ...] = (
    ("sync.broker", ""), ("sync.ca_file", ""), ("sync.cert_file", ""), ("sync.key_file", ""),
    ("ledger.public_keys", "ledger.json"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Archived:
    """Where the old identity went, and what the caller chose to leave unsent."""

    archive: Path
    old_ledger_id: str
    old_device_id: str
    old_site_id: str
    abandoned: dict[str, int]
    config_text: str


def unsynced_by_type(outbox: Outbox) -> dict[str, int]:
    """Records the ledger has not settled (pending or sent), by event type."""
    return outbox.unacked_by_type()


@contextmanager
def exclusive(root: Path) -> Iterator[None]:
    """Hold the service's and the scan console's locks, or refuse naming who holds one."""
    fds: list[int] = []
    try:
        for name, who in (("service.lock", "`custody-agent run`"),
                          ("scan.lock", "`custody-agent scan`")):  # fmt: skip
            fd = os.open(root / name, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fds.append(fd)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise CaptureError(
                    f"{root}: {who} is using this data directory ({root / name} is locked); "
                    "stop it first (systemctl stop custody-agent), then replace"
                ) from None
        yield
    finally:
        for fd in fds:
            os.close(fd)  # closing releases the lock


def require_initialised(data_dir: Path) -> None:
    paths = DataDir(data_dir)
    if not paths.config.exists() or not paths.device_key.exists():
        raise NotInitialisedError(
            f"{data_dir}: not an initialised gateway (no config.toml or device.key); "
            "run `custody-agent init` without --replace"
        )


def archive_identity(data_dir: Path, *, abandon_unsynced: bool) -> Archived:
    """Steps 2-3, under ``exclusive``: count, then move the whole old identity to the archive.

    Raises ``CaptureError`` while records the old ledger has not acknowledged remain and
    ``abandon_unsynced`` is false; nothing has moved then.
    """
    paths = DataDir(data_dir)
    require_initialised(data_dir)
    cfg = load_config(paths.config)
    config_text = paths.config.read_text(encoding="utf-8")
    pinned = cfg.ledger_keys_path(data_dir)
    old_ledger = load_ledger_keys(pinned).ledger_id if pinned.exists() else "unpinned"
    unsynced: dict[str, int] = {}
    if paths.outbox.exists():  # else a replace that was cut short archived it already
        outbox = Outbox.open(paths.outbox, check=None, create=False)
        try:
            unsynced = unsynced_by_type(outbox)
        finally:
            outbox.close()  # the last connection: SQLite folds the WAL back into the file
    if unsynced and not abandon_unsynced:
        listed = ", ".join(f"{n} {t}" for t, n in unsynced.items())
        raise CaptureError(
            f"{paths.outbox}: {sum(unsynced.values())} record(s) the ledger "
            f"{old_ledger!r} has not acknowledged ({listed}); sync them first "
            "(`custody-agent sync --once` until `still unacked 0`), or give "
            "--abandon-unsynced to keep them only in the archive, never sent"
        )
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    archive = data_dir / ARCHIVE_DIR / f"{stamp}-{_safe(old_ledger)}"
    if archive.exists():
        raise StorageError(f"{archive} already exists; try again in a second")
    (data_dir / ARCHIVE_DIR).mkdir(mode=0o700, exist_ok=True)
    fsync_directory(data_dir)
    archive.mkdir(mode=0o700)
    fsync_directory(archive.parent)
    entries = sorted(p.name for p in data_dir.iterdir() if p.name not in _KEEP)
    order = [n for n in entries if n not in _LAST] + [n for n in _LAST if n in entries]
    for name in order:
        move_file(data_dir / name, archive / name)
    return Archived(archive, old_ledger, cfg.device_id, cfg.site_id, unsynced, config_text)


def _safe(name: str) -> str:
    """A ledger id as one path component (it comes from a file the operator was sent)."""
    cleaned = "".join(c if c.isalnum() or c in "-_." else "_" for c in name).strip(".")
    return cleaned[:64] or "ledger"
