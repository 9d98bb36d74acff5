"""Classify an upstream answer and read its cooldown hint.

Pure functions: no I/O, so every rule here is tested directly (and with hypothesis).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

ERROR_CLASSES = (
    "none",
    "rate_limited",
    "unauthorized",
    "payment_required",
    "client_error",
    "server_error",
    "timeout",
    "connection_error",
    "config_error",  # no request could be built from the account's base_api or proxy; nothing was sent
    "shutdown",  # the server's graceful-shutdown limit cut the answer short
)


def is_redirect(status: int) -> bool:
    """A redirect the relay will not follow (it would carry the credential elsewhere). 304 is an answer."""
    return 300 <= status < 400 and status != 304


def error_class(status: int) -> str:
    """The class of an upstream HTTP answer (transport failures are classed where they happen)."""
    if is_redirect(status):
        return "server_error"  # the Videos API never redirects: a misconfigured or hijacked base_api
    if status < 400:
        return "none"
    if status == 429:
        return "rate_limited"
    if status == 401:
        return "unauthorized"
    if status == 402:
        return "payment_required"
    if status < 500:
        return "client_error"
    return "server_error"


# 403 codes that refuse the account itself, not the request: like a 401, no retry on this
# account can succeed, and another account may.
ACCOUNT_REFUSAL_CODES = frozenset(
    {"account_deactivated", "organization_deactivated", "unsupported_country_region_territory", "billing_not_active"}
)


def answer_class(status: int, body: bytes) -> str:
    """`error_class`, reading the body only where the status alone cannot tell (a 403)."""
    kind = error_class(status)
    if status == 403 and upstream_error(body)[0] in ACCOUNT_REFUSAL_CODES:
        return "unauthorized"
    return kind


def status_class(status: int | None) -> str:
    return "none" if status is None else f"{status // 100}xx"


_PLAIN_NUMBER = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_duration(value: str) -> float | None:
    """Go-style durations as sent in `x-ratelimit-reset-*` (`6m0s`, `12ms`, `1h2m`, `0.5s`); a bare number is seconds."""
    text = value.strip().lower()
    if not text:
        return None
    if _PLAIN_NUMBER.fullmatch(text):
        return float(text)
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position != len(text) or not math.isfinite(total):
        return None
    return total


def parse_retry_after(value: str, now: float) -> float | None:
    """`Retry-After` as delay-seconds (digits only, RFC 9110 10.2.3) or an HTTP date."""
    text = value.strip()
    if text.isascii() and text.isdigit():
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None or when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - now)


def _milliseconds(value: str) -> float | None:
    seconds = _finite_seconds(value.strip())
    return None if seconds is None else seconds / 1000.0


def _finite_seconds(text: str) -> float | None:
    try:
        seconds = float(text)
    except ValueError:
        return None
    if not math.isfinite(seconds) or seconds < 0 or text.lower().startswith(("nan", "inf", "+", "-")):
        return None
    return seconds


def _body_hint(body: bytes) -> float | None:
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(payload, dict):
        return None
    for holder in (payload, payload.get("error")):
        if isinstance(holder, dict):
            value = holder.get("resets_in_seconds")
            if isinstance(value, bool):
                continue
            if isinstance(value, (int, float)) and math.isfinite(value) and value >= 0:
                return float(value)
            if isinstance(value, str):
                seconds = _finite_seconds(value.strip())
                if seconds is not None:
                    return seconds
    return None


# Every hint the relay can read from a 429, in the order trusted when a provider names none.
COOLDOWN_HINTS = ("resets_in_seconds", "retry_info", "daily_quota", "retry_after_ms", "retry_after", "x_ratelimit_reset_requests")


def cooldown_seconds(
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    default: float,
    maximum: float,
    hints: tuple[str, ...] = COOLDOWN_HINTS,
) -> tuple[float, str]:
    """How long a 429'd account rests, and which hint said so.

    `hints` names the ones the account's provider sends, in the order they are trusted (its
    AccountType's cooldown_hints): `resets_in_seconds` in the body (top level or in `error`),
    Google's `google.rpc.RetryInfo.retryDelay` in the error's details, Google's per-day quota
    (spent until Google's day ends), `Retry-After-Ms`, `Retry-After`, `x-ratelimit-reset-requests`;
    then the configured default. The result is clamped to [1 s, maximum] so a zero hint cannot
    cause a hammering loop nor a huge one a lockout.
    """
    readers: dict[str, Callable[[], float | None]] = {
        "resets_in_seconds": lambda: _body_hint(body),
        "retry_info": lambda: google_retry_delay(body),
        "daily_quota": lambda: google_daily_quota_reset(body, now),
        "retry_after_ms": lambda: _header(headers, "retry-after-ms", _milliseconds),
        "retry_after": lambda: _header(headers, "retry-after", lambda v: parse_retry_after(v, now)),
        "x_ratelimit_reset_requests": lambda: _header(headers, "x-ratelimit-reset-requests", parse_duration),
    }
    for source in hints:
        seconds = readers[source]()
        if seconds is not None:
            return min(max(seconds, 1.0), maximum), source
    return min(max(default, 1.0), maximum), "default"


# Google's per-day quotas reset at midnight Pacific time. 08:00 UTC is that midnight in winter
# and an hour after it in summer: resting until then never wakes the account while still spent.
_GOOGLE_DAY_ENDS_UTC_HOUR = 8


def google_daily_quota_reset(body: bytes, now: float) -> float | None:
    """Seconds until Google's day ends, for a 429 whose QuotaFailure names a per-day quota; else None."""
    if not google_daily_quota(body):
        return None
    day = 86400.0
    into_google_day = (now - _GOOGLE_DAY_ENDS_UTC_HOUR * 3600.0) % day
    return day - into_google_day


def google_daily_quota(body: bytes) -> bool:
    """Whether Google's error names a per-day quota (QuotaFailure violation with a `...PerDay...` quotaId)."""
    for detail in _google_details(body):
        violations = detail.get("violations")
        for violation in violations if isinstance(violations, list) else ():
            if isinstance(violation, dict) and "PerDay" in str(violation.get("quotaId", "")):
                return True
    return False


def _google_details(body: bytes) -> list[dict[str, Any]]:
    try:
        payload: Any = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    error = payload.get("error") if isinstance(payload, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    return [detail for detail in details if isinstance(detail, dict)] if isinstance(details, list) else []


_GOOGLE_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?)s")


def google_retry_delay(body: bytes) -> float | None:
    """Seconds from a `google.rpc.RetryInfo` detail of Google's error envelope (`"retryDelay": "7s"`), or None."""
    for detail in _google_details(body):
        if str(detail.get("@type", "")).endswith("google.rpc.RetryInfo"):
            delay = detail.get("retryDelay")
            match = _GOOGLE_DURATION.fullmatch(delay.strip()) if isinstance(delay, str) else None
            if match:
                return float(match.group(1))
    return None


def _header(headers: Mapping[str, str], name: str, parse: Any) -> float | None:
    value = headers.get(name)
    return None if value is None else parse(value)


def upstream_error(body: bytes, limit: int = 300) -> tuple[str | None, str | None]:
    """(code, message) of an upstream error body, for logs and an account's last_error: OpenAI's and
    ModelArk's `{"error": {"code", "message"}}`, Google's (`message`, no string code), Runway's
    `{"error": "..."}`, fal's `{"detail": "..." | [{"loc", "msg"}]}` and a bare `{"message": "..."}`.
    Both are cut short, free of control characters, and scrubbed of key-like text."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None, None
    if not isinstance(payload, dict):
        return None, None
    error = payload.get("error")
    code = error.get("code") if isinstance(error, dict) else None
    message = _error_message(payload)
    return (
        _shown(code, 64) if isinstance(code, str) else None,
        _shown(message, limit) if message is not None else None,
    )


def _error_message(payload: dict[str, Any]) -> str | None:
    error, detail = payload.get("error"), payload.get("detail")
    if isinstance(error, dict):
        error = error.get("message")
    if isinstance(detail, list) and detail and isinstance(detail[0], dict):
        first = detail[0]
        loc = first.get("loc")
        where = [str(part) for part in loc if part != "body"] if isinstance(loc, list) else []
        detail = f"{'.'.join(where)}: {first.get('msg')}" if where and isinstance(first.get("msg"), str) else first.get("msg")
    for candidate in (error, detail, payload.get("message")):
        if isinstance(candidate, str) and candidate.strip():
            return candidate
    return None


def _shown(text: str, limit: int) -> str:
    """An upstream's text as the relay shows it: keys masked before it is cut (so no cut hides a key
    from the mask), then cut to `limit`, with every character that is not printable (controls and
    line separators, which could forge log lines; bidi overrides, which reorder what an operator
    reads; lone surrogates) as a space."""
    masked = redact(text[: limit * 4])[:limit]
    return "".join(char if char.isprintable() else " " for char in masked).strip()


# Upstreams echo (partly masked) keys in messages like "Incorrect API key provided: sk-…".
# Also the shapes of the providers' own keys: Google's (AIza…), Runway's (key_ and hex), fal's (an id, a colon, a secret).
_KEY_LIKE = re.compile(
    r"\b(?:sk|rk|sess|eyJ)[A-Za-z0-9_\-\.\*]{6,}|Bearer\s+\S+|\bAIza[A-Za-z0-9_\-]{20,}|\bkey_[0-9a-f]{32,}"
    r"|\b[0-9a-f]{8}(?:-[0-9a-f]{4}){3}-[0-9a-f]{12}:[0-9a-f]{16,}",
    re.IGNORECASE,
)


def redact(text: str) -> str:
    return _KEY_LIKE.sub("[redacted]", text)
