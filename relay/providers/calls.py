"""Sending a provider's translated calls: create, poll, and opening a job's content.

Each call goes through the relay's usual attempt machinery (proxy.fetch / settle), so metrics,
outcome rows, cooldowns and failover treat a translated account like any other. What the account's
state follows is the provider's reading of the error (its status), with the upstream's own body
kept for the cooldown hint (Google's RetryInfo) and the account's last_error.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import Any
from urllib.parse import urljoin, urlsplit

from starlette.requests import Request

from .. import upstream as upstream_http
from ..errors import RelayError
from ..outcomes import is_redirect
from ..pool import Upstream
from ..proxy import failed, fetch, settle
from ..records import KeyRecord, Video
from ..state import RelayState
from . import Provider, Translated, UpstreamCall, public

JSON_HEADERS = {"content-type": "application/json"}


def new_video_id() -> str:
    return "video_" + secrets.token_hex(16)


def answer_of(resource: dict[str, Any], latency: float, status: int = 200, headers: dict[str, str] | None = None) -> upstream_http.Answer:
    return upstream_http.Answer(status, {**JSON_HEADERS, **(headers or {})}, json.dumps(resource).encode(), latency)


def client_answer(answer: upstream_http.Answer) -> upstream_http.Answer:
    """The answer without the relay's private job handle."""
    try:
        resource = json.loads(answer.body)
    except ValueError:
        return answer
    if not isinstance(resource, dict):
        return answer
    return upstream_http.Answer(answer.status, answer.headers, json.dumps(public(resource)).encode(), answer.latency_seconds)


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


async def _call(
    state: RelayState, upstream: Upstream, request: Request, provider: Provider, *, route: str, key: KeyRecord, call: UpstreamCall
) -> upstream_http.Answer:
    headers = upstream_http.provider_headers(upstream.credential, account_type=provider.account_type, json_body=call.body is not None)
    return await fetch(state, upstream, request, route=route, key=key, method=call.method, path=call.path, body=call.body, headers=headers)


def _translated_error(
    provider: Provider, raw: upstream_http.Answer, *, creating: bool
) -> tuple[upstream_http.Answer, upstream_http.Answer]:
    """(what the account's state follows: the provider's status on the upstream's own body; what the client gets)."""
    translated: Translated = provider.error(raw.status, raw.body, creating=creating)
    for_account = upstream_http.Answer(translated.status, raw.headers, raw.body, raw.latency_seconds)
    return for_account, answer_of(translated.body, raw.latency_seconds, translated.status, translated.headers)


async def create(
    state: RelayState, upstream: Upstream, request: Request, provider: Provider, *, route: str, key: KeyRecord, body: bytes
) -> upstream_http.Answer:
    """One translated create on `upstream`: the OpenAI video object (with its job handle), or the error in OpenAI's words."""
    translated = provider.create_request(body, request.headers.get("content-type"))
    raw = await _call(state, upstream, request, provider, route=route, key=key, call=translated.call)
    if raw.status < 300:
        resource = provider.created(raw.body, translated, new_video_id(), time.time())
        answer = unreadable(raw.latency_seconds) if resource is None else answer_of(resource, raw.latency_seconds)
        await settle(state, upstream, key, request, route, answer)
        return answer
    for_account, answer = _translated_error(provider, raw, creating=True)
    await settle(state, upstream, key, request, route, for_account)
    return answer


async def poll(
    state: RelayState, upstream: Upstream, request: Request, provider: Provider, *, route: str, key: KeyRecord, video: Video
) -> tuple[upstream_http.Answer, upstream_http.Answer, bytes]:
    """Read the job's state: (the answer to settle, the updated video object or error for the client, the upstream's body)."""
    resource = json.loads(video.resource)
    call = provider.poll_call(resource) if isinstance(resource, dict) else None
    if call is None:
        raise RelayError(502, "The relay holds no upstream job for this video.", code="upstream_job_missing")
    raw = await _call(state, upstream, request, provider, route=route, key=key, call=call)
    if raw.status < 300:
        updated = provider.job_state(resource, raw.body, time.time())
        answer = unreadable(raw.latency_seconds) if updated is None else answer_of(updated, raw.latency_seconds)
        return answer, answer, raw.body
    for_account, answer = _translated_error(provider, raw, creating=False)
    return for_account, answer, raw.body


def _same_origin(url: str, base_api: str) -> bool:
    target, base = urlsplit(url), urlsplit(base_api)
    return (target.scheme, target.netloc) == (base.scheme, base.netloc)


async def _open(
    state: RelayState, upstream: Upstream, request: Request, key: KeyRecord, route: str, url: str, headers: list[tuple[bytes, bytes]]
) -> upstream_http.Opened:
    try:
        return await upstream_http.open_response(
            state.client_for(upstream),
            "GET",
            url,
            headers=headers,
            body=None,
            head_timeout=state.settings.read_timeout_seconds,
            credential=upstream.credential,
        )
    except upstream_http.UpstreamFailure as failure:
        raise await failed(state, upstream, key, request, route, failure) from None


async def open_content(
    state: RelayState, upstream: Upstream, request: Request, provider: Provider, *, route: str, key: KeyRecord, video: Video
) -> upstream_http.Opened | upstream_http.Answer:
    """The completed job's video, opened for streaming; or an answer to give instead (an upstream error).

    The provider's file link is fetched with the account's key only on the account's own origin;
    the storage it redirects to gets the client's range headers and no key at all.
    """
    for_account, answer, raw_body = await poll(state, upstream, request, provider, route=route, key=key, video=video)
    await settle(state, upstream, key, request, route, for_account)
    if answer.status >= 300:
        return client_answer(answer)
    status = json.loads(answer.body).get("status")
    if status != "completed":
        raise RelayError(
            409,
            f"Video '{video.id}' has no content: its status is {status}."
            + (" Poll it until it is completed." if status in ("queued", "in_progress") else ""),
            code="video_not_ready" if status in ("queued", "in_progress") else "video_failed",
        )
    url = provider.content_url(raw_body)
    if url is None or not _same_origin(url, upstream.account.base_api):
        raise RelayError(502, "The upstream's completed job names no video file the relay may fetch.", code="upstream_content_missing")
    keyed = upstream_http.provider_headers(upstream.credential, account_type=provider.account_type)
    opened = await _open(state, upstream, request, key, route, url, keyed)
    if not is_redirect(opened.status):
        if opened.status < 300:
            return opened
        raw = await upstream_http.read_answer(
            opened,
            max_bytes=state.settings.max_upstream_response_bytes,
            body_timeout=state.settings.read_timeout_seconds,
            credential=upstream.credential,
        )
        for_account, answer = _translated_error(provider, raw, creating=False)
        await settle(state, upstream, key, request, route, for_account)
        return answer
    location = opened.headers.get("location")
    await opened.close()
    if not location:
        raise RelayError(502, "The upstream redirected the download without saying where.", code="upstream_redirect")
    target = urljoin(url, location)
    if urlsplit(target).scheme not in ("http", "https"):
        raise RelayError(502, "The upstream redirected the download somewhere the relay does not follow.", code="upstream_redirect")
    stored = await _open(state, upstream, request, key, route, target, upstream_http.storage_headers(request.headers.raw))
    if stored.status < 300 or stored.status == 304:
        return stored
    await stored.close()
    if stored.status == 416:
        raise RelayError(416, "The requested range cannot be satisfied.", code="range_not_satisfiable")
    raise RelayError(502, f"The upstream's storage refused the download (HTTP {stored.status}).", code="upstream_content_refused")
