"""What every translation does alike with the upstream's answers: the video object it starts, the
job handle kept in it, its state once finished, the OpenAI envelope of an upstream error, and the
Translation made of a provider module's functions. Pure functions, no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Protocol

from ..body import json_object
from ..errors import RelayError, envelope
from ..outcomes import redact
from . import JOB_FIELD, CreateRequest, Translated, UpstreamCall

# The longest upstream message the relay repeats to a client.
MESSAGE_LIMIT: Final = 500
CODE_BY_STATUS: Final = {
    400: "invalid_value",
    401: "invalid_api_key",
    402: "insufficient_quota",
    403: "permission_denied",
    404: "not_found",
    429: "rate_limit_exceeded",
}


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


# A model name or an upstream's id that is safe as one segment of a URL path.
PATH_SEGMENT: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def answered_id(answer: bytes, key: str, pattern: re.Pattern[str]) -> str | None:
    """The job's id in a create answer (`{key: id}`), if it is one the relay may put in a URL path."""
    payload = json_object(answer)
    value = payload.get(key) if payload else None
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def stored_id(resource: dict[str, Any], key: str, pattern: re.Pattern[str]) -> str | None:
    """The job's id kept in the stored video object, checked again: it becomes a URL path."""
    job = resource.get(JOB_FIELD)
    value = job.get(key) if isinstance(job, dict) else None
    return value if isinstance(value, str) and pattern.fullmatch(value) else None


def http_url(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(("https://", "http://")) else None


def completed(resource: dict[str, Any], now: float) -> dict[str, Any]:
    return {**resource, "status": "completed", "progress": 100, "completed_at": int(now), "error": None}


def failed(resource: dict[str, Any], now: float, code: str, message: str) -> dict[str, Any]:
    return {**resource, "status": "failed", "progress": 100, "completed_at": int(now), "error": {"code": code, "message": message}}


def shown_message(message: str) -> str:
    """An upstream's message as the relay repeats it: bounded, and with anything key-like masked."""
    return redact(message[:MESSAGE_LIMIT])


def translated_error(
    status: int, message: str, *, code: str | None = None, param: str | None = None, headers: dict[str, str] | None = None
) -> Translated:
    """The OpenAI envelope of an upstream's error; the code, unless given, follows the status."""
    code = code or ("model_not_found" if param == "model" else CODE_BY_STATUS.get(status, "upstream_error"))
    return Translated(status, json.loads(envelope(message, status=status, code=code, param=param)), headers or {})


# --------------------------------------------------------------------------- the Translation


class ErrorReading(Protocol):
    def __call__(self, status: int, body: bytes, *, creating: bool) -> Translated: ...


def no_result_call(resource: dict[str, Any], answer: bytes) -> UpstreamCall | None:
    return None


def no_delete_call(resource: dict[str, Any]) -> UpstreamCall | None:
    return None


def no_failed_result(resource: dict[str, Any], status: int, body: bytes, now: float) -> dict[str, Any] | None:
    return None


def not_cancelled(status: int, body: bytes) -> bool:
    return False


def no_extensions(account_type: str) -> Callable[[bytes, str | None, dict[str, Any], str], CreateRequest]:
    def refuse(body: bytes, content_type: str | None, source: dict[str, Any], video_uri: str) -> CreateRequest:
        # Never called: a type without "extension" among its operations is refused by the routes first.
        raise RelayError(400, f"Extension requests are not supported on {account_type} accounts.", code="unsupported_for_account_type")

    return refuse


@dataclass(frozen=True)
class Functions:
    """A provider module's functions as its relay.providers.Translation; what a provider does not
    do (a result call, an upstream delete, extensions) defaults to nothing."""

    create_request: Callable[[bytes, str | None], CreateRequest]
    with_image: Callable[[CreateRequest, bytes, str], CreateRequest]
    extension_request: Callable[[bytes, str | None, dict[str, Any], str], CreateRequest]
    created: Callable[[bytes, CreateRequest, str, float], dict[str, Any] | None]
    poll_call: Callable[[dict[str, Any]], UpstreamCall | None]
    job_state: Callable[[dict[str, Any], bytes, float], dict[str, Any] | None]
    content_url: Callable[[bytes], str | None]
    error: ErrorReading
    result_call: Callable[[dict[str, Any], bytes], UpstreamCall | None] = no_result_call
    delete_call: Callable[[dict[str, Any]], UpstreamCall | None] = no_delete_call
    failed_result: Callable[[dict[str, Any], int, bytes, float], dict[str, Any] | None] = no_failed_result
    cancelled: Callable[[int, bytes], bool] = not_cancelled
