"""One HTTP/1.1 connection: it writes a request, reads the answer into a buffer of its own, parses
its head with httptools, and stops reading from the socket while it holds `read_buffer_bytes` of
body unread.

A body framed by Content-Length is not parsed at all: its bytes are handed out as views of the
buffer they were read into (no copy), and a buffer is not written again while any view of it is
alive: read to its end, it is read into again only once the last view of it is gone. Measured
on a 1 GiB download through a one-worker relay, this and its larger reads (a plain asyncio
Protocol on uvloop gets at most 256 KiB per read, as a new bytes object) are what separated the
relay from a proxy that only copies (docs/performance.md, twelfth and fifteenth passes)."""

from __future__ import annotations

import asyncio
import sys
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
    # The buffer a read goes into (so the most one read takes), and how much body may wait unread
    # before reading pauses.
    read_buffer_bytes: int
    # One status or header line, and the whole head (interim answers included).
    max_header_line_bytes: int
    max_head_bytes: int


class _HeadTooLarge(Exception):
    pass


class _Unexpected(Exception):
    pass


# The buffer for heads and small bodies. Only a body longer than this gets a buffer of
# `read_buffer_bytes`, so an idle pooled connection holds no more than this.
_SMALL_BUFFER_BYTES = 64 * 1024
_NO_BUFFER = bytearray()
# sys.getrefcount of a spare no view points into: the connection's attribute and the call's
# argument. Every view of a buffer (slices of views too) shares one exporter object, which holds
# a reference to the buffer for as long as any of them, or any buffer protocol user of them, is
# alive.
_UNSHARED_REFCOUNT = 2


class Connection(asyncio.BufferedProtocol):
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
        # Allocated at the first read. Bytes read into it so far; while `_lent`, a view of it is out
        # there, so it is only ever written past that point (and replaced when nearly full).
        self._buffer = _NO_BUFFER
        self._view = memoryview(self._buffer)
        self._filled = 0
        self._lent = False
        # A long body's last buffer, read to its end, to be read into again once no view of it is
        # left: it and the current one take turns while the consumer sends the views of one and
        # the socket fills the other. One, not more: 8 downloads at once keep within the memory
        # they took before (docs/performance.md, fifteenth pass).
        self._spare: bytearray | None = None
        # A Content-Length body read straight from the buffer: the bytes still to come (None when
        # the parser frames the body), and where the unread part of it starts in the buffer.
        self._body_left: int | None = None
        self._body_from = 0
        self._body_seen = 0
        # Whether the body's framing has been looked at (once its head is in), and so the size
        # of the buffer the next reads want: large while a long body is on its way.
        self._body_framed = False
        self._read_size = _SMALL_BUFFER_BYTES
        # Body handed over and not yet read: httptools' copies, and views of buffers left full.
        self._chunks: list[bytes | memoryview] = []
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
        self._body_left, self._body_seen, self._body_framed, self._read_size = None, 0, False, _SMALL_BUFFER_BYTES
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

    async def read(self) -> bytes | memoryview:
        """Body that has arrived since the last call (waiting for some), or b"" at its end.

        A view stays valid for as long as it is kept: its buffer is not written again meanwhile.
        """
        while True:
            data: bytes | memoryview
            if self._chunks:
                # The oldest first: what the parser or full buffers handed over.
                chunks = self._chunks
                self._chunks = []
                data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            elif self._body_left is not None and self._body_from < self._filled:
                data = self._view[self._body_from : self._filled]
                self._body_from = self._filled
                self._lent = True
            elif self.complete:
                return b""
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()
                continue
            self._buffered -= len(data)
            if self._paused and self._buffered < self._limits.read_buffer_bytes and not self.closed and self.transport is not None:
                self._paused = False
                self.transport.resume_reading()
            return data

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
        self._chunks, self._buffered, self._parser, self._body_left, self._read_size = [], 0, None, None, _SMALL_BUFFER_BYTES
        if self._lent or len(self._buffer) > _SMALL_BUFFER_BYTES:
            # Idle, it keeps no large buffer and none a view may still point into.
            self._new_buffer(0)
        self._spare = None
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

    def get_buffer(self, sizehint: int) -> memoryview:
        size = len(self._buffer)
        # Reads into the last eighth of a buffer would be many and small. A Content-Length body
        # fills the small buffer before it gets a large one: taking a large one at once cost 8
        # downloads at once a fifth of their rate, in four runs (docs/performance.md,
        # twelfth pass). A parsed body gets one at once (it leaves nothing in the buffer).
        if size - self._filled <= size // 8 or (size < self._read_size and self._body_left is None):
            self._new_buffer(self._read_size)
        # Most reads start a fresh or rewound buffer: no slice to make.
        return self._view[self._filled :] if self._filled else self._view

    def _new_buffer(self, size: int) -> None:
        """Reading goes on in a fresh buffer; the unread body left in the old one is handed over."""
        if self._body_left is not None and self._body_from < self._filled:
            self._chunks.append(self._view[self._body_from : self._filled])
        used = self._buffer
        self._buffer = self._unshared_spare(size) or (bytearray(size) if size else _NO_BUFFER)
        self._view = memoryview(self._buffer)
        self._filled = self._body_from = 0
        self._lent = False
        if size > _SMALL_BUFFER_BYTES and len(used) == size:
            # A spare a view still pins (a slow client's) gives way to this one.
            self._spare = used

    def _unshared_spare(self, size: int) -> bytearray | None:
        """The spare, taken, if it has `size` and no view points into it any more; else None.

        Reused, it saves zeroing a new buffer and the kernel's fresh pages for it: 4-7 % of a
        download's CPU (docs/performance.md, twelfth pass). Its old bytes are never handed out:
        views cover only what is read into it again.
        """
        if self._spare is None or len(self._spare) != size or sys.getrefcount(self._spare) != _UNSHARED_REFCOUNT:
            return None
        spare, self._spare = self._spare, None
        return spare

    def buffer_updated(self, nbytes: int) -> None:
        start = self._filled
        self._filled += nbytes
        if self._body_left is not None:
            self._body_received(start, nbytes)
        else:
            self._parse(self._view[start : self._filled])
            if not self._lent:
                # httptools copied what it kept: the buffer can be read into again from its start.
                self._filled = 0
            self._body_from = self._filled
        if self._buffered >= self._limits.read_buffer_bytes and not self._paused:
            # The consumer is behind: let the kernel's buffers and TCP's window hold the rest.
            self._paused = True
            cast(asyncio.Transport, self.transport).pause_reading()
        self._wake()

    def _body_received(self, start: int, nbytes: int) -> None:
        """Bytes of a Content-Length body, left where they were read until `read()` takes them."""
        assert self._body_left is not None
        if not self.busy or self.complete:
            self._unasked()
            self._filled = start
            return
        if nbytes > self._body_left:
            # More than the answer announced: this connection's framing can no longer be trusted.
            self.keep_alive = False
            self._filled = start + self._body_left
            nbytes = self._body_left
        self._body_left -= nbytes
        self._buffered += nbytes
        if self._body_left == 0:
            self.complete = True

    def _parse(self, data: memoryview) -> None:
        parser = self._parser
        if not self.busy or self.complete or parser is None:
            self._unasked()
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
        if self.head_done and not self._body_framed and not self.complete and self._error is None:
            self._body_framed = True
            length = self._content_length()
            if length is None:
                # Framed by chunks or by the connection's end: how long it is, is not known.
                self._read_size = self._limits.read_buffer_bytes
            else:
                # The parser has framed what arrived with the head; the rest is read as it lies.
                self._body_left = length - self._body_seen
                if self._body_left > _SMALL_BUFFER_BYTES:
                    self._read_size = self._limits.read_buffer_bytes

    def _unasked(self) -> None:
        """Bytes no request asked for (or after the answer ended): this connection's framing can no
        longer be trusted."""
        self.keep_alive = False
        if not self.busy:
            self.abort()

    def _content_length(self) -> int | None:
        """The body's length when the head gives exactly one Content-Length and no Transfer-Encoding."""
        found = None
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"transfer-encoding" or (lowered == b"content-length" and found is not None):
                return None
            if lowered == b"content-length":
                found = value.strip()
        return int(found) if found is not None and found.isdigit() else None

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
        # A server answering 5xx is often about to drop the connection without saying so (an
        # ASGI server closes it after logging the crash behind a 500): the next request written
        # onto it would be lost, and a create could not be sent again. A new connection costs
        # less than that, and 5xx answers are rare.
        self.keep_alive = status != 101 and status < 500 and self._parser.should_keep_alive()
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
        self._body_seen += len(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.complete = True
