"""Relay keys: issue, parse, verify, and the permission check.

A key looks like `rk-<16 hex id>-<secret>`. The id is stored in clear to find the record;
the whole key is stored only as a salted SHA-256 and compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

import anyio.to_thread
from starlette.datastructures import Headers

from .errors import RelayError
from .limits import Limits, changed_limits
from .records import KeyRecord
from .store import Store

PREFIX = "rk-"
_ID_HEX_LENGTH = 16
# Service names a key may be granted; `all` covers every service. New services add theirs here.
PERMISSIONS = ("all", "openai")


class KeyInputError(ValueError):
    """Bad input when issuing a key (name, permission, expiry)."""


@dataclass(frozen=True)
class IssuedKey:
    record: KeyRecord
    key: str


def _hash(salt: str, key: str) -> str:
    return hashlib.sha256(bytes.fromhex(salt) + key.encode()).hexdigest()


def validate_permissions(permissions: list[str] | tuple[str, ...]) -> frozenset[str]:
    unknown = sorted(set(permissions) - set(PERMISSIONS))
    if unknown:
        raise KeyInputError(f"unknown permission {unknown[0]!r}: choose from {', '.join(PERMISSIONS)}")
    if not permissions:
        raise KeyInputError(f"a key needs at least one permission ({', '.join(PERMISSIONS)})")
    return frozenset(permissions)


# Key and account names: plain ASCII, so two names that look alike are the same name. Names
# stored by older versions (which allowed any Unicode letter) keep working; only new ones are checked.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def validate_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise KeyInputError("a name is 1-64 characters of ASCII letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


# A note is a line in `keys list`: a reminder of who holds the key, not a document.
MAX_NOTE_CHARACTERS = 500


def issue_key(
    store: Store,
    name: str,
    permissions: list[str] | tuple[str, ...],
    *,
    expires_at: float | None = None,
    note: str | None = None,
    now: float | None = None,
    limits: dict[str, Any] | None = None,
) -> IssuedKey:
    validate_name(name)
    granted = validate_permissions(permissions)
    if note is not None and len(note) > MAX_NOTE_CHARACTERS:
        raise KeyInputError(f"a key's note is at most {MAX_NOTE_CHARACTERS} characters, got {len(note):,}")
    limits_json = changed_limits(Limits(), limits or {}).to_json()
    key_id = secrets.token_hex(_ID_HEX_LENGTH // 2)
    key = f"{PREFIX}{key_id}-{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    record = KeyRecord(
        id=key_id,
        name=name,
        salt=salt,
        hash=_hash(salt, key),
        permissions=granted,
        created_at=time.time() if now is None else now,
        expires_at=expires_at,
        revoked_at=None,
        last_used_at=None,
        note=note,
        limits_json=limits_json,
    )
    store.insert_key(record)
    return IssuedKey(record=record, key=key)


def rotate_key(store: Store, name: str, *, grace_seconds: float = 0.0, now: float | None = None) -> IssuedKey:
    """A new secret for key NAME (same name, id, permissions and videos); shown once.

    With a grace period the old secret keeps working until it ends, so clients can switch over.
    """
    now = time.time() if now is None else now
    record = store.key_by_name(name)
    if record.state(now) != "active":
        raise KeyInputError(f"key {name!r} is {record.state(now)}; issue a new key instead")
    key = f"{PREFIX}{record.id}-{secrets.token_urlsafe(32)}"
    salt = secrets.token_hex(16)
    grace_until = now + grace_seconds if grace_seconds > 0 else None
    if grace_until is not None and record.expires_at is not None:
        # The key itself stops at its expiry, old secret or new: a grace past it would promise more.
        grace_until = min(grace_until, record.expires_at)
    store.rotate_key_secret(name, salt=salt, hash=_hash(salt, key), grace_until=grace_until, now=now)
    return IssuedKey(record=store.key_by_name(name), key=key)


def revoke_key(store: Store, name: str, now: float | None = None) -> float | None:
    """Revoke key NAME (running relays refuse it within a second); return when it was revoked before, if it was."""
    return store.revoke_key(name, time.time() if now is None else now)


def set_limits(store: Store, name: str, changes: dict[str, Any]) -> Limits:
    """Set (or, with None, clear) some of key NAME's limits; running relays enforce them within a second."""
    record = store.key_by_name(name)
    limits = changed_limits(Limits.from_json(record.limits_json), changes)
    store.set_key_limits(name, limits.to_json())
    return limits


def change_permissions(store: Store, name: str, *, add: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> KeyRecord:
    validate_permissions(list(add) + list(remove) or ["all"])
    record = store.key_by_name(name)
    granted = (record.permissions | frozenset(add)) - frozenset(remove)
    if not granted:
        raise KeyInputError(f"key {name!r} would have no permission left; revoke it instead")
    store.set_key_permissions(name, granted)
    return store.key_by_name(name)


def key_id_of(presented: str) -> str | None:
    """The id part of a well-formed key, or None."""
    if not presented.startswith(PREFIX) or len(presented) < len(PREFIX) + _ID_HEX_LENGTH + 2:
        return None
    key_id = presented[len(PREFIX) : len(PREFIX) + _ID_HEX_LENGTH]
    if presented[len(PREFIX) + _ID_HEX_LENGTH] != "-" or not all(c in "0123456789abcdef" for c in key_id):
        return None
    return key_id


def matches(record: KeyRecord, presented: str, now: float) -> bool:
    """The current secret, or the previous one while its grace period lasts (constant-time compares)."""
    current = hmac.compare_digest(_hash(record.salt, presented), record.hash)
    previous = False
    if record.previous_salt and record.previous_hash and (record.previous_valid_until or 0) > now:
        previous = hmac.compare_digest(_hash(record.previous_salt, presented), record.previous_hash)
    return current or previous


def allows(record: KeyRecord, service: str) -> bool:
    return "all" in record.permissions or service in record.permissions


_KEY_HEADERS = frozenset((b"authorization", b"x-api-key"))


def presented_key(headers: Headers) -> str | None:
    """The key from `Authorization: Bearer …` or, failing that, `x-api-key`.

    Each header may come once: with two, a front proxy that checks the first and the relay
    that read another would disagree about who is calling.
    """
    found: dict[bytes, str] = {}
    for name, raw in headers.raw:
        if name in _KEY_HEADERS:
            if name in found:
                raise AuthError(401, f"Send the relay key once: the request has more than one {name.decode()} header.", reason="malformed")
            found[name] = raw.decode("latin-1")
    authorization, api_key = found.get(b"authorization"), found.get(b"x-api-key")
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return api_key.strip() if api_key and api_key.strip() else None


class AuthError(RelayError):
    """401/403 with a reason from a closed set, for `relay_auth_failures_total{reason}`."""

    def __init__(self, status: int, message: str, *, reason: str) -> None:
        super().__init__(status, message, code="invalid_api_key" if status == 401 else "insufficient_permissions")
        self.reason = reason


AUTH_FAILURE_REASONS = ("missing", "malformed", "unknown", "revoked", "expired", "forbidden")


class KeyCache:
    """Key records by id, kept until the configuration changes (the refresher clears it)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._records: dict[str, KeyRecord] = {}

    def clear(self) -> None:
        self._records.clear()

    async def get(self, key_id: str, *, fresh: bool = False) -> KeyRecord | None:
        record = None if fresh else self._records.get(key_id)
        if record is None:
            record = await anyio.to_thread.run_sync(self._store.key_by_id, key_id)
            # Unknown ids are not cached: a flood of made-up keys must not grow memory.
            if record is not None:
                self._records[key_id] = record
            else:
                self._records.pop(key_id, None)
        return record


async def authenticate(headers: Headers, cache: KeyCache, *, service: str, now: float) -> KeyRecord:
    presented = presented_key(headers)
    if presented is None:
        raise AuthError(
            401,
            "Missing relay key: send it as 'Authorization: Bearer <key>' or in the 'x-api-key' header.",
            reason="missing",
        )
    key_id = key_id_of(presented)
    if key_id is None:
        raise AuthError(401, "Invalid relay key: it is not in the relay's key format.", reason="malformed")
    record = await cache.get(key_id)
    if record is not None and not matches(record, presented, now):
        # The secret may have been rotated since this worker cached the record: a new key must work
        # at once. Costs one primary-key read, as an unknown id already does.
        record = await cache.get(key_id, fresh=True)
    if record is None or not matches(record, presented, now):
        raise AuthError(401, "Invalid relay key.", reason="unknown")
    state = record.state(now)
    if state != "active":
        raise AuthError(401, f"This relay key is {state}.", reason=state)
    if not allows(record, service):
        raise AuthError(
            403,
            f"This relay key does not have the '{service}' permission (it has: {', '.join(sorted(record.permissions))}).",
            reason="forbidden",
        )
    return record
