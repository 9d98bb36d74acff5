"""Where Gemini's file downloads redirect to: a stand-in for Google's storage, under ``/_gcs``.

``GET /_gcs/{file_id}?expires=..&signature=..`` serves the generated video (the sample MP4, padded
like the contract's) with single ranges and an ETag. The signed query is the only credential: no API
key is needed, and none should arrive, since the key belongs to Google's API and not to wherever its
redirects point. The request log records any credential that does arrive (``x-goog-api-key``,
``?key=``, ``api-key`` or a bearer token) as the request's ``token``, so a test can check that the
relay never forwards one. A link expires ``URL_TTL_SECONDS`` after the redirect that handed it out.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Scope

from .content import content_etag, padded_head, serve_bytes
from .gate import provider_app
from .provider import Provider, bearer_token, header, query_value, short_id
from .state import GeminiStore, SandboxState, sandbox_state

PREFIX: Final = "/_gcs"
URL_TTL_SECONDS: Final = 600


def leaked_credential(scope: Scope) -> str | None:
    """Any API credential the request carries; storage needs none, so each one is a leak."""
    return (
        header(scope, "x-goog-api-key")
        or query_value(scope, "key")
        or header(scope, "api-key")
        or bearer_token(header(scope, "authorization"))
    )


def signature(store: GeminiStore, file_id: str, expires: int) -> str:
    return hmac.new(store.url_key, f"{file_id}:{expires}".encode(), hashlib.sha256).hexdigest()[:32]


def signed_path(state: SandboxState, file_id: str) -> str:
    expires = int(state.clock()) + URL_TTL_SECONDS
    return f"{PREFIX}/{file_id}?expires={expires}&signature={signature(state.gemini, file_id, expires)}"


def xml_error(status: int, code: str, message: str, details: str | None = None) -> Response:
    detail = f"<Details>{escape(details)}</Details>" if details else ""
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{escape(message)}</Message>{detail}</Error>"
    return Response(body, status_code=status, headers={"content-type": "application/xml; charset=UTF-8"})


def link_problem(request: Request, state: SandboxState, file_id: str) -> Response | None:
    expires = request.query_params.get("expires", "")
    given = request.query_params.get("signature", "")
    if not expires.isdigit() or not hmac.compare_digest(given, signature(state.gemini, file_id, int(expires))):
        return xml_error(
            403,
            "SignatureDoesNotMatch",
            "Access denied.",
            "The request signature we calculated does not match the signature you provided.",
        )
    if state.clock() > int(expires):
        return xml_error(400, "ExpiredToken", "Invalid argument.", "The provided token has expired.")
    return None


def range_refusal(length: int) -> Response:
    return xml_error(416, "InvalidRange", "The requested range cannot be satisfied.", f"Object length is {length} bytes.")


async def serve_object(request: Request) -> Response:
    state = sandbox_state(request)
    file_id = request.path_params["file_id"]
    problem = link_problem(request, state, file_id)
    if problem is not None:
        return problem
    generated = state.gemini.files.get(file_id)
    if generated is None:
        return xml_error(404, "NoSuchKey", "The specified key does not exist.")
    asset = state.assets["video"]
    length = generated.content_bytes or len(asset.data)
    etag = content_etag(file_id, "video", length)
    return serve_bytes(request, state, padded_head(asset.data, length), length, asset.media_type, etag, range_refusal)


def route_error(request: Request, exc: HTTPException) -> Response:
    return xml_error(exc.status_code, "NoSuchKey" if exc.status_code == 404 else "MethodNotAllowed", str(exc.detail))


STORAGE: Final = Provider("gemini", leaked_credential, lambda: {"x-guploader-uploadid": short_id(40)})


def storage_app(state: SandboxState) -> Starlette:
    return provider_app(state, STORAGE, [Route("/{file_id}", serve_object, methods=["GET"])], route_error)
