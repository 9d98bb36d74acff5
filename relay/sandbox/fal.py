"""fal's queue under ``/fal``, and its CDN under ``/_falcdn``.

* ``POST /fal/{model id}`` (``fal-ai/kling-video/v2.1/master/text-to-video``) with the model's input
  as JSON submits a request: ``{"status": "IN_QUEUE", "request_id", "response_url", "status_url",
  "cancel_url", "queue_position": 0}``.
* ``GET /fal/{app}/requests/{id}/status`` (``app`` is the model id's ``owner/app``): ``IN_QUEUE``
  for the first third of the sandbox's ``complete_after_seconds``, then ``IN_PROGRESS`` (both 202),
  then ``COMPLETED`` (200, with ``metrics``).
* ``GET /fal/{app}/requests/{id}`` answers the result: ``{"video": {"url", "content_type",
  "file_name", "file_size"}, "seed"}``, the URL on the CDN stand-in; or the request's failure.
* ``PUT /fal/{app}/requests/{id}/cancel``: 202 ``CANCELLATION_REQUESTED`` while queued (the request
  then completes at once, its result a 499 ``client_cancelled``), 400 ``ALREADY_COMPLETED`` after.
* ``GET /_falcdn/files/{file id}/output.mp4`` serves the video (padded like the others', single
  ranges, ETag). Like fal's CDN it wants no key; any credential that arrives is recorded as the
  request's ``token``. The link names the sandbox by the other spelling of loopback
  (``localhost`` for ``127.0.0.1`` and back), so it is on another origin than the queue, as fal's
  CDN is, and the relay fetches it as it would fal's.

The key comes as ``Authorization: Key …``; requests are scoped per key. Without one: 401. Errors
are fal's ``{"detail": ...}``: a string (with ``error_type`` for the platform's own failures), or a
list of ``{loc, msg, type}`` for input a model refuses (422). Prompt markers choose the outcome:
``[fail]`` ends the request with a runner failure (its result a 500), ``[filtered]`` with a content
policy refusal (its result a 422); ``[bytes=N]`` pads the video to N bytes. fal's 429 carries no
retry hint, and the emulator's neither (a rule's own ``headers`` can add one).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import secrets
import uuid
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from .content import content_etag, marked_content_length, padded_head, serve_bytes
from .errors import ProviderError
from .gate import provider_app
from .provider import Provider, header, origin, storage_origin
from .state import FalRequest, FalStore, SandboxState, sandbox_state
from .storage import leaked_credential

PREFIX: Final = "/fal"
CDN_PREFIX: Final = "/_falcdn"
FAIL_MARKER: Final = "[fail]"
FILTER_MARKER: Final = "[filtered]"
NAMESPACES: Final = ("workflows", "comfy")
ASPECT_RATIOS: Final = ("16:9", "9:16", "1:1", "4:3", "3:4", "21:9", "9:21")
RESOLUTIONS: Final = ("480p", "580p", "720p", "1080p")
MAX_DURATION: Final = 15
_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_DURATION = re.compile(r"([0-9]{1,2})s?")
_DATA_URL = re.compile(r"data:image/(png|jpeg|webp);base64,(.+)", re.DOTALL)
LOCKED: Final = "User is locked. Reason: Exhausted balance. Top up your balance at fal.ai/dashboard/billing."
FAILED_DETAIL: Final = "Video generation failed: the runner could not finish the request (sandbox: the prompt asked for [fail])."
FILTERED_DETAIL: Final = "The content could not be processed because it contained material flagged by a content checker."


# --------------------------------------------------------------------------- errors


def detail(status: int, message: str, error_type: str | None = None) -> ProviderError:
    body: dict[str, Any] = {"detail": message}
    headers = {}
    if error_type is not None:
        body["error_type"] = error_type
        headers["x-fal-error-type"] = error_type
    return ProviderError(status, body, headers)


def validation_item(field: str, message: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", field], "msg": message, "type": kind, "url": f"https://docs.fal.ai/errors#{kind}"}


def unprocessable(field: str, message: str, kind: str = "value_error") -> ProviderError:
    return ProviderError(422, {"detail": [validation_item(field, message, kind)]}, {"x-fal-retryable": "false"})


def not_found(request: Request, exc: HTTPException) -> Response:
    return JSONResponse({"detail": "Not Found"}, status_code=exc.status_code)


def preset_reply(name: str, resets_in_seconds: float) -> dict[str, Any]:
    """How fal words each reply preset. Its 429 says nothing of when to retry; an exhausted balance locks the user (403)."""
    match name:
        case "rate_limited":
            return {"status": 429, "body": {"detail": "Too many requests: you have exceeded your rate limit. Please retry later."}}
        case "insufficient_quota" | "payment_required":
            return {"status": 403, "body": {"detail": LOCKED}}
        case "unauthorized":
            return {"status": 401, "body": {"detail": "No user found for Key ID and Secret"}}
        case "server_error":
            return {"status": 500, "body": {"detail": "Internal server error", "error_type": "internal_error"}}
    raise ValueError(f"no reply preset {name!r}")


# --------------------------------------------------------------------------- requests


def fal_credential(scope: Scope) -> str | None:
    scheme, _, key = (header(scope, "authorization") or "").strip().partition(" ")
    return key.strip() or None if scheme.lower() == "key" else None


def caller(request: Request) -> tuple[SandboxState, FalStore, str]:
    key = fal_credential(request.scope)
    if key is None:
        raise detail(401, "Missing authorization header: send 'Authorization: Key <FAL_KEY>'.")
    state = sandbox_state(request)
    return state, state.fal, key


def app_of(segments: list[str]) -> str:
    return "/".join(segments[:3] if segments[0] in NAMESPACES else segments[:2])


def request_urls(base: str, app: str, request_id: str) -> dict[str, str]:
    response_url = f"{base}{PREFIX}/{app}/requests/{request_id}"
    return {"response_url": response_url, "status_url": f"{response_url}/status", "cancel_url": f"{response_url}/cancel"}


def phase(state: SandboxState, queued: FalRequest) -> str:
    elapsed = state.clock() - queued.started
    if queued.cancelled or elapsed >= state.complete_after_seconds:
        return "COMPLETED"
    return "IN_QUEUE" if elapsed < state.complete_after_seconds / 3 else "IN_PROGRESS"


def check_input(payload: Any) -> str:
    """Checks what every video model reads alike; answers the prompt."""
    if not isinstance(payload, dict):
        raise ProviderError(422, {"detail": [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]})
    prompt = payload.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise unprocessable("prompt", "Field required", "missing")
    duration = payload.get("duration")
    match = _DURATION.fullmatch(str(duration)) if isinstance(duration, (str, int)) and not isinstance(duration, bool) else None
    if duration is not None and (match is None or not 1 <= int(match.group(1)) <= MAX_DURATION):
        raise unprocessable("duration", f"Input should be a whole number of seconds from 1 to {MAX_DURATION}", "literal_error")
    for name, allowed in (("aspect_ratio", ASPECT_RATIOS), ("resolution", RESOLUTIONS)):
        if name in payload and payload[name] not in allowed:
            raise unprocessable(name, f"Input should be {', '.join(repr(value) for value in allowed)}", "literal_error")
    if "image_url" in payload:
        check_image_url(payload["image_url"])
    return prompt


def check_image_url(url: Any) -> None:
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return
    match = _DATA_URL.fullmatch(url) if isinstance(url, str) else None
    try:
        decoded = base64.b64decode(match.group(2), validate=True) if match else b""
    except binascii.Error:
        decoded = b""
    if not decoded:
        raise unprocessable("image_url", "Input should be a URL or a base64 data URI of a PNG, JPEG or WebP image", "image_load_error")


async def submit(request: Request) -> Response:
    state, store, key = caller(request)
    segments = request.path_params["model_id"].split("/")
    if len(segments) < 2 or not all(_SEGMENT.fullmatch(segment) for segment in segments):
        raise detail(404, f"Application '{request.path_params['model_id']}' not found")
    try:
        payload = json.loads(await request.body())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ProviderError(422, {"detail": [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]}) from None
    prompt = check_input(payload)
    try:
        content_bytes = marked_content_length(prompt, state)
    except ValueError as problem:
        raise unprocessable("prompt", f"Invalid [bytes=N] marker in the prompt: {problem}") from None
    outcome = "failed" if FAIL_MARKER in prompt else "filtered" if FILTER_MARKER in prompt else "succeeded"
    file_id = secrets.token_urlsafe(16)
    queued = FalRequest(str(uuid.uuid4()), app_of(segments), "/".join(segments), key, state.clock(), outcome, content_bytes, file_id)
    store.requests[queued.id] = queued
    store.files[queued.file_id] = queued.id
    body = {"status": "IN_QUEUE", "request_id": queued.id, **request_urls(origin(request), queued.app, queued.id), "queue_position": 0}
    return JSONResponse(body)


def owned(request: Request) -> tuple[SandboxState, FalRequest]:
    state, store, key = caller(request)
    queued = store.requests.get(request.path_params["request_id"])
    if queued is None or queued.token != key or queued.app != request.path_params["app"]:
        raise detail(404, "Request not found")
    return state, queued


async def status(request: Request) -> Response:
    state, queued = owned(request)
    now = phase(state, queued)
    body: dict[str, Any] = {"status": now, "request_id": queued.id, **request_urls(origin(request), queued.app, queued.id), "logs": None}
    if now == "IN_QUEUE":
        body["queue_position"] = 0
    if now == "COMPLETED":
        body["metrics"] = {"inference_time": round(state.complete_after_seconds * 2 / 3, 3)}
        return JSONResponse(body)
    return JSONResponse(body, status_code=202)


async def result(request: Request) -> Response:
    state, queued = owned(request)
    if phase(state, queued) != "COMPLETED":
        raise detail(400, "Request is still in progress")
    if queued.cancelled:
        raise detail(499, "Request was cancelled by the client", "client_cancelled")
    if queued.outcome == "failed":
        raise detail(500, FAILED_DETAIL, "runner_server_error")
    if queued.outcome == "filtered":
        raise unprocessable("prompt", FILTERED_DETAIL, "content_policy_violation")
    length = queued.content_bytes or len(state.assets["video"].data)
    url = f"{storage_origin(request)}{CDN_PREFIX}/files/{queued.file_id}/output.mp4"
    video = {"url": url, "content_type": "video/mp4", "file_name": "output.mp4", "file_size": length}
    return JSONResponse({"video": video, "seed": int(queued.started * 1000) % 2**31})


async def cancel(request: Request) -> Response:
    state, queued = owned(request)
    if phase(state, queued) != "IN_QUEUE":
        return JSONResponse({"status": "ALREADY_COMPLETED"}, status_code=400)
    queued.cancelled = True
    return JSONResponse({"status": "CANCELLATION_REQUESTED"}, status_code=202)


async def serve_file(request: Request) -> Response:
    state = sandbox_state(request)
    file_id = request.path_params["file_id"]
    queued = state.fal.requests.get(state.fal.files.get(file_id, ""))
    if queued is None or phase(state, queued) != "COMPLETED" or queued.outcome != "succeeded" or queued.cancelled:
        return Response("Not Found", status_code=404, media_type="text/plain")
    asset = state.assets["video"]
    length = queued.content_bytes or len(asset.data)
    etag = content_etag(file_id, "video", length)
    return serve_bytes(request, state, padded_head(asset.data, length), length, asset.media_type, etag, range_refusal)


def range_refusal(length: int) -> Response:
    return Response("Requested Range Not Satisfiable", status_code=416, media_type="text/plain")


FAL: Final = Provider("fal", fal_credential, lambda: {"x-fal-request-id": str(uuid.uuid4())})
CDN: Final = Provider("fal", lambda scope: fal_credential(scope) or leaked_credential(scope))


def fal_app(state: SandboxState) -> Starlette:
    return provider_app(
        state,
        FAL,
        [
            Route("/{app:path}/requests/{request_id}/status", status, methods=["GET"]),
            Route("/{app:path}/requests/{request_id}/cancel", cancel, methods=["PUT"]),
            Route("/{app:path}/requests/{request_id}", result, methods=["GET"]),
            Route("/{model_id:path}", submit, methods=["POST"]),
        ],
        not_found,
    )


def cdn_app(state: SandboxState) -> Starlette:
    return provider_app(state, CDN, [Route("/files/{file_id}/output.mp4", serve_file, methods=["GET", "HEAD"])], not_found)
