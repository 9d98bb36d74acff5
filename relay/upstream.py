"""Talking to an upstream account: URL, headers, the shared HTTP client, one attempt."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar

import httpx
from multidict import CIMultiDict, CIMultiDictProxy

from . import http1
from .config import Settings

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
    # Downloads pass on as they came: asked for identity, an upstream may still compress them.
    "content-encoding",
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


Headers = Mapping[str, str]  # case-insensitive: httpx.Headers or multidict.CIMultiDict


@dataclass(frozen=True)
class Answer:
    status: int
    headers: Headers
    body: bytes
    latency_seconds: float


@dataclass(frozen=True)
class Opened:
    """An upstream answer whose head has arrived. Its body is read with `chunks()`; `close()` must follow.

    `close()` releases the connection for reuse when the body was read to the end, and drops it
    otherwise (a half-read answer must never be handed to the next request).
    """

    status: int
    headers: Headers
    chunks: Callable[[], AsyncIterator[bytes | memoryview]]
    close: Callable[[], Awaitable[None]]
    started: float


class UpstreamFailure(Exception):
    """No usable HTTP answer: `error_class` is `timeout`, `connection_error`, `server_error` (too
    large) or `config_error` (no request can be built from the account's configuration).

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
    """The outgoing HTTP library refused to write the request because of a client's header; nothing was sent."""


# -- an account's configuration ------------------------------------------------------------------------

BASE_API_SCHEMES = ("http", "https")
PROXY_SCHEMES = ("http", "https", "socks5", "socks5h")
# The authority of a URL: everything between `scheme://` and the path, query or fragment.
_AUTHORITY = re.compile(r"(?P<scheme>[^:/?#]*)://(?P<authority>[^/?#]*)(?P<rest>.*)", re.DOTALL)
_HOST_NAME = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?")


def base_api_problem(url: str) -> str | None:
    """Why `url` cannot be an account's base_api, or None.

    Said without quoting the URL: a rejected one may hold a password. No user name or password
    (`@` anywhere): the credential travels in its own header, never in the URL.
    """
    if "@" in url:
        return "base_api must not hold a user name or password (the credential travels in its own header)"
    problem = _url_problem(url, BASE_API_SCHEMES)
    if problem is None and ("?" in url or "#" in url):
        problem = "must not have a query or fragment"
    return None if problem is None else f"base_api {problem}"


def proxy_problem(url: str) -> str | None:
    """Why `url` cannot be an account's proxy, or None. A user name and password are fine (stored encrypted)."""
    problem = _url_problem(url, PROXY_SCHEMES)
    if problem is None and _parts(url)[2] not in ("", "/"):
        problem = "must be scheme://[user:password@]host:port, with no path, query or fragment"
    return None if problem is None else f"the proxy {problem}"


def credential_problem(credential: str) -> str | None:
    """Why `credential` cannot travel in an Authorization header, or None."""
    if not credential:
        return "the credential is empty"
    if not (credential.isascii() and credential.isprintable()) or any(c.isspace() for c in credential):
        return "the credential contains whitespace or non-ASCII characters; paste the token alone"
    return None


def account_problem(base_api: str, proxy: str | None, credential: str) -> str | None:
    """What stops requests from being built for an account at all (checked when the pool loads it)."""
    return base_api_problem(base_api) or (proxy_problem(proxy) if proxy else None) or credential_problem(credential)


def _parts(url: str) -> tuple[str, str, str]:
    match = _AUTHORITY.fullmatch(url)
    return (match["scheme"], match["authority"], match["rest"]) if match else ("", "", "")


def _url_problem(url: str, schemes: tuple[str, ...]) -> str | None:
    if not url.isascii() or not url.isprintable() or " " in url:
        return "must be ASCII without spaces or control characters (percent-encode the path, give a host in punycode)"
    scheme, authority, _ = _parts(url)
    if scheme.lower() not in schemes:
        return f"must be a URL starting {' or '.join(s + '://' for s in schemes)}"
    hostport = authority.rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        if not bracket or not http1.is_ipv6(host):
            return "has an IPv6 host that is not of the form [address]"
        if after and not after.startswith(":"):
            return "has something other than :port after its IPv6 host"
        port = after[1:] if after else None
    else:
        host, colon, port_text = hostport.partition(":")
        port = port_text if colon else None
        if not _HOST_NAME.fullmatch(host):
            return "needs a host (a name or an address)"
    if port is not None and not (port.isdigit() and len(port) <= 5 and 1 <= int(port) <= 65535):
        return "has a port that is not a number from 1 to 65535"
    try:
        # What the HTTP libraries make of it must agree: none of them may refuse it.
        if scheme.lower() in BASE_API_SCHEMES and "@" not in authority:
            http1.parse_url(url)
        httpx.URL(url)
    except (ValueError, TypeError, httpx.InvalidURL):
        return "does not parse as a URL"
    return None


def shown_url(url: str | None) -> str | None:
    """`url` fit to print or log: what lies between `://` and the last `@` (the user information, a
    user name included, since a proxy's may be a secret too) becomes `***`, and so does anything
    after a `?` or `#` (a key in a query string). Works on URLs that do not parse, too (a legacy
    row may hold one): a password containing `/` or `#` still ends at the last `@`.
    """
    if not url:
        return url
    shown = url
    start = url.find("://")
    start = 0 if start < 0 else start + 3
    end = url.rfind("@")
    if end >= start:
        shown = url[:start] + "***" + url[end:]
    cut = min((at for at in (shown.find("?"), shown.find("#")) if at >= 0), default=-1)
    return shown if cut < 0 else shown[: cut + 1] + "***"


# Accounts without an outbound proxy use the relay's own HTTP/1.1 client (relay.http1): per
# keep-alive call it spends about half the CPU aiohttp's client did, and far less than httpx.
# Accounts behind a proxy use httpx, which speaks HTTP and SOCKS proxies alike.
Client = http1.Client | httpx.AsyncClient

# Header lines the relay accepts from an upstream (aiohttp's default was 8190 bytes), and a whole
# answer head (interim 1xx answers included).
MAX_HEADER_LINE_BYTES = 64 * 1024
MAX_HEAD_BYTES = 256 * 1024
# What one read of a large body may take, and how much may wait unread before reading pauses.
# Measured on 1 GiB downloads through a one-worker relay (docs/performance.md, twelfth pass),
# against reads of at most 256 KiB: 512 KiB kept 1.37x the rate for one download and 1.20x for 8
# at once, with half the memory growth; 1 MiB did no better for 8 at once and held twice the memory.
READ_BUFFER_BYTES = 512 * 1024
# An idle connection is dropped after this long, before servers drop it (uvicorn's and Node's
# default is 5 s): a create written onto a connection the server has just closed fails after
# sending, which the relay must treat as a possible render and cannot retry.
IDLE_CONNECTION_SECONDS = 4.0


def make_client(settings: Settings, proxy: str | None = None) -> Client:
    if proxy is not None:
        try:
            return _make_httpx_client(settings, proxy)
        except (ValueError, httpx.InvalidURL) as exc:
            raise _unbuildable(exc, time.perf_counter()) from None
    # Every connection may stay alive: a relay reconnecting under load pays a handshake per call.
    # The client sends no header of its own beyond Host and Content-Length (upstream must see only
    # what the client sent), keeps no cookies, never decompresses, and ignores *_PROXY variables:
    # proxies are configured per account, explicitly.
    return http1.Client(
        http1.Limits(
            max_connections=settings.max_upstream_connections,
            connect_timeout=settings.connect_timeout_seconds,
            read_timeout=settings.read_timeout_seconds,
            idle_seconds=IDLE_CONNECTION_SECONDS,
            read_buffer_bytes=READ_BUFFER_BYTES,
            max_header_line_bytes=MAX_HEADER_LINE_BYTES,
            max_head_bytes=MAX_HEAD_BYTES,
        )
    )


def _make_httpx_client(settings: Settings, proxy: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(
        proxy=proxy,
        timeout=httpx.Timeout(
            connect=settings.connect_timeout_seconds,
            read=settings.read_timeout_seconds,
            write=settings.read_timeout_seconds,
            pool=settings.connect_timeout_seconds,
        ),
        limits=httpx.Limits(
            max_connections=settings.max_upstream_connections,
            max_keepalive_connections=settings.max_upstream_connections,
            keepalive_expiry=IDLE_CONNECTION_SECONDS,
        ),
        trust_env=False,
        follow_redirects=False,
    )
    # httpx adds its own defaults; upstream must see only what the client sent.
    del client.headers["user-agent"]
    del client.headers["accept"]
    return client


async def close_client(client: Client) -> None:
    await client.aclose()


def url_for(base_api: str, path: str) -> str:
    return base_api.rstrip("/") + path


def request_headers(
    client_headers: list[tuple[bytes, bytes]], auth: tuple[bytes, bytes], *, content: bool = False
) -> list[tuple[bytes, bytes]]:
    """The allowed client headers as raw bytes, plus the account's `auth` header; sent byte for byte."""
    allowed = _FORWARDED_FOR_CONTENT if content else _FORWARDED
    # Surrounding whitespace is not part of a field value (RFC 9110, 5.5); h11 refuses to send it.
    headers = [(name, value.strip(b" \t")) for name, value in client_headers if name in allowed or name == b"content-type"]
    headers += [auth, (b"accept-encoding", b"identity")]
    return headers


def provider_headers(auth: tuple[bytes, bytes], *, json_body: bool = False) -> list[tuple[bytes, bytes]]:
    """Headers for a request the relay wrote itself (a translated provider call): the account's
    `auth` header and nothing of the client's, whose headers speak the OpenAI contract."""
    headers = [auth, (b"accept-encoding", b"identity")]
    if json_body:
        headers.append((b"content-type", b"application/json"))
    return headers


def storage_headers(client_headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """Headers for a download a provider redirected to: the client's range and conditional
    headers, and no credential at all (the key belongs to the provider's API, not its storage)."""
    wanted = frozenset(name.encode() for name in CONTENT_REQUEST_HEADERS)
    headers = [(name, value.strip(b" \t")) for name, value in client_headers if name in wanted]
    headers.append((b"accept-encoding", b"identity"))
    return headers


def response_headers(upstream_headers: Headers, *, content: bool = False) -> dict[str, str]:
    """The upstream headers a client gets back, content type included."""
    names = RETURNED_RESPONSE_HEADERS + (CONTENT_RESPONSE_HEADERS if content else ()) + ("content-type",)
    return {name: upstream_headers[name] for name in names if name in upstream_headers}


async def open_response(
    client: Client,
    method: str,
    url: str,
    *,
    headers: list[tuple[bytes, bytes]],
    body: bytes | None,
    head_timeout: float,
    credential: str,
) -> Opened:
    """Send and wait for the answer's head only; the caller reads or streams the body and closes it.

    The whole head must arrive within `head_timeout` (the per-read timeout alone would let an
    upstream that trickles a byte at a time hold the request for ever), and must be a final
    HTTP answer: a 101 or a status outside 200-599 is no answer a client could be given.
    Any piece of the account's `credential` in the answer's headers is blanked out.
    """
    started = time.perf_counter()
    try:
        async with asyncio.timeout(head_timeout):
            if isinstance(client, http1.Client):
                opened = await _open_http1(client, method, url, headers=headers, body=body)
            else:
                opened = await _open_httpx(client, method, url, headers=headers, body=body)
    except TimeoutError:
        raise UpstreamFailure("timeout", "no complete answer head in time", time.perf_counter() - started) from None
    if not 200 <= opened.status <= 599:
        await opened.close()
        raise UpstreamFailure("connection_error", f"status {opened.status} is not a final HTTP answer", time.perf_counter() - started)
    return Opened(opened.status, headers_without_credential(opened.headers, credential), opened.chunks, opened.close, opened.started)


async def read_answer(opened: Opened, *, max_bytes: int, body_timeout: float, credential: str) -> Answer:
    """The whole (bounded) body of an opened answer, which is closed afterwards, and decompressed.

    The body must arrive within `body_timeout`, however it trickles in. The relay asks for
    `identity`; an upstream that compresses anyway (gzip or deflate) is decoded here, because
    the relay reads ids and statuses from these answers. The account's own credential, should
    an upstream echo it whole or in part, is blanked out: these answers go back to the relay's clients.
    """
    try:
        received = bytearray()
        async with asyncio.timeout(body_timeout):
            async for chunk in opened.chunks():
                received += chunk
                if len(received) > max_bytes:
                    raise _too_large(max_bytes, opened.started)
    except TimeoutError:
        raise UpstreamFailure("timeout", "the answer's body did not arrive in time", time.perf_counter() - opened.started) from None
    finally:
        await opened.close()
    body, headers = bytes(received), opened.headers
    encoding = headers.get("content-encoding", "").strip().lower()
    if encoding not in ("", "identity"):
        body = _decoded(body, encoding, max_bytes, opened.started)
        kept = ((k, v) for k, v in headers.items() if k.lower() not in ("content-encoding", "content-length"))
        headers = CIMultiDictProxy(CIMultiDict(kept))
    return Answer(opened.status, headers, without_credential(body, credential), time.perf_counter() - opened.started)


# A credential is blanked out wherever a piece of it shows, not only whole: upstreams quote keys
# partly masked ("tok-a-SEC***", "sk-proj-abc1****wxyz"). The rule: every run of at least
# CREDENTIAL_FRAGMENT_CHARS consecutive characters of the credential (the whole credential, when it
# is shorter) becomes "[redacted]", together with a mask right before or after it (below) and,
# beyond such a mask, the credential's own last (or first) characters. Eight: a
# shorter run, like a common "sk-" prefix, tells little, and an 8-character run of a random
# credential turns up by chance in an unrelated answer about once in 10^8 answers; so the ids the
# relay reads from answers stay intact.
CREDENTIAL_FRAGMENT_CHARS = 8
REDACTED = "[redacted]"
# Masks: `*`, `#`, `•` and `…` (any number), or two or more dots; a single "." after a
# fragment ends a sentence. The same in UTF-8 for bodies.
_MASK_AFTER = re.compile(r"(?:[*#\u2022\u2026]|\.\.+)+")
_MASK_BEFORE = re.compile(_MASK_AFTER.pattern + r"\Z")
_MASK_AFTER_BYTES = re.compile(rb"(?:[*#]|\xe2\x80\xa2|\xe2\x80\xa6|\.\.+)+")
_MASK_BEFORE_BYTES = re.compile(_MASK_AFTER_BYTES.pattern + rb"\Z")
_MASK_LOOKBACK = 256

Text = TypeVar("Text", str, bytes)
# Half the fragment length: a run of 2 * _GRAM - 1 characters or more covers a whole chunk.
_GRAM = CREDENTIAL_FRAGMENT_CHARS // 2
_CHUNKS = re.compile(f".{{{_GRAM}}}", re.DOTALL)
_CHUNKS_BYTES = re.compile(_CHUNKS.pattern.encode(), re.DOTALL)


def without_credential(text: Text, credential: str) -> Text:
    """`text` with every piece of `credential` in it (by the rule above) replaced by "[redacted]"."""
    if not credential:
        return text
    secret: Text = credential.encode() if isinstance(text, bytes) else credential
    spans = _fragments(text, secret)
    if not spans:
        return text
    widened = sorted(_widened(text, secret, start, end) for start, end in spans)
    redacted: Text = REDACTED.encode() if isinstance(text, bytes) else REDACTED
    pieces, position = [], 0
    for start, end in widened:
        if end <= position:
            continue
        pieces += [text[position : max(start, position)], redacted]
        position = end
    pieces.append(text[position:])
    return text[:0].join(pieces)


def _fragments(text: Text, secret: Text) -> list[tuple[int, int]]:
    """Spans of `text` that are runs of at least CREDENTIAL_FRAGMENT_CHARS characters of `secret`.

    Such a run always covers one of the text's _GRAM-character chunks at offsets 0, _GRAM,
    2 * _GRAM, ... whole, and that chunk is one of the secret's _GRAM-grams: a regex split and a
    set intersection (both at C speed) find those chunks, and only they are widened, character by
    character, against every place the gram has in the secret. A typical answer takes
    microseconds; a 16 MiB one well under a second.
    """
    if len(secret) < CREDENTIAL_FRAGMENT_CHARS:
        # Only the whole of a short credential is looked for.
        minimum, anchors = len(secret), [(found, [0]) for found in _occurrences(text, secret)]
    else:
        minimum, grams = CREDENTIAL_FRAGMENT_CHARS, _grams(secret)
        chunks = (_CHUNKS_BYTES if isinstance(text, bytes) else _CHUNKS).findall(text)
        if grams.keys().isdisjoint(chunks):
            return []
        anchors = [(i * _GRAM, grams[chunk]) for i, chunk in enumerate(chunks) if chunk in grams]
    spans = set()
    for found, offsets in anchors:
        for offset in offsets:
            before = 0
            while before < min(found, offset) and text[found - before - 1] == secret[offset - before - 1]:
                before += 1
            after = min(_GRAM, len(secret))
            while found + after < len(text) and offset + after < len(secret) and text[found + after] == secret[offset + after]:
                after += 1
            if before + after >= minimum:
                spans.add((found - before, found + after))
    return list(spans)


def _occurrences(text: Text, part: Text) -> Iterator[int]:
    found = text.find(part)
    while found >= 0:
        yield found
        found = text.find(part, found + 1)


@functools.lru_cache(maxsize=64)
def _grams(secret: Text) -> dict[Text, list[int]]:
    """Every _GRAM-character piece of the secret, with the offsets it starts at (cached: one per account)."""
    grams: dict[Text, list[int]] = {}
    for offset in range(len(secret) - _GRAM + 1):
        grams.setdefault(secret[offset : offset + _GRAM], []).append(offset)
    return grams


def _widened(text: Text, secret: Text, start: int, end: int) -> tuple[int, int]:
    """A fragment's span with a mask next to it, and the secret's own end (or start) beyond that mask."""
    after, before = (_MASK_AFTER_BYTES, _MASK_BEFORE_BYTES) if isinstance(text, bytes) else (_MASK_AFTER, _MASK_BEFORE)
    mask = after.match(text, end)
    if mask:
        end = mask.end() + next((n for n in range(len(secret), 0, -1) if text.startswith(secret[-n:], mask.end())), 0)
    # Masks are short: looking a little way back keeps this cheap however long the text.
    window = max(0, start - _MASK_LOOKBACK)
    mask = before.search(text, window, start)
    if mask:
        start = mask.start() - next((n for n in range(len(secret), 0, -1) if text.endswith(secret[:n], 0, mask.start())), 0)
    return start, end


def headers_without_credential(headers: Headers, credential: str) -> Headers:
    """The answer's headers with any piece of the credential blanked out (as in bodies)."""
    # One scan of all values at once: a credential holds no line break (credential_problem), so
    # no fragment can run across the joins, and almost every answer has none to blank out.
    if not credential or not _fragments("\n".join(headers.values()), credential):
        return headers
    cleaned = [(name, without_credential(value, credential)) for name, value in headers.items()]
    if all(value is original for (_, value), original in zip(cleaned, headers.values(), strict=True)):
        return headers
    return CIMultiDictProxy(CIMultiDict(cleaned))


# zlib's window bits: gzip framing, or zlib framing as HTTP's `deflate` is meant (47 detects either).
_ZLIB_WINDOW_BITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": 32 + zlib.MAX_WBITS}


def _decoded(body: bytes, encoding: str, max_bytes: int, started: float) -> bytes:
    """A compressed answer's bytes (gzip, several members too, or deflate), at most `max_bytes` of them.

    The relay must read ids and statuses from these answers, so one it cannot decode (another
    encoding, corrupt or cut short) is a broken answer, not something to pass on.
    """
    bits = _ZLIB_WINDOW_BITS.get(encoding)
    if bits is None:
        raise UpstreamFailure(
            "connection_error", f"answer in content-encoding {encoding!r}, which was not asked for", time.perf_counter() - started
        )
    decoded, rest = bytearray(), body
    while rest:
        decoder = zlib.decompressobj(bits)
        try:
            decoded += decoder.decompress(rest, max_bytes + 1 - len(decoded))
        except zlib.error:
            raise UpstreamFailure(
                "connection_error", f"a {encoding} answer that does not decompress", time.perf_counter() - started
            ) from None
        if len(decoded) > max_bytes:
            raise _too_large(max_bytes, started)
        if not decoder.eof:
            raise UpstreamFailure("connection_error", f"a {encoding} answer cut short", time.perf_counter() - started)
        rest = decoder.unused_data
    return bytes(decoded)


def _too_large(max_bytes: int, started: float) -> UpstreamFailure:
    return UpstreamFailure("server_error", f"upstream answer larger than {max_bytes} bytes", time.perf_counter() - started)


# -- relay.http1 (accounts without a proxy) ------------------------------------------------------------


async def _open_http1(client: http1.Client, method: str, url: str, *, headers: list[tuple[bytes, bytes]], body: bytes | None) -> Opened:
    started = time.perf_counter()
    # Bytes that are not UTF-8 are refused, as they were when aiohttp (which writes values as
    # UTF-8) sent these requests: a client's header either arrives unchanged or is refused.
    for _, value in headers:
        if not value.isascii():
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise RequestNotSendable("a forwarded header value is not UTF-8") from None
    with _http1_failures_classified(started):
        try:
            response = await client.open(method, url, headers, body)
        except http1.InvalidURL as exc:
            raise _unbuildable(exc, started) from None
        except http1.InvalidRequest as exc:
            raise RequestNotSendable(str(exc)) from None

    async def chunks() -> AsyncIterator[bytes | memoryview]:
        with _http1_failures_classified(started):
            async for chunk in response.chunks():
                yield chunk

    async def close() -> None:
        # Reused only when the answer arrived to its end; dropped otherwise.
        response.release()

    # Decoded as Latin-1, every byte maps to one character and back, so values reach the client
    # unchanged whatever the upstream sent.
    received = CIMultiDict((name.decode("latin-1"), value.decode("latin-1")) for name, value in response.headers)
    return Opened(response.status, CIMultiDictProxy(received), chunks, close, started)


@contextlib.contextmanager
def _http1_failures_classified(started: float) -> Iterator[None]:
    try:
        yield
    except http1.ConnectTimeout as exc:
        raise UpstreamFailure("timeout", _describe(exc), time.perf_counter() - started, before_send=True) from None
    except http1.ReadTimeout as exc:
        raise UpstreamFailure("timeout", _describe(exc), time.perf_counter() - started) from None
    except http1.ConnectError as exc:
        # Refused connections, DNS and TLS handshake failures: nothing was sent.
        raise UpstreamFailure("connection_error", _describe(exc), time.perf_counter() - started, before_send=True) from None
    except (http1.HTTPError, OSError) as exc:
        # Reset or closed after sending, a body cut short, an answer that is not HTTP.
        raise UpstreamFailure("connection_error", _describe(exc), time.perf_counter() - started) from None


# -- httpx (accounts behind an outbound proxy) -------------------------------------------------------


async def _open_httpx(
    client: httpx.AsyncClient, method: str, url: str, *, headers: list[tuple[bytes, bytes]], body: bytes | None
) -> Opened:
    started = time.perf_counter()
    with _httpx_failures_classified(started):
        request = client.build_request(method, url, headers=headers, content=body)
        response = await client.send(request, stream=True)

    async def chunks() -> AsyncIterator[bytes]:
        with _httpx_failures_classified(started):
            async for chunk in response.aiter_raw():
                yield chunk

    async def close() -> None:
        await response.aclose()

    return Opened(response.status_code, response.headers, chunks, close, started)


@contextlib.contextmanager
def _httpx_failures_classified(started: float) -> Iterator[None]:
    try:
        yield
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise _unbuildable(exc, started) from None
    except httpx.LocalProtocolError as exc:
        # The request could not even be written (e.g. a header value HTTP forbids): the client's
        # doing, not the upstream's, and nothing left this process.
        raise RequestNotSendable(str(exc)) from None
    except httpx.TimeoutException as exc:
        unsent = isinstance(exc, (httpx.ConnectTimeout, httpx.PoolTimeout))
        raise UpstreamFailure("timeout", _describe(exc), time.perf_counter() - started, before_send=unsent) from None
    except httpx.TransportError as exc:
        # ConnectError covers refused connections, DNS and TLS handshake failures: nothing was sent.
        unsent = isinstance(exc, httpx.ConnectError)
        raise UpstreamFailure("connection_error", _describe(exc), time.perf_counter() - started, before_send=unsent) from None


def _unbuildable(exc: Exception, started: float) -> UpstreamFailure:
    """No request can be built for the account (its base_api or proxy): its fault, and nothing was sent."""
    return UpstreamFailure(
        "config_error",
        f"no request can be built from this account's base_api or proxy ({_describe(exc)})",
        time.perf_counter() - started,
        before_send=True,
    )


def _describe(exc: Exception) -> str:
    # Exception texts name hosts and ports, never headers; keep only the kind.
    return type(exc).__name__
