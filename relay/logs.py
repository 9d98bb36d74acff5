"""Log lines: plain text or JSON (RELAY_LOG_FORMAT=json), with structured fields.

Fields are passed as `extra={"fields": {...}}`. They carry request ids, key and account
names, routes, statuses, error classes and timings: never bodies, prompts or credentials.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

LOG_FORMATS = ("text", "json")


@dataclass
class RequestFacts:
    """What handlers learn about a request, for its access-log line and overhead header."""

    key: str | None = None
    account: str | None = None
    route: str | None = None
    error_class: str | None = None
    upstream_seconds: float = 0.0


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call, dropping empty values."""
    return {"fields": {name: value for name, value in values.items() if value is not None}}


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.formatTime(record)} {record.levelname} {record.name} {record.getMessage()}"
        extra: dict[str, Any] = getattr(record, "fields", {})
        if extra:
            line += " " + " ".join(f"{name}={value}" for name, value in extra.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": round(record.created, 6),
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(log_format: str) -> None:
    """Lines on stderr, unless the host application configured the `relay` logger itself."""
    logger = logging.getLogger("relay")
    if logger.handlers:
        return
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
