"""The client's create as the translations read it: the JSON or multipart body, its fields, and
the `input_reference` image (an upload, a data URL, or an http(s) URL), checked the same way for
every provider. Pure functions, no I/O; each raises the client's 400 for input it cannot carry.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from ..body import is_json, media_type, multipart_boundary
from ..errors import RelayError, shown

PARAM: Final = "input_reference"
IMAGE_MIME_TYPES: Final = ("image/png", "image/jpeg", "image/webp")
NOT_AN_IMAGE: Final = "input_reference must be an image: an uploaded file, a data URL or an image URL."
_DATA_URL = re.compile(r"data:([a-z]+/[a-z0-9.+-]+)(?:;[^,;]*)*;base64,(.*)", re.DOTALL | re.IGNORECASE)
_SIZE = re.compile(r"([1-9][0-9]{1,4})x([1-9][0-9]{1,4})")
_DISPOSITION_PARAMETER = re.compile(r';\s*([A-Za-z*]+)\s*=\s*("[^"]*"|[^;\s]*)')

Reference = TypeVar("Reference")


def invalid(message: str, param: str) -> RelayError:
    return RelayError(400, message, code="invalid_value", param=param)


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class Image:
    data: bytes
    mime_type: str


def checked_image(data: bytes, mime_type: str, allowed: tuple[str, ...] = IMAGE_MIME_TYPES) -> Image:
    if not data:
        raise invalid("input_reference is empty.", PARAM)
    if mime_type not in allowed:
        raise invalid(f"input_reference must be one of {', '.join(allowed)}; got {shown(mime_type)}.", PARAM)
    return Image(data, mime_type)


def data_url(image: Image) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode('ascii')}"


def reference_url(reference: Any, not_an_image: str = NOT_AN_IMAGE) -> str:
    """The URL `input_reference` holds in JSON or a form's text: alone, as `{"image_url": ...}` or as
    `{"image_url": {"url": ...}}`; stripped, not yet checked."""
    url = reference.get("image_url") if isinstance(reference, dict) else reference
    if isinstance(url, dict):
        url = url.get("url")
    if not isinstance(url, str):
        raise invalid(not_an_image, PARAM)
    return url.strip()


def is_http_url(url: str) -> bool:
    return url.lower().startswith(("https://", "http://"))


def decoded_data_url(url: str, account_type: str, urls: str = "http(s)") -> tuple[bytes, str]:
    """(bytes, media type in lower case) of a base64 data URL; `urls` says which image URLs the
    account type takes besides, for the message refusing anything else."""
    match = _DATA_URL.fullmatch(url.strip())
    if match is None:
        raise invalid(
            f"input_reference for a {account_type} account must be an uploaded file, a data: URL (data:image/png;base64,...)"
            f" or an {urls} URL of an image.",
            PARAM,
        )
    try:
        data = base64.b64decode(match.group(2), validate=True)
    except binascii.Error:
        raise invalid("input_reference holds a data URL whose base64 does not decode.", PARAM) from None
    return data, match.group(1).lower()


# --------------------------------------------------------------------------- the body


def json_fields(body: bytes) -> dict[str, Any]:
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RelayError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        raise RelayError(400, "The request body must be a JSON object.", code="invalid_json")
    return payload


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str | None
    data: bytes

    @property
    def text(self) -> str:
        return self.data.decode("utf-8", errors="replace")


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


def is_form(content_type: str | None) -> bool:
    return media_type(content_type) == "multipart/form-data"


def parts_of(body: bytes, content_type: str | None) -> list[Part]:
    return multipart_parts(body, multipart_boundary(content_type or ""))


def unsupported_content_type() -> RelayError:
    return RelayError(400, "Send the request body as application/json or multipart/form-data.", code="unsupported_content_type")


def create_fields(
    body: bytes,
    content_type: str | None,
    reference: Callable[[Any], Reference],
    upload: Callable[[bytes, str], Reference],
) -> tuple[dict[str, Any], Reference | None]:
    """(the other fields, the image) of an OpenAI create in JSON or multipart. `reference` reads an
    `input_reference` given as JSON or a form's text, `upload` an uploaded file (its bytes and
    declared type); a form's other values stay text."""
    if is_json(content_type):
        fields = json_fields(body)
        given = fields.pop(PARAM, None)
        return fields, reference(given) if given is not None else None
    if not is_form(content_type):
        raise unsupported_content_type()
    fields = {}
    image: Reference | None = None
    for part in parts_of(body, content_type):
        if part.name == PARAM:
            image = upload(part.data, part.content_type or "") if part.filename is not None else reference(part.text)
        elif part.name == "input_reference[image_url]":
            # The SDKs' multipart spelling of `{"image_url": ...}`.
            image = reference({"image_url": part.text})
        elif part.name == "input_reference[file_id]":
            image = reference({"file_id": part.text})  # no image in it: refused as one
        elif part.filename is not None:
            raise invalid(f"The field '{shown(part.name)}' must be a form field, not a file.", part.name)
        else:
            fields[part.name] = part.text
    return fields, image


# --------------------------------------------------------------------------- sizes and lengths


def width_and_height(size: Any, family: str, hint: str = "such as 1280x720") -> tuple[int, int]:
    """OpenAI's `WIDTHxHEIGHT`; `family` names the models in the message refusing anything else."""
    match = _SIZE.fullmatch(size.strip()) if isinstance(size, str) else None
    if match is None:
        raise invalid(f"Invalid size '{shown(size)}' for a {family} model: use WIDTHxHEIGHT, {hint}.", "size")
    return int(match.group(1)), int(match.group(2))


def whole_seconds(seconds: Any, family: str, example: int, minimum: int = 0) -> int:
    text = str(seconds).strip()
    if isinstance(seconds, bool) or not text.isascii() or not text.isdigit() or len(text) > 3 or int(text) < minimum:
        raise invalid(f"Invalid seconds '{shown(seconds)}' for a {family} model: a whole number of seconds, such as {example}.", "seconds")
    return int(text)


def required_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str) or not prompt.strip():
        raise RelayError(400, "A text prompt is required.", code="invalid_value", param="prompt")
    return prompt
