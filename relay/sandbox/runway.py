"""Runway's API (version 2024-11-06) under ``/runway/v1``, and its CDN under ``/runway/cdn``.

An account's base_api is ``http://HOST:PORT/runway/v1``:

* ``POST /runway/v1/text_to_video`` ``{"model", "promptText", "ratio", "duration"}`` and
  ``POST /runway/v1/image_to_video`` (``promptImage`` as well: an https URL on a domain, which the
  emulator records but does not fetch, or a data URI of a PNG, JPEG or WebP under 5 MiB) start a
  task and answer ``{"id": UUID}``. Models, ratios and durations are checked as Runway documents
  them (gen4.5, gen4_turbo, gen3a_turbo, veo3, veo3.1, veo3.1_fast).
* ``GET /runway/v1/tasks/{id}`` answers ``{"id", "createdAt", "status"}``: ``PENDING`` for the first
  third of the sandbox's ``complete_after_seconds``, then ``RUNNING`` with ``progress`` (0..1), then
  ``SUCCEEDED`` with ``output: [CDN link]``, or ``FAILED`` with ``failure`` and ``failureCode``.
* ``DELETE /runway/v1/tasks/{id}`` answers 204: an unfinished task is ``CANCELLED``, a finished
  one deleted (a 404 from then on).
* ``GET /runway/cdn/{id}.mp4?_jwt=...`` serves the video (padded like every emulator's, single
  ranges, ETag). The signed query is its only credential; a key that arrives is recorded as the
  request's ``token``, so a test can see it leaked. The link names ``localhost`` when the task was
  read through ``127.0.0.1`` (and the reverse), so that, as with Runway's real CDN, it is on another
  origin than the API: a client that keeps its key to the API's origin does not send it there.

The key comes as ``Authorization: Bearer``; tasks are scoped per key. Every API request needs
``X-Runway-Version: 2024-11-06``. Errors are Runway's ``{"error": "..."}``, validation failures
with ``issues`` (``path`` names the field). Runway documents no retry hint on its 429s, and the
emulator sends none. Prompt markers choose the outcome: ``[fail]`` ends the task ``FAILED`` with
``INTERNAL.BAD_OUTPUT``, ``[moderated]`` with ``SAFETY.INPUT.TEXT``, ``[throttled]`` keeps it
``THROTTLED`` (Runway's concurrency queue) instead of ``PENDING``; ``[bytes=N]`` pads the video.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import json
import re
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import urlsplit

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from .content import content_etag, marked_content_length, padded_head, serve_bytes
from .errors import ProviderError
from .gate import provider_app
from .provider import Provider, bearer_credential, storage_origin
from .state import SandboxState, sandbox_state

PREFIX: Final = "/runway"
API: Final = "/v1"
CDN: Final = "/cdn"
API_VERSION: Final = "2024-11-06"
URL_TTL_SECONDS: Final = 86400
MAX_DATA_URI_CHARS: Final = 5 * 1024 * 1024
MAX_PROMPT_UTF16_UNITS: Final = 1000
IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/jpg", "image/webp")
FAIL_MARKER: Final = "[fail]"
MODERATED_MARKER: Final = "[moderated]"
THROTTLED_MARKER: Final = "[throttled]"
FAILED_MESSAGE: Final = "An unexpected error occurred while generating the video (sandbox: the prompt asked for [fail])."
MODERATED_MESSAGE: Final = "The prompt did not pass content moderation (sandbox: the prompt asked for [moderated])."
_DATA_URI: Final = re.compile(r"data:([a-z]+/[a-z0-9.+-]+)(?:;[^,;]*)*;base64,(.*)", re.DOTALL | re.IGNORECASE)

_GEN4_RATIOS: Final = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO_RATIOS: Final = ("1280:720", "720:1280", "1920:1080", "1080:1920")


@dataclass(frozen=True)
class ModelRules:
    endpoints: tuple[str, ...]
    ratios: tuple[str, ...]
    durations: tuple[int, ...]
    duration_required: bool


MODELS: Final = {
    "gen4.5": ModelRules(("text_to_video", "image_to_video"), _GEN4_RATIOS, tuple(range(2, 11)), True),
    "gen4_turbo": ModelRules(("image_to_video",), _GEN4_RATIOS, tuple(range(2, 11)), False),
    "gen3a_turbo": ModelRules(("image_to_video",), ("1280:768", "768:1280"), (5, 10), False),
    "veo3": ModelRules(("text_to_video", "image_to_video"), _VEO_RATIOS, (8,), True),
    "veo3.1": ModelRules(("text_to_video", "image_to_video"), _VEO_RATIOS, (4, 6, 8), False),
    "veo3.1_fast": ModelRules(("text_to_video", "image_to_video"), _VEO_RATIOS, (4, 6, 8), False),
}
_FIELDS: Final = {
    "text_to_video": frozenset({"model", "promptText", "ratio", "duration", "seed", "negativePrompt", "audio"}),
    "image_to_video": frozenset({"model", "promptImage", "promptText", "ratio", "duration", "seed", "negativePrompt", "audio"}),
}


@dataclass
class RunwayTask:
    id: str
    token: str
    model: str
    prompt: str
    started: float
    created_wall: float
    outcome: str  # "succeeded", "failed" or "moderated"
    throttled: bool
    content_bytes: int | None
    cancelled: bool = False


@dataclass
class RunwayStore:
    tasks: dict[str, RunwayTask] = field(default_factory=dict)
    # Signs the CDN links of finished videos.
    url_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))


# --------------------------------------------------------------------------- errors


def runway_error(status: int, message: str, issues: list[dict[str, Any]] | None = None) -> ProviderError:
    body: dict[str, Any] = {"error": message}
    if issues is not None:
        body["issues"] = issues
    return ProviderError(status, body)


def invalid(field_name: str, message: str, code: str = "custom") -> ProviderError:
    """Runway's 400 for a body that fails validation, naming the field in the issue's path."""
    return runway_error(400, "Validation of body failed", [{"code": code, "path": [field_name], "message": message}])


def unauthorized() -> ProviderError:
    return runway_error(401, "Incorrect or missing API key. Pass your key as `Authorization: Bearer <key>`.")


def route_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 405:
        return JSONResponse({"error": "Method not allowed."}, status_code=405)
    return JSONResponse({"error": "Not found."}, status_code=exc.status_code)


def preset_reply(name: str, resets_in_seconds: float) -> dict[str, Any]:
    """How Runway words each reply preset. Its 429s carry no retry hint: Runway documents none."""
    match name:
        case "rate_limited":
            return {"status": 429, "body": {"error": "Too many requests. Please slow down and try again later."}}
        case "insufficient_quota":
            return {"status": 429, "body": {"error": "You have exceeded your daily task limit for this tier. Please try again later."}}
        case "unauthorized":
            return {"status": 401, "body": unauthorized().body}
        case "payment_required":
            return {"status": 400, "body": {"error": "You do not have enough credits to run this task."}}
        case "server_error":
            return {"status": 500, "body": {"error": "An internal error occurred. Please try again."}}
    raise ValueError(f"no reply preset {name!r}")


# --------------------------------------------------------------------------- requests


def caller(request: Request) -> tuple[SandboxState, RunwayStore, str]:
    key = bearer_credential(request.scope)
    if key is None:
        raise unauthorized()
    version = request.headers.get("x-runway-version")
    if version != API_VERSION:
        raise runway_error(
            400,
            f"The X-Runway-Version header is {'missing' if version is None else 'not a supported version'}."
            f" Send X-Runway-Version: {API_VERSION}.",
        )
    store: RunwayStore = request.app.state.runway
    return sandbox_state(request), store, key


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise runway_error(400, "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise runway_error(400, "The request body must be a JSON object.")
    return payload


def check_prompt_image(value: Any) -> None:
    uri = value
    if isinstance(value, list):
        if not value or not all(isinstance(item, dict) for item in value):
            raise invalid("promptImage", "Expected a URL, a data URI or a list of {uri, position}.")
        uri = value[0].get("uri")
    if not isinstance(uri, str):
        raise invalid("promptImage", "Expected a URL or a data URI.", "invalid_type")
    if uri[:5].lower() == "data:":
        match = _DATA_URI.fullmatch(uri)
        if match is None:
            raise invalid("promptImage", "Invalid data URI.")
        if match.group(1).lower() not in IMAGE_MIME_TYPES:
            raise invalid("promptImage", "Unsupported asset type. Use image/png, image/jpeg or image/webp.")
        if len(uri) > MAX_DATA_URI_CHARS:
            raise invalid("promptImage", "Data URIs must be under 5MB.")
        try:
            if not base64.b64decode(match.group(2), validate=True):
                raise invalid("promptImage", "Invalid data URI.")
        except binascii.Error:
            raise invalid("promptImage", "Invalid data URI.") from None
        return
    parts = urlsplit(uri)
    if parts.scheme != "https":
        raise invalid("promptImage", "Only HTTPS URLs are allowed.")
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        if parts.hostname:
            return
    raise invalid("promptImage", "URLs must be hosted on a domain.")


def check_create(endpoint: str, payload: dict[str, Any]) -> tuple[str, str]:
    """(model, prompt) of a valid create; Runway's 400 for any other."""
    unknown = sorted(set(payload) - _FIELDS[endpoint])
    if unknown:
        raise invalid(unknown[0], f"Unrecognized key '{unknown[0]}'.", "unrecognized_keys")
    model = payload.get("model")
    rules = MODELS.get(model) if isinstance(model, str) else None
    if not isinstance(model, str) or rules is None or endpoint not in rules.endpoints:
        allowed = ", ".join(name for name, rule in MODELS.items() if endpoint in rule.endpoints)
        raise invalid("model", f"Invalid model for {endpoint}. Expected one of: {allowed}.", "invalid_union_discriminator")
    prompt = payload.get("promptText")
    if prompt is not None and (not isinstance(prompt, str) or not prompt or len(prompt.encode("utf-16-le")) // 2 > MAX_PROMPT_UTF16_UNITS):
        raise invalid("promptText", f"Expected a non-empty string of at most {MAX_PROMPT_UTF16_UNITS} characters.")
    if endpoint == "text_to_video" and prompt is None:
        raise invalid("promptText", "Required", "invalid_type")
    if endpoint == "image_to_video":
        if "promptImage" not in payload:
            raise invalid("promptImage", "Required", "invalid_type")
        check_prompt_image(payload["promptImage"])
    if payload.get("ratio") not in rules.ratios:
        raise invalid("ratio", f"Invalid enum value. Expected {' | '.join(map(repr, rules.ratios))}.", "invalid_enum_value")
    duration = payload.get("duration")
    if duration is None and rules.duration_required:
        raise invalid("duration", "Required", "invalid_type")
    if duration is not None and (isinstance(duration, bool) or duration not in rules.durations):
        raise invalid("duration", f"Expected one of {', '.join(map(str, rules.durations))}.")
    seed = payload.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 4294967295):
        raise invalid("seed", "Expected an integer from 0 to 4294967295.")
    return model, prompt or ""


def outcome_of(prompt: str) -> str:
    if FAIL_MARKER in prompt:
        return "failed"
    if MODERATED_MARKER in prompt:
        return "moderated"
    return "succeeded"


async def create_task(request: Request) -> Response:
    state, store, key = caller(request)
    endpoint = request.url.path.rstrip("/").rsplit("/", 1)[-1]
    model, prompt = check_create(endpoint, parse_body(await request.body()))
    try:
        content_bytes = marked_content_length(prompt, state)
    except ValueError as problem:
        raise invalid("promptText", f"Invalid [bytes=N] marker: {problem}.") from None
    task = RunwayTask(
        id=str(uuid.uuid4()),
        token=key,
        model=model,
        prompt=prompt,
        started=state.clock(),
        created_wall=datetime.now(UTC).timestamp(),
        outcome=outcome_of(prompt),
        throttled=THROTTLED_MARKER in prompt,
        content_bytes=content_bytes,
    )
    store.tasks[task.id] = task
    return JSONResponse({"id": task.id})


# --------------------------------------------------------------------------- tasks


def elapsed_share(state: SandboxState, task: RunwayTask) -> float:
    if state.complete_after_seconds <= 0:
        return 1.0
    return (state.clock() - task.started) / state.complete_after_seconds


def is_finished(state: SandboxState, task: RunwayTask) -> bool:
    return task.cancelled or elapsed_share(state, task) >= 1.0


def signature(store: RunwayStore, task_id: str, expires: int) -> str:
    return hmac.new(store.url_key, f"{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def cdn_link(request: Request, state: SandboxState, store: RunwayStore, task: RunwayTask) -> str:
    expires = int(state.clock()) + URL_TTL_SECONDS
    return f"{storage_origin(request)}{PREFIX}{CDN}/{task.id}.mp4?_jwt={expires}.{signature(store, task.id, expires)}"


def task_resource(request: Request, state: SandboxState, store: RunwayStore, task: RunwayTask) -> dict[str, Any]:
    created_at = datetime.fromtimestamp(task.created_wall, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    resource: dict[str, Any] = {"id": task.id, "createdAt": created_at}
    share = elapsed_share(state, task)
    if task.cancelled:
        resource["status"] = "CANCELLED"
    elif share < 1 / 3:
        resource["status"] = "THROTTLED" if task.throttled else "PENDING"
    elif share < 1:
        resource.update(status="RUNNING", progress=round(share, 2))
    elif task.outcome == "failed":
        resource.update(status="FAILED", failure=FAILED_MESSAGE, failureCode="INTERNAL.BAD_OUTPUT")
    elif task.outcome == "moderated":
        resource.update(status="FAILED", failure=MODERATED_MESSAGE, failureCode="SAFETY.INPUT.TEXT")
    else:
        resource.update(status="SUCCEEDED", output=[cdn_link(request, state, store, task)])
    return resource


def owned_task(store: RunwayStore, key: str, task_id: str) -> RunwayTask:
    task = store.tasks.get(task_id)
    if task is None or task.token != key:
        raise runway_error(404, "Task not found.")
    return task


async def get_task(request: Request) -> Response:
    state, store, key = caller(request)
    task = owned_task(store, key, request.path_params["task_id"])
    return JSONResponse(task_resource(request, state, store, task))


async def delete_task(request: Request) -> Response:
    state, store, key = caller(request)
    task = owned_task(store, key, request.path_params["task_id"])
    if is_finished(state, task):
        del store.tasks[task.id]
    else:
        task.cancelled = True
    return Response(status_code=204)


# --------------------------------------------------------------------------- the CDN


def cdn_refusal(status: int, message: str) -> Response:
    return PlainTextResponse(message, status_code=status)


async def serve_video(request: Request) -> Response:
    state = sandbox_state(request)
    store: RunwayStore = request.app.state.runway
    task_id = request.path_params["task_id"]
    expires, _, given = request.query_params.get("_jwt", "").partition(".")
    if not expires.isdigit() or not hmac.compare_digest(given, signature(store, task_id, int(expires))):
        return cdn_refusal(403, "Access denied: the link's signature does not match.")
    if state.clock() > int(expires):
        return cdn_refusal(403, "Access denied: the link has expired.")
    task = store.tasks.get(task_id)
    if task is None or task.cancelled or task.outcome != "succeeded":
        return cdn_refusal(404, "Not found.")
    asset = state.assets["video"]
    length = task.content_bytes or len(asset.data)
    etag = content_etag(task_id, "video", length)
    return serve_bytes(request, state, padded_head(asset.data, length), length, asset.media_type, etag, range_refusal)


def range_refusal(length: int) -> Response:
    return cdn_refusal(416, f"Requested range not satisfiable (the object is {length} bytes).")


RUNWAY: Final = Provider("runway", bearer_credential, lambda: {"x-request-id": str(uuid.uuid4())})


def runway_app(state: SandboxState) -> Starlette:
    app = provider_app(
        state,
        RUNWAY,
        [
            Route(f"{API}/text_to_video", create_task, methods=["POST"]),
            Route(f"{API}/image_to_video", create_task, methods=["POST"]),
            Route(API + "/tasks/{task_id}", get_task, methods=["GET"]),
            Route(API + "/tasks/{task_id}", delete_task, methods=["DELETE"]),
            Route(CDN + "/{task_id}.mp4", serve_video, methods=["GET"]),
        ],
        route_error,
    )
    app.state.runway = RunwayStore()
    return app
