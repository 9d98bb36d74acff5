"""Encryption at rest for upstream credentials (Fernet: AES-128-CBC + HMAC-SHA256).

Keys come from RELAY_SECRET_KEY (comma-separated, newest first) or, when that is unset,
from a key file beside the database (mode 0600, one key a line, newest first), created with
a new database (never for one already written under a key). The first key encrypts; every key decrypts, which is what makes rotation work
without downtime. A check value stored in the database makes a wrong key fail loudly at
start instead of sending garbage credentials upstream.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

_CHECK_PLAINTEXT = "video-relay secret check v1"


class SecretKeyError(RuntimeError):
    """The secret key is missing, malformed, or not the one the database was written with."""


class SecretBox:
    """Encrypts with the first key, decrypts with any (so keys can be rotated)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise SecretKeyError("no secret key given")
        self._fernet = MultiFernet([_fernet(key) for key in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored credential cannot be decrypted with the current secret key") from None

    def check_value(self) -> str:
        return self.encrypt(_CHECK_PLAINTEXT)

    def verify_check_value(self, token: str) -> None:
        if self.decrypt_or_none(token) != _CHECK_PLAINTEXT:
            raise SecretKeyError(
                "the secret key does not match the one this database was encrypted with "
                "(check RELAY_SECRET_KEY, or the key file: RELAY_SECRET_KEY_FILE, beside a SQLite database, or ./relay.key)"
            )

    def reencrypt(self, token: str) -> str:
        """The same plaintext, encrypted under the first key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise SecretKeyError("a stored credential cannot be decrypted with any configured secret key") from None

    def decrypt_or_none(self, token: str) -> str | None:
        try:
            return self.decrypt(token)
        except SecretKeyError:
            return None


def generate_key() -> str:
    return Fernet.generate_key().decode()


def _fernet(key: bytes) -> Fernet:
    try:
        return Fernet(key)
    except (ValueError, TypeError):
        raise SecretKeyError(
            "RELAY_SECRET_KEY must be 32 url-safe base64-encoded bytes (make one with: relayctl secrets generate-key)"
        ) from None


def parse_keys(value: str) -> list[bytes]:
    keys = [part.strip().encode() for part in value.replace("\n", ",").split(",") if part.strip()]
    for key in keys:
        _fernet(key)
    return keys


def resolve_keys(env_value: str | None, key_file: Path, *, may_create: bool = True) -> tuple[list[bytes], str | None]:
    """The keys to use and, when a key file was just created, a line to log once.

    `may_create` is False for a database already written under some key: a missing key file is
    then an error to fix (a new key would not decrypt what is stored), not a file to make.
    """
    if env_value:
        return parse_keys(env_value), None
    try:
        return read_key_file(key_file), None
    except FileNotFoundError:
        if not may_create:
            raise SecretKeyError(
                f"RELAY_SECRET_KEY is not set and the key file {key_file} is missing, but the database beside it "
                "was encrypted with a key: set RELAY_SECRET_KEY to that key or restore the key file"
            ) from None
    # Write a private temp file, then link it into place: link fails if another worker
    # (or the CLI) won the race, and nobody ever reads a half-written key file.
    key = Fernet.generate_key()
    try:
        _link_new_file(key_file, key + b"\n")
    except FileExistsError:
        return read_key_file(key_file), None
    return [key], (
        f"RELAY_SECRET_KEY is not set: created a new secret key file {key_file} (mode 0600). "
        "Back it up: credentials in the database cannot be decrypted without it."
    )


def read_key_file(key_file: Path) -> list[bytes]:
    keys = parse_keys(key_file.read_text())
    if not keys:
        raise SecretKeyError(f"the key file {key_file} holds no key")
    return keys


def write_key_file(key_file: Path, keys: list[bytes]) -> None:
    """Replace the key file atomically (readers see the old or the new file, never half of one)."""
    os.replace(_private_temp(key_file, b"".join(key + b"\n" for key in keys)), key_file)


def _link_new_file(path: Path, content: bytes) -> None:
    temp = _private_temp(path, content)
    try:
        os.link(temp, path)
    finally:
        temp.unlink(missing_ok=True)


def _private_temp(path: Path, content: bytes) -> Path:
    temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
    return temp
