"""Fetching an image a client named by URL, for providers that take the image's bytes (Veo).

The relay fetches from inside the operator's network, so it fetches only from hosts the operator
listed (RELAY_IMAGE_URL_HOSTS): no list, no fetching, and a client's URL can never reach an
internal service the operator did not name. No redirects are followed (they could lead anywhere),
no credentials travel, and the body is bounded by RELAY_MAX_BODY_BYTES like an uploaded image.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import httpx

from ..config import Settings
from ..errors import RelayError, shown

PARAM = "input_reference"


def _refused(message: str, code: str = "invalid_image_url") -> RelayError:
    return RelayError(400, message, code=code, param=PARAM)


def checked_url(url: str, allowed_hosts: frozenset[str]) -> str:
    """The URL if the operator allows fetching from its host; else the client's 400 saying why."""
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").lower()
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise _refused("input_reference holds an image URL that cannot be read.") from None
    if parts.scheme not in ("http", "https") or not host:
        raise _refused("input_reference holds an image URL that is not http(s).")
    if parts.username is not None or parts.password is not None:
        raise _refused("input_reference holds an image URL with credentials in it, which the relay does not send.")
    listed = f"[{host}]" if ":" in host else host
    if listed not in allowed_hosts:
        raise _refused(
            f"This relay does not fetch images from '{shown(host)}': send the image as an upload or a data: URL,"
            " or ask the operator to allow the host (RELAY_IMAGE_URL_HOSTS).",
            code="image_url_not_allowed",
        )
    return url


async def fetch_image(url: str, settings: Settings) -> tuple[bytes, str]:
    """(bytes, media type) of the image at `url`; any failure is the client's 400 about its URL."""
    checked_url(url, settings.image_url_hosts)
    limit = settings.max_body_bytes
    timeout = httpx.Timeout(settings.read_timeout_seconds, connect=settings.connect_timeout_seconds)
    try:
        async with (
            httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client,
            client.stream("GET", url, headers={"accept": "image/png, image/jpeg, image/webp"}) as response,
        ):
            if response.status_code != 200:
                raise _refused(f"Fetching the input_reference image URL answered HTTP {response.status_code}.")
            received = bytearray()
            async for chunk in response.aiter_bytes():
                received += chunk
                if len(received) > limit:
                    raise _refused(f"The input_reference image is larger than this relay accepts ({limit} bytes).")
            media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    except httpx.HTTPError as error:
        raise _refused(f"The input_reference image URL could not be fetched ({type(error).__name__}).") from None
    return bytes(received), media_type
