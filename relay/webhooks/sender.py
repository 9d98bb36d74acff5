"""One webhook delivery attempt: a signed POST of the event's exact bytes to a checked address.

Whatever the endpoint does (answers slowly, redirects, resets the connection, streams a
gigabyte, resolves to the relay's own network) ends as an AttemptResult, never as an exception:
the dispatcher records it and schedules the next attempt. The secret and the body are never
logged; neither is the URL, which may carry a token of the endpoint's owner.
"""

from __future__ import annotations

import asyncio
import email.utils
import http.cookiejar
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC

import httpx

from .signing import headers_for
from .targets import UnresolvableTarget, UnsafeTarget, resolve_target

# The answer is only read to let the endpoint finish; past this the relay hangs up.
RESPONSE_READ_LIMIT = 64 * 1024
RETRY_AFTER_STATUSES = frozenset({429, 503})

# The closed set of WebhookDelivery.last_error values (and of the deliveries metric's results, with "delivered").
HTTP_ERROR = "http_error"
REDIRECT = "redirect"
TIMEOUT = "timeout"
CONNECT_ERROR = "connect_error"
UNSAFE_TARGET = "unsafe_target"
GONE = "gone"
ERRORS = (HTTP_ERROR, REDIRECT, TIMEOUT, CONNECT_ERROR, UNSAFE_TARGET, GONE)


@dataclass(frozen=True)
class AttemptResult:
    delivered: bool
    status: int | None  # the endpoint's HTTP status, when it answered
    error: str | None  # one of ERRORS when not delivered
    retry_after: float | None  # seconds the endpoint asked to wait (429/503 with Retry-After)
    latency_seconds: float


def make_client() -> httpx.AsyncClient:
    """The client for deliveries: no proxy from the environment (it would connect to the name, not
    the checked address), no redirects, and no cookies (one endpoint's cookie would be kept under
    an IP address that other key holders' endpoints may share)."""
    client = httpx.AsyncClient(trust_env=False, follow_redirects=False)
    client.cookies.jar.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    return client


async def send_event(
    client: httpx.AsyncClient,
    *,
    url: str,
    webhook_id: str,
    body: bytes,
    secrets: Sequence[str],
    timeout: float,
    allow_private: bool,
    now: Callable[[], float],
) -> AttemptResult:
    """POST `body` to `url`, signed with `secrets` (newest first), within `timeout` seconds in all."""
    started = time.perf_counter()
    status: int | None = None
    retry_after: float | None = None
    error: str | None
    try:
        async with asyncio.timeout(timeout):
            target = await resolve_target(url, allow_private=allow_private)
            headers = headers_for(secrets, webhook_id, int(now()), body)
            # A connection serves one delivery: pooled by IP, it could otherwise carry another
            # endpoint's request over TLS checked for this endpoint's name.
            headers |= {"host": target.host_header, "connection": "close"}
            async with client.stream(
                "POST",
                target.url,
                content=body,
                headers=headers,
                timeout=timeout,
                follow_redirects=False,
                extensions={"sni_hostname": target.sni_hostname},
            ) as response:
                status = response.status_code
                if status in RETRY_AFTER_STATUSES:
                    retry_after = retry_after_seconds(response.headers.get("retry-after"), now())
                await _read_some(response)
    except UnresolvableTarget:
        error = CONNECT_ERROR
    except UnsafeTarget:
        error = UNSAFE_TARGET
    except (TimeoutError, httpx.TimeoutException):
        error = TIMEOUT
    except (httpx.HTTPError, httpx.InvalidURL, httpx.StreamError, OSError):
        error = CONNECT_ERROR
    else:
        error = None
    if status is not None:
        # The endpoint answered: its status is the verdict even if reading the rest of its answer failed.
        error = _status_error(status)
    return AttemptResult(
        delivered=error is None,
        status=status,
        error=error,
        retry_after=retry_after,
        latency_seconds=time.perf_counter() - started,
    )


def _status_error(status: int) -> str | None:
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return REDIRECT
    if status == 410:
        return GONE
    return HTTP_ERROR


async def _read_some(response: httpx.Response) -> None:
    # Raw bytes: nothing is decompressed, so a small compressed answer cannot become a large one.
    received = 0
    async for chunk in response.aiter_raw():
        received += len(chunk)
        if received >= RESPONSE_READ_LIMIT:
            break


def retry_after_seconds(value: str | None, now: float) -> float | None:
    """Seconds from `now` that a Retry-After header asks for (delay-seconds or an HTTP date); None if unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(when.timestamp() - now, 0.0)
