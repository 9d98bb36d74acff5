"""Sandbox upstream: a local emulator of the OpenAI Videos API contract with switchable faults.

Tests, the README demo and benchmarks point upstream accounts at it instead of a real provider.
The contract is served under ``/v1``, ``/backend-api`` and the root. A control API under
``/_sandbox`` (no auth) injects faults and exposes every request the contract routes received:

* ``POST /_sandbox/faults`` adds a rule (or a ``preset``), ``GET`` lists, ``DELETE`` clears;
  ``DELETE /_sandbox/faults/{id}`` removes one rule.
* ``GET /_sandbox/requests`` lists recorded requests (newest last, the last 1000), ``DELETE``
  clears them.
* ``GET /_sandbox/stats``: ``requests_total`` (contract requests received since start; never
  reset, so a long run can be counted past the request log's cap), ``open_streams`` and
  ``content_bytes_total`` (content bytes handed to the server since start).

A rule matches on ``method``, ``path_contains`` and ``token``; ``probability`` (0..1, default 1)
makes a matching rule apply to only that share of requests, at random (``--seed`` makes the draw
repeatable). A rule that does not apply consumes none of its ``times`` and lets later rules try.

Fault actions, as a client sees them:

* ``respond``: the rule's canned response (``status``/``body``/``raw_body``/``headers``), or,
  with ``status: null``, the real response with the rule's headers added.
* ``reset``: the TCP connection is aborted with an RST before any response byte is sent; httpx
  raises ``httpx.ReadError``. In-process transports (``httpx.ASGITransport``, ``TestClient``) have
  no socket, so the app raises ``httpx.ReadError`` itself.
* ``slow_body``: status and headers (including ``content-length``) are sent at once, then the body
  arrives ``chunk_bytes`` at a time, each chunk preceded by ``chunk_interval_seconds`` of silence.

``delay_seconds`` always delays the response headers.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import dataclasses
import email.message
import email.parser
import email.utils
import hashlib
import itertools
import json
import math
import random
import re
import secrets
import socket
import struct
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, TypedDict, Unpack

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, ExceptionHandler, Message, Receive, Scope, Send

ASSETS_DIR: Final = Path(__file__).with_name("sandbox_assets")
VARIANT_ASSETS: Final = MappingProxyType(
    {
        "video": ("sample.mp4", "video/mp4"),
        "thumbnail": ("thumbnail.webp", "image/webp"),
        "spritesheet": ("spritesheet.jpg", "image/jpeg"),
    }
)
VIDEO_SIZES: Final = ("720x1280", "1280x720", "1024x1792", "1792x1024")
VIDEO_SECONDS: Final = ("4", "8", "12")
# The extension field's description allows longer segments than the shared VideoSeconds enum.
EXTENSION_SECONDS: Final = ("4", "8", "12", "16", "20")
DEFAULT_MODEL: Final = "sora-2"
DEFAULT_SIZE: Final = "720x1280"
DEFAULT_SECONDS: Final = "4"
MAX_PROMPT_CHARS: Final = 32000
MAX_CHARACTER_NAME_CHARS: Final = 80
ASSET_TTL_SECONDS: Final = 3600
QUEUED_FRACTION: Final = 0.2
LIST_LIMIT_DEFAULT: Final = 20
LIST_LIMIT_MAX: Final = 100

FAIL_MARKER: Final = "[fail]"
BYTES_MARKER: Final = re.compile(r"\[bytes=(\d+)\]")
FREE_BOX_HEADER_BYTES: Final = 8

STREAM_CHUNK_BYTES: Final = 64 * 1024
ZERO_CHUNK: Final = bytes(STREAM_CHUNK_BYTES)

REQUEST_LOG_CAP: Final = 1000
RATE_LIMIT_REQUESTS: Final = 100
RATE_LIMIT_WINDOW_SECONDS: Final = 3600.0

FAULT_ACTIONS: Final = ("respond", "reset", "slow_body")
FAULT_RULE_KEYS: Final = frozenset(
    {
        "status",
        "body",
        "raw_body",
        "content_type",
        "headers",
        "times",
        "token",
        "method",
        "path_contains",
        "delay_seconds",
        "action",
        "chunk_bytes",
        "chunk_interval_seconds",
        "probability",
    }
)
PRESETS: Final = (
    "rate_limited",
    "insufficient_quota",
    "unauthorized",
    "payment_required",
    "server_error",
    "slow",
)
FAIL_ALIASES: Final = MappingProxyType({"429": "rate_limited", "401": "unauthorized", "402": "payment_required", "500": "server_error"})
DEFAULT_RESETS_IN_SECONDS: Final = 7
DEFAULT_SLOW_SECONDS: Final = 3.0
DEFAULT_TRICKLE_BYTES: Final = 64
DEFAULT_TRICKLE_INTERVAL_SECONDS: Final = 0.5

TRANSPORT_SCOPE_KEY: Final = "relay.sandbox.transport"
RANGE_HEADER: Final = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII | re.IGNORECASE)
BRACKET_KEY: Final = re.compile(r"([^\[\]]+)\[([^\[\]]+)\]")

Fields = dict[str, Any]


class SandboxOptions(TypedDict, total=False):
    complete_after_seconds: float
    fail: str | None
    content_bytes: int | None
    seed: int | None


# --------------------------------------------------------------------------- state


@dataclass(frozen=True)
class Asset:
    data: bytes
    media_type: str


@dataclass
class VideoJob:
    id: str
    token: str
    model: str
    prompt: str
    size: str
    seconds: str
    created_wall: float
    started: float
    remixed_from_video_id: str | None
    fails: bool
    content_bytes: int | None


@dataclass(frozen=True)
class Character:
    id: str
    token: str
    name: str
    created_at: int


@dataclass
class FaultRule:
    id: str
    action: str
    status: int | None
    body: Any
    raw_body: str | None
    content_type: str
    headers: dict[str, str]
    times: int | None
    remaining: int | None
    token: str | None
    method: str | None
    path_contains: str | None
    delay_seconds: float
    chunk_bytes: int
    chunk_interval_seconds: float
    preset: str | None
    probability: float = 1.0
    hits: int = 0


@dataclass
class RateBucket:
    level: float
    updated: float


@dataclass
class SandboxState:
    complete_after_seconds: float
    content_bytes: int | None
    clock: Callable[[], float]
    assets: Mapping[str, Asset]
    videos: dict[str, VideoJob] = field(default_factory=dict)
    characters: dict[str, Character] = field(default_factory=dict)
    faults: list[FaultRule] = field(default_factory=list)
    requests: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=REQUEST_LOG_CAP))
    rate_buckets: dict[str, RateBucket] = field(default_factory=dict)
    fault_ids: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    # Content bodies being sent right now: tests watch it drop to 0 when a client goes away.
    open_streams: int = 0
    # Contract requests received since start; unlike `requests`, never capped or cleared.
    requests_total: int = 0
    # Content bytes handed to the server since start: shows whether a client's download was read.
    content_bytes_total: int = 0
    # Draws for rules with a `probability`.
    rng: random.Random = field(default_factory=random.Random)


def load_assets() -> Mapping[str, Asset]:
    return MappingProxyType(
        {variant: Asset((ASSETS_DIR / filename).read_bytes(), media_type) for variant, (filename, media_type) in VARIANT_ASSETS.items()}
    )


def sandbox_state(request: Request) -> SandboxState:
    state: SandboxState = request.app.state.sandbox
    return state


# --------------------------------------------------------------------------- errors


class ApiError(Exception):
    """An error answered with the OpenAI error envelope."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        error_type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.error_type = error_type


def error_envelope(message: str, error_type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


async def api_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, ApiError):
        raise exc
    body = error_envelope(exc.message, exc.error_type, exc.param, exc.code)
    return JSONResponse(body, status_code=exc.status)


async def http_error_handler(request: Request, exc: Exception) -> Response:
    if not isinstance(exc, HTTPException):
        raise exc
    label = "Invalid URL" if exc.status_code == 404 else exc.detail
    message = f"{label} ({request.method} {request.url.path})"
    body = error_envelope(message, "invalid_request_error")
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)


def exception_handlers() -> dict[type[Exception], ExceptionHandler]:
    return {ApiError: api_error_handler, HTTPException: http_error_handler}


def video_not_found(video_id: str) -> ApiError:
    return ApiError(404, f"Video with id '{video_id}' not found.", param="video_id")


# --------------------------------------------------------------------------- request parsing


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def bearer_token(authorization: str | None) -> str | None:
    if authorization is None:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    token = credentials.strip()
    return token if scheme.lower() == "bearer" and token else None


def require_token(request: Request) -> str:
    token = bearer_token(request.headers.get("authorization"))
    if token is None:
        raise ApiError(
            401,
            "You didn't provide an API key. You need to provide your API key in an "
            "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
        )
    return token


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "", {}
    header = email.message.Message()
    header["content-type"] = value
    params = header.get_params(failobj=[])[1:]
    return header.get_content_type(), {key.lower(): email.utils.collapse_rfc2231_value(raw) for key, raw in params}


def malformed_multipart(detail: str) -> ApiError:
    return ApiError(400, f"Malformed multipart/form-data body: {detail}.")


def parse_multipart(body: bytes, boundary: str | None) -> list[FormPart]:
    if not boundary or not boundary.isascii():
        raise malformed_multipart("missing or invalid boundary parameter")
    # Prepending CRLF lets the first delimiter be found like every later one.
    segments = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii"))
    parts: list[FormPart] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            return parts
        parts.append(parse_form_part(segment))
    raise malformed_multipart("missing closing boundary")


def parse_form_part(segment: bytes) -> FormPart:
    line_end = segment.find(b"\r\n")
    if line_end < 0 or segment[:line_end].strip(b" \t"):
        raise malformed_multipart("garbage after boundary")
    head, separator, data = segment[line_end:].partition(b"\r\n\r\n")
    if not separator:
        raise malformed_multipart("part without a header terminator")
    headers = email.parser.Parser().parsestr(head.lstrip(b"\r\n").decode("utf-8", "replace"), headersonly=True)
    name = headers.get_param("name", header="content-disposition")
    if not name:
        raise malformed_multipart("part without a form-data name")
    return FormPart(
        name=email.utils.collapse_rfc2231_value(name),
        filename=headers.get_filename(),
        content_type=headers.get("content-type"),
        data=data,
    )


def form_value(part: FormPart) -> str | Upload:
    if part.filename is not None:
        media_type = part.content_type or "application/octet-stream"
        return Upload(part.filename, media_type, part.data)
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"Form field '{part.name}' is not valid UTF-8.", param=part.name) from None


def form_fields(parts: Sequence[FormPart]) -> Fields:
    """Fold multipart parts into the JSON shape: ``video[id]`` becomes ``{"video": {"id": ...}}``."""
    fields: Fields = {}
    for part in parts:
        value = form_value(part)
        match = BRACKET_KEY.fullmatch(part.name)
        if match is None:
            fields[part.name] = value
            continue
        outer, inner = match.groups()
        nested = fields.setdefault(outer, {})
        if not isinstance(nested, dict):
            raise ApiError(400, f"Conflicting form fields for '{outer}'.", param=outer)
        nested[inner] = value
    return fields


def parse_json_object(body: bytes) -> Fields:
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON payload, but what was sent was not valid JSON.",
        ) from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return payload


async def read_fields(request: Request) -> Fields:
    body = await request.body()
    media_type, params = parse_content_type(request.headers.get("content-type"))
    if media_type == "multipart/form-data":
        return form_fields(parse_multipart(body, params.get("boundary")))
    if media_type in ("", "application/json"):
        return parse_json_object(body)
    raise ApiError(
        400,
        f"Unsupported content type '{media_type}'. Use application/json or multipart/form-data.",
    )


def text_field(fields: Fields, name: str, default: str) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type")
    return value


def choice_field(fields: Fields, name: str, default: str | None, allowed: Sequence[str]) -> str:
    if default is None and name not in fields:
        raise ApiError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    value = text_field(fields, name, default or "")
    if value not in allowed:
        raise ApiError(
            400,
            f"Invalid value for '{name}': '{value}'. Supported values are: {', '.join(allowed)}.",
            param=name,
            code="invalid_value",
        )
    return value


def prompt_field(fields: Fields) -> str:
    prompt = text_field(fields, "prompt", "")
    if not prompt.strip():
        raise ApiError(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(
            400,
            f"Invalid 'prompt': string too long (maximum {MAX_PROMPT_CHARS} characters).",
            param="prompt",
            code="string_above_max_length",
        )
    return prompt


def model_field(fields: Fields) -> str:
    model = text_field(fields, "model", DEFAULT_MODEL)
    if not model:
        raise ApiError(400, "Invalid value for 'model': must not be empty.", param="model", code="invalid_value")
    return model


def check_input_reference(fields: Fields) -> None:
    reference = fields.get("input_reference")
    if reference is None or isinstance(reference, Upload):
        return
    keys = set(reference) if isinstance(reference, dict) else set()
    if len(keys & {"image_url", "file_id"}) != 1 or not all(isinstance(reference[key], str) and reference[key] for key in keys):
        raise ApiError(
            400,
            "Invalid 'input_reference': provide exactly one of 'image_url' or 'file_id', or upload a file.",
            param="input_reference",
        )


def video_reference(fields: Fields) -> str | Upload:
    video = fields.get("video")
    if isinstance(video, Upload):
        return video
    if isinstance(video, dict) and isinstance(video.get("id"), str) and video["id"]:
        return str(video["id"])
    raise ApiError(
        400,
        "Missing required parameter: 'video' (an object with an 'id', or a video file).",
        param="video",
        code="missing_required_parameter",
    )


# --------------------------------------------------------------------------- videos


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(16)}"


def padding_problem(total: int, asset_bytes: int) -> str | None:
    """Why ``total`` cannot be the size of the sample MP4 plus one ``free`` box, or None."""
    if total == asset_bytes or total >= asset_bytes + FREE_BOX_HEADER_BYTES:
        return None
    return f"content length must be {asset_bytes} (the bare sample) or at least {asset_bytes + FREE_BOX_HEADER_BYTES} bytes, got {total}"


def content_length_for(prompt: str, state: SandboxState) -> int | None:
    match = BYTES_MARKER.search(prompt)
    if match is None:
        return state.content_bytes
    total = int(match.group(1))
    problem = padding_problem(total, len(state.assets["video"].data))
    if problem is not None:
        raise ApiError(400, f"Invalid [bytes=N] marker in 'prompt': {problem}.", param="prompt")
    return total


def create_job(
    state: SandboxState,
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
    )
    state.videos[job.id] = job
    return job


def job_phase(job: VideoJob, now: float, duration: float) -> tuple[str, int]:
    elapsed = now - job.started
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


def find_job(state: SandboxState, token: str, video_id: str) -> VideoJob:
    job = state.videos.get(video_id)
    if job is None or job.token != token:
        raise video_not_found(video_id)
    return job


def completed_source(state: SandboxState, token: str, video_id: str, param: str) -> VideoJob:
    job = find_job(state, token, video_id)
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


def rate_limit_headers(state: SandboxState, token: str) -> dict[str, str]:
    """Advance the token's leaky bucket; the sandbox reports limits but never enforces them."""
    now = state.clock()
    refill_per_second = RATE_LIMIT_REQUESTS / RATE_LIMIT_WINDOW_SECONDS
    bucket = state.rate_buckets.setdefault(token, RateBucket(level=0.0, updated=now))
    bucket.level = max(0.0, bucket.level - (now - bucket.updated) * refill_per_second) + 1
    bucket.updated = now
    return {
        "x-ratelimit-limit-requests": str(RATE_LIMIT_REQUESTS),
        "x-ratelimit-remaining-requests": str(max(0, RATE_LIMIT_REQUESTS - math.ceil(bucket.level))),
        "x-ratelimit-reset-requests": go_duration(bucket.level / refill_per_second),
    }


def created(state: SandboxState, token: str, body: dict[str, Any]) -> JSONResponse:
    return JSONResponse(body, headers=rate_limit_headers(state, token))


def created_job(state: SandboxState, token: str, job: VideoJob) -> JSONResponse:
    return created(state, token, video_resource(job, "queued", 0, state.complete_after_seconds))


async def create_video(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    fields = await read_fields(request)
    prompt = prompt_field(fields)
    check_input_reference(fields)
    job = create_job(
        state,
        token,
        prompt=prompt,
        model=model_field(fields),
        size=choice_field(fields, "size", DEFAULT_SIZE, VIDEO_SIZES),
        seconds=choice_field(fields, "seconds", DEFAULT_SECONDS, VIDEO_SECONDS),
    )
    return created_job(state, token, job)


async def retrieve_video(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    job = find_job(state, token, request.path_params["video_id"])
    return JSONResponse(current_resource(state, job))


async def delete_video(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    job = find_job(state, token, request.path_params["video_id"])
    del state.videos[job.id]
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
    state, token = sandbox_state(request), require_token(request)
    query = request.query_params
    limit = list_limit(query.get("limit"))
    order = choice_field(dict(query), "order", "desc", ("asc", "desc"))
    jobs = [job for job in state.videos.values() if job.token == token]
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
    state, token = sandbox_state(request), require_token(request)
    source = completed_source(state, token, request.path_params["video_id"], "video_id")
    prompt = prompt_field(await read_fields(request))
    job = create_job(
        state,
        token,
        prompt=prompt,
        model=source.model,
        size=source.size,
        seconds=source.seconds,
        remixed_from=source.id,
    )
    return created_job(state, token, job)


def source_job(state: SandboxState, token: str, fields: Fields) -> VideoJob | None:
    """The referenced completed video, or None when the client uploaded the source file."""
    reference = video_reference(fields)
    if isinstance(reference, Upload):
        return None
    return completed_source(state, token, reference, "video")


async def edit_video(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    fields = await read_fields(request)
    prompt = prompt_field(fields)
    source = source_job(state, token, fields)
    job = create_job(
        state,
        token,
        prompt=prompt,
        model=source.model if source else DEFAULT_MODEL,
        size=source.size if source else DEFAULT_SIZE,
        seconds=source.seconds if source else DEFAULT_SECONDS,
    )
    return created_job(state, token, job)


async def extend_video(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    fields = await read_fields(request)
    prompt = prompt_field(fields)
    source = source_job(state, token, fields)
    segment = choice_field(fields, "seconds", None, EXTENSION_SECONDS)
    # An uploaded source is not probed (no ffmpeg at runtime), so only the new segment counts.
    stitched = int(segment) + (int(source.seconds) if source else 0)
    job = create_job(
        state,
        token,
        prompt=prompt,
        model=source.model if source else DEFAULT_MODEL,
        size=source.size if source else DEFAULT_SIZE,
        seconds=str(stitched),
    )
    return created_job(state, token, job)


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
    state, token = sandbox_state(request), require_token(request)
    media_type, _ = parse_content_type(request.headers.get("content-type"))
    if media_type != "multipart/form-data":
        raise ApiError(400, "Characters are created from a multipart/form-data upload.")
    fields = await read_fields(request)
    if not isinstance(fields.get("video"), Upload):
        raise ApiError(400, "Missing required parameter: 'video' (a video file).", param="video", code="missing_required_parameter")
    character = Character(new_id("char_"), token, character_name(fields), int(time.time()))
    state.characters[character.id] = character
    return created(state, token, character_resource(character))


async def retrieve_character(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    character_id = request.path_params["character_id"]
    character = state.characters.get(character_id)
    if character is None or character.token != token:
        raise ApiError(404, f"Character with id '{character_id}' not found.", param="character_id")
    return JSONResponse(character_resource(character))


# --------------------------------------------------------------------------- content


class RangeNotSatisfiable(Exception):
    pass


def free_box_header(box_size: int) -> bytes:
    if box_size <= 0xFFFFFFFF:
        return struct.pack(">I4s", box_size, b"free")
    return struct.pack(">I4sQ", 1, b"free", box_size)


def padded_head(asset: bytes, total: int) -> bytes:
    """The non-zero prefix of a ``total``-byte MP4: the sample plus a ``free`` box header."""
    if total == len(asset):
        return asset
    return asset + free_box_header(total - len(asset))


async def stream_span(
    state: SandboxState, head: bytes, start: int, stop: int, client_gone: Callable[[], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    """Yield bytes [start, stop) of ``head`` followed by zeros, without materialising the file.

    Stops when the client has gone: the server drops what is sent to a closed connection
    without a word, so without the check a vanished client's file would be generated to its end.
    """
    state.open_streams += 1
    try:
        position = start
        while position < stop and not await client_gone():
            end = min(stop, position + STREAM_CHUNK_BYTES)
            if position < len(head):
                end = min(end, len(head))
                chunk = head[position:end]
            else:
                chunk = ZERO_CHUNK if end - position == STREAM_CHUNK_BYTES else ZERO_CHUNK[: end - position]
            state.content_bytes_total += len(chunk)
            yield chunk
            position = end
    finally:
        state.open_streams -= 1


def requested_span(header: str | None, length: int) -> tuple[int, int] | None:
    """The [start, stop) span of a single ``bytes`` range; None means serve the whole body."""
    match = RANGE_HEADER.fullmatch(header) if header else None
    if match is None or not (match[1] or match[2]):
        return None  # RFC 9110: ignore ranges we do not understand, including multi-range.
    first, last = match[1], match[2]
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable
        return max(0, length - suffix), length
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        raise RangeNotSatisfiable
    return start, min(int(last) + 1, length) if last else length


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def content_etag(video_id: str, variant: str, length: int) -> str:
    digest = hashlib.sha256(f"{video_id}:{variant}:{length}".encode()).hexdigest()
    return f'"{digest[:32]}"'


def serve_bytes(request: Request, head: bytes, length: int, media_type: str, etag: str) -> Response:
    headers = {"accept-ranges": "bytes", "etag": etag}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    range_header = request.headers.get("range") if if_range in (None, etag) else None
    try:
        span = requested_span(range_header, length)
    except RangeNotSatisfiable:
        body = error_envelope(f"Requested range not satisfiable (length {length}).", "invalid_request_error")
        return JSONResponse(body, status_code=416, headers={**headers, "content-range": f"bytes */{length}"})
    start, stop = span or (0, length)
    headers["content-length"] = str(stop - start)
    if span is not None:
        headers["content-range"] = f"bytes {start}-{stop - 1}/{length}"
    status = 206 if span is not None else 200
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(stream_span(sandbox_state(request), head, start, stop, request.is_disconnected), status, headers, media_type)


async def video_content(request: Request) -> Response:
    state, token = sandbox_state(request), require_token(request)
    variant = request.query_params.get("variant", "video")
    if variant not in VARIANT_ASSETS:
        raise ApiError(
            400,
            f"Invalid value for 'variant': '{variant}'. Supported values are: {', '.join(VARIANT_ASSETS)}.",
            param="variant",
            code="invalid_value",
        )
    job = find_job(state, token, request.path_params["video_id"])
    status, _ = current_phase(state, job)
    if status != "completed":
        raise ApiError(404, f"Video '{job.id}' has no downloadable content (status: {status}).")
    asset = state.assets[variant]
    length = job.content_bytes if variant == "video" and job.content_bytes else len(asset.data)
    head = padded_head(asset.data, length) if variant == "video" else asset.data
    return serve_bytes(request, head, length, asset.media_type, content_etag(job.id, variant, length))


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


# --------------------------------------------------------------------------- fault rules


def rule_error(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, f"Invalid fault rule: {message}.", param=param)


def optional_string(spec: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is not None and not isinstance(value, str):
        raise rule_error(f"'{key}' must be a string or null", key)
    return value


def optional_int(spec: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise rule_error(f"'{key}' must be an integer >= {low}" + (f" and <= {high}" if high else ""), key)
    return value


def non_negative_number(spec: Mapping[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise rule_error(f"'{key}' must be a non-negative number", key)
    return float(value)


def header_map(value: Any, key: str = "headers") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(name, str) and isinstance(text, str) for name, text in value.items()):
        raise rule_error(f"'{key}' must be an object of string values", key)
    for name, text in value.items():
        if not name or "\r" in name + text or "\n" in name + text or not (name + text).isascii():
            raise rule_error(f"header {name!r} is not a valid ASCII header", key)
    return {name.lower(): text for name, text in value.items()}


def preset_defaults(name: str, resets_in_seconds: float) -> dict[str, Any]:
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
        case "slow":
            return {"delay_seconds": DEFAULT_SLOW_SECONDS}
    raise rule_error(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}", "preset")


def expand_preset(spec: Mapping[str, Any]) -> dict[str, Any]:
    name = spec["preset"]
    if not isinstance(name, str):
        raise rule_error("'preset' must be a string", "preset")
    options = {key: value for key, value in spec.items() if key != "preset"}
    if name == "rate_limited":
        resets = non_negative_number(options, "resets_in_seconds", DEFAULT_RESETS_IN_SECONDS)
        options.pop("resets_in_seconds", None)
        defaults = preset_defaults(name, int(resets) if resets.is_integer() else resets)
    else:
        defaults = preset_defaults(name, DEFAULT_RESETS_IN_SECONDS)
    headers = {**header_map(defaults.get("headers")), **header_map(options.get("headers"))}
    return {**defaults, **options, "headers": headers}


def build_rule(spec: Mapping[str, Any], rule_id: str) -> FaultRule:
    preset = spec.get("preset")
    if preset is not None:
        spec = expand_preset(spec)
    unknown = sorted(set(spec) - FAULT_RULE_KEYS - {"preset"})
    if unknown:
        raise rule_error(f"unknown keys {unknown}", unknown[0])
    action = optional_string(spec, "action", "respond")
    if action not in FAULT_ACTIONS:
        raise rule_error(f"'action' must be one of {', '.join(FAULT_ACTIONS)}", "action")
    raw_body = optional_string(spec, "raw_body")
    if raw_body is not None and spec.get("body") is not None:
        raise rule_error("give 'body' or 'raw_body', not both", "raw_body")
    times = optional_int(spec, "times", 1)
    method = optional_string(spec, "method")
    return FaultRule(
        id=rule_id,
        action=action,
        status=optional_int(spec, "status", 100, 599),
        body=spec.get("body"),
        raw_body=raw_body,
        content_type=optional_string(spec, "content_type", "application/json") or "application/json",
        headers=header_map(spec.get("headers")),
        times=times,
        remaining=times,
        token=optional_string(spec, "token"),
        method=method.upper() if method else None,
        path_contains=optional_string(spec, "path_contains"),
        delay_seconds=non_negative_number(spec, "delay_seconds", 0.0),
        chunk_bytes=optional_int(spec, "chunk_bytes", 1) or DEFAULT_TRICKLE_BYTES,
        chunk_interval_seconds=non_negative_number(spec, "chunk_interval_seconds", DEFAULT_TRICKLE_INTERVAL_SECONDS),
        preset=preset,
        probability=probability_field(spec),
    )


def probability_field(spec: Mapping[str, Any]) -> float:
    value = spec.get("probability", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise rule_error("'probability' must be a number from 0 to 1", "probability")
    return float(value)


def add_rule(state: SandboxState, spec: Mapping[str, Any]) -> FaultRule:
    rule = build_rule(spec, f"fault_{next(state.fault_ids)}")
    state.faults.append(rule)
    return rule


def rule_matches(rule: FaultRule, method: str, path: str, token: str | None) -> bool:
    return (
        (rule.method is None or rule.method == method.upper())
        and (rule.path_contains is None or rule.path_contains in path)
        and (rule.token is None or rule.token == token)
    )


def rule_applies(rule: FaultRule, rng: random.Random) -> bool:
    """Draw for a rule with a probability below 1 (a rule at 1 draws nothing)."""
    return rule.probability >= 1 or rng.random() < rule.probability


def take_matching_rule(rules: list[FaultRule], method: str, path: str, token: str | None, rng: random.Random) -> FaultRule | None:
    """The first rule that matches and applies; only that rule's `times` and `hits` change."""
    for rule in rules:
        if rule.remaining != 0 and rule_matches(rule, method, path, token) and rule_applies(rule, rng):
            if rule.remaining is not None:
                rule.remaining -= 1
            rule.hits += 1
            return rule
    return None


def canned_response(rule: FaultRule, status: int) -> Response:
    if rule.raw_body is not None:
        body = rule.raw_body.encode("utf-8")
    elif rule.body is not None:
        body = json.dumps(rule.body).encode("utf-8")
    else:
        body = b""
    # Set content-type as a header so Starlette does not append a charset to it.
    return Response(body, status_code=status, headers={"content-type": rule.content_type})


# --------------------------------------------------------------------------- ASGI plumbing


async def read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replaying_receive(body: bytes, receive: Receive) -> Receive:
    pending = [body]

    async def replay() -> Message:
        if pending:
            return {"type": "http.request", "body": pending.pop(), "more_body": False}
        return await receive()

    return replay


def with_headers(send: Send, extra: Mapping[str, str]) -> Send:
    encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in extra.items()]
    replaced = {name for name, _ in encoded}

    async def send_with_headers(message: Message) -> None:
        if message["type"] == "http.response.start":
            kept = [(name, value) for name, value in message.get("headers", []) if name.lower() not in replaced]
            message = {**message, "headers": kept + encoded}
        await send(message)

    return send_with_headers


def trickling(send: Send, chunk_bytes: int, interval_seconds: float) -> Send:
    async def send_slowly(message: Message) -> None:
        if message["type"] != "http.response.body":
            await send(message)
            return
        body = message.get("body", b"")
        for offset in range(0, len(body), chunk_bytes):
            await asyncio.sleep(interval_seconds)
            await send({"type": "http.response.body", "body": body[offset : offset + chunk_bytes], "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)})

    return send_slowly


def server_transport(send: Send) -> asyncio.Transport | None:
    # uvicorn hands the app its per-request cycle's bound ``send``; the cycle owns the transport.
    # Duck-typed because uvloop's transports are not asyncio.Transport subclasses.
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    return transport if callable(getattr(transport, "abort", None)) else None


async def reset_connection(scope: Scope) -> None:
    transport: asyncio.Transport | None = scope.get(TRANSPORT_SCOPE_KEY)
    if transport is None:
        # No socket in-process: raise what httpx raises for a peer reset, so callers see one error type.
        raise httpx.ReadError("[Errno 104] Connection reset by peer (sandbox fault)")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):  # without SO_LINGER the close degrades to a FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let the server observe connection_lost before we return, or it would try to send a 500.
    await asyncio.sleep(0)


def request_record(scope: Scope, headers: list[tuple[str, str]], body: bytes, token: str | None) -> dict[str, Any]:
    return {
        "method": scope["method"],
        "path": scope["path"],
        "query": scope["query_string"].decode("latin-1"),
        "headers": [[name, value] for name, value in headers],
        "body_b64": base64.b64encode(body).decode("ascii"),
        "content_type": next((value for name, value in headers if name == "content-type"), None),
        "token": token,
    }


class ContractGate:
    """Front of the contract routes: records each request, applies fault rules, tags responses."""

    def __init__(self, app: ASGIApp, state: SandboxState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        body = await read_body(receive)
        headers = [(name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in scope["headers"]]
        token = bearer_token(next((value for name, value in headers if name == "authorization"), None))
        self.state.requests.append(request_record(scope, headers, body, token))
        self.state.requests_total += 1
        rule = take_matching_rule(self.state.faults, scope["method"], scope["path"], token, self.state.rng)
        extra_headers = {"x-request-id": new_id("req_"), **(rule.headers if rule else {})}
        send = with_headers(send, extra_headers)
        receive = replaying_receive(body, receive)
        if rule is None:
            await self.app(scope, receive, send)
        else:
            await apply_rule(rule, self.app, scope, receive, send)


async def apply_rule(rule: FaultRule, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
    if rule.delay_seconds > 0:
        await asyncio.sleep(rule.delay_seconds)
    if rule.action == "reset":
        await reset_connection(scope)
        return
    if rule.action == "slow_body":
        send = trickling(send, rule.chunk_bytes, rule.chunk_interval_seconds)
    responder = app if rule.status is None else canned_response(rule, rule.status)
    await responder(scope, receive, send)


class SandboxApp(Starlette):
    """Starlette app that exposes the server's transport to the ``reset`` fault action."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # Only the server's own ``send`` leads to the transport; Starlette wraps it further in.
            scope[TRANSPORT_SCOPE_KEY] = server_transport(send)
        await super().__call__(scope, receive, send)


# --------------------------------------------------------------------------- control API


async def read_control_json(request: Request) -> Fields:
    payload = parse_json_object(await request.body())
    if not payload:
        raise rule_error("expected a non-empty JSON object")
    return payload


async def post_fault(request: Request) -> Response:
    rule = add_rule(sandbox_state(request), await read_control_json(request))
    return JSONResponse({"id": rule.id})


async def list_faults(request: Request) -> Response:
    return JSONResponse([dataclasses.asdict(rule) for rule in sandbox_state(request).faults])


async def clear_faults(request: Request) -> Response:
    faults = sandbox_state(request).faults
    count = len(faults)
    faults.clear()
    return JSONResponse({"deleted": count})


async def delete_fault(request: Request) -> Response:
    faults = sandbox_state(request).faults
    rule_id = request.path_params["rule_id"]
    for rule in faults:
        if rule.id == rule_id:
            faults.remove(rule)
            return JSONResponse({"id": rule_id, "deleted": True})
    raise ApiError(404, f"Fault rule '{rule_id}' not found.", param="rule_id")


async def list_requests(request: Request) -> Response:
    return JSONResponse(list(sandbox_state(request).requests))


async def clear_requests(request: Request) -> Response:
    requests = sandbox_state(request).requests
    count = len(requests)
    requests.clear()
    return JSONResponse({"deleted": count})


async def stats(request: Request) -> Response:
    state = sandbox_state(request)
    return JSONResponse(
        {"open_streams": state.open_streams, "requests_total": state.requests_total, "content_bytes_total": state.content_bytes_total}
    )


def control_routes() -> list[BaseRoute]:
    return [
        Route("/stats", stats, methods=["GET"]),
        Route("/faults", post_fault, methods=["POST"]),
        Route("/faults", list_faults, methods=["GET"]),
        Route("/faults", clear_faults, methods=["DELETE"]),
        Route("/faults/{rule_id}", delete_fault, methods=["DELETE"]),
        Route("/requests", list_requests, methods=["GET"]),
        Route("/requests", clear_requests, methods=["DELETE"]),
    ]


# --------------------------------------------------------------------------- app factory and CLI


def fail_preset(fail: str) -> str:
    preset = FAIL_ALIASES.get(fail, fail)
    if preset not in PRESETS:
        choices = ", ".join([*FAIL_ALIASES, *PRESETS])
        raise ValueError(f"unknown fail mode {fail!r}; expected one of {choices}")
    return preset


def create_sandbox_app(
    *,
    complete_after_seconds: float = 1.0,
    fail: str | None = None,
    content_bytes: int | None = None,
    clock: Callable[[], float] = time.monotonic,
    seed: int | None = None,
) -> Starlette:
    """Build the sandbox upstream.

    ``fail`` (``429``/``401``/``402``/``500``/``slow`` or a preset name) installs that preset as
    an unlimited fault rule; ``content_bytes`` pads every video download to that many bytes;
    ``clock`` (monotonic seconds) drives job progress and lets tests advance time; ``seed``
    makes the draws of rules with a ``probability`` repeatable.
    """
    if complete_after_seconds < 0:
        raise ValueError("complete_after_seconds must be >= 0")
    assets = load_assets()
    if content_bytes is not None:
        problem = padding_problem(content_bytes, len(assets["video"].data))
        if problem is not None:
            raise ValueError(problem)
    state = SandboxState(complete_after_seconds, content_bytes, clock, assets, rng=random.Random(seed))
    if fail is not None:
        add_rule(state, {"preset": fail_preset(fail)})
    contract = Starlette(
        routes=contract_routes(),
        middleware=[Middleware(ContractGate, state=state)],
        exception_handlers=exception_handlers(),
    )
    contract.state.sandbox = state
    app = SandboxApp(
        routes=[
            Mount("/_sandbox", routes=control_routes()),
            Mount("/v1", app=contract),
            Mount("/backend-api", app=contract),
            Mount("", app=contract),
        ],
        exception_handlers=exception_handlers(),
    )
    app.state.sandbox = state
    return app


def run_sandbox(host: str, port: int, **options: Unpack[SandboxOptions]) -> None:
    uvicorn.run(create_sandbox_app(**options), host=host, port=port, log_level="warning")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m relay.sandbox", description="Local emulator of the OpenAI Videos API.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--complete-after", type=float, default=1.0, metavar="SECONDS", help="seconds until a job completes")
    parser.add_argument("--fail", choices=[*FAIL_ALIASES, *PRESETS], help="fail every request")
    parser.add_argument("--content-bytes", type=int, metavar="N", help="pad video downloads to N bytes")
    parser.add_argument("--seed", type=int, metavar="N", help="seed for fault rules with a probability")
    args = parser.parse_args(argv)
    print(f"sandbox upstream on http://{args.host}:{args.port}/v1", flush=True)
    run_sandbox(
        args.host,
        args.port,
        complete_after_seconds=args.complete_after,
        fail=args.fail,
        content_bytes=args.content_bytes,
        seed=args.seed,
    )


if __name__ == "__main__":
    main()
