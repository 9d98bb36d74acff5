"""Downloads handed to a front nginx, which streams the upstream's bytes without Python copying them.

A relay copies a download through user space on one core (about 40-50 % of what nginx serves
from disk, docs/performance.md). Behind nginx, the relay can instead answer a content request
with `X-Accel-Redirect` to nginx's internal location (RELAY_OFFLOAD_LOCATION) and the upstream
request it would have made: the URL, and the account's credential in a header meant for nginx
alone. nginx fetches it from the upstream and streams it to the client (docs/offload.md has the
configuration).

The relay does this only for requests that carry RELAY_OFFLOAD_SECRET in `X-Relay-Offload`, a
header the front nginx sets on everything it passes to the relay (replacing any a client sent):
a request that did not come through that nginx never sees a credential, and gets the bytes
streamed by the relay as usual. Only accounts reached directly (no outbound proxy) on the
OpenAI contract are offloaded; translated providers and proxied accounts stream as before.
"""

from __future__ import annotations

import hmac
from typing import Final

from starlette.datastructures import Headers
from starlette.responses import Response

from .attempts import Outgoing
from .config import Settings

OFFLOAD_HEADER: Final = "x-relay-offload"
# Response headers for the front nginx only; its configuration hides them from the client.
UPSTREAM_URL_HEADER: Final = "x-relay-upstream-url"
# One header per way a credential travels: nginx cannot name a header from a variable.
CREDENTIAL_HEADERS: Final = {b"authorization": "x-relay-upstream-authorization", b"api-key": "x-relay-upstream-api-key"}


def offload_requested(settings: Settings, headers: Headers) -> bool:
    """Whether the request came through the front nginx that offloads downloads."""
    secret = settings.offload_secret
    if secret is None:
        return False
    presented = headers.get(OFFLOAD_HEADER)
    return presented is not None and hmac.compare_digest(presented.encode(), secret.encode())


def offloaded(outgoing: Outgoing, settings: Settings) -> Response:
    """The answer that hands `outgoing` (the upstream request the relay would make) to nginx."""
    headers = {"x-accel-redirect": settings.offload_location, UPSTREAM_URL_HEADER: outgoing.url, "x-accel-buffering": "no"}
    for name, value in outgoing.headers:
        if name in CREDENTIAL_HEADERS:
            headers[CREDENTIAL_HEADERS[name]] = value.decode("latin-1")
    return Response(status_code=200, headers=headers)
