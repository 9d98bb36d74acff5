"""`GET /metrics` on a port of its own (RELAY_METRICS_PORT), so the public port need not expose it.

Every worker listens on the same port (SO_REUSEPORT) and the kernel spreads scrapes over
them; in multiprocess mode any worker serves the totals of all. A deliberately small HTTP/1.1
server: one request per connection, only `GET /metrics`, bounded head size and read time.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import anyio.to_thread

from .errors import envelope

MAX_HEAD_BYTES = 16 * 1024
READ_SECONDS = 10.0


def listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(128)
    sock.setblocking(False)
    return sock


def _response(status: int, reason: str, body: bytes, content_type: str) -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\ncontent-type: {content_type}\r\ncontent-length: {len(body)}\r\nconnection: close\r\n\r\n"
    return head.encode("latin-1") + body


async def serve_metrics(
    sock: socket.socket, authorized: Callable[[str | None], bool], exposition: Callable[[], bytes], content_type: str
) -> None:
    """Serve on `sock` (from `listening_socket`) until cancelled (the app's lifespan cancels it at shutdown)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_SECONDS)
            lines = head.decode("latin-1").split("\r\n")
            method, target, _ = lines[0].split(" ", 2)
            headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:] if line)}
            if target.split("?", 1)[0] != "/metrics":
                answer = _response(404, "Not Found", envelope("Unknown route.", status=404, code="not_found"), "application/json")
            elif method != "GET":
                message = f"Method {method} is not allowed on this route."
                answer = _response(405, "Method Not Allowed", envelope(message, status=405, code="method_not_allowed"), "application/json")
            elif not authorized(headers.get("authorization")):
                message = "GET /metrics needs 'Authorization: Bearer <RELAY_METRICS_TOKEN>'."
                answer = _response(401, "Unauthorized", envelope(message, status=401, code="invalid_metrics_token"), "application/json")
            else:
                # Collectors read the database and the workers' files: keep that off the event loop.
                answer = _response(200, "OK", await anyio.to_thread.run_sync(exposition), content_type)
            writer.write(answer)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ConnectionError):
            pass  # a malformed or abandoned request gets no answer
        finally:
            writer.close()

    server = await asyncio.start_server(handle, sock=sock, limit=MAX_HEAD_BYTES)
    async with server:
        await server.serve_forever()
