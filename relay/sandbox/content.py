"""Serving generated media: sample bytes padded to any length, single ranges, ETags, streams that notice a gone client."""

from __future__ import annotations

import hashlib
import re
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Final

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from .state import SandboxState

BYTES_MARKER: Final = re.compile(r"\[bytes=(\d+)\]")
FREE_BOX_HEADER_BYTES: Final = 8
STREAM_CHUNK_BYTES: Final = 64 * 1024
ZERO_CHUNK: Final = bytes(STREAM_CHUNK_BYTES)
RANGE_HEADER: Final = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", re.ASCII | re.IGNORECASE)

# Answers a range past the end; each provider words it its own way. Given the content length.
Unsatisfiable = Callable[[int], Response]


def padding_problem(total: int, asset_bytes: int) -> str | None:
    """Why ``total`` cannot be the size of the sample MP4 plus one ``free`` box, or None."""
    if total == asset_bytes or total >= asset_bytes + FREE_BOX_HEADER_BYTES:
        return None
    return f"content length must be {asset_bytes} (the bare sample) or at least {asset_bytes + FREE_BOX_HEADER_BYTES} bytes, got {total}"


def marked_content_length(prompt: str, state: SandboxState) -> int | None:
    """The video length a prompt's ``[bytes=N]`` marker asks for, else the sandbox-wide padding.

    Raises ValueError (the problem) for a length the sample cannot be padded to.
    """
    match = BYTES_MARKER.search(prompt)
    if match is None:
        return state.content_bytes
    total = int(match.group(1))
    problem = padding_problem(total, len(state.assets["video"].data))
    if problem is not None:
        raise ValueError(problem)
    return total


class RangeNotSatisfiable(Exception):
    pass


def free_box_header(box_size: int) -> bytes:
    if box_size <= 0xFFFFFFFF:
        return struct.pack(">I4s", box_size, b"free")
    return struct.pack(">I4sQ", 1, b"free", box_size)


def padded_head(asset: bytes, total: int) -> bytes:
    """The non-zero prefix of a ``total``-byte MP4: the sample plus a ``free`` box header."""
    if total == len(asset):
        return asset
    return asset + free_box_header(total - len(asset))


async def stream_span(
    state: SandboxState, head: bytes, start: int, stop: int, client_gone: Callable[[], Awaitable[bool]]
) -> AsyncIterator[bytes]:
    """Yield bytes [start, stop) of ``head`` followed by zeros, without materialising the file.

    Stops when the client has gone: the server drops what is sent to a closed connection
    without a word, so without the check a vanished client's file would be generated to its end.
    """
    state.open_streams += 1
    try:
        position = start
        while position < stop and not await client_gone():
            end = min(stop, position + STREAM_CHUNK_BYTES)
            if position < len(head):
                end = min(end, len(head))
                chunk = head[position:end]
            else:
                chunk = ZERO_CHUNK if end - position == STREAM_CHUNK_BYTES else ZERO_CHUNK[: end - position]
            state.content_bytes_total += len(chunk)
            yield chunk
            position = end
    finally:
        state.open_streams -= 1


def requested_span(header: str | None, length: int) -> tuple[int, int] | None:
    """The [start, stop) span of a single ``bytes`` range; None means serve the whole body."""
    match = RANGE_HEADER.fullmatch(header) if header else None
    if match is None or not (match[1] or match[2]):
        return None  # RFC 9110: ignore ranges we do not understand, including multi-range.
    first, last = match[1], match[2]
    if not first:
        suffix = int(last)
        if suffix == 0:
            raise RangeNotSatisfiable
        return max(0, length - suffix), length
    start = int(first)
    if last and int(last) < start:
        return None
    if start >= length:
        raise RangeNotSatisfiable
    return start, min(int(last) + 1, length) if last else length


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if if_none_match is None:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def content_etag(video_id: str, variant: str, length: int) -> str:
    digest = hashlib.sha256(f"{video_id}:{variant}:{length}".encode()).hexdigest()
    return f'"{digest[:32]}"'


def serve_bytes(
    request: Request, state: SandboxState, head: bytes, length: int, media_type: str, etag: str, unsatisfiable: Unsatisfiable
) -> Response:
    headers = {"accept-ranges": "bytes", "etag": etag}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    if_range = request.headers.get("if-range")
    range_header = request.headers.get("range") if if_range in (None, etag) else None
    try:
        span = requested_span(range_header, length)
    except RangeNotSatisfiable:
        refusal = unsatisfiable(length)
        refusal.headers.update({**headers, "content-range": f"bytes */{length}"})
        return refusal
    start, stop = span or (0, length)
    headers["content-length"] = str(stop - start)
    if span is not None:
        headers["content-range"] = f"bytes {start}-{stop - 1}/{length}"
    status = 206 if span is not None else 200
    if request.method == "HEAD":
        return Response(status_code=status, headers=headers, media_type=media_type)
    return StreamingResponse(stream_span(state, head, start, stop, request.is_disconnected), status, headers, media_type)
