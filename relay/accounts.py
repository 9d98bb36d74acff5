"""Upstream account records: adding one (credential encrypted), and who is cooling down."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .crypto import SecretBox, generate_key, read_key_file, write_key_file
from .errors import shown
from .keys import KeyInputError, validate_name
from .limits import account_cap_summary, period_bounds
from .pricing import MODEL_NAME_RULE, is_model_name
from .providers import account_type
from .records import ACCOUNT_TYPES, Account, NotFound
from .store import Store
from .upstream import base_api_problem, credential_problem, proxy_problem, shown_url

# Said by `relayctl accounts add --type openai` and the README, plainly.
CONSUMER_BACKEND_WARNING = (
    "Warning: accounts of type 'openai' use a ChatGPT access token against ChatGPT's private "
    "backend. Doing so may breach that provider's terms of use; you, the operator, carry that "
    "risk. The API-key type 'openai-responses' is the recommended path."
)


class AccountInputError(ValueError):
    """Bad input when adding or changing an account."""


def validate_base_api(url: str) -> str:
    problem = base_api_problem(url)
    if problem:
        raise AccountInputError(f"{problem}: give it like https://api.example.com/v1 or http://127.0.0.1:8090/v1")
    return url.rstrip("/")


def validate_proxy(url: str) -> str:
    problem = proxy_problem(url)
    if problem:
        raise AccountInputError(f"{problem}: give it like http://host:3128 or socks5://user:password@host:1080")
    return url


def redact_proxy(url: str | None) -> str | None:
    """The proxy URL with its user information replaced, for display and logs."""
    return shown_url(url)


# Priorities are ordered, never summed: this range leaves room for any scheme an operator needs
# and keeps every stored value a small SQLite integer.
PRIORITY_RANGE = (-1_000_000, 1_000_000)


def validate_priority(priority: int) -> int:
    low, high = PRIORITY_RANGE
    if not low <= priority <= high:
        raise AccountInputError(f"a priority is a whole number from {low:,} to {high:,}")
    return priority


def set_proxy(store: Store, box: SecretBox, name: str, proxy: str | None) -> None:
    store.set_account_proxy(name, box.encrypt(validate_proxy(proxy)) if proxy else None)


def _exists(store: Store, name: str) -> bool:
    try:
        store.account(name)
    except NotFound:
        return False
    return True


def checked_input(*, name: str, type: str, credential: str, base_api: str | None, priority: int, proxy: str | None) -> tuple[str, str]:
    """A new account's input, checked before anything is written: the credential and base_api to store."""
    try:
        validate_name(name)
    except KeyInputError as error:
        raise AccountInputError(str(error)) from None
    if type not in ACCOUNT_TYPES:
        raise AccountInputError(f"unknown account type {type!r}: choose from {', '.join(ACCOUNT_TYPES)}")
    default_base_api = account_type(type).default_base_api
    if base_api is None and default_base_api is None:
        raise AccountInputError(f"--base-api is required for {type} accounts, such as https://RESOURCE.openai.azure.com/openai/v1")
    base_api = validate_base_api(base_api or default_base_api or "")
    if proxy is not None:
        validate_proxy(proxy)
    validate_priority(priority)
    return clean_credential(credential), base_api


def add_account(
    store: Store,
    box: SecretBox,
    *,
    name: str,
    type: str,
    credential: str,
    base_api: str | None = None,
    priority: int = 100,
    proxy: str | None = None,
    models: Iterable[str] | None = None,
    now: float | None = None,
) -> Account:
    credential, base_api = checked_input(name=name, type=type, credential=credential, base_api=base_api, priority=priority, proxy=proxy)
    served = validate_models(models)
    now = time.time() if now is None else now
    left_behind = 0 if _exists(store, name) else store.live_video_count(name, now) + store.character_count(name)
    if left_behind:
        # Videos and characters name their account: a new account under the name would receive their follow-ups.
        raise AccountInputError(
            f"{left_behind} video(s) or character(s) of a removed account named {name!r} can still be reached; "
            "a new account under that name would receive their follow-ups. Choose another name"
        )
    # One statement: an account is never seen (or left, if the write fails) without its proxy,
    # sending straight to the upstream.
    return store.insert_account(
        name=name,
        type=type,
        credential_encrypted=box.encrypt(credential),
        base_api=base_api,
        priority=priority,
        now=now,
        proxy_encrypted=box.encrypt(proxy) if proxy else None,
        models=served,
    )


MAX_MODELS = 100


def validate_models(models: Iterable[str] | None) -> tuple[str, ...] | None:
    """An account's model list, in the order given without repeats; None: every model its type carries."""
    if models is None:
        return None
    names = tuple(dict.fromkeys(model.strip() for model in models))
    if not names or len(names) > MAX_MODELS:
        raise AccountInputError(f"--models lists 1 to {MAX_MODELS} models (or 'none' for every model)")
    for model in names:
        if not is_model_name(model):
            raise AccountInputError(f"model names are {MODEL_NAME_RULE}; got {shown(model)}")
    return names


def set_models(store: Store, name: str, models: Iterable[str] | None) -> tuple[str, ...] | None:
    """Which models account NAME serves from now on (None: every model); running relays follow within a second."""
    served = validate_models(models)
    store.set_account_models(name, served)
    return served


def clean_credential(credential: str) -> str:
    credential = credential.strip()
    problem = credential_problem(credential)
    if problem:
        raise AccountInputError(problem)
    return credential


def set_base_api(store: Store, name: str, base_api: str) -> str:
    """Point account NAME at another upstream URL (its videos stay with it); the stored form is returned."""
    url = validate_base_api(base_api)
    store.set_account_base_api(name, url)
    return url


def set_enabled(store: Store, name: str, enabled: bool) -> None:
    """Put account NAME into rotation for new work, or take it out (its videos stay reachable)."""
    store.set_account_enabled(name, enabled)


def set_priority(store: Store, name: str, priority: int) -> None:
    store.set_account_priority(name, validate_priority(priority))


def rotate_credential(store: Store, box: SecretBox, name: str, credential: str, now: float | None = None) -> None:
    """Replace an account's credential; its videos stay with it, and `unauthorized` is cleared."""
    store.replace_credential(name, box.encrypt(clean_credential(credential)), time.time() if now is None else now)


def remove_account(store: Store, name: str, *, force: bool = False, now: float | None = None) -> None:
    """Remove an account, unless it still owns videos that could be reached (then only with force)."""
    now = time.time() if now is None else now
    live, characters = store.remove_account(name, unless_owning_at=None if force else now)
    if (live or characters) and not force:
        raise AccountInputError(
            f"account {name!r} owns {live} video(s) that have not expired and {characters} character(s); removing it makes"
            " them unreachable. Disable it instead, or pass --force"
        )


def rotate_secret_key(store: Store, *, env_keys: list[bytes] | None, key_file: Path) -> tuple[int, int]:
    """Re-encrypt every credential (and webhook signing secret) under a new first key, without
    stopping running relays; return how many accounts' and webhook endpoints'.

    Key-file mode: a new key is written at the top of the key file (old keys stay below it),
    then everything is re-encrypted; relays re-read the file before they reload accounts.
    RELAY_SECRET_KEY mode: the operator lists the new key first (`NEW,OLD`) on the relays and
    here; this re-encrypts under it.
    """
    if env_keys is not None:
        if len(env_keys) < 2:
            raise AccountInputError(
                "RELAY_SECRET_KEY holds one key. Put a new key first (RELAY_SECRET_KEY=NEW,OLD) on the relays "
                "and here, then run this again; drop OLD once it has finished"
            )
        new_box = SecretBox(env_keys)
    else:
        keys = [generate_key().encode(), *read_key_file(key_file)]
        new_box = SecretBox(keys)
        write_key_file(key_file, keys)
    return store.reencrypt_credentials(new_box.reencrypt, new_box.check_value())


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


def daily_cap_status(store: Store, account: Account, now: float) -> dict[str, Any]:
    """Account's daily cap, what today used or reserved, and whether admission would refuse new work."""
    used = store.account_usage(account.name, since=period_bounds("day", now)[0], now=now)
    return account_cap_summary(account.max_video_seconds_per_day, used)


# The same ceiling as a key's video-seconds limits: far above any real day, and always a plain number.
MAX_DAILY_CAP_SECONDS = 1_000_000_000


def set_daily_cap(store: Store, name: str, max_video_seconds_per_day: float | None) -> None:
    """Cap the video-seconds account NAME may render per UTC day (None: no cap).

    A capped account is skipped for new work until the day ends; work on videos it already
    owns is refused (429) meanwhile, since it cannot move to another account.
    """
    if max_video_seconds_per_day is not None and not (
        math.isfinite(max_video_seconds_per_day) and 0 <= max_video_seconds_per_day <= MAX_DAILY_CAP_SECONDS
    ):
        raise AccountInputError(
            f"the daily cap must be a number of seconds from 0 to {MAX_DAILY_CAP_SECONDS:,}, got {max_video_seconds_per_day!r}"
        )
    store.set_account_cap(name, max_video_seconds_per_day)
