"""Where the agent keeps its files.

``--data-dir`` wins; else ``$CUSTODY_DATA_DIR``; else ``/var/lib/custody`` when
that exists and is writable (a system install, deploy/install.sh); else the XDG data
home ``~/.local/share/custody``. ``custody-ledger`` follows the same rule.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

SYSTEM_DATA_DIR = Path("/var/lib/custody")
ENV_VAR = "CUSTODY_DATA_DIR"


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    if SYSTEM_DATA_DIR.is_dir() and os.access(SYSTEM_DATA_DIR, os.W_OK):
        return SYSTEM_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "custody"


@dataclass(frozen=True, slots=True)
class DataDir:
    """The files of one gateway data directory."""

    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def device_key(self) -> Path:
        return self.root / "device.key"

    @property
    def ledger_keys(self) -> Path:
        return self.root / "ledger.json"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox.sqlite"

    @property
    def quarantine(self) -> Path:
        return self.root / "quarantine"
