"""The client's side of a request: the relay's state, its key, its body and the route it addresses."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.datastructures import Headers
from starlette.requests import ClientDisconnect, Request

from .body import read_body
from .errors import ClientGone, RelayError
from .keys import AuthError, authenticate
from .logs import RequestFacts
from .quota import check_request_rate
from .recorder import KeyUse
from .records import KeyRecord
from .state import RelayState

SERVICE = "openai"


def relay_state(request: Request) -> RelayState:
    return request.app.state.relay  # type: ignore[no-any-return]


def request_facts(request: Request) -> RequestFacts:
    # From the scope itself: `request.state` makes an object around it for every request.
    facts: RequestFacts = request.scope["state"]["facts"]
    return facts


@dataclass(frozen=True)
class Caller:
    """Whom upstream attempts are made for: a client's request, or the relay's own job watcher
    (which has no client: it sends no client headers, and its facts reach no access log)."""

    request_id: str
    method: str = "GET"
    headers: Headers = field(default_factory=Headers)
    facts: RequestFacts = field(default_factory=RequestFacts)


def request_id(request: Request) -> str:
    value: str = request.scope["state"]["request_id"]
    return value


def caller_of(request: Request) -> Caller:
    return Caller(request_id(request), request.method, request.headers, request_facts(request))


def request_route(request: Request) -> str:
    """The route's name in the route table (relay.routes), set when the request was routed."""
    return request_facts(request).route or "other"


async def authorize(request: Request, state: RelayState) -> KeyRecord:
    now = state.clock()
    try:
        key = await authenticate(request.headers, state.keys, service=SERVICE, now=now)
    except AuthError as error:
        state.metrics.auth_failures.labels(error.reason).inc()
        raise
    state.recorder.put(KeyUse(key.id, now))
    request_facts(request).key = key.name
    await check_request_rate(state, key, now)
    return key


async def request_body(request: Request, state: RelayState) -> bytes:
    if len(request.headers.getlist("content-type")) > 1:
        # The relay reads the first; an upstream might read the last.
        raise RelayError(400, "Send one Content-Type header.", code="invalid_request_headers")
    try:
        return await read_body(request.stream(), declared_length=request.headers.get("content-length"), limit=state.settings.max_body_bytes)
    except ClientDisconnect:
        # Hung up mid-body, or sent a body the server could not frame: nothing was forwarded.
        raise ClientGone() from None
