"""The relay's log handler writes INFO lines made on the event loop in batches, and everything
else (warnings, lines from threads, a flush) at once and in order."""

from __future__ import annotations

import asyncio
import io
import logging
import threading

from relay.logs import BatchingStreamHandler, TextFormatter, flush_logs


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
