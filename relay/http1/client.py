"""The client's door: `open` sends one request and returns once the answer's head has arrived."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import AsyncIterator

import certifi

from .connect import open_connection
from .connection import Connection, Limits
from .errors import ConnectionClosed, InvalidRequest, InvalidURL
from .pool import Origin, Pool

_URL = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<authority>[^/?#]*)(?P<target>[^#]*)(?:#.*)?", re.DOTALL)
_DEFAULT_PORTS = {"http": 80, "https": 443}
# RFC 9110's token: what a header name may be.
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# The client writes these itself.
_OWN_HEADERS = frozenset((b"host", b"content-length", b"transfer-encoding"))
_BODY_METHODS = frozenset(("POST", "PUT", "PATCH"))


class Target:
    """Where a URL's request goes: its origin, the Host header and the request target."""

    __slots__ = ("host", "origin", "target")

    def __init__(self, origin: Origin, host: bytes, target: bytes) -> None:
        self.origin, self.host, self.target = origin, host, target


def parse_url(url: str) -> Target:
    """The parts of an absolute http(s) URL whose path and query are already percent-encoded (sent as they are)."""
    match = _URL.fullmatch(url)
    if match is None:
        raise InvalidURL("not an absolute URL")
    origin, host = _origin(match["scheme"], match["authority"])
    return Target(origin, host, _request_target(match["target"]))


def _request_target(target: str) -> bytes:
    if not (target.isascii() and target.isprintable()) or " " in target:
        raise InvalidURL("a path that is not percent-encoded printable ASCII")
    return target.encode("ascii") if target else b"/"


def _origin(scheme: str, authority: str) -> tuple[Origin, bytes]:
    """(scheme, host, port) and the Host header's value."""
    scheme = scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise InvalidURL("not an http or https URL")
    if not (authority.isascii() and authority.isprintable()) or " " in authority:
        raise InvalidURL("a host that is not printable ASCII")
    if "@" in authority:
        raise InvalidURL("a URL with user information")
    if authority.startswith("["):
        host, bracket, rest = authority[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")) or not is_ipv6(host):
            raise InvalidURL("an IPv6 host that is not of the form [address]")
        port_text, shown = rest[1:], f"[{host}]"
    else:
        host, colon, port_text = authority.partition(":")
        if colon and not port_text:
            raise InvalidURL("an empty port")
        shown = host
    if not host:
        raise InvalidURL("a URL without a host")
    default = _DEFAULT_PORTS[scheme]
    port = default
    if port_text:
        if not (port_text.isdigit() and len(port_text) <= 5 and 1 <= int(port_text) <= 65535):
            raise InvalidURL("a port that is not a number from 1 to 65535")
        port = int(port_text)
    host_header = shown if port == default else f"{shown}:{port}"
    return (scheme, host, port), host_header.encode("ascii")


def is_ipv6(text: str) -> bool:
    """Whether `text` is an IPv6 address (as written between a URL's brackets)."""
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


def request_head(method: str, target: Target, headers: list[tuple[bytes, bytes]], body: bytes | None) -> bytes:
    """The request line and header block, refusing any header that cannot be written as given."""
    lines = [method.encode("ascii"), b" ", target.target, b" HTTP/1.1\r\nHost: ", target.host, b"\r\n"]
    for name, value in headers:
        if not _TOKEN.fullmatch(name) or name.lower() in _OWN_HEADERS:
            raise InvalidRequest("a header name that is not a token, or one the client writes itself")
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise InvalidRequest("a header value holds a line break or NUL")
        lines += (name, b": ", value, b"\r\n")
    if body:
        lines += (b"Content-Length: ", str(len(body)).encode("ascii"), b"\r\n")
    elif method in _BODY_METHODS:
        lines.append(b"Content-Length: 0\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)


class Response:
    """An answer whose head has arrived. Read the body with `chunks()` (or `read()`), then `release()`."""

    __slots__ = ("_client", "_connection", "_done", "_origin", "headers", "status")

    def __init__(self, client: Client, connection: Connection, origin: Origin) -> None:
        self._client, self._connection, self._origin, self._done = client, connection, origin, False
        self.status = connection.status
        self.headers = connection.headers

    async def read(self) -> bytes | memoryview:
        """Body that has arrived since the last call (at least some), or b"" at its end: a view of
        the buffer it was read into when it can be (see Connection.read)."""
        if self._done:
            raise ConnectionClosed("the answer was already released")
        return await self._connection.read()

    async def chunks(self) -> AsyncIterator[bytes | memoryview]:
        while chunk := await self.read():
            yield chunk

    @property
    def connection(self) -> Connection:
        return self._connection

    def release(self) -> None:
        """Done: the connection is reused if the answer arrived to its end, closed otherwise.

        Only the first call counts: by a second one the connection may serve another request.
        """
        if not self._done:
            self._done = True
            self._client.pool.release(self._connection, self._origin)

    def close(self) -> None:
        """Done, and the connection is closed whatever state it is in."""
        if not self._done:
            self._done = True
            self._connection.abort()


class Client:
    """HTTP/1.1 to any number of origins over pooled keep-alive connections; no proxies, redirects or cookies."""

    def __init__(self, limits: Limits, ssl_context: ssl.SSLContext | None = None) -> None:
        self.limits = limits
        # Made at the first https connection (tls_context): loading the CA bundle costs each worker's
        # start tens of milliseconds of CPU, for nothing where every upstream is plain http.
        self._ssl = ssl_context
        self.pool = Pool(limits.max_connections, limits.idle_seconds)
        self._origins: dict[str, tuple[Origin, bytes]] = {}

    def tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            # certifi's CA bundle: a fresh machine may have no system CA store.
            self._ssl = ssl.create_default_context(cafile=certifi.where())
        return self._ssl

    async def open(self, method: str, url: str, headers: list[tuple[bytes, bytes]], body: bytes | None = None) -> Response:
        target = self._target(url)
        request = request_head(method, target, headers, body)
        origin = target.origin
        connection = await self.pool.acquire(origin, lambda: self._connect(origin))
        try:
            connection.send(request, body, head_only=method == "HEAD")
            await connection.head()
        except BaseException:
            # Failed or cancelled half way: the answer, or what is left of it, must not reach the next request.
            connection.abort()
            raise
        return Response(self, connection, origin)

    async def aclose(self) -> None:
        self.pool.close()
        # Lets the transports finish closing before the loop may stop.
        await asyncio.sleep(0)

    def _target(self, url: str) -> Target:
        match = _URL.fullmatch(url)
        if match is None:
            raise InvalidURL("not an absolute URL")
        # Relays send to a handful of base URLs: what is known of each authority is kept.
        key = url[: match.end("authority")]
        known = self._origins.get(key)
        if known is None:
            known = _origin(match["scheme"], match["authority"])
            if len(self._origins) < 1024:
                self._origins[key] = known
        return Target(known[0], known[1], _request_target(match["target"]))

    async def _connect(self, origin: Origin) -> Connection:
        scheme, host, port = origin
        return await open_connection(
            host, port, tls=self.tls_context() if scheme == "https" else None, limits=self.limits, factory=lambda: Connection(self.limits)
        )
