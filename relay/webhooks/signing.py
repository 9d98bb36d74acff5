"""Webhook secrets and signatures, the Standard Webhooks way (what the OpenAI SDK's
`client.webhooks.verify_signature` / `unwrap` check).

A secret is `whsec_` + base64 of 32 random bytes; the HMAC key is those bytes. Each attempt is
signed over f"{webhook_id}.{timestamp}.{body}", so a receiver can refuse a replayed or altered
delivery. During a secret rotation's grace period every attempt carries one signature per secret
(newest first), so a receiver holding either secret accepts it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random_source
from collections.abc import Sequence

SECRET_PREFIX = "whsec_"
USER_AGENT = "video-relay-webhooks/1"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(random_source.token_bytes(SECRET_BYTES)).decode()


def secret_hint(secret: str) -> str:
    """What an operator or key holder sees of a secret after its one-time display."""
    return f"{SECRET_PREFIX}...{secret[-4:]}"


def _key(secret: str) -> bytes:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        return base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError("a webhook secret is whsec_ followed by base64") from None


def sign(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    # The body is signed as sent, byte for byte: receivers verify the raw bytes they got.
    signed = f"{webhook_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> str:
    if not secrets:
        raise ValueError("a webhook is signed with at least one secret")
    return " ".join(sign(secret, webhook_id, timestamp, body) for secret in secrets)


def headers_for(secrets: Sequence[str], webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    return {
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, webhook_id, timestamp, body),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }
