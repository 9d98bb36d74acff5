"""The Videos routes: new work goes where the scheduler says, follow-ups go to the owner account.

Job affinity: every job the relay starts is recorded (video id -> account, relay key, model,
seconds, size, status) before the client hears of it, so retrieve, content, remix, delete,
edits and extensions reach the account that holds the job, whatever the scheduler would pick.
Ownership: a key sees only its own videos; anything else is a 404, existence not revealed.
What differs per provider is behind relay.providers.operations; every upstream attempt goes
through the request's relay.attempts.Attempts.
"""

from __future__ import annotations

import json
import logging
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .attempts import Attempts, passthrough
from .body import body_fields, json_object
from .caller import authorize, caller_of, relay_state, request_body, request_route
from .errors import RelayError, WorkMayExist, shown
from .idempotency import idempotent
from .jobs.pacing import next_poll_delay, poll_hint_seconds
from .jobs.settle import json_number, settle_status, text_value
from .limits import job_terms
from .logs import fields as log_fields
from .offload import offload_requested, offloaded
from .paging import page_limit
from .pool import Upstream
from .pricing import DEFAULT_MODEL, DEFAULT_SIZE
from .providers import account_type, model_name, public_json
from .providers.operations import operations_for
from .providers.passthrough import PASS_THROUGH, content_request, forwarded, video_path
from .quota import Booking, book, require_served, unsupported
from .records import KeyRecord, StoreUnavailable, Video
from .scheduling import Admit, admit_any, choose_account, owner_account
from .sessions import SESSION_FIELD, session_hash, session_id
from .state import RelayState
from .upstream import Answer

log = logging.getLogger("relay.videos")

_FIELDS = frozenset({SESSION_FIELD, "model", "seconds", "size", "video[id]"})
# A character is made from an uploaded video only: no source video by id, so no guidance about one.
_CHARACTER_FIELDS = frozenset({SESSION_FIELD})
CONTENT_VARIANTS = ("video", "thumbnail", "spritesheet")


def _not_found(what: str, identifier: str) -> RelayError:
    return RelayError(404, f"No {what} found with id '{shown(identifier)}'.", code=f"{what}_not_found", param=f"{what}_id")


async def owned_video(state: RelayState, key: KeyRecord, video_id: str) -> Video:
    video = state.videos.get(video_id)
    if video is None:
        video = await state.db(state.store.video, video_id)
        if video is not None:
            state.videos.put(video)
    if video is None or video.key_name != key.name or video.deleted_at is not None:
        raise _not_found("video", video_id)
    return video


async def attempts_for(request: Request) -> tuple[Attempts, KeyRecord]:
    """The caller's key checked, and the request's attempts upstream ready to be made."""
    state = relay_state(request)
    key = await authorize(request, state)
    return Attempts(state, caller_of(request), key.name, request_route(request)), key


# -- new work ---------------------------------------------------------------------------------------


async def new_job(
    request: Request, *, kind: str, upstream_path: str, source: Video | None = None, caller: tuple[Attempts, KeyRecord] | None = None
) -> Response:
    """Create, remix, edit or extend: send it to the chosen account, record the new job, answer."""
    attempts, key = caller or await attempts_for(request)
    state = attempts.state
    body = await request_body(request, state)
    async with idempotent(state, request, key, attempts.route, body) as claim:
        if claim.replay is not None:
            return claim.replay
        fields = body_fields(body, request.headers.get("content-type"), _FIELDS)
        if source is None and kind in ("edit", "extension") and "video[id]" in fields:
            source = await owned_video(state, key, fields["video[id]"])
        state.store.refuse_while_down()
        terms = job_terms(fields, source, kind, state.prices)
        if source is None:
            await require_served(state, kind, terms.models)
        booking = await book(state, key, terms, state.clock())
        admit = carrying(kind, booking.admit)
        sticky = None
        try:
            if source is not None:
                upstream = await owner_account(state, source.account)
                await booking.admit_owner(upstream)
            else:
                session = session_id(fields, request.headers)
                sticky = session_hash(session) if session else None
                upstream = await choose_account(state, sticky, route=attempts.route, admit=admit)
            refuse_unsupported(upstream, kind)
            sent: dict[str, dict[str, Any] | None] = {}

            async def send(candidate: Upstream) -> Answer:
                result = await operations_for(candidate).create(
                    attempts, candidate, kind=kind, path=upstream_path, body=body, source=source
                )
                sent[candidate.name] = result.resource
                return result.answer

            try:
                # Work on an existing video must stay with its owner; everything else may move on, to
                # an account of any provider: each builds its own request from the client's.
                upstream, answer = await attempts.with_failover(upstream, send, may_fail_over=source is None, admit=admit, sticky=sticky)
                resource = sent.get(upstream.name)
                if answer.status < 300 and resource is not None:
                    try:
                        await record_job(
                            state, resource, account=upstream.name, key=key, kind=kind, source=source, fields=fields, booking=booking
                        )
                    except StoreUnavailable as error:
                        raise job_not_recorded(upstream.name, error) from None
            except WorkMayExist as failure:
                claim.keep_failure(failure)
                raise
        finally:
            await booking.release()
        claim.keep(answer.status, answer.headers.get("content-type"), answer.body)
        if answer.status >= 500:
            # An upstream's 5xx may come after it started the render: an SDK's own retries (two by
            # default) would start it again, as the relay itself does not.
            return passthrough(answer, {"x-should-retry": "false"})
        return passthrough(answer)


def is_followable_id(video_id: str) -> bool:
    """An id the relay can put in an upstream path as one segment, and a client in its own: no
    slash, no dot segment, nothing a log or a URL would read as something else. An upstream that
    answered `video_x/../../admin` had the job watcher poll another path with the credential."""
    return (
        0 < len(video_id) <= 512
        and video_id not in (".", "..")
        and video_id.isprintable()
        and not any(character in video_id for character in "/\\ ?#%")
    )


def refuse_unsupported(upstream: Upstream, kind: str) -> None:
    """Work the account's type cannot carry is the client's 400, naming the type."""
    if not account_type(upstream.account.type).carries(kind):
        raise unsupported(kind, [upstream.account.type])


def carrying(kind: str, admit: Admit) -> Admit:
    """Only accounts whose type carries this kind of work."""

    async def admitted(candidate: Upstream) -> bool:
        return account_type(candidate.account.type).carries(kind) and await admit(candidate)

    return admitted


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
    resource: dict[str, Any],
    *,
    account: str,
    key: KeyRecord,
    kind: str,
    source: Video | None,
    fields: dict[str, str],
    booking: Booking,
) -> None:
    video_id = text_value(resource.get("id"))
    if video_id is None:
        return  # an upstream that answers 2xx without a usable id gives nothing to follow up on
    if not is_followable_id(video_id):
        log.warning("upstream video id cannot be followed", extra=log_fields(account=account, route=kind))
        raise WorkMayExist(
            502,
            f"The upstream answered with a video id ('{shown(video_id)}') that cannot name a path segment, so the new job"
            " cannot be followed through the relay. An operator should check the account's base_api.",
            code="upstream_invalid_id",
            headers={"x-should-retry": "false"},
        )
    seconds = text_value(resource.get("seconds")) or fields.get("seconds")
    # An extension's `seconds` is the stitched total; what was rendered is the request's `seconds`.
    rendered = fields.get("seconds") if kind == "extension" else seconds
    now = state.clock()
    progress = json_number(resource.get("progress"))
    model = text_value(resource.get("model")) or fields.get("model") or (source.model if source else None)
    size = text_value(resource.get("size")) or fields.get("size") or (source.size if source else None)
    # Without seconds in the answer or the request, the contract's default is what was rendered.
    billable_seconds = _number(rendered)
    if billable_seconds is None:
        billable_seconds = booking.terms.video_seconds
    # The charge: this job's seconds at today's price, reserved until it completes or fails.
    usd = state.prices.cost(model_name(model or DEFAULT_MODEL), size or DEFAULT_SIZE, billable_seconds)
    holder = await state.db_now(
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
            status=text_value(resource.get("status")) or "queued",
            progress=int(progress) if progress is not None else None,
            created_at=json_number(resource.get("created_at")) or now,
            recorded_at=now,
            finished_at=None,
            deleted_at=None,
            resource=json.dumps(resource),
            usd=usd,
            charge_state="reserved",
            charged_at=booking.now,
            # The watcher's first poll, unless a client's retrieve brings news before.
            watch_next_at=now + next_poll_delay(state.settings, recorded_at=now, now=now, hint_seconds=None),
        ),
        reservation_id=booking.reservation_id,
        block_share=booking.block_share,
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
    return await new_job(request, kind="create", upstream_path="/videos")


async def remix_video(request: Request) -> Response:
    attempts, key = await attempts_for(request)
    video_id = request.path_params["video_id"]
    source = await owned_video(attempts.state, key, video_id)
    return await new_job(request, kind="remix", upstream_path=f"{video_path(source)}/remix", source=source, caller=(attempts, key))


async def edit_video(request: Request) -> Response:
    return await new_job(request, kind="edit", upstream_path="/videos/edits")


async def extend_video(request: Request) -> Response:
    return await new_job(request, kind="extension", upstream_path="/videos/extensions")


# -- follow-ups on existing jobs ------------------------------------------------------------------------


async def followup(request: Request) -> tuple[Attempts, Video, Upstream]:
    """The caller's attempts, its video named in the path, and the account that owns it."""
    attempts, key = await attempts_for(request)
    video = await owned_video(attempts.state, key, request.path_params["video_id"])
    return attempts, video, await owner_account(attempts.state, video.account)


async def retrieve_video(request: Request) -> Response:
    attempts, video, upstream = await followup(request)
    polled = await operations_for(upstream).retrieve(attempts, upstream, video)
    finished = None
    if polled.resource is not None:
        finished = await settle_status(attempts.state, video, polled.resource, hint_seconds=poll_hint_seconds(polled.answer.headers))
    await attempts.settle(upstream, polled.for_account, job_status=finished)
    extra = {}
    if "openai-poll-after-ms" not in polled.answer.headers:
        extra["openai-poll-after-ms"] = str(attempts.state.settings.poll_after_ms)
    return passthrough(polled.answer, extra)


async def forget_deleted(state: RelayState, video: Video) -> None:
    """Mark the video deleted, then forget it here (other processes do at their next refresh)."""
    await state.db_now(state.store.mark_video_deleted, video.id, state.clock())
    state.videos.forget(video.id)


async def delete_video(request: Request) -> Response:
    attempts, video, upstream = await followup(request)
    state = attempts.state
    answer = await operations_for(upstream).delete(attempts, upstream, video)
    if answer is None:
        await forget_deleted(state, video)
        return JSONResponse({"id": video.id, "object": "video.deleted", "deleted": True})
    resource = json_object(answer.body)
    # A 2xx that says `"deleted": false` kept the video: so does the relay.
    if answer.status < 300 and (resource is None or resource.get("deleted") is not False):
        await forget_deleted(state, video)
    return passthrough(answer)


async def video_content(request: Request) -> Response:
    """Stream the bytes: constant memory, the client's pace, the upstream released on disconnect."""
    attempts, video, upstream = await followup(request)
    variant = request.query_params.get("variant")
    if variant is not None and variant not in CONTENT_VARIANTS:
        raise RelayError(
            400, f"Invalid variant '{shown(variant)}': choose from {', '.join(CONTENT_VARIANTS)}.", code="invalid_variant", param="variant"
        )
    operations = operations_for(upstream)
    if operations is PASS_THROUGH and upstream.proxy is None and offload_requested(attempts.state.settings, request.headers):
        attempts.caller.facts.account = upstream.name
        return offloaded(content_request(attempts.caller.headers, upstream, video, variant), attempts.state.settings)
    opened = await operations.open_content(attempts, upstream, video, variant)
    if isinstance(opened, Answer):
        return passthrough(opened)
    return await attempts.stream(upstream, opened)


async def list_videos(request: Request) -> Response:
    """The caller's videos from the relay's own records (status as last seen), cursor-paged."""
    state = relay_state(request)
    key = await authorize(request, state)
    params = request.query_params
    limit = page_limit(params.get("limit"))
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


# -- characters ---------------------------------------------------------------------------------------


async def create_character(request: Request) -> Response:
    attempts, key = await attempts_for(request)
    state = attempts.state
    body = await request_body(request, state)
    fields = body_fields(body, request.headers.get("content-type"), _CHARACTER_FIELDS)
    session = session_id(fields, request.headers)
    await require_served(state, "character", ())
    admit = carrying("character", admit_any)
    sticky = session_hash(session) if session else None
    upstream = await choose_account(state, sticky, route=attempts.route, admit=admit)

    async def send(candidate: Upstream) -> Answer:
        return await attempts.send(candidate, forwarded(request.headers, candidate, "POST", "/videos/characters", body))

    upstream, answer = await attempts.with_failover(upstream, send, may_fail_over=True, admit=admit, sticky=sticky)
    resource = json_object(answer.body) if answer.status < 300 else None
    character_id = text_value(resource.get("id")) if resource else None
    if character_id is not None:
        await state.db_now(state.store.insert_character, character_id, account=upstream.name, key_name=key.name, now=state.clock())
    return passthrough(answer)


async def retrieve_character(request: Request) -> Response:
    attempts, key = await attempts_for(request)
    state = attempts.state
    character_id = request.path_params["character_id"]
    owner = await state.db(state.store.character_owner, character_id)
    if owner is None or owner[1] != key.name:
        raise _not_found("character", character_id)
    upstream = await owner_account(state, owner[0])
    path = f"/videos/characters/{quote(character_id, safe='')}"
    answer = await attempts.send(upstream, forwarded(request.headers, upstream, "GET", path, None))
    return passthrough(answer)


# -- helpers ------------------------------------------------------------------------------------------


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
