"""The client's request body: read it (bounded) and find the few fields the relay needs.

The body itself is opaque: it is forwarded byte for byte. Only JSON bodies and
multipart forms are looked into, and only for small named fields.
"""

from __future__ import annotations

import json
from typing import Any, AsyncIterator

from .errors import RelayError

_MAX_FIELD_BYTES = 4096


async def read_body(chunks: AsyncIterator[bytes], *, declared_length: str | None, limit: int) -> bytes:
    if declared_length is not None:
        try:
            too_big = int(declared_length) > limit
        except ValueError:
            raise RelayError(400, "Invalid Content-Length header.", code="invalid_content_length") from None
        if too_big:
            raise _too_large(limit)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    return bytes(received)


def _too_large(limit: int) -> RelayError:
    return RelayError(
        413, f"Request body is larger than this relay accepts ({limit} bytes).", code="request_too_large"
    )


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def is_json(content_type: str | None) -> bool:
    kind = media_type(content_type)
    return kind == "application/json" or kind.endswith("+json")


def body_fields(body: bytes, content_type: str | None, names: frozenset[str]) -> dict[str, str]:
    """Scalar values of the `names` fields, from a JSON object or a multipart form.

    Raises a 400 for a JSON body that does not parse or a multipart body without a
    boundary: forwarding those would only earn the same error from upstream, later.
    """
    if not body:
        return {}
    if is_json(content_type):
        return _json_fields(body, names)
    if media_type(content_type) == "multipart/form-data":
        return _multipart_fields(body, _boundary(content_type or ""), names)
    return {}


def _json_fields(body: bytes, names: frozenset[str]) -> dict[str, str]:
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RelayError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        return {}
    found = {}
    for name in names:
        value = _json_value(payload, name)
        if isinstance(value, str):
            if not is_valid_unicode(value):
                # JSON can escape lone surrogates ("\ud800"); no id or session can contain one.
                raise RelayError(
                    400, f"The field '{name}' is not valid Unicode.", code="invalid_json", param=name
                )
            found[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = json.dumps(value)
    return found


def is_valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _json_value(payload: dict[str, Any], name: str) -> Any:
    """`video[id]` names `payload["video"]["id"]`, as the SDK's multipart keys name JSON's nesting."""
    outer, bracket, rest = name.partition("[")
    value = payload.get(outer)
    if bracket and rest.endswith("]"):
        return value.get(rest[:-1]) if isinstance(value, dict) else None
    return value


def _boundary(content_type: str) -> bytes:
    for parameter in content_type.split(";")[1:]:
        key, _, value = parameter.strip().partition("=")
        if key.strip().lower() == "boundary":
            value = value.strip().strip('"')
            if 0 < len(value) <= 200:
                return value.encode("latin-1", errors="replace")
    raise RelayError(
        400, "multipart/form-data request without a valid boundary parameter.", code="invalid_multipart"
    )


def _multipart_fields(body: bytes, boundary: bytes, names: frozenset[str]) -> dict[str, str]:
    """Walk the parts without copying file contents; keep small non-file fields we asked for."""
    delimiter = b"--" + boundary
    found: dict[str, str] = {}
    position = body.find(delimiter)
    while position != -1:
        start = position + len(delimiter)
        if body[start : start + 2] == b"--":
            break
        headers_end = body.find(b"\r\n\r\n", start)
        if headers_end == -1:
            break
        following = body.find(b"\r\n" + delimiter, headers_end + 4)
        if following == -1:
            break
        name, is_file = _disposition(body[start:headers_end])
        if name in names and not is_file and name not in found:
            value = body[headers_end + 4 : following]
            if len(value) <= _MAX_FIELD_BYTES:
                found[name] = value.decode("utf-8", errors="replace")
        position = following + 2
    return found


def _disposition(raw_headers: bytes) -> tuple[str | None, bool]:
    for line in raw_headers.decode("utf-8", errors="replace").split("\r\n"):
        header, _, value = line.partition(":")
        if header.strip().lower() != "content-disposition":
            continue
        name, is_file = None, False
        for parameter in value.split(";")[1:]:
            key, _, raw = parameter.strip().partition("=")
            key = key.strip().lower()
            if key == "name":
                name = raw.strip().strip('"')
            elif key in ("filename", "filename*"):
                is_file = True
        return name, is_file
    return None, False
