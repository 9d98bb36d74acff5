"""The ASGI application: routes, error handling, request ids and the lifespan that builds state.

`uvicorn relay.app:app` serves it; `create_app(settings)` builds one for tests.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import logging
import random
import time
from typing import Any, AsyncIterator

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route, Router
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import multiprocess, videos
from .config import ConfigError, Settings, load_settings
from .crypto import SecretKeyError
from .errors import AnswerCutShort, ClientGone, RelayError, envelope, error_response
from .logs import RequestFacts, configure_logging, fields
from .metrics import Metrics, RelayRegistry
from .metrics_server import listening_socket, serve_metrics
from .proxy import relay_state
from .routes import route_name
from .state import RelayState, build_state, keep_fresh

log = logging.getLogger("relay")
access_log = logging.getLogger("relay.access")


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def metrics_authorized(settings: Settings, authorization: str | None) -> bool:
    token = settings.metrics_token
    if token is None:
        return True
    presented = (authorization or "").removeprefix("Bearer ").strip()
    return hmac.compare_digest(presented.encode(), token.encode())


async def metrics(request: Request) -> Response:
    state = relay_state(request)
    if state.settings.metrics_port is not None:
        raise HTTPException(404)  # served on RELAY_METRICS_PORT instead
    if not metrics_authorized(state.settings, request.headers.get("authorization")):
        raise RelayError(401, "GET /metrics needs 'Authorization: Bearer <RELAY_METRICS_TOKEN>'.", code="invalid_metrics_token")
    registry = state.metrics.registry
    # Collectors read the database and the workers' files: keep that off the event loop.
    body = await anyio.to_thread.run_sync(_exposition, registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


def _exposition(registry: RelayRegistry) -> bytes:
    if registry.multiprocess_dir is not None:
        multiprocess.reap_dead_workers(registry.multiprocess_dir)
    return generate_latest(registry)


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
        # A correlation id, not a secret: the fast PRNG will do (urandom cost a system call per request).
        request_id = f"req_{random.getrandbits(96):024x}"
        facts = RequestFacts()
        scope.setdefault("state", {}).update(request_id=request_id, facts=facts)
        status = 0
        overhead_ms = 0.0
        counted = scope.get("path") not in _QUIET_PATHS
        metrics = _metrics(scope) if counted else None
        if metrics is not None:
            metrics.in_flight.inc()

        async def send_with_id(message: Message) -> None:
            nonlocal status, overhead_ms
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
        except ClientGone:
            pass  # no answer started and nobody to send one to: counted and logged as 499
        except AnswerCutShort:
            pass  # already logged as an upstream failure; the server closes the connection
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
            route = route_name(scope["method"], scope.get("path", ""))
            if metrics is not None:
                metrics.in_flight.dec()
                # 499: the client went away before an answer started (nginx's convention).
                metrics.requests.labels(route, str(status or 499)).inc()
                metrics.overhead.labels(route).observe(overhead_ms / 1000)
            if access_log.isEnabledFor(logging.INFO) and counted:
                access_log.info(
                    "request",
                    extra=fields(
                        request_id=request_id,
                        method=scope["method"],
                        route=facts.route or route,
                        status=status or 499,
                        key=facts.key,
                        account=facts.account,
                        error_class=facts.error_class,
                        upstream_ms=round(facts.upstream_seconds * 1000, 3) if facts.account else None,
                        overhead_ms=round(overhead_ms, 3),
                        duration_ms=round((time.perf_counter() - started_at) * 1000, 3),
                    ),
                )


# Scrapes and health checks would drown the access log and the request metrics.
_QUIET_PATHS = frozenset({"/metrics", "/healthz"})


def _metrics(scope: Scope) -> Metrics | None:
    """The running relay's metrics; None before the lifespan has built them (or if it failed)."""
    app = scope.get("app")
    state = getattr(getattr(app, "state", None), "relay", None)
    return state.metrics if state is not None else None


def create_app(settings: Settings | None = None) -> Starlette:
    """Build the relay. Settings default to the environment, read when the app starts."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        metrics_dir = multiprocess.configure()
        state: RelayState | None = None
        try:
            configured = settings or load_settings()
            configure_logging(configured.log_format)
            access_log.disabled = not configured.access_log
            state = build_state(configured)
            metrics_socket = None
            if configured.metrics_port is not None:
                # Bound here, before serving, so a port in use stops the start instead of failing later.
                metrics_socket = listening_socket(configured.metrics_host, configured.metrics_port)
        except (ConfigError, SecretKeyError, OSError) as error:
            configure_logging("text")
            log.error("cannot start: %s", error)
            if state is not None:
                await state.close_clients()
            raise
        state.recorder.start()
        app.state.relay = state
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(keep_fresh, state)
                if metrics_socket is not None:
                    tasks.start_soon(
                        serve_metrics,
                        metrics_socket,
                        functools.partial(metrics_authorized, configured),
                        functools.partial(_exposition, state.metrics.registry),
                        CONTENT_TYPE_LATEST,
                    )
                yield {}
                tasks.cancel_scope.cancel()
        finally:
            # uvicorn has drained in-flight requests by now; write what they recorded.
            await state.close_clients()
            state.store_threads.shutdown(wait=True)
            state.recorder.close()
            state.store.close()
            multiprocess.worker_exiting(metrics_dir)

    relay = Starlette(
        routes=[
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            # No slash-fixing redirects: they answer with an empty body and a Location built from
            # the client's Host header. A wrong path is a 404 in the error envelope.
            Mount("/openai/v1", app=Router(video_routes(), redirect_slashes=False)),
            Mount("/openai", app=Router(video_routes(), redirect_slashes=False)),
        ],
        middleware=[Middleware(RequestIdMiddleware)],
        exception_handlers={RelayError: relay_error, HTTPException: http_error},
        lifespan=lifespan,
    )
    relay.router.redirect_slashes = False
    return relay


app = create_app()
