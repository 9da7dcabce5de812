"""The systemd notification protocol, spoken directly (no libsystemd, no dependency).

sd_notify(3): a service started with ``Type=notify`` finds a datagram socket
in ``$NOTIFY_SOCKET`` and sends newline-separated ``KEY=VALUE`` assignments to
it: ``READY=1`` once it serves, ``STATUS=...`` free text for ``systemctl
status``, ``WATCHDOG=1`` keep-alives, ``STOPPING=1`` and ``RELOADING=1``. An
address starting with ``@`` is in the Linux abstract namespace (the ``@``
becomes a NUL byte, unix(7)). Outside systemd ``$NOTIFY_SOCKET`` is unset and
every call is a no-op (gunicorn ``systemd.py``).

sd_watchdog_enabled(3): ``$WATCHDOG_USEC`` is the watchdog period; it applies
to this process only when ``$WATCHDOG_PID`` is unset or equals our pid. The
manual recommends pinging at half the period, which ``watchdog_interval_s``
returns.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

__all__ = ["Notifier"]


class Notifier:
    """Sends sd_notify(3) messages when ``$NOTIFY_SOCKET`` is set; otherwise does nothing."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = env.get("NOTIFY_SOCKET") or None
        self.watchdog_interval_s = _watchdog_interval(env)
        self.failures = 0
        self.last_error: str | None = None
        self._sock: socket.socket | None = None

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *assignments: str) -> bool:
        """Send one datagram of ``KEY=VALUE`` lines; True when it was sent.

        A failed send is counted, never raised: the service must keep working
        when systemd is restarting, and a missing watchdog ping is what
        reports a real problem.
        """
        if self.address is None:
            return False
        message = "\n".join(assignments).encode("utf-8")
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]  # abstract namespace, unix(7)
        elif not target.startswith("/"):
            # vsock:CID:PORT (systemd >= 253) and other forms are not for a gateway.
            self.failures += 1
            self.last_error = f"unsupported NOTIFY_SOCKET address {self.address!r}"
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # Never block the main loop: a receiver that is not reading fills its
                # queue after net.unix.max_dgram_qlen datagrams (10 by default) and a
                # blocking sendto would then stall signals and the watchdog itself.
                self._sock.setblocking(False)
            self._sock.sendto(message, target)
        except OSError as exc:
            self.failures += 1
            self.last_error = f"{self.address}: {exc}"
            return False
        return True

    def ready(self, status: str) -> bool:
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, status: str) -> bool:
        return self.notify(f"STATUS={status}")

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def reloading(self, status: str = "reloading configuration") -> bool:
        # systemd >= 253 (Type=notify-reload) requires MONOTONIC_USEC with RELOADING=1
        # (sd_notify(3)); older versions ignore it.
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.notify("RELOADING=1", f"MONOTONIC_USEC={usec}", f"STATUS={status}")

    def stopping(self, status: str = "draining") -> bool:
        return self.notify("STOPPING=1", f"STATUS={status}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(env: Mapping[str, str]) -> float | None:
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid and pid != str(os.getpid())):
        return None
    return usec / 2 / 1_000_000
