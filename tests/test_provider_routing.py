"""Mixed pools through the providers seam: which account each kind of work may reach, failover
between providers, the relay's own fields on translated creates, and what a Veo job books."""

from __future__ import annotations

import time

import pytest
from conftest import Relay, Sandbox
from test_gemini import VEO_CREATE, veo_account
from test_relay import CREATE, assert_envelope, auth

from relay.outcomes import google_daily_quota_reset

V = "/openai/v1/videos"


def paths(sandbox: Sandbox) -> list[str]:
    return [request["path"] for request in sandbox.requests()]


def test_characters_never_go_to_an_account_whose_type_has_none(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox, priority=1)  # first in line, but Veo has no characters
    relay.add_account("sora", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    created = relay.client.post(
        f"{V}/characters", files={"video": ("c.mp4", b"\x00" * 64, "video/mp4")}, data={"name": "Mo"}, headers=auth(key)
    )
    assert created.status_code == 200, created.text
    assert paths(sandbox) == ["/v1/videos/characters"]


def test_a_pool_of_veo_accounts_only_refuses_characters_as_the_clients_400(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    refused = relay.client.post(
        f"{V}/characters", files={"video": ("c.mp4", b"\x00" * 64, "video/mp4")}, data={"name": "Mo"}, headers=auth(key)
    )
    error = assert_envelope(refused, 400, "unsupported_for_account_type")
    # Not retryable, and it names what the accounts do serve.
    assert "gemini" in error["message"] and "extensions" in error["message"] and "retry-after" not in refused.headers
    assert sandbox.requests() == []


def test_an_edit_of_an_upload_for_a_model_only_veo_serves_is_the_clients_400(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("sora", sandbox.base_api())
    veo_account(relay, sandbox)
    key = relay.issue_key()
    upload = {"video": ("v.mp4", b"\x00" * 64, "video/mp4")}
    refused = relay.client.post(f"{V}/edits", files=upload, data={"prompt": "p", "model": VEO_CREATE["model"]}, headers=auth(key))
    error = assert_envelope(refused, 400, "unsupported_for_account_type")
    assert error["message"].startswith("Edit requests are not supported on gemini accounts")
    assert sandbox.requests() == []
    # The contract's own models still reach the account that edits.
    edited = relay.client.post(f"{V}/edits", files=upload, data={"prompt": "p", "model": "sora-2"}, headers=auth(key))
    assert edited.status_code == 200, edited.text
    assert paths(sandbox) == ["/v1/videos/edits"]


@pytest.mark.parametrize("model", ["models/veo-3.1-generate-preview", "veo-3.1-generate-preview"])
def test_googles_models_spelling_meets_the_keys_allow_list_and_its_price(relay: Relay, sandbox: Sandbox, model: str) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key(limits={"models": ["veo-3.1-generate-preview"], "usd_per_day": 10.0})
    created = relay.client.post(V, json={"prompt": "p", "model": model, "size": "1280x720", "seconds": "8"}, headers=auth(key))
    assert created.status_code == 200, created.text
    (video,) = relay.state.store.list_videos("alice", after=None, limit=10, order="desc")[0]
    assert video.usd == pytest.approx(0.40 * 8)


def test_a_429_fails_over_to_another_provider_serving_the_model_with_a_request_in_its_own_words(relay: Relay, sandbox: Sandbox) -> None:
    # A gateway that serves Veo under the OpenAI contract, then a Gemini key for the same model.
    relay.add_account("gateway", sandbox.base_api(), priority=1)
    relay.state.store.set_account_models("gateway", (VEO_CREATE["model"],))
    veo_account(relay, sandbox, priority=2)
    relay.state.reload()
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=30, provider="openai", times=1)
    created = relay.client.post(V, json=VEO_CREATE, headers=auth(key))
    assert created.status_code == 200, created.text
    assert paths(sandbox) == ["/v1/videos", f"/v1beta/models/{VEO_CREATE['model']}:predictLongRunning"]
    retrieved = relay.client.get(f"{V}/{created.json()['id']}", headers=auth(key))
    assert retrieved.status_code == 200 and retrieved.json()["status"] in ("in_progress", "completed")


def test_a_session_id_field_stays_with_the_relay_on_a_veo_create(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox, "one", priority=1)
    veo_account(relay, sandbox, "two", priority=1)
    key = relay.issue_key()
    tokens = []
    for _ in range(3):
        created = relay.client.post(V, json={**VEO_CREATE, "session_id": "chat-42"}, headers=auth(key))
        assert created.status_code == 200, created.text
        request = sandbox.requests()[-1]
        assert "session_id" not in str(request.get("body", ""))
        tokens.append(request["token"])
    assert len(set(tokens)) == 1  # the session kept its account


@pytest.mark.parametrize("model", ["models/veo-3.0-generate-001", "veo-3.0-generate-001"])
def test_googles_models_spelling_reaches_the_veo_account(relay: Relay, sandbox: Sandbox, model: str) -> None:
    relay.add_account("sora", sandbox.base_api(), priority=1)
    veo_account(relay, sandbox, priority=2)
    key = relay.issue_key()
    created = relay.client.post(V, json={**VEO_CREATE, "model": model}, headers=auth(key))
    assert created.status_code == 200, created.text
    assert paths(sandbox) == ["/v1beta/models/veo-3.0-generate-001:predictLongRunning"]


def test_a_veo_create_without_seconds_books_veos_eight(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    # veo-3.1-generate-preview is $0.40 a second: 4 s ($1.60) would fit $2, Veo's 8 s ($3.20) does not.
    key = relay.issue_key(limits={"usd_per_day": 2.0})
    refused = relay.client.post(V, json={"prompt": "p", "model": "veo-3.1-generate-preview", "size": "1280x720"}, headers=auth(key))
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "relay_budget_exceeded", refused.text
    assert sandbox.requests() == []
    # The contract's own models keep the contract's default of 4 s.
    relay.add_account("sora", sandbox.base_api())
    sora = relay.client.post(V, json={k: v for k, v in CREATE.items() if k != "seconds"}, headers=auth(key))
    assert sora.status_code == 200, sora.text


def test_a_spent_daily_quota_rests_the_account_until_googles_day_ends(relay: Relay, sandbox: Sandbox) -> None:
    veo_account(relay, sandbox)
    key = relay.issue_key()
    sandbox.fault(preset="insufficient_quota", provider="gemini", times=1)
    before = time.time()
    assert_envelope(relay.client.post(V, json=VEO_CREATE, headers=auth(key)), 429, "insufficient_quota")
    account = relay.state.store.account("veo")
    assert account.state == "rate_limited" and account.state_reason == "upstream 429 (cooldown from daily_quota)"
    assert account.state_until is not None
    # Google's day ends at 08:00 UTC (midnight Pacific standard time), never more than a day away.
    assert before < account.state_until <= before + 86400 + 5
    assert time.gmtime(account.state_until).tm_hour == 8 or time.gmtime(account.state_until - 1).tm_hour == 7


def test_googles_day_end_is_the_next_0800_utc() -> None:
    body = b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "details": [{"violations": [{"quotaId": "PredictRequestsPerDay"}]}]}}'
    midnight_utc = 1_764_979_200.0  # 2025-12-06 00:00 UTC
    assert google_daily_quota_reset(body, midnight_utc) == 8 * 3600
    assert google_daily_quota_reset(body, midnight_utc + 9 * 3600) == 23 * 3600
    assert google_daily_quota_reset(b'{"error": {"code": 429, "details": []}}', midnight_utc) is None
