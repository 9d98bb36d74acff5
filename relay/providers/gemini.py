"""Gemini's Veo behind the OpenAI Videos contract: pure translation, no I/O.

* Create: `POST {base}/models/{model}:predictLongRunning` with `instances[0].prompt`, the
  `input_reference` image as `instances[0].image.{bytesBase64Encoded,mimeType}` and `parameters`
  from `size` (aspectRatio + resolution) and `seconds` (durationSeconds), plus the Veo-only fields a
  client may send (`negative_prompt`, `person_generation`, `enhance_prompt`). The relay mints the
  `video_…` id; the operation name is kept in the video's record (JOB_FIELD).
* Retrieve: `GET {base}/{operation name}`. Not done: `in_progress`. Done with `error`, or with
  every sample removed by safety filters: `failed` with an OpenAI `error` {code, message}. Done with
  samples: `completed`, the first sample's URI being the content.
* Errors: Google's `{"error": {code, status, message, details}}` becomes the OpenAI envelope.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import replace
from typing import Any, Final
from urllib.parse import quote

from ..body import is_json, json_object
from ..errors import RelayError, shown
from ..outcomes import google_daily_quota, google_retry_delay
from ..sessions import SESSION_FIELD
from . import JOB_FIELD, AccountType, CreateRequest, Translated, UpstreamCall
from .inputs import (
    Image,
    checked_image,
    create_fields,
    decoded_data_url,
    invalid,
    is_form,
    is_http_url,
    json_fields,
    parts_of,
    reference_url,
    unsupported_content_type,
    whole_seconds,
    width_and_height,
)
from .jobs import (
    PATH_SEGMENT,
    Functions,
    answered_id,
    completed,
    failed,
    http_url,
    shown_message,
    stored_id,
    translated_error,
    video_object,
)

ACCOUNT_TYPE: Final = "gemini"
DEFAULT_SIZE: Final = "1280x720"  # Veo's default: 16:9 at 720p
DEFAULT_SECONDS: Final = "8"
# The OpenAI create fields this translation carries (and the relay's own session field, which
# stays with the relay), and Veo-only ones passed through by their Google names.
OPENAI_FIELDS: Final = frozenset({"prompt", "model", "seconds", "size", "input_reference", SESSION_FIELD})
VEO_FIELDS: Final = {"negative_prompt": "negativePrompt", "person_generation": "personGeneration", "enhance_prompt": "enhancePrompt"}
# A Google field named in an INVALID_ARGUMENT message, and the OpenAI field the client sent it as.
PARAM_OF_FIELD: Final = {
    "durationSeconds": "seconds",
    "aspectRatio": "size",
    "resolution": "size",
    "negativePrompt": "negative_prompt",
    "personGeneration": "person_generation",
    "enhancePrompt": "enhance_prompt",
    "prompt": "prompt",
    "image": "input_reference",
}
_OPERATION = re.compile(r"models/[A-Za-z0-9._-]{1,128}/operations/[A-Za-z0-9._-]{1,256}")
_NAMED_FIELD = re.compile(r"`([A-Za-z]+)")


# --------------------------------------------------------------------------- the client's create


def image_of_reference(reference: Any) -> Image | str:
    """`input_reference` in JSON or a form's text: a data URL, or an http(s) URL the relay must
    fetch (returned as is)."""
    url = reference_url(reference)
    if is_http_url(url):
        return url
    return checked_image(*decoded_data_url(url, ACCOUNT_TYPE))


def aspect_and_resolution(size: str) -> tuple[str, str]:
    """OpenAI's `WIDTHxHEIGHT` as Veo's aspect ratio (16:9 landscape, 9:16 portrait) and resolution (720p, 1080p)."""
    hint = "landscape (16:9) or portrait (9:16)"
    width, height = width_and_height(size, "Veo", hint)
    if width == height:
        raise invalid(f"Invalid size '{shown(size)}' for a Veo model: use WIDTHxHEIGHT, {hint}.", "size")
    return ("16:9" if width > height else "9:16"), ("1080p" if min(width, height) >= 1080 else "720p")


def duration_seconds(seconds: Any) -> int:
    return whole_seconds(seconds, "Veo", 8)


def veo_model(model: Any) -> str:
    name = model.removeprefix("models/") if isinstance(model, str) else ""
    if not PATH_SEGMENT.fullmatch(name):
        raise RelayError(400, "Name a Veo model (such as veo-3.0-generate-001) for a gemini account.", code="invalid_value", param="model")
    return name


def create_request(body: bytes, content_type: str | None) -> CreateRequest:
    """The predictLongRunning request for an OpenAI create (JSON or multipart)."""
    fields, image = create_fields(body, content_type, image_of_reference, checked_image)
    if is_form(content_type) and isinstance(fields.get("enhance_prompt"), str):
        fields["enhance_prompt"] = fields["enhance_prompt"].strip().lower() in ("true", "1")
    unknown = sorted(set(fields) - OPENAI_FIELDS - set(VEO_FIELDS))
    if unknown:
        raise invalid(f"The field '{shown(unknown[0])}' is not supported for gemini accounts.", unknown[0])
    model = veo_model(fields.get("model"))
    prompt = fields.get("prompt")
    if not isinstance(prompt, str):
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    size = fields.get("size") or DEFAULT_SIZE
    seconds = fields.get("seconds") or DEFAULT_SECONDS
    if not isinstance(size, str):
        raise invalid("size must be a string such as 1280x720.", "size")
    aspect, resolution = aspect_and_resolution(size)
    parameters: dict[str, Any] = {"aspectRatio": aspect, "resolution": resolution, "durationSeconds": duration_seconds(seconds)}
    for name, google_name in VEO_FIELDS.items():
        if name in fields:
            parameters[google_name] = fields[name]
    instance: dict[str, Any] = {"prompt": prompt}
    if isinstance(image, Image):
        instance["image"] = {"bytesBase64Encoded": base64.b64encode(image.data).decode("ascii"), "mimeType": image.mime_type}
    payload = {"instances": [instance], "parameters": parameters}
    call = UpstreamCall("POST", f"/models/{quote(model, safe='')}:predictLongRunning", json.dumps(payload).encode())
    return CreateRequest(call, model, size, str(duration_seconds(seconds)), prompt, image_url=image if isinstance(image, str) else None)


# Veo extends a video it generated by a fixed 7 s, at 720p, with the 3.1 models only.
EXTENSION_SECONDS: Final = 7
EXTENSION_MODELS: Final = ("veo-3.1-",)
_EXTENSION_FIELDS: Final = frozenset({"prompt", "seconds", "video", "video[id]", SESSION_FIELD})


def extension_request(body: bytes, content_type: str | None, source: dict[str, Any], video_uri: str) -> CreateRequest:
    """An OpenAI extension of `source` (the relay's record of a completed Veo video whose file is
    `video_uri`) as predictLongRunning with `instances[0].video`."""
    if is_json(content_type):
        fields = json_fields(body)
        if fields.get("input_reference") is not None:
            raise _no_extension_reference()
        fields.pop("input_reference", None)
    elif is_form(content_type):
        parts = parts_of(body, content_type)
        if any(part.name == "input_reference" for part in parts):
            raise _no_extension_reference()
        if any(part.filename is not None for part in parts):
            raise invalid("A gemini account extends a video named by id (video[id]), not an uploaded file.", "video")
        fields = {part.name: part.text for part in parts}
    else:
        raise unsupported_content_type()
    unknown = sorted(set(fields) - _EXTENSION_FIELDS)
    if unknown:
        raise invalid(f"The field '{shown(unknown[0])}' is not supported for extensions on gemini accounts.", unknown[0])
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    if str(fields.get("seconds")) != str(EXTENSION_SECONDS):
        raise invalid(f"Veo extends a video by exactly {EXTENSION_SECONDS} seconds: send seconds {EXTENSION_SECONDS}.", "seconds")
    model = str(source.get("model") or "")
    if not model.startswith(EXTENSION_MODELS):
        raise RelayError(
            400,
            f"Veo extends only videos made with its 3.1 models; '{shown(model)}' cannot be extended.",
            code="unsupported_for_model",
            param="video",
        )
    aspect, _ = aspect_and_resolution(str(source.get("size") or DEFAULT_SIZE))
    # Veo extends at 720p whatever the source's resolution: the answer says what is rendered.
    size = "1280x720" if aspect == "16:9" else "720x1280"
    payload = {"instances": [{"prompt": prompt, "video": {"uri": video_uri}}], "parameters": {"aspectRatio": aspect, "resolution": "720p"}}
    rendered_before = _number_or_none(source.get("seconds"))
    # The contract's `seconds` of an extension is the stitched total.
    total = int(rendered_before) + EXTENSION_SECONDS if rendered_before is not None else EXTENSION_SECONDS
    call = UpstreamCall("POST", f"/models/{quote(model, safe='')}:predictLongRunning", json.dumps(payload).encode())
    return CreateRequest(call, model, size, str(total), prompt)


def _no_extension_reference() -> RelayError:
    return invalid("Veo extends a video from its prompt alone: an extension takes no input_reference.", "input_reference")


def _number_or_none(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def with_image(request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
    """The create with the image its `image_url` named, once the relay has fetched it."""
    image = checked_image(data, mime_type)
    assert request.call.body is not None  # built by create_request
    payload = json.loads(request.call.body)
    payload["instances"][0]["image"] = {"bytesBase64Encoded": base64.b64encode(image.data).decode("ascii"), "mimeType": image.mime_type}
    return replace(request, call=replace(request.call, body=json.dumps(payload).encode()), image_url=None)


# --------------------------------------------------------------------------- jobs


def created(answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
    name = answered_id(answer, "name", _OPERATION)
    return {**video_object(video_id, request, now), JOB_FIELD: {"operation": name}} if name else None


def operation_name(resource: dict[str, Any]) -> str | None:
    return stored_id(resource, "operation", _OPERATION)


def poll_call(resource: dict[str, Any]) -> UpstreamCall | None:
    name = operation_name(resource)
    return UpstreamCall("GET", f"/{name}") if name else None


def _samples(operation: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    response = operation.get("response")
    videos = response.get("generateVideoResponse") if isinstance(response, dict) else None
    videos = videos if isinstance(videos, dict) else {}
    samples = videos.get("generatedSamples")
    return (samples if isinstance(samples, list) else []), videos


def job_state(resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
    """The video object after a poll: `in_progress` until done; then `completed` only with a sample."""
    operation = json_object(answer)
    if operation is None:
        return None
    if operation.get("done") is not True:
        return {**resource, "status": "in_progress", "progress": 0}
    error = operation.get("error")
    samples, videos = _samples(operation)
    if isinstance(error, dict):
        message = error.get("message") if isinstance(error.get("message"), str) else "Video generation failed."
        return failed(resource, now, "video_generation_failed", shown_message(str(message)))
    if any(content_url_of(sample) for sample in samples):
        return completed(resource, now)
    reasons = videos.get("raiMediaFilteredReasons")
    reason = reasons[0] if isinstance(reasons, list) and reasons and isinstance(reasons[0], str) else None
    if videos.get("raiMediaFilteredCount") or reason:
        return failed(resource, now, "moderation_blocked", reason or "Every generated video was removed by safety filters.")
    return failed(resource, now, "video_generation_failed", "The operation finished without a video.")


def content_url_of(sample: Any) -> str | None:
    video = sample.get("video") if isinstance(sample, dict) else None
    return http_url(video.get("uri")) if isinstance(video, dict) else None


def content_url(answer: bytes) -> str | None:
    operation = json_object(answer)
    if operation is None or operation.get("done") is not True or "error" in operation:
        return None
    return next((url for url in map(content_url_of, _samples(operation)[0]) if url), None)


# --------------------------------------------------------------------------- errors

# Google's canonical statuses as the HTTP status a client of the OpenAI contract gets.
_STATUS_BY_CODE: Final = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409,
    "RESOURCE_EXHAUSTED": 429,
    "CANCELLED": 499,
    "INTERNAL": 500,
    "UNIMPLEMENTED": 501,
    "UNAVAILABLE": 503,
    "DEADLINE_EXCEEDED": 504,
}
_ACCOUNT_KEY_REASONS: Final = frozenset({"API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED", "API_KEY_HTTP_REFERRER_BLOCKED"})


def google_error(body: bytes) -> tuple[str | None, str | None, list[Any]]:
    """(status, message, details) of Google's error envelope."""
    payload = json_object(body)
    error = payload.get("error") if payload else None
    if not isinstance(error, dict):
        return None, None, []
    status, message, details = error.get("status"), error.get("message"), error.get("details")
    return (
        status if isinstance(status, str) else None,
        message if isinstance(message, str) else None,
        details if isinstance(details, list) else [],
    )


def _reasons(details: list[Any]) -> set[str]:
    return {str(detail.get("reason")) for detail in details if isinstance(detail, dict) and "reason" in detail}


def param_of(message: str) -> str | None:
    """The OpenAI field an INVALID_ARGUMENT message is about, when it names one."""
    return next((PARAM_OF_FIELD[name] for name in _NAMED_FIELD.findall(message) if name in PARAM_OF_FIELD), None)


def error(status: int, body: bytes, *, creating: bool) -> Translated:
    """Google's error as the OpenAI envelope, with the status the account's state follows."""
    google_status, message, details = google_error(body)
    text = shown_message(message or f"The Gemini API answered HTTP {status}.")
    client_status = _STATUS_BY_CODE.get(google_status or "", status)
    param, headers, code = None, {}, None
    if google_status == "RESOURCE_EXHAUSTED" or status == 429:
        client_status = 429
        delay = google_retry_delay(body)
        if google_daily_quota(body):
            code = "insufficient_quota"  # spent for the day: retrying soon cannot help (clients are told so)
        elif delay is not None:
            headers = {"retry-after-ms": str(int(delay * 1000)), "retry-after": str(max(1, int(delay + 0.999)))}
    elif (
        _reasons(details) & _ACCOUNT_KEY_REASONS
        or google_status == "UNAUTHENTICATED"
        or (creating and google_status == "PERMISSION_DENIED")
    ):
        # The account's key, not the client's request: out of rotation, and another account may serve.
        client_status = 401
    elif "billed users" in text:
        client_status = 402
    elif client_status == 400:
        param = param_of(text)
    if creating and google_status == "NOT_FOUND":
        client_status, param = 400, "model"
    return translated_error(client_status, text, code=code, param=param, headers=headers)


GEMINI: Final = Functions(
    create_request=create_request,
    with_image=with_image,
    extension_request=extension_request,
    created=created,
    poll_call=poll_call,
    job_state=job_state,
    content_url=content_url,
    error=error,
    # Veo keeps no deletable video (its files expire by themselves): no delete_call.
)
GEMINI_TYPE: Final = AccountType(
    ACCOUNT_TYPE,
    auth_header=b"x-goog-api-key",
    default_base_api="https://generativelanguage.googleapis.com/v1beta",
    model_prefixes=("veo-",),
    default_seconds=float(DEFAULT_SECONDS),
    # A spent daily quota outranks a short retryDelay Google may add: the day must end first.
    cooldown_hints=("daily_quota", "retry_info", "retry_after"),
    translation=GEMINI,
    operations=frozenset({"extension"}),
)
