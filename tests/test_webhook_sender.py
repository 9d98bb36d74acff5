"""One webhook delivery attempt against real HTTP endpoints on 127.0.0.1: every way an endpoint
can answer (or not) ends as a result, the bytes and signature arrive as the SDK expects them."""

from __future__ import annotations

import asyncio
import email.utils
import json
import socket
import ssl
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import openai
import pytest
from certificates import self_signed

from relay.webhooks.sender import RESPONSE_READ_LIMIT, AttemptResult, make_client, retry_after_seconds, send_event
from relay.webhooks.signing import new_secret

BODY = json.dumps(
    {"id": "evt_" + "1" * 32, "object": "event", "created_at": 1700000000, "type": "video.completed", "data": {"id": "video_9"}},
    separators=(",", ":"),
).encode()
WEBHOOK_ID = "wh_" + "2" * 32
HUGE = 64 * 1024 * 1024


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    """A webhook endpoint whose path says how it answers (see Endpoint.do_POST)."""

    base: str = ""
    received: list[Received] = field(default_factory=list)
    # Statuses /script answers with, one per request (200 once they run out).
    script: list[int] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    huge_done: threading.Event = field(default_factory=threading.Event)
    huge_written: int = 0

    def url(self, path: str) -> str:
        return self.base + path

    @property
    def port(self) -> int:
        return int(self.base.rsplit(":", 1)[1])


class Endpoint(BaseHTTPRequestHandler):
    receiver: Receiver

    def do_POST(self) -> None:  # noqa: N802  (http.server's name)
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        parts = urlsplit(self.path)
        self.receiver.received.append(Received(parts.path, {name.lower(): value for name, value in self.headers.items()}, body))
        query = {name: values[0] for name, values in parse_qs(parts.query).items()}
        if parts.path == "/hang":
            self.receiver.release.wait(10)
            self.close_connection = True
        elif parts.path == "/reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
        elif parts.path == "/close":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
        elif parts.path == "/huge":
            self._huge()
        elif parts.path == "/moved":
            self._answer(302, {"location": "/ok"})
        elif parts.path.startswith("/status/"):
            extra = {"retry-after": query["retry_after"]} if "retry_after" in query else {}
            self._answer(int(parts.path.removeprefix("/status/")), extra)
        elif parts.path == "/script":
            self._answer(self.receiver.script.pop(0) if self.receiver.script else 200)
        else:
            self._answer(200)

    def _answer(self, status: int, extra: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def _huge(self) -> None:
        self.send_response(200)
        self.send_header("content-length", str(HUGE))
        self.end_headers()
        chunk = b"x" * 65536
        try:
            while self.receiver.huge_written < HUGE:
                self.wfile.write(chunk)
                self.receiver.huge_written += len(chunk)
        except OSError:
            pass
        finally:
            self.receiver.huge_done.set()
        self.close_connection = True

    def log_message(self, *args: Any) -> None:
        pass


class QuietServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        # The endpoints that reset or drop connections make the handler's last flush fail; that is the point.
        pass


@contextmanager
def running_receiver(tls: ssl.SSLContext | None = None) -> Iterator[Receiver]:
    """A Receiver serving on 127.0.0.1 (also used by the dispatcher's tests), over TLS with `tls`."""
    state = Receiver()
    handler = type("BoundEndpoint", (Endpoint,), {"receiver": state})
    server = QuietServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.base = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        state.release.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as state:
        yield state


def attempt(
    url: str, *, secrets: list[str] | None = None, timeout: float = 5.0, allow_private: bool = True, now: Any = time.time
) -> AttemptResult:
    async def run() -> AttemptResult:
        async with make_client() as client:
            return await send_event(
                client,
                url=url,
                webhook_id=WEBHOOK_ID,
                body=BODY,
                secrets=secrets or [new_secret()],
                timeout=timeout,
                allow_private=allow_private,
                now=now,
            )

    return asyncio.run(run())


def test_a_2xx_is_delivered_with_the_exact_bytes_and_a_signature_the_sdk_accepts(receiver: Receiver) -> None:
    new, old = new_secret(), new_secret()
    result = attempt(receiver.url("/ok"), secrets=[new, old])
    assert result.delivered and result.status == 200 and result.error is None and result.retry_after is None
    assert result.latency_seconds >= 0
    [received] = receiver.received
    assert received.body == BODY
    assert received.headers["webhook-id"] == WEBHOOK_ID and received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"] == "video-relay-webhooks/1"
    webhooks = openai.OpenAI(api_key="x").webhooks
    webhooks.verify_signature(received.body, received.headers, secret=new)
    webhooks.verify_signature(received.body, received.headers, secret=old)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        webhooks.verify_signature(received.body, received.headers, secret=new_secret())


def test_a_500_is_an_http_error(receiver: Receiver) -> None:
    result = attempt(receiver.url("/status/500?retry_after=60"))
    # Retry-After counts only on 429 and 503.
    assert (result.delivered, result.status, result.error, result.retry_after) == (False, 500, "http_error", None)


def test_a_redirect_is_not_followed(receiver: Receiver) -> None:
    result = attempt(receiver.url("/moved"))
    assert (result.delivered, result.status, result.error) == (False, 302, "redirect")
    assert [received.path for received in receiver.received] == ["/moved"]


def test_410_is_gone(receiver: Receiver) -> None:
    result = attempt(receiver.url("/status/410"))
    assert (result.delivered, result.status, result.error) == (False, 410, "gone")


def test_429_and_503_carry_their_retry_after_in_seconds_or_as_a_date(receiver: Receiver) -> None:
    result = attempt(receiver.url("/status/429?retry_after=120"))
    assert (result.delivered, result.status, result.error, result.retry_after) == (False, 429, "http_error", 120.0)
    fixed = 1_800_000_000.0
    when = email.utils.formatdate(fixed + 300, usegmt=True)
    result = attempt(receiver.url(f"/status/503?retry_after={when}"), now=lambda: fixed)
    assert (result.status, result.error, result.retry_after) == (503, "http_error", 300.0)


def test_an_endpoint_that_hangs_times_out(receiver: Receiver) -> None:
    result = attempt(receiver.url("/hang"), timeout=0.5)
    assert (result.delivered, result.status, result.error) == (False, None, "timeout")


def test_slow_dns_counts_against_the_same_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    def slow(*args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(0.6)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", slow)
    result = attempt("http://hooks.test/x", timeout=0.3)
    assert (result.delivered, result.error) == (False, "timeout")


@pytest.mark.parametrize("path", ["/reset", "/close"])
def test_a_connection_reset_or_dropped_is_a_connect_error(receiver: Receiver, path: str) -> None:
    result = attempt(receiver.url(path))
    assert (result.delivered, result.status, result.error) == (False, None, "connect_error")
    assert [received.path for received in receiver.received] == [path]


def test_nothing_listening_is_a_connect_error() -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    result = attempt(f"http://127.0.0.1:{port}/x")
    assert (result.delivered, result.status, result.error) == (False, None, "connect_error")


def test_a_name_that_does_not_resolve_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def nothing(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", nothing)
    assert attempt("https://hooks.test/x", allow_private=False).error == "connect_error"


def test_a_huge_answer_is_not_read_past_the_cap(receiver: Receiver) -> None:
    result = attempt(receiver.url("/huge"))
    assert (result.delivered, result.status) == (True, 200)
    assert receiver.huge_done.wait(10)
    # The relay hung up long before the end: only what fits in the socket buffers went out.
    assert RESPONSE_READ_LIMIT <= receiver.huge_written < HUGE // 2


def test_an_unsafe_target_gets_no_request(receiver: Receiver) -> None:
    for url in (f"https://127.0.0.1:{receiver.port}/ok", f"https://localhost:{receiver.port}/ok", receiver.url("/ok")):
        result = attempt(url, allow_private=False)
        assert (result.delivered, result.status, result.error) == (False, None, "unsafe_target")
    assert receiver.received == []


def test_the_delivery_connects_to_the_checked_address_with_the_name_as_host(receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> None:
    lookups: list[str] = []

    def hooks_test_is_loopback(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        lookups.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]

    monkeypatch.setattr(socket, "getaddrinfo", hooks_test_is_loopback)
    result = attempt(f"http://hooks.test:{receiver.port}/ok?token=abc")
    assert result.delivered
    # Resolved once, by the check; the connection went to the address it returned.
    assert lookups == ["hooks.test"]
    [received] = receiver.received
    assert received.headers["host"] == f"hooks.test:{receiver.port}"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("1.5", 1.5),
        ("-5", 0.0),
        ("soon", None),
        ("nan", None),
        ("", None),
        (None, None),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        (email.utils.formatdate(1_800_000_090, usegmt=True), 90.0),
    ],
)
def test_retry_after_values(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, 1_800_000_000.0) == seconds


@pytest.mark.parametrize(("certified", "delivered"), [("hooks.test", True), ("other.test", False)])
def test_https_connects_to_the_checked_address_and_checks_the_certificate_for_the_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, certified: str, delivered: bool
) -> None:
    cert_path, key_path = self_signed(tmp_path, certified)
    names: list[str | None] = []
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_path, key_path)
    server_context.sni_callback = lambda connection, name, context: names.append(name)
    with running_receiver(server_context) as tls:
        monkeypatch.setattr(
            socket, "getaddrinfo", lambda host, port, *args, **kwargs: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        )

        async def run() -> AttemptResult:
            # The operator's trust store, standing in for the public CAs: it trusts the test certificate.
            client_context = ssl.create_default_context(cafile=str(cert_path))
            async with httpx.AsyncClient(verify=client_context, trust_env=False) as client:
                return await send_event(
                    client,
                    url=f"https://hooks.test:{tls.port}/ok",
                    webhook_id=WEBHOOK_ID,
                    body=BODY,
                    secrets=[new_secret()],
                    timeout=5.0,
                    allow_private=True,
                    now=time.time,
                )

        result = asyncio.run(run())
    assert names == ["hooks.test"]
    if delivered:
        assert (result.delivered, result.status) == (True, 200)
        assert [received.headers["host"] for received in tls.received] == [f"hooks.test:{tls.port}"]
    else:
        # Connected to 127.0.0.1 as checked, but the certificate is not for the name: no request went.
        assert (result.delivered, result.error) == (False, "connect_error") and tls.received == []
