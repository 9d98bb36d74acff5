"""The Videos routes: new work goes where the scheduler says, follow-ups go to the owner account.

Job affinity: every job the relay starts is recorded (video id -> account, relay key, model,
seconds, size, status) before the client hears of it, so retrieve, content, remix, delete,
edits and extensions reach the account that holds the job, whatever the scheduler would pick.
Ownership: a key sees only its own videos; anything else is a 404, existence not revealed.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any
from urllib.parse import quote

import anyio
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Send

from . import upstream as upstream_http
from .body import body_fields, is_valid_unicode, json_object
from .errors import AnswerCutShort, RelayError, WorkMayExist, shown
from .idempotency import idempotent
from .limits import job_terms
from .logs import SHUTDOWN, fields as log_fields
from .outcomes import is_redirect
from .pool import Upstream
from .pricing import DEFAULT_MODEL, DEFAULT_SIZE
from .providers import Provider, calls as provider_calls, provider_for, public_json
from .proxy import (
    Admit,
    attempt,
    attempt_with_failover,
    authorize,
    choose_account,
    count_attempt,
    fetch,
    note_attempt,
    note_broken_answer,
    note_server_health,
    open_attempt,
    owner_account,
    passthrough,
    read_attempt,
    relay_state,
    request_body,
    request_facts,
    settle,
)
from .quota import Booking, book, note_upstream_quota, require_served
from .records import TERMINAL_STATUSES, KeyRecord, StoreUnavailable, Video
from .sessions import SESSION_FIELD, session_hash, session_id
from .state import RelayState

log = logging.getLogger("relay.videos")

_FIELDS = frozenset({SESSION_FIELD, "model", "seconds", "size", "video[id]"})
CONTENT_VARIANTS = ("video", "thumbnail", "spritesheet")


def _not_found(what: str, identifier: str) -> RelayError:
    return RelayError(404, f"No {what} found with id '{shown(identifier)}'.", code=f"{what}_not_found", param=f"{what}_id")


async def owned_video(state: RelayState, key: KeyRecord, video_id: str) -> Video:
    video = await state.db(state.store.video, video_id)
    if video is None or video.key_name != key.name or video.deleted_at is not None:
        raise _not_found("video", video_id)
    return video


# -- new work ---------------------------------------------------------------------------------------


async def new_job(
    request: Request, *, route: str, kind: str, upstream_path: str, source: Video | None = None, key: KeyRecord | None = None
) -> Response:
    """Create, remix, edit or extend: forward byte for byte, record the new job, answer unchanged."""
    state = relay_state(request)
    now = state.clock()
    key = key or await authorize(request, state, now)
    body = await request_body(request, state)
    async with idempotent(state, request, key, route, body) as claim:
        if claim.replay is not None:
            return claim.replay
        fields = body_fields(body, request.headers.get("content-type"), _FIELDS)
        if source is None and kind in ("edit", "extension") and "video[id]" in fields:
            source = await owned_video(state, key, fields["video[id]"])
        state.store.refuse_while_down()
        terms = job_terms(fields, source, kind, state.prices)
        if source is None:
            await require_served(state, terms)
        booking = await book(state, key, terms, now)
        try:
            if source is not None:
                upstream = await owner_account(state, source.account)
                await booking.admit_owner(upstream)
            else:
                session = session_id(fields, request.headers)
                upstream = await choose_account(
                    state, session_hash(session) if session else None, now=now, route=route, admit=booking.admit
                )
            # Branch once: accounts of the OpenAI contract get the client's bytes as they came.
            provider = provider_for(upstream.account.type)
            admit: Admit = booking.admit
            send = None
            if provider is not None:
                refuse_untranslated(upstream, kind)
                admit = same_provider(provider, booking)
                send = translated_create(state, request, provider, route=route, key=key, body=body)
            # Work on an existing video must stay with its owner; everything else may move on.
            try:
                upstream, answer = await attempt_with_failover(
                    state,
                    upstream,
                    request,
                    route=route,
                    key=key,
                    path=upstream_path,
                    body=body,
                    may_fail_over=source is None,
                    admit=admit,
                    send=send,
                )
                if answer.status < 300:
                    try:
                        await record_job(
                            state, answer.body, account=upstream.name, key=key, kind=kind, source=source, fields=fields, booking=booking
                        )
                    except StoreUnavailable as error:
                        raise job_not_recorded(upstream.name, error) from None
            except WorkMayExist as failure:
                claim.keep_failure(failure)
                raise
        finally:
            await booking.release()
        if provider is not None:
            answer = provider_calls.client_answer(answer)
        claim.keep(answer.status, answer.headers.get("content-type"), answer.body)
        return passthrough(answer)


def refuse_untranslated(upstream: Upstream, kind: str) -> None:
    """A translated provider carries create, retrieve, content, delete and list; nothing else yet."""
    if kind != "create":
        raise RelayError(
            400,
            f"A {kind} is not supported on {upstream.account.type} accounts, which serve create, retrieve, content, delete and list only.",
            code="unsupported_for_account_type",
        )


def same_provider(provider: Provider, booking: Booking) -> Admit:
    """Failover stays with accounts of the same provider: the translated request suits no other."""

    async def admit(candidate: Upstream) -> bool:
        return provider_for(candidate.account.type) is provider and await booking.admit(candidate)

    return admit


def translated_create(
    state: RelayState, request: Request, provider: Provider, *, route: str, key: KeyRecord, body: bytes
) -> Callable[[Upstream], Awaitable[upstream_http.Answer]]:
    async def send(upstream: Upstream) -> upstream_http.Answer:
        return await provider_calls.create(state, upstream, request, provider, route=route, key=key, body=body)

    return send


def job_not_recorded(account: str, error: StoreUnavailable) -> WorkMayExist:
    """The upstream took the job but the database could not record it: a retry would start a second one."""
    log.warning("a job the upstream accepted was not recorded: %s", error, extra=log_fields(account=account))
    return WorkMayExist(
        503,
        "The upstream accepted this job, but the relay's database was unavailable, so the relay could not record it"
        " and cannot follow it. Do not repeat the request as it is: it would start the work again.",
        code="database_unavailable",
        headers={"x-should-retry": "false"},
    )


async def record_job(
    state: RelayState,
    body: bytes,
    *,
    account: str,
    key: KeyRecord,
    kind: str,
    source: Video | None,
    fields: dict[str, str],
    booking: Booking,
) -> None:
    resource = json_object(body)
    video_id = _text(resource.get("id")) if resource else None
    if resource is None or video_id is None:
        return  # an upstream that answers 2xx without a usable id gives nothing to follow up on
    seconds = _text(resource.get("seconds")) or fields.get("seconds")
    # An extension's `seconds` is the stitched total; what was rendered is the request's `seconds`.
    rendered = fields.get("seconds") if kind == "extension" else seconds
    now = time.time()
    progress = _json_number(resource.get("progress"))
    model = _text(resource.get("model")) or fields.get("model") or (source.model if source else None)
    size = _text(resource.get("size")) or fields.get("size") or (source.size if source else None)
    # Without seconds in the answer or the request, the contract's default is what was rendered.
    billable_seconds = _number(rendered)
    if billable_seconds is None:
        billable_seconds = booking.terms.video_seconds
    # The charge: this job's seconds at today's price, reserved until it completes or fails.
    usd = state.prices.cost(model or DEFAULT_MODEL, size or DEFAULT_SIZE, billable_seconds)
    holder = await state.db(
        state.store.insert_video,
        Video(
            id=video_id,
            account=account,
            key_name=key.name,
            kind=kind,
            source_video_id=source.id if source else None,
            model=model,
            seconds=seconds,
            billable_seconds=billable_seconds,
            size=size,
            status=_text(resource.get("status")) or "queued",
            progress=int(progress) if progress is not None else None,
            created_at=_json_number(resource.get("created_at")) or now,
            recorded_at=now,
            finished_at=None,
            deleted_at=None,
            resource=json.dumps(resource),
            usd=usd,
            charge_state="reserved",
            charged_at=booking.now,
        ),
        reservation_id=booking.reservation_id,
    )
    booking.taken()
    if (holder.account, holder.key_name) != (account, key.name):
        # Two upstreams (or a misbehaving one) gave out the same id: the first holder keeps it, and
        # this caller could never reach the new job under it.
        log.warning("upstream video id already held", extra=log_fields(account=account, holder_account=holder.account, route=kind))
        raise WorkMayExist(
            502,
            f"The upstream answered with a video id ('{video_id}') that this relay already holds for other work,"
            " so the new job cannot be followed through the relay. An operator should check the accounts' base_api.",
            code="upstream_id_conflict",
            headers={"x-should-retry": "false"},
        )


async def create_video(request: Request) -> Response:
    return await new_job(request, route="videos.create", kind="create", upstream_path="/videos")


async def remix_video(request: Request) -> Response:
    state = relay_state(request)
    key = await authorize(request, state, time.time())
    video_id = request.path_params["video_id"]
    source = await owned_video(state, key, video_id)
    return await new_job(
        request, route="videos.remix", kind="remix", upstream_path=f"/videos/{quote(video_id)}/remix", source=source, key=key
    )


async def edit_video(request: Request) -> Response:
    return await new_job(request, route="videos.edit", kind="edit", upstream_path="/videos/edits")


async def extend_video(request: Request) -> Response:
    return await new_job(request, route="videos.extend", kind="extension", upstream_path="/videos/extensions")


# -- follow-ups on existing jobs ------------------------------------------------------------------------


async def followup(request: Request) -> tuple[RelayState, KeyRecord, Video, Upstream]:
    """The caller's key, its video named in the path, and the account that owns it."""
    state = relay_state(request)
    key = await authorize(request, state, time.time())
    video = await owned_video(state, key, request.path_params["video_id"])
    return state, key, video, await owner_account(state, video.account)


async def retrieve_video(request: Request) -> Response:
    state, key, video, upstream = await followup(request)
    provider = provider_for(upstream.account.type)
    if provider is None:
        answer = await fetch(
            state, upstream, request, route="videos.retrieve", key=key, method="GET", path=f"/videos/{quote(video.id)}", body=None
        )
        for_account = answer
    else:
        for_account, answer, _ = await provider_calls.poll(
            state, upstream, request, provider, route="videos.retrieve", key=key, video=video
        )
    finished = await refresh_status(state, video, answer) if answer.status == 200 else None
    await settle(state, upstream, key, request, "videos.retrieve", for_account, job_status=finished)
    extra = {}
    if "openai-poll-after-ms" not in answer.headers:
        extra["openai-poll-after-ms"] = str(state.settings.poll_after_ms)
    return passthrough(answer if provider is None else provider_calls.client_answer(answer), extra)


async def refresh_status(state: RelayState, video: Video, answer: upstream_http.Answer) -> str | None:
    """Store the job's latest status; count a completion or failure once. Returns the final status it reached."""
    resource = json_object(answer.body)
    status = _text(resource.get("status")) if resource else None
    if resource is None or status is None:
        return None
    progress = _json_number(resource.get("progress"))
    if video.status in TERMINAL_STATUSES or (status == video.status and progress == video.progress):
        return None  # nothing new: spare the database a write on every poll
    finished = await state.db(
        state.store.update_video,
        video.id,
        status=status,
        progress=int(progress) if progress is not None else None,
        expires_at=_json_number(resource.get("expires_at")),
        resource=json.dumps(resource),
        now=time.time(),
    )
    if not finished:
        return None
    state.metrics.videos.labels(status).inc()
    if status == "completed":
        # A label from a closed set: the price table's models. An upstream may echo any string.
        model = video.model if video.model and state.prices.knows(video.model) else "other"
        if video.billable_seconds:
            state.metrics.video_seconds.labels(video.account, video.key_name, model).inc(video.billable_seconds)
        if video.usd and video.charge_state == "reserved":
            state.metrics.cost_usd.labels(video.account, video.key_name, model).inc(video.usd)
    return status


async def delete_video(request: Request) -> Response:
    state, key, video, upstream = await followup(request)
    if provider_for(upstream.account.type) is not None:
        # Veo keeps no deletable video (its files expire by themselves): the relay's record is what goes.
        await state.db(state.store.mark_video_deleted, video.id, time.time())
        return JSONResponse({"id": video.id, "object": "video.deleted", "deleted": True})
    answer = await attempt(
        state, upstream, request, route="videos.delete", key=key, method="DELETE", path=f"/videos/{quote(video.id)}", body=None
    )
    resource = json_object(answer.body)
    # A 2xx that says `"deleted": false` kept the video: so does the relay.
    if answer.status < 300 and (resource is None or resource.get("deleted") is not False):
        await state.db(state.store.mark_video_deleted, video.id, time.time())
    return passthrough(answer)


async def video_content(request: Request) -> Response:
    """Stream the bytes: constant memory, the client's pace, the upstream released on disconnect."""
    state, key, video, upstream = await followup(request)
    variant = request.query_params.get("variant", "video")
    if variant not in CONTENT_VARIANTS:
        raise RelayError(
            400, f"Invalid variant '{shown(variant)}': choose from {', '.join(CONTENT_VARIANTS)}.", code="invalid_variant", param="variant"
        )
    path = f"/videos/{quote(video.id)}/content" + (f"?variant={variant}" if "variant" in request.query_params else "")
    route = "videos.content"
    provider = provider_for(upstream.account.type)
    if provider is None:
        opened = await open_attempt(state, upstream, request, route=route, key=key, method="GET", path=path, body=None, content=True)
    else:
        if variant != "video":
            raise RelayError(
                400, f"{upstream.account.type} accounts have no {variant} for a video.", code="invalid_variant", param="variant"
            )
        located = await provider_calls.open_content(state, upstream, request, provider, route=route, key=key, video=video)
        if isinstance(located, upstream_http.Answer):
            return passthrough(located)
        opened = located
    if opened.status >= 400 or is_redirect(opened.status):
        # Errors are small and carry cooldown hints: read them whole and treat them like any other.
        answer = await read_attempt(state, upstream, key, request, route, opened)
        await settle(state, upstream, key, request, route, answer)
        return passthrough(answer)
    if request.method == "HEAD":
        # The head is the whole answer: drop the upstream body instead of copying it nowhere.
        await opened.close()
        head = upstream_http.Answer(opened.status, opened.headers, b"", time.perf_counter() - opened.started)
        await settle(state, upstream, key, request, route, head)
        return Response(status_code=opened.status, headers=upstream_http.response_headers(opened.headers, content=True))
    latency = time.perf_counter() - opened.started
    note_attempt(request, upstream, route, "none", latency)
    note_upstream_quota(state, upstream, opened.headers, time.time())
    return DownloadResponse(
        _relay_bytes(state, upstream, key, request, route, opened, latency),
        status_code=opened.status,
        headers=upstream_http.response_headers(opened.headers, content=True),
        background=BackgroundTask(opened.close),
    )


class DownloadResponse(StreamingResponse):
    """Closes its body however the stream ends: a download cut while it waits on a slow client
    records its outcome there and then, not whenever the abandoned generator is collected."""

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            close = getattr(self.body_iterator, "aclose", None)
            if close is not None:
                with anyio.CancelScope(shield=True):
                    await close()


async def _relay_bytes(
    state: RelayState, upstream: Upstream, key: KeyRecord, request: Request, route: str, opened: upstream_http.Opened, latency: float
) -> AsyncIterator[bytes]:
    """The body as it comes. The attempt is recorded when it ends: a download the upstream breaks
    off is a failure of that account, though its status line said 200."""
    kind = "none"
    try:
        # Chunks pass on as they were read: re-slicing them would copy every byte again.
        async for chunk in opened.chunks():
            yield chunk
    except upstream_http.UpstreamFailure as failure:
        kind = failure.error_class
        note_broken_answer(request, upstream, route, failure)
        raise AnswerCutShort() from None
    except (asyncio.CancelledError, GeneratorExit):
        # Cut while waiting on the upstream (cancelled) or on the client (closed at its yield).
        if request_facts(request).cut_by_shutdown():
            kind = SHUTDOWN
        raise
    finally:
        # Also runs when the client went away and the response task was cancelled; a client leaving
        # is no failure of the upstream's, and for "none" the health note never waits.
        count_attempt(state, upstream, key, request, route, opened.status, kind, latency)
        await note_server_health(state, upstream, kind)
        await opened.close()


async def list_videos(request: Request) -> Response:
    """The caller's videos from the relay's own records (status as last seen), cursor-paged."""
    state = relay_state(request)
    key = await authorize(request, state, time.time())
    params = request.query_params
    limit = _limit(params.get("limit"))
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        raise RelayError(400, f"Invalid order '{shown(order)}': use 'asc' or 'desc'.", code="invalid_order", param="order")
    after = None
    if params.get("after"):
        after = await state.db(state.store.video, params["after"])
        if after is None or after.key_name != key.name:
            raise RelayError(400, f"Invalid 'after' cursor: no video '{shown(params['after'])}'.", code="invalid_cursor", param="after")
    videos, has_more = await state.db(state.store.list_videos, key.name, after=after, limit=limit, order=order)
    # A translated provider's record holds its job handle, which clients never see.
    data = [public_json(video.resource) for video in videos]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": videos[0].id if videos else None,
            "last_id": videos[-1].id if videos else None,
            "has_more": has_more,
        }
    )


def _limit(raw: str | None) -> int:
    if raw is None or raw == "":
        return 20
    # ASCII digits only: int() also reads '1_0' and other scripts' digits, which no client means.
    limit = int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 3 else 0
    if not 1 <= limit <= 100:
        raise RelayError(400, f"Invalid limit '{shown(raw)}': use a whole number from 1 to 100.", code="invalid_limit", param="limit")
    return limit


# -- characters ---------------------------------------------------------------------------------------


async def create_character(request: Request) -> Response:
    state = relay_state(request)
    now = state.clock()
    key = await authorize(request, state, now)
    body = await request_body(request, state)
    fields = body_fields(body, request.headers.get("content-type"), _FIELDS)
    session = session_id(fields, request.headers)
    route = "videos.character_create"
    upstream = await choose_account(state, session_hash(session) if session else None, now=now, route=route)
    upstream, answer = await attempt_with_failover(
        state, upstream, request, route=route, key=key, path="/videos/characters", body=body, may_fail_over=True
    )
    resource = json_object(answer.body) if answer.status < 300 else None
    character_id = _text(resource.get("id")) if resource else None
    if character_id is not None:
        await state.db(state.store.insert_character, character_id, account=upstream.name, key_name=key.name, now=time.time())
    return passthrough(answer)


async def retrieve_character(request: Request) -> Response:
    state = relay_state(request)
    key = await authorize(request, state, time.time())
    character_id = request.path_params["character_id"]
    owner = await state.db(state.store.character_owner, character_id)
    if owner is None or owner[1] != key.name:
        raise _not_found("character", character_id)
    upstream = await owner_account(state, owner[0])
    answer = await attempt(
        state,
        upstream,
        request,
        route="videos.character_retrieve",
        key=key,
        method="GET",
        path=f"/videos/characters/{quote(character_id)}",
        body=None,
    )
    return passthrough(answer)


# -- helpers ------------------------------------------------------------------------------------------


def _text(value: Any) -> str | None:
    """A non-empty string from upstream JSON that can be stored (no lone surrogates)."""
    return value if isinstance(value, str) and value and is_valid_unicode(value) else None


def _json_number(value: Any) -> float | None:
    """A JSON number as a float; anything else (booleans included) as None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return None
    return float(value)


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
