"""The upstream fault matrix (docs/faults.md): for each way an upstream misbehaves, what the client
sees and what happens to the account. Each test is one row of that table."""

from __future__ import annotations

import contextlib
import gzip
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from conftest import Relay, Sandbox
from test_relay import CREATE, assert_envelope, auth, outcomes, tokens_seen

V = "/openai/v1/videos"


@pytest.fixture
def solo(make_relay: Any, sandbox: Sandbox) -> tuple[Relay, str]:
    """One account, no failover: every fault reaches the client as it is."""
    relay = make_relay(max_failover=0, read_timeout_seconds=0.5, max_upstream_response_bytes=64 * 1024)
    relay.add_account("a", sandbox.base_api())
    return relay, relay.issue_key()


def send(relay: Relay, key: str) -> Any:
    return relay.client.post(V, json=CREATE, headers=auth(key))


def last_outcome(relay: Relay) -> tuple[int | None, str]:
    row = outcomes(relay)[-1]
    return row["upstream_status"], row["error_class"]


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, "client_error"),
        (403, "client_error"),
        (404, "client_error"),
        (409, "client_error"),
        (500, "server_error"),
        (502, "server_error"),
        (503, "server_error"),
    ],
)
def test_other_statuses_pass_through_and_leave_the_account_active(
    solo: tuple[Relay, str], sandbox: Sandbox, status: int, error_class: str
) -> None:
    relay, key = solo
    body = {"error": {"message": f"upstream says {status}", "type": "x", "param": None, "code": f"c{status}"}}
    sandbox.fault(status=status, body=body, times=1, headers={"retry-after": "3"})
    response = send(relay, key)
    assert response.status_code == status and response.json() == body
    assert response.headers.get("retry-after") == "3"
    assert last_outcome(relay) == (status, error_class)
    assert relay.state.store.account("a").state == "active"


@pytest.mark.parametrize(
    ("raw_body", "content_type"),
    [
        ("<html>Bad gateway</html>", "text/html"),
        ("", "application/json"),
        ("{not json", "application/json"),
        ("\x00\xff", "application/octet-stream"),
    ],
)
def test_malformed_error_bodies_pass_through(solo: tuple[Relay, str], sandbox: Sandbox, raw_body: str, content_type: str) -> None:
    relay, key = solo
    sandbox.fault(status=429, raw_body=raw_body, content_type=content_type, times=1)
    response = send(relay, key)
    assert response.status_code == 429 and response.content == raw_body.encode()
    # No usable hint in a malformed body: the default cooldown applies.
    account = relay.state.store.account("a")
    assert account.state == "rate_limited" and "default" in (account.state_reason or "")


def test_malformed_success_body_is_passed_on_but_not_recorded_as_a_job(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    sandbox.fault(status=200, raw_body="OK", content_type="text/plain", times=1)
    response = send(relay, key)
    assert response.status_code == 200 and response.text == "OK"
    assert relay.client.get(V, headers=auth(key)).json()["data"] == []


def test_huge_answer_is_cut_off_with_a_502(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    sandbox.fault(status=200, raw_body="x" * (200 * 1024), content_type="application/json", times=1)
    assert_envelope(send(relay, key), 502, "upstream_answer_too_large")
    assert last_outcome(relay) == (None, "server_error")


def test_slow_headers_time_out(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    sandbox.fault(preset="slow", delay_seconds=2, times=1)
    assert_envelope(send(relay, key), 504, "upstream_timeout")
    assert last_outcome(relay) == (None, "timeout")
    assert relay.state.store.account("a").state == "active"


def test_slow_body_times_out(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    sandbox.fault(action="slow_body", chunk_bytes=8, chunk_interval_seconds=2.0, times=1)
    assert_envelope(send(relay, key), 504, "upstream_timeout")
    assert last_outcome(relay) == (None, "timeout")


def test_reset_mid_response(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    sandbox.fault(action="reset", times=1)
    assert_envelope(send(relay, key), 502, "upstream_unreachable")
    assert last_outcome(relay) == (None, "connection_error")


def test_tls_error_is_a_connection_error_and_fails_over(make_relay: Any, sandbox: Sandbox) -> None:
    relay = make_relay()
    # https:// against a plain-HTTP port: the TLS handshake fails before any request byte is sent.
    relay.add_account("tls", sandbox.base_api().replace("http://", "https://"), priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    assert send(relay, key).status_code == 200
    assert [(o["account"], o["error_class"]) for o in outcomes(relay)] == [("tls", "connection_error"), ("b", "none")]


@pytest.fixture
def garbage_server() -> Iterator[str]:
    """A TCP server on 127.0.0.1 that answers any request with bytes that are not HTTP."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.recv(65536)
                conn.sendall(b"SSH-2.0-OpenSSH_9.0 this is not http\r\n\r\n")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/v1"
    stop.set()
    thread.join()
    listener.close()


def test_protocol_garbage_is_a_502_without_failover(make_relay: Any, sandbox: Sandbox, garbage_server: str) -> None:
    relay = make_relay()
    relay.add_account("garbage", garbage_server, priority=1)
    relay.add_account("b", sandbox.base_api(), priority=2)
    key = relay.issue_key()
    # The request went out before the answer turned out to be garbage: it is not retried elsewhere.
    assert_envelope(send(relay, key), 502, "upstream_unreachable")
    assert tokens_seen(sandbox) == []
    assert [(o["account"], o["error_class"]) for o in outcomes(relay)] == [("garbage", "connection_error")]


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_is_a_502_and_never_followed(solo: tuple[Relay, str], sandbox: Sandbox, status: int) -> None:
    relay, key = solo
    sandbox.fault(status=status, raw_body="", headers={"location": f"{sandbox.url}/elsewhere"}, times=1)
    response = send(relay, key)
    assert_envelope(response, 502, "upstream_redirect")
    assert "location" not in response.headers
    assert last_outcome(relay) == (status, "server_error")
    assert not [r for r in sandbox.requests() if "elsewhere" in r["path"]]


def test_an_upstream_401_on_a_follow_up_is_not_passed_on_as_the_callers(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    video = send(relay, key).json()
    sandbox.fault(preset="unauthorized", method="GET", times=1)
    response = relay.client.get(f"{V}/{video['id']}", headers=auth(key))
    assert_envelope(response, 503, "upstream_account_unauthorized")
    assert "Incorrect API key" not in response.text
    assert relay.state.store.account("a").state == "unauthorized"


class ScriptedUpstream:
    """A TCP server on 127.0.0.1 that answers the n-th request with the n-th scripted reply:
    raw bytes then a close, or a function that writes to the connection itself."""

    def __init__(self) -> None:
        self.replies: list[bytes | Callable[[socket.socket], None]] = []
        self.received: list[bytes] = []
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def base_api(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/v1"

    def serve(self) -> None:
        self.listener.settimeout(0.2)
        while not self.stop.is_set():
            try:
                conn, _ = self.listener.accept()
            except OSError:
                continue
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    request += conn.recv(65536)
                head, _, body = request.partition(b"\r\n\r\n")
                length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")), 0)
                while len(body) < length:
                    body += conn.recv(65536)
                self.received.append(head)
                reply = self.replies.pop(0)
                if callable(reply):
                    with contextlib.suppress(OSError):
                        reply(conn)
                else:
                    conn.sendall(reply)

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.listener.close()


def http_reply(status: str, headers: dict[str, str], body: bytes, *, length: int | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status}", f"content-length: {len(body) if length is None else length}", "connection: close"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


@pytest.fixture
def scripted() -> Iterator[ScriptedUpstream]:
    server = ScriptedUpstream()
    yield server
    server.close()


VIDEO = {
    "id": "video_gz1",
    "object": "video",
    "status": "queued",
    "model": "sora-2",
    "seconds": "4",
    "size": "720x1280",
    "progress": 0,
    "created_at": 1,
}


def test_a_compressed_answer_is_decoded_and_the_job_recorded(make_relay: Any, scripted: ScriptedUpstream) -> None:
    relay = make_relay()
    relay.add_account("gz", scripted.base_api)
    key = relay.issue_key()
    scripted.replies.append(
        http_reply("200 OK", {"content-type": "application/json", "content-encoding": "gzip"}, gzip.compress(json.dumps(VIDEO).encode()))
    )
    response = send(relay, key)
    assert response.status_code == 200 and response.json() == VIDEO
    assert relay.client.get(V, headers=auth(key)).json()["data"][0]["id"] == "video_gz1"
    # Several gzip members are one body.
    halves = gzip.compress(json.dumps(VIDEO).encode()[:10]) + gzip.compress(json.dumps(VIDEO).encode()[10:])
    scripted.replies.append(http_reply("200 OK", {"content-type": "application/json", "content-encoding": "gzip"}, halves))
    assert relay.client.get(f"{V}/video_gz1", headers=auth(key)).json() == VIDEO


@pytest.mark.parametrize(
    ("encoding", "body", "code"),
    [
        ("br", b"\x8b\x02\x80{}\x03", "upstream_unreachable"),  # not asked for, and the relay must read the id
        ("gzip", gzip.compress(json.dumps(VIDEO).encode())[:-12], "upstream_unreachable"),  # cut short
        ("gzip", b"not gzip at all", "upstream_unreachable"),
        ("gzip", gzip.compress(b" " * (1024 * 1024)), "upstream_answer_too_large"),  # 1 KB that inflates past the limit
    ],
)
def test_a_compressed_answer_the_relay_cannot_read_is_a_502_that_says_do_not_retry(
    make_relay: Any, scripted: ScriptedUpstream, encoding: str, body: bytes, code: str
) -> None:
    relay = make_relay(max_upstream_response_bytes=64 * 1024)
    relay.add_account("gz", scripted.base_api)
    key = relay.issue_key()
    scripted.replies.append(http_reply("200 OK", {"content-type": "application/json", "content-encoding": encoding}, body))
    response = send(relay, key)
    assert_envelope(response, 502, code)
    assert response.headers["x-should-retry"] == "false"  # the create reached the upstream


@pytest.mark.parametrize("status_line", ["600 Beyond", "999 Nine", "101 Switching Protocols"])
def test_a_status_that_is_no_final_answer_is_a_502(make_relay: Any, scripted: ScriptedUpstream, status_line: str) -> None:
    relay = make_relay()
    relay.add_account("odd", scripted.base_api)
    key = relay.issue_key()
    scripted.replies.append(http_reply(status_line, {"content-type": "application/json"}, b"{}"))
    response = send(relay, key)
    assert_envelope(response, 502, "upstream_unreachable")
    assert response.headers["x-should-retry"] == "false"


def test_an_answer_head_trickled_a_byte_at_a_time_still_times_out(make_relay: Any, scripted: ScriptedUpstream) -> None:
    relay = make_relay(read_timeout_seconds=1.0)
    relay.add_account("drip", scripted.base_api)
    key = relay.issue_key()

    def trickle(conn: socket.socket) -> None:
        for byte in http_reply("200 OK", {"content-type": "application/json"}, json.dumps(VIDEO).encode()):
            conn.sendall(bytes([byte]))
            time.sleep(0.3)  # each gap is within the read timeout; the whole head is not

    scripted.replies.append(trickle)
    assert_envelope(send(relay, key), 504, "upstream_timeout")


def test_a_redirect_on_a_download_is_a_502(make_relay: Any, scripted: ScriptedUpstream) -> None:
    relay = make_relay()
    relay.add_account("gz", scripted.base_api)
    key = relay.issue_key()
    scripted.replies.append(http_reply("200 OK", {"content-type": "application/json"}, json.dumps(VIDEO).encode()))
    assert send(relay, key).status_code == 200
    scripted.replies.append(http_reply("302 Found", {"location": "http://127.0.0.1:9/elsewhere"}, b""))
    assert_envelope(relay.client.get(f"{V}/video_gz1/content", headers=auth(key)), 502, "upstream_redirect")


def test_a_download_the_upstream_breaks_off_is_a_failure_not_a_crash(relay_process: Any, scripted: ScriptedUpstream) -> None:
    relay = relay_process()
    assert (
        relay.relayctl(
            "accounts", "add", "cut", "--type", "openai-responses", "--token", "tok-cut", "--base-api", scripted.base_api
        ).returncode
        == 0
    )
    key = relay.issue_key("alice")
    scripted.replies.append(http_reply("200 OK", {"content-type": "application/json"}, json.dumps(VIDEO).encode()))
    assert httpx.post(f"{relay.url}{V}", json=CREATE, headers=auth(key)).status_code == 200
    scripted.replies.append(http_reply("200 OK", {"content-type": "video/mp4"}, b"\0" * 50_000, length=200_000))
    with pytest.raises(httpx.RemoteProtocolError):  # the client can tell: fewer bytes than promised
        httpx.get(f"{relay.url}{V}/video_gz1/content", headers=auth(key))
    metrics = httpx.get(f"{relay.url}/metrics").text
    assert (
        'relay_upstream_requests_total{account="cut",account_type="openai-responses",'
        'error_class="connection_error",route="videos.content",status_class="2xx"} 1.0'
    ) in metrics
    log = relay.log()
    assert "upstream broke off an answer" in log
    assert "Traceback" not in log and "unhandled error" not in log, log


def test_an_id_another_key_holds_is_not_handed_to_a_second_caller(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    first = send(relay, key).json()
    bob = relay.issue_key("bob")
    sandbox.fault(status=200, body={**first, "status": "queued"}, method="POST", times=1)
    response = relay.client.post(V, json=CREATE, headers=auth(bob))
    assert_envelope(response, 502, "upstream_id_conflict")
    assert response.headers["x-should-retry"] == "false"
    assert relay.client.get(f"{V}/{first['id']}", headers=auth(key)).status_code == 200  # still the first caller's
    assert relay.client.get(V, headers=auth(bob)).json()["data"] == []


@pytest.mark.parametrize("video_id", ["video_x/../../../admin/delete-all", "..", ".", "video x", "video_1?a=b", "video\n1", "v" * 513])
def test_an_id_that_cannot_be_one_path_segment_is_not_followed(solo: tuple[Relay, str], sandbox: Sandbox, video_id: str) -> None:
    """The job watcher polled `/videos/video_x/../../../admin/delete-all` with the account's credential."""
    relay, key = solo
    template = send(relay, key).json()
    sandbox.fault(status=200, body={**template, "id": video_id, "status": "queued"}, method="POST", times=1)
    response = relay.client.post(V, json=CREATE, headers=auth(key))
    assert_envelope(response, 502, "upstream_invalid_id")
    assert response.headers["x-should-retry"] == "false"
    assert [video["id"] for video in relay.client.get(V, headers=auth(key)).json()["data"]] == [template["id"]]


def test_an_answer_body_trickled_a_byte_at_a_time_still_times_out(make_relay: Any, scripted: ScriptedUpstream) -> None:
    relay = make_relay(read_timeout_seconds=1.0)
    relay.add_account("drip", scripted.base_api)
    key = relay.issue_key()
    reply = http_reply("200 OK", {"content-type": "application/json"}, json.dumps(VIDEO).encode())
    head, _, body = reply.partition(b"\r\n\r\n")

    def trickle(conn: socket.socket) -> None:
        conn.sendall(head + b"\r\n\r\n")
        for byte in body:
            conn.sendall(bytes([byte]))
            time.sleep(0.3)  # each gap is within the read timeout; the whole body is not

    scripted.replies.append(trickle)
    response = send(relay, key)
    assert_envelope(response, 504, "upstream_timeout")
    assert response.headers["x-should-retry"] == "false"


def test_an_upstream_echoing_the_credential_does_not_pass_it_on(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    echoed = {
        "error": {
            "message": "Bad request; you sent Authorization: Bearer tok-a",
            "type": "invalid_request_error",
            "param": None,
            "code": "bad",
        }
    }
    sandbox.fault(status=400, body=echoed, headers={"x-ratelimit-limit-requests": "tok-a"}, times=1)
    response = send(relay, key)
    assert response.status_code == 400 and "tok-a" not in response.text and "tok-a" not in str(response.headers)
    assert response.json()["error"]["message"] == "Bad request; you sent Authorization: Bearer [redacted]"


@pytest.mark.parametrize("content_type", ["application/json", "text/plain; charset=utf-8", "application/problem+json"])
def test_a_download_answered_with_text_is_read_and_masked(solo: tuple[Relay, str], sandbox: Sandbox, content_type: str) -> None:
    """A 2xx answer to a download whose body echoed the credential passed it on in full: downloads
    are not looked into, but text where a video belongs is an answer like any other."""
    relay, key = solo
    video = send(relay, key).json()
    body = {"id": video["id"], "debug": {"auth": "Bearer tok-a"}}
    sandbox.fault(status=200, body=body, headers={"content-type": content_type}, path_contains="/content", times=1)
    response = relay.client.get(f"{V}/{video['id']}/content", headers=auth(key))
    assert response.status_code == 200 and "tok-a" not in response.text
    assert "Bearer [redacted]" in response.text


@pytest.mark.parametrize("status", [500, 502, 503])
def test_an_upstream_5xx_to_new_work_tells_sdks_not_to_retry(solo: tuple[Relay, str], sandbox: Sandbox, status: int) -> None:
    """The official SDK retried a create that got an upstream 500 twice: three renders for one call."""
    relay, key = solo
    video = send(relay, key).json()
    sandbox.fault(status=status, body={"error": {"message": "upstream broke", "type": "server_error"}}, method="POST", times=1)
    created = relay.client.post(V, json=CREATE, headers=auth(key))
    assert (created.status_code, created.json()["error"]["message"]) == (status, "upstream broke")
    assert created.headers["x-should-retry"] == "false"
    sandbox.fault(status=status, body={"error": {"message": "upstream broke", "type": "server_error"}}, method="GET", times=1)
    retrieved = relay.client.get(f"{V}/{video['id']}", headers=auth(key))
    assert retrieved.status_code == status and "x-should-retry" not in retrieved.headers


def test_a_delete_the_upstream_declined_keeps_the_video(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    video = send(relay, key).json()
    sandbox.fault(status=200, body={"id": video["id"], "object": "video.deleted", "deleted": False}, method="DELETE", times=1)
    assert relay.client.delete(f"{V}/{video['id']}", headers=auth(key)).json()["deleted"] is False
    assert relay.client.get(f"{V}/{video['id']}", headers=auth(key)).status_code == 200


def test_a_model_the_price_table_does_not_know_is_labelled_other(solo: tuple[Relay, str], sandbox: Sandbox) -> None:
    relay, key = solo
    video = relay.client.post(V, json={**CREATE, "model": "weird-model\u2028"}, headers=auth(key)).json()
    deadline = time.monotonic() + 10
    while relay.client.get(f"{V}/{video['id']}", headers=auth(key)).json()["status"] != "completed":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    metrics = relay.metrics()
    assert 'relay_video_seconds_total{account="a",key="alice",model="other"}' in metrics
    assert "weird-model" not in metrics
