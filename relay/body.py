"""The client's request body: read it (bounded) and find the few fields the relay needs.

The body itself is opaque: it is forwarded byte for byte. Only JSON bodies and
multipart forms are looked into, and only for small named fields.
"""

from __future__ import annotations

import json
import re
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

    The relay decides on these fields (allow-lists, prices, who owns a source video) and the
    upstream then parses the same bytes itself. Wherever two parsers could read the body
    differently, it is refused with a 400 instead: another content type, a repeated field,
    a field sent as a file, a header that does not parse. Forwarding a JSON body that does not
    parse would only earn the same error from upstream, later.
    """
    if not body:
        return {}
    if is_json(content_type):
        return _json_fields(body, names)
    if media_type(content_type) == "multipart/form-data":
        return _multipart_fields(body, _boundary(content_type or ""), names)
    raise RelayError(
        400,
        "Send the request body as application/json or multipart/form-data, with a Content-Type header saying which.",
        code="unsupported_content_type",
    )


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _json_fields(body: bytes, names: frozenset[str]) -> dict[str, str]:
    try:
        payload: Any = json.loads(body, object_pairs_hook=_unique_keys)
    except _DuplicateKey as duplicate:
        raise _duplicate_field(duplicate.key) from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise RelayError(400, "The request body is not valid JSON.", code="invalid_json") from None
    if not isinstance(payload, dict):
        return {}
    found = {}
    for name in names:
        outer, bracket, _ = name.partition("[")
        if bracket and outer in payload and not isinstance(payload[outer], dict):
            # `video` names a source video only as {"id": ...}; any other form could be read as one upstream.
            raise RelayError(400, f"The field '{outer}' must be an object like {{\"id\": \"video_123\"}}.", code="invalid_value", param=outer)
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


def _duplicate_field(name: str) -> RelayError:
    return RelayError(400, f"The field '{name}' appears more than once in the request body.", code="duplicate_field", param=name)


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
    # Plain names a bracketed field is nested in (`video` for `video[id]`): as a text field it is ambiguous.
    containers = {name.partition("[")[0] for name in names if "[" in name}
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
        if name in names:
            if is_file:
                raise RelayError(400, f"The field '{name}' must be a form field, not a file.", code="invalid_multipart", param=name)
            if name in found:
                raise _duplicate_field(name)
            value = body[headers_end + 4 : following]
            if len(value) > _MAX_FIELD_BYTES:
                raise RelayError(400, f"The field '{name}' is longer than {_MAX_FIELD_BYTES} bytes.", code="invalid_value", param=name)
            found[name] = value.decode("utf-8", errors="replace")
        elif name in containers and not is_file:
            raise RelayError(400, f"Name a source video with the field '{name}[id]'.", code="invalid_multipart", param=name)
        position = following + 2
    return found


# One `; key=value` parameter; a quoted value may hold `;` and escaped quotes (RFC 9110 5.6.4).
_PARAMETER = re.compile(r'\s*;\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("(?:[^"\\\r\n]|\\.)*"|[^;"\s]*)\s*')
_DISPOSITION_TYPE = re.compile(r"\s*([!#$%&'*+.^_`|~0-9A-Za-z-]+)")


def _disposition(raw_headers: bytes) -> tuple[str | None, bool]:
    """A part's field name and whether it is a file. Anything a stricter or looser parser could
    read otherwise (an unreadable or repeated header or parameter, a bare LF) is a 400."""
    text = raw_headers.decode("utf-8", errors="replace")
    if "\n" in text.replace("\r\n", ""):
        raise _unreadable_part()
    dispositions = [
        value for header, _, value in (line.partition(":") for line in text.split("\r\n")) if header.strip().lower() == "content-disposition"
    ]
    if not dispositions:
        return None, False
    if len(dispositions) > 1:
        raise _unreadable_part()
    value = dispositions[0]
    kind = _DISPOSITION_TYPE.match(value)
    if kind is None:
        raise _unreadable_part()
    parameters: dict[str, str] = {}
    position = kind.end()
    while position < len(value):
        parameter = _PARAMETER.match(value, position)
        if parameter is None or parameter.end() == position:
            raise _unreadable_part()
        key, raw = parameter.group(1).lower(), parameter.group(2)
        if key in parameters:
            raise _unreadable_part()
        parameters[key] = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
        position = parameter.end()
    if "name*" in parameters:
        raise _unreadable_part()  # an encoded field name: parsers disagree on it, and no client needs it
    return parameters.get("name"), "filename" in parameters or "filename*" in parameters


def _unreadable_part() -> RelayError:
    return RelayError(400, "A multipart part has a Content-Disposition header this relay cannot read unambiguously.", code="invalid_multipart")
