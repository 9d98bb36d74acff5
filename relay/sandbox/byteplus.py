"""BytePlus ModelArk (Seedance) under ``/byteplus``: video generation tasks, and their videos on storage links.

* ``POST /byteplus/api/v3/contents/generations/tasks`` with ``{"model", "content": [{"type": "text",
  "text"}, {"type": "image_url", "image_url": {"url"}, "role"?}], "ratio"?, "resolution"?,
  "duration"?, ...}`` answers ``{"id": "cgt-..."}``.
* ``GET /byteplus/api/v3/contents/generations/tasks/{id}`` answers the task: ``queued`` for the first
  half of the sandbox's ``complete_after_seconds``, ``running`` for the second, then ``succeeded``
  with ``content.video_url`` (a signed link under ``/byteplus/tos``, valid 24 h, that needs no key,
  naming the sandbox by loopback's other spelling, ``localhost`` for ``127.0.0.1`` and back, so
  that, as with BytePlus's real storage, it is on another origin than the API)
  and ``usage``, or ``failed`` with ``error`` {code, message}.
* ``DELETE /byteplus/api/v3/contents/generations/tasks/{id}`` cancels a queued task (it stays,
  ``cancelled``), deletes a finished one, and refuses a running one (409 ``TaskRunningCannotCancel``).

The API key comes as ``Authorization: Bearer``; tasks are scoped per key. Errors use ModelArk's
envelope ``{"error": {"code", "message", "param", "type"}}``; a 429 carries no retry hint, as
ModelArk documents none. Prompt markers choose the outcome: ``[fail]`` ends the task failed
(``InternalServiceError``), ``[filtered]`` failed by moderation (``OutputVideoSensitiveContentDetected``);
``[bytes=N]`` pads the video to N bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .content import content_etag, marked_content_length, padded_head, serve_bytes
from .errors import ProviderError
from .gate import provider_app
from .provider import Provider, bearer_credential, short_id, storage_origin
from .state import BytePlusStore, SandboxState, SeedanceTask, sandbox_state
from .storage import xml_error

PREFIX: Final = "/byteplus"
API: Final = "/api/v3"
STORAGE: Final = "/tos"
URL_TTL_SECONDS: Final = 86400  # ModelArk's video_url is valid for 24 hours
FAIL_MARKER: Final = "[fail]"
FILTER_MARKER: Final = "[filtered]"
FRAMES_PER_SECOND: Final = 24
REQUEST_KEYS: Final = frozenset(
    {
        "model",
        "content",
        "ratio",
        "resolution",
        "duration",
        "seed",
        "camera_fixed",
        "watermark",
        "generate_audio",
        "callback_url",
        "return_last_frame",
        "service_tier",
        "execution_expires_after",
    }
)
RATIOS: Final = ("21:9", "16:9", "4:3", "1:1", "3:4", "9:16", "adaptive")
RESOLUTIONS: Final = ("480p", "720p", "1080p")
ROLES: Final = ("first_frame", "last_frame", "reference_image")
# The output size of each resolution at 16:9, which the usage (tokens) of a finished task follows.
PIXELS: Final = {"480p": 864 * 480, "720p": 1248 * 704, "1080p": 1920 * 1088}


# --------------------------------------------------------------------------- errors


def request_id() -> str:
    return time.strftime("%Y%m%d%H%M%S") + short_id(20)


def modelark_error(status: int, kind: str, code: str, message: str, param: str = "") -> ProviderError:
    body = {"error": {"code": code, "message": f"{message} Request id: {request_id()}", "param": param, "type": kind}}
    return ProviderError(status, body)


def invalid_parameter(param: str, message: str | None = None) -> ProviderError:
    text = message or f"The parameter `{param}` specified in the request is not valid."
    return modelark_error(400, "BadRequest", f"InvalidParameter.{param}" if message is None else "InvalidParameter", text, param)


def missing(param: str, message: str | None = None) -> ProviderError:
    text = message or f"The request failed because it is missing the parameter `{param}`."
    return modelark_error(400, "BadRequest", "MissingParameter", text, param)


def range_refusal(length: int) -> Response:
    return xml_error(416, "InvalidRange", "The requested range is not satisfiable.", f"Object length is {length} bytes.")


def unauthenticated() -> ProviderError:
    return modelark_error(401, "Unauthorized", "AuthenticationError", "the API key or AK/SK in the request is missing or invalid.")


def task_not_found(task_id: str) -> ProviderError:
    return modelark_error(404, "NotFound", "NotFound.TaskId", f"The specified task {task_id} is not found.", "id")


def route_error(request: Request, exc: HTTPException) -> Response:
    code = "NotFound" if exc.status_code == 404 else "MethodNotAllowed"
    body = {"error": {"code": code, "message": f"{exc.detail}: {request.method} {request.url.path}", "param": "", "type": code}}
    return JSONResponse(body, status_code=exc.status_code)


def preset_reply(name: str, resets_in_seconds: float) -> dict[str, Any]:
    """How ModelArk words each reply preset. Its 429s say nothing of when to retry (no header, no body field)."""

    def reply(status: int, kind: str, code: str, message: str) -> dict[str, Any]:
        return {"status": status, "body": {"error": {"code": code, "message": message, "param": "", "type": kind}}}

    match name:
        case "rate_limited":
            message = "The request has exceeded the RPM (requests per minute) limit of the associated endpoint. Please retry later."
            return reply(429, "TooManyRequests", "RateLimitExceeded.EndpointRPMExceeded", message)
        case "insufficient_quota":
            message = "You have exceeded the 5-hour usage quota. It will reset at 2026-12-05 20:00:00 +0800 CST."
            return reply(429, "TooManyRequests", "QuotaExceeded", message)
        case "unauthorized":
            return reply(401, "Unauthorized", "AuthenticationError", "the API key or AK/SK in the request is missing or invalid.")
        case "payment_required":
            return reply(403, "Forbidden", "AccountOverdueError", "The request failed because your account has an overdue balance.")
        case "server_error":
            return reply(500, "InternalServerError", "InternalServiceError", "The service encountered an unexpected internal error.")
    raise ValueError(f"no reply preset {name!r}")


# --------------------------------------------------------------------------- request validation


def caller(request: Request) -> tuple[SandboxState, BytePlusStore, str]:
    key = bearer_credential(request.scope)
    if key is None:
        raise unauthenticated()
    state = sandbox_state(request)
    return state, state.byteplus, key


def check_image(item: dict[str, Any]) -> None:
    image = item.get("image_url")
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url:
        raise modelark_error(400, "BadRequest", "InvalidImageURL.EmptyURL", "The image URL is empty.", "image_url")
    if url.startswith(("https://", "http://", "asset://")):
        return
    head, _, data = url.partition(";base64,")
    try:
        decoded = base64.b64decode(data, validate=True)
    except binascii.Error:
        decoded = b""
    if not head.startswith("data:image/") or head != head.lower() or not decoded:
        raise modelark_error(400, "BadRequest", "InvalidImageURL.InvalidFormat", "The image in the request cannot be parsed.", "image_url")
    if item.get("role", "first_frame") not in ROLES:
        raise invalid_parameter("role")


def prompt_of(model: str, content: Any) -> str:
    """Checks the content items; answers the prompt."""
    if not isinstance(content, list) or not content:
        raise missing("content")
    texts = [item for item in content if isinstance(item, dict) and item.get("type") == "text"]
    images = [item for item in content if isinstance(item, dict) and item.get("type") == "image_url"]
    if len(texts) + len(images) != len(content) or len(texts) > 1:
        raise invalid_parameter("content")
    for item in images:
        check_image(item)
    if "-t2v-" in model and images:
        raise invalid_parameter("content", f"The model {model} generates videos from text only: the request may not hold an image.")
    if "-i2v-" in model and not images:
        raise missing("content", f"The model {model} needs an image (image_url) in `content`.")
    text = texts[0].get("text") if texts else ""
    if not isinstance(text, str):
        raise invalid_parameter("text")
    return text


def parse_task(model: Any, payload: dict[str, Any]) -> None:
    unknown = sorted(set(payload) - REQUEST_KEYS)
    if unknown:
        raise invalid_parameter(unknown[0])
    if payload.get("ratio", "16:9") not in RATIOS:
        raise invalid_parameter("ratio")
    if payload.get("resolution", "720p") not in RESOLUTIONS:
        raise invalid_parameter("resolution")
    shortest, longest = (2, 12) if str(model).startswith("seedance-1-") else (4, 15)
    duration = payload.get("duration", 5)
    if isinstance(duration, bool) or not isinstance(duration, int) or not shortest <= duration <= longest:
        raise invalid_parameter("duration", f"The parameter `duration` must be an integer from {shortest} to {longest} for {model}.")
    seed = payload.get("seed", -1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise invalid_parameter("seed")
    for name in ("camera_fixed", "watermark", "generate_audio", "return_last_frame"):
        if not isinstance(payload.get(name, False), bool):
            raise invalid_parameter(name)


async def the_payload(request: Request) -> dict[str, Any]:
    try:
        payload = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise modelark_error(400, "BadRequest", "InvalidParameter", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise modelark_error(400, "BadRequest", "InvalidParameter", "The request body must be a JSON object.")
    return payload


# --------------------------------------------------------------------------- tasks


def signature(store: BytePlusStore, task_id: str, expires: int) -> str:
    return hmac.new(store.url_key, f"{task_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def video_url(request: Request, state: SandboxState, task: SeedanceTask) -> str:
    expires = int(state.clock()) + URL_TTL_SECONDS
    query = f"X-Tos-Expires={expires}&X-Tos-Signature={signature(state.byteplus, task.id, expires)}"
    return f"{storage_origin(request)}{PREFIX}{STORAGE}/{task.id}.mp4?{query}"


def task_status(state: SandboxState, task: SeedanceTask) -> str:
    if task.cancelled:
        return "cancelled"
    elapsed = state.clock() - task.started
    if elapsed < state.complete_after_seconds / 2:
        return "queued"
    if elapsed < state.complete_after_seconds:
        return "running"
    return "succeeded" if task.outcome == "succeeded" else "failed"


def task_resource(request: Request, state: SandboxState, task: SeedanceTask) -> dict[str, Any]:
    status = task_status(state, task)
    asked = task.request
    resolution, duration = asked.get("resolution", "720p"), asked.get("duration", 5)
    resource: dict[str, Any] = {
        "id": task.id,
        "model": task.model,
        "status": status,
        "error": None,
        "created_at": task.created_wall,
        "updated_at": task.created_wall + int(min(state.clock() - task.started, state.complete_after_seconds)),
        "seed": asked.get("seed", 58944),
        "resolution": resolution,
        "ratio": asked.get("ratio", "16:9"),
        "duration": duration,
        "framespersecond": FRAMES_PER_SECOND,
    }
    if status == "succeeded":
        tokens = PIXELS[resolution] * FRAMES_PER_SECOND * duration // 1024
        resource["content"] = {"video_url": video_url(request, state, task)}
        resource["usage"] = {"completion_tokens": tokens, "total_tokens": tokens}
    elif status == "failed" and task.outcome == "filtered":
        message = "The request failed because the output video may contain sensitive information."
        resource["error"] = {"code": "OutputVideoSensitiveContentDetected", "message": message}
    elif status == "failed":
        message = "The service encountered an unexpected internal error (sandbox: the prompt asked for [fail])."
        resource["error"] = {"code": "InternalServiceError", "message": message}
    return resource


async def create_task(request: Request) -> Response:
    state, store, key = caller(request)
    payload = await the_payload(request)
    model = payload.get("model")
    if not isinstance(model, str) or not model:
        raise missing("model")
    if not model.startswith(("seedance-", "dreamina-seedance-")):
        message = f"The model or endpoint {model} does not exist or you do not have access to it."
        raise modelark_error(404, "NotFound", "InvalidEndpointOrModel.NotFound", message, "model")
    prompt = prompt_of(model, payload.get("content"))
    parse_task(model, payload)
    try:
        content_bytes = marked_content_length(prompt, state)
    except ValueError as problem:
        raise invalid_parameter("text", f"Invalid [bytes=N] marker in the prompt: {problem}.") from None
    outcome = "failed" if FAIL_MARKER in prompt else "filtered" if FILTER_MARKER in prompt else "succeeded"
    task_id = f"cgt-{time.strftime('%Y%m%d%H%M%S')}-{short_id(5)}"
    task = SeedanceTask(task_id, model, key, payload, state.clock(), int(time.time()), outcome, content_bytes)
    store.tasks[task.id] = task
    return JSONResponse({"id": task.id})


def owned_task(request: Request) -> tuple[SandboxState, SeedanceTask]:
    state, store, key = caller(request)
    task_id = request.path_params["task_id"]
    task = store.tasks.get(task_id)
    if task is None or task.token != key:
        raise task_not_found(task_id)
    return state, task


async def get_task(request: Request) -> Response:
    state, task = owned_task(request)
    return JSONResponse(task_resource(request, state, task))


async def delete_task(request: Request) -> Response:
    state, task = owned_task(request)
    status = task_status(state, task)
    if status == "queued":
        task.cancelled = True
    elif status == "running":
        message = "The task is running and cannot be cancelled or deleted."
        raise modelark_error(409, "Conflict", "TaskRunningCannotCancel", message, "id")
    elif status == "cancelled":
        # ModelArk drops a cancelled task itself after 24 hours; the sandbox's wording of the refusal is its own.
        raise modelark_error(409, "Conflict", "TaskCancelledCannotDelete", "A cancelled task cannot be deleted.", "id")
    else:
        del state.byteplus.tasks[task.id]
    return JSONResponse({})


# --------------------------------------------------------------------------- storage


async def serve_video(request: Request) -> Response:
    state = sandbox_state(request)
    task_id = request.path_params["object"].removesuffix(".mp4")
    expires = request.query_params.get("X-Tos-Expires", "")
    given = request.query_params.get("X-Tos-Signature", "")
    if not expires.isdigit() or not hmac.compare_digest(given, signature(state.byteplus, task_id, int(expires))):
        return xml_error(403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
    if state.clock() > int(expires):
        return xml_error(403, "AccessDenied", "Request has expired.")
    task = state.byteplus.tasks.get(task_id)
    if task is None or task_status(state, task) != "succeeded":
        return xml_error(404, "NoSuchKey", "The specified key does not exist.")
    asset = state.assets["video"]
    length = task.content_bytes or len(asset.data)
    etag = content_etag(task_id, "video", length)
    return serve_bytes(request, state, padded_head(asset.data, length), length, asset.media_type, etag, range_refusal)


BYTEPLUS: Final = Provider("byteplus", bearer_credential, lambda: {"x-request-id": request_id()})


def byteplus_app(state: SandboxState) -> Starlette:
    tasks = f"{API}/contents/generations/tasks"
    return provider_app(
        state,
        BYTEPLUS,
        [
            Route(tasks, create_task, methods=["POST"]),
            Route(f"{tasks}/{{task_id}}", get_task, methods=["GET"]),
            Route(f"{tasks}/{{task_id}}", delete_task, methods=["DELETE"]),
            Route(f"{STORAGE}/{{object}}", serve_video, methods=["GET", "HEAD"]),
        ],
        route_error,
    )
