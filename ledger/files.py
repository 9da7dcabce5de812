"""Replacing the ledger's small state files durably (registers, declarations, CRL, index).

A reader (the broker reading the CRL, the next summary reading the disclosure register) sees
the old file or the new one, never half of one, and the new one survives a power cut once this
returns: the data is fsynced before the rename, and the directory after it.
"""

from __future__ import annotations

import os
from pathlib import Path

from custody.errors import StorageError

__all__ = ["replace_file"]


def replace_file(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(path.name + ".new")
    try:
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        try:
            os.fchmod(fd, mode)  # whatever the umask
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {exc.strerror}") from exc
