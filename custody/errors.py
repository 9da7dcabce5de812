"""The one exception tree of cobalt-custody.

Every error our code raises on purpose is a ``CustodyError``. Third-party
exceptions (sqlite3, nacl, cbor2, OSError, paho) are translated once, at the
module that talks to that library, into one of these; pyserial's are translated
into the device bridge's own tree (``firmware_bridge.errors``).
The CLIs map each branch to an exit code and a one-line message
(``custody.exits``); a traceback means a bug, never a user error.

    CustodyError
    ├── ConfigError                 bad or missing configuration (file, key, reason)
    ├── KeyError_                   key files: missing, unreadable, wrong permissions
    │   └── KeyPermissionError      a private key readable by group/others
    ├── StorageError                the outbox / a database
    │   ├── DiskFullError           the filesystem refused a write (ENOSPC/SQLITE_FULL)
    │   ├── BudgetExceededError     the outbox reached its configured disk budget
    │   ├── CorruptDatabaseError    integrity check failed (the file is quarantined)
    │   └── NotInitialisedError     no identity/outbox in the data dir yet
    ├── CaptureError                a capture was refused before it was recorded
    │   ├── InvalidCaptureError     a field that the event schema does not allow
    │   └── InvalidMassError        a mass that cannot be represented (negative, too fine)
    ├── VerificationError           something received or stored does not verify
    │   ├── DecodeError             not well-formed or not canonical CBOR/COSE
    │   ├── SchemaError             well-formed, but not a valid event of our schema
    │   ├── SignatureError          signature, algorithm or kid does not match
    │   ├── ChainError              seq/prev does not continue the device's chain
    │   ├── CommitmentError         a commitment, point or scalar is invalid or mismatched
    │   ├── LogProofError           a transparency-log inclusion/consistency proof fails
    │   └── ProofError              a zero-knowledge proof or summary bundle fails a check
    ├── CryptoSelfTestError         the crypto library failed a start-up self-test
    └── SyncError                   the link to the broker or ledger failed (retried)

``KeyError_`` carries a trailing underscore so it never shadows the builtin.
"""

from __future__ import annotations


class CustodyError(Exception):
    """Base of every error cobalt-custody raises on purpose."""


class ConfigError(CustodyError):
    """A configuration value is missing or invalid.

    ``source`` names the file (or ``"<defaults>"``), ``key`` the dotted setting
    name, ``reason`` what is wrong with it. A problem with the file as a whole
    (missing, unreadable, not TOML) has no key: ``""`` or ``"-"``, and the
    message then names the file and the reason only.
    """

    def __init__(self, source: str, key: str, reason: str) -> None:
        self.source = source
        self.key = key
        self.reason = reason
        where = f"{source}: {key}" if key not in ("", "-") else source
        super().__init__(f"{where}: {reason}")


class KeyError_(CustodyError):
    """A key file is missing, unreadable or malformed."""


class KeyPermissionError(KeyError_):
    """A private key file is readable or writable by group or others."""


class StorageError(CustodyError):
    """The outbox (or another database) could not do what was asked."""


class DiskFullError(StorageError):
    """The filesystem refused a write; nothing in the failed batch was recorded."""


class BudgetExceededError(StorageError):
    """The outbox reached its disk budget: new captures are refused, old ones kept."""


class CorruptDatabaseError(StorageError):
    """A database failed its integrity check."""


class NotInitialisedError(StorageError):
    """The data directory has no identity or outbox yet (run ``custody-agent init``)."""


class CaptureError(CustodyError):
    """A capture was refused before anything was recorded."""


class InvalidCaptureError(CaptureError):
    """A capture's fields do not fit the event schema (nothing was recorded)."""


class InvalidMassError(CaptureError):
    """A mass cannot be represented in the record's fixed unit."""


class VerificationError(CustodyError):
    """Something received or stored does not verify."""


class DecodeError(VerificationError):
    """Bytes are not well-formed, or not in the one canonical encoding we accept."""


class SchemaError(VerificationError):
    """Well-formed CBOR that is not a valid event of our schema."""


class SignatureError(VerificationError):
    """A signature, algorithm or key id does not match."""


class ChainError(VerificationError):
    """An event does not continue its device's hash chain (seq or prev)."""


class CommitmentError(VerificationError):
    """A commitment, group element or scalar is invalid or does not open."""


class LogProofError(VerificationError):
    """A Merkle inclusion or consistency proof (RFC 9162 §2.1) does not verify.

    Also raised for malformed proof inputs: a hash that is not 32 bytes, a
    size or index out of range, or a proof of the wrong length.
    """


class ProofError(VerificationError):
    """A zero-knowledge proof or a summary bundle does not verify; the message names the check."""


class CryptoSelfTestError(CustodyError):
    """The cryptographic library failed a start-up self-test; refuse to run."""


class SyncError(CustodyError):
    """The link to the broker or ledger failed (retried by the sync worker)."""
