"""relay.http1: the upstream HTTP/1.1 client, against servers on 127.0.0.1 that write their answers byte by byte."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import random
import ssl
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from certificates import self_signed
from event_loops import Run
from hypothesis import HealthCheck, given, settings, strategies as st

from relay import http1, upstream
from relay.http1.client import request_head

LIMITS = http1.Limits(
    max_connections=8,
    connect_timeout=5.0,
    read_timeout=5.0,
    idle_seconds=4.0,
    read_buffer_bytes=64 * 1024,
    max_header_line_bytes=1024,
    max_head_bytes=8 * 1024,
)

# -- a scripted server ---------------------------------------------------------------------------------


@dataclass
class Server:
    """Each accepted connection runs `script(reader, writer)`; requests are read with `request()`."""

    port: int = 0
    connections: int = 0
    listening: asyncio.Server | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    heads: list[bytes] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def url(self, path: str = "/", scheme: str = "http", host: str = "127.0.0.1") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    async def stop(self) -> None:
        """Stops listening, and ends the scripts still running."""
        assert self.listening is not None
        self.listening.close()
        # Connections accepted a moment ago get their scripts started first.
        await asyncio.sleep(0.01)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.listening.wait_closed()

    async def request(self, reader: asyncio.StreamReader) -> bytes:
        """One request's head (recorded with its body); b"" when the client closed the connection."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return b""
        length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
        self.heads.append(head)
        self.bodies.append(await reader.readexactly(length))
        return head


Script = Callable[[Server, asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def serve(script: Script, tls: ssl.SSLContext | None = None) -> Server:
    server = Server()

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        server.connections += 1
        task = asyncio.current_task()
        assert task is not None
        server.tasks.add(task)
        try:
            await script(server, reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError, asyncio.CancelledError):
            # Ended by stop() (asyncio's stream server reports a cancelled script as an error).
            pass
        finally:
            writer.transport.abort()

    server.listening = await asyncio.start_server(accepted, "127.0.0.1", 0, ssl=tls)
    server.port = server.listening.sockets[0].getsockname()[1]
    return server


def answering(*answers: bytes) -> Script:
    """Answers every request on a connection with the next of `answers` (the last one repeats)."""

    async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        index = 0
        while await server.request(reader):
            writer.write(answers[min(index, len(answers) - 1)])
            await writer.drain()
            index += 1

    return script


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"


@contextlib.asynccontextmanager
async def serving(script: Script, limits: http1.Limits = LIMITS) -> AsyncIterator[tuple[Server, http1.Client]]:
    """A scripted server and a client; both closed at the end, whatever the test found."""
    server = await serve(script)
    client = http1.Client(limits)
    try:
        yield server, client
    finally:
        await client.aclose()
        await server.stop()


async def body_of(response: http1.Response) -> bytes:
    received = b"".join([chunk async for chunk in response.chunks()])
    response.release()
    return received


async def get(client: http1.Client, url: str, method: str = "GET", body: bytes | None = None) -> tuple[http1.Response, bytes]:
    response = await client.open(method, url, [], body)
    return response, await body_of(response)


# -- framing -------------------------------------------------------------------------------------------


def test_content_length_body_and_headers_as_received(run: Run) -> None:
    async def main() -> None:
        answer = b"HTTP/1.1 201 Created\r\nX-Dup: a\r\nx-dup: b\r\nX-Latin: caf\xe9\r\nContent-Length: 5\r\n\r\nhello"
        async with serving(answering(answer)) as (server, client):
            response, body = await get(client, server.url())
            assert (response.status, body) == (201, b"hello")
            assert response.headers == [(b"X-Dup", b"a"), (b"x-dup", b"b"), (b"X-Latin", b"caf\xe9"), (b"Content-Length", b"5")]

    run(main())


def test_chunked_body_with_trailers_then_reuse(run: Run) -> None:
    async def main() -> None:
        answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n4\r\ndefg\r\n0\r\nX-Trailer: t\r\n\r\n"
        async with serving(answering(answer)) as (server, client):
            for _ in range(2):
                response, body = await get(client, server.url())
                assert body == b"abcdefg"
                # Trailers come after the head was handed out: they are not among its headers.
                assert response.headers == [(b"Transfer-Encoding", b"chunked")]
            assert server.connections == 1

    run(main())


def test_a_body_read_to_close_is_complete_and_its_connection_not_reused(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n\r\npart one, ")
            await writer.drain()
            await asyncio.sleep(0.05)
            writer.write(b"part two")

        async with serving(script) as (server, client):
            _, body = await get(client, server.url())
            assert body == b"part one, part two"
            _, body = await get(client, server.url())
            assert body == b"part one, part two"
            assert server.connections == 2

    run(main())


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\nETag: x\r\n\r\n"),
    ],
)
def test_answers_without_a_body_end_at_their_head_and_keep_the_connection(run: Run, method: str, answer: bytes) -> None:
    async def main() -> None:
        async with serving(answering(answer, OK)) as (server, client):
            response, body = await get(client, server.url(), method)
            assert body == b""
            _, body = await get(client, server.url())
            assert body == b"hello"
            assert server.connections == 1

    run(main())


@pytest.mark.parametrize("interim", [b"HTTP/1.1 100 Continue\r\n\r\n", b"HTTP/1.1 103 Early Hints\r\nLink: </a>; rel=preload\r\n\r\n"])
def test_interim_answers_are_skipped(run: Run, interim: bytes) -> None:
    async def main() -> None:
        async with serving(answering(interim + b"HTTP/1.1 200 OK\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok")) as (server, client):
            response, body = await get(client, server.url(), "POST", b"{}")
            assert (response.status, response.headers, body) == (200, [(b"X-Final", b"1"), (b"Content-Length", b"2")], b"ok")

    run(main())


def test_a_101_is_returned_as_is_and_its_connection_dropped(run: Run) -> None:
    async def main() -> None:
        switching = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"
        async with serving(answering(switching, OK)) as (server, client):
            response = await client.open("GET", server.url(), [])
            assert response.status == 101
            response.release()
            assert client.pool.open_connections == 0

    run(main())


def test_an_answer_that_is_not_http_is_a_protocol_error(run: Run) -> None:
    async def main() -> None:
        async with serving(answering(b"SSH-2.0-OpenSSH\r\n\r\n")) as (server, client):
            with pytest.raises(http1.ProtocolError):
                await client.open("GET", server.url(), [])
            assert client.pool.open_connections == 0

    run(main())


# -- what is sent --------------------------------------------------------------------------------------


def test_only_the_given_headers_plus_host_and_content_length_are_sent(run: Run) -> None:
    async def main() -> None:
        async with serving(answering(OK)) as (server, client):
            headers = [(b"authorization", b"Bearer k"), (b"X-Mixed-Case", b"v\xc3\xa9")]
            await get(client, server.url("/v1/videos?after=a%2Fb&x=%20"), "GET")
            await get(client, server.url("/v1/videos"), "POST")
            response = await client.open("POST", server.url("/v1/videos"), headers, b'{"a":1}')
            await body_of(response)
            host = f"127.0.0.1:{server.port}".encode()
            assert server.heads == [
                b"GET /v1/videos?after=a%2Fb&x=%20 HTTP/1.1\r\nHost: " + host + b"\r\n\r\n",
                b"POST /v1/videos HTTP/1.1\r\nHost: " + host + b"\r\nContent-Length: 0\r\n\r\n",
                b"POST /v1/videos HTTP/1.1\r\nHost: "
                + host
                + b"\r\nauthorization: Bearer k\r\nX-Mixed-Case: v\xc3\xa9\r\nContent-Length: 7\r\n\r\n",
            ]
            assert server.bodies[2] == b'{"a":1}'

    run(main())


@pytest.mark.parametrize(
    "header",
    [
        (b"x-a", b"one\r\nInjected: two"),
        (b"x-a", b"one\ntwo"),
        (b"x-a", b"nul\0"),
        (b"bad name", b"v"),
        (b"x:y", b"v"),
        (b"", b"v"),
        (b"Host", b"evil"),
    ],
)
def test_a_header_that_cannot_be_written_is_refused_before_anything_is_sent(run: Run, header: tuple[bytes, bytes]) -> None:
    async def main() -> None:
        async with serving(answering(OK)) as (server, client):
            with pytest.raises(http1.InvalidRequest):
                await client.open("GET", server.url(), [header])
            assert server.connections == 0

    run(main())


@pytest.mark.parametrize(
    ("url", "origin", "host", "target"),
    [
        ("http://example.com/a?b=c%20d", ("http", "example.com", 80), b"example.com", b"/a?b=c%20d"),
        ("https://example.com:443", ("https", "example.com", 443), b"example.com", b"/"),
        ("HTTPS://example.com:8443/x#frag", ("https", "example.com", 8443), b"example.com:8443", b"/x"),
        ("http://[::1]:8080/v1", ("http", "::1", 8080), b"[::1]:8080", b"/v1"),
        ("http://[::1]/v1", ("http", "::1", 80), b"[::1]", b"/v1"),
    ],
)
def test_urls(url: str, origin: tuple[str, str, int], host: bytes, target: bytes) -> None:
    parsed = http1.parse_url(url)
    assert (parsed.origin, parsed.host, parsed.target) == (origin, host, target)
    assert request_head("GET", parsed, [], None).startswith(b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\n")


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/",
        "http://user:pw@example.com/",
        "http://[::1/",
        "http://:80/",
        "http://h:0/",
        "http://h:99999/",
        "http://h/a b",
        "/a",
    ],
)
def test_urls_refused(url: str) -> None:
    with pytest.raises(http1.InvalidURL):
        http1.parse_url(url)


# -- pooling -------------------------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(run: Run) -> None:
    async def main() -> None:
        server = await serve(answering(OK))
        client = http1.Client(LIMITS)
        for _ in range(5):
            assert (await get(client, server.url()))[1] == b"hello"
        assert server.connections == 1
        assert client.pool.open_connections == 1
        await client.aclose()
        assert client.pool.open_connections == 0
        await server.stop()

    run(main())


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nhello",
        b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    ],
)
def test_no_reuse_after_connection_close_or_http_1_0(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async with serving(answering(answer)) as (server, client):
            for _ in range(2):
                assert (await get(client, server.url()))[1] == b"hello"
            assert server.connections == 2

    run(main())


def test_no_reuse_after_a_server_error(run: Run) -> None:
    """An ASGI server that crashed answers 500 and drops the connection a moment later: a request
    written onto it in between would be lost, and a create could not be sent again."""

    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.request(reader)
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 5\r\n\r\noops!")
            await writer.drain()
            # Still logging the crash: the next request on this connection is read, then dropped.
            await server.request(reader)
            writer.close()

        async with serving(script) as (server, client):
            assert (await get(client, server.url(), "POST", b"{}"))[0].status == 500
            response, body = await get(client, server.url(), "POST", b"{}")
            assert (response.status, server.connections) == (500, 2)

    run(main())


def test_no_reuse_after_a_half_read_body(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.request(reader):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                await writer.drain()

        async with serving(script) as (server, client):
            response = await client.open("GET", server.url(), [])
            assert await response.read() == b"hello"
            response.release()
            response = await client.open("GET", server.url(), [])
            response.release()
            assert server.connections == 2

    run(main())


def test_an_idle_connection_the_server_closed_is_not_reused(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # One answer per connection, kept alive by its head, then closed by the server while idle.
            await server.request(reader)
            writer.write(OK)
            await writer.drain()

        async with serving(script) as (server, client):
            assert (await get(client, server.url()))[1] == b"hello"
            await asyncio.sleep(0.1)
            assert client.pool.open_connections == 0
            assert (await get(client, server.url()))[1] == b"hello"
            assert server.connections == 2

    run(main())


def test_idle_connections_expire(run: Run) -> None:
    async def main() -> None:
        async with serving(answering(OK), replace(LIMITS, idle_seconds=0.2)) as (server, client):
            await get(client, server.url())
            await asyncio.sleep(0.1)
            await get(client, server.url())
            assert (server.connections, client.pool.open_connections) == (1, 1)
            await asyncio.sleep(0.4)
            # Closed by the pool's own timer, not only when next asked for.
            assert client.pool.open_connections == 0
            await get(client, server.url())
            assert server.connections == 2

    run(main())


def test_the_connection_limit_makes_requests_wait_their_turn(run: Run) -> None:
    async def main() -> None:
        async with serving(answering(OK), replace(LIMITS, max_connections=1)) as (server, client):
            first = await client.open("GET", server.url("/first"), [])
            order: list[str] = []

            async def waiting(name: str) -> None:
                _, body = await get(client, server.url(f"/{name}"))
                order.append(name)

            tasks = [asyncio.create_task(waiting(name)) for name in ("second", "third")]
            await asyncio.sleep(0.1)
            assert order == [] and server.connections == 1
            await body_of(first)
            await asyncio.gather(*tasks)
            assert order == ["second", "third"]
            assert server.connections == 1

    run(main())


def test_a_waiter_for_another_origin_takes_the_place_of_an_idle_connection(run: Run) -> None:
    async def main() -> None:
        async with serving(answering(OK), replace(LIMITS, max_connections=1)) as (server, client):
            await get(client, server.url(host="127.0.0.1"))
            # At once: not after the idle connection expired.
            async with asyncio.timeout(1):
                await get(client, server.url(host="localhost"))
            assert (server.connections, client.pool.open_connections) == (2, 1)

    run(main())


# -- limits and failures -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 2000 + b"\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"a" * 500) for n in range(40)) + b"Content-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 " + b"O" * 2000 + b"\r\nContent-Length: 0\r\n\r\n",
    ],
)
def test_a_head_over_the_limits_is_a_protocol_error(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async with serving(answering(answer)) as (server, client):
            with pytest.raises(http1.ProtocolError):
                await client.open("GET", server.url(), [])
            assert client.pool.open_connections == 0

    run(main())


@pytest.mark.parametrize(
    "answer",
    [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"],
)
def test_a_body_that_ends_early_raises_after_what_arrived(run: Run, answer: bytes) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.request(reader)
            writer.write(answer)

        async with serving(script) as (server, client):
            response = await client.open("GET", server.url(), [])
            assert await response.read() == b"hello"
            with pytest.raises(http1.ConnectionClosed):
                await response.read()
            response.release()
            assert client.pool.open_connections == 0

    run(main())


def test_read_timeouts_on_the_head_and_on_the_body(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await server.request(reader)
            if b"/body" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            await asyncio.sleep(5)

        async with serving(script, replace(LIMITS, read_timeout=0.2)) as (server, client):
            with pytest.raises(http1.ReadTimeout):
                await client.open("GET", server.url("/head"), [])
            response = await client.open("GET", server.url("/body"), [])
            assert await response.read() == b"hello"
            with pytest.raises(http1.ReadTimeout):
                await response.read()
            response.release()
            assert client.pool.open_connections == 0

    run(main())


def test_the_read_timeout_counts_from_the_last_bytes(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.request(reader)
            # A head trickling in for longer than the read timeout, never silent that long.
            for piece in (b"HTTP/1.1 200 OK\r\n", b"X-A: 1\r\n", b"X-B: 2\r\n", b"Content-Length: 0\r\n", b"\r\n"):
                writer.write(piece)
                await asyncio.sleep(0.1)

        async with serving(script, replace(LIMITS, read_timeout=0.3)) as (server, client):
            assert (await get(client, server.url()))[0].status == 200

    run(main())


def test_connect_refused_and_no_address_are_connect_errors(run: Run) -> None:
    async def main() -> None:
        server = await serve(answering(OK))
        await server.stop()
        client = http1.Client(LIMITS)
        with pytest.raises(http1.ConnectError):
            await client.open("GET", server.url(), [])
        with pytest.raises(http1.ConnectError):
            await client.open("GET", "http://no-such-host.invalid/", [])
        assert client.pool.open_connections == 0
        await client.aclose()

    run(main())


def test_a_handshake_that_never_ends_is_a_connect_timeout(run: Run) -> None:
    async def main() -> None:
        async def silent(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        async with serving(silent, replace(LIMITS, connect_timeout=0.2)) as (server, client):
            with pytest.raises(http1.ConnectTimeout):
                await client.open("GET", server.url(scheme="https"), [])
            assert client.pool.open_connections == 0

    run(main())


def test_cancelled_requests_leave_no_connection_to_reuse(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while head := await server.request(reader):
                if b"/slow-head" in head:
                    await asyncio.sleep(0.3)
                if b"/mid-body" in head:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
                    await writer.drain()
                    await asyncio.sleep(0.3)
                    writer.write(b"world")
                else:
                    writer.write(OK)
                await writer.drain()

        async with serving(script) as (server, client):
            # Mid-body: the rest of this answer must not be read as the next one's.
            response = await client.open("GET", server.url("/mid-body"), [])
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    async for _ in response.chunks():
                        pass
            response.release()
            # Waiting for the head.
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.1):
                    await client.open("GET", server.url("/slow-head"), [])
            assert client.pool.open_connections == 0
            response, body = await get(client, server.url("/done"))
            assert body == b"hello"
            assert server.connections == 3

    run(main())


def test_a_slow_consumer_keeps_the_buffer_bounded(run: Run) -> None:
    async def main() -> None:
        total = 64 << 20
        block = b"x" * (1 << 20)

        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.request(reader)
            # drain() then returns only once the last block has reached the socket: the server
            # aborts the connection when the script ends, which would drop what is still queued.
            writer.transport.set_write_buffer_limits(high=0)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % total)
            for _ in range(total // len(block)):
                writer.write(block)
                await writer.drain()

        async with serving(script) as (server, client):
            response = await client.open("GET", server.url(), [])
            received, peak, reads = 0, 0, 0
            while chunk := await response.read():
                received += len(chunk)
                reads += 1
                if reads <= 20:
                    # Slow at first: the server could send megabytes meanwhile.
                    await asyncio.sleep(0.02)
                peak = max(peak, response.connection.buffered)
            assert received == total
            # The pause comes once read_buffer_bytes wait unread; one more read (into a buffer of
            # that size) may land on top.
            assert peak <= 2 * LIMITS.read_buffer_bytes, peak
            response.release()
            assert client.pool.open_connections == 1

    run(main())


def in_pieces(body: bytes) -> Script:
    """Answers every request with `body` under Content-Length, written 100 KB at a time."""

    async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.request(reader):
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
            for at in range(0, len(body), 100_000):
                writer.write(body[at : at + 100_000])
                await writer.drain()

    return script


def test_a_long_body_arrives_in_views_that_stay_valid_after_later_reads(run: Run) -> None:
    """A Content-Length body is handed out as views of the buffers it was read into, never copied:
    every view kept must still hold its bytes after all the reads that followed it."""
    limits = replace(LIMITS, read_buffer_bytes=256 * 1024)
    sent = random.Random(7).randbytes(3 << 20)

    async def main() -> None:
        async with serving(in_pieces(sent), limits) as (server, client):
            for _ in range(2):
                response = await client.open("GET", server.url(), [])
                kept = [chunk async for chunk in response.chunks()]
                response.release()
                assert b"".join(kept) == sent
                assert any(isinstance(chunk, memoryview) for chunk in kept)
            assert server.connections == 1

    run(main())


@pytest.mark.parametrize("kept_every", [0, 7, 2])
def test_buffers_are_read_into_again_only_once_no_view_of_them_is_left(run: Run, monkeypatch: pytest.MonkeyPatch, kept_every: int) -> None:
    """A long body's buffers are reused once the views handed out of them are gone: a view kept
    (every `kept_every`th) still holds its bytes after all the reads that followed, and a consumer
    that keeps none gets its body through a few buffers, not one per refill."""
    limits = replace(LIMITS, read_buffer_bytes=256 * 1024)
    sent = random.Random(kept_every).randbytes(6 << 20)
    made: list[int] = []

    def counted(size: int = 0) -> bytearray:
        made.append(size)
        return bytearray(size)

    monkeypatch.setattr(http1.connection, "bytearray", counted, raising=False)

    async def main() -> None:
        async with serving(in_pieces(sent), limits) as (server, client):
            response = await client.open("GET", server.url(), [])
            received, kept = [], []
            async for chunk in response.chunks():
                received.append(bytes(chunk))
                if kept_every and len(received) % kept_every == 0:
                    kept.append((chunk, received[-1]))
                del chunk
            response.release()
            assert b"".join(received) == sent
            assert all(bytes(view) == copy for view, copy in kept)
            refills = len(sent) // limits.read_buffer_bytes
            large = [size for size in made if size == limits.read_buffer_bytes]
            if kept_every == 0:
                assert len(large) <= 3, len(large)
            else:
                assert len(large) < refills, (len(large), refills)

    run(main())


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=300_000) | st.integers(0, 300_000).map(lambda size: random.Random(size).randbytes(size)),
    chunked=st.booleans(),
    cuts=st.lists(st.floats(0, 1), max_size=6),
)
def test_any_body_split_anywhere_arrives_whole_and_the_connection_is_reused(
    run: Run, body: bytes, chunked: bool, cuts: list[float]
) -> None:
    """Whatever read the head ends in and however the body is split, with Content-Length (read as
    it lies after the head) or chunked (parsed): the same bytes, twice over one connection."""
    limits = replace(LIMITS, read_buffer_bytes=80 * 1024)
    if chunked:
        framed = b"Transfer-Encoding: chunked\r\n\r\n" + (b"%x\r\n%s\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    else:
        framed = b"Content-Length: %d\r\n\r\n" % len(body) + body
    answer = b"HTTP/1.1 200 OK\r\n" + framed
    offsets = sorted({int(cut * len(answer)) for cut in cuts} | {0, len(answer)})

    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.request(reader):
                for start, end in itertools.pairwise(offsets):
                    writer.write(answer[start:end])
                    await writer.drain()
                    await asyncio.sleep(0.001)

        async with serving(script, limits) as (server, client):
            for _ in range(2):
                assert (await get(client, server.url()))[1] == body
            assert server.connections == 1

    run(main())


def test_bytes_past_the_announced_length_are_dropped_with_the_connection(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while await server.request(reader):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                await writer.drain()
                # Apart from the head, so the body is read as it lies rather than parsed.
                await asyncio.sleep(0.05)
                writer.write(b"x" * 100_000 + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
                await writer.drain()

        async with serving(script) as (server, client):
            for _ in range(2):
                assert (await get(client, server.url()))[1] == b"x" * 100_000
            assert server.connections == 2

    run(main())


def test_an_idle_connection_keeps_no_large_buffer(run: Run) -> None:
    """After a download, what the pooled connection holds is back to the size of a small answer's."""
    limits = replace(LIMITS, read_buffer_bytes=1 << 20)

    async def main() -> None:
        async with serving(answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % (8 << 20) + bytes(8 << 20)), limits) as (
            server,
            client,
        ):
            tracemalloc.start()
            try:
                assert len((await get(client, server.url()))[1]) == 8 << 20
                gc.collect()
                held = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(True, http1.connection.__file__)])
            finally:
                tracemalloc.stop()
            assert client.pool.open_connections == 1
            assert sum(stat.size for stat in held.statistics("filename")) <= 128 * 1024

    run(main())


# -- TLS -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed(tmp_path_factory.mktemp("tls"), "localhost", addresses=("127.0.0.1",))


def test_tls_with_a_trusted_self_signed_certificate(run: Run, certificate: tuple[Path, Path]) -> None:
    cert_path, key_path = certificate

    async def main() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_path, key_path)
        names: list[str | None] = []
        server_context.sni_callback = lambda _, name, __: names.append(name)  # type: ignore[assignment,func-returns-value]
        server = await serve(answering(OK), tls=server_context)
        trusting = ssl.create_default_context(cafile=str(cert_path))
        client = http1.Client(LIMITS, ssl_context=trusting)
        for host in ("localhost", "localhost", "127.0.0.1"):
            assert (await get(client, server.url(scheme="https", host=host)))[1] == b"hello"
        assert server.connections == 2
        # SNI carries the host name, and nothing for an address.
        assert names == ["localhost", None]
        await client.aclose()
        # The default context (certifi's CAs) does not trust it: nothing could be sent.
        client = http1.Client(LIMITS)
        with pytest.raises(http1.ConnectError):
            await client.open("GET", server.url(scheme="https", host="localhost"), [])
        await client.aclose()
        await server.stop()

    run(main())


def test_a_long_body_over_tls_arrives_whole(run: Run, certificate: tuple[Path, Path]) -> None:
    """Over TLS the buffer is filled by the TLS layer, record by record: the same bytes arrive."""
    cert_path, key_path = certificate
    sent = random.Random(11).randbytes(3 << 20)

    async def main() -> None:
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_context.load_cert_chain(cert_path, key_path)
        server = await serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(sent) + sent), tls=server_context)
        client = http1.Client(replace(LIMITS, read_buffer_bytes=256 * 1024), ssl_context=ssl.create_default_context(cafile=str(cert_path)))
        for _ in range(2):
            assert (await get(client, server.url(scheme="https", host="localhost")))[1] == sent
        assert server.connections == 1
        await client.aclose()
        await server.stop()

    run(main())


# -- through relay.upstream ----------------------------------------------------------------------------


async def opened(client: http1.Client, url: str, headers: list[tuple[bytes, bytes]] | None = None) -> upstream.Opened:
    return await upstream.open_response(client, "GET", url, headers=headers or [], body=None, head_timeout=5, credential="sk-secret-value")


def test_upstream_failures_are_classified(run: Run) -> None:
    async def main() -> None:
        async def script(server: Server, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            head = await server.request(reader)
            if b"/short" in head:
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello")
            elif b"/garbage" in head:
                writer.write(b"garbage\r\n\r\n")
            else:
                await asyncio.sleep(5)

        server = await serve(script)
        client = http1.Client(replace(LIMITS, read_timeout=0.2))
        with pytest.raises(upstream.UpstreamFailure) as failure:
            await opened(client, server.url("/silent"))
        assert (failure.value.error_class, failure.value.before_send) == ("timeout", False)
        with pytest.raises(upstream.UpstreamFailure) as failure:
            await opened(client, server.url("/garbage"))
        assert (failure.value.error_class, failure.value.before_send) == ("connection_error", False)
        answer = await opened(client, server.url("/short"))
        with pytest.raises(upstream.UpstreamFailure) as failure:
            await upstream.read_answer(answer, max_bytes=100, body_timeout=5, credential="sk-secret-value")
        assert (failure.value.error_class, failure.value.before_send) == ("connection_error", False)
        await server.stop()
        with pytest.raises(upstream.UpstreamFailure) as failure:
            await opened(client, server.url("/refused"))
        assert (failure.value.error_class, failure.value.before_send) == ("connection_error", True)
        assert "127.0.0.1" not in failure.value.message
        with pytest.raises(upstream.RequestNotSendable):
            await opened(client, server.url(), [(b"user-agent", b"Caf\xe9")])
        await upstream.close_client(client)

    run(main())
