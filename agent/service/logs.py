"""Structured service logs: one line per event on stdout, for journald or a terminal.

``text`` is logfmt (``ts=... level=info event=port.state port=/dev/ttyUSB0
state=open``); ``json`` is one JSON object per line. Multi-line values
(tracebacks) are escaped so an event never spans lines.

Under systemd, stdout is a journal stream (``$JOURNAL_STREAM`` names its
device and inode, systemd.exec(5)); each line then starts with the syslog
priority in angle brackets, which journald strips and stores as PRIORITY
(sd-daemon(3), ``SyslogLevelPrefix=`` default yes). On a terminal there is no
prefix.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from typing import Any, TextIO

__all__ = ["LOG_FORMATS", "EventLog", "LoggingBridge"]

LOG_FORMATS = ("text", "json")
# sd-daemon(3) SD_ERR, SD_WARNING, SD_INFO, SD_DEBUG
_PRIORITY = {"error": 3, "warning": 4, "info": 6, "debug": 7}


class EventLog:
    """Thread-safe writer of one-line events."""

    def __init__(self, fmt: str = "text", stream: TextIO | None = None) -> None:
        if fmt not in LOG_FORMATS:
            raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}")
        self.fmt = fmt
        self.stream = stream if stream is not None else sys.stdout
        self.journal = _is_journal_stream(self.stream)
        self._lock = threading.Lock()

    def event(self, level: str, event: str, **fields: Any) -> None:
        ms = time.time_ns() // 1_000_000
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"
        record = {"ts": ts, "level": level, "event": event}
        record.update({k: v for k, v in fields.items() if v is not None})
        if self.fmt == "json":
            line = json.dumps(record, default=str, separators=(",", ":"))
        else:
            line = " ".join(f"{k}={_logfmt(v)}" for k, v in record.items())
        if self.journal:
            line = f"<{_PRIORITY.get(level, 6)}>{line}"
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()

    def info(self, event: str, **fields: Any) -> None:
        self.event("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.event("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.event("error", event, **fields)


def _logfmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        value = ",".join(str(v) for v in value)  # workers=port:/dev/ttyUSB0,sync
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    if text and not any(c in text for c in ' "=\\\n\r\t'):
        return text
    return json.dumps(text)  # quoted, with \n and \" escaped: still one line


def _is_journal_stream(stream: TextIO) -> bool:
    wanted = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = wanted.partition(":")
    if not dev or not ino:
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return f"{st.st_dev}:{st.st_ino}" == wanted


_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning"}


class LoggingBridge(logging.Handler):
    """Sends records of the ``logging`` module (workflows, libraries) into the event log."""

    def __init__(self, log: EventLog, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.log = log

    def emit(self, record: logging.LogRecord) -> None:
        trace = None
        if record.exc_info:
            trace = logging.Formatter().formatException(record.exc_info)
        level = _LEVELS.get(record.levelno, "error")
        self.log.event(
            level, "log", logger=record.name, message=record.getMessage(), traceback=trace
        )
