"""uvicorn's response path alone: an ASGI app that answers any GET with a file's worth of zeros
from memory, honouring a single `Range: bytes=first-last`.

    uvicorn bench.floor_uvicorn:app --loop uvloop --http httptools  (FLOOR_UVICORN_BYTES=<size>)

bench/streaming.py times downloads from it, started with the relay's own uvicorn flags, in the
same rounds as the relay's. Nothing is read from an upstream, so what it keeps of nginx's direct
rate is the most the relay's response path (uvicorn, httptools, uvloop's writes) could pass on
if reading the upstream cost nothing: it shows whether that path is a download's ceiling. It
sends chunks of the relay's read size (relay.upstream.READ_BUFFER_BYTES). Loopback only.
"""

from __future__ import annotations

import os
import re
from typing import Any

from relay.upstream import READ_BUFFER_BYTES

FILE_BYTES = int(os.environ.get("FLOOR_UVICORN_BYTES", str(1 << 30)))
_CHUNK = bytes(READ_BUFFER_BYTES)
_RANGE = re.compile(rb"bytes=(\d+)-(\d+)")

Scope = dict[str, Any]


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    first, last, status = 0, FILE_BYTES - 1, 200
    asked = _RANGE.fullmatch(dict(scope["headers"]).get(b"range", b""))
    if asked is not None:
        first, last, status = int(asked[1]), min(int(asked[2]), FILE_BYTES - 1), 206
    left = last - first + 1
    headers = [(b"content-type", b"video/mp4"), (b"content-length", b"%d" % left)]
    if status == 206:
        headers.append((b"content-range", b"bytes %d-%d/%d" % (first, last, FILE_BYTES)))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    chunk = memoryview(_CHUNK)
    while left > 0:
        piece = chunk[:left]
        await send({"type": "http.response.body", "body": piece, "more_body": True})
        left -= len(piece)
    await send({"type": "http.response.body", "body": b"", "more_body": False})
