"""The request path's side of limits: the per-key request rate, bookings for new work, account caps.

Everything here is skipped, with no database access, for keys without limits and accounts
without caps: the common case pays nothing.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

from .budget_blocks import BLOCK_TAKE_SECONDS, Block, BudgetBlocks, Share, left_over, new_block_id
from .errors import RelayError, shown
from .limits import (
    RATE_WINDOW_SECONDS,
    JobTerms,
    Limits,
    QuotaExceeded,
    account_capped,
    block_size_for,
    check_allowed,
    new_reservation_id,
    period_bounds,
    period_starts,
    rate_refusal,
    refusal_for,
    slots_per_claim,
)
from .outcomes import parse_duration
from .pool import Upstream
from .providers import account_type, unsupported_message
from .recorder import QuotaSeen
from .records import AccountQuota, KeyRecord
from .state import RelayState
from .store.reservations import BlockLeftover
from .upstream import Headers

log = logging.getLogger("relay.quota")


@functools.lru_cache(maxsize=4096)
def _parse(limits_json: str | None) -> Limits:
    return Limits.from_json(limits_json)


def limits_of(key: KeyRecord) -> Limits:
    return _parse(key.limits_json)


def counted(state: RelayState, key: KeyRecord, error: QuotaExceeded) -> QuotaExceeded:
    state.metrics.quota_hits.labels(key.name, error.limit).inc()
    return error


async def check_request_rate(state: RelayState, key: KeyRecord, now: float) -> None:
    """Admit the request into the key's requests-per-minute window, or refuse it (429)."""
    limit = limits_of(key).requests_per_minute
    if limit is None:
        return
    slots = state.request_slots
    if slots.take(key.name, now):
        return
    wanted = slots_per_claim(limit)
    if wanted == 1:
        await _claim_request_slots(state, key, limit, wanted, now)
        return
    async with slots.claiming(key.name):
        # The block another request of this process claimed while this one waited.
        now = state.clock()
        if not slots.take(key.name, now):
            await _claim_request_slots(state, key, limit, wanted, now)


async def _claim_request_slots(state: RelayState, key: KeyRecord, limit: int, wanted: int, now: float) -> None:
    granted, wait = await state.db_now(
        state.store.take_request_slots, key.name, now=now, limit=limit, window=RATE_WINDOW_SECONDS, wanted=wanted
    )
    if not granted:
        raise counted(state, key, rate_refusal(limit, wait))
    state.request_slots.claimed(key.name, granted, now)


@dataclass
class Booking:
    """New work's claim on its key's limits and its account's daily cap.

    Written before the upstream call when a limit needs it; it becomes the job's charge when
    the job is recorded (`taken`) and is released otherwise.
    """

    state: RelayState
    key: KeyRecord
    terms: JobTerms
    now: float
    id: str = field(default_factory=new_reservation_id)
    written: bool = False
    # The create's part of a budget block, when the key's budget is booked in blocks.
    share: Share | None = None

    @property
    def lifetime(self) -> float:
        # Long enough for every attempt failover may make. A dead worker's booking stops counting
        # much sooner, when its lease lapses (relay.holders); this bounds rows without an owner.
        settings = self.state.settings
        per_attempt = settings.connect_timeout_seconds + settings.read_timeout_seconds
        return per_attempt * (settings.max_failover + 1) + 60.0

    @property
    def expires_at(self) -> float:
        return self.now + self.lifetime

    @property
    def reservation_id(self) -> str | None:
        return self.id if self.written else None

    @property
    def block_share(self) -> BlockLeftover | None:
        """What recording the job takes from its block's row."""
        return None if self.share is None else (self.share.block.id, self.share.video_seconds, self.share.usd)

    async def admit(self, upstream: Upstream) -> bool:
        """Whether new work may go to the account: it serves the work's model (every candidate,
        when the request leaves it open) and the work fits under its daily cap."""
        if not all(upstream.account.serves(model) for model in self.terms.models):
            return False
        return await self._fits_daily_cap(upstream)

    async def _fits_daily_cap(self, upstream: Upstream) -> bool:
        """Always, for accounts without a cap; otherwise booked on the account when it fits."""
        cap = upstream.account.max_video_seconds_per_day
        if cap is None:
            return True
        day_start, day_end = period_bounds("day", self.now)
        fits = await self.state.db_now(
            self.state.store.claim_account_capacity,
            self.id,
            key_name=self.key.name,
            account=upstream.name,
            video_seconds=self.terms.video_seconds,
            usd=self.terms.usd or 0.0,
            cap=cap,
            day_start=day_start,
            now=self.now,
            expires_at=self.expires_at,
            owner=self.state.holder.owner,
        )
        if fits:
            self.written = True
            return True
        log.info("account at its daily cap; skipping it until the UTC day ends", extra={"account": upstream.name})
        self.state.pool.mark_capped(upstream.name, day_end)
        return False

    async def admit_owner(self, upstream: Upstream) -> None:
        """Work on an existing video cannot move: a capped owner refuses it. Its model list does
        not: the video is the owner's whatever the account serves today."""
        if not await self._fits_daily_cap(upstream):
            raise counted(self.state, self.key, account_capped(period_bounds("day", self.now)[1], self.now))

    def taken(self) -> None:
        """The job was recorded and its charge took the reservation's (or block share's) place."""
        self.written = False
        if self.share is not None:
            BudgetBlocks.recorded(self.share)
            self.share = None

    async def release(self) -> None:
        if self.written:
            self.written = False
            await self.state.db_now(self.state.store.release_reservation, self.id)
        if self.share is not None:
            share, self.share = self.share, None
            if not BudgetBlocks.give_back(share):
                await self.state.db_now(self.state.store.shrink_blocks, [(share.block.id, share.video_seconds, share.usd)])


async def require_served(state: RelayState, kind: str, models: tuple[str, ...]) -> None:
    """New work no account of the pool can take is the client's 400: no retry or failover can
    place it. A model no account serves is `model_not_found`; work of a kind (remix, edit,
    extension, character) that no account serving the model carries names the types that do
    not. The view is refreshed first: an operator may have just added an account."""

    def refusal() -> RelayError | None:
        accounts = [upstream.account for upstream in state.pool.all()]
        if not accounts:
            return None  # no pool at all is the operator's to fix: the 503 that says so, retried later
        if not models and not any(account_type(account.type).carries(kind) for account in accounts):
            return unsupported(kind, [account.type for account in accounts])
        for model in models:
            serving = [account for account in accounts if account.serves(model)]
            if not serving:
                return RelayError(
                    400,
                    f"No upstream account of this relay serves the model {shown(model)}: ask for another model, "
                    "or ask the operator to add an account that serves it.",
                    param="model",
                    code="model_not_found",
                )
            if not any(account_type(account.type).carries(kind) for account in serving):
                return unsupported(kind, [account.type for account in serving])
        return None

    if refusal() is not None:
        await state.db(state.reload)
    error = refusal()
    if error is not None:
        raise error


def unsupported(kind: str, type_names: list[str]) -> RelayError:
    return RelayError(400, unsupported_message(kind, type_names), code="unsupported_for_account_type")


async def book(state: RelayState, key: KeyRecord, terms: JobTerms, now: float) -> Booking:
    """Check the key's allow-lists and limits for new work and reserve its seconds and cost."""
    limits = limits_of(key)
    try:
        check_allowed(limits, terms)
    except QuotaExceeded as error:
        raise counted(state, key, error) from None
    booking = Booking(state, key, terms, now)
    if limits.reserves and limits.max_concurrent_creates is None:
        booking.share = await _block_share(state, key, limits, booking)
    elif limits.reserves:
        refused = await state.db_now(
            state.store.reserve,
            booking.id,
            key_name=key.name,
            video_seconds=terms.video_seconds,
            usd=terms.usd or 0.0,
            now=now,
            expires_at=booking.expires_at,
            periods=period_starts(now),
            refuse=refusal_for(limits, terms, now),
            owner=state.holder.owner,
        )
        if refused is not None:
            raise counted(state, key, refused)
        booking.written = True
    return booking


async def _block_share(state: RelayState, key: KeyRecord, limits: Limits, booking: Booking) -> Share:
    """This create's share of the key's budget block, claiming a new block when the one in
    memory cannot admit it (relay.budget_blocks); raises the refusal when the limits do."""
    blocks, terms, now = state.budget_blocks, booking.terms, booking.now
    usd = terms.usd or 0.0
    share = blocks.take(key.name, key.limits_json, terms.video_seconds, usd, now)
    if share is not None:
        return share
    async with blocks.claiming(key.name):
        # A create of this process that waited here may find the block another one just claimed.
        share = blocks.take(key.name, key.limits_json, terms.video_seconds, usd, now)
        if share is not None:
            return share
        retiring = blocks.retire(key.name)
        block = Block(new_block_id(), key.name, key.limits_json, claimed_at=now, seconds_left=0.0, usd_left=0.0)
        claimed: list[tuple[QuotaExceeded | None, int]] = []

        def claim() -> None:
            claimed.append(
                state.store.claim_budget_block(
                    block.id,
                    key_name=key.name,
                    video_seconds=terms.video_seconds,
                    usd=usd,
                    now=now,
                    # A create admitted at the end of the block's window still gets a booking's lifetime.
                    expires_at=now + BLOCK_TAKE_SECONDS + booking.lifetime,
                    periods=period_starts(now),
                    refuse=refusal_for(limits, terms, now),
                    size=block_size_for(limits, terms, now),
                    owner=state.holder.owner,
                    retiring=None if retiring is None else (retiring.id, *left_over(retiring)),
                )
            )

        try:
            await state.db_now(claim)
        finally:
            # Written, even if this create was cancelled meanwhile: the block is this process's
            # to use or write off, rather than held unused until its row expires.
            if claimed and claimed[0][0] is None:
                jobs = claimed[0][1]
                blocks.install(block, seconds_left=terms.video_seconds * jobs, usd_left=usd * jobs)
        refused = claimed[0][0]
        if refused is not None:
            raise counted(state, key, refused)
        share = blocks.take(key.name, key.limits_json, terms.video_seconds, usd, now)
        assert share is not None, "a block just claimed holds at least the create that claimed it"
        return share


# -- the upstream's own quota ---------------------------------------------------------------------


def note_upstream_quota(state: RelayState, upstream: Upstream, headers: Headers, now: float) -> None:
    """Remember what an answer's x-ratelimit-*-requests headers say about the account's quota."""
    limit = _count(headers.get("x-ratelimit-limit-requests"))
    remaining = _count(headers.get("x-ratelimit-remaining-requests"))
    if limit is None and remaining is None:
        return
    reset = parse_duration(headers.get("x-ratelimit-reset-requests") or "")
    quota = AccountQuota(
        account=upstream.name,
        observed_at=now,
        limit_requests=limit,
        remaining_requests=remaining,
        resets_at=now + reset if reset is not None else None,
    )
    state.pool.note_quota(quota)
    state.recorder.put(QuotaSeen(quota))


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    # isdigit() alone admits superscripts and other scripts' digits, which int() then refuses.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 18 else None
