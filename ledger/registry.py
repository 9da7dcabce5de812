"""Logging the registry authority's entries: the ledger keeps the registry, never writes it.

The ledger pins one registry authority key (``authority-public.json`` in its data dir,
never its own key). ``add_entry`` verifies an entry under that key, requires it to extend
the chain the ledger holds (seq = head + 1, prev = the head's id), and in one transaction
appends it to the transparency log and applies it: an enrolment lets intake accept the
key's records (so none can be logged before the entry that enrolled it), a retirement makes
intake refuse the key's records after its last seq. An entry added again (an operator
repeating a command) is reported as logged already.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from custody.errors import ConfigError, KeyError_
from custody.files import replace_file
from custody.keys import LedgerPublicKeys
from ledger.store import Store
from ledger.verify.authority import AUTHORITY_PUBLIC_FILE, AuthorityKey, read_authority_file
from ledger.verify.registry import Op, RegistryEntry, decode_entry

__all__ = ["AddedEntry", "add_entry", "pin_authority", "pinned_authority"]


@dataclass(frozen=True, slots=True)
class AddedEntry:
    entry: RegistryEntry
    log_index: int
    new: bool  # False: the ledger had logged it already


def pinned_authority(data_dir: Path) -> AuthorityKey:
    path = data_dir / AUTHORITY_PUBLIC_FILE
    if not path.exists():
        raise KeyError_(
            f"{path}: no registry authority is pinned; run `custody-ledger registry trust "
            "authority-public.json` with the file the registry authority gave you"
        )
    return read_authority_file(path)


def pin_authority(
    data_dir: Path, authority: AuthorityKey, ledger: LedgerPublicKeys, *, replace: bool = False
) -> None:
    """Pin the authority whose entries this ledger logs (its key must not be the ledger's)."""
    if authority.signing_key == ledger.signing_key:
        raise ConfigError(
            str(data_dir / AUTHORITY_PUBLIC_FILE), "signing_key",
            "is this ledger's own key: the registry must be signed by an authority the "
            "ledger does not control",
        )  # fmt: skip
    path = data_dir / AUTHORITY_PUBLIC_FILE
    if path.exists() and not replace:
        current = read_authority_file(path)
        if current != authority:
            raise ConfigError(
                str(path), "signing_key",
                f"another authority ({current.authority_id}, {current.fingerprint}) is pinned; "
                "pass --replace only if the consortium replaced its registry authority",
            )  # fmt: skip
    replace_file(path, (authority.to_json() + "\n").encode())


def add_entry(
    store: Store, authority: AuthorityKey, data: bytes, *, valid_from_ms: int | None = None
) -> AddedEntry:
    """Verify, log and apply one entry; ``ConfigError`` says why one does not fit.

    ``valid_from_ms``: for an enrolment, the ledger's intake accepts the key's records only
    from then on (its own stricter policy; verifiers judge by log index alone)."""
    entry = decode_entry(data, authority)
    with store.transaction():
        head_seq, head_id = store.registry_head()
        if entry.seq <= head_seq:
            logged = next(e for e in store.registry_entries() if e.seq == entry.seq)
            if logged.entry_id != entry.entry_id:
                raise ConfigError(
                    "registry", f"entry {entry.seq}",
                    "differs from the entry the ledger logged at that seq: the authority "
                    "signed two entries with one seq (a fork of the registry)",
                )  # fmt: skip
            return AddedEntry(entry, logged.log_index, new=False)
        if entry.seq != head_seq + 1 or entry.prev != head_id:
            raise ConfigError(
                "registry", f"entry {entry.seq}",
                f"does not follow the ledger's registry head (entry {head_seq}); "
                f"add entries {head_seq + 1}..{entry.seq - 1} first",
            )  # fmt: skip
        # Checked before anything is logged: an entry the ledger cannot apply is refused whole.
        _check(store, entry)
        log = store.log_range()
        index = store.append_registry_entry(log, entry.seq, entry.entry_id, data, str(entry.op))
        added = AddedEntry(entry, index, new=True)
        _apply(store, added, valid_from_ms)  # in the same transaction: logged and applied
        store.save_log(log)
    return added


def _check(store: Store, e: RegistryEntry) -> None:
    if e.op is Op.ENROL:
        known = store.key(e.kid)
        if known is not None:
            raise ConfigError(
                "registry", e.kid.hex(),
                f"the ledger holds this key already (for {known.device_id} at "
                f"{known.site_id}); a key is enrolled once",
            )  # fmt: skip
    elif e.op is Op.RETIRE and store.key(e.kid) is None:
        raise ConfigError("registry", e.kid.hex(), "retires a key this ledger never enrolled")


def _apply(store: Store, added: AddedEntry, valid_from_ms: int | None) -> None:
    e = added.entry
    if e.op is Op.ENROL:
        store.enroll(
            e.device_id, e.site_id, e.public_key, e.kid, valid_from_ms,
            enrolled_index=added.log_index,
        )  # fmt: skip
    elif e.op is Op.RETIRE:
        store.retire_key(e.kid, e.last_seq)
