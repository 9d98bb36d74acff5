"""Per-key limits and per-account caps, enforced before any upstream call.

A key may have: requests per minute (every request counts), concurrent in-flight creates,
video-seconds and USD per UTC day and per UTC month, and allowed models and sizes. New work
(create, remix, edit, extension) reserves its estimated seconds and cost; the reservation
becomes the job's charge when the upstream accepts it, is settled when the job completes and
released when it fails (relay.store does both as one compare-and-set). Budgets count
reserved + settled.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import json
import math
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from .budget_blocks import BLOCK_MAX_JOBS, HEADROOM_SHARE, is_block
from .errors import RelayError, shown
from .holders import short
from .pricing import DEFAULT_MODEL, DEFAULT_SECONDS, DEFAULT_SIZE, MODEL_NAME_RULE, PriceTable, is_model_name, is_size
from .providers import default_seconds_for, model_name
from .records import Usage, Video

# Values of relay_quota_hits_total{limit}.
LIMIT_NAMES = (
    "requests_per_minute",
    "concurrent_creates",
    "video_seconds_per_day",
    "video_seconds_per_month",
    "usd_per_day",
    "usd_per_month",
    "model",
    "size",
    "account_video_seconds_per_day",
)
PERIODS = ("day", "month")
RATE_WINDOW_SECONDS = 60.0
# A key whose requests-per-minute limit is this high or higher has its slots claimed in blocks
# (RequestSlots): a database write per block instead of per request.
BLOCK_CLAIMS_FROM = 600
# A block's unspent slots are dropped this long after the claim: the window counts them from the
# claim's time, so spending them later would let requests outlive their place in the window.
BLOCK_SPEND_SECONDS = 1.0


def slots_per_claim(limit: int) -> int:
    """How many of a key's requests-per-minute slots one process claims at once: 1 below
    BLOCK_CLAIMS_FROM (every request is its own row, exact), else a six-hundredth of the limit,
    so slots claimed and left unspent by a process hold back at most that much of the window."""
    return 1 if limit < BLOCK_CLAIMS_FROM else limit // BLOCK_CLAIMS_FROM


@dataclass
class _Block:
    left: int
    claimed_at: float


class RequestSlots:
    """This process's unspent, claimed requests-per-minute slots, by key name."""

    def __init__(self) -> None:
        self._blocks: dict[str, _Block] = {}
        self._claiming: dict[str, asyncio.Lock] = {}

    def claiming(self, key_name: str) -> asyncio.Lock:
        """Held while a block is claimed for the key: the process's other requests for it wait
        for that block instead of each claiming one. Without it, every request in flight when a
        block ran out claimed its own: under load a pile of write transactions on store threads
        starved of the GIL (requests waited up to 0.8 s, measured) and slots claimed to waste."""
        return self._claiming.setdefault(key_name, asyncio.Lock())

    def take(self, key_name: str, now: float) -> bool:
        """Spend one claimed slot of the key, if one is left and fresh."""
        block = self._blocks.get(key_name)
        if block is None or block.left <= 0 or not 0 <= now - block.claimed_at < BLOCK_SPEND_SECONDS:
            return False
        block.left -= 1
        return True

    def claimed(self, key_name: str, granted: int, now: float) -> None:
        """A claim of `granted` slots succeeded; one of them is the request's own."""
        if granted > 1:
            self._blocks[key_name] = _Block(granted - 1, now)


# A limit that frees up within this long is worth retrying; beyond it clients are told not to.
SOON_SECONDS = 60.0


class LimitInputError(ValueError):
    """A limit value an operator gave that the relay cannot use."""


@dataclass(frozen=True)
class Limits:
    requests_per_minute: int | None = None
    max_concurrent_creates: int | None = None
    video_seconds_per_day: float | None = None
    video_seconds_per_month: float | None = None
    usd_per_day: float | None = None
    usd_per_month: float | None = None
    models: tuple[str, ...] | None = None
    sizes: tuple[str, ...] | None = None

    @classmethod
    def from_json(cls, text: str | None) -> Limits:
        if not text:
            return NO_LIMITS
        data = json.loads(text)
        for name in ("models", "sizes"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        known = {f.name for f in fields(cls)}
        return cls(**{name: value for name, value in data.items() if name in known})

    def to_json(self) -> str | None:
        data = {name: value for name, value in asdict(self).items() if value is not None}
        return json.dumps(data, sort_keys=True) if data else None

    def as_dict(self) -> dict[str, Any]:
        return {name: (list(value) if isinstance(value, tuple) else value) for name, value in asdict(self).items()}

    @property
    def reserves(self) -> bool:
        """Whether new work must be booked in the database before it goes upstream."""
        return any(
            value is not None
            for value in (
                self.max_concurrent_creates,
                self.video_seconds_per_day,
                self.video_seconds_per_month,
                self.usd_per_day,
                self.usd_per_month,
            )
        )

    @property
    def has_budget(self) -> bool:
        return self.usd_per_day is not None or self.usd_per_month is not None

    def budget(self, period: str) -> float | None:
        return self.usd_per_day if period == "day" else self.usd_per_month


NO_LIMITS = Limits()


# The largest value each numeric limit takes: far above any real use, small enough that sums
# and products of them stay ordinary numbers (and SQLite integers).
MAX_LIMITS: dict[str, int] = {
    "requests_per_minute": 1_000_000,
    "max_concurrent_creates": 100_000,
    "video_seconds_per_day": 1_000_000_000,
    "video_seconds_per_month": 1_000_000_000,
    "usd_per_day": 1_000_000_000,
    "usd_per_month": 1_000_000_000,
}


def validate_limits(limits: Limits) -> Limits:
    for name in ("requests_per_minute", "max_concurrent_creates"):
        value = getattr(limits, name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_LIMITS[name]):
            raise LimitInputError(f"{name.replace('_', '-')} must be a whole number >= 1 and <= {MAX_LIMITS[name]:,}, got {value!r}")
    for name in ("video_seconds_per_day", "video_seconds_per_month", "usd_per_day", "usd_per_month"):
        value = getattr(limits, name)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and 0 <= value <= MAX_LIMITS[name]):
            raise LimitInputError(f"{name.replace('_', '-')} must be a finite number >= 0 and <= {MAX_LIMITS[name]:,}, got {value!r}")
    for name in ("models", "sizes"):
        values = getattr(limits, name)
        if values is not None and (not values or any(not v or len(v) > 128 for v in values)):
            raise LimitInputError(f"{name} must list at least one name of 1-128 characters")
    for model in limits.models or ():
        if not is_model_name(model):
            raise LimitInputError(f"model names are {MODEL_NAME_RULE}; got {shown(model)}")
    if limits.sizes is not None:
        for size in limits.sizes:
            if not is_size(size):
                raise LimitInputError(f"sizes are WIDTHxHEIGHT in pixels, like 1280x720; got {size!r}")
    return limits


def changed_limits(current: Limits, changes: dict[str, Any]) -> Limits:
    """`current` with some limits set or, where the value is None, cleared; validated."""
    known = {f.name for f in fields(Limits)}
    unknown = sorted(set(changes) - known)
    if unknown:
        raise LimitInputError(f"unknown limit {unknown[0]!r}")
    merged = {**asdict(current), **changes}
    for name in ("models", "sizes"):
        if merged[name] is not None:
            merged[name] = tuple(merged[name])
    return validate_limits(Limits(**merged))


def usage_summary(limits: Limits, usage_by_period: dict[str, Usage]) -> dict[str, Any]:
    """Used and left per period for the limits a key has, for `relayctl keys limits/show`."""
    summary: dict[str, Any] = {}
    for period in PERIODS:
        used = usage_by_period[period]
        summary[f"video_seconds_used_{period}"] = round(used.video_seconds, 3)
        summary[f"usd_used_{period}"] = round(used.usd, 6)
        budget = limits.budget(period)
        if budget is not None:
            summary[f"usd_left_{period}"] = round(max(0.0, budget - used.usd), 6)
    summary["creates_in_flight"] = usage_by_period["day"].in_flight
    return summary


def holdings_summary(holdings: list[dict[str, Any]]) -> dict[str, Any]:
    """What a key's creates in flight hold, and since when, per relay process (store.key_holdings rows).

    Only holdings of live processes (and of rows without an owner) count; those of processes
    that are gone are listed with alive false until a live relay deletes them.
    """
    counted = [row for row in holdings if row["alive"]]
    processes: dict[str | None, dict[str, Any]] = {}
    for row in holdings:
        process = processes.setdefault(
            row["owner"],
            {
                "process": short(row["owner"]) if row["owner"] else None,
                "hostname": row["hostname"],
                "pid": row["pid"],
                "alive": row["alive"],
                "creates": 0,
                "blocks": 0,
                "video_seconds": 0.0,
                "usd": 0.0,
                "since": row["created_at"],
            },
        )
        process["blocks" if is_block(row["id"]) else "creates"] += 1
        process["video_seconds"] = round(process["video_seconds"] + row["video_seconds"], 3)
        process["usd"] = round(process["usd"] + row["usd"], 6)
    return {
        "held_video_seconds": round(sum(row["video_seconds"] for row in counted), 3),
        "held_usd": round(sum(row["usd"] for row in counted), 6),
        "held_since": min((row["created_at"] for row in counted), default=None),
        "held_by": list(processes.values()),
    }


# -- account daily caps ---------------------------------------------------------------------------


def fits_account_cap(cap: float | None, used_seconds: float, asked_seconds: float) -> bool:
    """Whether new work of `asked_seconds` fits under an account's daily cap, given what its day has
    used or reserved. The one rule: admission (store.claim_account_capacity) and relayctl apply it."""
    return cap is None or used_seconds + asked_seconds <= cap


def account_cap_summary(cap: float | None, used_today: Usage) -> dict[str, Any]:
    """An account's daily cap as `relayctl accounts show/limits` print it.

    `capped` is what admission would decide for a create of the default length (the shortest
    the Videos API renders): an account with 2 s left is capped, though below its cap.
    """
    return {
        "max_video_seconds_per_day": cap,
        "video_seconds_today": round(used_today.video_seconds, 3),
        "capped": not fits_account_cap(cap, used_today.video_seconds, DEFAULT_SECONDS),
    }


# -- periods (UTC calendar) ---------------------------------------------------------------------


def period_bounds(period: str, now: float) -> tuple[float, float]:
    """Start and end of the UTC day or month that contains `now`."""
    # Both depend on the UTC day alone; a create asks a dozen times, all on the same day.
    return _bounds_on_day(period, math.floor(now) // _SECONDS_PER_DAY)


_SECONDS_PER_DAY = 86_400


@functools.lru_cache(maxsize=64)
def _bounds_on_day(period: str, day: int) -> tuple[float, float]:
    moment = dt.datetime.fromtimestamp(day * _SECONDS_PER_DAY, tz=dt.UTC)
    if period == "day":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + dt.timedelta(days=1)
    else:
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return start.timestamp(), end.timestamp()


# -- errors ---------------------------------------------------------------------------------------


class QuotaExceeded(RelayError):
    """A relay-side limit refused the request; `limit` is one of LIMIT_NAMES."""

    def __init__(self, status: int, message: str, *, code: str, limit: str, retry_after: float | None, param: str | None = None) -> None:
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = str(max(1, math.ceil(retry_after)))
        if status == 429 and (retry_after is None or retry_after > SOON_SECONDS) and limit != "concurrent_creates":
            headers["x-should-retry"] = "false"
        super().__init__(status, message, code=code, param=param, headers=headers)
        self.limit = limit


def _amount(value: float, unit: str) -> str:
    return f"${value:.2f}" if unit == "usd" else f"{value:g} s"


def period_refusal(limit: str, period: str, *, used: float, asked: float, allowed: float, now: float) -> QuotaExceeded:
    unit = "usd" if limit.startswith("usd") else "seconds"
    _, resets = period_bounds(period, now)
    what = "budget" if unit == "usd" else "video-seconds limit"
    code = "relay_budget_exceeded" if unit == "usd" else "relay_video_seconds_exceeded"
    return QuotaExceeded(
        429,
        f"This key's {what} of {_amount(allowed, unit)} per {period} would be exceeded: "
        f"{_amount(used, unit)} used or reserved, this request needs {_amount(asked, unit)}. "
        f"It resets at {dt.datetime.fromtimestamp(resets, tz=dt.UTC):%Y-%m-%dT%H:%M:%SZ}.",
        code=code,
        limit=limit,
        retry_after=resets - now,
    )


def rate_refusal(limit: int, retry_after: float) -> QuotaExceeded:
    return QuotaExceeded(
        429,
        f"This key's limit of {limit} requests per minute is reached; retry in {max(1, math.ceil(retry_after))} s.",
        code="relay_rate_limited",
        limit="requests_per_minute",
        retry_after=retry_after,
    )


def concurrency_refusal(limit: int) -> QuotaExceeded:
    return QuotaExceeded(
        429,
        f"This key already has {limit} create(s) in flight, its limit; retry when one has been answered.",
        code="relay_concurrency_limited",
        limit="concurrent_creates",
        retry_after=1.0,
    )


def account_capped(account_day_end: float, now: float) -> QuotaExceeded:
    return QuotaExceeded(
        429,
        "The upstream account that owns this video has reached its daily video-seconds cap; "
        "work on its videos resumes when the UTC day ends.",
        code="relay_account_capped",
        limit="account_video_seconds_per_day",
        retry_after=account_day_end - now,
    )


# -- what a piece of new work will cost ---------------------------------------------------------


@dataclass(frozen=True)
class JobTerms:
    model: str
    size: str
    video_seconds: float
    usd: float | None  # None: the price table has no price for this model and size
    # Every model and size the upstream might render: each must be allowed.
    models: tuple[str, ...] = ()
    sizes: tuple[str, ...] = ()


def job_terms(fields_: dict[str, str], source: Video | None, kind: str, prices: PriceTable) -> JobTerms:
    """The model, size and seconds a create, remix, edit or extension will render, and its cost.

    Work on a source video may name its own model, size or seconds, and the relay cannot know
    whether an upstream honours them or the source's: every candidate must be allowed, and the
    dearest reading is booked. A missing or zero length books the default, not nothing.
    """
    # Google's `models/veo-…` is the same model as `veo-…` for allow-lists and prices alike.
    models = tuple(
        dict.fromkeys(model_name(model) for model in _candidates(fields_.get("model"), source.model if source else None, DEFAULT_MODEL))
    )
    sizes = _candidates(fields_.get("size"), source.size if source else None, DEFAULT_SIZE)
    lengths = [_seconds(fields_.get("seconds"))]
    if kind != "extension" and source is not None:
        lengths.append(_seconds(source.seconds))  # an extension's `seconds` is what it adds
    # Without a length, each model's provider renders its own default (Veo: 8 s, the contract: 4 s).
    default = max(default_seconds_for(model) or DEFAULT_SECONDS for model in models)
    seconds = max((length for length in lengths if length), default=default)
    priced = [(prices.cost(model, size, seconds), model, size) for model in models for size in sizes]
    known = [(cost, model, size) for cost, model, size in priced if cost is not None]
    usd, model, size = max(known, key=lambda choice: choice[0]) if known else (None, models[0], sizes[0])
    return JobTerms(model=model, size=size, video_seconds=seconds, usd=usd, models=models, sizes=sizes)


def _candidates(requested: str | None, from_source: str | None, default: str) -> tuple[str, ...]:
    named = tuple(dict.fromkeys(value for value in (requested, from_source) if value))
    return named or (default,)


def _seconds(value: str | None) -> float | None:
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and math.isfinite(seconds) and seconds >= 0 else None


def check_allowed(limits: Limits, terms: JobTerms) -> None:
    """Models and sizes outside the key's allow-lists are refused (403: retrying cannot help)."""
    for name, allowed, candidates in (("model", limits.models, terms.models), ("size", limits.sizes, terms.sizes)):
        if allowed is None:
            continue  # no allow-list: any value will do
        wanted = next((value for value in candidates if value not in allowed), None)
        if wanted is not None:
            raise QuotaExceeded(
                403,
                f"This key may not use {name} '{wanted}' (allowed: {', '.join(allowed)}).",
                code=f"relay_{name}_not_allowed",
                limit=name,
                retry_after=None,
                param=name,
            )
    if limits.has_budget and terms.usd is None:
        raise RelayError(
            400,
            f"This key has a USD budget and the relay has no price for model '{terms.model}' at size "
            f"'{terms.size}'; an operator must add one (relayctl prices set).",
            code="relay_price_unknown",
            param="model",
        )


def refusal_for(limits: Limits, terms: JobTerms, now: float) -> Callable[[Usage, dict[float, Usage]], QuotaExceeded | None]:
    """The check relay.store.reserve runs inside its transaction, against the key's current usage."""
    starts = {period: period_bounds(period, now)[0] for period in PERIODS}

    def refuse(current: Usage, by_period: dict[float, Usage]) -> QuotaExceeded | None:
        if limits.max_concurrent_creates is not None and current.in_flight >= limits.max_concurrent_creates:
            return concurrency_refusal(limits.max_concurrent_creates)
        for period in PERIODS:
            used = by_period[starts[period]]
            seconds_limit = limits.video_seconds_per_day if period == "day" else limits.video_seconds_per_month
            if seconds_limit is not None and used.video_seconds + terms.video_seconds > seconds_limit:
                return period_refusal(
                    f"video_seconds_per_{period}",
                    period,
                    used=used.video_seconds,
                    asked=terms.video_seconds,
                    allowed=seconds_limit,
                    now=now,
                )
            budget = limits.budget(period)
            if budget is not None and used.usd + (terms.usd or 0.0) > budget + 1e-9:
                return period_refusal(f"usd_per_{period}", period, used=used.usd, asked=terms.usd or 0.0, allowed=budget, now=now)
        return None

    return refuse


def block_size_for(limits: Limits, terms: JobTerms, now: float) -> Callable[[dict[float, Usage]], int]:
    """How many creates like this one a budget block holds (relay.budget_blocks), from the
    key's usage per period: this one, plus one for each 1/HEADROOM_SHARE of what the tightest
    limit has left after it, up to BLOCK_MAX_JOBS."""
    starts = {period: period_bounds(period, now)[0] for period in PERIODS}

    def size(by_period: dict[float, Usage]) -> int:
        jobs = BLOCK_MAX_JOBS
        for period in PERIODS:
            used = by_period[starts[period]]
            seconds_limit = limits.video_seconds_per_day if period == "day" else limits.video_seconds_per_month
            for limit, per_job, used_amount in (
                (seconds_limit, terms.video_seconds, used.video_seconds),
                (limits.budget(period), terms.usd or 0.0, used.usd),
            ):
                if limit is None or per_job <= 0:
                    continue
                left_after = max(0.0, limit - used_amount - per_job)
                jobs = min(jobs, 1 + int(left_after / (per_job * HEADROOM_SHARE)))
        return max(1, jobs)

    return size


def period_starts(now: float) -> list[float]:
    return [period_bounds(period, now)[0] for period in PERIODS]


def new_reservation_id() -> str:
    return "res_" + secrets.token_hex(12)
