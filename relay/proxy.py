"""The request path for new work: key → body → session → account → upstream → outcome → answer."""

from __future__ import annotations

import logging
import time

from starlette.requests import Request
from starlette.responses import Response

from . import upstream as upstream_http
from .body import body_fields, read_body
from .errors import RelayError
from .keys import AuthError, authenticate
from .outcomes import cooldown_seconds, error_class, status_class, upstream_error
from .pool import Upstream
from .recorder import AccountUse, KeyUse, SessionUse
from .sessions import SESSION_FIELD, session_hash, session_id
from .state import RelayState
from .store import KeyRecord, NotFound, Outcome

log = logging.getLogger("relay.proxy")

SERVICE = "openai"
_FIELDS = frozenset({SESSION_FIELD})


def relay_state(request: Request) -> RelayState:
    return request.app.state.relay  # type: ignore[no-any-return]


async def authorize(request: Request, state: RelayState, now: float) -> KeyRecord:
    try:
        key = await authenticate(request.headers, state.keys, service=SERVICE, now=now)
    except AuthError as error:
        state.metrics.auth_failures.labels(error.reason).inc()
        raise
    state.recorder.put(KeyUse(key.id, now))
    return key


async def forward_new_work(request: Request, *, route: str, upstream_path: str) -> Response:
    """Forward a create-type request, byte for byte, to the account the scheduler picks."""
    state = relay_state(request)
    now = time.time()
    key = await authorize(request, state, now)
    content_type = request.headers.get("content-type")
    body = await read_body(
        request.stream(), declared_length=request.headers.get("content-length"), limit=state.settings.max_body_bytes
    )
    session = session_id(body_fields(body, content_type, _FIELDS), request.headers)
    upstream = await choose_account(state, session_hash(session) if session else None, now=now, route=route)
    answer = await attempt(
        state,
        upstream,
        request,
        route=route,
        key=key,
        method="POST",
        path=upstream_path,
        body=body,
    )
    headers = upstream_http.response_headers(answer.headers)
    if "content-type" in answer.headers:
        headers["content-type"] = answer.headers["content-type"]
    return Response(answer.body, status_code=answer.status, headers=headers)


async def choose_account(state: RelayState, sticky: str | None, *, now: float, route: str) -> Upstream:
    """The session's account while it is usable; otherwise priority, then least recently used."""
    pool, store = state.pool, state.store
    mapped = await state.db(store.session_account, sticky, now) if sticky else None
    chosen = pool.usable(mapped, now) if mapped else None
    if chosen is None:
        if mapped is not None:
            state.metrics.sticky_evictions.labels("account_unavailable").inc()
        chosen = pool.pick(now)
        if chosen is None:
            # Before refusing, make sure the view is current: an operator may have just added
            # or reset an account, and the periodic refresh may not have run yet.
            await state.db(state.reload)
            chosen = pool.pick(now)
        if chosen is None:
            raise no_account_error(state, now, route)
        if sticky:
            winner = await state.db(
                store.claim_session, sticky, chosen.name, replacing=mapped, now=now, ttl=state.settings.sticky_ttl_seconds
            )
            # Another worker mapped this session meanwhile: follow it if it can serve.
            chosen = pool.usable(winner, now) or chosen
    elif sticky:
        state.recorder.put(SessionUse(sticky, now, now + state.settings.sticky_ttl_seconds))
    pool.mark_used(chosen.name, now)
    state.recorder.put(AccountUse(chosen.name, now))
    return chosen


def no_account_error(state: RelayState, now: float, route: str) -> RelayError:
    state.metrics.no_account.labels(route).inc()
    recovery = state.pool.seconds_until_recovery(now)
    headers = {"retry-after": str(max(1, int(recovery + 0.999)))} if recovery is not None else {}
    detail = (
        f" The first rate-limited account is expected back in about {int(recovery + 0.999)} s."
        if recovery is not None
        else ""
    )
    return RelayError(
        503,
        "No upstream account is available right now: every account is rate-limited, unauthorized or disabled."
        + detail,
        code="no_upstream_account",
        headers=headers,
    )


async def attempt(
    state: RelayState,
    upstream: Upstream,
    request: Request,
    *,
    route: str,
    key: KeyRecord,
    method: str,
    path: str,
    body: bytes,
) -> upstream_http.Answer:
    """One upstream attempt: send, then record it and let it change the account's state."""
    account = upstream.account
    request_id: str = request.state.request_id
    try:
        answer = await upstream_http.send(
            state.http,
            method,
            upstream_http.url_for(account.base_api, path),
            headers=upstream_http.request_headers(request.headers.raw, upstream.credential),
            body=body,
            max_response_bytes=state.settings.max_upstream_response_bytes,
        )
    except upstream_http.UpstreamFailure as failure:
        record(state, upstream, key, request_id, route, None, failure.error_class, failure.latency_seconds)
        log.warning(
            "upstream failure request_id=%s account=%s route=%s error_class=%s detail=%s",
            request_id, account.name, route, failure.error_class, failure.message,
        )
        if failure.error_class == "timeout":
            raise RelayError(504, "The upstream did not answer in time.", code="upstream_timeout") from None
        raise RelayError(502, "The upstream could not be reached or broke off the answer.", code="upstream_unreachable") from None
    kind = error_class(answer.status)
    record(state, upstream, key, request_id, route, answer.status, kind, answer.latency_seconds)
    if kind != "none":
        await apply_error(state, upstream, answer, kind, request_id=request_id, route=route)
    return answer


def record(
    state: RelayState,
    upstream: Upstream,
    key: KeyRecord,
    request_id: str,
    route: str,
    status: int | None,
    kind: str,
    latency_seconds: float,
) -> None:
    account = upstream.account
    state.metrics.upstream_requests.labels(account.name, account.type, route, status_class(status), kind).inc()
    state.metrics.upstream_duration.labels(account.name, route).observe(latency_seconds)
    state.recorder.put(
        Outcome(
            ts=time.time(),
            request_id=request_id,
            key_name=key.name,
            account=account.name,
            account_type=account.type,
            route=route,
            upstream_status=status,
            error_class=kind,
            latency_ms=round(latency_seconds * 1000, 3),
        )
    )


async def apply_error(
    state: RelayState, upstream: Upstream, answer: upstream_http.Answer, kind: str, *, request_id: str, route: str
) -> None:
    """What an upstream error does to its account: cooldown on 429, out of rotation on 401/402."""
    now = time.time()
    name = upstream.name
    code, message = upstream_error(answer.body)
    log.warning(
        "upstream error request_id=%s account=%s route=%s status=%s error_class=%s code=%s",
        request_id, name, route, answer.status, kind, code,
    )
    if kind == "rate_limited":
        seconds, source = cooldown_seconds(
            answer.headers,
            answer.body,
            now=now,
            default=state.settings.default_cooldown_seconds,
            maximum=state.settings.max_cooldown_seconds,
        )
        new_state, reason, until = "rate_limited", f"upstream 429 (cooldown from {source})", now + seconds
    elif kind in ("unauthorized", "payment_required"):
        new_state, reason, until = "unauthorized", f"upstream {answer.status} {code or kind}", None
    else:
        return
    try:
        evicted = await state.db(
            state.store.set_account_state,
            name,
            new_state,
            now=now,
            reason=reason,
            until=until,
            last_error=message or f"HTTP {answer.status}",
            evict_sessions=True,
        )
    except NotFound:
        return  # removed by an operator while the request was in flight
    state.pool.apply_state(name, new_state, now=now, reason=reason, until=until)
    if evicted:
        state.metrics.sticky_evictions.labels(new_state).inc(evicted)
