"""The exit codes of every cobalt-custody program, in one table.

``custody-agent``, ``custody-ledger``, ``custody-registry`` and ``custody-verify`` exit with
these codes and no others. Each code says in plain words what went wrong and whether a
restart can fix it: the systemd units' ``RestartPreventExitStatus=`` lists exactly the codes
marked ``permanent`` (a restart loop cannot heal a bad config or a missing key; the unit stays
failed with the code in ``systemctl status`` until an operator acts), and README.md's exit-code
table is this one (tests/test_exits.py checks both).

Our exceptions (``custody.errors``) map to codes by their nearest class in ``ERROR_EXITS``,
so a new subclass inherits its branch's code. The device bridge's own tree is mapped by the
agent, which is the only program that talks to devices.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import IntEnum
from types import MappingProxyType

from custody.errors import (
    CaptureError,
    ConfigError,
    CryptoSelfTestError,
    CustodyError,
    KeyError_,
    StorageError,
    VerificationError,
)

__all__ = ["ERROR_EXITS", "ExitCode", "exit_code_for"]


class ExitCode(IntEnum):
    """An exit status, its meaning and whether restarting the service cannot fix it."""

    meaning: str
    permanent: bool

    def __new__(cls, value: int, meaning: str, permanent: bool) -> ExitCode:
        member = int.__new__(cls, value)
        member._value_ = value
        member.meaning = meaning
        member.permanent = permanent
        return member

    OK = 0, "done (custody-verify: the bundle is accepted)", False
    VERIFICATION_FAILED = (
        1,
        "verification failed: a signature, chain, commitment or proof does not verify "
        "(custody-verify: the bundle is rejected)",
        False,
    )
    USAGE = (
        2,
        "usage: a bad command line (custody-verify: no pinned key, or a file missing, "
        "unreadable or malformed)",
        True,
    )
    CONFIG = 3, "configuration: a bad or missing setting, port or request", True
    KEY = 4, "key files: missing, unreadable or readable by others", True
    STORAGE = 5, "storage: disk full, disk budget reached, corrupt database", False
    CAPTURE_REFUSED = 6, "capture refused before anything was recorded", False
    CRYPTO_SELF_TEST = 7, "the crypto library failed its start-up self-test", True
    DEVICE = 8, "device error: a serial device or camera failed", False
    ERROR = 9, "another error (the one-line message says which)", False
    UNACKED = 10, "sync ended with records still unacked: run it again", False
    WORKER_FAILED = 11, "custody-agent run: a worker failed unexpectedly", False
    DRAIN_TIMEOUT = (
        12,
        "custody-agent run: SIGTERM could not drain within service.drain_deadline_s",
        False,
    )
    NOT_ALL_DECODED = (
        13,
        "custody-agent camera decode: some images gave no code (each image's line says why)",
        False,
    )
    INTERRUPTED = 130, "interrupted (Ctrl-C)", False


# Each branch of the exception tree and its code; the base is the catch-all.
ERROR_EXITS: Mapping[type[CustodyError], ExitCode] = MappingProxyType(
    {
        CustodyError: ExitCode.ERROR,
        VerificationError: ExitCode.VERIFICATION_FAILED,
        ConfigError: ExitCode.CONFIG,
        KeyError_: ExitCode.KEY,
        StorageError: ExitCode.STORAGE,
        CaptureError: ExitCode.CAPTURE_REFUSED,
        CryptoSelfTestError: ExitCode.CRYPTO_SELF_TEST,
    }
)


def exit_code_for(exc: CustodyError) -> ExitCode:
    """The code of the nearest class of ``exc`` that ``ERROR_EXITS`` lists."""
    return next(ERROR_EXITS[cls] for cls in type(exc).__mro__ if cls in ERROR_EXITS)
