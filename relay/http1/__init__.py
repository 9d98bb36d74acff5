"""A small HTTP/1.1 client for the relay's upstream calls: keep-alive pooling, flow control and
read timeouts on asyncio protocols, with httptools parsing the answers. No HTTP/2, proxies,
redirects, cookies or decompression: the relay wants none of them on this path."""

from .client import Client, Response, is_ipv6, parse_url
from .connection import Limits
from .errors import ConnectError, ConnectionClosed, ConnectTimeout, HTTPError, InvalidRequest, InvalidURL, ProtocolError, ReadTimeout

__all__ = [
    "Client",
    "ConnectError",
    "ConnectTimeout",
    "ConnectionClosed",
    "HTTPError",
    "InvalidRequest",
    "InvalidURL",
    "Limits",
    "ProtocolError",
    "ReadTimeout",
    "Response",
    "is_ipv6",
    "parse_url",
]
