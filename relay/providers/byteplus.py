"""BytePlus ModelArk's Seedance behind the OpenAI Videos contract: pure translation, no I/O.

* Create: `POST {base}/contents/generations/tasks` with `model`, `content` (a `text` item holding
  the prompt, and the `input_reference` image as an `image_url` item with role `first_frame`),
  `ratio` and `resolution` from `size`, `duration` from `seconds`, and the Seedance-only fields a
  client may send (`seed`, `camera_fixed`, `watermark`, `generate_audio`). The relay mints the
  `video_…` id; the task id BytePlus answers is kept in the video's record (JOB_FIELD).
* Retrieve: `GET {base}/contents/generations/tasks/{id}`. `queued` stays `queued`, `running` is
  `in_progress`, `succeeded` is `completed` (its `content.video_url` being the content, a storage
  link fetched without the key), and `failed`, `cancelled` and `expired` are `failed` with an
  OpenAI `error` {code, message}.
* Delete: `DELETE {base}/contents/generations/tasks/{id}`: BytePlus cancels a queued task and
  deletes a finished one; it refuses a running one, which the client hears as a 409.
* Errors: ModelArk's `{"error": {"code", "message", "param"?, "type"?}}` becomes the OpenAI
  envelope, with the status the account's state follows.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import replace
from typing import Any, Final
from urllib.parse import quote

from ..body import is_json, json_object, media_type, multipart_boundary
from ..errors import RelayError, envelope, shown
from ..outcomes import redact
from ..sessions import SESSION_FIELD
from . import JOB_FIELD, AccountType, CreateRequest, Translated, UpstreamCall
from .gemini import multipart_parts, video_object

ACCOUNT_TYPE: Final = "byteplus"
DEFAULT_BASE_API: Final = "https://ark.ap-southeast.bytepluses.com/api/v3"
TASKS_PATH: Final = "/contents/generations/tasks"
DEFAULT_SIZE: Final = "1280x720"  # Seedance's text-to-video default ratio, 16:9, at 720p
DEFAULT_SECONDS: Final = "5"  # Seedance's default duration
# What BytePlus takes as a first frame (its list is longer: these are the ones clients send).
IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/webp", "image/bmp", "image/tiff", "image/gif")
OPENAI_FIELDS: Final = frozenset({"prompt", "model", "seconds", "size", "input_reference", SESSION_FIELD})
# Seedance-only fields passed through under their own names, with the type each must have.
SEEDANCE_FIELDS: Final = {"seed": int, "camera_fixed": bool, "watermark": bool, "generate_audio": bool}
# Seedance's aspect ratios, as width / height.
RATIOS: Final = {"21:9": 21 / 9, "16:9": 16 / 9, "4:3": 4 / 3, "1:1": 1.0, "3:4": 3 / 4, "9:16": 9 / 16}
# How far (relative) a size's shape may be from the ratio it is sent as: 1792x1024 is 16:9.
RATIO_TOLERANCE: Final = 0.03
# A ModelArk parameter named in an error, and the OpenAI field the client sent it as.
PARAM_OF_FIELD: Final = {
    "ratio": "size",
    "resolution": "size",
    "duration": "seconds",
    "model": "model",
    "text": "prompt",
    "content": "prompt",
    "image_url": "input_reference",
    "image": "input_reference",
    "seed": "seed",
    "camera_fixed": "camera_fixed",
    "watermark": "watermark",
    "generate_audio": "generate_audio",
}
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_TASK = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SIZE = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")
_DATA_URL = re.compile(r"data:([a-z]+/[a-z0-9.+-]+)(?:;[^,;]*)*;base64,(.*)", re.DOTALL | re.IGNORECASE)
_NAMED_FIELD = re.compile(r"`([A-Za-z_]+)`")
_TRUE: Final = ("true", "1")
_FALSE: Final = ("false", "0")


def _invalid(message: str, param: str) -> RelayError:
    return RelayError(400, message, code="invalid_value", param=param)


# --------------------------------------------------------------------------- the client's create


def image_url_of(reference: Any) -> str:
    """`input_reference` as the URL BytePlus takes: an http(s) URL as is (BytePlus fetches it, not
    the relay), or a data URL checked and with its media type in lower case, as BytePlus requires."""
    url = reference.get("image_url") if isinstance(reference, dict) else reference
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise _invalid("input_reference must be an image: an uploaded file, a data URL or an image URL.", "input_reference")
    url = url.strip()
    if url.lower().startswith(("https://", "http://")):
        return url
    match = _DATA_URL.fullmatch(url)
    if match is None:
        raise _invalid(
            "input_reference for a byteplus account must be an uploaded file, a data: URL (data:image/png;base64,...)"
            " or an http(s) URL of an image.",
            "input_reference",
        )
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise _invalid("input_reference holds a data URL whose base64 does not decode.", "input_reference") from None
    return data_url(data, match.group(1).lower())


def data_url(data: bytes, mime_type: str) -> str:
    if not data:
        raise _invalid("input_reference is empty.", "input_reference")
    if mime_type not in IMAGE_MIME_TYPES:
        raise _invalid(f"input_reference must be one of {', '.join(IMAGE_MIME_TYPES)}; got {shown(mime_type)}.", "input_reference")
    return f"data:{mime_type};base64,{base64.b64encode(data).decode('ascii')}"


def parse_json_create(body: bytes) -> tuple[dict[str, Any], str | None]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RelayError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RelayError(400, "The request body must be a JSON object.", code="invalid_json")
    reference = payload.pop("input_reference", None)
    return payload, image_url_of(reference) if reference is not None else None


def parse_multipart_create(body: bytes, boundary: bytes) -> tuple[dict[str, Any], str | None]:
    fields: dict[str, Any] = {}
    image: str | None = None
    for part in multipart_parts(body, boundary):
        if part.name == "input_reference":
            if part.filename is not None:
                image = data_url(part.data, part.content_type or "")
            else:
                image = image_url_of(part.data.decode("utf-8", errors="replace"))
        elif part.filename is not None:
            raise _invalid(f"The field '{shown(part.name)}' must be a form field, not a file.", part.name)
        else:
            fields[part.name] = part.data.decode("utf-8", errors="replace")
    return fields, image


def ratio_and_resolution(size: str) -> tuple[str, str]:
    """OpenAI's `WIDTHxHEIGHT` as Seedance's ratio (the one its shape is) and resolution (by its shorter side)."""
    match = _SIZE.fullmatch(size.strip())
    if match is None:
        raise _invalid(f"Invalid size '{shown(size)}' for a Seedance model: use WIDTHxHEIGHT, such as 1280x720.", "size")
    width, height = int(match.group(1)), int(match.group(2))
    shape = width / height
    ratio, exact = min(RATIOS.items(), key=lambda item: abs(math.log(shape / item[1])))
    if abs(shape / exact - 1) > RATIO_TOLERANCE:
        raise _invalid(
            f"Invalid size '{shown(size)}' for a Seedance model: its shape must be one of {', '.join(RATIOS)}.",
            "size",
        )
    shorter = min(width, height)
    resolution = "1080p" if shorter >= 1080 else "720p" if shorter >= 720 else "480p"
    return ratio, resolution


def duration_seconds(seconds: Any) -> int:
    text = str(seconds).strip()
    if isinstance(seconds, bool) or not text.isascii() or not text.isdigit() or len(text) > 3:
        raise _invalid(f"Invalid seconds '{shown(seconds)}' for a Seedance model: a whole number of seconds, such as 5.", "seconds")
    return int(text)


def seedance_model(model: Any) -> str:
    if not isinstance(model, str) or not _MODEL.fullmatch(model):
        raise RelayError(
            400, "Name a Seedance model (such as seedance-1-0-pro-250528) for a byteplus account.", code="invalid_value", param="model"
        )
    return model


def seedance_value(name: str, value: Any) -> Any:
    """A Seedance-only field as its own type; a form sends every value as text."""
    kind = SEEDANCE_FIELDS[name]
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise _invalid(f"{name} must be true or false.", name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.lstrip("-").isdigit() and text.isascii() and len(text) <= 11:
        return int(text)
    raise _invalid(f"{name} must be a whole number.", name)


def create_request(body: bytes, content_type: str | None) -> CreateRequest:
    """The task create for an OpenAI create (JSON or multipart)."""
    if is_json(content_type):
        fields, image = parse_json_create(body)
    elif media_type(content_type) == "multipart/form-data":
        fields, image = parse_multipart_create(body, multipart_boundary(content_type or ""))
    else:
        raise RelayError(400, "Send the request body as application/json or multipart/form-data.", code="unsupported_content_type")
    unknown = sorted(set(fields) - OPENAI_FIELDS - set(SEEDANCE_FIELDS))
    if unknown:
        raise _invalid(f"The field '{shown(unknown[0])}' is not supported for byteplus accounts.", unknown[0])
    model = seedance_model(fields.get("model"))
    prompt = fields.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    size = fields.get("size") or DEFAULT_SIZE
    if not isinstance(size, str):
        raise _invalid("size must be a string such as 1280x720.", "size")
    ratio, resolution = ratio_and_resolution(size)
    duration = duration_seconds(fields.get("seconds") or DEFAULT_SECONDS)
    content: list[dict[str, Any]] = [{"type": "text", "text": prompt}]
    if image is not None:
        content.append({"type": "image_url", "image_url": {"url": image}, "role": "first_frame"})
    payload: dict[str, Any] = {"model": model, "content": content, "ratio": ratio, "resolution": resolution, "duration": duration}
    for name in SEEDANCE_FIELDS:
        if name in fields:
            payload[name] = seedance_value(name, fields[name])
    call = UpstreamCall("POST", TASKS_PATH, json.dumps(payload).encode())
    return CreateRequest(call, model, size, str(duration), prompt)


def with_image(request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
    """Never needed (BytePlus fetches image URLs itself), but the image as a data URL if it were."""
    assert request.call.body is not None  # built by create_request
    payload = json.loads(request.call.body)
    payload["content"].append({"type": "image_url", "image_url": {"url": data_url(data, mime_type)}, "role": "first_frame"})
    return replace(request, call=replace(request.call, body=json.dumps(payload).encode()), image_url=None)


# --------------------------------------------------------------------------- jobs


def created(answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
    task = json_object(answer)
    task_id = task.get("id") if task else None
    if not isinstance(task_id, str) or not _TASK.fullmatch(task_id):
        return None
    return {**video_object(video_id, request, now), JOB_FIELD: {"task": task_id, "status": "queued"}}


def task_id(resource: dict[str, Any]) -> str | None:
    job = resource.get(JOB_FIELD)
    value = job.get("task") if isinstance(job, dict) else None
    return value if isinstance(value, str) and _TASK.fullmatch(value) else None


def poll_call(resource: dict[str, Any]) -> UpstreamCall | None:
    task = task_id(resource)
    return UpstreamCall("GET", f"{TASKS_PATH}/{quote(task, safe='')}") if task else None


def delete_call(resource: dict[str, Any]) -> UpstreamCall | None:
    task = task_id(resource)
    job = resource.get(JOB_FIELD)
    # A cancelled task cannot be deleted (BytePlus drops it itself after 24 h): the relay's record alone goes.
    if task is None or (isinstance(job, dict) and job.get("status") == "cancelled"):
        return None
    return UpstreamCall("DELETE", f"{TASKS_PATH}/{quote(task, safe='')}")


# A finished task that made no video, as the OpenAI error it becomes.
_ENDED: Final = {
    "cancelled": ("video_cancelled", "The task was cancelled at BytePlus before it started."),
    "expired": ("video_expired", "The task did not finish within BytePlus's execution time limit."),
}


def task_failure(task: dict[str, Any]) -> dict[str, str]:
    error = task.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = redact(str(message)[:500]) if isinstance(message, str) and message else "Video generation failed."
    if isinstance(code, str) and "SensitiveContentDetected" in code:
        return {"code": "moderation_blocked", "message": text}
    return {"code": "video_generation_failed", "message": text}


def job_state(resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
    """The video object after a poll, with the task's own status kept privately (delete reads it)."""
    task = json_object(answer)
    status = task.get("status") if task else None
    if task is None or status not in ("queued", "running", "succeeded", "failed", "cancelled", "expired"):
        return None
    job = resource.get(JOB_FIELD)
    updated = {**resource, JOB_FIELD: {**(job if isinstance(job, dict) else {}), "status": status}}
    if status == "queued":
        updated.update(status="queued", progress=0)
    elif status == "running":
        updated.update(status="in_progress", progress=0)
    elif status == "succeeded" and content_url(answer) is not None:
        updated.update(status="completed", progress=100, completed_at=int(now), error=None)
    else:
        if status in _ENDED:
            code, message = _ENDED[status]
            failure = {"code": code, "message": message}
        elif status == "succeeded":
            failure = {"code": "video_generation_failed", "message": "The task succeeded without a video URL."}
        else:
            failure = task_failure(task)
        updated.update(status="failed", progress=100, completed_at=int(now), error=failure)
    return updated


def content_url(answer: bytes) -> str | None:
    task = json_object(answer)
    if task is None or task.get("status") != "succeeded":
        return None
    content = task.get("content")
    url = content.get("video_url") if isinstance(content, dict) else None
    return url if isinstance(url, str) and url.startswith(("https://", "http://")) else None


# --------------------------------------------------------------------------- errors

_CODE_BY_STATUS: Final = {
    400: "invalid_value",
    401: "invalid_api_key",
    402: "payment_required",
    403: "permission_denied",
    404: "not_found",
    409: "conflict",
    429: "rate_limit_exceeded",
}
# 403s and 429s that need an operator (money, a limit set in the console), not time or another request.
_BILLING_CODES: Final = ("AccountOverdueError", "OperationDenied.ServiceOverdue", "SetLimitExceeded")
_KEY_CODES: Final = ("AuthenticationError", "InvalidAccountStatus")


def modelark_error(body: bytes) -> tuple[str, str | None, str | None]:
    """(code, message, param) of ModelArk's error envelope; code "" when it is not one."""
    payload = json_object(body)
    error = payload.get("error") if payload else None
    if not isinstance(error, dict):
        return "", None, None
    code, message, param = error.get("code"), error.get("message"), error.get("param")
    return (
        code if isinstance(code, str) else "",
        message if isinstance(message, str) else None,
        param if isinstance(param, str) and param else None,
    )


def param_of(code: str, message: str, named: str | None) -> str | None:
    """The OpenAI field a 400 is about: ModelArk's `param`, a `InvalidParameter.X` code, or a field in backticks."""
    candidates = [named, code.split(".", 1)[1] if "." in code else None, *_NAMED_FIELD.findall(message)]
    for candidate in candidates:
        if candidate:
            field = candidate.split(".")[0].split("[")[0].lower()
            if field in PARAM_OF_FIELD:
                return PARAM_OF_FIELD[field]
    return None


def error(status: int, body: bytes, *, creating: bool) -> Translated:
    """ModelArk's error as the OpenAI envelope, with the status the account's state follows."""
    code, message, named = modelark_error(body)
    text = redact((message or f"BytePlus ModelArk answered HTTP {status}.")[:500])
    client_status, param, client_code = status, None, None
    if code in _KEY_CODES or status == 401:
        # The account's key, not the client's request: out of rotation, and another account may serve.
        client_status = 401
    elif code in _BILLING_CODES or (code == "QuotaExceeded" and "free" in text.lower()):
        # Overdue, a spending limit reached, the free trial spent: an operator must act, and another account may serve.
        client_status = 402
    elif status == 429:
        # The queued-task cap or a 5-hour/weekly/monthly usage quota: retrying soon will not help.
        client_code = "insufficient_quota" if code == "QuotaExceeded" else None
    elif creating and code == "AccessDenied":
        client_status = 401
    elif code in ("ModelNotOpen", "OperationDenied.ServiceNotOpen"):
        client_status, client_code, param = 403, "model_not_activated", "model"
    elif creating and status == 404:
        client_status, client_code, param = 400, "model_not_found", "model"
    elif code == "TaskRunningCannotCancel" or (status == 409 and not creating):
        client_status, client_code = 409, "video_in_progress"
        text = f"BytePlus cannot delete a running task: delete the video once it has finished. ({text})"
    elif status == 400:
        param = param_of(code, text, named)
        if "SensitiveContentDetected" in code:
            client_code = "moderation_blocked"
        elif code.startswith("InvalidImageURL"):
            param = "input_reference"
    client_code = client_code or _CODE_BY_STATUS.get(client_status, "upstream_error")
    payload = json.loads(envelope(text, status=client_status, code=client_code, param=param))
    return Translated(client_status, payload)


class BytePlus:
    """Seedance's translation (relay.providers.Translation)."""

    def create_request(self, body: bytes, content_type: str | None) -> CreateRequest:
        return create_request(body, content_type)

    def with_image(self, request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
        return with_image(request, data, mime_type)

    def extension_request(self, body: bytes, content_type: str | None, source: dict[str, Any], video_uri: str) -> CreateRequest:
        # Never called: the type carries no extensions, so the routes refuse them first.
        raise RelayError(400, "Extension requests are not supported on byteplus accounts.", code="unsupported_for_account_type")

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
        return delete_call(resource)

    def error(self, status: int, body: bytes, *, creating: bool) -> Translated:
        return error(status, body, creating=creating)


BYTEPLUS: Final = BytePlus()
BYTEPLUS_TYPE: Final = AccountType(
    ACCOUNT_TYPE,
    default_base_api=DEFAULT_BASE_API,
    model_prefixes=("seedance-", "dreamina-seedance-"),
    default_seconds=float(DEFAULT_SECONDS),
    # ModelArk documents no retry hint (its limits are per minute): a Retry-After, if a gateway in
    # front adds one, is trusted; else the configured default cooldown.
    cooldown_hints=("retry_after_ms", "retry_after"),
    translation=BYTEPLUS,
    operations=frozenset(),
)
