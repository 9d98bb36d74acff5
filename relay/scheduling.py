"""Which account serves a request: the scheduler's pick for new work, the owner for existing work."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .errors import RelayError
from .pool import Upstream
from .recorder import AccountUse, SessionUse
from .state import RelayState

Admit = Callable[[Upstream], Awaitable[bool]]


async def admit_any(upstream: Upstream) -> bool:
    return True


async def pick_admitted(state: RelayState, now: float, admit: Admit, *, exclude: list[str]) -> Upstream | None:
    """The scheduler's pick among accounts that `admit` accepts (it refuses accounts at their daily cap)."""
    tried = list(exclude)
    while (candidate := state.pool.pick(now, exclude=tried)) is not None:
        if await admit(candidate):
            return candidate
        tried.append(candidate.name)
    return None


def mark_chosen(state: RelayState, upstream: Upstream, now: float) -> None:
    """Least-recently-used order, here and (through the recorder) for every other worker."""
    state.pool.mark_used(upstream.name, now)
    state.recorder.put(AccountUse(upstream.name, now))


async def choose_account(state: RelayState, sticky: str | None, *, route: str, admit: Admit = admit_any) -> Upstream:
    """For new work: the session's account while it is usable; otherwise priority, then least recently used."""
    pool, store, now = state.pool, state.store, state.clock()
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
    mark_chosen(state, chosen, now)
    return chosen


async def follow_failover(state: RelayState, sticky: str, served: str, *, first: str) -> None:
    """New work that failed over is served by another account than the session's: the session
    follows it, or its next request would go back to the account that just failed (or, once that
    rested, to whichever is least recently used) and split the session's work."""
    now = state.clock()
    await state.db(state.store.claim_session, sticky, served, replacing=first, now=now, ttl=state.settings.sticky_ttl_seconds)


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
