"""Talking to an upstream account: URL, headers, the shared HTTP client, one attempt."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import AsyncIterator

import httpx

from .config import Settings
from .transport import PooledTransport

DEFAULT_BASE_API = {
    "openai-responses": "https://api.openai.com/v1",
    "openai": "https://chatgpt.com/backend-api",
}

# The only client headers that travel upstream. Never authorization, cookies, x-api-key or
# hop-by-hop headers; and nothing the client did not send (no invented device ids).
FORWARDED_REQUEST_HEADERS = (
    "user-agent",
    "oai-device-id",
    "oai-latency-trace-id",
    "idempotency-key",
    "openai-organization",
    "openai-project",
    "accept",
)

# Downloads also pass on what makes ranged and conditional requests work.
CONTENT_REQUEST_HEADERS = ("range", "if-range", "if-none-match", "if-modified-since")
CONTENT_RESPONSE_HEADERS = (
    "content-length",
    "content-range",
    "accept-ranges",
    "etag",
    "last-modified",
    "cache-control",
    "content-disposition",
    "expires",
)

_FORWARDED = frozenset(name.encode() for name in FORWARDED_REQUEST_HEADERS)
_FORWARDED_FOR_CONTENT = _FORWARDED | frozenset(name.encode() for name in CONTENT_REQUEST_HEADERS)

# Upstream response headers that carry meaning for API clients.
RETURNED_RESPONSE_HEADERS = (
    "retry-after",
    "retry-after-ms",
    "x-should-retry",
    "openai-processing-ms",
    "openai-version",
    "x-ratelimit-limit-requests",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-reset-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-tokens",
)


@dataclass(frozen=True)
class Answer:
    status: int
    headers: httpx.Headers
    body: bytes
    latency_seconds: float


class UpstreamFailure(Exception):
    """No usable HTTP answer: `error_class` is `timeout` or `connection_error`.

    `before_send` is True only when the request certainly never reached the upstream
    (no connection could be made), which is what makes retrying elsewhere safe.
    """

    def __init__(self, error_class: str, message: str, latency_seconds: float, *, before_send: bool = False) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.latency_seconds = latency_seconds
        self.before_send = before_send


class RequestNotSendable(Exception):
    """The outgoing HTTP library refused to write the request; nothing was sent."""


def make_client(settings: Settings, proxy: str | None = None) -> httpx.AsyncClient:
    # Every connection may stay alive: a relay reconnecting under load pays a handshake per call.
    limits = httpx.Limits(
        max_connections=settings.max_upstream_connections,
        max_keepalive_connections=settings.max_upstream_connections,
    )
    client = httpx.AsyncClient(
        proxy=proxy,
        # Accounts behind an outbound proxy keep httpx's own transport, which speaks HTTP and SOCKS proxies.
        transport=PooledTransport(limits=limits) if proxy is None else None,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        ),
        limits=limits,
        # Proxies are configured per account, explicitly; ambient *_PROXY variables must not
        # silently reroute credentials.
        trust_env=False,
        follow_redirects=False,
    )
    # httpx adds its own defaults; upstream must see only what the client sent.
    del client.headers["user-agent"]
    del client.headers["accept"]
    client.headers["accept-encoding"] = "identity"
    return client


def url_for(base_api: str, path: str) -> str:
    return base_api.rstrip("/") + path


def request_headers(
    client_headers: list[tuple[bytes, bytes]], credential: str, *, content: bool = False
) -> list[tuple[bytes, bytes]]:
    """The allowed client headers as raw bytes (byte-exact, whatever their encoding), plus upstream auth."""
    allowed = _FORWARDED_FOR_CONTENT if content else _FORWARDED
    # Surrounding whitespace is not part of a field value (RFC 9110, 5.5); h11 refuses to send it.
    headers = [(name, value.strip(b" \t")) for name, value in client_headers if name in allowed or name == b"content-type"]
    headers.append((b"authorization", b"Bearer " + credential.encode("ascii")))
    return headers


def response_headers(upstream_headers: httpx.Headers, *, content: bool = False) -> dict[str, str]:
    """The upstream headers a client gets back, content type included."""
    names = RETURNED_RESPONSE_HEADERS + (CONTENT_RESPONSE_HEADERS if content else ()) + ("content-type",)
    return {name: upstream_headers[name] for name in names if name in upstream_headers}


@contextlib.asynccontextmanager
async def _failures_classified(started: float) -> AsyncIterator[None]:
    try:
        yield
    except httpx.LocalProtocolError as exc:
        # The request could not even be written (e.g. a header value HTTP forbids): the client's
        # doing, not the upstream's, and nothing left this process.
        raise RequestNotSendable(str(exc)) from None
    except httpx.TimeoutException as exc:
        unsent = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
        raise UpstreamFailure("timeout", _describe(exc), time.perf_counter() - started, before_send=unsent) from None
    except (httpx.TransportError, httpx.InvalidURL) as exc:
        # ConnectError covers refused connections, DNS and TLS handshake failures: nothing was sent.
        unsent = isinstance(exc, (httpx.ConnectError, httpx.UnsupportedProtocol, httpx.InvalidURL))
        raise UpstreamFailure("connection_error", _describe(exc), time.perf_counter() - started, before_send=unsent) from None


async def open_response(
    client: httpx.AsyncClient, method: str, url: str, *, headers: list[tuple[bytes, bytes]], body: bytes | None
) -> tuple[httpx.Response, float]:
    """Send and wait for the answer's head only; the caller reads or streams the body and closes it."""
    started = time.perf_counter()
    async with _failures_classified(started):
        request = client.build_request(method, url, headers=headers, content=body)
        response = await client.send(request, stream=True)
    return response, started


async def read_answer(response: httpx.Response, started: float, *, max_bytes: int) -> Answer:
    """The whole (bounded) body of an opened answer, which is closed afterwards."""
    try:
        async with _failures_classified(started):
            received = bytearray()
            async for chunk in response.aiter_raw():
                received += chunk
                if len(received) > max_bytes:
                    raise UpstreamFailure(
                        "server_error", f"upstream answer larger than {max_bytes} bytes", time.perf_counter() - started
                    )
    finally:
        await response.aclose()
    return Answer(response.status_code, response.headers, bytes(received), time.perf_counter() - started)


async def send(
    client: httpx.AsyncClient,
    method: str,
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
    max_response_bytes: int,
) -> Answer:
    """One attempt; the whole (bounded) answer is read before returning."""
    response, started = await open_response(client, method, url, headers=headers, body=body)
    return await read_answer(response, started, max_bytes=max_response_bytes)


def _describe(exc: Exception) -> str:
    # Exception texts from httpx name hosts and ports, never headers; keep only the kind.
    return type(exc).__name__
