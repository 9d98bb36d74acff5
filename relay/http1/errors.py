"""What can go wrong on an HTTP/1.1 exchange. Messages name the kind of failure, never a header or a host."""

from __future__ import annotations


class HTTPError(Exception):
    """Base of the client's failures."""


class InvalidURL(HTTPError, ValueError):
    """The URL is no absolute http(s) URL this client can send to; nothing was sent."""


class InvalidRequest(HTTPError, ValueError):
    """A header cannot be written (a line break in a value, a name that is no token); nothing was sent."""


class ConnectError(HTTPError):
    """No connection could be made (refused, no address, TLS handshake failed): nothing was sent."""


class ConnectTimeout(HTTPError):
    """The connection (with its TLS handshake) was not made in time: nothing was sent."""


class ReadTimeout(HTTPError):
    """The upstream sent nothing for the read timeout while an answer was awaited."""


class ProtocolError(HTTPError):
    """The answer is not HTTP/1.1 this client accepts (malformed, or a head over the limits)."""


class ConnectionClosed(HTTPError):
    """The connection was reset or closed before the answer ended."""
