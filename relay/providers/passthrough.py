"""The OpenAI contract's accounts (openai-responses, openai, azure-openai): the client's request
goes upstream byte for byte, with the allowed client headers and the account's own auth header,
and the answer comes back as it was."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from starlette.datastructures import Headers

from .. import upstream as upstream_http
from ..attempts import Attempts, Outgoing
from ..body import json_object
from ..pool import Upstream
from ..records import Video
from . import account_type
from .operations import Polled, Result


def forwarded(headers: Headers, upstream: Upstream, method: str, path: str, body: bytes | None, *, content: bool = False) -> Outgoing:
    """The client's request (its `headers`) for `path` of the account's base_api, with the account's credential."""
    auth = account_type(upstream.account.type).auth(upstream.credential)
    return Outgoing(
        method,
        upstream_http.url_for(upstream.account.base_api, path),
        upstream_http.request_headers(headers.raw, auth, content=content),
        body,
    )


def video_path(video: Video) -> str:
    """The video's upstream path: its id one path segment, whatever it holds."""
    return f"/videos/{quote(video.id, safe='')}"


def content_request(headers: Headers, upstream: Upstream, video: Video, variant: str | None) -> Outgoing:
    """The download of the video's bytes, as the relay (or a front nginx it hands it to) sends it."""
    # The variant goes upstream only as the client gave it: the contract's default stays the upstream's.
    path = f"{video_path(video)}/content" + (f"?variant={variant}" if variant is not None else "")
    return forwarded(headers, upstream, "GET", path, None, content=True)


class PassThrough:
    async def create(self, attempts: Attempts, upstream: Upstream, *, kind: str, path: str, body: bytes, source: Video | None) -> Result:
        answer = await attempts.send(upstream, forwarded(attempts.caller.headers, upstream, "POST", path, body))
        return Result(answer, json_object(answer.body) if answer.status < 300 else None)

    async def retrieve(self, attempts: Attempts, upstream: Upstream, video: Video) -> Polled:
        answer = await attempts.fetch(upstream, forwarded(attempts.caller.headers, upstream, "GET", video_path(video), None))
        return Polled(answer, json_object(answer.body) if answer.status == 200 else None, answer)

    async def open_content(self, attempts: Attempts, upstream: Upstream, video: Video, variant: str | None) -> upstream_http.Opened:
        return await attempts.open(upstream, content_request(attempts.caller.headers, upstream, video, variant))

    async def delete(self, attempts: Attempts, upstream: Upstream, video: Video) -> upstream_http.Answer:
        return await attempts.send(upstream, forwarded(attempts.caller.headers, upstream, "DELETE", video_path(video), None))


PASS_THROUGH: Final = PassThrough()
