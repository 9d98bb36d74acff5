"""The create endpoint through an in-process relay against the sandbox upstream process."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx
import pytest
from conftest import Relay, Sandbox, every_row_as_text, free_port, run_sql
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.sessions import session_hash

CREATE = {"prompt": "A drone shot of surfers riding sunrise waves", "model": "sora-2", "seconds": "8", "size": "1280x720"}

# Admission, budgets and records must hold on either database.
BACKENDS = ("sqlite", "postgresql")


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def tokens_seen(sandbox: Sandbox) -> list[str]:
    return [r["token"] for r in sandbox.requests()]


def assert_envelope(response: Any, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    if code is not None:
        assert error["code"] == code
    assert response.headers["x-request-id"].startswith("req_")
    return error  # type: ignore[no-any-return]


def outcomes(relay: Relay) -> list[dict[str, Any]]:
    relay.flush()
    return list(reversed(relay.state.store.list_outcomes(limit=1000)))


def metric_value(relay: Relay, sample: str) -> float:
    for line in relay.metrics().splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- forwarding --------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/openai/v1/videos", "/openai/videos"])
def test_json_create_is_forwarded_byte_exact_and_answered_unchanged(relay: Relay, sandbox: Sandbox, path: str) -> None:
    relay.add_account("main", sandbox.base_api())
    key = relay.issue_key()
    raw = b'{"prompt":  "A drone shot", "model":"sora-2",\n "seconds": "8", "size": "1280x720"}'
    response = relay.client.post(path, content=raw, headers={**auth(key), "Content-Type": "application/json"})
    assert response.status_code == 200, response.text
    video = response.json()
    assert video["object"] == "video" and video["status"] == "queued"
    assert response.headers["x-request-id"].startswith("req_")
    [seen] = sandbox.requests()
    assert base64.b64decode(seen["body_b64"]) == raw
    assert seen["content_type"] == "application/json"
    assert seen["path"] == "/v1/videos"
    assert seen["token"] == "tok-main"


def test_multipart_create_is_forwarded_byte_exact(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("main", sandbox.base_api())
    key = relay.issue_key()
    boundary = "----relaytest7MA4YWxkTrZu0gW"
    raw = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nA cat\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="input_reference[image_url]"\r\n\r\nhttps://example.invalid/cat.png\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="ref"; filename="x.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + bytes(range(256)) * 40
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f"multipart/form-data; boundary={boundary}"
    response = relay.client.post("/openai/v1/videos", content=raw, headers={**auth(key), "Content-Type": content_type})
    assert response.status_code == 200, response.text
    [seen] = sandbox.requests()
    assert base64.b64decode(seen["body_b64"]) == raw
    assert seen["content_type"] == content_type


def test_upstream_errors_are_returned_unchanged(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("main", sandbox.base_api())
    key = relay.issue_key()
    response = relay.client.post("/openai/v1/videos", json={"model": "sora-2"}, headers=auth(key))
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "prompt"
    sandbox.fault(status=418, raw_body="I'm a teapot", content_type="text/plain", times=1)
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    assert response.status_code == 418 and response.text == "I'm a teapot"
    assert response.headers["content-type"].startswith("text/plain")
    assert relay.state.store.account("main").state == "active"


def test_header_allow_list(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("main", sandbox.base_api(), token="sk-upstream-credential")
    key = relay.issue_key()
    sent = {
        "Authorization": f"Bearer {key}",
        "User-Agent": "MyApp/1.0",
        "OAI-Device-Id": "dev-1",
        "OAI-Latency-Trace-Id": "trace-1",
        "Idempotency-Key": "idem-1",
        "OpenAI-Organization": "org-1",
        "OpenAI-Project": "proj-1",
        "Accept": "application/json",
        "Cookie": "session=secret-cookie",
        "X-Api-Key": "another-secret",
        "X-Forwarded-For": "10.0.0.1",
        "X-Stainless-Lang": "python",
        "Proxy-Authorization": "Basic Zm9vOmJhcg==",
        "Connection": "keep-alive, X-Custom",
        "X-Custom": "hop",
        "Session-Id": "sess-1",
    }
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=sent)
    assert response.status_code == 200
    [seen] = sandbox.requests()
    headers = dict(seen["headers"])
    forwarded = {
        name: headers.get(name)
        for name in (
            "user-agent",
            "oai-device-id",
            "oai-latency-trace-id",
            "idempotency-key",
            "openai-organization",
            "openai-project",
            "accept",
        )
    }
    assert forwarded == {
        "user-agent": "MyApp/1.0",
        "oai-device-id": "dev-1",
        "oai-latency-trace-id": "trace-1",
        "idempotency-key": "idem-1",
        "openai-organization": "org-1",
        "openai-project": "proj-1",
        "accept": "application/json",
    }
    assert headers["authorization"] == "Bearer sk-upstream-credential"
    names = {name for name, _ in seen["headers"]}
    allowed = set(forwarded) | {"authorization", "content-type", "content-length", "host", "accept-encoding", "connection"}
    assert names <= allowed, names - allowed
    assert key not in json.dumps(seen)


def test_no_invented_headers(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("main", sandbox.base_api())
    key = relay.issue_key()
    # A bare client: no user-agent, no accept, no device id. None may appear upstream.
    request = relay.client.build_request("POST", "/openai/v1/videos", json=CREATE, headers=auth(key))
    for name in ("user-agent", "accept", "accept-encoding"):
        del request.headers[name]
    response = relay.client.send(request)
    assert response.status_code == 200
    names = {name for name, _ in sandbox.requests()[0]["headers"]}
    assert not names & {"user-agent", "oai-device-id", "accept", "cookie", "x-api-key"}


def test_cookies_set_by_an_upstream_never_travel_back(relay: Relay, sandbox: Sandbox) -> None:
    """The HTTP client must keep no cookie jar: the next request may be another account's."""
    # By host name: cookie jars ignore cookies from bare IP addresses, which would hide a jar.
    relay.add_account("main", sandbox.base_api().replace("127.0.0.1", "localhost"))
    key = relay.issue_key()
    sandbox.fault(headers={"set-cookie": "upstream-session=abc123; Path=/"}, times=1)
    for _ in range(2):
        assert relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)).status_code == 200
    later = sandbox.requests()[1]
    assert "cookie" not in {name for name, _ in later["headers"]}


def test_forwarded_header_bytes_arrive_unchanged_or_are_refused(relay_process: Any, sandbox: Sandbox) -> None:
    """Over a real socket (the in-process test client re-encodes header values on its own)."""
    relay = relay_process()
    relay.add_accounts(sandbox, "main")
    key = relay.issue_key("bytes")
    url = f"{relay.url}/openai/v1/videos"

    def create(user_agent: bytes) -> httpx.Response:
        return httpx.post(url, json=CREATE, headers=[(b"authorization", f"Bearer {key}".encode()), (b"user-agent", user_agent)])

    utf8 = "Caf\u00e9-\u65e5\u672c/1.0".encode("utf-8")
    response = create(utf8)
    assert response.status_code == 200, response.text
    [seen] = sandbox.requests()
    # The sandbox records header bytes as Latin-1: byte for byte what arrived.
    assert dict(seen["headers"])["user-agent"].encode("latin-1") == utf8
    # Bytes that are not UTF-8 cannot be written unchanged by the upstream client: a clear 400,
    # and nothing reaches the upstream.
    assert_envelope(create(b"Caf\xe9/1.0"), 400, "invalid_request_headers")
    assert len(sandbox.requests()) == 1


# -- keys --------------------------------------------------------------------------------------


def test_key_checks(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("main", sandbox.base_api())
    good = relay.issue_key("good")
    via_all = relay.issue_key("root", ("all",))
    expired = relay.issue_key("old", expires_at=time.time() - 1)
    revoked = relay.issue_key("gone")
    relay.state.store.revoke_key("gone", time.time())
    relay.state.reload()

    url = "/openai/v1/videos"
    assert_envelope(relay.client.post(url, json=CREATE), 401, "invalid_api_key")
    assert_envelope(relay.client.post(url, json=CREATE, headers=auth("rk-0123456789abcdef-nope")), 401)
    assert_envelope(relay.client.post(url, json=CREATE, headers=auth("not-a-relay-key")), 401)
    assert "expired" in assert_envelope(relay.client.post(url, json=CREATE, headers=auth(expired)), 401)["message"]
    assert "revoked" in assert_envelope(relay.client.post(url, json=CREATE, headers=auth(revoked)), 401)["message"]
    assert relay.client.post(url, json=CREATE, headers=auth(good)).status_code == 200
    assert relay.client.post(url, json=CREATE, headers={"x-api-key": good}).status_code == 200
    assert relay.client.post(url, json=CREATE, headers=auth(via_all)).status_code == 200
    # Nothing refused ever reached the upstream.
    assert len(sandbox.requests()) == 3
    for reason, count in (("missing", 1), ("unknown", 1), ("malformed", 1), ("expired", 1), ("revoked", 1)):
        assert metric_value(relay, f'relay_auth_failures_total{{reason="{reason}"}}') == count


def test_key_without_permission_is_403(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("main", sandbox.base_api())
    record = relay.issue_key("limited")
    # Reserved for later services: grant a key only a service this route is not.
    run_sql(relay.state.store, "UPDATE keys SET permissions = '[\"anthropic\"]' WHERE name = 'limited'")
    relay.state.keys.clear()
    error = assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(record)), 403)
    assert error["type"] == "permission_error"
    assert sandbox.requests() == []


# -- scheduling ----------------------------------------------------------------------------------


def test_priority_then_lru_across_requests(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api(), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=1)
    relay.add_account("c", sandbox.base_api(), priority=5)
    key = relay.issue_key()
    for _ in range(4):
        assert relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)).status_code == 200
    assert tokens_seen(sandbox) == ["tok-a", "tok-b", "tok-a", "tok-b"]


def test_no_account_is_503(relay: Relay, sandbox: Sandbox) -> None:
    key = relay.issue_key()
    error = assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)), 503, "no_upstream_account")
    assert "No upstream account" in error["message"]
    relay.add_account("a", sandbox.base_api())
    relay.state.store.set_account_state("a", "rate_limited", now=time.time(), until=time.time() + 30)
    relay.state.reload()
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    assert_envelope(response, 503)
    assert 1 <= int(response.headers["retry-after"]) <= 30


# -- sticky sessions -----------------------------------------------------------------------------


def multipart_create(session: str) -> tuple[bytes, str]:
    boundary = "b0undary"
    raw = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nA cat\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="session_id"\r\n\r\n{session}\r\n--{boundary}--\r\n'
    ).encode()
    return raw, f"multipart/form-data; boundary={boundary}"


@pytest.mark.parametrize("source", ["json", "multipart", "Session-Id", "X-Session-Id", "session_id"])
def test_sticky_session_sources(relay: Relay, sandbox: Sandbox, source: str) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()

    def send(session: str | None) -> None:
        headers = auth(key)
        if session is None:
            response = relay.client.post("/openai/v1/videos", json=CREATE, headers=headers)
        elif source == "json":
            response = relay.client.post("/openai/v1/videos", json={**CREATE, "session_id": session}, headers=headers)
        elif source == "multipart":
            raw, content_type = multipart_create(session)
            response = relay.client.post("/openai/v1/videos", content=raw, headers={**headers, "Content-Type": content_type})
        else:
            response = relay.client.post("/openai/v1/videos", json=CREATE, headers={**headers, source: session})
        assert response.status_code == 200, response.text

    send("conversation-1")  # -> a (LRU), mapped
    send(None)  # -> b
    send(None)  # -> a
    send("conversation-1")  # LRU says b, the session says a
    send("conversation-1")
    assert tokens_seen(sandbox) == ["tok-a", "tok-b", "tok-a", "tok-a", "tok-a"]
    # Stored hashed only.
    relay.flush()
    dump = every_row_as_text(relay.state.store)
    assert "conversation-1" not in dump


@pytest.mark.parametrize("preset", ["rate_limited", "unauthorized", "payment_required"])
def test_sticky_mapping_evicted_when_account_fails(relay: Relay, sandbox: Sandbox, preset: str) -> None:
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Session-Id": "s-1"}
    assert relay.client.post("/openai/v1/videos", json=CREATE, headers=headers).status_code == 200
    sandbox.fault(preset=preset, token="tok-a", times=1)
    # The failure moves this request to b (failover) and drops a's session mappings; the session
    # follows the account that served it.
    assert relay.client.post("/openai/v1/videos", json=CREATE, headers=headers).status_code == 200
    assert relay.state.store.session_account(session_hash("s-1"), time.time()) == "b"
    assert relay.client.post("/openai/v1/videos", json=CREATE, headers=headers).status_code == 200
    assert relay.client.post("/openai/v1/videos", json=CREATE, headers=headers).status_code == 200
    assert tokens_seen(sandbox) == ["tok-a", "tok-a", "tok-b", "tok-b", "tok-b"]
    state = "rate_limited" if preset == "rate_limited" else "unauthorized"
    assert metric_value(relay, f'relay_sticky_evictions_total{{reason="{state}"}}') == 1


def test_a_session_stays_on_the_account_a_failover_reached(relay: Relay, sandbox: Sandbox) -> None:
    """With three accounts, the create after a failover went to the least recently used one:
    the session's work was split between two accounts."""
    relay.add_account("first", sandbox.base_api(), token="tok-first", priority=20)
    relay.add_account("b", sandbox.base_api(), token="tok-b")
    relay.add_account("c", sandbox.base_api(), token="tok-c")
    key = relay.issue_key()
    headers = {**auth(key), "Session-Id": "s-split"}
    sandbox.fault(preset="rate_limited", token="tok-first", times=1)
    for _ in range(4):
        assert relay.client.post("/openai/v1/videos", json=CREATE, headers=headers).status_code == 200
    seen = tokens_seen(sandbox)
    assert seen[0] == "tok-first" and len(set(seen[1:])) == 1, seen


def test_sticky_ttl(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(sticky_ttl_seconds=1.0)
    relay.add_account("a", sandbox.base_api())
    relay.add_account("b", sandbox.base_api())
    key = relay.issue_key()
    headers = {**auth(key), "Session-Id": "short"}
    relay.client.post("/openai/v1/videos", json=CREATE, headers=headers)  # a, mapped for 1 s
    relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))  # b
    relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))  # a
    time.sleep(1.1)
    relay.client.post("/openai/v1/videos", json=CREATE, headers=headers)  # mapping expired: LRU -> b
    assert tokens_seen(sandbox) == ["tok-a", "tok-b", "tok-a", "tok-b"]


# -- outcomes ------------------------------------------------------------------------------------


def test_429_cooldown_from_each_hint_source(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(max_failover=0)  # one attempt per request, so each 429 reaches the client
    key = relay.issue_key()
    cases = [
        ("body", {"preset": "rate_limited", "resets_in_seconds": 77}, 77),
        ("error-nested", {"status": 429, "body": {"error": {"message": "x", "resets_in_seconds": 66}}}, 66),
        ("retry-after", {"status": 429, "body": {"error": {"message": "x"}}, "headers": {"retry-after": "55"}}, 55),
        ("reset-requests", {"status": 429, "body": {"error": {"message": "x"}}, "headers": {"x-ratelimit-reset-requests": "1m4s"}}, 64),
        ("default", {"status": 429, "body": {"error": {"message": "x"}}}, 60),
    ]
    for name, rule, _ in cases:
        relay.add_account(name, sandbox.base_api())
        sandbox.fault(**rule, token=f"tok-{name}", times=1)
    # Same priority, never used: the scheduler takes them in name order.
    for name, _, expected in sorted(cases):
        before = time.time()
        response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
        assert response.status_code == 429
        account = relay.state.store.account(name)
        assert account.state == "rate_limited", name
        assert account.state_until is not None
        assert expected - 1 <= account.state_until - before <= expected + 1, name
    body = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    assert_envelope(body, 503)


def test_429_payload_passed_through_and_cooldown_expires(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="rate_limited", resets_in_seconds=1, times=1, headers={"retry-after": "1"})
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    assert response.status_code == 429
    assert response.json()["error"]["code"] == "rate_limit_exceeded"
    assert response.headers["retry-after"] == "1"
    assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)), 503)
    time.sleep(1.1)
    assert relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)).status_code == 200


def test_unauthorized_stays_until_reset(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="unauthorized", times=1)
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    # Not the upstream's 401, which would tell the caller that their relay key is wrong.
    assert_envelope(response, 503)
    assert response.json()["error"]["code"] == "upstream_account_unauthorized"
    assert "tok-" not in response.text
    account = relay.state.store.account("a")
    assert account.state == "unauthorized" and account.state_until is None
    assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)), 503)
    assert 'relay_account_state{account="a",state="unauthorized"} 1.0' in relay.metrics()


def test_server_error_returned_and_account_stays_active(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="server_error", times=1)
    response = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    assert response.status_code == 500
    assert "error" in response.json()
    assert relay.state.store.account("a").state == "active"
    assert [o["error_class"] for o in outcomes(relay)] == ["server_error"]


def test_connection_refused_is_502(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("dead", f"http://127.0.0.1:{free_port()}/v1")
    key = relay.issue_key()
    assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)), 502, "upstream_unreachable")
    [row] = outcomes(relay)
    assert row["account"] == "dead" and row["error_class"] == "connection_error" and row["upstream_status"] is None


def test_timeout_is_504(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(read_timeout_seconds=0.3)
    relay.add_account("slow", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(preset="slow", delay_seconds=2, times=1)
    assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)), 504, "upstream_timeout")
    [row] = outcomes(relay)
    assert row["error_class"] == "timeout"


def test_outcome_rows_and_metrics(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key("alice")
    ok = relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    sandbox.fault(preset="payment_required", times=1)
    relay.add_account("b", sandbox.base_api())
    relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key))
    rows = outcomes(relay)
    # b (least recently used) answers 402; the create fails over to a. Every attempt is a row.
    assert [(r["account"], r["key_name"], r["route"], r["upstream_status"], r["error_class"]) for r in rows] == [
        ("a", "alice", "videos.create", 200, "none"),
        ("b", "alice", "videos.create", 402, "payment_required"),
        ("a", "alice", "videos.create", 200, "none"),
    ]
    assert rows[0]["request_id"] == ok.headers["x-request-id"]
    assert rows[0]["latency_ms"] > 0
    text = relay.metrics()
    assert (
        'relay_upstream_requests_total{account="a",account_type="openai-responses",error_class="none",'
        'route="videos.create",status_class="2xx"} 2.0'
    ) in text
    assert 'relay_upstream_request_duration_seconds_count{account="a",route="videos.create"} 2.0' in text
    assert 'relay_account_state{account="b",state="unauthorized"} 1.0' in text
    assert 'relay_account_state{account="a",state="active"} 1.0' in text


# -- the relay's own answers ----------------------------------------------------------------------


def test_unknown_route_and_method_use_the_envelope(relay: Relay) -> None:
    assert_envelope(relay.client.get("/nope"), 404, "not_found")
    response = relay.client.get("/openai/v1/videos/extra/deep")
    assert_envelope(response, 404)
    response = relay.client.put("/openai/v1/videos", json={})
    assert_envelope(response, 405, "method_not_allowed")
    assert "POST" in response.headers["allow"]
    assert relay.client.get("/healthz").headers["x-request-id"].startswith("req_")


def test_bad_bodies(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay(max_body_bytes=1000)
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    headers = auth(key)
    assert_envelope(
        relay.client.post("/openai/v1/videos", content=b"{oops", headers={**headers, "content-type": "application/json"}),
        400,
        "invalid_json",
    )
    assert_envelope(
        relay.client.post("/openai/v1/videos", content=b"x" * 2000, headers={**headers, "content-type": "application/json"}), 413
    )
    assert_envelope(relay.client.post("/openai/v1/videos", content=b"--x", headers={**headers, "content-type": "multipart/form-data"}), 400)
    assert sandbox.requests() == []


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.binary(max_size=400) | st.text(max_size=200).map(str.encode),
    content_type=st.sampled_from(
        [
            "application/json",
            "multipart/form-data; boundary=zz",
            "multipart/form-data",
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/json; charset=latin-1",
        ]
    ),
    session=st.text(max_size=40).filter(lambda s: all(32 <= ord(c) < 127 for c in s)),
)
def test_arbitrary_bodies_never_get_a_relay_500(relay: Relay, sandbox: Sandbox, body: bytes, content_type: str, session: str) -> None:
    if not relay.state.pool.all():
        relay.add_account("a", sandbox.base_api())
    key = relay.issue_key(f"k{time.perf_counter_ns()}")
    response = relay.client.post(
        "/openai/v1/videos", content=body, headers={**auth(key), "content-type": content_type, "session-id": session}
    )
    assert response.status_code < 500, response.text
    assert response.headers["x-request-id"]


def test_non_ascii_header_bytes_are_forwarded_exactly(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    response = relay.client.post(
        "/openai/v1/videos",
        json=CREATE,
        headers={"authorization": f"Bearer {key}", "user-agent": b"caf\xe9 \xff/1", "session-id": b"s\xe9ssion"},
    )
    assert response.status_code == 200, response.text
    seen = dict(sandbox.requests()[0]["headers"])
    # The test client re-encodes header bytes as UTF-8 on the way in; the relay passes on what arrived.
    assert seen["user-agent"].encode("latin-1") == "caf\xe9 \xff/1".encode()


def test_reset_mid_answer_is_502(relay: Relay, sandbox: Sandbox) -> None:
    relay.add_account("a", sandbox.base_api())
    key = relay.issue_key()
    sandbox.fault(action="reset", times=1)
    assert_envelope(relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(key)), 502, "upstream_unreachable")
    assert [o["error_class"] for o in outcomes(relay)] == ["connection_error"]
    assert relay.state.store.account("a").state == "active"


def test_one_process_exports_the_documented_series_only(relay: Relay, sandbox: Sandbox) -> None:
    """prometheus_client's `<name>_created` gauges showed with one worker only, under names like
    relay_videos_created that read as a count of videos."""
    relay.add_account("a", sandbox.base_api())
    relay.client.post("/openai/v1/videos", json=CREATE, headers=auth(relay.issue_key("alice")))
    exposition = relay.metrics()
    assert "relay_requests_total{" in exposition
    assert [line for line in exposition.splitlines() if "_created" in line] == []


def test_metrics_token(make_relay: Any) -> None:
    relay = make_relay(metrics_token="scrape-me")
    assert_envelope(relay.client.get("/metrics"), 401, "invalid_metrics_token")
    assert_envelope(relay.client.get("/metrics", headers={"Authorization": "Bearer wrong"}), 401)
    allowed = relay.client.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
    assert allowed.status_code == 200 and "relay_upstream_requests_total" in allowed.text
