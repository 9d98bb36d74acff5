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
import binascii
import json
import re
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import quote

from ..body import is_json, json_object, media_type, multipart_boundary
from ..errors import RelayError, envelope, shown
from ..outcomes import google_daily_quota, google_retry_delay, redact
from ..sessions import SESSION_FIELD
from . import JOB_FIELD, AccountType, CreateRequest, Translated, UpstreamCall

ACCOUNT_TYPE: Final = "gemini"
DEFAULT_SIZE: Final = "1280x720"  # Veo's default: 16:9 at 720p
DEFAULT_SECONDS: Final = "8"
IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/webp")
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
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_OPERATION = re.compile(r"models/[A-Za-z0-9._-]{1,128}/operations/[A-Za-z0-9._-]{1,256}")
_SIZE = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")
_DATA_URL = re.compile(r"data:([a-z]+/[a-z0-9.+-]+)(?:;[^,;]*)*;base64,(.*)", re.DOTALL | re.IGNORECASE)
_NAMED_FIELD = re.compile(r"`([A-Za-z]+)")


def _invalid(message: str, param: str) -> RelayError:
    return RelayError(400, message, code="invalid_value", param=param)


# --------------------------------------------------------------------------- the client's create


@dataclass(frozen=True)
class Image:
    data: bytes
    mime_type: str


def parse_json_create(body: bytes) -> tuple[dict[str, Any], Image | str | None]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RelayError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RelayError(400, "The request body must be a JSON object.", code="invalid_json")
    reference = payload.pop("input_reference", None)
    return payload, image_of_reference(reference) if reference is not None else None


def image_of_reference(reference: Any) -> Image | str:
    """`input_reference` in JSON: a data URL, or an http(s) URL the relay must fetch (returned as
    is), alone or as `{"image_url": ...}`."""
    url = reference.get("image_url") if isinstance(reference, dict) else reference
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise _invalid("input_reference must be an image: an uploaded file, a data URL or an image URL.", "input_reference")
    if url.strip().lower().startswith(("https://", "http://")):
        return url.strip()
    return image_of_data_url(url)


def image_of_data_url(url: str) -> Image:
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise _invalid(
            "input_reference for a gemini account must be an uploaded file, a data: URL (data:image/png;base64,...)"
            " or an http(s) URL of an image.",
            "input_reference",
        )
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise _invalid("input_reference holds a data URL whose base64 does not decode.", "input_reference") from None
    return checked_image(data, match.group(1).lower())


def checked_image(data: bytes, mime_type: str) -> Image:
    if not data:
        raise _invalid("input_reference is empty.", "input_reference")
    if mime_type not in IMAGE_MIME_TYPES:
        raise _invalid(f"input_reference must be one of {', '.join(IMAGE_MIME_TYPES)}; got {shown(mime_type)}.", "input_reference")
    return Image(data, mime_type)


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


_DISPOSITION_PARAMETER = re.compile(r';\s*([A-Za-z*]+)\s*=\s*("[^"]*"|[^;\s]*)')


def multipart_parts(body: bytes, boundary: bytes) -> list[Part]:
    """Every part of a form (its framing already checked strictly by relay.body.body_fields)."""
    delimiter = b"\r\n--" + boundary
    pieces = (b"\r\n" + body).split(delimiter)
    parts = []
    for piece in pieces[1:]:
        if piece.startswith(b"--"):
            break
        _, _, rest = piece.partition(b"\r\n")
        raw_headers, _, data = rest.partition(b"\r\n\r\n")
        name = filename = content_type = None
        for line in raw_headers.decode("utf-8", errors="replace").split("\r\n"):
            header, _, value = line.partition(":")
            if header.strip().lower() == "content-disposition":
                parameters = {key.lower(): raw.strip('"') for key, raw in _DISPOSITION_PARAMETER.findall(value)}
                name, filename = parameters.get("name"), parameters.get("filename")
            elif header.strip().lower() == "content-type":
                content_type = value.strip().split(";")[0].strip().lower()
        if name is not None:
            parts.append(Part(name, filename, content_type, data))
    return parts


def parse_multipart_create(body: bytes, boundary: bytes) -> tuple[dict[str, Any], Image | str | None]:
    fields: dict[str, Any] = {}
    image: Image | str | None = None
    for part in multipart_parts(body, boundary):
        if part.name == "input_reference":
            if part.filename is not None:
                image = checked_image(part.data, part.content_type or "")
            else:
                image = image_of_reference(part.data.decode("utf-8", errors="replace"))
        elif part.filename is not None:
            raise _invalid(f"The field '{shown(part.name)}' must be a form field, not a file.", part.name)
        else:
            fields[part.name] = part.data.decode("utf-8", errors="replace")
    if isinstance(fields.get("enhance_prompt"), str):
        fields["enhance_prompt"] = fields["enhance_prompt"].strip().lower() in ("true", "1")
    return fields, image


def aspect_and_resolution(size: str) -> tuple[str, str]:
    """OpenAI's `WIDTHxHEIGHT` as Veo's aspect ratio (16:9 landscape, 9:16 portrait) and resolution (720p, 1080p)."""
    match = _SIZE.fullmatch(size.strip())
    if match is None or match.group(1) == match.group(2):
        raise _invalid(f"Invalid size '{shown(size)}' for a Veo model: use WIDTHxHEIGHT, landscape (16:9) or portrait (9:16).", "size")
    width, height = int(match.group(1)), int(match.group(2))
    return ("16:9" if width > height else "9:16"), ("1080p" if min(width, height) >= 1080 else "720p")


def duration_seconds(seconds: Any) -> int:
    text = str(seconds).strip()
    if isinstance(seconds, bool) or not text.isascii() or not text.isdigit() or len(text) > 3:
        raise _invalid(f"Invalid seconds '{shown(seconds)}' for a Veo model: a whole number of seconds, such as 8.", "seconds")
    return int(text)


def veo_model(model: Any) -> str:
    name = model.removeprefix("models/") if isinstance(model, str) else ""
    if not _MODEL.fullmatch(name):
        raise RelayError(400, "Name a Veo model (such as veo-3.0-generate-001) for a gemini account.", code="invalid_value", param="model")
    return name


def create_request(body: bytes, content_type: str | None) -> CreateRequest:
    """The predictLongRunning request for an OpenAI create (JSON or multipart)."""
    if is_json(content_type):
        fields, image = parse_json_create(body)
    elif media_type(content_type) == "multipart/form-data":
        fields, image = parse_multipart_create(body, multipart_boundary(content_type or ""))
    else:
        raise RelayError(400, "Send the request body as application/json or multipart/form-data.", code="unsupported_content_type")
    unknown = sorted(set(fields) - OPENAI_FIELDS - set(VEO_FIELDS))
    if unknown:
        raise _invalid(f"The field '{shown(unknown[0])}' is not supported for gemini accounts.", unknown[0])
    model = veo_model(fields.get("model"))
    prompt = fields.get("prompt")
    if not isinstance(prompt, str):
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    size = fields.get("size") or DEFAULT_SIZE
    seconds = fields.get("seconds") or DEFAULT_SECONDS
    if not isinstance(size, str):
        raise _invalid("size must be a string such as 1280x720.", "size")
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
        fields, reference = parse_json_create(body)
        if reference is not None:
            raise _no_extension_reference()
    elif media_type(content_type) == "multipart/form-data":
        parts = multipart_parts(body, multipart_boundary(content_type or ""))
        if any(part.name == "input_reference" for part in parts):
            raise _no_extension_reference()
        if any(part.filename is not None for part in parts):
            raise _invalid("A gemini account extends a video named by id (video[id]), not an uploaded file.", "video")
        fields = {part.name: part.data.decode("utf-8", errors="replace") for part in parts}
    else:
        raise RelayError(400, "Send the request body as application/json or multipart/form-data.", code="unsupported_content_type")
    unknown = sorted(set(fields) - _EXTENSION_FIELDS)
    if unknown:
        raise _invalid(f"The field '{shown(unknown[0])}' is not supported for extensions on gemini accounts.", unknown[0])
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    if str(fields.get("seconds")) != str(EXTENSION_SECONDS):
        raise _invalid(f"Veo extends a video by exactly {EXTENSION_SECONDS} seconds: send seconds {EXTENSION_SECONDS}.", "seconds")
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
    return _invalid("Veo extends a video from its prompt alone: an extension takes no input_reference.", "input_reference")


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


def video_object(video_id: str, request: CreateRequest, now: float) -> dict[str, Any]:
    return {
        "id": video_id,
        "object": "video",
        "model": request.model,
        "status": "queued",
        "progress": 0,
        "created_at": int(now),
        "completed_at": None,
        "expires_at": None,
        "size": request.size,
        "seconds": request.seconds,
        "remixed_from_video_id": None,
        "prompt": request.prompt,
        "error": None,
    }


def created(answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
    operation = json_object(answer)
    name = operation.get("name") if operation else None
    if not isinstance(name, str) or not _OPERATION.fullmatch(name):
        return None
    return {**video_object(video_id, request, now), JOB_FIELD: {"operation": name}}


def operation_name(resource: dict[str, Any]) -> str | None:
    job = resource.get(JOB_FIELD)
    name = job.get("operation") if isinstance(job, dict) else None
    return name if isinstance(name, str) and _OPERATION.fullmatch(name) else None


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
    updated = dict(resource)
    if operation.get("done") is not True:
        updated.update(status="in_progress", progress=0)
        return updated
    error = operation.get("error")
    samples, videos = _samples(operation)
    if isinstance(error, dict):
        message = error.get("message") if isinstance(error.get("message"), str) else "Video generation failed."
        failure = {"code": "video_generation_failed", "message": redact(str(message)[:500])}
    elif not any(content_url_of(sample) for sample in samples):
        reasons = videos.get("raiMediaFilteredReasons")
        reason = reasons[0] if isinstance(reasons, list) and reasons and isinstance(reasons[0], str) else None
        if videos.get("raiMediaFilteredCount") or reason:
            failure = {"code": "moderation_blocked", "message": reason or "Every generated video was removed by safety filters."}
        else:
            failure = {"code": "video_generation_failed", "message": "The operation finished without a video."}
    else:
        updated.update(status="completed", progress=100, completed_at=int(now), error=None)
        return updated
    updated.update(status="failed", progress=100, completed_at=int(now), error=failure)
    return updated


def content_url_of(sample: Any) -> str | None:
    video = sample.get("video") if isinstance(sample, dict) else None
    uri = video.get("uri") if isinstance(video, dict) else None
    return uri if isinstance(uri, str) and uri.startswith(("https://", "http://")) else None


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
_CODE_BY_STATUS: Final = {
    400: "invalid_value",
    401: "invalid_api_key",
    403: "permission_denied",
    404: "not_found",
    429: "rate_limit_exceeded",
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
    text = redact((message or f"The Gemini API answered HTTP {status}.")[:500])
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
    code = code or ("model_not_found" if param == "model" else _CODE_BY_STATUS.get(client_status, "upstream_error"))
    payload = json.loads(envelope(text, status=client_status, code=code, param=param))
    return Translated(client_status, payload, headers)


class Gemini:
    """Veo's translation (relay.providers.Translation)."""

    def create_request(self, body: bytes, content_type: str | None) -> CreateRequest:
        return create_request(body, content_type)

    def with_image(self, request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
        return with_image(request, data, mime_type)

    def extension_request(self, body: bytes, content_type: str | None, source: dict[str, Any], video_uri: str) -> CreateRequest:
        return extension_request(body, content_type, source, video_uri)

    def created(self, answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
        return created(answer, request, video_id, now)

    def poll_call(self, resource: dict[str, Any]) -> UpstreamCall | None:
        return poll_call(resource)

    def result_call(self, resource: dict[str, Any], answer: bytes) -> UpstreamCall | None:
        return None

    def job_state(self, resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
        return job_state(resource, answer, now)

    def content_url(self, answer: bytes) -> str | None:
        return content_url(answer)

    def delete_call(self, resource: dict[str, Any]) -> UpstreamCall | None:
        # Veo keeps no deletable video (its files expire by themselves).
        return None

    def error(self, status: int, body: bytes, *, creating: bool) -> Translated:
        return error(status, body, creating=creating)


GEMINI: Final = Gemini()
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
