"""fal's queue behind the OpenAI Videos contract: pure translation, no I/O.

* Create: `POST {base}/{model id}` (the relay's `model` is fal's model id, such as
  `fal-ai/kling-video/v2.1/master/text-to-video`) with the model's input as a flat JSON object:
  `prompt`; `seconds` as `duration`; `size` as `aspect_ratio` and `resolution`; `input_reference`
  as `image_url` (an uploaded image as a data URL, an image URL as given, for fal to fetch); every
  other field the client sent, passed through for the model to read. The relay mints the `video_…`
  id and keeps fal's `request_id` and app id (the model id's first two segments, which fal's
  status, result and cancel URLs use) in its record (JOB_FIELD).
* Retrieve: `GET {base}/{app}/requests/{id}/status`: `IN_QUEUE` is `queued`, `IN_PROGRESS`
  `in_progress`; `COMPLETED` calls for the result, `GET {base}/{app}/requests/{id}`: a video URL
  in it is `completed`, an error answer (the model's 422, a runner's failure) is `failed`.
* Content: the result's video URL, on fal's CDN (another origin: fetched without the key).
* Delete: `PUT {base}/{app}/requests/{id}/cancel` while the video is queued, so fal does not render
  (nor charge) what the client no longer wants; a finished job has nothing to cancel.
* Errors: fal's `{"detail": ...}` (a string, or a list of `{loc, msg, type}`) become the envelope.

fal retries a queued request itself when a runner answers 429 or 503. The relay leaves that on (it
never sends `x-fal-no-retry`): those retries happen after fal accepted the request, on the job
the relay already holds, where the relay's failover cannot act; without them a passing runner
failure would end the client's video `failed`. A 429 to the submit itself reaches the relay
whatever the header says, and fails over.
"""

from __future__ import annotations

import json
import re
from typing import Any, Final

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
    is_form,
    is_http_url,
    reference_url,
    required_prompt,
    whole_seconds as checked_seconds,
    width_and_height,
)
from .jobs import (
    PATH_SEGMENT,
    Functions,
    answered_id,
    completed,
    failed,
    http_url,
    no_extensions,
    shown_message,
    translated_error,
    video_object,
)

ACCOUNT_TYPE: Final = "fal"
DEFAULT_SECONDS: Final = "5"  # the default duration of most of fal's video models (Kling, Wan, Seedance)
DEFAULT_SIZE: Final = "1280x720"  # the 16:9 most of them render without an aspect_ratio
# OpenAI create fields a fal model has no place for.
REFUSED_FIELDS: Final = frozenset({"character_ids", "characters", "remixed_from_video_id"})
# fal input fields the relay writes from OpenAI ones, and the OpenAI field each comes from.
PARAM_OF_FIELD: Final = {
    "duration": "seconds",
    "aspect_ratio": "size",
    "resolution": "size",
    "image_url": "input_reference",
    "prompt": "prompt",
}
# fal apps under a namespace carry it as a first segment (`workflows/owner/app/...`).
APP_NAMESPACES: Final = ("workflows", "comfy")
ASPECT_RATIOS: Final = {"16:9": 16 / 9, "9:16": 9 / 16, "1:1": 1.0, "4:3": 4 / 3, "3:4": 3 / 4, "21:9": 21 / 9, "9:21": 9 / 21}
RESOLUTIONS: Final = (480, 580, 720, 1080, 1440, 2160)
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
_LEADING_NUMBER = re.compile(r"\s*([0-9]{1,3})(?:\.0+)?\s*s?\s*")
# The contract's fields, which a form sends as text and the relay reads as such.
_CONTRACT_FIELDS: Final = frozenset({"prompt", "model", "seconds", "size"})


# --------------------------------------------------------------------------- the model id


def model_segments(model: Any) -> list[str]:
    """fal's model id, checked: 2 to 8 path segments of letters, digits, `.`, `_`, `-`."""
    segments = model.split("/") if isinstance(model, str) else []
    if not 2 <= len(segments) <= 8 or not all(PATH_SEGMENT.fullmatch(s) and s.strip(".") for s in segments):
        raise RelayError(
            400,
            "Name a fal model id (such as fal-ai/kling-video/v2.1/master/text-to-video) for a fal account.",
            code="invalid_value",
            param="model",
        )
    if segments[0] in APP_NAMESPACES and len(segments) < 3:
        raise invalid(f"The fal model id '{shown(model)}' names a namespace but no app.", "model")
    return segments


def app_id(model: str) -> str:
    """The part of a model id fal's status, result and cancel URLs use: `owner/app` (after a namespace)."""
    segments = model_segments(model)
    return "/".join(segments[:3] if segments[0] in APP_NAMESPACES else segments[:2])


# --------------------------------------------------------------------------- the client's create


def aspect_ratio(width: int, height: int) -> str:
    """The aspect ratio fal's models name nearest to WIDTHxHEIGHT."""
    ratio = width / height
    return min(ASPECT_RATIOS, key=lambda name: abs(ASPECT_RATIOS[name] - ratio))


def resolution(width: int, height: int) -> str:
    """`720p` and its kin from the shorter side: the nearest of the resolutions fal's models name."""
    shorter = min(width, height)
    return f"{min(RESOLUTIONS, key=lambda lines: (abs(lines - shorter), lines))}p"


def size_fields(size: str) -> dict[str, str]:
    width, height = width_and_height(size, "fal")
    return {"aspect_ratio": aspect_ratio(width, height), "resolution": resolution(width, height)}


def whole_seconds(value: Any) -> int:
    """`seconds` as a whole number; fal's models take their `duration` as such (`"5"`, `"10"`)."""
    return checked_seconds(value, "fal", 5, minimum=1)


def seconds_of_duration(duration: Any) -> str | None:
    """The seconds a model-specific `duration` the client sent names (`"8s"`, `10`), if it reads as one."""
    if isinstance(duration, bool) or not isinstance(duration, (str, int, float)):
        return None
    match = _LEADING_NUMBER.fullmatch(str(duration))
    return str(int(match.group(1))) if match and int(match.group(1)) > 0 else None


def image_url_of(reference: Any) -> str:
    """`input_reference` in JSON as fal's `image_url`: a data URL (checked), or an http(s) URL fal fetches."""
    url = reference_url(reference)
    return url if is_http_url(url) else data_url(*decoded_data_url(url, ACCOUNT_TYPE))


def data_url(data: bytes, mime_type: str) -> str:
    return image_data_url(checked_image(data, mime_type))


def form_value(text: str) -> Any:
    """A model-specific form field: `true`/`false` as booleans (a form has no other way to say one);
    anything else as text, which fal's models read as the number it spells where they want one."""
    lowered = text.strip().lower()
    return lowered == "true" if lowered in ("true", "false") else text


def create_request(body: bytes, content_type: str | None) -> CreateRequest:
    """The queue submit for an OpenAI create (JSON or multipart)."""
    fields, reference = create_fields(body, content_type, image_url_of, data_url)
    if is_form(content_type):
        fields = {name: value if name in _CONTRACT_FIELDS else form_value(value) for name, value in fields.items()}
    refused = sorted(set(fields) & REFUSED_FIELDS)
    if refused:
        raise invalid(f"The field '{refused[0]}' is not supported for fal accounts.", refused[0])
    odd = sorted(name for name in fields if not _FIELD.fullmatch(name))
    if odd:
        raise invalid(f"The field '{shown(odd[0])}' is no field a fal model takes.", odd[0])
    model = fields.pop("model", None)
    model_segments(model)
    prompt = required_prompt(fields.pop("prompt", None))
    fields.pop(SESSION_FIELD, None)  # the relay's own: it stays with the relay
    size, seconds = fields.pop("size", None), fields.pop("seconds", None)
    # What the relay writes from the contract's fields; the client's model-specific fields win.
    written: dict[str, Any] = {"prompt": prompt}
    if size is not None:
        if not isinstance(size, str):
            raise invalid("size must be a string such as 1280x720.", "size")
        written.update(size_fields(size))
    if seconds is not None:
        written["duration"] = str(whole_seconds(seconds))
    if reference is not None:
        written["image_url"] = reference
    payload = {**written, **fields}
    booked = seconds_of_duration(payload.get("duration")) or DEFAULT_SECONDS
    call = UpstreamCall("POST", f"/{model}", json.dumps(payload).encode())
    return CreateRequest(call, str(model), size or DEFAULT_SIZE, booked, prompt)


def with_image(request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
    # fal fetches image URLs itself, so create_request never leaves one for the relay to fetch.
    raise invalid("fal accounts take input_reference as an upload, a data URL or an image URL.", "input_reference")


# --------------------------------------------------------------------------- jobs


def created(answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
    request_id = answered_id(answer, "request_id", _REQUEST_ID)
    if request_id is None:
        return None
    return {**video_object(video_id, request, now), JOB_FIELD: {"request_id": request_id, "app": app_id(request.model)}}


def job_of(resource: dict[str, Any]) -> tuple[str, str] | None:
    """(app id, request id) of the stored video object, checked again: they become URL paths."""
    job = resource.get(JOB_FIELD)
    app, request_id = (job.get("app"), job.get("request_id")) if isinstance(job, dict) else (None, None)
    if not isinstance(request_id, str) or not _REQUEST_ID.fullmatch(request_id) or not isinstance(app, str):
        return None
    try:
        return (app, request_id) if app_id(app) == app else None
    except RelayError:
        return None


def poll_call(resource: dict[str, Any]) -> UpstreamCall | None:
    job = job_of(resource)
    return UpstreamCall("GET", f"/{job[0]}/requests/{job[1]}/status") if job else None


def result_call(resource: dict[str, Any], answer: bytes) -> UpstreamCall | None:
    status = json_object(answer)
    job = job_of(resource)
    if job is None or status is None or status.get("status") != "COMPLETED":
        return None
    return UpstreamCall("GET", f"/{job[0]}/requests/{job[1]}")


def video_url(result: dict[str, Any]) -> str | None:
    """The video file of a finished request's result: `video.url` (most models) or `videos[0].url`."""
    video = result.get("video")
    videos = result.get("videos")
    if not isinstance(video, dict) and isinstance(videos, list) and videos:
        video = videos[0]
    return http_url(video.get("url")) if isinstance(video, dict) else None


def job_state(resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
    """The video object after a status answer (still queued or running) or a finished request's result."""
    payload = json_object(answer)
    if payload is None:
        return None
    match payload.get("status"):
        case "IN_QUEUE":
            return {**resource, "status": "queued", "progress": 0}
        case "IN_PROGRESS" | "COMPLETED":
            # COMPLETED reaches here only when its result could not be asked for: still running, to the client.
            return {**resource, "status": "in_progress", "progress": 0}
    if video_url(payload) is None:
        return failed(resource, now, "video_generation_failed", "The request finished without a video.")
    return completed(resource, now)


def content_url(answer: bytes) -> str | None:
    result = json_object(answer)
    return video_url(result) if result is not None and "status" not in result else None


def delete_call(resource: dict[str, Any]) -> UpstreamCall | None:
    job = job_of(resource)
    if job is None or resource.get("status") != "queued":
        return None
    return UpstreamCall("PUT", f"/{job[0]}/requests/{job[1]}/cancel")


def cancelled(status: int, body: bytes) -> bool:
    """A cancel fal refuses because the request already ran: nothing is left to stop, which is what the client asked."""
    payload = json_object(body)
    return status == 400 and payload is not None and payload.get("status") == "ALREADY_COMPLETED"


# --------------------------------------------------------------------------- errors

# Answers to the result call that say something about the account or the request id, not the job.
_NOT_THE_JOB: Final = frozenset({401, 402, 403, 404, 408, 409, 429})
_MODERATION: Final = re.compile(r"content.?policy|nsfw|safety|moderat", re.IGNORECASE)


def fal_detail(body: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, the fal input field it is about, its type) of fal's `{"detail": ...}` error body."""
    payload = json_object(body)
    detail = payload.get("detail") if payload else None
    if isinstance(detail, str):
        kind = payload.get("error_type") if payload else None
        return detail, None, kind if isinstance(kind, str) else None
    first = detail[0] if isinstance(detail, list) and detail and isinstance(detail[0], dict) else None
    if first is None:
        return None, None, None
    message, loc, kind = first.get("msg"), first.get("loc"), first.get("type")
    field = loc[1] if isinstance(loc, list) and len(loc) > 1 and loc[0] == "body" and isinstance(loc[1], str) else None
    return (message if isinstance(message, str) else None), field, (kind if isinstance(kind, str) else None)


def error(status: int, body: bytes, *, creating: bool) -> Translated:
    """fal's error as the OpenAI envelope, with the status the account's state follows."""
    message, field, _ = fal_detail(body)
    text = shown_message(message or f"fal answered HTTP {status}.")
    client_status, param = status, None
    if status == 403 and "locked" in text.lower():
        client_status = 402  # "User is locked. Reason: Exhausted balance": the account's billing, not the key
    elif status == 403 and creating:
        client_status = 401  # the key may not run this app: another account may
    elif status == 422 or (status == 400 and creating):
        client_status = 400
        param = PARAM_OF_FIELD.get(field, field) if field else None
    elif creating and status == 404:
        client_status, param = 400, "model"
    return translated_error(client_status, text, param=param)


def failed_result(resource: dict[str, Any], status: int, body: bytes, now: float) -> dict[str, Any] | None:
    """The video object `failed`, when the result of a COMPLETED request is an error answer: the
    model refused the input (422) or its runner failed (5xx). None for answers about the account or
    the request id, and for bodies fal's own services would not write (a proxy's page)."""
    message, _, kind = fal_detail(body)
    if status in _NOT_THE_JOB or message is None:
        return None
    moderated = _MODERATION.search(f"{kind or ''} {message}") is not None
    return failed(resource, now, "moderation_blocked" if moderated else "video_generation_failed", shown_message(message))


FAL: Final = Functions(
    create_request=create_request,
    with_image=with_image,
    extension_request=no_extensions(ACCOUNT_TYPE),
    created=created,
    poll_call=poll_call,
    result_call=result_call,
    job_state=job_state,
    content_url=content_url,
    delete_call=delete_call,
    error=error,
    failed_result=failed_result,
    cancelled=cancelled,
)
FAL_TYPE: Final[AccountType] = AccountType(
    ACCOUNT_TYPE,
    auth_header=b"authorization",
    auth_scheme=b"Key",
    default_base_api="https://queue.fal.run",
    model_prefixes=("fal-ai/",),
    default_seconds=float(DEFAULT_SECONDS),
    # fal documents no retry hint on its 429s; a Retry-After, if one comes, is read.
    cooldown_hints=("retry_after",),
    translation=FAL,
    operations=frozenset(),
)
