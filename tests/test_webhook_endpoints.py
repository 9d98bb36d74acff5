"""OpenAI's webhook-endpoint API through the official SDK against a relay process: endpoints a key
creates, lists, retrieves, updates, deletes, rotates and tests; the signing secret shown in the
answers to create and rotate only; a test event signed so that the SDK's verify_signature accepts
it; each key sees only its own endpoints; and every malformed request a 400 naming its param."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import Relay, every_row_as_text, free_port, run_sql
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, given, settings, strategies as st

from relay.store import Store
from relay.webhooks.endpoints import MAX_ENDPOINTS_PER_KEY

PRIVATE_OK = {"RELAY_WEBHOOK_ALLOW_PRIVATE": "1"}


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook receiver on 127.0.0.1: records each POST and answers with `status`."""

    port: int
    status: int = 204
    extra_headers: dict[str, str] = field(default_factory=dict)
    received: list[Received] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/in"


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    state = Receiver(port=server.server_address[1])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            body = self.rfile.read(int(self.headers.get("content-length") or 0))
            state.received.append(Received(self.path, {name.lower(): value for name, value in self.headers.items()}, body))
            self.send_response(state.status)
            for name, value in state.extra_headers.items():
                self.send_header(name, value)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server.RequestHandlerClass = Handler
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()


def sdk(relay: Any, key: str) -> openai.OpenAI:
    # No SDK retries: every answer is the relay's own.
    return openai.OpenAI(base_url=f"{relay.url}/openai/v1", api_key=key, max_retries=0, timeout=30)


def raw(relay: Any, key: str, method: str, path: str, **options: Any) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", **options.pop("headers", {})}
    return httpx.request(method, f"{relay.url}/openai/v1{path}", headers=headers, timeout=30, **options)


def error_of(response: httpx.Response) -> dict[str, Any]:
    body: dict[str, Any] = response.json()["error"]
    return body


def verifies(client: openai.OpenAI, received: Received, secret: str) -> bool:
    try:
        client.webhooks.verify_signature(received.body, received.headers, secret=secret)
    except openai.InvalidWebhookSignatureError:
        return False
    return True


# -- the lifecycle ------------------------------------------------------------------------------


def test_the_sdk_creates_lists_retrieves_updates_and_deletes_an_endpoint(relay_process: Any, receiver: Receiver) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    client = sdk(relay, relay.issue_key("alice"))

    created = client.webhooks.create(name="render farm", url=receiver.url, event_types=["video.completed"])
    assert created.id.startswith("we_") and created.object == "webhook_endpoint"
    assert (created.name, created.url, created.event_types) == ("render farm", receiver.url, ["video.completed"])
    assert created.signing_secret.startswith("whsec_") and created.signing_secret_hint == f"whsec_...{created.signing_secret[-4:]}"
    assert created.updated_at == created.created_at
    extra = created.model_extra or {}
    assert (extra["status"], extra["disabled_reason"]) == ("enabled", None)

    second = client.webhooks.create(
        name="second", url=receiver.url + "?n=2", event_types=["video.failed", "video.completed", "video.failed"]
    )
    assert second.event_types == ["video.failed", "video.completed"]  # each type once, in the order given
    third = client.webhooks.create(name="third", url=receiver.url, event_types=["video.failed"])

    retrieved = client.webhooks.retrieve(created.id)
    assert retrieved.id == created.id and retrieved.signing_secret_hint == created.signing_secret_hint
    assert not hasattr(retrieved, "signing_secret")

    listed = [endpoint.id for endpoint in client.webhooks.list()]
    assert listed == [third.id, second.id, created.id]  # newest first
    first_page = client.webhooks.list(limit=2)
    assert [e.id for e in first_page.data] == [third.id, second.id] and first_page.has_more
    # The SDK follows the cursor itself.
    assert [e.id for e in client.webhooks.list(limit=1)] == listed

    renamed = client.webhooks.update(created.id, name="render farm 2", event_types=["video.completed", "video.failed"])
    assert (renamed.name, renamed.event_types, renamed.url) == ("render farm 2", ["video.completed", "video.failed"], receiver.url)
    assert renamed.updated_at is not None and renamed.updated_at >= created.created_at
    unchanged = client.webhooks.update(created.id)
    assert unchanged.updated_at == renamed.updated_at and unchanged.name == "render farm 2"

    assert client.webhooks.event_types.list().data == ["video.completed", "video.failed"]

    deleted = client.webhooks.delete(second.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (second.id, True, "webhook_endpoint.deleted")
    with pytest.raises(openai.NotFoundError) as missing:
        client.webhooks.retrieve(second.id)
    assert missing.value.code == "webhook_endpoint_not_found"
    with pytest.raises(openai.NotFoundError):
        client.webhooks.delete(second.id)
    assert [endpoint.id for endpoint in client.webhooks.list()] == [third.id, created.id]
    # Served under /openai as well as /openai/v1.
    alias = httpx.get(f"{relay.url}/openai/webhook_endpoints/{created.id}", headers={"authorization": f"Bearer {client.api_key}"})
    assert alias.status_code == 200 and alias.json()["id"] == created.id


def test_a_test_event_is_signed_so_the_sdk_verifies_it_through_a_rotation(relay_process: Any, receiver: Receiver) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    client = sdk(relay, relay.issue_key("alice"))
    endpoint = client.webhooks.create(name="hook", url=receiver.url, event_types=["video.completed", "video.failed"])

    result = client.webhooks.test(endpoint.id, event_type="video.failed")
    assert (result.object, result.webhook_endpoint_id, result.event_type, result.status_code, result.success) == (
        "webhook_endpoint.test",
        endpoint.id,
        "video.failed",
        204,
        True,
    )
    (sent,) = receiver.received
    assert sent.path == "/hooks/in"
    assert sent.headers["content-type"] == "application/json" and sent.headers["user-agent"] == "video-relay-webhooks/1"
    assert sent.headers["webhook-id"].startswith("wh_")
    assert verifies(client, sent, endpoint.signing_secret)
    assert not verifies(client, Received(sent.path, sent.headers, sent.body + b" "), endpoint.signing_secret)
    event = json.loads(sent.body)
    assert event["object"] == "event" and event["type"] == "video.failed" and event["id"].startswith("evt_")
    assert event["data"]["id"].startswith("video_")
    assert sent.body == json.dumps(event, separators=(",", ":")).encode()

    # Rotated with the grace: both secrets verify, the new one signs first.
    rotated = client.webhooks.rotate_secret(endpoint.id, keep_old_secret_active_for_24_hours=True)
    assert rotated.signing_secret != endpoint.signing_secret and rotated.signing_secret_hint == f"whsec_...{rotated.signing_secret[-4:]}"
    client.webhooks.test(endpoint.id, event_type="video.completed")
    during = receiver.received[-1]
    assert len(during.headers["webhook-signature"].split()) == 2
    assert verifies(client, during, rotated.signing_secret) and verifies(client, during, endpoint.signing_secret)
    assert json.loads(during.body)["type"] == "video.completed"

    # Rotated without it: only the newest secret signs.
    newest = client.webhooks.rotate_secret(endpoint.id)
    client.webhooks.test(endpoint.id, event_type="video.completed")
    after = receiver.received[-1]
    assert len(after.headers["webhook-signature"].split()) == 1
    assert verifies(client, after, newest.signing_secret)
    assert not verifies(client, after, rotated.signing_secret) and not verifies(client, after, endpoint.signing_secret)
    assert len(receiver.received) == 3


def test_the_endpoint_answer_is_the_test_result_and_redirects_are_not_followed(relay_process: Any, receiver: Receiver) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    client = sdk(relay, relay.issue_key("alice"))
    endpoint = client.webhooks.create(name="hook", url=receiver.url, event_types=["video.completed"])

    receiver.status = 500
    assert client.webhooks.test(endpoint.id, event_type="video.completed").status_code == 500
    receiver.status, receiver.extra_headers = 302, {"location": f"http://127.0.0.1:{receiver.port}/elsewhere"}
    assert client.webhooks.test(endpoint.id, event_type="video.completed").status_code == 302
    assert [received.path for received in receiver.received] == ["/hooks/in", "/hooks/in"]
    receiver.status, receiver.extra_headers = 410, {}
    assert client.webhooks.test(endpoint.id, event_type="video.completed").status_code == 410
    # A test changes nothing about the endpoint, whatever it answered.
    after = client.webhooks.retrieve(endpoint.id)
    assert (after.model_extra or {})["status"] == "enabled" and after.updated_at == endpoint.updated_at

    closed = client.webhooks.create(name="closed", url=f"http://127.0.0.1:{free_port()}/in", event_types=["video.completed"])
    with pytest.raises(openai.APIStatusError) as unreachable:
        client.webhooks.test(closed.id, event_type="video.completed")
    assert unreachable.value.status_code == 502 and unreachable.value.code == "webhook_endpoint_unreachable"
    assert "could not connect" in unreachable.value.message
    assert closed.signing_secret not in unreachable.value.response.text


def test_the_secret_is_shown_only_in_the_answers_to_create_and_rotate(relay_process: Any, receiver: Receiver, tmp_path: Path) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    key = relay.issue_key("alice")
    created = raw(relay, key, "POST", "/webhook_endpoints", json={"name": "hook", "url": receiver.url, "event_types": ["video.completed"]})
    assert created.status_code == 200, created.text
    endpoint_id, secret = created.json()["id"], created.json()["signing_secret"]
    rotated = raw(relay, key, "POST", f"/webhook_endpoints/{endpoint_id}/rotate_secret", json={"keep_old_secret_active_for_24_hours": True})
    new_secret = rotated.json()["signing_secret"]
    answers = [
        raw(relay, key, "GET", f"/webhook_endpoints/{endpoint_id}"),
        raw(relay, key, "GET", "/webhook_endpoints"),
        raw(relay, key, "POST", f"/webhook_endpoints/{endpoint_id}", json={"name": "renamed"}),
        raw(relay, key, "POST", f"/webhook_endpoints/{endpoint_id}/test", json={"event_type": "video.completed"}),
        raw(relay, key, "POST", f"/webhook_endpoints/{endpoint_id}", json={"url": "ftp://nope"}),
        raw(relay, key, "DELETE", f"/webhook_endpoints/{endpoint_id}"),
    ]
    for answer in answers:
        assert answer.status_code in (200, 400), answer.text
        assert 'signing_secret"' not in answer.text
        for shown in (secret, new_secret, secret[len("whsec_") :], new_secret[len("whsec_") :]):
            assert shown not in answer.text
    for shown in (secret, new_secret):
        assert shown[len("whsec_") :] not in relay.log()
    # At rest they are encrypted (the endpoint is deleted by now, but no row ever held them in the clear).
    store = Store(tmp_path / "relay.db", read_only=True)
    try:
        stored = every_row_as_text(store)
    finally:
        store.close()
    assert secret[len("whsec_") :] not in stored and new_secret[len("whsec_") :] not in stored


def test_a_key_sees_and_manages_only_its_own_endpoints(relay_process: Any, receiver: Receiver) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    alice, bob = sdk(relay, relay.issue_key("alice")), sdk(relay, relay.issue_key("bob"))
    hers = alice.webhooks.create(name="alice's", url=receiver.url, event_types=["video.completed"])
    his = bob.webhooks.create(name="bob's", url=receiver.url, event_types=["video.failed"])

    assert [e.id for e in bob.webhooks.list()] == [his.id]
    attempts = [
        lambda: bob.webhooks.retrieve(hers.id),
        lambda: bob.webhooks.update(hers.id, name="mine now"),
        lambda: bob.webhooks.rotate_secret(hers.id),
        lambda: bob.webhooks.test(hers.id, event_type="video.completed"),
        lambda: bob.webhooks.delete(hers.id),
    ]
    for attempt in attempts:
        with pytest.raises(openai.NotFoundError) as refused:
            attempt()
        assert refused.value.code == "webhook_endpoint_not_found"
    assert receiver.received == []
    assert alice.webhooks.retrieve(hers.id).name == "alice's"
    # Another key's id is no cursor either.
    with pytest.raises(openai.BadRequestError) as cursor:
        bob.webhooks.list(after=hers.id)
    assert cursor.value.param == "after"
    unauthenticated = httpx.get(f"{relay.url}/openai/v1/webhook_endpoints", headers={"authorization": "Bearer rk-nope"})
    assert unauthenticated.status_code == 401


# -- what is refused ------------------------------------------------------------------------------


def test_requests_the_relay_cannot_serve_are_400s_naming_the_param(relay_process: Any, receiver: Receiver) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    key = relay.issue_key("alice")
    client = sdk(relay, key)

    def refused(call: Any) -> openai.BadRequestError:
        with pytest.raises(openai.BadRequestError) as error:
            call()
        return error.value

    batch = refused(lambda: client.webhooks.create(name="x", url=receiver.url, event_types=["batch.completed"]))
    assert batch.param == "event_types" and "only video events (video.completed, video.failed)" in batch.message
    unknown = refused(lambda: client.webhooks.create(name="x", url=receiver.url, event_types=["video.exploded"]))  # type: ignore[list-item]
    assert unknown.param == "event_types" and "Unknown event type 'video.exploded'" in unknown.message
    assert refused(lambda: client.webhooks.create(name="x", url=receiver.url, event_types=[])).param == "event_types"
    assert refused(lambda: client.webhooks.create(name="  ", url=receiver.url, event_types=["video.failed"])).param == "name"
    assert refused(lambda: client.webhooks.create(name="n" * 257, url=receiver.url, event_types=["video.failed"])).param == "name"
    assert client.webhooks.create(name="n" * 256, url=receiver.url, event_types=["video.failed"]).name == "n" * 256
    bad_url = refused(lambda: client.webhooks.create(name="x", url="ftp://files.example/in", event_types=["video.failed"]))
    assert bad_url.param == "url" and "http(s) URL" in bad_url.message
    assert refused(lambda: client.webhooks.create(name="x", url="http://user:pw@127.0.0.1/", event_types=["video.failed"])).param == "url"
    extra = refused(lambda: client.webhooks.create(name="x", url=receiver.url, event_types=["video.failed"], extra_body={"secret": "mine"}))
    assert extra.param == "secret" and extra.code == "unknown_parameter"
    endpoint = client.webhooks.create(name="x", url=receiver.url, event_types=["video.failed"])
    assert refused(lambda: client.webhooks.test(endpoint.id, event_type="batch.failed")).param == "event_type"
    assert refused(lambda: client.webhooks.update(endpoint.id, url="not a url")).param == "url"
    assert refused(lambda: client.webhooks.list(limit=-1)).param == "limit"
    assert refused(lambda: client.webhooks.list(limit=101)).param == "limit"

    path = f"/webhook_endpoints/{endpoint.id}"
    json_headers = {"content-type": "application/json"}
    for body, param in [
        (b"{not json", None),
        (b"[1, 2]", None),
        (b'"text"', None),
        (b'{"name": "a", "name": "b"}', "name"),
        (b'{"name": 5}', "name"),
        (b'{"name": null}', "name"),
        (b'{"name": "a\\u0000b"}', "name"),
        (b'{"name": "\\ud800"}', "name"),
        (b'{"event_types": "video.failed"}', "event_types"),
        (b'{"event_types": [["video.failed"]]}', "event_types"),
        (b'{"event_types": [{"a": 1}]}', "event_types"),
        (b'{"url": 12}', "url"),
        (b'{"url": " http://127.0.0.1:9/x"}', "url"),
        (b'{"url": "http://127.0.0.1:9/\\nx"}', "url"),
        (b"[" * 100000 + b"]" * 100000, None),
    ]:
        answer = raw(relay, key, "POST", path, content=body, headers=json_headers)
        assert answer.status_code == 400, (body[:40], answer.text)
        assert error_of(answer)["param"] == param, (body[:40], answer.text)
    rotate = raw(relay, key, "POST", f"{path}/rotate_secret", json={"keep_old_secret_active_for_24_hours": "yes"})
    assert rotate.status_code == 400 and error_of(rotate)["param"] == "keep_old_secret_active_for_24_hours"
    missing = raw(relay, key, "POST", "/webhook_endpoints", json={"name": "x", "event_types": ["video.failed"]})
    assert missing.status_code == 400 and error_of(missing) | {"message": ""} == {
        "message": "",
        "type": "invalid_request_error",
        "param": "url",
        "code": "missing_required_parameter",
    }
    form = raw(relay, key, "POST", path, content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.status_code == 400 and error_of(form)["code"] == "unsupported_content_type"
    assert client.webhooks.retrieve(endpoint.id).name == "x"  # nothing refused changed it


def test_a_key_has_at_most_its_share_of_endpoints(relay_process: Any, receiver: Receiver) -> None:
    relay = relay_process(extra_env=PRIVATE_OK)
    client = sdk(relay, relay.issue_key("alice"))
    made = [client.webhooks.create(name=f"hook {n}", url=receiver.url, event_types=["video.failed"]) for n in range(MAX_ENDPOINTS_PER_KEY)]
    with pytest.raises(openai.BadRequestError) as full:
        client.webhooks.create(name="one more", url=receiver.url, event_types=["video.failed"])
    assert full.value.code == "webhook_endpoint_limit_reached" and f"{MAX_ENDPOINTS_PER_KEY} webhook endpoints" in full.value.message
    client.webhooks.delete(made[0].id)
    client.webhooks.create(name="one more", url=receiver.url, event_types=["video.failed"])
    other = sdk(relay, relay.issue_key("bob"))
    other.webhooks.create(name="bob's", url=receiver.url, event_types=["video.failed"])


def test_without_allow_private_only_public_https_targets_are_accepted(relay_process: Any) -> None:
    relay = relay_process()
    client = sdk(relay, relay.issue_key("alice"))
    for url, words in [
        ("http://hooks.example/in", "https://"),
        ("https://127.0.0.1/in", "not a public internet address"),
        ("https://[::1]/in", "not a public internet address"),
        ("https://10.0.0.8/in", "not a public internet address"),
        ("https://169.254.169.254/latest", "not a public internet address"),
        ("https://[::ffff:127.0.0.1]/in", "not a public internet address"),
        ("https://100.64.0.1/in", "not a public internet address"),
        ("https://localhost/in", "not a public internet address"),
    ]:
        with pytest.raises(openai.BadRequestError) as refused:
            client.webhooks.create(name="x", url=url, event_types=["video.completed"])
        assert refused.value.param == "url" and words in refused.value.message, (url, refused.value.message)
    assert list(client.webhooks.list()) == []


# -- whatever a client sends ----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.sampled_from(["video.completed", "video.failed", "batch.completed", "", "http://127.0.0.1:9/in", "https://127.0.0.1/x"]),
    st.lists(st.sampled_from(["video.completed", "video.failed", "response.failed", "x"]), max_size=3),
)
bodies = st.one_of(
    st.dictionaries(
        st.sampled_from(["name", "url", "event_types", "event_type", "keep_old_secret_active_for_24_hours", "other"]),
        field_values,
        max_size=4,
    ),
    json_values,
)


@dataclass
class Target:
    relay: Relay
    headers: dict[str, str]
    endpoint_id: str


@pytest.fixture
def target(make_relay: Any) -> Target:
    """An in-process relay, a key, and an endpoint on a closed port (a test event to it is a 502)."""
    relay: Relay = make_relay(webhook_allow_private=True, webhook_timeout_seconds=1.0)
    headers = {"authorization": f"Bearer {relay.issue_key('alice')}", "content-type": "application/json"}
    made = relay.client.post(
        "/openai/v1/webhook_endpoints",
        headers=headers,
        json={"name": "target", "url": f"http://127.0.0.1:{free_port()}/in", "event_types": ["video.completed"]},
    )
    assert made.status_code == 200, made.text
    return Target(relay, headers, made.json()["id"])


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(["", "/{id}", "/{id}/rotate_secret", "/{id}/test"]), body=bodies, raw_bytes=st.binary(max_size=40) | st.none())
def test_no_body_a_client_sends_makes_a_500(target: Target, route: str, body: Any, raw_bytes: bytes | None) -> None:
    path = "/openai/v1/webhook_endpoints" + route.replace("{id}", target.endpoint_id)
    content = raw_bytes if raw_bytes is not None else json.dumps(body).encode()
    answer = target.relay.client.post(path, headers=target.headers, content=content)
    assert answer.status_code in (200, 400, 502), (path, content, answer.text)
    assert answer.status_code == 200 or set(answer.json()) == {"error"}


def test_a_secret_the_relay_cannot_read_is_a_503_until_it_is_rotated(make_relay: Any) -> None:
    relay: Relay = make_relay(webhook_allow_private=True, webhook_timeout_seconds=1.0)
    headers = {"authorization": f"Bearer {relay.issue_key('alice')}"}
    made = relay.client.post(
        "/openai/v1/webhook_endpoints",
        headers=headers,
        json={"name": "x", "url": f"http://127.0.0.1:{free_port()}/in", "event_types": ["video.failed"]},
    )
    endpoint_id = made.json()["id"]
    # As if written under a secret key the relay no longer holds.
    run_sql(
        relay.state.store,
        "UPDATE webhook_endpoints SET secret = ? WHERE id = ?",
        (Fernet(Fernet.generate_key()).encrypt(b"x").decode(), endpoint_id),
    )
    test = f"/openai/v1/webhook_endpoints/{endpoint_id}/test"
    unreadable = relay.client.post(test, headers=headers, json={"event_type": "video.failed"})
    assert unreadable.status_code == 503 and unreadable.json()["error"]["code"] == "webhook_secret_unreadable"
    assert relay.client.post(f"/openai/v1/webhook_endpoints/{endpoint_id}/rotate_secret", headers=headers).status_code == 200
    assert relay.client.post(test, headers=headers, json={"event_type": "video.failed"}).status_code == 502  # signed; nobody listens
