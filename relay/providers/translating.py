"""Accounts whose provider does not speak the OpenAI contract: each operation is built by the
type's Translation, sent through the request's Attempts, and answered in the contract's words.

What the account's state follows is the translation's reading of an error (its status), with the
upstream's own body kept for the cooldown hint (Google's RetryInfo) and the account's last_error.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from .. import upstream as upstream_http
from ..attempts import Attempts, Outgoing
from ..errors import RelayError, shown
from ..outcomes import is_redirect
from ..pool import Upstream
from ..records import Video
from . import Translation, UpstreamCall, account_type, public
from .images import fetch_image
from .operations import Polled, Result

JSON_HEADERS = {"content-type": "application/json"}


def new_video_id() -> str:
    return "video_" + secrets.token_hex(16)


def answer_of(resource: dict[str, Any], latency: float, status: int = 200, headers: dict[str, str] | None = None) -> upstream_http.Answer:
    body = json.dumps(public(resource), separators=(",", ":")).encode()
    return upstream_http.Answer(status, {**JSON_HEADERS, **(headers or {})}, body, latency)


def unreadable(latency: float) -> upstream_http.Answer:
    return answer_of(
        {
            "error": {
                "message": "The upstream answered 2xx with nothing the relay can follow.",
                "type": "upstream_error",
                "param": None,
                "code": "upstream_error",
            }
        },
        latency,
        status=502,
    )


def _same_origin(url: str, base_api: str) -> bool:
    target, base = urlsplit(url), urlsplit(base_api)
    return (target.scheme, target.netloc) == (base.scheme, base.netloc)


@dataclass(frozen=True)
class Translating:
    translation: Translation

    def _keyed(self, upstream: Upstream, url: str, *, method: str = "GET", body: bytes | None = None) -> Outgoing:
        kind = account_type(upstream.account.type)
        headers = upstream_http.provider_headers(kind.auth(upstream.credential), json_body=body is not None)
        return Outgoing(method, url, [*headers, *kind.extra_headers], body)

    def _call(self, upstream: Upstream, call: UpstreamCall) -> Outgoing:
        return self._keyed(upstream, upstream_http.url_for(upstream.account.base_api, call.path), method=call.method, body=call.body)

    def _error(self, raw: upstream_http.Answer, *, creating: bool) -> tuple[upstream_http.Answer, upstream_http.Answer]:
        """(what the account's state follows: the translation's status on the upstream's own body; what the client gets)."""
        translated = self.translation.error(raw.status, raw.body, creating=creating)
        for_account = upstream_http.Answer(translated.status, raw.headers, raw.body, raw.latency_seconds)
        return for_account, answer_of(translated.body, raw.latency_seconds, translated.status, translated.headers)

    async def create(self, attempts: Attempts, upstream: Upstream, *, kind: str, path: str, body: bytes, source: Video | None) -> Result:
        content_type = attempts.caller.headers.get("content-type")
        if kind == "extension":
            if source is None:
                raise RelayError(
                    400,
                    f"{upstream.account.type} accounts extend a video named by id (video[id]), not an uploaded one.",
                    code="invalid_value",
                    param="video",
                )
            located = await self._source_file(attempts, upstream, source)
            if isinstance(located, upstream_http.Answer):
                return Result(located, None)
            stored, video_uri = located
            request = self.translation.extension_request(body, content_type, stored, video_uri)
        else:
            request = self.translation.create_request(body, content_type)
        if request.image_url is not None:
            data, media_type = await fetch_image(request.image_url, attempts.state.settings)
            request = self.translation.with_image(request, data, media_type)
        raw = await attempts.fetch(upstream, self._call(upstream, request.call))
        if raw.status >= 300:
            for_account, answer = self._error(raw, creating=True)
            await attempts.settle(upstream, for_account)
            return Result(answer, None)
        resource = self.translation.created(raw.body, request, new_video_id(), attempts.state.clock())
        answer = unreadable(raw.latency_seconds) if resource is None else answer_of(resource, raw.latency_seconds)
        await attempts.settle(upstream, answer)
        return Result(answer, resource)

    async def _source_file(
        self, attempts: Attempts, upstream: Upstream, source: Video
    ) -> tuple[dict[str, Any], str] | upstream_http.Answer:
        """(the source's video object, the URL of its file) for work that starts from it; or the answer instead."""
        polled, raw_body = await self._poll(attempts, upstream, source)
        await attempts.settle(upstream, polled.for_account)
        if polled.answer.status >= 300:
            return polled.answer
        url = self.translation.content_url(raw_body)
        if polled.resource is None or polled.resource.get("status") != "completed" or url is None:
            raise RelayError(409, f"Video '{source.id}' can be extended once it is completed.", code="video_not_ready", param="video")
        return polled.resource, url

    async def retrieve(self, attempts: Attempts, upstream: Upstream, video: Video) -> Polled:
        polled, _ = await self._poll(attempts, upstream, video)
        return polled

    async def _poll(self, attempts: Attempts, upstream: Upstream, video: Video) -> tuple[Polled, bytes]:
        """The job's state (unsettled), and the upstream's own answer, which locates the content."""
        stored = json.loads(video.resource)
        call = self.translation.poll_call(stored) if isinstance(stored, dict) else None
        if call is None:
            raise RelayError(502, "The relay holds no upstream job for this video.", code="upstream_job_missing")
        raw = await attempts.fetch(upstream, self._call(upstream, call))
        result = self.translation.result_call(stored, raw.body) if raw.status < 300 else None
        if result is not None:
            raw = await attempts.fetch(upstream, self._call(upstream, result))
            if raw.status >= 300:
                failed = self.translation.failed_result(stored, raw.status, raw.body, attempts.state.clock())
                if failed is not None:
                    answer = answer_of(failed, raw.latency_seconds)
                    return Polled(answer, failed, answer), raw.body
        if raw.status >= 300:
            for_account, answer = self._error(raw, creating=False)
            return Polled(answer, None, for_account), raw.body
        updated = self.translation.job_state(stored, raw.body, attempts.state.clock())
        answer = unreadable(raw.latency_seconds) if updated is None else answer_of(updated, raw.latency_seconds)
        return Polled(answer, updated, answer), raw.body

    async def open_content(
        self, attempts: Attempts, upstream: Upstream, video: Video, variant: str | None
    ) -> upstream_http.Opened | upstream_http.Answer:
        """The completed job's video. The provider's file link is fetched with the account's key only
        on the account's own origin; a link elsewhere (a CDN), and the storage a keyed link redirects
        to, get the client's range headers and no key."""
        if variant not in (None, "video"):
            raise RelayError(
                400, f"{upstream.account.type} accounts have no {shown(variant)} for a video.", code="invalid_variant", param="variant"
            )
        polled, raw_body = await self._poll(attempts, upstream, video)
        await attempts.settle(upstream, polled.for_account)
        if polled.answer.status >= 300:
            return polled.answer
        status = polled.resource.get("status") if polled.resource else None
        if status != "completed":
            raise RelayError(
                409,
                f"Video '{video.id}' has no content: its status is {status}."
                + (" Poll it until it is completed." if status in ("queued", "in_progress") else ""),
                code="video_not_ready" if status in ("queued", "in_progress") else "video_failed",
            )
        url = self.translation.content_url(raw_body)
        if url is None or urlsplit(url).scheme not in ("http", "https"):
            raise RelayError(502, "The upstream's completed job names no video file the relay may fetch.", code="upstream_content_missing")
        if _same_origin(url, upstream.account.base_api):
            opened = await attempts.open(upstream, self._keyed(upstream, url))
            if not is_redirect(opened.status):
                if opened.status < 300:
                    return opened
                for_account, answer = self._error(await attempts.read(upstream, opened), creating=False)
                await attempts.settle(upstream, for_account)
                return answer
            location = opened.headers.get("location")
            await opened.close()
            if not location:
                raise RelayError(502, "The upstream redirected the download without saying where.", code="upstream_redirect")
            url = urljoin(url, location)
            if urlsplit(url).scheme not in ("http", "https"):
                raise RelayError(502, "The upstream redirected the download somewhere the relay does not follow.", code="upstream_redirect")
        return await self._from_storage(attempts, upstream, url)

    async def _from_storage(self, attempts: Attempts, upstream: Upstream, url: str) -> upstream_http.Opened:
        """A video file away from the account's origin: never sent the account's key."""
        stored = await attempts.open(upstream, Outgoing("GET", url, upstream_http.storage_headers(attempts.caller.headers.raw)))
        if stored.status < 300 or stored.status == 304:
            return stored
        await stored.close()
        if stored.status == 416:
            raise RelayError(416, "The requested range cannot be satisfied.", code="range_not_satisfiable")
        raise RelayError(502, f"The upstream's storage refused the download (HTTP {stored.status}).", code="upstream_content_refused")

    async def delete(self, attempts: Attempts, upstream: Upstream, video: Video) -> upstream_http.Answer | None:
        stored = json.loads(video.resource)
        call = self.translation.delete_call(stored) if isinstance(stored, dict) else None
        if call is None:
            return None
        raw = await attempts.fetch(upstream, self._call(upstream, call))
        # A job the upstream no longer knows is as deleted as the client asked.
        finished = self.translation.cancelled(raw.status, raw.body)
        if raw.status < 300 or raw.status == 404 or finished:
            answer = answer_of({"id": video.id, "object": "video.deleted", "deleted": True}, raw.latency_seconds)
            await attempts.settle(upstream, answer)
            return answer
        for_account, answer = self._error(raw, creating=False)
        await attempts.settle(upstream, for_account)
        return answer
