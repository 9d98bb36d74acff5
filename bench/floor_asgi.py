"""The least a proxy on the relay's own stack does: uvicorn and the relay's upstream client passing
each request to one upstream and its answer back, and nothing else.

    FLOOR_ASGI_UPSTREAM=http://127.0.0.1:8081 uvicorn bench.floor_asgi:app --loop uvloop --http httptools

No key, routing, middleware, pricing, record, access log or metrics: the request's method, path,
query, body and end-to-end headers go to the upstream as they came, and the answer's status,
headers and body come back as they arrive. `bench.floor_asgi:starlette_app` does the same through
starlette as the relay used it up to its fifteenth pass (docs/performance.md), which found its
routes through starlette's router: starlette with the relay's route table under a mount,
one plain ASGI middleware wrapping `send` (as the relay's request-id middleware does, with none of
its work), a Request read and a Response answered. bench/run.py times creates and retrieves
through both at concurrency 1, started with the relay's uvicorn flags, in the same rounds as the
relay's, so the report shows what of the relay's added latency its stack (uvicorn, httptools,
uvloop and relay.http1's client, in Python) and then its framework cost on the day's machine, and
what is the relay's own work. Loopback only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Send

from relay import http1
from relay.routes import ROUTES
from relay.upstream import IDLE_CONNECTION_SECONDS, MAX_HEAD_BYTES, MAX_HEADER_LINE_BYTES, READ_BUFFER_BYTES

Scope = dict[str, Any]

# Headers that describe one hop, not the message (RFC 9110 7.6.1).
_HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"})
# And those relay.http1's client writes itself.
_NOT_FORWARDED = _HOP_BY_HOP | {b"host", b"content-length"}


def _limits() -> http1.Limits:
    return http1.Limits(
        max_connections=100,
        connect_timeout=5.0,
        read_timeout=60.0,
        idle_seconds=IDLE_CONNECTION_SECONDS,
        read_buffer_bytes=READ_BUFFER_BYTES,
        max_header_line_bytes=MAX_HEADER_LINE_BYTES,
        max_head_bytes=MAX_HEAD_BYTES,
    )


def _client_and_upstream() -> tuple[http1.Client, str]:
    return http1.Client(_limits()), os.environ["FLOOR_ASGI_UPSTREAM"].rstrip("/")


def _upstream_request(scope: Mapping[str, Any], upstream: str) -> tuple[str, list[tuple[bytes, bytes]]]:
    """The URL and headers the request goes upstream with: its path and query, its end-to-end headers."""
    query = scope["query_string"].decode("latin-1")
    url = upstream + scope["raw_path"].decode("latin-1") + (f"?{query}" if query else "")
    return url, [(name, value) for name, value in scope["headers"] if name not in _NOT_FORWARDED]


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(scope, receive, send)
        return
    client: http1.Client = scope["state"]["client"]
    base: str = scope["state"]["upstream"]
    body = bytearray()
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    url, headers = _upstream_request(scope, base)
    answer = await client.open(scope["method"], url, headers, bytes(body) or None)
    try:
        await send(
            {
                "type": "http.response.start",
                "status": answer.status,
                "headers": [(name, value) for name, value in answer.headers if name.lower() not in _HOP_BY_HOP],
            }
        )
        async for chunk in answer.chunks():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    finally:
        answer.release()


async def _lifespan(scope: Scope, receive: Any, send: Any) -> None:
    while (await receive())["type"] != "lifespan.shutdown":
        scope["state"]["client"], scope["state"]["upstream"] = _client_and_upstream()
        await send({"type": "lifespan.startup.complete"})
    await scope["state"]["client"].aclose()
    await send({"type": "lifespan.shutdown.complete"})


# -- the same through starlette -----------------------------------------------------------------


async def _forwarded(request: Request) -> Response:
    state = request.app.state
    body = await request.body()
    url, headers = _upstream_request(request.scope, state.upstream)
    answer = await state.client.open(request.method, url, headers, body or None)
    try:
        content = b"".join([bytes(chunk) async for chunk in answer.chunks()])
    finally:
        answer.release()
    # Response sets content-length for the body it is given.
    kept = {name.decode("latin-1"): value.decode("latin-1") for name, value in answer.headers if name.lower() not in _NOT_FORWARDED}
    return Response(content, answer.status, headers=kept)


class _SendWrapped:
    """A plain ASGI middleware that passes every message through a `send` of its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def sending(message: Message) -> None:
            await send(message)

        await self.app(scope, receive, sending)


@contextlib.asynccontextmanager
async def _client_kept(app: Starlette) -> AsyncIterator[None]:
    app.state.client, app.state.upstream = _client_and_upstream()
    yield
    await app.state.client.aclose()


async def _elsewhere(request: Request) -> Response:
    return PlainTextResponse("not what is timed here")


def _front_door() -> list[Route]:
    """The relay's route table (relay.routes), path by path in its order, every route forwarding."""
    methods: dict[str, list[str]] = {}
    for route in ROUTES:
        methods.setdefault(route.path, []).append(route.method)
    return [Route(path, _forwarded, methods=listed) for path, listed in methods.items()]


# As relay.app built the relay's up to the fifteenth pass: two routes before the front door's mount, and the middleware.
starlette_app = Starlette(
    routes=[
        Route("/healthz", _elsewhere, methods=["GET"]),
        Route("/metrics", _elsewhere, methods=["GET"]),
        Mount("/v1", routes=_front_door()),
    ],
    middleware=[Middleware(_SendWrapped)],
    lifespan=_client_kept,
)
