"""Request bodies of the OpenAI Videos contract: JSON or multipart/form-data, folded into one shape, and its fields."""

from __future__ import annotations

import email.message
import email.parser
import email.utils
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from starlette.requests import Request

from .errors import ApiError

DEFAULT_MODEL: Final = "sora-2"
MAX_PROMPT_CHARS: Final = 32000
BRACKET_KEY: Final = re.compile(r"([^\[\]]+)\[([^\[\]]+)\]")

Fields = dict[str, Any]


@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True)
class FormPart:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes


def parse_content_type(value: str | None) -> tuple[str, dict[str, str]]:
    if not value:
        return "", {}
    header = email.message.Message()
    header["content-type"] = value
    params = header.get_params(failobj=[])[1:]
    return header.get_content_type(), {key.lower(): email.utils.collapse_rfc2231_value(raw) for key, raw in params}


def malformed_multipart(detail: str) -> ApiError:
    return ApiError(400, f"Malformed multipart/form-data body: {detail}.")


def parse_multipart(body: bytes, boundary: str | None) -> list[FormPart]:
    if not boundary or not boundary.isascii():
        raise malformed_multipart("missing or invalid boundary parameter")
    # Prepending CRLF lets the first delimiter be found like every later one.
    segments = (b"\r\n" + body).split(b"\r\n--" + boundary.encode("ascii"))
    parts: list[FormPart] = []
    for segment in segments[1:]:
        if segment.startswith(b"--"):
            return parts
        parts.append(parse_form_part(segment))
    raise malformed_multipart("missing closing boundary")


def parse_form_part(segment: bytes) -> FormPart:
    line_end = segment.find(b"\r\n")
    if line_end < 0 or segment[:line_end].strip(b" \t"):
        raise malformed_multipart("garbage after boundary")
    head, separator, data = segment[line_end:].partition(b"\r\n\r\n")
    if not separator:
        raise malformed_multipart("part without a header terminator")
    headers = email.parser.Parser().parsestr(head.lstrip(b"\r\n").decode("utf-8", "replace"), headersonly=True)
    name = headers.get_param("name", header="content-disposition")
    if not name:
        raise malformed_multipart("part without a form-data name")
    return FormPart(
        name=email.utils.collapse_rfc2231_value(name),
        filename=headers.get_filename(),
        content_type=headers.get("content-type"),
        data=data,
    )


def form_value(part: FormPart) -> str | Upload:
    if part.filename is not None:
        media_type = part.content_type or "application/octet-stream"
        return Upload(part.filename, media_type, part.data)
    try:
        return part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, f"Form field '{part.name}' is not valid UTF-8.", param=part.name) from None


def form_fields(parts: Sequence[FormPart]) -> Fields:
    """Fold multipart parts into the JSON shape: ``video[id]`` becomes ``{"video": {"id": ...}}``."""
    fields: Fields = {}
    for part in parts:
        value = form_value(part)
        match = BRACKET_KEY.fullmatch(part.name)
        if match is None:
            fields[part.name] = value
            continue
        outer, inner = match.groups()
        nested = fields.setdefault(outer, {})
        if not isinstance(nested, dict):
            raise ApiError(400, f"Conflicting form fields for '{outer}'.", param=outer)
        nested[inner] = value
    return fields


def parse_json_object(body: bytes) -> Fields:
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
        # "\ud800" is grammatical JSON for no character at all: a real API refuses it, as here,
        # instead of failing later on a string it cannot encode.
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError, json.JSONDecodeError, RecursionError):
        raise ApiError(
            400,
            "We could not parse the JSON body of your request. The API expects a JSON payload, but what was sent was not valid JSON.",
        ) from None
    if not isinstance(payload, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return payload


async def read_fields(request: Request) -> Fields:
    body = await request.body()
    media_type, params = parse_content_type(request.headers.get("content-type"))
    if media_type == "multipart/form-data":
        return form_fields(parse_multipart(body, params.get("boundary")))
    if media_type in ("", "application/json"):
        return parse_json_object(body)
    raise ApiError(
        400,
        f"Unsupported content type '{media_type}'. Use application/json or multipart/form-data.",
    )


def text_field(fields: Fields, name: str, default: str) -> str:
    value = fields.get(name, default)
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid type for '{name}': expected a string.", param=name, code="invalid_type")
    return value


def choice_field(fields: Fields, name: str, default: str | None, allowed: Sequence[str]) -> str:
    if default is None and name not in fields:
        raise ApiError(400, f"Missing required parameter: '{name}'.", param=name, code="missing_required_parameter")
    value = text_field(fields, name, default or "")
    if value not in allowed:
        raise ApiError(
            400,
            f"Invalid value for '{name}': '{value}'. Supported values are: {', '.join(allowed)}.",
            param=name,
            code="invalid_value",
        )
    return value


def prompt_field(fields: Fields) -> str:
    prompt = text_field(fields, "prompt", "")
    if not prompt.strip():
        raise ApiError(400, "Missing required parameter: 'prompt'.", param="prompt", code="missing_required_parameter")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ApiError(
            400,
            f"Invalid 'prompt': string too long (maximum {MAX_PROMPT_CHARS} characters).",
            param="prompt",
            code="string_above_max_length",
        )
    return prompt


def model_field(fields: Fields) -> str:
    model = text_field(fields, "model", DEFAULT_MODEL)
    if not model:
        raise ApiError(400, "Invalid value for 'model': must not be empty.", param="model", code="invalid_value")
    return model


def check_input_reference(fields: Fields) -> None:
    reference = fields.get("input_reference")
    if reference is None or isinstance(reference, Upload):
        return
    keys = set(reference) if isinstance(reference, dict) else set()
    if len(keys & {"image_url", "file_id"}) != 1 or not all(isinstance(reference[key], str) and reference[key] for key in keys):
        raise ApiError(
            400,
            "Invalid 'input_reference': provide exactly one of 'image_url' or 'file_id', or upload a file.",
            param="input_reference",
        )


def video_reference(fields: Fields) -> str | Upload:
    video = fields.get("video")
    if isinstance(video, Upload):
        return video
    if isinstance(video, dict) and isinstance(video.get("id"), str) and video["id"]:
        return str(video["id"])
    raise ApiError(
        400,
        "Missing required parameter: 'video' (an object with an 'id', or a video file).",
        param="video",
        code="missing_required_parameter",
    )
