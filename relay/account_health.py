"""What upstream answers do to an account's state: the one place the request path changes it.

A change goes to the database (every worker and replica follows it) and to this worker's pool
at once, and sessions stuck to the account are let go, counted by why.
"""

from __future__ import annotations

import logging

from . import upstream as upstream_http
from .logs import fields
from .outcomes import cooldown_seconds, upstream_error
from .pool import Upstream
from .providers import account_type
from .records import NotFound
from .state import RelayState

log = logging.getLogger("relay.accounts")

# A misconfigured account counts too: it rests instead of being tried first on every request.
SERVER_SIDE = frozenset({"server_error", "timeout", "connection_error", "config_error"})


async def change_account_state(
    state: RelayState,
    upstream: Upstream,
    new_state: str,
    *,
    now: float,
    reason: str,
    until: float | None,
    last_error: str,
    evicted_as: str,
) -> None:
    """Store and pool together; a removed account (an operator's doing mid-request) is left alone."""
    try:
        evicted = await state.db(
            state.store.set_account_state,
            upstream.name,
            new_state,
            now=now,
            reason=reason,
            until=until,
            last_error=last_error,
            evict_sessions=True,
        )
    except NotFound:
        return
    state.pool.apply_state(upstream.name, new_state, now=now, reason=reason, until=until)
    if evicted:
        state.metrics.sticky_evictions.labels(evicted_as).inc(evicted)


async def note_server_health(state: RelayState, upstream: Upstream, kind: str) -> None:
    """Rest an account for a short while after several server-side failures in a row.

    Counted per worker: a flapping upstream is taken out of rotation here quickly, and comes
    back by itself when the cooldown ends.
    """
    name = upstream.name
    if kind not in SERVER_SIDE:
        state.server_failures.pop(name, None)
        return
    count = state.server_failures.get(name, 0) + 1
    state.server_failures[name] = count
    if count < state.settings.server_error_threshold:
        return
    state.server_failures.pop(name, None)
    now = state.clock()
    await change_account_state(
        state,
        upstream,
        "rate_limited",
        now=now,
        reason=f"{count} upstream failures in a row ({kind})",
        until=now + state.settings.server_error_cooldown_seconds,
        last_error=f"last failure: {kind}",
        evicted_as="server_errors",
    )


async def note_upstream_error(
    state: RelayState, upstream: Upstream, answer: upstream_http.Answer, kind: str, *, request_id: str, route: str
) -> None:
    """An upstream error's effect on its account: cooldown on 429, out of rotation on 401/402."""
    code, message = upstream_error(answer.body)
    log.warning(
        "upstream error",
        extra=fields(request_id=request_id, account=upstream.name, route=route, status=answer.status, error_class=kind, code=code),
    )
    now = state.clock()
    if kind == "rate_limited":
        seconds, source = cooldown_seconds(
            answer.headers,
            answer.body,
            now=now,
            default=state.settings.default_cooldown_seconds,
            maximum=state.settings.max_cooldown_seconds,
            hints=account_type(upstream.account.type).cooldown_hints,
        )
        new_state, reason, until = "rate_limited", f"upstream 429 (cooldown from {source})", now + seconds
    elif kind in ("unauthorized", "payment_required"):
        new_state, reason, until = "unauthorized", f"upstream {answer.status} {code or kind}", None
    else:
        return
    await change_account_state(
        state, upstream, new_state, now=now, reason=reason, until=until, last_error=message or f"HTTP {answer.status}", evicted_as=new_state
    )
