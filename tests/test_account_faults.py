"""An account no request can be built for is the account's fault, never the client's; and no
piece of an account's credential reaches a client or a log (issue 18), on real relay processes."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import RelayProcess, Sandbox
from test_relay import CREATE, assert_envelope, auth

from relay.config import Settings
from relay.crypto import SecretBox
from relay.state import open_store
from relay.store import Store
from relay.store.location import parse_location
from relay.upstream import without_credential

PASSWORD = "hunter2-pw"
BAD_BASE_API = f"http://user:{PASSWORD}@127.0.0.1:8090/v1"


def store_of(relay: RelayProcess) -> tuple[Store, SecretBox]:
    return open_store(Settings(database=parse_location(Path(relay.env["RELAY_DATABASE"])), secret_key=relay.env["RELAY_SECRET_KEY"]))


def add_legacy(relay: RelayProcess, name: str, base_api: str, *, priority: int, proxy: str | None = None) -> None:
    """An account as an older relayctl could store it: straight into the table, unchecked."""
    store, box = store_of(relay)
    store.insert_account(
        name=name,
        type="openai-responses",
        credential_encrypted=box.encrypt(f"tok-{name}"),
        base_api=base_api,
        priority=priority,
        now=time.time(),
    )
    if proxy:
        store.set_account_proxy(name, box.encrypt(proxy))


def eventually(check: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def outcome_rows(relay: RelayProcess) -> list[dict[str, Any]]:
    done = relay.relayctl("outcomes", "--json", "--limit", "100")
    assert done.returncode == 0, done.stderr
    return list(reversed(json.loads(done.stdout)))


def create(relay: RelayProcess, key: str) -> httpx.Response:
    # Wait for the relay to see the accounts just written (it polls every 0.2 s in these tests).
    time.sleep(0.6)
    return httpx.post(f"{relay.url}/openai/v1/videos", json=CREATE, headers=auth(key), timeout=30)


def test_an_account_with_a_bad_base_api_fails_over_and_is_recorded_as_its_fault(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    relay.add_accounts(sandbox, "good1", "good2")
    key = relay.issue_key("alice")
    # Lower numbers go first: every create meets the broken accounts before a good one.
    add_legacy(relay, "userinfo", BAD_BASE_API, priority=1)
    add_legacy(relay, "port", "http://127.0.0.1:99999/v1", priority=2)
    answers = [create(relay, key) for _ in range(3)]
    assert [answer.status_code for answer in answers] == [200, 200, 200], [a.text for a in answers]
    assert len(sandbox.requests()) == 3

    def recorded() -> list[dict[str, Any]]:
        rows = outcome_rows(relay)
        assert len([row for row in rows if row["error_class"] == "none"]) == 3
        return rows

    rows = eventually(recorded)
    broken = [row for row in rows if row["error_class"] == "config_error"]
    assert {row["account"] for row in broken} == {"userinfo", "port"}
    assert all(row["status"] is None for row in broken)
    log = relay.log()
    assert "error_class=config_error" in log and "account=userinfo" in log and "account=port" in log
    assert "must not hold a user name or password" in log and "port that is not a number from 1 to 65535" in log
    assert PASSWORD not in log and "invalid_request_headers" not in log


def test_when_every_account_is_misconfigured_the_client_gets_a_503_not_a_400(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    key = relay.issue_key("alice")
    add_legacy(relay, "userinfo", BAD_BASE_API, priority=1)
    add_legacy(relay, "proxied", sandbox.base_api(), priority=2, proxy=f"http://u:{PASSWORD}@[::1")
    response = create(relay, key)
    assert_envelope(response, 503, "upstream_account_misconfigured")
    assert response.headers["x-should-retry"] == "false" and PASSWORD not in response.text
    assert sandbox.requests() == []
    rows = eventually(lambda: _two(outcome_rows(relay)))
    assert {(row["account"], row["error_class"]) for row in rows} == {("userinfo", "config_error"), ("proxied", "config_error")}
    assert "the proxy has an IPv6 host" in relay.log() and PASSWORD not in relay.log()


def _two(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    assert len(rows) == 2
    return rows


def test_work_on_a_video_whose_account_became_misconfigured_is_a_503(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process()
    relay.add_accounts(sandbox, "main")
    key = relay.issue_key("alice")
    video = create(relay, key).json()
    store, _ = store_of(relay)
    store.set_account_base_api("main", "http://127.0.0.1:99999/v1")  # as a database from before the checks may hold
    time.sleep(0.6)
    response = httpx.get(f"{relay.url}/openai/v1/videos/{video['id']}", headers=auth(key), timeout=30)
    assert_envelope(response, 503, "upstream_account_misconfigured")
    assert len(sandbox.requests()) == 1


SECRET = "tok-a-SECRET-0123456789abcdef"


def test_pieces_of_the_credential_never_reach_the_client_the_logs_or_the_listings(relay_process: Any, sandbox: Sandbox) -> None:
    relay = relay_process(extra_env={"RELAY_MAX_FAILOVER": "0"})
    done = relay.relayctl(
        "accounts", "add", "a", "--type", "openai-responses", "--token-stdin", "--base-api", sandbox.base_api(), input=f"{SECRET}\n"
    )
    assert done.returncode == 0, done.stderr
    key = relay.issue_key("alice")
    message = f"Incorrect API key provided: {SECRET[:9]}***. You sent {SECRET[:12]}****{SECRET[-4:]} (see {SECRET[6:20]})."
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "rate_limit_exceeded"}}
    sandbox.fault(status=429, body=body, headers={"x-ratelimit-limit-requests": f"{SECRET[:10]}...", "retry-after": "1"}, times=1)
    response = create(relay, key)
    assert response.status_code == 429
    error = response.json()["error"]
    assert error["message"] == "Incorrect API key provided: [redacted]. You sent [redacted] (see [redacted])."
    assert response.headers["x-ratelimit-limit-requests"] == "[redacted]"
    shown = relay.relayctl("accounts", "show", "a", "--json")
    cooldowns = relay.relayctl("cooldowns", "--json")
    for text in (response.text, str(response.headers), relay.log(), shown.stdout, cooldowns.stdout):
        for start in range(len(SECRET) - 8):
            assert SECRET[start : start + 9] not in text, text
    assert json.loads(shown.stdout)["last_error"].startswith("Incorrect API key provided: [redacted]")


# -- the redaction rule itself (relay/upstream.py, CREDENTIAL_FRAGMENT_CHARS) ---------------------


@pytest.mark.parametrize(
    ("text", "redacted"),
    [
        (f"key {SECRET[:9]}*** is wrong", "key [redacted] is wrong"),
        (f"key {SECRET} is wrong", "key [redacted] is wrong"),
        (f"key {SECRET[:8]}\u2026{SECRET[-3:]}!", "key [redacted]!"),
        (f"key ****{SECRET[-8:]}", "key [redacted]"),
        (f"{SECRET[3:11]}", "[redacted]"),
        # Seven characters of it are not enough to tell it from chance; a common prefix stays.
        (f"key {SECRET[:7]}***", f"key {SECRET[:7]}***"),
        ("video_123 is queued", "video_123 is queued"),
    ],
)
def test_the_redaction_rule(text: str, redacted: str) -> None:
    assert without_credential(text, SECRET) == redacted
    assert without_credential(text.encode(), SECRET) == redacted.encode()


def test_a_short_credential_is_redacted_whole_only() -> None:
    assert without_credential("Bearer tok-a, tok-", "tok-a") == "Bearer [redacted], tok-"


def test_no_run_of_the_credential_survives() -> None:
    """Brute force against the rule, over a small alphabet where partial matches abound."""
    import random

    generator = random.Random(18)
    for _ in range(3000):
        secret = "".join(generator.choice("ab-") for _ in range(generator.randint(8, 24)))
        text = "".join(generator.choice("ab-c*") for _ in range(generator.randint(0, 60)))
        if generator.random() < 0.5:
            start = generator.randint(0, len(secret) - 8)
            piece = secret[start : generator.randint(start + 8, len(secret))]
            at = generator.randint(0, len(text))
            text = text[:at] + piece + text[at:]
        cleaned = without_credential(text, secret)
        runs = {secret[i : i + 8] for i in range(len(secret) - 7)}
        assert not any(run in cleaned for run in runs), (secret, text, cleaned)
        if not any(run in text for run in runs):
            assert cleaned == text
