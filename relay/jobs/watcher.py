"""The job watcher: the relay polls its unfinished jobs itself, so a job settles (its charge, its
seconds, its webhooks) whether or not a client ever asks again.

Each round claims the jobs due a poll under a lease in the database (one worker of one replica
per job; a dead worker's lease runs out and another takes over), polls each on its owning account
through the same providers seam and `Attempts` as a client's retrieve (so a 429 marks the account
and a 401 makes it unauthorized, as any request would), and gives it back with its next poll time.
"""

from __future__ import annotations

import logging
import secrets
import time

import anyio

from ..attempts import Attempts
from ..caller import Caller
from ..errors import RelayError
from ..logs import fields
from ..pool import Upstream
from ..providers.operations import operations_for
from ..records import Account, StoreUnavailable, Video
from ..state import RelayState, Retrying
from .pacing import AccountPacer, next_poll_delay, poll_hint_seconds
from .settle import is_news, settle_status

log = logging.getLogger("relay.watcher")

# The route name the watcher's attempts carry in metrics, outcomes and logs.
WATCH_ROUTE = "watch"
_CONCURRENT_POLLS = 16
# An unauthorized account's jobs wait (no upstream call) and are looked at again this often, so
# they resume by themselves once an operator rotates or resets the account.
_PAUSED_SECONDS = 300.0  # at most; 30 poll intervals when those are shorter
# How often the watcher looks for jobs of accounts no longer in the pool while the configuration
# stays as it is: a look reads every job watched, where a round reads only what it claims.
_ORPHANS_SECONDS = 300.0


async def run_watcher(state: RelayState) -> None:
    """Poll due jobs until cancelled (at shutdown).

    No rounds: a claim takes only as many jobs as there are free slots, and each slot is refilled
    as its poll ends, so one upstream that hangs until its read timeout holds one slot, not the
    watcher. Nor more of an account than its pace allows now: a job claimed only to be handed
    back cost a write under the writers' lock each time, some 16 a second with a backlog on one
    account, which creates waited behind. The jobs of an account removed meanwhile are claimed
    (and given up) when the relay's configuration changes, and every _ORPHANS_SECONDS in case
    another replica recorded one after its account was gone here.
    """
    pacer = AccountPacer(state.settings.watcher_polls_per_minute)
    idle = min(1.0, state.settings.job_poll_seconds / 2)
    # Longer than any poll can take, so a lease never runs out under a poll still running.
    lease = state.settings.connect_timeout_seconds + 2 * state.settings.read_timeout_seconds + 30
    claims = Retrying("claim jobs to watch (they wait in the database meanwhile)")
    running = 0
    # The configuration version the watcher last looked for orphans under, and when it looks again anyway.
    orphans_looked_for: int | None = None
    orphans_next_look = 0.0

    async def watch_one(video: Video) -> None:
        nonlocal running
        try:
            await _watch_guarded(state, pacer, video)
        finally:
            running -= 1

    def claim(spare: dict[str, int], free: int, now: float, orphans: bool) -> tuple[list[Video], bool]:
        """The jobs to poll now, and whether orphans may be left (their claim filled every slot)."""
        store, owner, holders_now = state.store, state.holder.owner, time.time()
        due = []
        if orphans:
            due = store.claim_orphaned_jobs(
                owner, accounts=sorted(spare), limit=free, now=now, lease_seconds=lease, holders_now=holders_now
            )
        orphans_left = len(due) == free
        if not orphans_left:
            due += store.claim_jobs_to_watch(
                owner, per_account=spare, limit=free - len(due), now=now, lease_seconds=lease, holders_now=holders_now
            )
        return due, orphans_left

    async with anyio.create_task_group() as tasks:
        while True:
            now = state.clock()
            spare = {upstream.name: _spare_polls(upstream, pacer, now) for upstream in state.pool.all()}
            free = _CONCURRENT_POLLS - running
            version = state.config_version
            orphans = version != orphans_looked_for or now >= orphans_next_look
            due: list[Video] = []
            if free > 0 and (orphans or any(spare.values())):
                try:
                    due, orphans_left = await state.db(claim, spare, free, now, orphans)
                except Exception as error:
                    claims.failed(error)
                else:
                    claims.succeeded()
                    if orphans:
                        orphans_looked_for, orphans_next_look = version, now if orphans_left else now + _ORPHANS_SECONDS
            for video in due:
                running += 1
                tasks.start_soon(watch_one, video)
            if len(due) < free or free == 0:
                await anyio.sleep(idle)


def _spare_polls(upstream: Upstream, pacer: AccountPacer, now: float) -> int:
    """The polls the watcher may spend on an account now: none while it is unauthorized or
    rests after a 429, so that its jobs wait in the database, due, rather than each be claimed
    and handed back (with a backlog, some every round for as long as the account is out)."""
    account = upstream.account
    if account.state == "unauthorized" or _resting_until(account, now) is not None:
        return 0
    return pacer.spare(upstream.name, now)


def _resting_until(account: Account, now: float) -> float | None:
    """When an account resting after a 429 is back (None: it is not resting)."""
    return account.state_until if account.effective_state(now) == "rate_limited" else None


async def _watch_guarded(state: RelayState, pacer: AccountPacer, video: Video) -> None:
    try:
        await watch(state, pacer, video)
    except StoreUnavailable as error:
        # The lease runs out and the job is polled again later.
        log.warning("the job watcher could not record a poll: %s", error, extra=fields(video_id=video.id, account=video.account))
    except Exception:
        log.exception("the job watcher failed on a job", extra=fields(video_id=video.id, account=video.account))


async def watch(state: RelayState, pacer: AccountPacer, video: Video) -> None:
    """One claimed job: poll it if its account may be polled now, else say when to look again."""
    owner, now, settings = state.holder.owner, state.clock(), state.settings
    # A job's age counts from when this relay recorded it: the upstream's created_at is another
    # clock (a gateway's, or a constant), and a job it dates far back would be given up unpolled.
    if now - video.recorded_at > settings.job_max_age_seconds:
        await _stop(state, video, "max_age")
        return
    upstream = state.pool.get(video.account)
    if upstream is None:
        await state.db(state.reload)
        upstream = state.pool.get(video.account)
    if upstream is None:
        await _stop(state, video, "account_removed")
        return
    account = upstream.account
    # The account turned unauthorized or began to rest since the claim (its later jobs are not
    # claimed until it is back, see _spare_polls).
    if account.state == "unauthorized":
        state.metrics.watcher_polls.labels("paused").inc()
        paused_until = now + min(_PAUSED_SECONDS, 30 * settings.job_poll_seconds)
        await state.db(state.store.watch_later, video.id, owner, next_poll_at=paused_until, polled=False, reason="account_unauthorized")
        return
    back = _resting_until(account, now)
    if back is not None:
        # The account rests; its clients come first when it is back.
        await state.db(state.store.watch_later, video.id, owner, next_poll_at=back + 1, polled=False)
        return
    wait = pacer.take(account.name, now)
    if wait > 0:
        await state.db(state.store.watch_later, video.id, owner, next_poll_at=now + wait, polled=False)
        return
    await _poll(state, upstream, video)


async def _poll(state: RelayState, upstream: Upstream, video: Video) -> None:
    # Outcome rows name the job's key, so an operator's view of a key includes the polls of its jobs.
    attempts = Attempts(state, Caller(f"watch-{secrets.token_hex(8)}"), video.key_name, WATCH_ROUTE)
    hint = None
    try:
        polled = await operations_for(upstream).retrieve(attempts, upstream, video)
    except RelayError as error:
        # A transport failure (recorded like any attempt) or an answer the relay cannot follow.
        result = "error"
        log.info("the job watcher's poll failed: %s", error.message, extra=fields(video_id=video.id, account=upstream.name))
    else:
        hint = poll_hint_seconds(polled.answer.headers)
        finished = None
        if polled.resource is not None:
            result = "changed" if is_news(video, polled.resource) else "unchanged"
            finished = await settle_status(state, video, polled.resource, hint_seconds=hint)
        else:
            result = {404: "not_found", 429: "rate_limited"}.get(polled.answer.status, "error")
        await attempts.settle(upstream, polled.for_account, job_status=finished)
        if result == "not_found" and video.watch_stopped == "not_found":
            # The second 404 in a row: one alone may be a gateway's passing mistake.
            state.metrics.watcher_polls.labels(result).inc()
            await _stop(state, video, "not_found")
            return
    state.metrics.watcher_polls.labels(result).inc()
    now = state.clock()
    delay = next_poll_delay(state.settings, recorded_at=video.recorded_at, now=now, hint_seconds=hint)
    reason = "not_found" if result == "not_found" else None
    await state.db(state.store.watch_later, video.id, state.holder.owner, next_poll_at=now + delay, polled=True, reason=reason)


async def _stop(state: RelayState, video: Video, reason: str) -> None:
    await state.db(state.store.stop_watching, video.id, state.holder.owner, reason=reason)
    state.metrics.watcher_stops.labels(reason).inc()
    log.info("the job watcher stopped following a job: %s", reason, extra=fields(video_id=video.id, account=video.account, reason=reason))
