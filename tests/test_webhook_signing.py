"""Webhook signatures as the official OpenAI SDK verifies them (Standard Webhooks)."""

from __future__ import annotations

import base64
import json
import time

import openai
import pytest

from relay.webhooks.signing import USER_AGENT, headers_for, new_secret, secret_hint, sign, signature_header

BODY = json.dumps(
    {"id": "evt_" + "a" * 32, "object": "event", "created_at": 1700000000, "type": "video.completed", "data": {"id": "video_1"}},
    separators=(",", ":"),
).encode()
WEBHOOK_ID = "wh_" + "b" * 32


def verify(body: bytes, headers: dict[str, str], secret: str) -> None:
    openai.OpenAI(api_key="x").webhooks.verify_signature(body, headers, secret=secret)


def test_a_new_secret_is_whsec_and_32_random_bytes() -> None:
    first, second = new_secret(), new_secret()
    assert first.startswith("whsec_") and first != second
    assert len(base64.b64decode(first[len("whsec_") :], validate=True)) == 32


def test_the_hint_shows_only_the_last_four_characters() -> None:
    secret = new_secret()
    assert secret_hint(secret) == "whsec_..." + secret[-4:]
    assert secret[len("whsec_") : -4] not in secret_hint(secret)


def test_the_standard_webhooks_test_vector() -> None:
    # From the Standard Webhooks specification's reference libraries.
    signature = sign("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert signature == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_the_sdk_accepts_a_signed_event_and_unwraps_it() -> None:
    secret = new_secret()
    headers = headers_for([secret], WEBHOOK_ID, int(time.time()), BODY)
    verify(BODY, headers, secret)
    event = openai.OpenAI(api_key="x").webhooks.unwrap(BODY, headers, secret=secret)
    # The SDK's typed union has no video events yet; the parsed object carries them all the same.
    assert event.to_dict() == json.loads(BODY)


def test_the_headers_are_the_standard_ones() -> None:
    headers = headers_for([new_secret()], WEBHOOK_ID, 1700000123, BODY)
    assert set(headers) == {"webhook-id", "webhook-timestamp", "webhook-signature", "content-type", "user-agent"}
    assert headers["webhook-id"] == WEBHOOK_ID and headers["webhook-timestamp"] == "1700000123"
    assert headers["content-type"] == "application/json" and headers["user-agent"] == USER_AGENT


def test_during_a_rotation_both_secrets_verify_and_the_new_one_comes_first() -> None:
    new, old = new_secret(), new_secret()
    timestamp = int(time.time())
    headers = headers_for([new, old], WEBHOOK_ID, timestamp, BODY)
    assert headers["webhook-signature"].split(" ") == [sign(new, WEBHOOK_ID, timestamp, BODY), sign(old, WEBHOOK_ID, timestamp, BODY)]
    verify(BODY, headers, new)
    verify(BODY, headers, old)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(BODY, headers, new_secret())


def test_a_changed_body_id_or_timestamp_or_a_wrong_secret_is_refused() -> None:
    secret = new_secret()
    timestamp = int(time.time())
    headers = headers_for([secret], WEBHOOK_ID, timestamp, BODY)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(BODY.replace(b"video_1", b"video_2"), headers, secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(BODY, {**headers, "webhook-id": "wh_" + "c" * 32}, secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(BODY, {**headers, "webhook-timestamp": str(timestamp - 1)}, secret)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        verify(BODY, headers, new_secret())


def test_a_secret_that_is_not_whsec_base64_is_refused() -> None:
    with pytest.raises(ValueError):
        sign("not-a-secret", WEBHOOK_ID, 1, BODY)
    with pytest.raises(ValueError):
        sign("whsec_***", WEBHOOK_ID, 1, BODY)
    with pytest.raises(ValueError):
        signature_header([], WEBHOOK_ID, 1, BODY)
