"""The scheduler: this worker's view of the upstream accounts and the choice among them.

The view is a snapshot of the accounts table (credentials decrypted once per load),
reloaded whenever the database's config version moves. Choosing an account touches no
disk: least-recently-used order is kept in memory and written back in batches.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from .records import Account, AccountQuota
from .upstream import account_problem

log = logging.getLogger("relay.pool")


@dataclass(frozen=True)
class Upstream:
    """An account together with its decrypted credential, ready to send with."""

    account: Account
    credential: str = field(repr=False)
    proxy: str | None = field(default=None, repr=False)
    # Why no request can be built for this account (a base_api or proxy stored before they were
    # checked, say), or None. Such an account stays in the pool: each attempt on it is recorded
    # as an account fault and new work fails over, so the operator sees it and can fix it.
    problem: str | None = None

    @property
    def name(self) -> str:
        return self.account.name


SCHEDULERS = ("lru", "most-remaining")


class Pool:
    def __init__(self, scheduler: str = "lru") -> None:
        self._upstreams: dict[str, Upstream] = {}
        self._last_used: dict[str, float] = {}
        self._undecryptable: set[str] = set()
        # The configuration problem last logged per account, so each is logged once per worker.
        self._problems: dict[str, str | None] = {}
        # Accounts found at their daily cap, skipped until the time given (this worker's view).
        self._capped_until: dict[str, float] = {}
        # The upstream's own request quota per account, newest observation first to win.
        self._quotas: dict[str, AccountQuota] = {}
        self._prefer_remaining = scheduler == "most-remaining"
        # The accounts whose state this worker changed since a reload began reading the database
        # (None: no reload under way), and the lock that keeps such a change and a reload's swap
        # of the whole pool apart: a reload thread and the event loop both write the pool.
        self._changed_since_read: set[str] | None = None
        self._swap = threading.Lock()

    def reload(self, read: Callable[[], Iterable[Account]], decrypt: Callable[[str], str | None]) -> bool:
        """`load` what `read()` returns, keeping any state change this worker applies while it
        reads: fresher than what was read. True if one was kept (see `load`)."""
        with self._swap:
            self._changed_since_read = set()
        return self.load(read(), decrypt)

    def load(self, accounts: Iterable[Account], decrypt: Callable[[str], str | None]) -> bool:
        """Replace the pool with `accounts`; True if it kept a state change fresher than they are
        (see `reload`), so that the next reload reads the database again."""
        upstreams = {}
        for account in accounts:
            credential = decrypt(account.credential_encrypted)
            proxy = decrypt(account.proxy_encrypted) if account.proxy_encrypted else None
            if credential is None or (account.proxy_encrypted and proxy is None):
                if account.name not in self._undecryptable:
                    log.error("account %r: its credential cannot be decrypted with this secret key; skipping it", account.name)
                    self._undecryptable.add(account.name)
                continue
            self._undecryptable.discard(account.name)
            problem = account_problem(account.base_api, proxy, credential)
            if problem and self._problems.get(account.name) != problem:
                log.error("account %r cannot be used until an operator fixes it: %s", account.name, problem)
            self._problems[account.name] = problem
            upstreams[account.name] = Upstream(account, credential, proxy, problem)
            stored = account.last_used_at or 0.0
            self._last_used[account.name] = max(stored, self._last_used.get(account.name, 0.0))
        kept_fresher = False
        with self._swap:
            # A cooldown this worker stored after the read began (a 429 answered meanwhile) is not
            # in what was read: keep it rather than send the next request to that account.
            for name in self._changed_since_read or ():
                mine, read = self._upstreams.get(name), upstreams.get(name)
                if mine is not None and read is not None and _state_fields(mine.account) != _state_fields(read.account):
                    fresher = mine.account
                    account = replace(
                        read.account,
                        state=fresher.state,
                        state_since=fresher.state_since,
                        state_reason=fresher.state_reason,
                        state_until=fresher.state_until,
                    )
                    upstreams[name] = replace(read, account=account)
                    kept_fresher = True
            self._changed_since_read = None
            self._upstreams = upstreams
        # A changed configuration (a raised cap, say) deserves a fresh look at every account.
        self._capped_until.clear()
        for name in list(self._last_used):
            if name not in upstreams:
                del self._last_used[name]
        return kept_fresher

    def get(self, name: str) -> Upstream | None:
        return self._upstreams.get(name)

    def all(self) -> list[Upstream]:
        return list(self._upstreams.values())

    def usable(self, name: str, now: float) -> Upstream | None:
        upstream = self._upstreams.get(name)
        return upstream if upstream is not None and self._schedulable(upstream, now) else None

    def _schedulable(self, upstream: Upstream, now: float) -> bool:
        return upstream.account.is_usable(now) and self._capped_until.get(upstream.name, 0.0) <= now

    def pick(self, now: float, *, exclude: Iterable[str] = ()) -> Upstream | None:
        """Lowest priority number first, then least recently used (name breaks ties).

        With the `most-remaining` scheduler, among equal priorities the account with the most
        upstream requests left (as its last x-ratelimit headers said) goes first.
        """
        excluded = set(exclude)
        candidates = [u for u in self._upstreams.values() if self._schedulable(u, now) and u.name not in excluded]
        if not candidates:
            return None
        if self._prefer_remaining:
            return min(
                candidates,
                key=lambda u: (u.account.priority, -self.remaining(u.name, now), self._last_used.get(u.name, 0.0), u.name),
            )
        return min(candidates, key=lambda u: (u.account.priority, self._last_used.get(u.name, 0.0), u.name))

    def remaining(self, name: str, now: float) -> float:
        """Upstream requests left for an account; unknown or past its reset counts as plenty."""
        quota = self._quotas.get(name)
        if quota is None or quota.remaining_requests is None or (quota.resets_at is not None and quota.resets_at <= now):
            return float("inf")
        return float(quota.remaining_requests)

    def note_quota(self, quota: AccountQuota) -> None:
        known = self._quotas.get(quota.account)
        if known is None or known.observed_at <= quota.observed_at:
            self._quotas[quota.account] = quota

    def mark_capped(self, name: str, until: float) -> None:
        self._capped_until[name] = until

    def mark_used(self, name: str, now: float) -> None:
        self._last_used[name] = max(now, self._last_used.get(name, 0.0))

    def apply_state(self, name: str, state: str, *, now: float, reason: str | None, until: float | None) -> None:
        """Reflect a state change this worker just stored, before the next reload."""
        with self._swap:
            upstream = self._upstreams.get(name)
            if upstream is None:
                return
            account = upstream.account
            since = account.state_since if account.state == state else now
            self._upstreams[name] = replace(
                upstream, account=replace(account, state=state, state_reason=reason, state_until=until, state_since=since)
            )
            if self._changed_since_read is not None:
                self._changed_since_read.add(name)

    def seconds_until_recovery(self, now: float) -> float | None:
        """When the earliest rate-limited account comes back, if any will by itself."""
        untils = [
            u.account.state_until
            for u in self._upstreams.values()
            if u.account.enabled and u.account.state == "rate_limited" and u.account.state_until
        ]
        untils += [until for name, until in self._capped_until.items() if until > now and name in self._upstreams]
        return max(0.0, min(untils) - now) if untils else None


def _state_fields(account: Account) -> tuple[str, float | None, str | None, float | None]:
    return account.state, account.state_since, account.state_reason, account.state_until
