"""The ledger service's log: one line per event on stderr (journald keeps it), as text or JSON.

Text lines read ``TIME LEVEL LOGGER: message``. JSON lines carry the same plus the fields a
call passes as ``extra`` (device id, reasons, retry delay), so a log shipper can filter by
device without parsing prose. Only plain values of ``extra`` are kept.
"""

from __future__ import annotations

import json
import logging
import sys
from typing import Literal

__all__ = ["LOG_FORMATS", "configure_logging"]

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# What every LogRecord has: anything else on a record came from ``extra``.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": self.formatTime(record), "level": record.levelname,
            "logger": record.name, "message": record.getMessage(),
        }  # fmt: skip
        for key, value in record.__dict__.items():
            if key not in _STANDARD and isinstance(value, str | int | float | bool | None):
                line[key] = value
        if record.exc_info:
            line["traceback"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


def configure_logging(fmt: Literal["text", "json"] | str = "text") -> None:
    """Log INFO and above of every logger to stderr in ``fmt``."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
