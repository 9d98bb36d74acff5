"""Fault rules, shared by every emulated provider: what a rule matches, what it does, and the presets.

A preset (``rate_limited``, ``unauthorized``, ...) names a failure; each provider words it its own
way (OpenAI's envelope, Azure's, Google's ``RESOURCE_EXHAUSTED`` with a ``RetryInfo``), so a rule
built from a preset keeps one reply per provider. The rule's own ``status``/``body``/``headers``,
as ``GET /_sandbox/faults`` lists them, are the OpenAI contract's reply.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from starlette.responses import Response

from .errors import ApiError

if TYPE_CHECKING:
    from .state import SandboxState

FAULT_ACTIONS: Final = ("respond", "reset", "slow_body")
FAULT_RULE_KEYS: Final = frozenset(
    {
        "status",
        "body",
        "raw_body",
        "content_type",
        "headers",
        "times",
        "token",
        "method",
        "path_contains",
        "provider",
        "delay_seconds",
        "action",
        "chunk_bytes",
        "chunk_interval_seconds",
        "probability",
    }
)
# Presets that answer in place of the provider; `slow` only delays the real answer.
REPLY_PRESETS: Final = ("rate_limited", "insufficient_quota", "unauthorized", "payment_required", "server_error")
PRESETS: Final = (*REPLY_PRESETS, "slow")
FAIL_ALIASES: Final = MappingProxyType({"429": "rate_limited", "401": "unauthorized", "402": "payment_required", "500": "server_error"})
DEFAULT_RESETS_IN_SECONDS: Final = 7
DEFAULT_SLOW_SECONDS: Final = 3.0
DEFAULT_TRICKLE_BYTES: Final = 64
DEFAULT_TRICKLE_INTERVAL_SECONDS: Final = 0.5

# A provider's wording of a reply preset: (preset, resets_in_seconds) -> {"status", "body", "headers"}.
PresetReply = Callable[[str, float], dict[str, Any]]


@dataclass(frozen=True)
class PresetCatalog:
    """Every provider's preset replies; ``shown`` is the provider whose reply a rule lists as its own fields."""

    shown: str
    replies: Mapping[str, PresetReply]


@dataclass(frozen=True)
class Reply:
    """What a rule answers with (``status`` None: the real response, with ``headers`` added)."""

    status: int | None
    body: Any
    raw_body: str | None
    content_type: str
    headers: dict[str, str]


@dataclass
class FaultRule:
    id: str
    action: str
    status: int | None
    body: Any
    raw_body: str | None
    content_type: str
    headers: dict[str, str]
    times: int | None
    remaining: int | None
    token: str | None
    method: str | None
    path_contains: str | None
    delay_seconds: float
    chunk_bytes: int
    chunk_interval_seconds: float
    preset: str | None
    probability: float = 1.0
    hits: int = 0
    provider: str | None = None
    # The preset's reply as the other providers word it; not listed (the listing shows the contract's).
    provider_replies: dict[str, Reply] = field(default_factory=dict)


# --------------------------------------------------------------------------- validation


def rule_error(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, f"Invalid fault rule: {message}.", param=param)


def optional_string(spec: Mapping[str, Any], key: str, default: str | None = None) -> str | None:
    value = spec.get(key, default)
    if value is not None and not isinstance(value, str):
        raise rule_error(f"'{key}' must be a string or null", key)
    return value


def optional_int(spec: Mapping[str, Any], key: str, low: int, high: int | None = None) -> int | None:
    value = spec.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        raise rule_error(f"'{key}' must be an integer >= {low}" + (f" and <= {high}" if high else ""), key)
    return value


def non_negative_number(spec: Mapping[str, Any], key: str, default: float) -> float:
    value = spec.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0 or not math.isfinite(value):
        raise rule_error(f"'{key}' must be a non-negative number", key)
    return float(value)


def probability_field(spec: Mapping[str, Any]) -> float:
    value = spec.get("probability", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise rule_error("'probability' must be a number from 0 to 1", "probability")
    return float(value)


def header_map(value: Any, key: str = "headers") -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(name, str) and isinstance(text, str) for name, text in value.items()):
        raise rule_error(f"'{key}' must be an object of string values", key)
    for name, text in value.items():
        if not name or "\r" in name + text or "\n" in name + text or not (name + text).isascii():
            raise rule_error(f"header {name!r} is not a valid ASCII header", key)
    return {name.lower(): text for name, text in value.items()}


def reply_fields(spec: Mapping[str, Any]) -> Reply:
    raw_body = optional_string(spec, "raw_body")
    if raw_body is not None and spec.get("body") is not None:
        raise rule_error("give 'body' or 'raw_body', not both", "raw_body")
    return Reply(
        status=optional_int(spec, "status", 100, 599),
        body=spec.get("body"),
        raw_body=raw_body,
        content_type=optional_string(spec, "content_type", "application/json") or "application/json",
        headers=header_map(spec.get("headers")),
    )


# --------------------------------------------------------------------------- presets


def preset_defaults(reply: PresetReply, name: str, resets_in_seconds: float) -> dict[str, Any]:
    if name == "slow":
        return {"delay_seconds": DEFAULT_SLOW_SECONDS}
    return reply(name, resets_in_seconds)


def with_defaults(defaults: Mapping[str, Any], options: Mapping[str, Any]) -> dict[str, Any]:
    """The rule's own keys win over the preset's; headers merge."""
    headers = {**header_map(defaults.get("headers")), **header_map(options.get("headers"))}
    return {**defaults, **options, "headers": headers}


def expand_preset(spec: Mapping[str, Any], presets: PresetCatalog) -> tuple[dict[str, Any], dict[str, Reply]]:
    """The rule spec as the shown provider words the preset, and every other provider's reply."""
    name = spec["preset"]
    if not isinstance(name, str):
        raise rule_error("'preset' must be a string", "preset")
    if name not in PRESETS:
        raise rule_error(f"unknown preset {name!r}; expected one of {', '.join(PRESETS)}", "preset")
    options = {key: value for key, value in spec.items() if key != "preset"}
    resets: float = DEFAULT_RESETS_IN_SECONDS
    if name == "rate_limited":
        resets = non_negative_number(options, "resets_in_seconds", DEFAULT_RESETS_IN_SECONDS)
        options.pop("resets_in_seconds", None)
        resets = int(resets) if resets.is_integer() else resets
    shown = with_defaults(preset_defaults(presets.replies[presets.shown], name, resets), options)
    others = {
        provider: reply_fields(with_defaults(preset_defaults(reply, name, resets), options))
        for provider, reply in presets.replies.items()
        if provider != presets.shown and name in REPLY_PRESETS
    }
    return shown, others


# --------------------------------------------------------------------------- rules


def build_rule(spec: Mapping[str, Any], rule_id: str, presets: PresetCatalog) -> FaultRule:
    preset = spec.get("preset")
    provider_replies: dict[str, Reply] = {}
    if preset is not None:
        spec, provider_replies = expand_preset(spec, presets)
    unknown = sorted(set(spec) - FAULT_RULE_KEYS - {"preset"})
    if unknown:
        raise rule_error(f"unknown keys {unknown}", unknown[0])
    action = optional_string(spec, "action", "respond")
    if action not in FAULT_ACTIONS:
        raise rule_error(f"'action' must be one of {', '.join(FAULT_ACTIONS)}", "action")
    provider = optional_string(spec, "provider")
    if provider is not None and provider not in presets.replies:
        raise rule_error(f"'provider' must be one of {', '.join(presets.replies)} or null", "provider")
    reply = reply_fields(spec)
    times = optional_int(spec, "times", 1)
    method = optional_string(spec, "method")
    return FaultRule(
        id=rule_id,
        action=action,
        status=reply.status,
        body=reply.body,
        raw_body=reply.raw_body,
        content_type=reply.content_type,
        headers=reply.headers,
        times=times,
        remaining=times,
        token=optional_string(spec, "token"),
        method=method.upper() if method else None,
        path_contains=optional_string(spec, "path_contains"),
        delay_seconds=non_negative_number(spec, "delay_seconds", 0.0),
        chunk_bytes=optional_int(spec, "chunk_bytes", 1) or DEFAULT_TRICKLE_BYTES,
        chunk_interval_seconds=non_negative_number(spec, "chunk_interval_seconds", DEFAULT_TRICKLE_INTERVAL_SECONDS),
        preset=preset,
        probability=probability_field(spec),
        provider=provider,
        provider_replies=provider_replies,
    )


def add_rule(state: SandboxState, spec: Mapping[str, Any]) -> FaultRule:
    rule = build_rule(spec, f"fault_{next(state.fault_ids)}", state.presets)
    state.faults.append(rule)
    return rule


def rule_listing(rule: FaultRule) -> dict[str, Any]:
    listing = dataclasses.asdict(rule)
    del listing["provider_replies"]
    return listing


def rule_matches(rule: FaultRule, method: str, path: str, token: str | None, provider: str) -> bool:
    return (
        (rule.method is None or rule.method == method.upper())
        and (rule.path_contains is None or rule.path_contains in path)
        and (rule.token is None or rule.token == token)
        and (rule.provider is None or rule.provider == provider)
    )


def rule_applies(rule: FaultRule, rng: random.Random) -> bool:
    """Draw for a rule with a probability below 1 (a rule at 1 draws nothing)."""
    return rule.probability >= 1 or rng.random() < rule.probability


def take_matching_rule(
    rules: list[FaultRule], method: str, path: str, token: str | None, provider: str, rng: random.Random
) -> FaultRule | None:
    """The first rule that matches and applies; only that rule's `times` and `hits` change."""
    for rule in rules:
        if rule.remaining != 0 and rule_matches(rule, method, path, token, provider) and rule_applies(rule, rng):
            if rule.remaining is not None:
                rule.remaining -= 1
            rule.hits += 1
            return rule
    return None


def rule_reply(rule: FaultRule, provider: str) -> Reply:
    """The rule's reply as ``provider`` words it."""
    own = Reply(rule.status, rule.body, rule.raw_body, rule.content_type, rule.headers)
    return rule.provider_replies.get(provider, own)


def canned_response(reply: Reply, status: int) -> Response:
    if reply.raw_body is not None:
        body = reply.raw_body.encode("utf-8")
    elif reply.body is not None:
        body = json.dumps(reply.body).encode("utf-8")
    else:
        body = b""
    # Set content-type as a header so Starlette does not append a charset to it.
    return Response(body, status_code=status, headers={"content-type": reply.content_type})


def fail_preset(fail: str) -> str:
    preset = FAIL_ALIASES.get(fail, fail)
    if preset not in PRESETS:
        choices = ", ".join([*FAIL_ALIASES, *PRESETS])
        raise ValueError(f"unknown fail mode {fail!r}; expected one of {choices}")
    return preset
