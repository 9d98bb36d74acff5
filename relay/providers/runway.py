"""Runway's API behind the OpenAI Videos contract: pure translation, no I/O.

* Create: `POST {base}/text_to_video`, or `POST {base}/image_to_video` when the client sent an
  `input_reference`, with `model`, `promptText`, `ratio` (`size` "1280x720" as "1280:720"),
  `duration` (`seconds`) and `promptImage` (an https URL as given, or a data URI of the uploaded or
  data-URL image; Runway fetches URLs itself, so the relay fetches nothing). Sizes and lengths a
  known model cannot render are the client's 400 before anything is sent. The relay mints the
  `video_…` id; Runway's task id is kept in the video's record (JOB_FIELD).
* Retrieve: `GET {base}/tasks/{id}`. `PENDING`/`THROTTLED`: `queued`; `RUNNING`: `in_progress`
  with Runway's progress (0..1) as a percentage; `SUCCEEDED`: `completed`, `output[0]` being the
  content (a signed CDN link, fetched without the key); `FAILED`/`CANCELLED`: `failed`, with
  Runway's `failureCode` as the error's code and its `failure` as the message.
* Delete: `DELETE {base}/tasks/{id}` (Runway cancels an unfinished task and deletes a finished one).
* Errors: Runway's `{"error": "...", "issues": [...]}` becomes the OpenAI envelope.

Every request carries `X-Runway-Version` (AccountType.extra_headers) beside the Bearer key.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
from dataclasses import dataclass, replace
from typing import Any, Final
from urllib.parse import quote, urlsplit

from ..body import json_object
from ..errors import RelayError, shown
from ..sessions import SESSION_FIELD
from . import JOB_FIELD, AccountType, CreateRequest, Translated, UpstreamCall
from .inputs import (
    Image,
    create_fields,
    data_url as image_data_url,
    decoded_data_url,
    invalid,
    reference_url,
    whole_seconds,
    width_and_height,
)
from .jobs import (
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

ACCOUNT_TYPE: Final = "runway"
API_VERSION: Final = "2024-11-06"
IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/webp")
# Runway takes a data URI of at most 5 MiB (its encoded length) and a URL of at most 2048 characters.
MAX_DATA_URI_CHARS: Final = 5 * 1024 * 1024
MAX_URL_CHARS: Final = 2048
MAX_PROMPT_UTF16_UNITS: Final = 1000
MAX_SEED: Final = 4294967295
OPENAI_FIELDS: Final = frozenset({"prompt", "model", "seconds", "size", "input_reference", SESSION_FIELD})
# Runway-only fields a client may send, by their Runway names.
RUNWAY_FIELDS: Final = {"seed": "seed", "negative_prompt": "negativePrompt"}
# A Runway body field named by a validation issue, and the OpenAI field the client sent it as.
PARAM_OF_FIELD: Final = {
    "promptText": "prompt",
    "promptImage": "input_reference",
    "ratio": "size",
    "duration": "seconds",
    "model": "model",
    "seed": "seed",
    "negativePrompt": "negative_prompt",
}
NOT_AN_IMAGE: Final = "input_reference must be an image: an uploaded file, a data URL or an https image URL (not a file id)."
_MODEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TASK = re.compile(r"[A-Za-z0-9_-]{1,128}")
_FAILURE_CODE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


@dataclass(frozen=True)
class Model:
    """What Runway's API (version 2024-11-06) takes for one model."""

    text_to_video: bool  # False: image to video only, an input_reference is required
    ratios: tuple[str, ...]  # the first is the default
    durations: tuple[int, ...]
    default_seconds: int


_GEN4_RATIOS: Final = ("1280:720", "720:1280", "1104:832", "832:1104", "960:960", "1584:672")
_VEO_RATIOS: Final = ("1280:720", "720:1280", "1920:1080", "1080:1920")
MODELS: Final = {
    "gen4.5": Model(True, _GEN4_RATIOS, tuple(range(2, 11)), 5),
    "gen4_turbo": Model(False, _GEN4_RATIOS, tuple(range(2, 11)), 5),
    "gen3a_turbo": Model(False, ("1280:768", "768:1280"), (5, 10), 5),
    "veo3": Model(True, _VEO_RATIOS, (8,), 8),
    "veo3.1": Model(True, _VEO_RATIOS, (4, 6, 8), 8),
    "veo3.1_fast": Model(True, _VEO_RATIOS, (4, 6, 8), 8),
}
# A model Runway added after this table: sent as asked, and Runway's own 400 says what it refuses.
_UNLISTED: Final = Model(True, (), (), 5)


def size_of(ratio: str) -> str:
    return ratio.replace(":", "x")


# --------------------------------------------------------------------------- images


def _sniffed(data: bytes) -> str | None:
    """The image type the bytes themselves show, for an upload sent without a usable content type."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def data_uri(data: bytes, mime_type: str) -> str:
    """An image's bytes as the data URI Runway takes in `promptImage`."""
    if not data:
        raise invalid("input_reference is empty.", "input_reference")
    declared = (mime_type or "").lower()
    kind = declared if declared in IMAGE_MIME_TYPES else _sniffed(data)
    if kind is None:
        allowed = ", ".join(IMAGE_MIME_TYPES)
        raise invalid(f"input_reference must be one of {allowed}; got {shown(declared or 'no type')}.", "input_reference")
    uri = image_data_url(Image(data, kind))
    if len(uri) > MAX_DATA_URI_CHARS:
        raise invalid(
            f"input_reference is {len(data)} bytes: Runway takes an image sent with the request up to 5 MiB base64-encoded"
            " (about 3.7 MB); send a smaller image or an https URL of it.",
            "input_reference",
        )
    return uri


def _checked_https_url(url: str) -> str:
    """An image URL Runway will fetch itself: https, on a domain name, at most 2048 characters."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise invalid("input_reference holds an image URL that cannot be read.", "input_reference") from None
    if parts.scheme.lower() != "https":
        raise invalid("Runway fetches image URLs itself, over https only: send an https URL, an upload or a data: URL.", "input_reference")
    if len(url) > MAX_URL_CHARS:
        raise invalid(f"input_reference is a URL of {len(url)} characters; Runway takes at most {MAX_URL_CHARS}.", "input_reference")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host:
            return url
    raise invalid("Runway fetches image URLs from a domain name, not an IP address.", "input_reference")


def prompt_image(reference: Any) -> str:
    """`input_reference` in JSON or as a form's text: a data URL or an https URL, alone or as
    `{"image_url": ...}` (or `{"image_url": {"url": ...}}`), as Runway's `promptImage`."""
    url = reference_url(reference, NOT_AN_IMAGE)
    if url[:5].lower() == "data:":
        return data_uri(*decoded_data_url(url, ACCOUNT_TYPE, "https"))
    return _checked_https_url(url)


# --------------------------------------------------------------------------- the client's create


def runway_model(value: Any) -> str:
    if not isinstance(value, str) or not _MODEL.fullmatch(value):
        message = "Name a Runway model (such as gen4_turbo or veo3.1) for a runway account."
        raise RelayError(400, message, code="invalid_value", param="model")
    return value


def ratio_of(size: Any, model: str, spec: Model) -> str:
    """OpenAI's `WIDTHxHEIGHT` as Runway's `WIDTH:HEIGHT`, if the model renders it."""
    width, height = width_and_height(size, "Runway")
    ratio = f"{width}:{height}"
    if spec.ratios and ratio not in spec.ratios:
        sizes = ", ".join(map(size_of, spec.ratios))
        raise invalid(f"Runway's {model} renders the sizes {sizes}; it cannot render {shown(size)}.", "size")
    return ratio


def duration_of(seconds: Any, model: str, spec: Model) -> int:
    duration = whole_seconds(seconds, "Runway", 5)
    if spec.durations and duration not in spec.durations:
        allowed = f"{spec.durations[0]} to {spec.durations[-1]}" if len(spec.durations) > 3 else ", ".join(map(str, spec.durations))
        raise invalid(f"Runway's {model} renders {allowed} seconds; it cannot render {duration}.", "seconds")
    return duration


def prompt_text(prompt: Any, has_image: bool) -> str | None:
    if prompt is None and has_image:
        return None
    if not isinstance(prompt, str) or not (prompt.strip() or has_image):
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    if len(prompt.encode("utf-16-le")) // 2 > MAX_PROMPT_UTF16_UNITS:
        raise invalid(f"Runway takes a prompt of at most {MAX_PROMPT_UTF16_UNITS} characters (UTF-16 code units).", "prompt")
    return prompt if prompt.strip() else None


def _seed(value: Any) -> int:
    text = str(value).strip()
    if isinstance(value, bool) or not text.isascii() or not text.isdigit() or int(text) > MAX_SEED:
        raise invalid(f"seed must be a whole number from 0 to {MAX_SEED}.", "seed")
    return int(text)


def create_request(body: bytes, content_type: str | None) -> CreateRequest:
    """The text_to_video or image_to_video request for an OpenAI create (JSON or multipart)."""
    fields, image = create_fields(body, content_type, prompt_image, data_uri)
    unknown = sorted(set(fields) - OPENAI_FIELDS - set(RUNWAY_FIELDS))
    if unknown:
        raise invalid(f"The field '{shown(unknown[0])}' is not supported for runway accounts.", unknown[0])
    model = runway_model(fields.get("model"))
    spec = MODELS.get(model, _UNLISTED)
    if image is None and not spec.text_to_video:
        raise invalid(f"Runway's {model} makes videos from an image: send one as input_reference.", "input_reference")
    text = prompt_text(fields.get("prompt"), image is not None)
    size = fields.get("size") or (size_of(spec.ratios[0]) if spec.ratios else "1280x720")
    seconds = fields.get("seconds") or spec.default_seconds
    payload: dict[str, Any] = {"model": model}
    if image is not None:
        payload["promptImage"] = image
    if text is not None:
        payload["promptText"] = text
    payload["ratio"] = ratio_of(size, model, spec)
    payload["duration"] = duration_of(seconds, model, spec)
    if "seed" in fields:
        payload["seed"] = _seed(fields["seed"])
    if "negative_prompt" in fields:
        payload["negativePrompt"] = fields["negative_prompt"]
    path = "/image_to_video" if image is not None else "/text_to_video"
    call = UpstreamCall("POST", path, json.dumps(payload).encode())
    return CreateRequest(call, model, size.strip(), str(payload["duration"]), text)


def with_image(request: CreateRequest, data: bytes, mime_type: str) -> CreateRequest:
    """The create with an image's bytes (Runway fetches URLs itself, so the relay never asks for this)."""
    assert request.call.body is not None  # built by create_request
    payload = json.loads(request.call.body)
    payload["promptImage"] = data_uri(data, mime_type)
    call = UpstreamCall("POST", "/image_to_video", json.dumps(payload).encode())
    return replace(request, call=call, image_url=None)


# --------------------------------------------------------------------------- jobs


def created(answer: bytes, request: CreateRequest, video_id: str, now: float) -> dict[str, Any] | None:
    task_id = answered_id(answer, "id", _TASK)
    return {**video_object(video_id, request, now), JOB_FIELD: {"task": task_id}} if task_id else None


def task_id_of(resource: dict[str, Any]) -> str | None:
    return stored_id(resource, "task", _TASK)


def poll_call(resource: dict[str, Any]) -> UpstreamCall | None:
    task_id = task_id_of(resource)
    return UpstreamCall("GET", f"/tasks/{quote(task_id)}") if task_id else None


def delete_call(resource: dict[str, Any]) -> UpstreamCall | None:
    task_id = task_id_of(resource)
    return UpstreamCall("DELETE", f"/tasks/{quote(task_id)}") if task_id else None


def _output_url(task: dict[str, Any]) -> str | None:
    output = task.get("output")
    return http_url(output[0]) if isinstance(output, list) and output else None


def _percent(progress: Any) -> int:
    """Runway's progress (0..1) as the contract's percentage; 100 only once completed."""
    if isinstance(progress, bool) or not isinstance(progress, int | float) or not math.isfinite(progress):
        return 0
    return min(99, max(0, round(progress * 100)))


def _failure(task: dict[str, Any], status: str) -> tuple[str, str]:
    """(code, message) of a failed or cancelled task: Runway's failureCode and failure."""
    code, failure = task.get("failureCode"), task.get("failure")
    fallback = "video_generation_cancelled" if status == "CANCELLED" else "video_generation_failed"
    default_message = "The task was cancelled at Runway." if status == "CANCELLED" else "Runway reported the task failed."
    return (
        code if isinstance(code, str) and _FAILURE_CODE.fullmatch(code) else fallback,
        shown_message(failure) if isinstance(failure, str) and failure.strip() else default_message,
    )


def job_state(resource: dict[str, Any], answer: bytes, now: float) -> dict[str, Any] | None:
    """The video object after a poll of Runway's task."""
    task = json_object(answer)
    status = task.get("status") if task else None
    if task is None or not isinstance(status, str):
        return None
    if status in ("PENDING", "THROTTLED"):
        return {**resource, "status": "queued", "progress": 0}
    if status == "RUNNING":
        return {**resource, "status": "in_progress", "progress": _percent(task.get("progress"))}
    if status == "SUCCEEDED" and _output_url(task):
        return completed(resource, now)
    if status == "SUCCEEDED":
        return failed(resource, now, "video_generation_failed", "The task succeeded without an output.")
    if status in ("FAILED", "CANCELLED"):
        return failed(resource, now, *_failure(task, status))
    return None


def content_url(answer: bytes) -> str | None:
    task = json_object(answer)
    return _output_url(task) if task and task.get("status") == "SUCCEEDED" else None


# --------------------------------------------------------------------------- errors


def runway_error(body: bytes) -> tuple[str | None, list[dict[str, Any]]]:
    """(message, validation issues) of Runway's error body: `{"error": "...", "issues": [...]}`."""
    payload = json_object(body)
    if payload is None:
        return None, []
    error, issues = payload.get("error"), payload.get("issues")
    if isinstance(error, dict):
        error = error.get("message")
    message = error if isinstance(error, str) and error.strip() else None
    return message, [issue for issue in issues if isinstance(issue, dict)] if isinstance(issues, list) else []


def param_of(issues: list[dict[str, Any]]) -> str | None:
    """The OpenAI field the first validation issue naming a Runway field is about."""
    for issue in issues:
        path = issue.get("path")
        field = path[0] if isinstance(path, list) and path else None
        if isinstance(field, str) and field in PARAM_OF_FIELD:
            return PARAM_OF_FIELD[field]
    return None


def _described(message: str | None, issues: list[dict[str, Any]], status: int) -> str:
    text = message or f"The Runway API answered HTTP {status}."
    first = next((issue for issue in issues if isinstance(issue.get("message"), str)), None)
    if first is not None:
        path = first.get("path")
        where = ".".join(str(part) for part in path) if isinstance(path, list) and path else None
        text = f"{text}: {where + ': ' if where else ''}{first['message']}"
    return shown_message(text)


def error(status: int, body: bytes, *, creating: bool) -> Translated:
    """Runway's error as the OpenAI envelope, with the status the account's state follows."""
    message, issues = runway_error(body)
    text = _described(message, issues, status)
    client_status, param = status, None
    if status == 400 and "enough credits" in text.lower():
        client_status = 402  # the organization's credit balance: the account's, and another may serve
    elif status == 400:
        param = param_of(issues)
    return translated_error(client_status, text, param=param)


RUNWAY: Final = Functions(
    create_request=create_request,
    with_image=with_image,
    extension_request=no_extensions(ACCOUNT_TYPE),
    created=created,
    poll_call=poll_call,
    job_state=job_state,
    content_url=content_url,
    delete_call=delete_call,
    error=error,
)
RUNWAY_TYPE: Final = AccountType(
    ACCOUNT_TYPE,
    auth_header=b"authorization",
    default_base_api="https://api.dev.runwayml.com/v1",
    # Runway's own names (gen4.5, gen4_turbo, gen3a_turbo, veo3, veo3.1, veo3.1_fast); Google's
    # `veo-…` spelling stays gemini's.
    model_prefixes=("gen4", "gen3a", "veo3"),
    # A create without seconds renders the model's default (5 s; 8 s for the veo3 family): booked
    # at the longer, so a reservation never falls short.
    default_seconds=8.0,
    # Runway documents no retry hint on its 429s; a gateway in front of it may add one.
    cooldown_hints=("retry_after_ms", "retry_after"),
    translation=RUNWAY,
    extra_headers=((b"x-runway-version", API_VERSION.encode("ascii")),),
    operations=frozenset(),
)
