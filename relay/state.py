"""Everything a running relay holds, built once at start-up and passed to handlers."""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from . import holders, multiprocess
from .budget_blocks import BudgetBlocks
from .config import Settings
from .crypto import SecretBox, read_key_file
from .jobs.gauges import BackgroundWorkCollector
from .keys import KeyCache
from .limits import RequestSlots
from .metrics import Metrics
from .opening import open_store
from .pool import Pool, Upstream
from .pricing import PriceTable
from .recorder import Recorder
from .records import Account, StoreUnavailable
from .store import NOT_NOW, Store
from .store_threads import StoreThreads
from .upstream import Client, close_client, make_client
from .usage_metrics import UsageCollector
from .video_cache import VideoCache

log = logging.getLogger("relay")

T = TypeVar("T")

# As many store calls at once as anyio allowed threads before (its default limiter was 40).
STORE_THREADS = 40


@dataclass
class RelayState:
    settings: Settings
    store: Store
    box: SecretBox
    pool: Pool
    keys: KeyCache
    http: Client
    recorder: Recorder
    metrics: Metrics
    config_version: int = -1
    # Consecutive server-side failures per account, this worker's view (see proxy.note_server_health).
    server_failures: dict[str, int] = field(default_factory=dict)
    # One client (connection pool) per outbound proxy; `http` serves accounts without one.
    proxied: dict[str, Client] = field(default_factory=dict)
    prices: PriceTable = field(default_factory=PriceTable)
    # Limits and budgets read the time here, so tests can move it without sleeping.
    clock: Callable[[], float] = time.time
    # This process as the owner of its reservations (relay.holders); its lease is renewed in keep_fresh.
    holder: holders.Holder = field(default_factory=holders.this_process)
    # Videos' owners, read once (relay.video_cache).
    videos: VideoCache = field(default_factory=VideoCache)
    # Requests-per-minute slots this process claimed in blocks and has not spent yet.
    request_slots: RequestSlots = field(default_factory=RequestSlots)
    # Shares of keys' budgets this process claimed ahead (relay.budget_blocks).
    budget_blocks: BudgetBlocks = field(default_factory=BudgetBlocks)
    # Requests this worker is handling; shutdown waits for the ones uvicorn cancelled to note their ends.
    requests_running: int = 0
    # Set when webhook events were written, so this worker's deliveries look for them at once.
    deliveries_due: asyncio.Event = field(default_factory=asyncio.Event)

    def client_for(self, upstream: Upstream) -> Client:
        if upstream.proxy is None:
            return self.http
        client = self.proxied.get(upstream.proxy)
        if client is None:
            client = self.proxied[upstream.proxy] = make_client(self.settings, upstream.proxy)
        return client

    async def close_clients(self) -> None:
        for client in [self.http, *self.proxied.values()]:
            await close_client(client)

    _reload_lock: threading.Lock = field(default_factory=threading.Lock)
    # Threads for store calls. Each keeps its own SQLite connection (Store is per thread).
    store_threads: StoreThreads = field(default_factory=lambda: StoreThreads(STORE_THREADS, "relay-store"))

    async def db(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a store call in a worker thread so the event loop never waits on disk.

        The call always runs to its end, even when the request is cancelled meanwhile (the
        cancellation goes on afterwards), so a write is never left half-known, as with anyio's
        to_thread. relay.store_threads hands calls over more cheaply than anyio or an executor
        does: measured, 13-15 µs less CPU per call (of 34-37) than run_in_executor with asyncio.shield.
        """
        return await self.store_threads.run(function, *args, **kwargs)

    async def db_now(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """A short write on the request path: run on the spot when the database takes it without
        waiting for a lock (SQLite, its write turn free or handed back by another thread within a
        millisecond), else as `db` does.

        Only for calls of one or a few statements: the event loop does nothing else meanwhile.
        """
        done = self.store.run_now(function, *args, **kwargs)
        if done is NOT_NOW:
            return await self.store_threads.run(function, *args, **kwargs)
        return done

    def reload(self) -> None:
        """Re-read keys and accounts if the database's configuration moved (blocking: call in a thread)."""
        with self._reload_lock:
            version, deletions = self.store.versions()
            self.videos.deletions_at(deletions)
            if version == self.config_version:
                return
            if self.settings.secret_key is None:
                # `relayctl secrets rotate` writes the new key file before re-encrypting, so
                # re-reading it here, before the accounts, always finds a key that decrypts them.
                self.box = SecretBox(read_key_file(self.settings.key_file))
            standing_before = {upstream.name: _standing(upstream.account) for upstream in self.pool.all()}
            kept_fresher = self.pool.reload(self.store.list_accounts, self.box.decrypt_or_none)
            for upstream in self.pool.all():
                if standing_before.get(upstream.name) != _standing(upstream.account):
                    # An operator's reset or rotation, or a verdict from another worker, starts the count afresh.
                    self.server_failures.pop(upstream.name, None)
            self.prices = PriceTable(self.store.list_prices())
            self.keys.clear()
            # With a fresher state kept, the next reload reads the database again, which by then
            # holds it (or an operator's later change, which then wins).
            self.config_version = -1 if kept_fresher else version


def _standing(account: Account) -> tuple[str, float | None, str | None]:
    return account.state, account.state_since, account.state_reason


def build_state(settings: Settings) -> RelayState:
    store, box = open_store(settings)
    # Made after the store opened, so a start that fails on the database leaves no client open.
    http = make_client(settings)
    pool = Pool(settings.scheduler)
    state = RelayState(
        settings=settings,
        store=store,
        box=box,
        pool=pool,
        keys=KeyCache(store),
        http=http,
        recorder=Recorder(store),
        metrics=Metrics(store.list_accounts, store.count_sessions, multiprocess.active_dir()),
    )
    state.metrics.registry.register(UsageCollector(store, state.pool.all, lambda: state.clock()))
    state.metrics.registry.register(BackgroundWorkCollector(store, lambda: state.clock()))
    state.reload()
    # Before serving: a reservation whose owner holds no lease does not count.
    renew_lease(state)
    return state


def renew_lease(state: RelayState) -> None:
    """Renew this process's lease and free what processes that are gone still held (blocking)."""
    freed = state.store.renew_holder(
        state.holder,
        now=time.time(),
        lease=state.settings.holder_lease_seconds,
        exited=functools.partial(holders.exited, state.holder),
    )
    if freed:
        log.warning("freed %d reservation(s) held by relay processes that are gone", freed)


async def keep_fresh(state: RelayState) -> None:
    """Poll the config version so CLI changes reach this worker within a second; keep the lease."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(_keep_lease, state)
        await _keep_config(state)


class Retrying:
    """A background task's failures: a database outage is logged when it starts and when it ends,
    not with a traceback on every tick; anything else is a bug and keeps its traceback."""

    def __init__(self, doing: str) -> None:
        self.doing = doing
        self.outage = False

    def failed(self, error: Exception) -> None:
        if not isinstance(error, StoreUnavailable):
            log.exception("could not %s", self.doing)
        elif not self.outage:
            self.outage = True
            log.warning("could not %s: %s; retrying", self.doing, error)

    def succeeded(self) -> None:
        if self.outage:
            self.outage = False
            log.warning("the database answers again: %s works", self.doing)


async def _keep_lease(state: RelayState) -> None:
    renewals = Retrying("renew this process's lease (its reservations lapse if this goes on)")
    try:
        while True:
            await anyio.sleep(state.settings.holder_lease_seconds / holders.RENEWALS_PER_LEASE)
            try:
                await state.db(renew_lease, state)
            except Exception as error:
                renewals.failed(error)
            else:
                renewals.succeeded()
    finally:
        # Shutdown: uvicorn has drained the requests, so what is left here is held by no one.
        with anyio.CancelScope(shield=True):
            try:
                await state.db(state.store.release_holder, state.holder.owner)
            except Exception:
                log.exception("could not give up this process's lease; it lapses on its own")


async def write_off_idle_blocks(state: RelayState) -> None:
    """What this process's budget blocks hold that their time to admit creates left unused stops
    counting against their keys' limits."""
    leftovers = state.budget_blocks.retire_idle(state.clock())
    if leftovers:
        await state.db(state.store.shrink_blocks, leftovers)


async def _keep_config(state: RelayState) -> None:
    refreshes = Retrying("refresh keys and accounts (keeping the last good view)")
    while True:
        await anyio.sleep(state.settings.refresh_interval_seconds)
        try:
            await anyio.to_thread.run_sync(state.reload)
            await write_off_idle_blocks(state)
            if state.settings.scheduler == "most-remaining":
                # What the other workers saw of the upstreams' quotas.
                for quota in await anyio.to_thread.run_sync(state.store.account_quotas):
                    state.pool.note_quota(quota)
        except Exception as error:
            refreshes.failed(error)
        else:
            refreshes.succeeded()
