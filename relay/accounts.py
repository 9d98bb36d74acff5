"""Upstream account records: adding one (credential encrypted), and who is cooling down."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .crypto import SecretBox
from .keys import KeyInputError, validate_name
from .store import ACCOUNT_TYPES, Account, Store
from .upstream import DEFAULT_BASE_API

# Said by `relayctl accounts add --type openai` and the README, plainly.
CONSUMER_BACKEND_WARNING = (
    "Warning: accounts of type 'openai' use a ChatGPT access token against ChatGPT's private "
    "backend. Doing so may breach that provider's terms of use; you, the operator, carry that "
    "risk. The API-key type 'openai-responses' is the recommended path."
)


class AccountInputError(ValueError):
    """Bad input when adding or changing an account."""


def validate_base_api(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise AccountInputError(f"base_api must be an http(s) URL without query or fragment, got {url!r}")
    return url.rstrip("/")


def add_account(
    store: Store,
    box: SecretBox,
    *,
    name: str,
    type: str,
    credential: str,
    base_api: str | None = None,
    priority: int = 100,
    now: float | None = None,
) -> Account:
    try:
        validate_name(name)
    except KeyInputError as error:
        raise AccountInputError(str(error)) from None
    if type not in ACCOUNT_TYPES:
        raise AccountInputError(f"unknown account type {type!r}: choose from {', '.join(ACCOUNT_TYPES)}")
    credential = credential.strip()
    if not credential:
        raise AccountInputError("the credential is empty")
    if any(c.isspace() for c in credential) or not (credential.isascii() and credential.isprintable()):
        raise AccountInputError("the credential contains whitespace or non-ASCII characters; paste the token alone")
    return store.insert_account(
        name=name,
        type=type,
        credential_encrypted=box.encrypt(credential),
        base_api=validate_base_api(base_api or DEFAULT_BASE_API[type]),
        priority=priority,
        now=time.time() if now is None else now,
    )


@dataclass(frozen=True)
class Cooldown:
    account: str
    state: str
    reason: str | None
    since: float | None
    until: float | None
    seconds_left: float | None
    last_error: str | None

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def cooldowns(store: Store, now: float) -> list[Cooldown]:
    """Accounts that are not serving new work right now, and why."""
    found = []
    for account in store.list_accounts():
        state = account.effective_state(now)
        if state == "active":
            continue
        until = account.state_until if state == "rate_limited" else None
        found.append(
            Cooldown(
                account=account.name,
                state=state,
                reason="disabled by an operator" if state == "disabled" else account.state_reason,
                since=account.state_since,
                until=until,
                seconds_left=None if until is None else max(0.0, round(until - now, 1)),
                last_error=account.last_error,
            )
        )
    return found


def reset_account(store: Store, name: str, now: float | None = None) -> None:
    """Back to `active` (an operator's decision: clears rate limits and `unauthorized`)."""
    store.set_account_state(name, "active", now=time.time() if now is None else now, reason="reset by an operator")
