"""Classification and cooldown hints: the rules operators rely on when an upstream pushes back."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest
from hypothesis import given, settings, strategies as st

from relay.outcomes import (
    cooldown_seconds,
    error_class,
    parse_duration,
    parse_retry_after,
    redact,
    upstream_error,
)

NOW = 1_800_000_000.0

# Admission, budgets and records must hold on either database.
BACKENDS = ("sqlite", "postgresql")


def hint(headers: dict[str, str] | None = None, body: object = None, default: float = 60.0) -> tuple[float, str]:
    raw = b"" if body is None else json.dumps(body).encode()
    return cooldown_seconds(headers or {}, raw, now=NOW, default=default, maximum=86400.0)


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (200, "none"),
        (202, "none"),
        (400, "client_error"),
        (401, "unauthorized"),
        (402, "payment_required"),
        (403, "client_error"),
        (404, "client_error"),
        (429, "rate_limited"),
        (500, "server_error"),
        (503, "server_error"),
    ],
)
def test_error_class(status: int, expected: str) -> None:
    assert error_class(status) == expected


def test_body_hint_top_level_wins_over_headers() -> None:
    assert hint({"retry-after": "30", "x-ratelimit-reset-requests": "6m0s"}, {"resets_in_seconds": 7}) == (
        7.0,
        "resets_in_seconds",
    )


def test_body_hint_inside_error() -> None:
    assert hint({"retry-after": "30"}, {"error": {"message": "slow down", "resets_in_seconds": 12.5}}) == (
        12.5,
        "resets_in_seconds",
    )


def test_retry_after_seconds_beats_ratelimit_reset() -> None:
    assert hint({"retry-after": "30", "x-ratelimit-reset-requests": "6m0s"}, {"error": {}}) == (30.0, "retry_after")


def test_retry_after_ms_beats_retry_after() -> None:
    """Azure OpenAI sends both; the milliseconds are the finer hint."""
    assert hint({"retry-after-ms": "7500", "retry-after": "8"}, {"error": {}}) == (7.5, "retry_after_ms")
    assert hint({"retry-after-ms": "soon", "retry-after": "8"}, {"error": {}}) == (8.0, "retry_after")


def test_retry_after_http_date() -> None:
    when = format_datetime(datetime.fromtimestamp(NOW + 90, tz=UTC), usegmt=True)
    seconds, source = hint({"retry-after": when})
    assert source == "retry_after" and seconds == pytest.approx(90, abs=1)


@pytest.mark.parametrize(("value", "seconds"), [("6m0s", 360.0), ("12ms", 1.0), ("1h2m3s", 3723.0), ("45s", 45.0)])
def test_ratelimit_reset_durations(value: str, seconds: float) -> None:
    # 12 ms is clamped up to the 1 s floor.
    assert hint({"x-ratelimit-reset-requests": value}) == (seconds, "x_ratelimit_reset_requests")


def test_default_when_no_hint_and_unparseable_hints_fall_through() -> None:
    assert hint({}, default=60) == (60.0, "default")
    assert hint({"retry-after": "soon", "x-ratelimit-reset-requests": "later"}, {"resets_in_seconds": "x"}) == (
        60.0,
        "default",
    )


def test_huge_hint_is_capped() -> None:
    assert hint({"retry-after": "99999999999"})[0] == 86400.0


@pytest.mark.parametrize("value", ["1e308", "1.5", "-1", "+5", "0x10", "\u0665"])
def test_retry_after_is_digits_or_a_date(value: str) -> None:
    # Anything else is not a delay-seconds value (RFC 9110): the default applies, not a week-long rest.
    assert hint({"retry-after": value}, default=60) == (60.0, "default")


def test_redirects_are_errors_but_not_modified_is_an_answer() -> None:
    assert [error_class(status) for status in (301, 302, 307, 308, 304, 200)] == ["server_error"] * 4 + ["none", "none"]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("6m0s", 360.0), ("12ms", 0.012), ("1.5s", 1.5), ("2h", 7200.0), ("0s", 0.0), ("250us", 0.00025), ("5", 5.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "m", "6x", "-5s", "1h-2m", "nan", "inf", "s6", "6m 0s", "1e308", "1e3", "+5", "5."])
def test_parse_duration_rejects(text: str) -> None:
    assert parse_duration(text) is None


@given(st.text(max_size=40))
def test_parse_duration_never_raises(text: str) -> None:
    result = parse_duration(text)
    assert result is None or (math.isfinite(result) and result >= 0)


@given(st.text(max_size=60), st.floats(min_value=0, max_value=4e9))
def test_parse_retry_after_never_raises(text: str, now: float) -> None:
    result = parse_retry_after(text, now)
    assert result is None or (math.isfinite(result) and result >= 0)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.sampled_from(["error", "resets_in_seconds", "x"]), children, max_size=3)
    ),
    max_leaves=10,
)


@settings(max_examples=300)
@given(
    headers=st.dictionaries(
        st.sampled_from(["retry-after", "retry-after-ms", "x-ratelimit-reset-requests", "content-type"]), st.text(max_size=30), max_size=4
    ),
    body=st.one_of(st.binary(max_size=80), json_values.map(lambda v: json.dumps(v).encode())),
)
def test_cooldown_is_always_within_bounds(headers: dict[str, str], body: bytes) -> None:
    seconds, source = cooldown_seconds(headers, body, now=NOW, default=60.0, maximum=3600.0)
    assert 1.0 <= seconds <= 3600.0
    assert source in ("resets_in_seconds", "retry_after_ms", "retry_after", "x_ratelimit_reset_requests", "default")


def test_upstream_error_scrubs_key_like_text() -> None:
    body = json.dumps({"error": {"message": "Incorrect API key provided: sk-proj-abc123****wxyz.", "code": "invalid_api_key"}}).encode()
    code, message = upstream_error(body)
    assert code == "invalid_api_key"
    assert message is not None and "sk-proj" not in message and "[redacted]" in message
    assert upstream_error(b"not json") == (None, None)
    assert "Bearer" not in redact("sent Bearer abc.def.ghi")


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        # OpenAI and ModelArk: the envelope's code and message.
        (
            {"error": {"code": "RateLimitExceeded.EndpointRPM", "message": "RPM limit hit"}},
            "RateLimitExceeded.EndpointRPM",
            "RPM limit hit",
        ),
        # Google: a number as the code, which is no code the relay acts on.
        ({"error": {"code": 429, "message": "Quota exceeded", "status": "RESOURCE_EXHAUSTED"}}, None, "Quota exceeded"),
        # Runway: the error is the message itself.
        ({"error": "You have exceeded the rate limit.", "issues": []}, None, "You have exceeded the rate limit."),
        # fal: a string detail, or the first validation issue with the field it names.
        ({"detail": "User is locked. Reason: Exhausted balance."}, None, "User is locked. Reason: Exhausted balance."),
        (
            {"detail": [{"loc": ["body", "duration"], "msg": "unexpected value", "type": "literal_error"}]},
            None,
            "duration: unexpected value",
        ),
        ({"detail": [{"msg": "bad input"}]}, None, "bad input"),
        ({"message": "Too many requests"}, None, "Too many requests"),
        # Nothing readable: the caller falls back on the status.
        ({"detail": []}, None, None),
        ({"error": {"code": "x"}}, "x", None),
        ({"status": "failed"}, None, None),
        (["not", "an", "object"], None, None),
    ],
)
def test_upstream_error_reads_each_providers_error_shape(body: object, code: str | None, message: str | None) -> None:
    assert upstream_error(json.dumps(body).encode()) == (code, message)


@pytest.mark.parametrize(
    "body",
    [
        {"error": "Invalid API key: key_" + "0123456789abcdef" * 4},
        {"detail": "Bad credentials 2f1c0b7e-8d6a-4c53-9e21-7a0b9c8d1e2f:" + "a1b2c3d4" * 4},
        {"error": {"message": "API key not valid: AIzaSyA-abcdefghijklmnopqrstuvwxyz012", "status": "INVALID_ARGUMENT"}},
        {"detail": [{"loc": ["body"], "msg": "Authorization: Bearer abc.def.ghi rejected"}]},
    ],
)
def test_upstream_error_masks_provider_keys_in_every_shape(body: dict[str, object]) -> None:
    _, message = upstream_error(json.dumps(body).encode())
    assert message is not None and "[redacted]" in message
    for secret in ("0123456789abcdef0123", "a1b2c3d4a1b2c3d4", "AIzaSyA", "abc.def.ghi"):
        assert secret not in message


def test_upstream_error_is_short_on_one_line_and_masks_a_key_at_the_cut() -> None:
    hostile = "line one\r\nforged: log line\x1b[31m\u202ereversed\u2028" + "x" * 1000
    _, message = upstream_error(json.dumps({"detail": hostile}).encode())
    assert message is not None and len(message) <= 300
    assert not any(char in message for char in "\r\n\x1b\u202e\u2028")
    assert message.startswith("line one  forged: log line")
    # A key that straddles the limit is masked, not cut into a shorter, unmasked piece.
    _, cut = upstream_error(json.dumps({"error": "x" * 290 + " sk-proj-" + "A" * 40}).encode(), limit=300)
    assert cut is not None and "sk-pr" not in cut and "AAAA" not in cut


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=40),
        lambda inner: (
            st.lists(inner, max_size=3)
            | st.dictionaries(st.sampled_from(["error", "detail", "message", "code", "msg", "loc"]), inner, max_size=4)
        ),
        max_leaves=12,
    )
)
@settings(max_examples=200, deadline=None)
def test_upstream_error_never_raises_and_stays_bounded(body: object) -> None:
    code, message = upstream_error(json.dumps(body).encode(), limit=50)
    assert code is None or len(code) <= 64
    assert message is None or (len(message) <= 50 and message.isprintable())
