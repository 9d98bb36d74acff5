"""The relay's log handler writes INFO lines made on the event loop in batches, and everything
else (warnings, lines from threads, a flush) at once and in order."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import threading
import time

import pytest

from relay.logs import BatchingStreamHandler, JsonFormatter, TextFormatter, fields, flush_logs, log_info


class CountingStream(io.StringIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, text: str) -> int:
        self.writes += 1
        return super().write(text)


def logger_with(stream: CountingStream, name: str) -> logging.Logger:
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger(name)
    logger.handlers = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO)
    return logger


def test_lines_made_on_the_loop_go_out_together_and_a_warning_takes_them_along() -> None:
    stream = CountingStream()
    logger = logger_with(stream, "relay.test-batching")

    async def serve() -> None:
        for number in range(5):
            logger.info("request %d", number)
        assert stream.getvalue() == ""  # waiting for the batch
        await asyncio.sleep(0.2)
        assert stream.writes == 1 and stream.getvalue().count("request") == 5
        logger.info("request 5")
        logger.warning("something is wrong")  # written at once, after what waited
        lines = stream.getvalue().splitlines()
        assert "request 5" in lines[-2] and "something is wrong" in lines[-1]

    asyncio.run(serve())


def test_lines_from_threads_and_after_the_loop_closed_are_not_held() -> None:
    stream = CountingStream()
    logger = logger_with(stream, "relay.test-batching-threads")

    async def one_line() -> None:
        logger.info("on a loop that ends before its batch is due")

    asyncio.run(one_line())
    worker = threading.Thread(target=lambda: logger.info("from a thread"))
    worker.start()
    worker.join()
    text = stream.getvalue()
    assert "from a thread" in text and "on a loop that ends" in text  # taken along, in order
    assert text.index("on a loop") < text.index("from a thread")

    async def another_loop() -> None:
        logger.info("on a second loop")
        await asyncio.sleep(0.2)

    asyncio.run(another_loop())  # a loop that closed with a batch pending does not stall later ones
    assert "on a second loop" in stream.getvalue()


def test_flush_logs_writes_what_the_relay_logger_holds() -> None:
    stream = CountingStream()
    relay_logger = logging.getLogger("relay")
    saved = relay_logger.handlers, relay_logger.propagate, relay_logger.level
    handler = BatchingStreamHandler(stream)
    relay_logger.handlers, relay_logger.propagate = [handler], False
    relay_logger.setLevel(logging.INFO)
    try:

        async def one_line() -> None:
            logging.getLogger("relay.access").info("request")
            assert stream.getvalue() == ""
            flush_logs()
            assert "request" in stream.getvalue()

        asyncio.run(one_line())
    finally:
        relay_logger.handlers, relay_logger.propagate = saved[0], saved[1]
        relay_logger.setLevel(saved[2])


def parent_and_child(stream: CountingStream, name: str, formatter: logging.Formatter) -> tuple[logging.Logger, logging.Logger]:
    """A parent holding the relay's handler, as configure_logging sets up `relay`, and a child
    that passes its lines to it, as `relay.access` does."""
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(formatter)
    parent = logging.getLogger(name)
    parent.handlers, parent.filters, parent.propagate = [handler], [], False
    parent.setLevel(logging.INFO)
    child = logging.getLogger(f"{name}.access")
    child.handlers, child.filters, child.propagate = [], [], True
    return parent, child


ACCESS = {"request_id": "req_1", "route": "videos.retrieve", "status": 200, "error_class": None, "overhead_ms": 0.25}


@pytest.mark.parametrize("formatter", [TextFormatter(), JsonFormatter()], ids=["text", "json"])
def test_log_info_writes_the_line_logging_would_write(formatter: logging.Formatter, monkeypatch: pytest.MonkeyPatch) -> None:
    stream = CountingStream()
    _, child = parent_and_child(stream, f"relay.test-direct-{type(formatter).__name__}", formatter)
    now = 1_765_000_000.125
    monkeypatch.setattr(time, "time", lambda: now)
    monkeypatch.setattr(time, "time_ns", lambda: int(now * 1e9))
    made: list[str] = []
    make_record = logging.Logger.makeRecord
    monkeypatch.setattr(
        logging.Logger, "makeRecord", lambda self, *args, **kwargs: made.append(args[4]) or make_record(self, *args, **kwargs)
    )
    log_info(child, "request", **ACCESS)
    assert made == []  # handed to the handler directly: no LogRecord
    child.info("request", extra=fields(**ACCESS))
    assert made == ["request"]
    # Made off a loop, both were written at once.
    direct, through_logging = stream.getvalue().splitlines()
    assert direct == through_logging
    assert "error_class" not in direct and "req_1" in direct
    # The time as logging's own formatter writes it (local, milliseconds after a comma), or in UTC for JSON.
    if isinstance(formatter, JsonFormatter):
        assert json.loads(direct)["time"] == time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + ".125Z"
    else:
        record = child.makeRecord(child.name, logging.INFO, "", 0, "request", (), None)
        assert direct.startswith(logging.Formatter().formatTime(record) + " INFO relay.test-direct")


def test_log_info_goes_through_logging_when_anything_else_would_see_the_line() -> None:
    stream = CountingStream()
    parent, child = parent_and_child(stream, "relay.test-direct-filtered", TextFormatter())
    seen: list[logging.LogRecord] = []

    def keep(record: logging.LogRecord) -> bool:
        seen.append(record)
        return record.getMessage() != "hidden"

    child.addFilter(keep)
    log_info(child, "hidden", request_id="req_2")
    log_info(child, "shown", request_id="req_3")
    assert [record.getMessage() for record in seen] == ["hidden", "shown"]
    parent.handlers[0].flush()
    assert "shown" in stream.getvalue() and "hidden" not in stream.getvalue()
    child.removeFilter(keep)
    # A host application's second handler gets every line too.
    other = CountingStream()
    parent.addHandler(logging.StreamHandler(other))
    log_info(child, "to both", request_id="req_4")
    parent.handlers[0].flush()
    assert "to both" in stream.getvalue() and "to both" in other.getvalue()
    # Disabled (RELAY_ACCESS_LOG=0): nothing at all.
    child.disabled = True
    log_info(child, "never", request_id="req_5")
    parent.handlers[0].flush()
    assert "never" not in stream.getvalue() + other.getvalue()
