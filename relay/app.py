"""The ASGI application: routes, error handling, request ids and the lifespan that builds state.

`uvicorn relay.app:app` serves it; `create_app(settings)` builds one for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import hmac
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.to_thread
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Lifespan, Message, Receive, Scope, Send

from . import multiprocess
from .caller import relay_state, request_facts, request_id
from .config import ConfigError, Settings, is_loopback_address, load_settings
from .crypto import SecretKeyError
from .errors import AnswerCutShort, ClientGone, RelayError, envelope, error_response
from .jobs.watcher import run_watcher
from .logs import RequestFacts, configure_logging, fields, flush_logs, log_format_from_env, log_info
from .metrics import RelayRegistry
from .metrics_server import listening_socket, serve_metrics
from .records import StoreUnavailable
from .retention import run_retention
from .routes import OTHER, Route, RouteTable
from .state import RelayState, build_state, keep_fresh
from .webhooks.dispatcher import run_deliveries

log = logging.getLogger("relay")
access_log = logging.getLogger("relay.access")


# A load balancer polls /healthz every few seconds: a database that has not answered a one-row
# read in this long is as good as down for this instance.
HEALTHZ_DATABASE_TIMEOUT_SECONDS = 2.0


async def healthz(request: Request) -> Response:
    """200 while this instance reaches its database, else 503, so a load balancer routes around it."""
    state = relay_state(request)
    read = asyncio.ensure_future(state.db(state.store.config_version))
    try:
        # Shielded: the timeout answers now; the read, already in a store thread, ends by itself.
        await asyncio.wait_for(asyncio.shield(read), HEALTHZ_DATABASE_TIMEOUT_SECONDS)
    except TimeoutError:
        # Its outcome is no longer anyone's: fetched here so asyncio logs no "never retrieved" error.
        read.add_done_callback(lambda done: done.cancelled() or done.exception())
        return JSONResponse({"status": "unavailable", "database": "timeout"}, status_code=503)
    except Exception as exc:  # any failure to read is "unavailable"; the log names its class
        # Only the class: a driver's message can name the database's path or host.
        log.warning("healthz: the database read failed (%s)", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "error"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


def metrics_authorized(settings: Settings, authorization: str | None) -> bool:
    token = settings.metrics_token
    if token is None:
        return True
    # RFC 7235: the scheme is case-insensitive; a bare token (no scheme) is not a Bearer credential.
    scheme, _, presented = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(presented.strip().encode(), token.encode())


def arrived_beyond_loopback(scope: Scope) -> bool:
    """Whether the request reached this server on an address other machines can reach.

    uvicorn puts the accepting socket's own address in scope["server"], so a relay bound to
    0.0.0.0 tells a scrape over 127.0.0.1 from one over the public interface. A unix socket or an
    in-process client has no IP address there: only this machine reaches those.
    """
    server = scope.get("server")
    host = server[0] if server else None
    return isinstance(host, str) and is_loopback_address(host) is False


async def metrics(request: Request) -> Response:
    state = relay_state(request)
    if state.settings.metrics_port is not None:
        raise HTTPException(404)  # served on RELAY_METRICS_PORT instead
    if state.settings.metrics_token is None and arrived_beyond_loopback(request.scope):
        # Metrics name keys and accounts and show their budgets: without a token, only this machine may read them.
        raise RelayError(
            403,
            "GET /metrics from beyond this machine needs RELAY_METRICS_TOKEN set on the relay "
            "(or scrape RELAY_METRICS_PORT, or this port over loopback).",
            code="metrics_token_required",
        )
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


# The store has already waited out its busy timeout on this request: a retry a second later
# finds the database back or answers just as fast.
DATABASE_RETRY_AFTER_SECONDS = 1


def database_unavailable(request: Request, exc: StoreUnavailable) -> Response:
    """503 for a database that is locked, failing or gone: the client retries; no traceback per request."""
    facts = request_facts(request)
    facts.error_class = "database_unavailable"
    log.warning("database unavailable: %s", exc.reason, extra=fields(request_id=request_id(request), key=facts.key))
    return error_response(
        RelayError(
            503,
            "The relay's database is unavailable just now; retry shortly.",
            code="database_unavailable",
            headers={"retry-after": str(DATABASE_RETRY_AFTER_SECONDS), "x-should-retry": "true"},
        )
    )


def http_error(request: Request, exc: HTTPException) -> Response:
    messages = {404: "Unknown route.", 405: f"Method {request.method} is not allowed on this route."}
    message = messages.get(exc.status_code, str(exc.detail))
    error = RelayError(exc.status_code, message, code="not_found" if exc.status_code == 404 else "method_not_allowed")
    error.headers.update(exc.headers or {})
    return error_response(error)


def serve_routes(table: RouteTable) -> ASGIApp:
    """The handler of the request's route, with the relay's own errors answered in the envelope."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, send)
        try:
            if _has_encoded_slash(scope.get("raw_path")):
                raise HTTPException(404)
            # uvicorn's --root-path taken off the front by starlette's own rule, as its router did.
            route, scope["path_params"] = table.find(scope["method"], get_route_path(scope))
            request_facts(request).route = route.name
            response = await route.handler(request)
        except RelayError as error:
            response = error_response(error)
        except HTTPException as error:
            response = http_error(request, error)
        except StoreUnavailable as error:
            response = database_unavailable(request, error)
        # Raised while the answer is being sent, an error has no envelope left to go in: the
        # request-id middleware logs it and the server closes the connection.
        await response(scope, receive, send)

    return serve


def _has_encoded_slash(raw_path: bytes | None) -> bool:
    """Routes match the decoded path, where a %2F is a slash: `POST /videos/{id}%2Fremix` would
    start a remix while a front proxy's rules saw a path no route has. No id holds a slash."""
    return raw_path is not None and b"%2" in raw_path and (b"%2f" in raw_path or b"%2F" in raw_path)


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
        state = _relay(scope)
        metrics = state.metrics if counted and state is not None else None
        if metrics is not None:
            metrics.in_flight.inc()
        if state is not None:
            state.requests_running += 1

        async def receive_noting_disconnect() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                facts.client_left = True
            return message

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
            await self.app(scope, receive_noting_disconnect, send_with_id)
        except asyncio.CancelledError:
            if not facts.cut_by_shutdown():
                raise
            # uvicorn's graceful-shutdown limit ran out: the access line below says so, and ending
            # here spares a traceback for a cut that was asked for (uvicorn closes the connection).
        except ClientGone:
            pass  # no answer started and nobody to send one to: counted and logged as 499
        except AnswerCutShort:
            pass  # already logged as an upstream failure; the server closes the connection
        except Exception:
            log.exception("unhandled error", extra=fields(request_id=request_id))
            if status:
                raise
            await send_with_id({"type": "http.response.start", "status": 500, "headers": [(b"content-type", b"application/json")]})
            body = envelope(f"The relay failed to handle this request (request id {request_id}).", status=500, code="internal_error")
            await send({"type": "http.response.body", "body": body})
        finally:
            # Named by the route table when routed; a request that matched no route is `other`.
            route = facts.route or OTHER
            if metrics is not None:
                metrics.in_flight.dec()
                # 499: the client went away before an answer started (nginx's convention).
                metrics.requests_by(route, str(status or 499)).inc()
                metrics.overhead_by(route).observe(overhead_ms / 1000)
            if counted:
                log_info(
                    access_log,
                    "request",
                    request_id=request_id,
                    method=scope["method"],
                    route=route,
                    status=status or 499,
                    key=facts.key,
                    account=facts.account,
                    error_class=facts.error_class,
                    upstream_ms=round(facts.upstream_seconds * 1000, 3) if facts.account else None,
                    overhead_ms=round(overhead_ms, 3),
                    duration_ms=round((time.perf_counter() - started_at) * 1000, 3),
                )
            if state is not None:
                state.requests_running -= 1


# Scrapes and health checks would drown the access log and the request metrics.
_QUIET_PATHS = frozenset({"/metrics", "/healthz"})


def _relay(scope: Scope) -> RelayState | None:
    """The running relay's state; None before the lifespan has built it (or if it failed)."""
    app = scope.get("app")
    return getattr(getattr(app, "state", None), "relay", None)


# Cancelled requests only run their cleanup (no awaits on the network): a second is plenty.
CANCELLED_REQUESTS_GRACE_SECONDS = 1.0


class RelayApp(Starlette):
    """Starlette for the lifespan and the app's state; HTTP requests go to `serve_http` directly.

    Also no traceback after a start the relay refused (its reason is logged on one line).
    """

    def __init__(self, serve_http: ASGIApp, lifespan: Lifespan[Starlette]) -> None:
        super().__init__(lifespan=lifespan)
        self.serve_http = serve_http

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["app"] = self
            await self.serve_http(scope, receive, send)
            return
        if scope["type"] == "lifespan":
            send = self._quiet_refusal(send)
        await super().__call__(scope, receive, send)

    def _quiet_refusal(self, send: Send) -> Send:
        async def send_without_traceback(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed" and getattr(self.state, "start_refused", False):
                message = {**message, "message": ""}
            await send(message)

        return send_without_traceback


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
            configure_logging(log_format_from_env())
            log.error("cannot start: %s", error)
            app.state.start_refused = True  # the line above says why: no traceback after it
            if state is not None:
                await state.close_clients()
            raise
        state.recorder.start()
        app.state.relay = state
        if configured.gc_freeze:
            # What start-up built (modules, routes, this state: some 77,000 objects) lives as long
            # as the process; frozen, the cycle collector's full passes stop scanning it. They
            # paused every request for up to 50 ms under load before (measured; 2 ms after).
            gc.freeze()
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(keep_fresh, state)
                if configured.job_watcher:
                    tasks.start_soon(run_watcher, state)
                tasks.start_soon(run_deliveries, state)
                tasks.start_soon(run_retention, state)
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
            # uvicorn has let requests finish, up to its --timeout-graceful-shutdown, and cancelled
            # the rest: let those note how they ended before the recorder writes its last rows.
            with anyio.move_on_after(CANCELLED_REQUESTS_GRACE_SECONDS):
                while state.requests_running:
                    await anyio.sleep(0.01)
            await state.close_clients()
            state.store_threads.shutdown(wait=True)
            state.recorder.close()
            state.store.close()
            multiprocess.worker_exiting(metrics_dir)
            flush_logs()

    own = [Route("GET", "/healthz", OTHER, healthz), Route("GET", "/metrics", OTHER, metrics)]
    # No slash-fixing redirects: they answer with an empty body and a Location built from the
    # client's Host header. A wrong path is a 404 in the error envelope.
    table = RouteTable(own, prefixes=["/openai/v1", "/openai"])
    relay = RelayApp(RequestIdMiddleware(serve_routes(table)), lifespan=lifespan)
    return relay


app = create_app()
