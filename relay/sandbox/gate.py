"""The front of every provider's routes: records each request, applies fault rules, tags responses.

Fault actions, as a client sees them:

* ``respond``: the rule's canned response, worded as the provider words it (``status``/``body``/
  ``raw_body``/``headers``), or, with ``status: null``, the real response with the rule's headers added.
* ``reset``: the TCP connection is aborted with an RST before any response byte is sent; httpx
  raises ``httpx.ReadError``. In-process transports (``httpx.ASGITransport``, ``TestClient``) have
  no socket, so the app raises ``httpx.ReadError`` itself.
* ``slow_body``: status and headers (including ``content-length``) are sent at once, then the body
  arrives ``chunk_bytes`` at a time, each chunk preceded by ``chunk_interval_seconds`` of silence.

``delay_seconds`` always delays the response headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import socket
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import RouteError, exception_handlers
from .faults import FaultRule, Reply, canned_response, rule_reply, take_matching_rule
from .provider import Provider
from .state import SandboxState

TRANSPORT_SCOPE_KEY: Final = "relay.sandbox.transport"


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying_receive(body: bytes, receive: Receive) -> Receive:
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


def with_headers(send: Send, extra: Mapping[str, str]) -> Send:
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]
    replaced = {name for name, _ in encoded}

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in replaced]
            message = {**message, "headers": kept + encoded}
        await send(message)

    return send_with_headers


def trickling(send: Send, chunk_bytes: int, interval_seconds: float) -> Send:
    async def send_slowly(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        for offset in range(0, len(body), chunk_bytes):
            await asyncio.sleep(interval_seconds)
            await send({"type": "http.response.body", "body": body[offset : offset + chunk_bytes], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)})

    return send_slowly


def server_transport(send: Send) -> asyncio.Transport | None:
    # uvicorn hands the app its per-request cycle's bound ``send``; the cycle owns the transport.
    # Duck-typed because uvloop's transports are not asyncio.Transport subclasses.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


async def reset_connection(scope: Scope) -> None:
    transport: asyncio.Transport | None = scope.get(TRANSPORT_SCOPE_KEY)
    if transport is None:
        # No socket in-process: raise what httpx raises for a peer reset, so callers see one error type.
        raise httpx.ReadError("[Errno 104] Connection reset by peer (sandbox fault)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # without SO_LINGER the close degrades to a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server observe connection_lost before we return, or it would try to send a 500.
    await asyncio.sleep(0)


def request_record(scope: Scope, headers: list[tuple[str, str]], body: bytes, token: str | None) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[name, value] for name, value in headers],
        "body_b64": base64.b64encode(body).decode("ascii"),
        "content_type": next((value for name, value in headers if name == "content-type"), None),
        "token": token,
    }


class ProviderGate:
    """Front of one provider's routes: records each request, applies fault rules, tags responses."""

    def __init__(self, app: ASGIApp, state: SandboxState, provider: Provider) -> None:
        self.app = app
        self.state = state
        self.provider = provider

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]]
        token = self.provider.credential(scope)
        record = request_record(scope, headers, body, token)
        self.state.requests.append(record)
        self.state.requests_total += 1
        rule = take_matching_rule(self.state.faults, scope["method"], scope["path"], token, self.provider.name, self.state.rng)
        reply = rule_reply(rule, self.provider.name) if rule else None
        extra_headers = {**self.provider.response_headers(), **(reply.headers if reply else {})}
        send = with_headers(send, extra_headers)
        receive = replaying_receive(body, receive)
        if rule is None or reply is None:
            await self.app(scope, receive, send)
        else:
            await apply_rule(rule, reply, self.app, scope, receive, send)


async def apply_rule(rule: FaultRule, reply: Reply, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    if rule.delay_seconds > 0:
        await asyncio.sleep(rule.delay_seconds)
    if rule.action == "reset":
        await reset_connection(scope)
        return
    if rule.action == "slow_body":
        send = trickling(send, rule.chunk_bytes, rule.chunk_interval_seconds)
    responder = app if reply.status is None else canned_response(reply, reply.status)
    await responder(scope, receive, send)


def provider_app(state: SandboxState, provider: Provider, routes: Sequence[BaseRoute], route_error: RouteError) -> Starlette:
    """One emulated provider: its routes behind the fault gate, its own wording of a route error."""
    app = Starlette(
        routes=list(routes),
        middleware=[Middleware(ProviderGate, state=state, provider=provider)],
        exception_handlers=exception_handlers(route_error),
    )
    app.state.sandbox = state
    return app


class SandboxApp(Starlette):
    """Starlette app that exposes the server's transport to the ``reset`` fault action."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Only the server's own ``send`` leads to the transport; Starlette wraps it further in.
            scope[TRANSPORT_SCOPE_KEY] = server_transport(send)
        await super().__call__(scope, receive, send)
