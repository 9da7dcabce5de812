"""Writing state files durably: whole or not at all, and still there after a power cut.

Theory of operation. Every file either end keeps or hands out (keys, certificates, config,
registers, exports) goes through here, so a reader sees the old file or the new one, never
half of one, and a power cut after a call returns forgets nothing:

1. the bytes go to a temporary file with a unique name in the target's own directory
   (rename(2) and link(2) fail with EXDEV across filesystems), created ``O_EXCL`` so two
   writers of one path never share or truncate each other's temporary file;
2. ``write(2)`` may write fewer bytes than asked (a signal, a nearly full disk), so the rest
   is written until none is left;
3. the data is fsynced before the rename: without it a journalling filesystem may commit
   the new name before the data and leave an empty file after a crash;
4. ``rename(2)`` swaps the name atomically (``link(2)`` for a file that must not replace
   another: it fails with EEXIST instead);
5. the directory is fsynced: fsync(2) of a file "does not necessarily ensure that the entry
   in the directory containing the file has also reached disk. For that an explicit fsync()
   on a file descriptor for the directory is also needed." (Linux fsync(2), NOTES.)

On any failure the temporary file is removed and ``StorageError`` names the path and the
reason. A crash between 1 and 4 can leave a ``.NAME.*.tmp`` file behind, never a torn NAME.

This is the one module of ``custody`` that touches the filesystem; it imports only the
standard library and ``custody.errors``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from custody.errors import StorageError

__all__ = ["create_file", "fsync_directory", "link_file", "move_file", "replace_file"]

# The permission bits ``mode=None`` asks for: those of open(2) by ``open(path, "w")``,
# narrowed by the process umask as usual.
_DEFAULT_CREATE_MODE = 0o666


def replace_file(
    path: Path, data: bytes, mode: int | None = 0o644, *, sync_directory: bool = True
) -> None:
    """Make ``path`` hold exactly ``data``, replacing any file there, atomically and durably.

    ``mode`` is applied whatever the umask (a secret key passes 0o600 and is never readable
    by others, not even while it is written); ``None`` leaves it to the umask, as for any
    file a command writes for its operator (an export).

    ``sync_directory=False`` leaves step 5 to the caller, who must then call
    ``fsync_directory(path.parent)`` once after writing many files into one directory.
    """
    path = Path(path)
    try:
        tmp = _write_temporary(path, data, mode)
        try:
            os.replace(tmp, path)
        except BaseException:
            _discard(tmp)
            raise
        if sync_directory:
            _fsync_dir(path.parent)
    except OSError as exc:
        raise StorageError(f"cannot write {path}: {_reason(exc)}") from exc


def create_file(path: Path, data: bytes, mode: int | None = 0o644) -> None:
    """Create ``path`` holding exactly ``data``, durably; never replace an existing file.

    Raises ``FileExistsError`` (nothing written) when ``path`` exists, so the caller can say
    what it refused to replace; ``StorageError`` for every other failure. The file appears
    whole or not at all: it is written under a temporary name and hard-linked to ``path``
    (link(2) fails with EEXIST rather than replace), which needs a filesystem with hard
    links, as every Linux-native one has.
    """
    path = Path(path)
    try:
        tmp = _write_temporary(path, data, mode)
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {_reason(exc)}") from exc
    try:
        os.link(tmp, path)  # FileExistsError: someone else's file, left alone
    except FileExistsError:
        _discard(tmp)
        raise
    except OSError as exc:
        _discard(tmp)
        raise StorageError(f"cannot create {path}: {_reason(exc)}") from exc
    try:
        os.unlink(tmp)
        _fsync_dir(path.parent)  # covers the new name and the temporary one's removal
    except OSError as exc:
        raise StorageError(f"cannot create {path}: {_reason(exc)}") from exc


def move_file(src: Path, dst: Path) -> None:
    """Rename ``src`` to ``dst`` (replacing it, as rename(2) does) and make both names durable.

    For a file that is moved, not rewritten: a retired key or a database put in
    quarantine. Both directories are fsynced (the new entry and the removal of the old).
    """
    src, dst = Path(src), Path(dst)
    try:
        os.replace(src, dst)
        _fsync_dir(dst.parent)
        if os.path.realpath(src.parent) != os.path.realpath(dst.parent):
            _fsync_dir(src.parent)
    except OSError as exc:
        raise StorageError(f"cannot move {src} to {dst}: {_reason(exc)}") from exc


def link_file(src: Path, dst: Path) -> None:
    """A second, durable name ``dst`` for the file ``src`` (same inode: same data and mode).

    Raises ``FileExistsError`` when ``dst`` exists, ``StorageError`` otherwise.
    """
    src, dst = Path(src), Path(dst)
    try:
        os.link(src, dst)
        _fsync_dir(dst.parent)
    except FileExistsError:
        raise
    except OSError as exc:
        raise StorageError(f"cannot link {src} to {dst}: {_reason(exc)}") from exc


def fsync_directory(path: Path) -> None:
    """Make the entries of directory ``path`` durable after a rename, link or unlink in it."""
    try:
        _fsync_dir(Path(path))
    except OSError as exc:
        raise StorageError(f"cannot sync directory {path}: {_reason(exc)}") from exc


# --- internals ----------------------------------------------------------------------------------
def _write_temporary(path: Path, data: bytes, mode: int | None) -> Path:
    """Steps 1-3: a new, fsynced file beside ``path`` holding ``data``; its name."""
    # A pid and 64 random bits: unique among writers; O_EXCL makes sure of it.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(8)}.tmp")
    # An explicit mode starts at 0600 and is widened by fchmod only once the file is ours,
    # so a secret is never readable by others, not even for an instant.
    create_mode = _DEFAULT_CREATE_MODE if mode is None else 0o600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, create_mode)
    try:
        if mode is not None:
            os.fchmod(fd, mode)  # open(2) applies the umask; fchmod(2) does not
        _write_all(fd, data)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        _discard(tmp)
        raise
    try:
        os.close(fd)
    except BaseException:
        _discard(tmp)
        raise
    return tmp


def _write_all(fd: int, data: bytes) -> None:
    # write(2) returns how much it wrote, which may be less than asked (POSIX write(2)).
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        if n <= 0:  # a regular file never does this; never loop on it
            raise OSError(errno.EIO, "write(2) wrote nothing")
        view = view[n:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)
