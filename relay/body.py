"""The client's request body: read it (bounded) and find the few fields the relay needs.

The body itself is opaque: it is forwarded byte for byte. Only JSON bodies and
multipart forms are looked into, and only for small named fields.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from .errors import RelayError, shown

_MAX_FIELD_BYTES = 4096


async def read_body(chunks: AsyncIterator[bytes], *, declared_length: str | None, limit: int) -> bytes:
    if declared_length is not None:
        if not (declared_length.isascii() and declared_length.isdigit()):
            raise RelayError(400, "Invalid Content-Length header.", code="invalid_content_length")
        if int(declared_length) > limit:
            raise _too_large(limit)
    received = bytearray()
    async for chunk in chunks:
        received += chunk
        if len(received) > limit:
            raise _too_large(limit)
    return bytes(received)


def _too_large(limit: int) -> RelayError:
    return RelayError(413, f"Request body is larger than this relay accepts ({limit} bytes).", code="request_too_large")


def media_type(content_type: str | None) -> str:
    return (content_type or "").split(";", 1)[0].strip().lower()


def request_fingerprint(body: bytes, content_type: str | None) -> bytes:
    """What makes two requests the same request: the media type and the body, except a form's
    boundary, which SDKs draw at random for every send (a retried upload is the same upload)."""
    kind = media_type(content_type)
    if kind == "multipart/form-data" and body:
        with contextlib.suppress(RelayError):  # no usable boundary: the form is refused later anyway
            body = body.replace(b"--" + multipart_boundary(content_type or ""), b"--\0boundary")
    return kind.encode() + b"\0" + body


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
        return _multipart_fields(body, multipart_boundary(content_type or ""), names)
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
    if _SURROGATE_ESCAPE.search(body) is not None:
        _refuse_lone_surrogates(payload)
    found = {}
    for name in names:
        outer, bracket, _ = name.partition("[")
        if bracket and outer in payload and not isinstance(payload[outer], dict):
            # `video` names a source video only as {"id": ...}; any other form could be read as one upstream.
            raise RelayError(400, f'The field \'{outer}\' must be an object like {{"id": "video_123"}}.', code="invalid_value", param=outer)
        value = _json_value(payload, name)
        if isinstance(value, str):  # valid Unicode: _refuse_lone_surrogates has seen to that
            found[name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            found[name] = json.dumps(value)
    return found


# JSON's \uD800-\uDFFF escapes: a pair of them is one character beyond the BMP, one alone is no
# character at all. Bodies without any skip the walk below.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _refuse_lone_surrogates(payload: dict[str, Any]) -> None:
    """Any string in the body, not only the fields the relay reads, must be valid Unicode: the
    upstream gets the body as it is, and one that cannot encode it answers 500 (the account then
    counts a server error a client caused) or fails in ways of its own."""
    for name, value in payload.items():
        if not _all_valid_unicode(name) or not _all_valid_unicode(value):
            field = shown(name.encode("utf-8", "backslashreplace").decode())
            raise RelayError(400, f"The field '{field}' is not valid Unicode.", code="invalid_json", param=field)


def _all_valid_unicode(value: Any) -> bool:
    if isinstance(value, str):
        return is_valid_unicode(value)
    if isinstance(value, dict):
        return all(_all_valid_unicode(key) and _all_valid_unicode(item) for key, item in value.items())
    if isinstance(value, list):
        return all(_all_valid_unicode(item) for item in value)
    return True


def _duplicate_field(name: str) -> RelayError:
    return RelayError(400, f"The field '{name}' appears more than once in the request body.", code="duplicate_field", param=name)


def json_object(body: bytes) -> dict[str, Any] | None:
    """A body that is a JSON object, as a dict; None for anything else (an answer an upstream garbled)."""
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


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


def multipart_boundary(content_type: str) -> bytes:
    """The one boundary parameter, read as the disposition parameters are (quote-aware)."""
    kind = _TOKEN.match(content_type)
    parameters = _parameters(content_type, kind.end() if kind else 0) if kind else None
    value = parameters.get("boundary") if parameters is not None else None
    if value is None or not 0 < len(value) <= 200:
        raise RelayError(400, "multipart/form-data request without a valid boundary parameter (exactly one).", code="invalid_multipart")
    return value.encode("latin-1", errors="replace")


def _multipart_fields(body: bytes, boundary: bytes, names: frozenset[str]) -> dict[str, str]:
    """Walk the parts without copying file contents; keep small non-file fields we asked for.

    Framing follows RFC 2046 strictly (a delimiter starts the body or follows a CRLF, and is
    followed by `--` or by CRLF); a form that does not frame that way, or has no closing
    delimiter, is refused rather than read one way here and another way upstream.
    """
    delimiter = b"--" + boundary
    # Plain names a bracketed field is nested in (`video` for `video[id]`): as a text field it is ambiguous.
    containers = {name.partition("[")[0] for name in names if "[" in name}
    found: dict[str, str] = {}
    uploaded: set[str] = set()  # containers sent as a file: `video` for an edit of an uploaded video
    position = 0 if body.startswith(delimiter) else body.find(b"\r\n" + delimiter)
    if position > 0:
        position += 2
    while True:
        if position < 0:
            raise _unframed()
        start = position + len(delimiter)
        if body[start : start + 2] == b"--":
            _refuse_both_sources(found, uploaded)
            return found
        line_end = body.find(b"\r\n", start)
        if line_end == -1 or body[start:line_end].strip(b" \t"):
            raise _unframed()  # `--boundaryX`: neither a delimiter nor plain content
        headers_end = body.find(b"\r\n\r\n", line_end)
        following = body.find(b"\r\n" + delimiter, line_end)
        if headers_end == -1 or following == -1 or headers_end > following:
            raise _unframed()  # no blank line before the next delimiter, or no next delimiter at all
        name, is_file = _disposition(body[line_end + 2 : headers_end])
        if name in names:
            if is_file:
                raise RelayError(400, f"The field '{name}' must be a form field, not a file.", code="invalid_multipart", param=name)
            if name in found:
                raise _duplicate_field(name)
            value = body[headers_end + 4 : following]
            if len(value) > _MAX_FIELD_BYTES:
                raise RelayError(400, f"The field '{name}' is longer than {_MAX_FIELD_BYTES} bytes.", code="invalid_value", param=name)
            found[name] = value.decode("utf-8", errors="replace")
        elif name in containers:
            if not is_file:
                raise RelayError(400, f"Name a source video with the field '{name}[id]'.", code="invalid_multipart", param=name)
            uploaded.add(name)
        position = following + 2


def _refuse_both_sources(found: dict[str, str], uploaded: set[str]) -> None:
    """`video[id]` and a `video` file together: the relay would pick the account by the id and the
    upstream might work on the file, or the other way round."""
    for container in uploaded:
        if f"{container}[id]" in found:
            raise RelayError(
                400,
                f"Send either '{container}[id]' (a video of yours) or a '{container}' file, not both.",
                code="invalid_multipart",
                param=container,
            )


def _unframed() -> RelayError:
    return RelayError(
        400,
        "The multipart body is not framed by its boundary as RFC 2046 requires (or has no closing delimiter).",
        code="invalid_multipart",
    )


# One `; key=value` parameter; a quoted value may hold `;` but no backslash: parsers disagree on
# what a backslash escapes (some read `\\"` as an escaped quote), so values that need one are refused.
_PARAMETER = re.compile(r'\s*;\s*([!#$%&\'*+.^_`|~0-9A-Za-z-]+)\s*=\s*("[^"\\\r\n]*"|[^;"\\\s]*)\s*')
_TOKEN = re.compile(r"\s*[!#$%&'*+.^_`|~0-9A-Za-z/-]+")


def _parameters(value: str, position: int) -> dict[str, str] | None:
    """`; key=value` parameters from `position` on, keys lower-cased; None if any is unreadable or repeated."""
    parameters: dict[str, str] = {}
    while position < len(value):
        parameter = _PARAMETER.match(value, position)
        if parameter is None or parameter.end() == position:
            return None
        key, raw = parameter.group(1).lower(), parameter.group(2)
        if key in parameters:
            return None
        parameters[key] = raw[1:-1] if raw.startswith('"') else raw
        position = parameter.end()
    return parameters


def _disposition(raw_headers: bytes) -> tuple[str | None, bool]:
    """A part's field name and whether it is a file. Anything a stricter or looser parser could
    read otherwise (an unreadable or repeated header or parameter, an encoded or continued name,
    a bare CR or LF, a folded header line) is a 400."""
    text = raw_headers.decode("utf-8", errors="replace")
    lines = text.split("\r\n")
    if any("\r" in line or "\n" in line or line[:1] in (" ", "\t") for line in lines):
        raise _unreadable_part()
    dispositions = [
        value for header, _, value in (line.partition(":") for line in lines) if header.strip().lower() == "content-disposition"
    ]
    if not dispositions:
        return None, False
    if len(dispositions) > 1:
        raise _unreadable_part()
    value = dispositions[0]
    kind = _TOKEN.match(value)
    parameters = _parameters(value, kind.end()) if kind else None
    if parameters is None:
        raise _unreadable_part()
    is_file = any(key.startswith("filename") for key in parameters)
    if any("*" in key for key in parameters if not key.startswith("filename")):
        raise _unreadable_part()  # `name*=` or `name*0=`: parsers disagree on them, and no client needs them
    return parameters.get("name"), is_file


def _unreadable_part() -> RelayError:
    return RelayError(
        400, "A multipart part has a Content-Disposition header this relay cannot read unambiguously.", code="invalid_multipart"
    )
