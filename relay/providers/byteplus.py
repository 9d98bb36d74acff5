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

import json
import math
import re
from dataclasses import replace
from typing import Any, Final
from urllib.parse import quote

from ..body import json_object
from ..errors import RelayError, shown
from ..sessions import SESSION_FIELD
from . import JOB_FIELD, AccountType, CreateRequest, Translated, UpstreamCall
from .inputs import (
    checked_image,
    create_fields,
    data_url as image_data_url,
    decoded_data_url,
    invalid,
    is_http_url,
    reference_url,
    required_prompt,
    whole_seconds,
    width_and_height,
)
from .jobs import (
    CODE_BY_STATUS,
    PATH_SEGMENT,
    Functions,
    answered_id,
    completed,
    failed,
    http_url,
    no_extensions,
    shown_message,
    stored_id,
    translated_error,
    video_object,
)

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
_NAMED_FIELD = re.compile(r"`([A-Za-z_]+)`")
_TRUE: Final = ("true", "1")
_FALSE: Final = ("false", "0")


# --------------------------------------------------------------------------- the client's create


def image_url_of(reference: Any) -> str:
    """`input_reference` as the URL BytePlus takes: an http(s) URL as is (BytePlus fetches it, not
    the relay), or a data URL checked and with its media type in lower case, as BytePlus requires."""
    url = reference_url(reference)
    return url if is_http_url(url) else data_url(*decoded_data_url(url, ACCOUNT_TYPE))


def data_url(data: bytes, mime_type: str) -> str:
    return image_data_url(checked_image(data, mime_type, IMAGE_MIME_TYPES))


def ratio_and_resolution(size: str) -> tuple[str, str]:
    """OpenAI's `WIDTHxHEIGHT` as Seedance's ratio (the one its shape is) and resolution (by its shorter side)."""
    width, height = width_and_height(size, "Seedance")
    shape = width / height
    ratio, exact = min(RATIOS.items(), key=lambda item: abs(math.log(shape / item[1])))
    if abs(shape / exact - 1) > RATIO_TOLERANCE:
        raise invalid(
            f"Invalid size '{shown(size)}' for a Seedance model: its shape must be one of {', '.join(RATIOS)}.",
            "size",
        )
    shorter = min(width, height)
    resolution = "1080p" if shorter >= 1080 else "720p" if shorter >= 720 else "480p"
    return ratio, resolution


def duration_seconds(seconds: Any) -> int:
    return whole_seconds(seconds, "Seedance", 5)


def seedance_model(model: Any) -> str:
    if not isinstance(model, str) or not PATH_SEGMENT.fullmatch(model):
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
        raise invalid(f"{name} must be true or false.", name)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = value.strip() if isinstance(value, str) else ""
    if text.lstrip("-").isdigit() and text.isascii() and len(text) <= 11:
        return int(text)
    raise invalid(f"{name} must be a whole number.", name)


def create_request(body: bytes, content_type: str | None) -> CreateRequest:
    """The task create for an OpenAI create (JSON or multipart)."""
    fields, image = create_fields(body, content_type, image_url_of, data_url)
    unknown = sorted(set(fields) - OPENAI_FIELDS - set(SEEDANCE_FIELDS))
    if unknown:
        raise invalid(f"The field '{shown(unknown[0])}' is not supported for byteplus accounts.", unknown[0])
    model = seedance_model(fields.get("model"))
    prompt = required_prompt(fields.get("prompt"))
    size = fields.get("size") or DEFAULT_SIZE
    if not isinstance(size, str):
        raise invalid("size must be a string such as 1280x720.", "size")
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
    task = answered_id(answer, "id", PATH_SEGMENT)
    return {**video_object(video_id, request, now), JOB_FIELD: {"task": task, "status": "queued"}} if task else None


def task_id(resource: dict[str, Any]) -> str | None:
    return stored_id(resource, "task", PATH_SEGMENT)


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


def task_failure(task: dict[str, Any]) -> tuple[str, str]:
    """(code, message) of a failed task's error."""
    error = task.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = shown_message(message) if isinstance(message, str) and message else "Video generation failed."
    if isinstance(code, str) and "SensitiveContentDetected" in code:
        return "moderation_blocked", text
    return "video_generation_failed", text


def job_state(resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
    """The video object after a poll, with the task's own status kept privately (delete reads it)."""
    task = json_object(answer)
    status = task.get("status") if task else None
    if task is None or status not in ("queued", "running", "succeeded", "failed", "cancelled", "expired"):
        return None
    job = resource.get(JOB_FIELD)
    updated = {**resource, JOB_FIELD: {**(job if isinstance(job, dict) else {}), "status": status}}
    if status in ("queued", "running"):
        return {**updated, "status": "queued" if status == "queued" else "in_progress", "progress": 0}
    if status == "succeeded" and content_url(answer) is not None:
        return completed(updated, now)
    if status in _ENDED:
        return failed(updated, now, *_ENDED[status])
    if status == "succeeded":
        return failed(updated, now, "video_generation_failed", "The task succeeded without a video URL.")
    return failed(updated, now, *task_failure(task))


def content_url(answer: bytes) -> str | None:
    task = json_object(answer)
    if task is None or task.get("status") != "succeeded":
        return None
    content = task.get("content")
    return http_url(content.get("video_url")) if isinstance(content, dict) else None


# --------------------------------------------------------------------------- errors

_CODE_BY_STATUS: Final = {**CODE_BY_STATUS, 402: "payment_required", 409: "conflict"}
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
    text = shown_message(message or f"BytePlus ModelArk answered HTTP {status}.")
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
    return translated_error(client_status, text, code=client_code, param=param)


BYTEPLUS: Final = Functions(
    create_request=create_request,
    with_image=with_image,
    extension_request=no_extensions(ACCOUNT_TYPE),
    created=created,
    poll_call=poll_call,
    job_state=job_state,
    content_url=content_url,
    error=error,
    delete_call=delete_call,
)
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
