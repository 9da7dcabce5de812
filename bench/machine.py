"""What a benchmark ran on, so numbers from two machines are never compared blind.

Everything is read from the running system (``/proc`` on Linux) and missing
pieces are left out rather than guessed. The libsodium version is reported only
when the loaded binding exposes it: PyNaCl links its own copy statically and
does not export ``sodium_version_string``, so there it is omitted and the PyNaCl
version stands in.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["filesystem_of", "host_busy_seconds", "machine"]


def machine() -> dict[str, Any]:
    """A JSON-ready description of this host and the libraries the capture path uses."""
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "sqlite": sqlite3.sqlite_version,
    }
    sodium = _libsodium_version()
    if sodium is not None:
        info["libsodium"] = sodium
    for dist in ("PyNaCl", "cbor2"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[dist.lower()] = metadata.version(dist)
    tmp = Path(tempfile.gettempdir())
    info["tmp_dir"] = str(tmp)
    fs = filesystem_of(tmp)
    if fs is not None:
        info["tmp_filesystem"] = fs
    return {k: v for k, v in info.items() if v is not None}


def host_busy_seconds() -> float | None:
    """CPU seconds all processes on the host have spent busy since boot (``/proc/stat``).

    The difference over a run, minus the benchmark's own CPU time, says how much
    of the machine something else was using meanwhile: a number to read next to
    the results, since a shared machine makes them slower and noisier.
    """
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, already in user]
    ticks = [int(v) for v in fields[1:9]]
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def filesystem_of(path: Path) -> dict[str, str] | None:
    """Type, mount point and source of the filesystem holding ``path`` (``/proc/mounts``)."""
    try:
        lines = Path("/proc/mounts").read_text(encoding="utf-8").splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best: tuple[str, str, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 3:
            continue
        source, mount, fstype = fields[0], _unescape(fields[1]), fields[2]
        inside = target == mount or target.startswith(mount.rstrip("/") + "/")
        # The last, longest match wins: a later mount over the same point hides earlier ones.
        if inside and (best is None or len(mount) >= len(best[1])):
            best = (source, mount, fstype)
    if best is None:
        return None
    return {"type": best[2], "mount": best[1], "source": best[0]}


def _unescape(field: str) -> str:
    # /proc/mounts escapes space, tab, newline and backslash as octal (\040 etc.).
    return field.encode("ascii", "backslashreplace").decode("unicode_escape")


def _cpu_model() -> str | None:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor() or None
    found: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and value.strip():
            found.setdefault(key.strip(), value.strip())
    # x86: "model name"; Raspberry Pi: "Model" (board) and "Hardware"; other ARM: "CPU part".
    for key in ("model name", "Model", "Hardware", "cpu model", "CPU part"):
        if key in found:
            return found[key]
    return platform.processor() or None


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) * 1024 / 2**30, 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        return round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1)
    except (OSError, ValueError):
        return None


def _libsodium_version() -> str | None:
    try:
        import nacl.bindings
    except ImportError:
        return None
    getter = getattr(nacl.bindings, "sodium_version_string", None)
    if getter is None:
        return None
    value = getter()
    return value.decode() if isinstance(value, bytes) else str(value)
