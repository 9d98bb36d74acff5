"""The OpenAI Videos contract (``/v1``, ``/backend-api`` and the root), and the mounts that reuse it (Azure).

Jobs go from ``queued`` through ``in_progress`` to ``completed`` over the sandbox's
``complete_after_seconds`` (never, with ``[never]`` in the prompt); content is the sample MP4 (padded by ``[bytes=N]`` in the prompt or the
sandbox's ``content_bytes``); ``[fail]`` in the prompt ends a job ``failed``. Jobs are scoped per
credential, so two accounts never see each other's videos.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from .content import content_etag, marked_content_length, padded_head, serve_bytes
from .errors import ApiError, RouteError, error_envelope, openai_route_error
from .forms import (
    DEFAULT_MODEL,
    Fields,
    Upload,
    check_input_reference,
    choice_field,
    model_field,
    parse_content_type,
    prompt_field,
    read_fields,
    video_reference,
)
from .gate import provider_app
from .provider import Provider, bearer_credential, new_id
from .state import VARIANT_ASSETS, Character, ContractStore, RateBucket, SandboxState, VideoJob, sandbox_state

VIDEO_SIZES: Final = ("720x1280", "1280x720", "1024x1792", "1792x1024")
VIDEO_SECONDS: Final = ("4", "8", "12")
# The extension field's description allows longer segments than the shared VideoSeconds enum.
EXTENSION_SECONDS: Final = ("4", "8", "12", "16", "20")
DEFAULT_SIZE: Final = "720x1280"
DEFAULT_SECONDS: Final = "4"
MAX_CHARACTER_NAME_CHARS: Final = 80
ASSET_TTL_SECONDS: Final = 3600
QUEUED_FRACTION: Final = 0.2
LIST_LIMIT_DEFAULT: Final = 20
LIST_LIMIT_MAX: Final = 100
FAIL_MARKER: Final = "[fail]"
NEVER_MARKER: Final = "[never]"
RATE_LIMIT_REQUESTS: Final = 100
RATE_LIMIT_WINDOW_SECONDS: Final = 3600.0


# --------------------------------------------------------------------------- mounts


@dataclass(frozen=True)
class ContractMount:
    """One mount of the contract: the provider the gate sees, its jobs, and how it turns away a request without a credential."""

    provider: Provider
    store: ContractStore
    refuse_anonymous: Callable[[], Exception]
    route_error: RouteError = openai_route_error


def missing_bearer() -> ApiError:
    return ApiError(
        401,
        "You didn't provide an API key. You need to provide your API key in an "
        "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
    )


OPENAI: Final = Provider("openai", bearer_credential, lambda: {"x-request-id": new_id("req_")})


def contract_app(state: SandboxState, mount: ContractMount) -> Starlette:
    app = provider_app(state, mount.provider, contract_routes(), mount.route_error)
    app.state.mount = mount
    return app


def caller(request: Request) -> tuple[SandboxState, ContractStore, str]:
    """The sandbox, this mount's jobs and the caller's credential; refuses a request without one."""
    mount: ContractMount = request.app.state.mount
    token = mount.provider.credential(request.scope)
    if token is None:
        raise mount.refuse_anonymous()
    return sandbox_state(request), mount.store, token


def video_not_found(video_id: str) -> ApiError:
    return ApiError(404, f"Video with id '{video_id}' not found.", param="video_id")


# --------------------------------------------------------------------------- presets


def preset_reply(name: str, resets_in_seconds: float) -> dict[str, Any]:
    """How OpenAI words each reply preset (the rule listing shows these)."""
    match name:
        case "rate_limited":
            body = error_envelope("Rate limit reached", "rate_limit_error", None, "rate_limit_exceeded")
            body["error"]["resets_in_seconds"] = resets_in_seconds
            headers = {
                "retry-after": str(max(1, math.ceil(resets_in_seconds))),
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": go_duration(resets_in_seconds),
            }
            return {"status": 429, "body": body, "headers": headers}
        case "insufficient_quota":
            message = "You exceeded your current quota, please check your plan and billing details."
            return {"status": 429, "body": error_envelope(message, "insufficient_quota", None, "insufficient_quota")}
        case "unauthorized":
            message = "Incorrect API key provided."
            return {"status": 401, "body": error_envelope(message, "invalid_request_error", None, "invalid_api_key")}
        case "payment_required":
            message = "Payment required: the account has no remaining credit."
            return {"status": 402, "body": error_envelope(message, "billing_error", None, "payment_required")}
        case "server_error":
            message = "The server had an error while processing your request. Sorry about that!"
            return {"status": 500, "body": error_envelope(message, "server_error")}
    raise ValueError(f"no reply preset {name!r}")


# --------------------------------------------------------------------------- videos


def content_length_for(prompt: str, state: SandboxState) -> int | None:
    try:
        return marked_content_length(prompt, state)
    except ValueError as problem:
        raise ApiError(400, f"Invalid [bytes=N] marker in 'prompt': {problem}.", param="prompt") from None


def create_job(
    state: SandboxState,
    store: ContractStore,
    token: str,
    *,
    prompt: str,
    model: str,
    size: str,
    seconds: str,
    remixed_from: str | None = None,
) -> VideoJob:
    job = VideoJob(
        id=new_id("video_"),
        token=token,
        model=model,
        prompt=prompt,
        size=size,
        seconds=seconds,
        created_wall=time.time(),
        started=state.clock(),
        remixed_from_video_id=remixed_from,
        fails=FAIL_MARKER in prompt,
        content_bytes=content_length_for(prompt, state),
        never_finishes=NEVER_MARKER in prompt,
    )
    store.videos[job.id] = job
    return job


def job_phase(job: VideoJob, now: float, duration: float) -> tuple[str, int]:
    elapsed = now - job.started
    if job.never_finishes and elapsed >= duration * QUEUED_FRACTION:
        return "in_progress", 50
    if elapsed >= duration:
        return ("failed", 0) if job.fails else ("completed", 100)
    fraction = elapsed / duration
    if fraction < QUEUED_FRACTION:
        return "queued", 0
    return "in_progress", min(99, max(1, int(fraction * 100)))


def video_resource(job: VideoJob, status: str, progress: int, duration: float) -> dict[str, Any]:
    completed_at = int(job.created_wall + duration) if status == "completed" else None
    failure = {
        "code": "moderation_blocked",
        "message": "Your request was blocked by our moderation system.",
    }
    return {
        "id": job.id,
        "object": "video",
        "model": job.model,
        "status": status,
        "progress": progress,
        "created_at": int(job.created_wall),
        "completed_at": completed_at,
        "expires_at": None if completed_at is None else completed_at + ASSET_TTL_SECONDS,
        "prompt": job.prompt,
        "size": job.size,
        "seconds": job.seconds,
        "remixed_from_video_id": job.remixed_from_video_id,
        "error": failure if status == "failed" else None,
    }


def current_phase(state: SandboxState, job: VideoJob) -> tuple[str, int]:
    return job_phase(job, state.clock(), state.complete_after_seconds)


def current_resource(state: SandboxState, job: VideoJob) -> dict[str, Any]:
    status, progress = current_phase(state, job)
    return video_resource(job, status, progress, state.complete_after_seconds)


def find_job(store: ContractStore, token: str, video_id: str) -> VideoJob:
    job = store.videos.get(video_id)
    if job is None or job.token != token:
        raise video_not_found(video_id)
    return job


def completed_source(state: SandboxState, store: ContractStore, token: str, video_id: str, param: str) -> VideoJob:
    job = find_job(store, token, video_id)
    status, _ = current_phase(state, job)
    if status != "completed":
        raise ApiError(400, f"Video '{video_id}' is not completed (status: {status}).", param=param, code="invalid_state")
    return job


def go_duration(seconds: float) -> str:
    """Format like OpenAI's reset headers (Go durations): ``36s``, ``6m0s``, ``1h0m0s``."""
    if seconds < 60:
        return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"
    hours, rest = divmod(round(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def rate_limit_headers(state: SandboxState, store: ContractStore, token: str) -> dict[str, str]:
    """Advance the token's leaky bucket; the sandbox reports limits but never enforces them."""
    now = state.clock()
    refill_per_second = RATE_LIMIT_REQUESTS / RATE_LIMIT_WINDOW_SECONDS
    bucket = store.rate_buckets.setdefault(token, RateBucket(level=0.0, updated=now))
    bucket.level = max(0.0, bucket.level - (now - bucket.updated) * refill_per_second) + 1
    bucket.updated = now
    return {
        "x-ratelimit-limit-requests": str(RATE_LIMIT_REQUESTS),
        "x-ratelimit-remaining-requests": str(max(0, RATE_LIMIT_REQUESTS - math.ceil(bucket.level))),
        "x-ratelimit-reset-requests": go_duration(bucket.level / refill_per_second),
    }


def created(state: SandboxState, store: ContractStore, token: str, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=rate_limit_headers(state, store, token))


def created_job(state: SandboxState, store: ContractStore, token: str, job: VideoJob) -> JSONResponse:
    return created(state, store, token, video_resource(job, "queued", 0, state.complete_after_seconds))


async def create_video(request: Request) -> Response:
    state, store, token = caller(request)
    fields = await read_fields(request)
    prompt = prompt_field(fields)
    check_input_reference(fields)
    job = create_job(
        state,
        store,
        token,
        prompt=prompt,
        model=model_field(fields),
        size=choice_field(fields, "size", DEFAULT_SIZE, VIDEO_SIZES),
        seconds=choice_field(fields, "seconds", DEFAULT_SECONDS, VIDEO_SECONDS),
    )
    return created_job(state, store, token, job)


async def retrieve_video(request: Request) -> Response:
    state, store, token = caller(request)
    job = find_job(store, token, request.path_params["video_id"])
    return JSONResponse(current_resource(state, job))


async def delete_video(request: Request) -> Response:
    state, store, token = caller(request)
    job = find_job(store, token, request.path_params["video_id"])
    del store.videos[job.id]
    return JSONResponse({"id": job.id, "object": "video.deleted", "deleted": True})


def list_limit(raw: str | None) -> int:
    if raw is None:
        return LIST_LIMIT_DEFAULT
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= LIST_LIMIT_MAX:
        raise ApiError(
            400,
            f"Invalid 'limit': expected an integer between 1 and {LIST_LIMIT_MAX}.",
            param="limit",
            code="invalid_value",
        )
    return int(raw)


def jobs_after(jobs: list[VideoJob], after: str | None) -> list[VideoJob]:
    if not after:
        return jobs
    for index, job in enumerate(jobs):
        if job.id == after:
            return jobs[index + 1 :]
    raise ApiError(400, f"Invalid 'after': no video with id '{after}'.", param="after", code="invalid_value")


async def list_videos(request: Request) -> Response:
    state, store, token = caller(request)
    query = request.query_params
    limit = list_limit(query.get("limit"))
    order = choice_field(dict(query), "order", "desc", ("asc", "desc"))
    jobs = [job for job in store.videos.values() if job.token == token]
    if order == "desc":
        jobs.reverse()
    remaining = jobs_after(jobs, query.get("after"))
    page = [current_resource(state, job) for job in remaining[:limit]]
    return JSONResponse(
        {
            "object": "list",
            "data": page,
            "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None,
            "has_more": len(remaining) > limit,
        }
    )


async def remix_video(request: Request) -> Response:
    state, store, token = caller(request)
    source = completed_source(state, store, token, request.path_params["video_id"], "video_id")
    prompt = prompt_field(await read_fields(request))
    job = create_job(
        state,
        store,
        token,
        prompt=prompt,
        model=source.model,
        size=source.size,
        seconds=source.seconds,
        remixed_from=source.id,
    )
    return created_job(state, store, token, job)


def source_job(state: SandboxState, store: ContractStore, token: str, fields: Fields) -> VideoJob | None:
    """The referenced completed video, or None when the client uploaded the source file."""
    reference = video_reference(fields)
    if isinstance(reference, Upload):
        return None
    return completed_source(state, store, token, reference, "video")


async def edit_video(request: Request) -> Response:
    state, store, token = caller(request)
    fields = await read_fields(request)
    prompt = prompt_field(fields)
    source = source_job(state, store, token, fields)
    job = create_job(
        state,
        store,
        token,
        prompt=prompt,
        model=source.model if source else DEFAULT_MODEL,
        size=source.size if source else DEFAULT_SIZE,
        seconds=source.seconds if source else DEFAULT_SECONDS,
    )
    return created_job(state, store, token, job)


async def extend_video(request: Request) -> Response:
    state, store, token = caller(request)
    fields = await read_fields(request)
    prompt = prompt_field(fields)
    source = source_job(state, store, token, fields)
    segment = choice_field(fields, "seconds", None, EXTENSION_SECONDS)
    # An uploaded source is not probed (no ffmpeg at runtime), so only the new segment counts.
    stitched = int(segment) + (int(source.seconds) if source else 0)
    job = create_job(
        state,
        store,
        token,
        prompt=prompt,
        model=source.model if source else DEFAULT_MODEL,
        size=source.size if source else DEFAULT_SIZE,
        seconds=str(stitched),
    )
    return created_job(state, store, token, job)


# --------------------------------------------------------------------------- characters


def character_resource(character: Character) -> dict[str, Any]:
    return {"id": character.id, "name": character.name, "created_at": character.created_at}


def character_name(fields: Fields) -> str:
    name = fields.get("name")
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_CHARACTER_NAME_CHARS:
        raise ApiError(
            400,
            f"Invalid 'name': expected a string of 1 to {MAX_CHARACTER_NAME_CHARS} characters.",
            param="name",
        )
    return name


async def create_character(request: Request) -> Response:
    state, store, token = caller(request)
    media_type, _ = parse_content_type(request.headers.get("content-type"))
    if media_type != "multipart/form-data":
        raise ApiError(400, "Characters are created from a multipart/form-data upload.")
    fields = await read_fields(request)
    if not isinstance(fields.get("video"), Upload):
        raise ApiError(400, "Missing required parameter: 'video' (a video file).", param="video", code="missing_required_parameter")
    character = Character(new_id("char_"), token, character_name(fields), int(time.time()))
    store.characters[character.id] = character
    return created(state, store, token, character_resource(character))


async def retrieve_character(request: Request) -> Response:
    state, store, token = caller(request)
    character_id = request.path_params["character_id"]
    character = store.characters.get(character_id)
    if character is None or character.token != token:
        raise ApiError(404, f"Character with id '{character_id}' not found.", param="character_id")
    return JSONResponse(character_resource(character))


# --------------------------------------------------------------------------- content


def range_refusal(length: int) -> Response:
    body = error_envelope(f"Requested range not satisfiable (length {length}).", "invalid_request_error")
    return JSONResponse(body, status_code=416)


async def video_content(request: Request) -> Response:
    state, store, token = caller(request)
    variant = request.query_params.get("variant", "video")
    if variant not in VARIANT_ASSETS:
        raise ApiError(
            400,
            f"Invalid value for 'variant': '{variant}'. Supported values are: {', '.join(VARIANT_ASSETS)}.",
            param="variant",
            code="invalid_value",
        )
    job = find_job(store, token, request.path_params["video_id"])
    status, _ = current_phase(state, job)
    if status != "completed":
        raise ApiError(404, f"Video '{job.id}' has no downloadable content (status: {status}).")
    asset = state.assets[variant]
    length = job.content_bytes if variant == "video" and job.content_bytes else len(asset.data)
    head = padded_head(asset.data, length) if variant == "video" else asset.data
    return serve_bytes(request, state, head, length, asset.media_type, content_etag(job.id, variant, length), range_refusal)


def contract_routes() -> list[BaseRoute]:
    # Literal /videos/characters and /videos/edits must precede the /videos/{video_id} patterns.
    return [
        Route("/videos", create_video, methods=["POST"]),
        Route("/videos", list_videos, methods=["GET"]),
        Route("/videos/characters", create_character, methods=["POST"]),
        Route("/videos/characters/{character_id}", retrieve_character, methods=["GET"]),
        Route("/videos/edits", edit_video, methods=["POST"]),
        Route("/videos/extensions", extend_video, methods=["POST"]),
        Route("/videos/{video_id}", retrieve_video, methods=["GET"]),
        Route("/videos/{video_id}", delete_video, methods=["DELETE"]),
        Route("/videos/{video_id}/content", video_content, methods=["GET"]),
        Route("/videos/{video_id}/remix", remix_video, methods=["POST"]),
    ]
