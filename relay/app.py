"""The ASGI application: routes, error handling, request ids and the lifespan that builds state.

`uvicorn relay.app:app` serves it; `create_app(settings)` builds one for tests.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import time
from typing import Any, AsyncIterator

import anyio
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import videos
from .config import ConfigError, Settings, load_settings
from .crypto import SecretKeyError
from .errors import RelayError, envelope, error_response
from .logs import RequestFacts, configure_logging, fields
from .proxy import relay_state
from .state import build_state, keep_fresh
from .upstream import make_client

log = logging.getLogger("relay")
access_log = logging.getLogger("relay.access")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def metrics(request: Request) -> Response:
    state = relay_state(request)
    token = state.settings.metrics_token
    if token is not None:
        presented = (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()
        if not hmac.compare_digest(presented.encode(), token.encode()):
            raise RelayError(401, "GET /metrics needs 'Authorization: Bearer <RELAY_METRICS_TOKEN>'.", code="invalid_metrics_token")
    return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def videos_collection(request: Request) -> Response:
    if request.method == "POST":
        return await videos.create_video(request)
    return await videos.list_videos(request)


async def video_item(request: Request) -> Response:
    if request.method == "DELETE":
        return await videos.delete_video(request)
    return await videos.retrieve_video(request)


def video_routes() -> list[Route]:
    # Fixed paths first: `/videos/edits` must not be read as a video id.
    return [
        Route("/videos", videos_collection, methods=["GET", "POST"]),
        Route("/videos/edits", videos.edit_video, methods=["POST"]),
        Route("/videos/extensions", videos.extend_video, methods=["POST"]),
        Route("/videos/characters", videos.create_character, methods=["POST"]),
        Route("/videos/characters/{character_id}", videos.retrieve_character, methods=["GET"]),
        Route("/videos/{video_id}", video_item, methods=["GET", "DELETE"]),
        Route("/videos/{video_id}/content", videos.video_content, methods=["GET"]),
        Route("/videos/{video_id}/remix", videos.remix_video, methods=["POST"]),
    ]


async def relay_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RelayError)
    return error_response(exc)


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    messages = {404: "Unknown route.", 405: f"Method {request.method} is not allowed on this route."}
    message = messages.get(exc.status_code, str(exc.detail))
    error = RelayError(exc.status_code, message, code="not_found" if exc.status_code == 404 else "method_not_allowed")
    error.headers.update(exc.headers or {})
    return error_response(error)


class RequestIdMiddleware:
    """Every response gets `x-request-id` and `x-relay-overhead-ms`; every request one log line.

    Escaped exceptions become the OpenAI envelope (500) here, the one place that sees them all.
    Plain ASGI (no BaseHTTPMiddleware), so streamed bodies pass through untouched.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at = time.perf_counter()
        request_id = "req_" + secrets.token_hex(12)
        facts = RequestFacts()
        scope.setdefault("state", {}).update(request_id=request_id, facts=facts)
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                overhead_ms = max(0.0, (time.perf_counter() - started_at - facts.upstream_seconds) * 1000)
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                    (b"x-relay-overhead-ms", f"{overhead_ms:.3f}".encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error", extra=fields(request_id=request_id))
            if status:
                raise
            await send_with_id(
                {"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]}
            )
            body = envelope(
                f"The relay failed to handle this request (request id {request_id}).", status=500, code="internal_error"
            )
            await send({"type": "http.response.body", "body": body})
        finally:
            if access_log.isEnabledFor(logging.INFO) and scope.get("path") not in _QUIET_PATHS:
                access_log.info(
                    "request",
                    extra=fields(
                        request_id=request_id,
                        method=scope["method"],
                        route=facts.route,
                        status=status,
                        key=facts.key,
                        account=facts.account,
                        error_class=facts.error_class,
                        upstream_ms=round(facts.upstream_seconds * 1000, 3) if facts.account else None,
                        duration_ms=round((time.perf_counter() - started_at) * 1000, 3),
                    ),
                )


# Scrapes and health checks would drown the access log.
_QUIET_PATHS = frozenset({"/metrics", "/healthz"})


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the relay. Settings default to the environment, read when the app starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            configured = settings or load_settings()
            configure_logging(configured.log_format)
            access_log.disabled = not configured.access_log
            state = build_state(configured, make_client(configured))
        except (ConfigError, SecretKeyError) as error:
            configure_logging("text")
            log.error("cannot start: %s", error)
            raise
        state.recorder.start()
        app.state.relay = state
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(keep_fresh, state)
                yield {}
                tasks.cancel_scope.cancel()
        finally:
            # uvicorn has drained in-flight requests by now; write what they recorded.
            await state.close_clients()
            state.recorder.close()
            state.store.close()

    return Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Mount("/openai/v1", routes=video_routes()),
            Mount("/openai", routes=video_routes()),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={RelayError: relay_error, HTTPException: http_error},
        lifespan=lifespan,
    )


app = create_app()
