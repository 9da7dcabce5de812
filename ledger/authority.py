"""The registry authority's side: its key, and the chain of entries it signs.

The authority (a consortium key, kept away from the ledger) enrols gateway keys at sites,
retires keys, pins each site's opening stock record and signs heartbeats; the ledger only
logs what it signs (``ledger.registry``). An authority directory holds::

    authority.key            the Ed25519 seed (0600)
    authority-public.json    what ledgers and verifiers pin (ledger.verify.authority)
    entries/000001.cose ...  every entry signed, in seq order: the chain, never rewritten

Signing is serialised by a lock file, so two commands never sign the same seq.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import stat
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey

from custody import cbor, cose
from custody.errors import ConfigError, KeyError_, KeyPermissionError
from custody.files import create_file, fsync_directory, replace_file
from custody.keys import check_ed25519_public, kid_for
from ledger.verify.authority import AUTHORITY_PUBLIC_FILE, AuthorityKey
from ledger.verify.registry import (
    ENTRY_CONTENT_TYPE,
    GENESIS_ENTRY_PREV,
    Op,
    RegistryEntry,
    decode_entry,
    entry_payload,
)

__all__ = ["AUTHORITY_SECRET_FILE", "Authority", "create_authority"]

AUTHORITY_SECRET_FILE = "authority.key"  # noqa: S105 - a file name, not a secret
ENTRIES_DIR = "entries"


def create_authority(directory: Path, authority_id: str) -> AuthorityKey:
    """A new authority key in ``directory`` (refused if one is there)."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    fsync_directory(directory.parent)
    seed = SigningKey.generate()
    public = AuthorityKey(authority_id, bytes(seed.verify_key))
    secret = directory / AUTHORITY_SECRET_FILE
    body = json.dumps({"authority": authority_id, "signing_seed": bytes(seed).hex()}).encode()
    try:
        create_file(secret, body, 0o600)
    except FileExistsError as exc:
        raise KeyError_(f"{secret} exists; refusing to replace the authority's key") from exc
    replace_file(directory / AUTHORITY_PUBLIC_FILE, (public.to_json() + "\n").encode())
    (directory / ENTRIES_DIR).mkdir(mode=0o700, exist_ok=True)
    fsync_directory(directory)
    return public


class Authority:
    """An authority directory, opened for signing."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._seed, self.public = _load_secret(directory / AUTHORITY_SECRET_FILE)

    @property
    def entries_dir(self) -> Path:
        return self.directory / ENTRIES_DIR

    def entries(self) -> list[tuple[Path, RegistryEntry]]:
        """Every entry signed so far, verified, in seq order."""
        out: list[tuple[Path, RegistryEntry]] = []
        for path in sorted(self.entries_dir.glob("*.cose")):
            entry = decode_entry(path.read_bytes(), self.public)
            if entry.seq != len(out) + 1:
                raise ConfigError(str(path), "seq", f"expected entry seq {len(out) + 1}")
            out.append((path, entry))
        return out

    # --- what an authority signs ---------------------------------------------------------
    def enrol(self, device_id: str, site_id: str, public_key: bytes) -> tuple[Path, RegistryEntry]:
        check_ed25519_public(public_key, "public_key")
        kid = kid_for(public_key)

        def check(done: list[RegistryEntry]) -> None:
            for e in done:
                if e.op is Op.ENROL and e.public_key == public_key:
                    raise ConfigError(
                        "registry", kid.hex(),
                        f"already enrolled (entry {e.seq}: {e.device_id} at {e.site_id})",
                    )  # fmt: skip

        fields = {"device": device_id, "site": site_id, "key": public_key}
        return self._sign(Op.ENROL, fields, check)

    def retire(
        self, kid: bytes, last_seq: int, last_checkpoint: bytes | None = None
    ) -> tuple[Path, RegistryEntry]:
        def check(done: list[RegistryEntry]) -> None:
            for e in done:
                if e.op is Op.RETIRE and e.kid == kid:
                    raise ConfigError("registry", kid.hex(), f"already retired (entry {e.seq})")

        fields: dict[str, Any] = {"kid": kid, "last_seq": last_seq}
        if last_checkpoint is not None:
            fields["last_checkpoint"] = last_checkpoint
        return self._sign(Op.RETIRE, fields, check)

    def stock(self, site_id: str, record: bytes) -> tuple[Path, RegistryEntry]:
        def check(done: list[RegistryEntry]) -> None:
            for e in done:
                if e.op is Op.STOCK and e.site_id == site_id:
                    raise ConfigError(
                        "registry", site_id,
                        f"its opening stock is already pinned (entry {e.seq}, record "
                        f"{e.record.hex()}); a site declares its opening stock once",
                    )  # fmt: skip

        return self._sign(Op.STOCK, {"site": site_id, "record": record}, check)

    def heartbeat(self) -> tuple[Path, RegistryEntry]:
        return self._sign(Op.HEARTBEAT, {}, lambda done: None)

    # --- internals -----------------------------------------------------------------------
    def _sign(self, op: Op, fields: Mapping[str, Any], check: Any) -> tuple[Path, RegistryEntry]:
        with self._lock():
            done = [e for _, e in self.entries()]
            check(done)
            seq = len(done) + 1
            prev = done[-1].entry_id if done else GENESIS_ENTRY_PREV
            payload = entry_payload(self.public.authority_id, seq, prev,
                                    time.time_ns() // 1_000_000, op, fields)  # fmt: skip
            protected = {
                cose.HDR_ALG: cose.ALG_EDDSA,
                cose.HDR_CONTENT_TYPE: ENTRY_CONTENT_TYPE,
                cose.HDR_KID: self.public.kid,
            }
            data = cose.sign1(SigningKey(self._seed), protected, cbor.encode(payload))
            path = self.entries_dir / f"{seq:06d}.cose"
            create_file(path, data, 0o644)  # fsynced, with its directory
            return path, decode_entry(data, self.public)

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.directory / "sign.lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _load_secret(path: Path) -> tuple[bytes, AuthorityKey]:
    try:
        st = path.stat()
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyPermissionError(f"{path}: readable by others; run `chmod 600 {path}`")
        raw = json.loads(path.read_text(encoding="utf-8"))
        seed = bytes.fromhex(raw["signing_seed"])
        public = AuthorityKey(str(raw["authority"]), bytes(SigningKey(seed).verify_key))
    except FileNotFoundError as exc:
        raise KeyError_(f"{path}: no registry authority key (run `custody-registry init`)") from exc
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyError_(f"{path}: unreadable or malformed: {exc}") from exc
    return seed, public
