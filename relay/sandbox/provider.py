"""What the gate needs to know about each emulated provider: its name and how a request names its account."""

from __future__ import annotations

import secrets
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import Scope

LOWER_ALNUM = string.ascii_lowercase + string.digits


@dataclass(frozen=True)
class Provider:
    """One emulated service as the gate sees it.

    ``name`` is what fault rules match with ``provider`` and which preset replies apply;
    ``credential`` finds the account credential a request carries (recorded as ``token``, matched
    by rules' ``token``); ``response_headers`` are added to every response (request ids).
    """

    name: str
    credential: Callable[[Scope], str | None]
    response_headers: Callable[[], dict[str, str]] = field(default=lambda: {})


def header(scope: Scope, name: str) -> str | None:
    """The first value of header ``name`` (lower case), as the client sent it."""
    wanted = name.encode("latin-1")
    for raw_name, raw_value in scope["headers"]:
        if raw_name.lower() == wanted:
            return str(raw_value.decode("latin-1"))
    return None


def query_value(scope: Scope, name: str) -> str | None:
    query = scope.get("query_string", b"").decode("latin-1")
    return next((value for key, value in parse_qsl(query, keep_blank_values=True) if key == name), None)


def bearer_credential(scope: Scope) -> str | None:
    """The account credential of providers that take it as `Authorization: Bearer`."""
    return bearer_token(header(scope, "authorization"))


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    token = credentials.strip()
    return token if scheme.lower() == "bearer" and token else None


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(16)}"


def short_id(length: int = 12) -> str:
    """Google-style resource ids: lower-case letters and digits (the Gemini SDK parses file ids as such)."""
    return "".join(secrets.choice(LOWER_ALNUM) for _ in range(length))


def origin(request: Request) -> str:
    """The scheme and authority the client used, so generated links point back at this sandbox."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{request.url.scheme}://{host}"


def storage_origin(request: Request) -> str:
    """The request's origin with 127.0.0.1 and localhost swapped: the same server on another origin,
    as a provider's storage or CDN is, so the relay must fetch its links without the account's key."""
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    name, colon, port = host.rpartition(":")
    swapped = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}.get(name.lower()) if colon else None
    return f"{request.url.scheme}://{swapped}:{port}" if swapped else f"{request.url.scheme}://{host}"
