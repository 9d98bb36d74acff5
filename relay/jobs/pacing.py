"""When a job is polled next, and how many polls an account gets from this process's watcher."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..config import Settings

# An unfinished job is polled at the base interval for its first five minutes, then less often
# as it ages, up to six times the base (a minute by default): long renders do not need a poll
# every ten seconds, and a job that is quick to finish is still seen soon.
_YOUNG_SECONDS = 300.0
_MAX_STRETCH = 6.0
# The upstream's own hint is honoured, within sane bounds (a hint of 0 is not a busy loop).
_MIN_HINT_SECONDS = 1.0
_MAX_HINT_SECONDS = 3600.0


def poll_hint_seconds(headers: Mapping[str, str]) -> float | None:
    """The upstream's `openai-poll-after-ms`, in seconds, when it sent a usable one."""
    raw = headers.get("openai-poll-after-ms")
    if raw is None or not raw.strip().isdigit():
        return None
    return min(_MAX_HINT_SECONDS, max(_MIN_HINT_SECONDS, int(raw.strip()) / 1000))


def next_poll_delay(settings: Settings, *, recorded_at: float, now: float, hint_seconds: float | None) -> float:
    """Seconds until a job's next poll: the upstream's hint, else longer as the job ages (counted
    from when the relay recorded it, on the relay's own clock)."""
    if hint_seconds is not None:
        return hint_seconds
    age = max(0.0, now - recorded_at)
    stretch = min(_MAX_STRETCH, max(1.0, age / _YOUNG_SECONDS))
    return settings.job_poll_seconds * stretch


@dataclass
class AccountPacer:
    """A token bucket per account: at most `per_minute` watcher polls a minute each, in bursts of
    at most a tenth of that, so client traffic on the same account is never starved."""

    per_minute: int
    _tokens: dict[str, float] = field(default_factory=dict)
    _stamps: dict[str, float] = field(default_factory=dict)

    @property
    def _burst(self) -> float:
        return max(1.0, self.per_minute / 10)

    def spare(self, account: str, now: float) -> int:
        """How many polls the account may have now (none is counted)."""
        return int(self._tokens_at(account, now))

    def take(self, account: str, now: float) -> float:
        """0 if a poll may go now (and it is counted); else the seconds until one may."""
        rate = self.per_minute / 60
        tokens = self._tokens_at(account, now)
        self._stamps[account] = now
        if tokens >= 1:
            self._tokens[account] = tokens - 1
            return 0.0
        self._tokens[account] = tokens
        return (1 - tokens) / rate

    def _tokens_at(self, account: str, now: float) -> float:
        refilled = (now - self._stamps.get(account, now)) * self.per_minute / 60
        return min(self._burst, self._tokens.get(account, self._burst) + refilled)
