"""One HTTP/1.1 connection: it writes a request, parses the answer with httptools as bytes arrive,
and stops reading from the socket while it holds twice `read_buffer_bytes` of body unread."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import httptools

from .errors import ConnectionClosed, HTTPError, ProtocolError, ReadTimeout


@dataclass(frozen=True)
class Limits:
    max_connections: int
    connect_timeout: float
    # The longest the upstream may send nothing while an answer's head or body is awaited.
    read_timeout: float
    idle_seconds: float
    # Reading pauses while twice this much body is buffered unread.
    read_buffer_bytes: int
    # One status or header line, and the whole head (interim answers included).
    max_header_line_bytes: int
    max_head_bytes: int


class _HeadTooLarge(Exception):
    pass


class _Unexpected(Exception):
    pass


class Connection(asyncio.Protocol):
    """The protocol of one connection, and the state of the exchange in progress on it.

    An exchange: `send`, then `head()`, then `read()` until it returns b"". The owner decides
    reuse with `reusable`; any other ending (an error, a cancellation, a half-read body) must
    end in `abort()`, since the rest of that answer would otherwise be read as the next one's.
    """

    def __init__(self, limits: Limits) -> None:
        self._limits = limits
        self._loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.closed = False
        # Set by the pool: told once when the connection closes, whoever closed it.
        self.on_closed: Callable[[Connection], None] | None = None
        self.idle_until = 0.0
        self.busy = False
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self._parser: httptools.HttpResponseParser | None = None
        self._head_only = False
        self._interim = False
        # Bytes received before the head was complete (a bound however the head is split), and
        # the bytes of its header lines (interim answers' and trailers' too).
        self._head_bytes = 0
        self._header_bytes = 0
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._paused = False
        self._error: HTTPError | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- the exchange --------------------------------------------------------------------------------------

    def send(self, request: bytes, body: bytes | None, *, head_only: bool) -> None:
        if self.closed or self.transport is None:
            raise ConnectionClosed("the connection was closed before the request was written")
        self.busy = True
        self.status, self.headers, self.head_done, self.complete, self.keep_alive = 0, [], False, False, False
        self._head_only, self._interim, self._head_bytes, self._header_bytes, self._error = head_only, False, 0, 0, None
        # A parser per exchange: after a HEAD answer one would still wait for the body its head announced.
        self._parser = httptools.HttpResponseParser(self)
        if body and len(body) > 65536:
            self.transport.write(request)
            self.transport.write(body)
        else:
            self.transport.write(request + body if body else request)

    async def head(self) -> None:
        """Until the final answer's head has arrived (interim 1xx answers are skipped)."""
        while not self.head_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def read(self) -> bytes:
        """All the body that has arrived since the last call (waiting for some), or b"" at its end."""
        while True:
            if self._chunks:
                chunks = self._chunks
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                self._chunks, self._buffered = [], 0
                if self._paused and not self.closed and self.transport is not None:
                    self._paused = False
                    self.transport.resume_reading()
                return data
            if self.complete:
                return b""
            if self._error is not None:
                raise self._error
            await self._wait()

    @property
    def buffered(self) -> int:
        """Body bytes received and not yet read."""
        return self._buffered

    @property
    def reusable(self) -> bool:
        """The answer arrived to its end, and both sides keep the connection open."""
        return self.complete and self.keep_alive and self._error is None and not self.closed

    def finish(self) -> None:
        """The exchange is over and the connection goes back to idle (only when `reusable`)."""
        self.busy = False
        self._chunks, self._buffered, self._parser = [], 0, None
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()

    def abort(self) -> None:
        """Drop the connection at once: whatever it was in the middle of cannot be trusted."""
        if self.transport is not None:
            self.transport.abort()
        self._closed()

    def close(self) -> None:
        """Close an idle connection politely."""
        if self.transport is not None:
            self.transport.close()
        self._closed()

    # -- waiting -------------------------------------------------------------------------------------------

    async def _wait(self) -> None:
        """Until anything arrives (every data_received wakes the waiter), or the read timeout passes.

        So, like a socket read timeout, the time counts from the last bytes received.
        """
        loop = self._loop
        waiter = self._waiter = loop.create_future()
        self._timer = loop.call_later(self._limits.read_timeout, self._timed_out)
        try:
            await waiter
        finally:
            self._waiter = None
            self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._fail(ReadTimeout("no bytes from the upstream within the read timeout"))

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: HTTPError) -> None:
        if self._error is None:
            self._error = error
        self.keep_alive = False
        self._wake()

    def _closed(self) -> None:
        if not self.closed:
            self.closed = True
            if self.on_closed is not None:
                self.on_closed(self)

    # -- asyncio.Protocol ----------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, though they behave as one.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        parser = self._parser
        if not self.busy or self.complete or parser is None:
            # Bytes no request asked for (or after the answer ended): this connection's framing
            # can no longer be trusted.
            self.keep_alive = False
            if not self.busy:
                self.abort()
            return
        if not self.head_done:
            self._head_bytes += len(data)
        try:
            parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # A 101: its head is all it has; what follows is no longer HTTP.
            self.complete, self.keep_alive = True, False
        except httptools.HttpParserError as exc:
            if self.complete:
                self.keep_alive = False
            elif isinstance(exc.__context__, _HeadTooLarge):
                self._fail(ProtocolError("the answer's head is over the size limits"))
            else:
                self._fail(ProtocolError("the answer is not valid HTTP/1.1"))
        if not self.head_done and self._head_bytes > self._limits.max_head_bytes:
            self._fail(ProtocolError("the answer's head is over the size limits"))
        if self._buffered >= 2 * self._limits.read_buffer_bytes and not self._paused and self.transport is not None:
            # The consumer is behind: let the kernel's buffers and TCP's window hold the rest. At
            # twice the buffer, as aiohttp's high-water mark: pausing at once (a socket read on
            # uvloop is up to 256 KiB) paused and resumed the socket at every read, and 8
            # downloads at once went 1,100 -> 800 MB/s (measured with bench.streaming).
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def eof_received(self) -> bool | None:
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed()
        if self.busy and not self.complete:
            if exc is None and self.head_done and self._error is None and self._reads_to_close():
                self.complete = True
            else:
                self._fail(ConnectionClosed("the connection was closed before the answer ended"))
        self.keep_alive = False
        self._wake()

    def _reads_to_close(self) -> bool:
        """The answer has neither a length nor chunks: its body ends where the connection does."""
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (lowered == b"transfer-encoding" and b"chunked" in value.lower()):
                return False
        return True

    # -- httptools callbacks -------------------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.complete:
            # A second answer to one request.
            self.keep_alive = False
            raise _Unexpected()

    def on_status(self, status: bytes) -> None:
        if len(status) > self._limits.max_header_line_bytes:
            raise _HeadTooLarge()

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._header_bytes += size + 4
        if size > self._limits.max_header_line_bytes or self._header_bytes > self._limits.max_head_bytes:
            raise _HeadTooLarge()
        if not self.head_done:
            # Trailers (after a chunked body) are not part of the head already handed out.
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        assert self._parser is not None
        status = self._parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: the final answer follows on the same connection.
            self._interim, self.headers = True, []
            return
        self.status = status
        self.keep_alive = status != 101 and self._parser.should_keep_alive()
        self.head_done = True
        if self._head_only:
            self.complete = True

    def on_body(self, body: bytes) -> None:
        if self.complete:
            # A body after a HEAD answer's head.
            self.keep_alive = False
            return
        self._chunks.append(body)
        self._buffered += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
