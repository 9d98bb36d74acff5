"""Gemini (Veo) under ``/v1beta``: long-running operations, and downloads behind a redirect.

* ``POST /v1beta/models/{model}:predictLongRunning`` with ``{"instances": [{"prompt", "image"?, ...}],
  "parameters": {...}}`` starts an operation and answers ``{"name": "models/{model}/operations/{id}"}``.
* ``GET /v1beta/models/{model}/operations/{id}`` answers ``{"name"}`` until the sandbox's
  ``complete_after_seconds`` have passed (proto3 JSON leaves out a false ``done``), then
  ``{"name", "done": true, "response": {"@type": ..., "generateVideoResponse": {"generatedSamples":
  [{"video": {"uri": ".../v1beta/files/{id}:download?alt=media"}}]}}}``.
* ``GET /v1beta/files/{id}:download?alt=media`` answers a 302 to a signed ``/_gcs`` link (storage.py).

The API key comes in ``x-goog-api-key`` (or ``?key=``); operations and files are scoped per key.
Without one: 403 ``PERMISSION_DENIED``; with only an ``Authorization`` header: 401 ``UNAUTHENTICATED``.
Prompt markers choose the outcome: ``[fail]`` ends the operation with ``error`` (code 3),
``[filtered]`` with a response whose only content is ``raiMediaFilteredCount``/``Reasons``;
``[bytes=N]`` pads the video to N bytes. Errors use Google's envelope
``{"error": {"code", "message", "status", "details"?}}``; unknown paths get Google's HTML 404.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import Scope

from .content import marked_content_length
from .errors import ProviderError
from .gate import provider_app
from .provider import Provider, header, origin, query_value, short_id
from .state import GeminiStore, GeneratedFile, Operation, SandboxState, sandbox_state
from .storage import signed_path

PREFIX: Final = "/v1beta"
SERVICE: Final = "generativelanguage.googleapis.com"
RESPONSE_TYPE: Final = "type.googleapis.com/google.ai.generativelanguage.v1beta.PredictLongRunningResponse"
RATE_LIMITS_URL: Final = "https://ai.google.dev/gemini-api/docs/rate-limits"
FAIL_MARKER: Final = "[fail]"
FILTER_MARKER: Final = "[filtered]"
FILTERED_REASON: Final = (
    "Unable to generate videos because the prompt may violate our usage guidelines. "
    "You will not be charged for blocked videos. Support codes: 58061214"
)
FAILED_MESSAGE: Final = "Video generation failed: the request could not be fulfilled (sandbox: the prompt asked for [fail])."

REQUEST_KEYS: Final = frozenset({"instances", "parameters"})
INSTANCE_KEYS: Final = frozenset({"prompt", "image", "lastFrame", "video", "referenceImages"})
IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/webp")
ASPECT_RATIOS: Final = ("16:9", "9:16")
RESOLUTIONS: Final = ("720p", "1080p")
PERSON_GENERATION: Final = ("allow_all", "allow_adult", "dont_allow")
REFERENCE_TYPES: Final = ("asset", "style")
MAX_REFERENCE_IMAGES: Final = 3
MAX_SAMPLES: Final = 4
VEO2_DURATIONS: Final = (5, 6, 7, 8)
VEO3_DURATIONS: Final = (4, 6, 8)
DEFAULT_DURATION: Final = 8


# --------------------------------------------------------------------------- errors


def google_error(code: int, status: str, message: str, details: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details:
        error["details"] = details
    return {"error": error}


def invalid_argument(message: str) -> ProviderError:
    return ProviderError(400, google_error(400, "INVALID_ARGUMENT", message))


def error_info(reason: str) -> dict[str, Any]:
    return {
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": reason,
        "domain": "googleapis.com",
        "metadata": {"service": SERVICE},
    }


def no_api_key(scope: Scope) -> ProviderError:
    if header(scope, "authorization") is not None:
        message = (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or other valid "
            "authentication credential. See https://developers.google.com/identity/sign-in/web/devconsole-project."
        )
        return ProviderError(401, google_error(401, "UNAUTHENTICATED", message, [error_info("ACCESS_TOKEN_TYPE_UNSUPPORTED")]))
    message = (
        "Method doesn't allow unregistered callers (callers without established identity). "
        "Please use API Key or other form of API consumer identity to call this API."
    )
    return ProviderError(403, google_error(403, "PERMISSION_DENIED", message))


def html_not_found(request: Request, exc: HTTPException) -> Response:
    # Google's front end answers paths (and methods) it does not route with an HTML page, not JSON.
    body = (
        "<!DOCTYPE html>\n<html lang=en>\n  <meta charset=utf-8>\n  <title>Error 404 (Not Found)!!1</title>\n"
        f"  <p><b>404.</b> <ins>That’s an error.</ins>\n  <p>The requested URL <code>{request.url.path}</code> "
        "was not found on this server.  <ins>That’s all we know.</ins>\n"
    )
    return HTMLResponse(body, status_code=404)


# --------------------------------------------------------------------------- presets


def google_duration(seconds: float) -> str:
    """A google.protobuf.Duration in JSON: ``7s``, ``1.5s``."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def quota_failure(quota_id: str, value: str) -> dict[str, Any]:
    violation = {
        "quotaMetric": f"{SERVICE}/predict_long_running_requests",
        "quotaId": quota_id,
        "quotaDimensions": {"location": "global"},
        "quotaValue": value,
    }
    return {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [violation]}


def quota_help() -> dict[str, Any]:
    link = {"description": "Learn more about Gemini API quotas", "url": RATE_LIMITS_URL}
    return {"@type": "type.googleapis.com/google.rpc.Help", "links": [link]}


def exhausted(details: list[dict[str, Any]]) -> dict[str, Any]:
    message = (
        "You exceeded your current quota, please check your plan and billing details. "
        f"For more information on this error, head to: {RATE_LIMITS_URL}."
    )
    return {"status": 429, "body": google_error(429, "RESOURCE_EXHAUSTED", message, details)}


def preset_reply(name: str, resets_in_seconds: float) -> dict[str, Any]:
    """How Google words each reply preset. A rate limit says when to retry in a RetryInfo detail, not a header."""
    match name:
        case "rate_limited":
            retry = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": google_duration(resets_in_seconds)}
            return exhausted([quota_failure("PredictLongRunningRequestsPerMinutePerProjectPerModel", "2"), quota_help(), retry])
        case "insufficient_quota":
            return exhausted([quota_failure("PredictLongRunningRequestsPerDayPerProjectPerModel", "10"), quota_help()])
        case "unauthorized":
            message = "API key not valid. Please pass a valid API key."
            localized = {"@type": "type.googleapis.com/google.rpc.LocalizedMessage", "locale": "en-US", "message": message}
            return {"status": 400, "body": google_error(400, "INVALID_ARGUMENT", message, [error_info("API_KEY_INVALID"), localized])}
        case "payment_required":
            return {"status": 400, "body": google_error(400, "INVALID_ARGUMENT", "Veo is only accessible to billed users at this time.")}
        case "server_error":
            message = (
                "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting"
            )
            return {"status": 500, "body": google_error(500, "INTERNAL", message)}
    raise ValueError(f"no reply preset {name!r}")


# --------------------------------------------------------------------------- request validation


def gemini_credential(scope: Scope) -> str | None:
    key = (header(scope, "x-goog-api-key") or query_value(scope, "key") or "").strip()
    return key or None


def caller(request: Request) -> tuple[SandboxState, GeminiStore, str]:
    key = gemini_credential(request.scope)
    if key is None:
        raise no_api_key(request.scope)
    state = sandbox_state(request)
    return state, state.gemini, key


def parse_body(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise invalid_argument("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(payload, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    unknown = sorted(set(payload) - REQUEST_KEYS)
    if unknown:
        raise invalid_argument(f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.')
    return payload


def check_image(image: Any, field: str) -> None:
    if not isinstance(image, dict):
        raise invalid_argument(f"`{field}` must be an object with `bytesBase64Encoded` and `mimeType`.")
    if "gcsUri" in image:
        raise invalid_argument(f"`{field}.gcsUri` isn't supported by the Gemini API. Use `bytesBase64Encoded`.")
    unknown = sorted(set(image) - {"bytesBase64Encoded", "mimeType"})
    if unknown:
        raise invalid_argument(f"`{field}.{unknown[0]}` isn't supported by this model.")
    data = image.get("bytesBase64Encoded")
    try:
        decoded = base64.b64decode(data, validate=True) if isinstance(data, str) else b""
    except binascii.Error:
        decoded = b""
    if not decoded:
        raise invalid_argument(f"`{field}.bytesBase64Encoded` must be non-empty base64 image bytes.")
    if image.get("mimeType") not in IMAGE_MIME_TYPES:
        raise invalid_argument(f"`{field}.mimeType` must be one of {', '.join(IMAGE_MIME_TYPES)}.")


def check_video(video: Any) -> None:
    uri, encoded = (video.get("uri"), video.get("encodedVideo")) if isinstance(video, dict) else (None, None)
    if not isinstance(uri, str) and not isinstance(encoded, str):
        raise invalid_argument("`video` must be an object with a `uri` (a video this API generated) or `encodedVideo`.")


def check_reference_images(references: Any) -> None:
    if not isinstance(references, list) or not 1 <= len(references) <= MAX_REFERENCE_IMAGES:
        raise invalid_argument(f"`referenceImages` must be a list of 1 to {MAX_REFERENCE_IMAGES} images.")
    for index, reference in enumerate(references):
        if not isinstance(reference, dict) or reference.get("referenceType") not in REFERENCE_TYPES:
            raise invalid_argument(f"`referenceImages[{index}].referenceType` must be one of {', '.join(REFERENCE_TYPES)}.")
        check_image(reference.get("image"), f"referenceImages[{index}].image")


def the_instance(payload: Mapping[str, Any]) -> dict[str, Any]:
    instances = payload.get("instances")
    if not isinstance(instances, list) or len(instances) != 1 or not isinstance(instances[0], dict):
        raise invalid_argument("`instances` must hold exactly one instance (an object).")
    instance: dict[str, Any] = instances[0]
    unknown = sorted(set(instance) - INSTANCE_KEYS)
    if unknown:
        raise invalid_argument(f"`{unknown[0]}` isn't supported by this model.")
    prompt = instance.get("prompt")
    if prompt is not None and not isinstance(prompt, str):
        raise invalid_argument("`prompt` must be a string.")
    if not (prompt or "").strip() and "image" not in instance and "video" not in instance:
        raise invalid_argument("A text prompt is required (or an `image` or `video` to start from).")
    for field in ("image", "lastFrame"):
        if field in instance:
            check_image(instance[field], field)
    if "video" in instance:
        check_video(instance["video"])
    if "referenceImages" in instance:
        check_reference_images(instance["referenceImages"])
    return instance


def whole_number(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not float(value).is_integer():
        return None
    return int(value)


def choice(parameters: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    if name in parameters and parameters[name] not in allowed:
        raise invalid_argument(f"`{name}` must be one of {', '.join(allowed)}; got {parameters[name]!r}.")


def sample_count(model: str, parameters: Any) -> int:
    """Checks the parameters; answers how many videos to generate."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise invalid_argument("`parameters` must be an object.")
    known = {"aspectRatio", "resolution", "durationSeconds", "negativePrompt", "personGeneration", "sampleCount", "enhancePrompt"}
    unknown = sorted(set(parameters) - known)
    if unknown:
        raise invalid_argument(f"`{unknown[0]}` isn't supported by this model. Please remove it or refer to the Gemini API documentation.")
    choice(parameters, "aspectRatio", ASPECT_RATIOS)
    choice(parameters, "resolution", RESOLUTIONS)
    choice(parameters, "personGeneration", PERSON_GENERATION)
    durations = VEO2_DURATIONS if model.startswith("veo-2") else VEO3_DURATIONS
    if whole_number(parameters.get("durationSeconds", DEFAULT_DURATION)) not in durations:
        raise invalid_argument(f"`durationSeconds` must be one of {', '.join(map(str, durations))} for {model}.")
    if not isinstance(parameters.get("negativePrompt", ""), str):
        raise invalid_argument("`negativePrompt` must be a string.")
    if not isinstance(parameters.get("enhancePrompt", False), bool):
        raise invalid_argument("`enhancePrompt` must be a boolean.")
    count = whole_number(parameters.get("sampleCount", 1))
    if count is None or not 1 <= count <= MAX_SAMPLES:
        raise invalid_argument(f"`sampleCount` must be an integer from 1 to {MAX_SAMPLES}.")
    return count


# --------------------------------------------------------------------------- operations


def outcome_of(prompt: str) -> str:
    if FAIL_MARKER in prompt:
        return "failed"
    if FILTER_MARKER in prompt:
        return "filtered"
    return "succeeded"


def is_done(state: SandboxState, operation: Operation) -> bool:
    return state.clock() - operation.started >= state.complete_after_seconds


def operation_resource(state: SandboxState, operation: Operation, base: str) -> dict[str, Any]:
    if not is_done(state, operation):
        return {"name": operation.name}
    resource: dict[str, Any] = {"name": operation.name, "done": True}
    if operation.outcome == "failed":
        resource["error"] = {"code": 3, "message": FAILED_MESSAGE}
        return resource
    if operation.outcome == "filtered":
        videos: dict[str, Any] = {"raiMediaFilteredCount": 1, "raiMediaFilteredReasons": [FILTERED_REASON]}
    else:
        samples = [{"video": {"uri": f"{base}{PREFIX}/files/{file_id}:download?alt=media"}} for file_id in operation.file_ids]
        videos = {"generatedSamples": samples}
    resource["response"] = {"@type": RESPONSE_TYPE, "generateVideoResponse": videos}
    return resource


async def predict_long_running(request: Request) -> Response:
    state, store, key = caller(request)
    model = request.path_params["model"]
    if not model.startswith("veo-"):
        message = (
            f"models/{model} is not found for API version v1beta, or is not supported for predictLongRunning. "
            "Call ListModels to see the list of available models and their supported methods."
        )
        raise ProviderError(404, google_error(404, "NOT_FOUND", message))
    payload = parse_body(await request.body())
    prompt = the_instance(payload).get("prompt") or ""
    count = sample_count(model, payload.get("parameters"))
    try:
        content_bytes = marked_content_length(prompt, state)
    except ValueError as problem:
        raise invalid_argument(f"Invalid [bytes=N] marker in the prompt: {problem}.") from None
    outcome = outcome_of(prompt)
    file_ids = tuple(short_id() for _ in range(count)) if outcome == "succeeded" else ()
    operation = Operation(short_id(), model, key, prompt, state.clock(), outcome, file_ids)
    store.operations[operation.id] = operation
    for file_id in file_ids:
        store.files[file_id] = GeneratedFile(file_id, operation.id, key, content_bytes)
    return JSONResponse({"name": operation.name})


async def get_operation(request: Request) -> Response:
    state, store, key = caller(request)
    model, operation_id = request.path_params["model"], request.path_params["operation_id"]
    operation = store.operations.get(operation_id)
    if operation is None or operation.token != key or operation.model != model:
        raise ProviderError(404, google_error(404, "NOT_FOUND", f"Operation not found: models/{model}/operations/{operation_id}"))
    return JSONResponse(operation_resource(state, operation, origin(request)))


async def download_file(request: Request) -> Response:
    state, store, key = caller(request)
    file_id = request.path_params["file_id"]
    generated = store.files.get(file_id)
    operation = store.operations.get(generated.operation_id) if generated else None
    if generated is None or operation is None or generated.token != key or not is_done(state, operation):
        message = f"You do not have permission to access the File {file_id} or it may not exist."
        raise ProviderError(403, google_error(403, "PERMISSION_DENIED", message))
    if request.query_params.get("alt") != "media":
        raise invalid_argument("Downloading a file needs `alt=media`.")
    return Response(status_code=302, headers={"location": origin(request) + signed_path(state, file_id)})


GEMINI: Final = Provider("gemini", gemini_credential)


def gemini_app(state: SandboxState) -> Starlette:
    return provider_app(
        state,
        GEMINI,
        [
            Route("/models/{model}:predictLongRunning", predict_long_running, methods=["POST"]),
            Route("/models/{model}/operations/{operation_id}", get_operation, methods=["GET"]),
            Route("/files/{file_id}:download", download_file, methods=["GET"]),
        ],
        html_not_found,
    )
