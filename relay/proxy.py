"""The request path shared by every route: key, account, one upstream attempt, its effects, the answer."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from . import upstream as upstream_http
from .body import read_body
from .errors import ClientGone, RelayError, WorkMayExist, error_response
from .keys import AuthError, authenticate
from .logs import RequestFacts, fields
from .outcomes import answer_class, cooldown_seconds, is_redirect, status_class, upstream_error
from .pool import Upstream
from .quota import check_request_rate, note_upstream_quota
from .recorder import AccountUse, KeyUse, SessionUse
from .records import KeyRecord, NotFound, Outcome
from .state import RelayState

log = logging.getLogger("relay.proxy")

SERVICE = "openai"


def relay_state(request: Request) -> RelayState:
    return request.app.state.relay  # type: ignore[no-any-return]


def request_facts(request: Request) -> RequestFacts:
    facts: RequestFacts = request.state.facts
    return facts


async def authorize(request: Request, state: RelayState, now: float) -> KeyRecord:
    try:
        key = await authenticate(request.headers, state.keys, service=SERVICE, now=now)
    except AuthError as error:
        state.metrics.auth_failures.labels(error.reason).inc()
        raise
    state.recorder.put(KeyUse(key.id, now))
    request_facts(request).key = key.name
    await check_request_rate(state, key, state.clock())
    return key


async def request_body(request: Request, state: RelayState) -> bytes:
    if len(request.headers.getlist("content-type")) > 1:
        # The relay reads the first; an upstream might read the last.
        raise RelayError(400, "Send one Content-Type header.", code="invalid_request_headers")
    try:
        return await read_body(request.stream(), declared_length=request.headers.get("content-length"), limit=state.settings.max_body_bytes)
    except ClientDisconnect:
        # Hung up mid-body, or sent a body the server could not frame: nothing was forwarded.
        raise ClientGone() from None


Admit = Callable[[Upstream], Awaitable[bool]]


async def _admitting(upstream: Upstream) -> bool:
    return True


async def pick_admitted(state: RelayState, now: float, admit: Admit, *, exclude: list[str]) -> Upstream | None:
    """The scheduler's pick among accounts that `admit` accepts (it refuses accounts at their daily cap)."""
    tried = list(exclude)
    while (candidate := state.pool.pick(now, exclude=tried)) is not None:
        if await admit(candidate):
            return candidate
        tried.append(candidate.name)
    return None


async def choose_account(state: RelayState, sticky: str | None, *, now: float, route: str, admit: Admit = _admitting) -> Upstream:
    """For new work: the session's account while it is usable; otherwise priority, then least recently used."""
    pool, store = state.pool, state.store
    mapped = await state.db(store.session_account, sticky, now) if sticky else None
    chosen = pool.usable(mapped, now) if mapped else None
    if chosen is not None and not await admit(chosen):
        chosen = None
    if chosen is None:
        if mapped is not None:
            state.metrics.sticky_evictions.labels("account_unavailable").inc()
        chosen = await pick_admitted(state, now, admit, exclude=[])
        if chosen is None:
            # Before refusing, make sure the view is current: an operator may have just added
            # or reset an account, and the periodic refresh may not have run yet.
            await state.db(state.reload)
            chosen = await pick_admitted(state, now, admit, exclude=[])
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


async def owner_account(state: RelayState, name: str) -> Upstream:
    """The account that owns existing work. Rate limits and `disabled` do not stop reads of it."""
    owner = state.pool.get(name)
    if owner is None:
        await state.db(state.reload)
        owner = state.pool.get(name)
    if owner is None:
        raise RelayError(
            410,
            "The upstream account that created this video or character has been removed from the relay; its work cannot be reached.",
            code="video_account_removed",
        )
    if owner.account.state == "unauthorized":
        raise RelayError(
            503,
            "The upstream account that owns this video is unauthorized; an operator must rotate its credential or "
            "reset it (relayctl accounts rotate/reset) before this video can be reached again.",
            code="video_account_unauthorized",
        )
    return owner


def no_account_error(state: RelayState, now: float, route: str) -> RelayError:
    state.metrics.no_account.labels(route).inc()
    recovery = state.pool.seconds_until_recovery(now)
    headers = {"retry-after": str(max(1, int(recovery + 0.999)))} if recovery is not None else {}
    detail = f" The first rate-limited account is expected back in about {int(recovery + 0.999)} s." if recovery is not None else ""
    return RelayError(
        503,
        "No upstream account is available right now: every account is rate-limited, unauthorized, disabled or at its daily cap." + detail,
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
    body: bytes | None,
) -> upstream_http.Answer:
    """One upstream attempt with a bounded answer: send, record it, let it change the account's state."""
    answer = await fetch(state, upstream, request, route=route, key=key, method=method, path=path, body=body)
    await settle(state, upstream, key, request, route, answer)
    return answer


async def fetch(
    state: RelayState,
    upstream: Upstream,
    request: Request,
    *,
    route: str,
    key: KeyRecord,
    method: str,
    path: str,
    body: bytes | None,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> upstream_http.Answer:
    """Send and read the whole (bounded) answer; the caller settles it. `headers` replace the
    forwarded ones for a request the relay wrote itself (a translated provider call)."""
    opened = await open_attempt(state, upstream, request, route=route, key=key, method=method, path=path, body=body, headers=headers)
    return await read_attempt(state, upstream, key, request, route, opened)


async def read_attempt(
    state: RelayState,
    upstream: Upstream,
    key: KeyRecord,
    request: Request,
    route: str,
    opened: upstream_http.Opened,
) -> upstream_http.Answer:
    try:
        return await upstream_http.read_answer(
            opened,
            max_bytes=state.settings.max_upstream_response_bytes,
            body_timeout=state.settings.read_timeout_seconds,
            credential=upstream.credential,
        )
    except upstream_http.UpstreamFailure as failure:
        raise await failed(state, upstream, key, request, route, failure) from None


async def open_attempt(
    state: RelayState,
    upstream: Upstream,
    request: Request,
    *,
    route: str,
    key: KeyRecord,
    method: str,
    path: str,
    body: bytes | None,
    content: bool = False,
    headers: list[tuple[bytes, bytes]] | None = None,
) -> upstream_http.Opened:
    """Send and wait for the answer's head; transport failures are recorded and become 502/504.

    An account no request can be built for (a bad base_api or proxy) is the account's fault,
    recorded like a connection that could not be made: never a 400 blaming the client.
    """
    try:
        if upstream.problem is not None:
            raise upstream_http.UpstreamFailure("config_error", upstream.problem, 0.0, before_send=True)
        return await upstream_http.open_response(
            state.client_for(upstream),
            method,
            upstream_http.url_for(upstream.account.base_api, path),
            headers=upstream_http.request_headers(
                request.headers.raw, upstream.credential, account_type=upstream.account.type, content=content
            )
            if headers is None
            else headers,
            body=body,
            head_timeout=state.settings.read_timeout_seconds,
            credential=upstream.credential,
        )
    except upstream_http.UpstreamFailure as failure:
        raise await failed(state, upstream, key, request, route, failure) from None
    except upstream_http.RequestNotSendable:
        raise RelayError(
            400,
            "A forwarded request header has a value that cannot be sent upstream (a line break, or bytes that are not UTF-8).",
            code="invalid_request_headers",
        ) from None


class UpstreamUnavailable(RelayError):
    """502/504 for a transport failure; remembers whether the request never left (safe to retry)."""

    def __init__(self, failure: upstream_http.UpstreamFailure) -> None:
        if failure.error_class == "timeout":
            super().__init__(504, "The upstream did not answer in time.", code="upstream_timeout")
        elif failure.error_class == "config_error":
            super().__init__(
                503,
                "The upstream account serving this request is misconfigured (its base_api or proxy): an operator must fix"
                " it. Nothing was sent upstream. Your relay key is fine.",
                code="upstream_account_misconfigured",
                headers=_DO_NOT_RETRY,
            )
        elif failure.error_class == "server_error":
            super().__init__(502, "The upstream's answer was larger than this relay accepts.", code="upstream_answer_too_large")
        else:
            super().__init__(502, "The upstream could not be reached or broke off the answer.", code="upstream_unreachable")
        self.error_class = failure.error_class
        self.before_send = failure.before_send


class OutcomeUnknown(WorkMayExist):
    """New work whose request reached an upstream that then failed to answer: it may be rendering."""

    def __init__(self, unavailable: UpstreamUnavailable) -> None:
        super().__init__(
            unavailable.status,
            unavailable.message + " The request had already been sent, so the upstream may have started the job; it was not sent again,"
            " to avoid paying for a second render. List your videos before retrying.",
            code=unavailable.code,
            # SDKs retry 502/504 by themselves, which would start the second render the relay avoided.
            headers=_DO_NOT_RETRY,
        )


async def failed(
    state: RelayState, upstream: Upstream, key: KeyRecord, request: Request, route: str, failure: upstream_http.UpstreamFailure
) -> UpstreamUnavailable:
    request_id: str = request.state.request_id
    note_attempt(request, upstream, route, failure.error_class, failure.latency_seconds)
    count_attempt(state, upstream, key, request, route, None, failure.error_class, failure.latency_seconds)
    log.warning(
        "upstream failure",
        extra=fields(request_id=request_id, account=upstream.name, route=route, error_class=failure.error_class, detail=failure.message),
    )
    await note_server_health(state, upstream, failure.error_class)
    return UpstreamUnavailable(failure)


async def settle(
    state: RelayState,
    upstream: Upstream,
    key: KeyRecord,
    request: Request,
    route: str,
    answer: upstream_http.Answer,
    *,
    job_status: str | None = None,
) -> None:
    """Record an HTTP answer and apply what it means for the account."""
    kind = answer_class(answer.status, answer.body)
    note_attempt(request, upstream, route, kind, answer.latency_seconds)
    count_attempt(state, upstream, key, request, route, answer.status, kind, answer.latency_seconds, job_status)
    note_upstream_quota(state, upstream, answer.headers, time.time())
    if kind != "none":
        await apply_error(state, upstream, answer, kind, request_id=request.state.request_id, route=route)
    await note_server_health(state, upstream, kind)


# A misconfigured account counts too: it rests instead of being tried first on every request.
_SERVER_SIDE = frozenset({"server_error", "timeout", "connection_error", "config_error"})


async def note_server_health(state: RelayState, upstream: Upstream, kind: str) -> None:
    """Rest an account for a short while after several server-side failures in a row.

    Counted per worker: a flapping upstream is taken out of rotation here quickly, and comes
    back by itself when the cooldown ends.
    """
    name = upstream.name
    if kind not in _SERVER_SIDE:
        state.server_failures.pop(name, None)
        return
    count = state.server_failures.get(name, 0) + 1
    state.server_failures[name] = count
    if count < state.settings.server_error_threshold:
        return
    state.server_failures.pop(name, None)
    now = time.time()
    until = now + state.settings.server_error_cooldown_seconds
    reason = f"{count} upstream failures in a row ({kind})"
    try:
        evicted = await state.db(
            state.store.set_account_state,
            name,
            "rate_limited",
            now=now,
            reason=reason,
            until=until,
            last_error=f"last failure: {kind}",
            evict_sessions=True,
        )
    except NotFound:
        return
    state.pool.apply_state(name, "rate_limited", now=now, reason=reason, until=until)
    if evicted:
        state.metrics.sticky_evictions.labels("server_errors").inc(evicted)


def note_attempt(request: Request, upstream: Upstream, route: str, kind: str, latency_seconds: float) -> None:
    """What the access log and `x-relay-overhead-ms` learn of an upstream attempt."""
    facts = request_facts(request)
    facts.account, facts.route, facts.error_class = upstream.account.name, route, kind
    facts.upstream_seconds += latency_seconds


def note_broken_answer(request: Request, upstream: Upstream, route: str, failure: upstream_http.UpstreamFailure) -> None:
    """An answer the upstream broke off after its head had been passed on: logged, and in the access log."""
    request_facts(request).error_class = failure.error_class
    log.warning(
        "upstream broke off an answer",
        extra=fields(
            request_id=request.state.request_id,
            account=upstream.name,
            route=route,
            error_class=failure.error_class,
            detail=failure.message,
        ),
    )


def count_attempt(
    state: RelayState,
    upstream: Upstream,
    key: KeyRecord,
    request: Request,
    route: str,
    status: int | None,
    kind: str,
    latency_seconds: float,
    job_status: str | None = None,
) -> None:
    """An upstream attempt's metrics and outcome row (`note_attempt` tells the request's log line)."""
    account = upstream.account
    state.metrics.upstream_requests.labels(account.name, account.type, route, status_class(status), kind).inc()
    state.metrics.upstream_duration.labels(account.name, route).observe(latency_seconds)
    state.recorder.put(
        Outcome(
            ts=time.time(),
            request_id=request.state.request_id,
            key_name=key.name,
            account=account.name,
            account_type=account.type,
            route=route,
            upstream_status=status,
            error_class=kind,
            latency_ms=round(latency_seconds * 1000, 3),
            job_status=job_status,
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
        "upstream error",
        extra=fields(request_id=request_id, account=name, route=route, status=answer.status, error_class=kind, code=code),
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


FAILOVER_CLASSES = frozenset({"rate_limited", "unauthorized", "payment_required"})


async def attempt_with_failover(
    state: RelayState,
    upstream: Upstream,
    request: Request,
    *,
    route: str,
    key: KeyRecord,
    path: str,
    body: bytes,
    may_fail_over: bool,
    admit: Admit = _admitting,
    send: Callable[[Upstream], Awaitable[upstream_http.Answer]] | None = None,
) -> tuple[Upstream, upstream_http.Answer]:
    """New work: on 429/401/402, or a failure before anything was sent, try the next eligible account.

    Never after the request may have reached an upstream (read timeout, reset, 5xx): a
    duplicate render costs money. At most RELAY_MAX_FAILOVER extra attempts. `send` replaces
    the byte-for-byte attempt for accounts whose provider translates the request.
    """
    tried = [upstream.name]
    while True:
        unavailable: UpstreamUnavailable | None = None
        try:
            if send is None:
                answer = await attempt(state, upstream, request, route=route, key=key, method="POST", path=path, body=body)
            else:
                answer = await send(upstream)
        except UpstreamUnavailable as error:
            if not error.before_send:
                raise OutcomeUnknown(error) from None
            unavailable, reason = error, error.error_class
        else:
            reason = answer_class(answer.status, answer.body)
            if reason not in FAILOVER_CLASSES:
                return upstream, answer
        now = state.clock()
        following = (
            await pick_admitted(state, now, admit, exclude=tried) if may_fail_over and len(tried) <= state.settings.max_failover else None
        )
        if following is None:
            if unavailable is not None:
                raise unavailable
            return upstream, answer
        state.metrics.failovers.labels(reason).inc()
        log.info(
            "failover",
            extra=fields(request_id=request.state.request_id, route=route, account=upstream.name, to=following.name, reason=reason),
        )
        state.pool.mark_used(following.name, now)
        state.recorder.put(AccountUse(following.name, now))
        tried.append(following.name)
        upstream = following


_DO_NOT_RETRY = {"x-should-retry": "false"}


def passthrough(answer: upstream_http.Answer, extra_headers: dict[str, str] | None = None) -> Response:
    """The upstream's status, body and content type, unchanged, with the headers clients rely on.

    Except what would mislead a client: an upstream 401/402 (or a 403 refusing the account) is about
    the relay's account, not the caller's key, and a redirect would point the client at the upstream.
    """
    if answer_class(answer.status, answer.body) in ("unauthorized", "payment_required"):
        return error_response(
            RelayError(
                503,
                f"The upstream account serving this request was refused (HTTP {answer.status}): its credential, billing or"
                " standing needs an operator. Your relay key is fine.",
                code="upstream_account_unauthorized",
                headers=_DO_NOT_RETRY,
            )
        )
    if is_redirect(answer.status):
        return error_response(
            RelayError(
                502,
                f"The upstream answered with a redirect (HTTP {answer.status}), which the relay does not follow.",
                code="upstream_redirect",
                # The request did reach an upstream: for new work, a retry could be a second render.
                headers=_DO_NOT_RETRY,
            )
        )
    headers = upstream_http.response_headers(answer.headers)
    if answer.status == 429 and upstream_error(answer.body)[0] == "insufficient_quota":
        # Quota exhaustion does not pass with a retry; tell SDKs not to burn attempts on it.
        headers["x-should-retry"] = "false"
    headers.update(extra_headers or {})
    return Response(answer.body, status_code=answer.status, headers=headers)
