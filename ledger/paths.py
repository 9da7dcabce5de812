"""Where the ledger keeps its files: the agent's rule (``agent.paths``), one level down.

``--data-dir`` wins; else ``$CUSTODY_DATA_DIR``; else ``/var/lib/custody/ledger`` when it
exists and is writable (``deploy/install.sh --role ledger`` creates it, the unit uses it);
else ``~/.local/share/custody/ledger``. The ledger never defaults to the gateway's own
directory (``/var/lib/custody``): on a box with both roles the two would share files.
Kept separate because ``agent`` and ``ledger`` never import each other (ARCHITECTURE.md
"Layout").
"""

from __future__ import annotations

import os
from pathlib import Path

SYSTEM_DATA_DIR = Path("/var/lib/custody/ledger")


def resolve_data_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit).expanduser()
    if env := os.environ.get("CUSTODY_DATA_DIR"):
        return Path(env).expanduser()
    if SYSTEM_DATA_DIR.is_dir() and os.access(SYSTEM_DATA_DIR, os.W_OK):
        return SYSTEM_DATA_DIR
    xdg = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(xdg) / "custody" / "ledger"
