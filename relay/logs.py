"""Log lines: plain text or JSON (RELAY_LOG_FORMAT=json), with structured fields.

Fields are passed as `extra={"fields": {...}}`. They carry request ids, key and account
names, routes, statuses, error classes and timings: never bodies, prompts or credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, TextIO

LOG_FORMATS = ("text", "json")
# The error class of a request (and an upstream attempt) the server's shutdown cut short.
SHUTDOWN = "shutdown"


@dataclass
class RequestFacts:
    """What handlers learn about a request, for its access-log line and overhead header."""

    key: str | None = None
    account: str | None = None
    route: str | None = None
    error_class: str | None = None
    upstream_seconds: float = 0.0
    # The server told the app the client hung up (an `http.disconnect` message).
    client_left: bool = False

    def cut_by_shutdown(self) -> bool:
        """Called when the request's task is cancelled: by its client leaving, or else by the
        server's graceful-shutdown limit (uvicorn cancels what still runs then), noted as `shutdown`."""
        if self.client_left:
            return False
        self.error_class = SHUTDOWN
        return True


def fields(**values: Any) -> dict[str, Any]:
    """`extra=` for a log call, dropping empty values."""
    return {"fields": {name: value for name, value in values.items() if value is not None}}


# C0 and C1 controls, DEL, the Unicode line and paragraph separators and the bidirectional
# overrides: anything a terminal or a log shipper could take for the end of a line, a colour
# change, or text that reads in another order than it is stored.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def escape_controls(value: object) -> str:
    """`value` on one line: an upstream's error code with a newline must not start a forged log line."""
    text = str(value)
    # Every character the pattern matches is non-printable: most values skip the regex.
    if text.isprintable():
        return text
    return _CONTROL.sub(lambda match: match.group().encode("unicode_escape").decode(), text)


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = self.line(record.created, record.levelname, record.name, record.getMessage(), getattr(record, "fields", {}))
        if record.exc_info:
            # A traceback spans lines; indented, none of them (nor an exception message inside) can pass for a log line.
            line += "\n" + "\n".join(f"    {escape_controls(part)}" for part in self.formatException(record.exc_info).splitlines())
        return line

    def line(self, created: float, level: str, logger: str, message: str, extra: dict[str, Any]) -> str:
        """`format`'s line for a record made of these, without its traceback."""
        line = f"{_local_time(created)} {level} {escape_controls(logger)} {escape_controls(message)}"
        if extra:
            line += " " + " ".join(f"{escape_controls(name)}={escape_controls(value)}" for name, value in extra.items())
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = self.entry(record.created, record.levelname, record.name, record.getMessage(), getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)

    def line(self, created: float, level: str, logger: str, message: str, extra: dict[str, Any]) -> str:
        return json.dumps(self.entry(created, level, logger, message, extra), default=str)

    def entry(self, created: float, level: str, logger: str, message: str, extra: dict[str, Any]) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "ts": round(created, 6),
            "time": _utc_time(created),
            "level": level.lower(),
            "logger": logger,
            "message": message,
        }
        entry.update(extra)
        return entry


# One access line per request: the part of a timestamp that names the second is made once a second.
@functools.lru_cache(maxsize=4)
def _local_second(second: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))


@functools.lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _local_time(created: float) -> str:
    """As logging.Formatter.formatTime writes it: local time, with milliseconds after a comma."""
    second = int(created)
    return f"{_local_second(second)},{int((created - second) * 1000):03d}"


def _utc_time(created: float) -> str:
    second = int(created)
    return f"{_utc_second(second)}.{int((created - second) * 1000):03d}Z"


def log_info(logger: logging.Logger, message: str, **values: Any) -> None:
    """`logger.info(message, extra=fields(**values))` for a line made once per request (the access log).

    When the line would go only to the relay's own handler, the same line is formatted and
    handed to it directly: a LogRecord, the caller's frame and the handler's lock cost a request
    about 20 µs, measured in a running relay. Otherwise (a host application's handlers or
    filters in the way), through logging as any line.
    """
    if not logger.isEnabledFor(logging.INFO):
        return
    extra = fields(**values)
    handler = _sole_handler(logger)
    if handler is None:
        logger.info(message, extra=extra)
        return
    formatter = handler.formatter
    assert isinstance(formatter, TextFormatter | JsonFormatter)  # _sole_handler
    handler.emit_line(formatter.line(time.time(), "INFO", logger.name, message, extra["fields"]), logging.INFO)


def _sole_handler(logger: logging.Logger) -> BatchingStreamHandler | None:
    """The relay's handler, if a line of `logger` reaches it and nothing else: the logger has no
    handlers or filters of its own and passes its lines to a parent holding that one handler."""
    parent = logger.parent
    if logger.handlers or logger.filters or not logger.propagate or parent is None or parent.filters or parent.propagate:
        return None
    if len(parent.handlers) != 1:
        return None
    handler = parent.handlers[0]
    if type(handler) is not BatchingStreamHandler or handler.filters or handler.level > logging.INFO:
        return None
    if type(handler.formatter) not in (TextFormatter, JsonFormatter):
        return None
    return handler


# How long an INFO line (the access log's) may wait in the buffer before it is written.
_BATCH_SECONDS = 0.05
# Written at once past this many buffered characters, however young.
_BATCH_CHARS = 64 * 1024


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that, on an event loop, writes INFO lines in batches.

    A write per access-log line costs the event loop a system call per request; here lines made
    on a running loop wait up to _BATCH_SECONDS and go out together, written by the loop (no
    thread to wake). WARNING and above, lines made off the loop, and `flush()` (logging's own at
    exit) write everything buffered at once, in order. A process killed outright loses at most
    the lines of the last _BATCH_SECONDS.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._buffer: list[str] = []
        self._buffered_chars = 0
        # The loop a flush is scheduled on (a loop may close before its callback runs: tests make many).
        self._scheduled_on: asyncio.AbstractEventLoop | None = None

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:
            self.handleError(record)
            return
        self.emit_line(line, record.levelno)

    def emit_line(self, line: str, level: int) -> None:
        """A formatted line (without its terminator) of `level`, written as `emit` writes a record's."""
        line += self.terminator
        loop = _running_loop() if level < logging.WARNING else None
        self.acquire()
        try:
            self._buffer.append(line)
            self._buffered_chars += len(line)
            if loop is None or self._buffered_chars >= _BATCH_CHARS:
                self.flush()
            elif self._scheduled_on is not loop:
                self._scheduled_on = loop
                loop.call_later(_BATCH_SECONDS, self._flush_from_loop)
        finally:
            self.release()

    def _flush_from_loop(self) -> None:
        self._scheduled_on = None
        self.flush()

    def flush(self) -> None:
        self.acquire()
        try:
            if self._buffer:
                text, self._buffer, self._buffered_chars = "".join(self._buffer), [], 0
                # A closed or broken stderr: nothing left to tell.
                with contextlib.suppress(Exception):
                    self.stream.write(text)
            super().flush()
        finally:
            self.release()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def flush_logs() -> None:
    """Write what the relay's handlers hold: at the end of the lifespan, since a server that
    re-raises the signal it stopped on never reaches logging's own flush at exit."""
    for handler in logging.getLogger("relay").handlers:
        handler.flush()


def log_format_from_env() -> str:
    """RELAY_LOG_FORMAT, or text when it is unset or unknown (the settings refuse an unknown one, in text)."""
    chosen = (os.environ.get("RELAY_LOG_FORMAT") or "").strip().lower()
    return chosen if chosen in LOG_FORMATS else "text"


def formatter_for(log_format: str) -> logging.Formatter:
    return JsonFormatter() if log_format == "json" else TextFormatter()


def formatter_from_env() -> logging.Formatter:
    """The formatter relay/uvicorn-logging.json gives uvicorn's own loggers (and the root logger), so
    uvicorn's start-up and shutdown lines come out in the relay's format too."""
    return formatter_for(log_format_from_env())


def configure_logging(log_format: str) -> None:
    """Lines on stderr, unless the host application configured the `relay` logger itself."""
    # PostgreSQL's connection pool warns of every failed connection attempt (several a second in
    # an outage) with the server's message, which names hosts and users. The relay says once when
    # its database becomes unavailable and once when it is back, with the reason in fixed words.
    logging.getLogger("psycopg.pool").setLevel(logging.ERROR)
    # httpx logs every request's URL at INFO; a webhook endpoint's URL may carry its owner's token.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logger = logging.getLogger("relay")
    if logger.handlers:
        return
    handler = BatchingStreamHandler()
    handler.setFormatter(formatter_for(log_format))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
