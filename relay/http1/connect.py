"""Making a connection: the loop's resolver, happy eyeballs across addresses, TLS with SNI."""

from __future__ import annotations

import asyncio
import functools
import socket
import ssl
from asyncio.staggered import staggered_race
from collections.abc import Callable, Sequence
from typing import Any, cast

from .connection import Connection, Limits
from .errors import ConnectError, ConnectTimeout

# RFC 8305's recommended wait before the next address is tried alongside (asyncio's own value).
HAPPY_EYEBALLS_DELAY = 0.25


async def open_connection(
    host: str, port: int, *, tls: ssl.SSLContext | None, limits: Limits, factory: Callable[[], Connection]
) -> Connection:
    """A connected (and, with `tls`, handshaken) connection within the connect timeout."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(limits.connect_timeout):
            sock = await _connected_socket(loop, host, port)
            # The host name is the TLS server name: sent as SNI and checked against the certificate
            # (for an IP literal, Python checks the address and sends no SNI).
            _, connection = await loop.create_connection(
                factory,
                sock=sock,
                ssl=tls,
                server_hostname=host if tls is not None else None,
                ssl_handshake_timeout=limits.connect_timeout if tls is not None else None,
            )
    except TimeoutError:
        raise ConnectTimeout("no connection within the connect timeout") from None
    except (OSError, ssl.SSLError, ssl.CertificateError) as exc:
        # Refused, unreachable, no address for the name, or a TLS handshake that failed.
        raise ConnectError(f"could not connect ({type(exc).__name__})") from None
    return connection


async def _connected_socket(loop: asyncio.AbstractEventLoop, host: str, port: int) -> socket.socket:
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if not infos:
        raise OSError("the name has no address")
    addresses = _interleaved(infos)
    if len(addresses) == 1:
        return await _attempt(loop, addresses[0])
    # uvloop's create_connection has no happy_eyeballs_delay: the race is run here, as asyncio runs it.
    sock, _, errors = await staggered_race([functools.partial(_attempt, loop, info) for info in addresses], HAPPY_EYEBALLS_DELAY)
    if sock is None:
        raise next((error for error in errors if isinstance(error, OSError)), OSError("no address could be connected"))
    return cast(socket.socket, sock)


AddressInfo = tuple[socket.AddressFamily, socket.SocketKind, int, str, Any]


def _interleaved(infos: Sequence[AddressInfo]) -> list[AddressInfo]:
    """Addresses alternating between families, the first family first (RFC 8305, 4)."""
    families: dict[int, list[AddressInfo]] = {}
    for info in infos:
        families.setdefault(info[0], []).append(info)
    queues = list(families.values())
    ordered: list[AddressInfo] = []
    for position in range(max(len(queue) for queue in queues)):
        ordered += [queue[position] for queue in queues if position < len(queue)]
    return ordered


async def _attempt(loop: asyncio.AbstractEventLoop, info: AddressInfo) -> socket.socket:
    family, kind, proto, _, address = info
    sock = socket.socket(family, kind, proto)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await loop.sock_connect(sock, address)
    except BaseException:
        sock.close()
        raise
    return sock
