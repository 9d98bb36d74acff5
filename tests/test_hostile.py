"""Hostile client input: the relay never answers 500, never crashes, and answers its own errors in the envelope.

Everything runs in-process through starlette's TestClient against the sandbox upstream process.
A request the sandbox never recorded was answered by the relay itself; those answers (and any
answer carrying one of the relay's own `code`s) must be the OpenAI envelope with `x-request-id`.
Hostile input must also leave the pool healthy: no account may be rested or marked failed
because a client sent something odd.
"""

from __future__ import annotations

import json
import re
import string
import time
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import pytest
from conftest import Relay, Sandbox, run_sql
from hypothesis import HealthCheck, event, given, settings, strategies as st

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FEW = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

CREATE = {"prompt": "A calico cat playing a piano", "model": "sora-2", "seconds": "4", "size": "720x1280"}
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
ACCOUNT = "a"

# Every `code` the relay puts on an answer of its own (README "Errors", relay/*.py).
RELAY_CODES = frozenset(
    {
        "invalid_api_key",
        "insufficient_permissions",
        "not_found",
        "method_not_allowed",
        "video_not_found",
        "character_not_found",
        "invalid_json",
        "invalid_multipart",
        "unsupported_content_type",
        "invalid_request_headers",
        "duplicate_field",
        "invalid_value",
        "invalid_content_length",
        "request_too_large",
        "invalid_limit",
        "invalid_order",
        "invalid_cursor",
        "invalid_variant",
        "invalid_idempotency_key",
        "idempotency_key_reused",
        "idempotency_key_in_progress",
        "no_upstream_account",
        "video_account_removed",
        "video_account_unauthorized",
        "upstream_unreachable",
        "upstream_timeout",
        "upstream_answer_too_large",
        "upstream_account_unauthorized",
        "upstream_account_misconfigured",
        "invalid_metrics_token",
        "metrics_token_required",
        "upstream_redirect",
        "upstream_id_conflict",
        "upstream_invalid_id",
        "internal_error",
    }
)

_control = httpx.Client(timeout=10)


# -- plumbing ------------------------------------------------------------------------------------


def clear_requests(sandbox: Sandbox) -> None:
    _control.delete(f"{sandbox.url}/_sandbox/requests").raise_for_status()


def upstream_requests(sandbox: Sandbox) -> list[dict[str, Any]]:
    response = _control.get(f"{sandbox.url}/_sandbox/requests")
    response.raise_for_status()
    return response.json()  # type: ignore[no-any-return]


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def error_of(response: httpx.Response) -> dict[str, Any] | None:
    try:
        payload = response.json()
    except ValueError:
        return None
    error = payload.get("error") if isinstance(payload, dict) else None
    return error if isinstance(error, dict) else None


def assert_envelope(response: httpx.Response, *, method: str = "GET", code: str | None = None) -> dict[str, Any] | None:
    """The relay's own error: JSON `{"error": {message, type, param, code}}` and a request id."""
    assert response.headers.get("x-request-id", "").startswith("req_"), dict(response.headers)
    if method == "HEAD":
        return None  # no body to look at
    assert response.headers.get("content-type", "").startswith("application/json"), (response.status_code, response.text[:300])
    payload = response.json()
    assert isinstance(payload, dict) and set(payload) == {"error"}, response.text[:300]
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"], error
    assert isinstance(error["type"], str) and error["type"], error
    assert error["param"] is None or isinstance(error["param"], str), error
    assert error["code"] in RELAY_CODES, error
    if code is not None:
        assert error["code"] == code, (response.status_code, error)
    return error  # type: ignore[no-any-return]


def assert_pool_healthy(relay: Relay) -> None:
    """Nothing a client sends may rest an account or count as an upstream failure."""
    upstream = relay.state.pool.get(ACCOUNT)
    if upstream is None:
        return
    assert upstream.account.state == "active", (upstream.account.state, upstream.account.state_reason)
    assert relay.state.server_failures.get(ACCOUNT, 0) == 0, relay.state.server_failures


def sane(relay: Relay, sandbox: Sandbox, response: httpx.Response, method: str) -> bool:
    """The invariants every answer to hostile input must keep. Returns whether the upstream saw the request.

    The relay's own answers are never 5xx here. An upstream's 5xx is passed through by contract
    (README "Upstream answers") and legitimately counts toward resting the account, so for those
    only "it really is the upstream's answer" is checked, and the failure count is reset so one
    example cannot leak into the next.
    """
    reached = bool(upstream_requests(sandbox))
    status = response.status_code
    assert response.headers.get("x-request-id", "").startswith("req_"), (status, dict(response.headers))
    assert "x-relay-overhead-ms" in response.headers
    for name, value in response.headers.multi_items():
        assert "\r" not in value and "\n" not in value, (name, value)
    error = error_of(response) if method != "HEAD" else None
    relay_answered = not reached or (error is not None and error.get("code") in RELAY_CODES)
    if relay_answered:
        assert status < 500, f"the relay answered {status}: {response.text[:600]}"
    if status >= 400 and relay_answered:
        assert_envelope(response, method=method)
    if 300 <= status < 400 and not reached:
        # The only redirect the relay makes itself is the trailing-slash one.
        assert status == 307 and response.headers.get("location"), (status, dict(response.headers))
    if status >= 500 and not relay_answered:
        relay.state.server_failures.pop(ACCOUNT, None)
    assert_pool_healthy(relay)
    return reached


def send(relay: Relay, method: str, url: str, **kwargs: Any) -> httpx.Response:
    return relay.client.request(method, url, follow_redirects=False, **kwargs)


class World:
    """One relay, one account on the sandbox, one key, and (on demand) a completed video of that key."""

    def __init__(self, relay: Relay, sandbox: Sandbox) -> None:
        self.relay, self.sandbox = relay, sandbox
        relay.add_account(ACCOUNT, sandbox.base_api())
        self.key = relay.issue_key("hostile")
        self.videos: list[str] = []

    def video(self, count: int = 1) -> str:
        while len(self.videos) < count:
            response = self.relay.client.post("/openai/v1/videos", json=CREATE, headers=bearer(self.key))
            assert response.status_code == 200, response.text
            self.videos.append(response.json()["id"])
        vid = self.videos[0]
        deadline = time.monotonic() + 10
        while self.relay.client.get(f"/openai/v1/videos/{vid}", headers=bearer(self.key)).json()["status"] != "completed":
            assert time.monotonic() < deadline, "sandbox video did not complete"
            time.sleep(0.05)
        return vid


def world(relay: Relay, sandbox: Sandbox) -> World:
    """Built once per test function (hypothesis reuses function-scoped fixtures across examples)."""
    existing = relay.__dict__.get("_hostile_world")
    if existing is None:
        existing = relay.__dict__["_hostile_world"] = World(relay, sandbox)
    clear_requests(sandbox)
    return existing  # type: ignore[no-any-return]


# -- strategies ------------------------------------------------------------------------------------


def percent(raw: bytes) -> str:
    return "".join(f"%{byte:02X}" for byte in raw)


TRICKY_SEGMENTS = [
    "videos",
    "edits",
    "extensions",
    "characters",
    "content",
    "remix",
    "v1",
    "openai",
    "healthz",
    "metrics",
    "..",
    ".",
    "%2e%2e",
    "%2E%2E%2F",
    "..%2f..%2f",
    "%00",
    "%ff",
    "%c0%ae",
    "%2f",
    "%5c",
    "%25",
    "%",
    "%zz",
    "",
    "video_123",
    "char_1",
    "~",
    "@",
    ";",
    ",",
    "*",
    "%20",
    "+",
]
SEGMENTS = st.one_of(
    st.sampled_from(TRICKY_SEGMENTS),
    st.text(max_size=30).map(lambda s: quote(s, safe="")),
    st.binary(min_size=1, max_size=12).map(percent),
    st.integers(300, 20_000).map(lambda n: "s" * n),
    st.text(alphabet=st.characters(min_codepoint=0xA0, exclude_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=10),
)
PREFIXES = st.sampled_from(
    [
        "/openai/v1/videos",
        "/openai/videos",
        "/openai/v1",
        "/openai",
        "",
        "/healthz",
        "/metrics",
        "/OPENAI/V1/VIDEOS",
        "/openai//v1/videos",
        "/openai/v1/videos/characters",
        "/openai/v2/videos",
    ]
)


TEMPLATES = st.sampled_from(
    [
        "{base}/videos",
        "{base}/videos/{x}",
        "{base}/videos/{x}/content",
        "{base}/videos/{x}/remix",
        "{base}/videos/edits",
        "{base}/videos/extensions",
        "{base}/videos/characters",
        "{base}/videos/characters/{x}",
        "{base}/videos/{x}/{x}",
        "/healthz",
        "/metrics",
    ]
)


@st.composite
def paths(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        # Shaped like a real route, with a hostile id in it.
        template = draw(TEMPLATES)
        path = template.replace("{base}", draw(st.sampled_from(["/openai/v1", "/openai"])))
        while "{x}" in path:
            path = path.replace("{x}", draw(SEGMENTS), 1)
    else:
        path = draw(PREFIXES) + "".join("/" + segment for segment in draw(st.lists(SEGMENTS, max_size=4)))
    if draw(st.booleans()):
        path += "/"
    if draw(st.booleans()):
        path += "?" + draw(st.one_of(st.text(max_size=40).map(lambda s: quote(s, safe="=&")), st.binary(max_size=20).map(percent)))
    if path.startswith("//"):
        path = "/openai" + path  # the client would read "//x" as a host, not a path
    return path or "/"


# Header values as a real HTTP server (uvicorn with httptools or h11) delivers them: visible ASCII,
# obs-text bytes, inner spaces and tabs; no control characters, no leading whitespace. Trailing
# whitespace is covered by its own test below (test_trailing_whitespace_in_forwarded_headers).
_VISIBLE = bytes(range(0x21, 0x7F)) + bytes(range(0x80, 0x100))


@st.composite
def header_values(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        words = draw(st.lists(st.binary(min_size=1, max_size=20).map(lambda b: bytes(_VISIBLE[x % len(_VISIBLE)] for x in b)), max_size=5))
        separators = draw(st.lists(st.sampled_from([b" ", b"\t", b"   ", b" \t "]), min_size=len(words), max_size=len(words)))
        return b"".join(word + sep for word, sep in zip(words, separators, strict=True)).rstrip(b" \t")
    if kind == 1:
        return draw(st.sampled_from([b"x", b"\xff", b"\xc3\xa9", b"caf\xe9", b"\x80\x81", b"a\tb"])) * draw(st.integers(1, 70_000))
    if kind == 2:
        return draw(
            st.sampled_from([b"", b"Bearer", b"Bearer  ", b"null", b"undefined", b"*", b"0", b"-1", b"rk-", b"rk-0123456789abcdef-"])
        ).rstrip()
    return draw(
        st.text(max_size=40).map(lambda s: s.encode("utf-8").strip()).filter(lambda b: all(c in _VISIBLE or c in b" \t" for c in b))
    )


HEADER_NAMES = st.sampled_from(
    [
        "authorization",
        "x-api-key",
        "session-id",
        "x-session-id",
        "session_id",
        "idempotency-key",
        "content-type",
        "user-agent",
        "accept",
        "openai-organization",
        "openai-project",
        "oai-device-id",
        "cookie",
        "range",
        "if-none-match",
        "x-forwarded-for",
        "transfer-encoding",
        "connection",
        "expect",
        "host",
    ]
) | st.text(alphabet=string.ascii_letters + string.digits + "-_!#$%&'*+.^`|~", min_size=1, max_size=30)


def auth_variants(key: str) -> list[tuple[str, bool]]:
    """Authorization values and whether the value alone must authenticate (README: `Bearer <key>`)."""
    return [
        (f"Bearer {key}", True),
        (f"bearer {key}", True),
        (f"BEARER     {key}", True),
        ("", False),
        ("Bearer", False),
        ("Bearer ", False),
        (key, False),
        (f"Basic {key}", False),
        (f"Token {key}", False),
        (f"Bearer {key}x", False),
        (f"Bearer {key[:-1]}", False),
        (f"Bearer {key} {key}", False),
        (f"Bearer rk-{'0' * 16}-{key[20:]}", False),
        (f"Bearer,{key}", False),
        ("Bearer \u00e9\u00e9", False),
        ("     ", False),
        ("Bearer " + "A" * 50_000, False),
    ]


JSON_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=40), st.integers(-(10**60), 10**60))
JSON_VALUES = st.recursive(
    JSON_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12
)


def request_objects(video_id: str) -> st.SearchStrategy[dict[str, Any]]:
    text_or_any = st.text(max_size=60) | JSON_VALUES
    return st.fixed_dictionaries(
        {},
        optional={
            "prompt": text_or_any,
            "model": st.sampled_from(["sora-2", "sora-2-pro"]) | text_or_any,
            "seconds": st.sampled_from(["4", "8", "12"]) | text_or_any,
            "size": st.sampled_from(["720x1280", "1280x720"]) | text_or_any,
            "session_id": text_or_any,
            "video": st.fixed_dictionaries({}, optional={"id": st.just(video_id) | text_or_any}) | JSON_VALUES,
            "input_reference": st.fixed_dictionaries({}, optional={"image_url": text_or_any, "file_id": text_or_any}) | JSON_VALUES,
            "name": text_or_any,
        },
    )


JSON_TYPES = st.sampled_from(
    [
        "application/json",
        "APPLICATION/JSON",
        "application/json; charset=utf-8",
        "application/json;charset=latin-1",
        "application/json; charset=\u00ff\u00fe",
        "application/vnd.api+json",
        "application/json; boundary=zz",
    ]
)
OTHER_TYPES = st.sampled_from(
    [
        None,
        "",
        "text/plain",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "multipart/form-data",
        "multipart/form-data; boundary=",
        'multipart/form-data; boundary=""',
        "multipart/form-data; boundary=zz",
        'multipart/form-data; boundary="zz"',
        "; boundary=zz",
        ";;;",
        "multipart/mixed; boundary=zz",
        "*/*",
        "multipart/form-data; charset=utf-8",
        "multipart/form-data; boundary=" + "b" * 300,
        "application/jsonx",
        "text/json",
        "multipart/form-data; BOUNDARY=zz",
        "multipart/form-data ; boundary = zz",
    ]
)


@st.composite
def multipart_bodies(draw: st.DrawFn, video_id: str) -> tuple[str, bytes]:
    boundary = draw(st.text(alphabet=string.ascii_letters + string.digits + "'()+_,-./:=?", min_size=1, max_size=70))
    names = st.sampled_from(
        ["prompt", "model", "seconds", "size", "session_id", "video[id]", "video", "input_reference[image_url]", "name"]
    ) | st.text(max_size=10)
    parts = []
    for _ in range(draw(st.integers(0, 5))):
        name = draw(names)
        value = draw(
            st.one_of(
                st.just(video_id.encode()),
                st.binary(max_size=100),
                st.text(max_size=50).map(str.encode),
                st.integers(4000, 200_000).map(lambda n: b"v" * n),
            )
        )
        disposition = draw(
            st.sampled_from(
                [
                    f'form-data; name="{name}"',
                    f"form-data; name={name}",
                    f'form-data; name="{name}"; filename="f.bin"',
                    f"form-data; name*=UTF-8''{quote(name)}",
                    "form-data",
                    f'form-data; filename="x"; name="{name}"',
                    "",
                ]
            )
        )
        head = f"Content-Disposition: {disposition}\r\n" if disposition else ""
        if draw(st.booleans()):
            head += draw(
                st.sampled_from(["Content-Type: application/octet-stream\r\n", "Content-Type: text/plain; charset=\u00ff\r\n", "X: y\r\n"])
            )
        parts.append(f"--{boundary}\r\n{head}\r\n".encode() + value + b"\r\n")
    body = b"".join(parts) + (f"--{boundary}--\r\n".encode() if draw(st.booleans()) else b"")
    mutation = draw(st.integers(0, 4))
    if mutation == 1 and body:
        body = body[: draw(st.integers(0, len(body) - 1))]
    elif mutation == 2:
        body = body.replace(b"\r\n\r\n", b"\r\n", draw(st.integers(1, 3)))
    elif mutation == 3 and body:
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.binary(max_size=40)) + body[at:]
    content_type = draw(
        st.sampled_from(
            [
                f"multipart/form-data; boundary={boundary}",
                f'multipart/form-data; boundary="{boundary}"',
                f"MULTIPART/FORM-DATA; Boundary={boundary}; charset=utf-8",
                "multipart/form-data",
                "multipart/form-data; boundary=",
                f"multipart/form-data; boundary={boundary}x",
            ]
        )
    )
    return content_type, body


@st.composite
def deep_json(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(1, 20_000) | st.sampled_from([900, 1000, 2000, 10_000]))
    shape = draw(st.sampled_from(["open", "list", "object", "in_field", "in_video"]))
    if shape == "open":
        return b"[" * depth
    if shape == "list":
        return b"[" * depth + b"]" * depth
    if shape == "object":
        return b'{"a":' * depth + b"1" + b"}" * depth
    inner = b"[" * depth + b"]" * depth
    if shape == "in_field":
        return b'{"prompt": "x", "session_id": ' + inner + b"}"
    return b'{"prompt": "x", "video": {"id": ' + inner + b"}}"


@st.composite
def bodies(draw: st.DrawFn, video_id: str) -> tuple[str | None, bytes]:
    kind = draw(st.sampled_from(["raw", "json", "truncated", "garbage", "deep", "multipart", "huge"]))
    if kind == "raw":
        return draw(JSON_TYPES | OTHER_TYPES), draw(st.binary(max_size=3000))
    if kind == "json":
        return draw(JSON_TYPES), json.dumps(draw(request_objects(video_id) | JSON_VALUES)).encode()
    if kind == "truncated":
        document = json.dumps(draw(request_objects(video_id))).encode()
        cut = document[: draw(st.integers(0, max(0, len(document) - 1)))]
        return draw(JSON_TYPES), cut + draw(st.sampled_from([b"", b",", b"}}", b"\x00", b"\xff", b"'", b"/*"]))
    if kind == "garbage":
        return draw(JSON_TYPES), draw(
            st.text(max_size=200).map(str.encode)
            | st.sampled_from(
                [
                    b"{oops",
                    b"\xef\xbb\xbf{}",
                    b"NaN",
                    b"[1,]",
                    b'{"a":1,}',
                    b"\xff\xfe{\x00}\x00",
                    b'{"prompt": "\\x41"}',
                    b"{" * 3,
                    b'"\\ud800',
                ]
            )
        )
    if kind == "deep":
        return draw(JSON_TYPES), draw(deep_json())
    if kind == "multipart":
        return draw(multipart_bodies(video_id))
    size = draw(st.integers(5_000, 600_000))
    field = draw(st.sampled_from(["prompt", "session_id", "model", "video", "junk"]))
    value: Any = {"id": "v" * size} if field == "video" else "x" * size
    return draw(JSON_TYPES), json.dumps({"prompt": "p", field: value}).encode()


def expected_body_error(content_type: str | None, body: bytes) -> str | None:
    """What the relay must answer itself for this body (README: invalid JSON, multipart without a boundary).

    "invalid_json" / "invalid_multipart": the relay must refuse it with that code, upstream untouched.
    "either": no firm expectation (JSON too deep for Python's parser, a form with ambiguous parts);
    the relay may refuse it or pass it on, but never fail on it.
    None: the relay has no business refusing the body as unparseable.
    """
    if not body:
        return None
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == "application/json" or media.endswith("+json"):
        try:
            json.loads(body)
        except RecursionError:
            return "either"
        except ValueError:
            return "invalid_json"
        return None
    if media == "multipart/form-data":
        match = re.search(r";\s*boundary\s*=\s*([^;]*)", content_type or "", re.IGNORECASE)
        boundary = match.group(1).strip().strip('"') if match else ""
        if not boundary:
            return "invalid_multipart"
        # The relay also refuses parts two parsers could read differently (tests/test_body.py has
        # those rules case by case); generated forms are full of them.
        return "either"
    return None


def post_routes(video_id: str) -> list[str]:
    return [
        "/openai/v1/videos",
        "/openai/videos",
        f"/openai/v1/videos/{video_id}/remix",
        "/openai/v1/videos/edits",
        "/openai/v1/videos/extensions",
        "/openai/v1/videos/characters",
        "/openai/videos/characters",
    ]


# -- paths and methods -------------------------------------------------------------------------------


@FUZZ
@given(path=paths(), method=st.sampled_from(METHODS), authed=st.booleans(), with_body=st.booleans())
def test_generated_paths_and_methods(relay: Relay, sandbox: Sandbox, path: str, method: str, authed: bool, with_body: bool) -> None:
    w = world(relay, sandbox)
    headers = bearer(w.key) if authed else {}
    body = json.dumps(CREATE).encode() if with_body and method not in ("GET", "HEAD") else None
    if body is not None:
        headers["content-type"] = "application/json"
    response = send(relay, method, path, headers=headers, content=body)
    sane(relay, sandbox, response, method)
    status = response.status_code
    event(f"{status}")
    if method in ("PUT", "PATCH", "OPTIONS"):
        # No route takes these: unknown route, wrong method, or the trailing-slash redirect.
        assert status in (307, 404, 405), (status, response.text[:300])
    if status == 405:
        error = assert_envelope(response, method=method, code="method_not_allowed")
        assert response.headers.get("allow"), dict(response.headers)
        assert error is None or method in error["message"]
    if status == 404 and not upstream_requests(sandbox):
        error = assert_envelope(response, method=method)
        assert error is None or error["code"] in ("not_found", "video_not_found", "character_not_found"), error


@pytest.mark.parametrize(
    "method, path, status, code",
    [
        ("GET", "/", 404, "not_found"),
        ("GET", "/openai/v1", 404, "not_found"),
        ("GET", "/openai/v1/", 404, "not_found"),
        ("GET", "/openai/v1/videos/a/b/c", 404, "not_found"),
        ("GET", "/openai/v1/videos/", 404, "not_found"),  # no slash-fixing redirect (Location from Host)
        ("GET", "/openai/v1/videos/x/", 404, "not_found"),
        ("GET", "//", 404, "not_found"),
        ("GET", "/openai/v1/../../etc/passwd", 404, "not_found"),
        ("GET", "/openai/v1/videos/%2e%2e/%2e%2e/healthz", 404, "not_found"),
        ("GET", "/openai/v1/videos/%00", 404, "video_not_found"),
        ("GET", "/openai/v1/videos/%ff%fe", 404, "video_not_found"),
        ("GET", "/openai/v1/videos/" + "x" * 50_000, 404, "video_not_found"),
        ("GET", "/openai/v1/videos/\u2603\U0001f600", 404, "video_not_found"),
        ("GET", "/openai/v1/videos/characters/%00%01", 404, "character_not_found"),
        ("DELETE", "/openai/v1/videos/%0d%0aSet-Cookie:%20x", 404, "not_found"),  # Mount's ".*" stops at a newline
        ("POST", "/openai/v1/videos/%00/remix", 404, "video_not_found"),
        ("GET", "/openai/v1/videos/x/content?variant=thumbnail", 404, "video_not_found"),
        ("PUT", "/openai/v1/videos", 405, "method_not_allowed"),
        ("PATCH", "/openai/v1/videos/x", 405, "method_not_allowed"),
        ("OPTIONS", "/openai/videos/edits", 405, "method_not_allowed"),
        ("DELETE", "/openai/v1/videos/characters/c", 405, "method_not_allowed"),
        ("GET", "/openai/v1/videos/edits", 404, "video_not_found"),  # read as GET /videos/{video_id}
        ("PUT", "/openai/v1/videos/extensions", 405, "method_not_allowed"),
        ("POST", "/healthz", 405, "method_not_allowed"),
    ],
)
def test_route_table(relay: Relay, sandbox: Sandbox, method: str, path: str, status: int, code: str) -> None:
    w = world(relay, sandbox)
    response = send(relay, method, path, headers=bearer(w.key))
    assert response.status_code == status, response.text[:300]
    assert_envelope(response, method=method, code=code)
    assert upstream_requests(sandbox) == []


# -- headers ------------------------------------------------------------------------------------------


@FUZZ
@given(
    data=st.data(),
    route=st.sampled_from(
        [
            ("POST", "/openai/v1/videos"),
            ("GET", "/openai/v1/videos"),
            ("GET", "/openai/v1/videos/video_nope"),
            ("POST", "/openai/videos/edits"),
        ]
    ),
    extra=st.lists(st.tuples(HEADER_NAMES, header_values()), max_size=6),
    n_auth=st.integers(0, 3),
    n_api_key=st.integers(0, 2),
)
def test_generated_headers(
    relay: Relay, sandbox: Sandbox, data: st.DataObject, route: tuple[str, str], extra: list[tuple[str, bytes]], n_auth: int, n_api_key: int
) -> None:
    w = world(relay, sandbox)
    variants = auth_variants(w.key)
    authorizations = [data.draw(st.sampled_from(variants)) for _ in range(n_auth)]
    api_keys = [
        data.draw(
            st.sampled_from(
                [
                    (w.key, True),
                    (" " + w.key, True),
                    ("", False),
                    (w.key + "\u00e9", False),
                    ("Bearer " + w.key, False),
                    ("rk-" + "f" * 16 + "-x", False),
                ]
            )
        )
        for _ in range(n_api_key)
    ]
    headers: list[tuple[bytes, bytes]] = [(b"authorization", value.encode("utf-8")) for value, _ in authorizations]
    headers += [(b"x-api-key", value.encode("utf-8")) for value, _ in api_keys]
    # The extras may not carry credentials of their own: that would muddle the expectation.
    extra = [
        (name, value)
        for name, value in extra
        if name.lower() not in ("authorization", "x-api-key", "host", "transfer-encoding", "content-length")
    ]
    headers += [(name.encode(), value) for name, value in extra]
    method, path = route
    content = json.dumps(CREATE).encode() if method == "POST" else None
    if content is not None and not any(name.lower() == "content-type" for name, _ in extra):
        headers.append((b"content-type", b"application/json"))
    response = send(relay, method, path, headers=headers, content=content)
    reached = sane(relay, sandbox, response, method)
    event(f"{method} {path}: {response.status_code} from the {'upstream' if reached else 'relay'}")
    presented_anywhere = any(w.key in value for value, _ in authorizations + api_keys)
    if not presented_anywhere:
        assert response.status_code == 401 and not reached, (response.status_code, response.text[:300])
        assert_envelope(response, code="invalid_api_key")
    clean_bearer = n_auth == 1 and authorizations[0][1] and n_api_key == 0
    clean_api_key = n_auth == 0 and n_api_key == 1 and api_keys[0][1]
    if clean_bearer or clean_api_key:
        assert response.status_code not in (401, 403), response.text[:300]


@pytest.mark.parametrize(
    "content_type, body, status, code",
    [
        ("multipart/form-data", b"--x\r\n", 400, "invalid_multipart"),
        ("multipart/form-data; boundary=", b"--x\r\n", 400, "invalid_multipart"),
        ('multipart/form-data; boundary=""', b"--x\r\n", 400, "invalid_multipart"),
        ("multipart/form-data; boundary=   ", b"--x\r\n", 400, "invalid_multipart"),
        ("multipart/form-data; charset=utf-8", b"--x\r\n", 400, "invalid_multipart"),
        ("multipart/form-data; boundary=" + "b" * 300, b"--x\r\n", 400, "invalid_multipart"),
        ("MULTIPART/FORM-DATA;;;", b"--x\r\n", 400, "invalid_multipart"),
        ("application/json", b"{oops", 400, "invalid_json"),
        ("application/json; charset=\u00ff", b"\xff\xfe", 400, "invalid_json"),
        ("Application/Problem+JSON", b"[1,", 400, "invalid_json"),
        ("application/json; boundary=x", b"--x--", 400, "invalid_json"),
        ("application/json", b"[" * 10_000, 400, "invalid_json"),
        ("application/json", b'{"a":' * 10_000, 400, "invalid_json"),
        ("application/json", b'{"prompt": "x", "seconds": ' + b"9" * 5_000 + b"}", 400, "invalid_json"),
    ],
)
def test_weird_content_types_answered_by_the_relay(
    relay: Relay, sandbox: Sandbox, content_type: str, body: bytes, status: int, code: str
) -> None:
    w = world(relay, sandbox)
    for path in ("/openai/v1/videos", "/openai/v1/videos/characters", "/openai/v1/videos/edits", "/openai/v1/videos/extensions"):
        response = send(relay, "POST", path, headers={**bearer(w.key), "content-type": content_type.encode()}, content=body)
        assert response.status_code == status, (path, response.text[:300])
        assert_envelope(response, code=code)
    assert upstream_requests(sandbox) == []
    assert_pool_healthy(relay)


@pytest.mark.parametrize(
    "content_type",
    [
        'multipart/form-data; boundary="zz"',
        "multipart/form-data; BOUNDARY=zz; charset=utf-8",
        "multipart/form-data;boundary=zz",
    ],
)
def test_odd_but_usable_content_types_reach_the_upstream(relay: Relay, sandbox: Sandbox, content_type: str) -> None:
    w = world(relay, sandbox)
    body = b'--zz\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nA cat\r\n--zz--\r\n'
    response = send(relay, "POST", "/openai/v1/videos", headers={**bearer(w.key), "content-type": content_type.encode()}, content=body)
    assert sane(relay, sandbox, response, "POST"), "the relay refused a body it has no reason to look into"


@pytest.mark.parametrize("content_type", ["; boundary=zz", "text/plain; charset=\u00e9", "application/octet-stream", "", None])
def test_bodies_the_relay_cannot_read_are_refused(relay: Relay, sandbox: Sandbox, content_type: str | None) -> None:
    # An upstream may still read them as JSON, and the relay would not have seen the model or source video.
    w = world(relay, sandbox)
    own_video = w.video()
    clear_requests(sandbox)
    headers = {**bearer(w.key)} | ({"content-type": content_type.encode()} if content_type is not None else {})
    for path in ("/openai/v1/videos", "/openai/v1/videos/edits", f"/openai/v1/videos/{own_video}/remix"):
        response = send(relay, "POST", path, headers=headers, content=b'{"prompt": "A cat", "model": "sora-2-pro"}')
        assert response.status_code == 400, (path, response.text[:300])
        assert_envelope(response, code="unsupported_content_type")
    assert upstream_requests(sandbox) == []


# -- bodies -------------------------------------------------------------------------------------------


@FUZZ
@given(data=st.data(), route_index=st.integers(0, 6), idempotent=st.booleans())
def test_generated_bodies_on_post_routes(relay: Relay, sandbox: Sandbox, data: st.DataObject, route_index: int, idempotent: bool) -> None:
    w = world(relay, sandbox)
    vid = w.video()
    clear_requests(sandbox)
    content_type, body = data.draw(bodies(vid), label="content_type, body")
    path = post_routes(vid)[route_index]
    headers: dict[str, Any] = bearer(w.key)
    if content_type is not None:
        headers["content-type"] = content_type.encode("utf-8")
    if idempotent:
        headers["idempotency-key"] = f"idem-{time.perf_counter_ns()}"
    response = send(relay, "POST", path, headers=headers, content=body)
    reached = sane(relay, sandbox, response, "POST")
    expected = expected_body_error(content_type, body)
    event(f"expected {expected}; {response.status_code} from the {'upstream' if reached else 'relay'}")
    if expected in ("invalid_json", "invalid_multipart"):
        assert response.status_code == 400 and not reached, (expected, response.status_code, response.text[:300])
        assert_envelope(response, code=expected)
    elif expected == "either":
        pass  # sane() above is the whole expectation
    else:
        error = error_of(response)
        assert not (error and error.get("code") in ("invalid_json", "invalid_multipart")), (
            "the relay refused a body it should have forwarded",
            content_type,
            error,
        )


@FEW
@given(
    body=st.binary(min_size=1, max_size=40_000),
    content_type=JSON_TYPES | OTHER_TYPES,
    chunked=st.booleans(),
)
def test_random_bytes_on_follow_up_routes(relay: Relay, sandbox: Sandbox, body: bytes, content_type: str | None, chunked: bool) -> None:
    """Bodies on routes that take none (GET/DELETE) and on the characters route, sent whole or chunked."""
    w = world(relay, sandbox)
    headers: dict[str, Any] = bearer(w.key)
    if content_type is not None:
        headers["content-type"] = content_type.encode("utf-8")
    for method, path in (
        ("POST", "/openai/v1/videos/characters"),
        ("GET", "/openai/v1/videos"),
        ("DELETE", "/openai/v1/videos/video_nope"),
    ):
        clear_requests(sandbox)
        content: Any = iter([body[i : i + 997] for i in range(0, len(body), 997)]) if chunked else body
        response = send(relay, method, path, headers=headers, content=content)
        sane(relay, sandbox, response, method)


# -- query strings --------------------------------------------------------------------------------------


LIMITS = st.one_of(
    st.none(),
    st.integers(-5, 130).map(str),
    st.sampled_from(["", " 5", "5 ", "+5", "05", "5_0", "1e2", "0x10", "\u0663", "5.0", "-0", "NaN", "1" * 5_000, "%", "\x00"]),
    st.text(max_size=20),
)
ORDERS = st.one_of(st.none(), st.sampled_from(["asc", "desc", "", "ASC", "Desc", " asc", "asc\x00", "random"]), st.text(max_size=10))


def canonical_limit(raw: str | None) -> int | None:
    if raw is None or raw == "":
        return 20
    if re.fullmatch(r"0|[1-9][0-9]{0,2}", raw) and int(raw) <= 100:
        return int(raw)
    return None


@FUZZ
@given(
    data=st.data(),
    limit=LIMITS,
    order=ORDERS,
    junk=st.none() | st.binary(max_size=40).map(percent) | st.text(max_size=30).map(lambda s: quote(s, safe="=&;+%")),
)
def test_list_query_strings(
    relay: Relay, sandbox: Sandbox, data: st.DataObject, limit: str | None, order: str | None, junk: str | None
) -> None:
    w = world(relay, sandbox)
    if not w.videos:
        for _ in range(3):
            w.videos.append(relay.client.post("/openai/v1/videos", json=CREATE, headers=bearer(w.key)).json()["id"])
        clear_requests(sandbox)
    after = data.draw(
        st.one_of(st.none(), st.just(""), st.sampled_from(w.videos), st.text(max_size=30), st.just("video_" + "0" * 32)), label="after"
    )
    params = {name: value for name, value in (("limit", limit), ("order", order), ("after", after)) if value is not None}
    query = urlencode(params)
    if junk is not None:
        query = query + "&" + junk if query else junk
    response = send(relay, "GET", "/openai/v1/videos?" + query, headers=bearer(w.key))
    reached = sane(relay, sandbox, response, "GET")
    assert not reached, "listing must not reach an upstream"
    assert response.status_code in (200, 400), response.text[:300]
    if junk is not None:
        return  # junk may repeat or override a parameter; the invariants above are what must hold
    valid_limit = canonical_limit(limit)
    valid_order = order is None or order in ("asc", "desc")
    valid_after = after is None or after == "" or after in w.videos
    if response.status_code == 200:
        page = response.json()
        assert page["object"] == "list"
        ids = [item["id"] for item in page["data"]]
        assert set(ids) <= set(w.videos), ids
        if valid_limit is not None:
            assert len(ids) <= valid_limit
    else:
        error = assert_envelope(response, code=None)
        assert error is not None
        blamed = {"invalid_limit": valid_limit is not None, "invalid_order": valid_order, "invalid_cursor": valid_after}
        assert error["code"] in blamed, error
        assert not blamed[error["code"]], ("the relay refused a valid parameter", params, error)
    if valid_limit is not None and valid_order and valid_after:
        assert response.status_code == 200, (params, response.text[:300])


VARIANTS = st.one_of(
    st.sampled_from(["video", "thumbnail", "spritesheet", "", "VIDEO", "video ", "thumbnail\x00", "../video", "video&variant=x", "%"]),
    st.text(max_size=30),
)


@FEW
@given(
    variant=st.none() | VARIANTS,
    extra=st.lists(st.tuples(st.sampled_from(["range", "if-range", "if-none-match", "if-modified-since"]), header_values()), max_size=2),
)
def test_content_variants(relay: Relay, sandbox: Sandbox, variant: str | None, extra: list[tuple[str, bytes]]) -> None:
    w = world(relay, sandbox)
    vid = w.video()
    clear_requests(sandbox)
    url = f"/openai/v1/videos/{vid}/content" + ("" if variant is None else "?" + urlencode({"variant": variant}))
    headers = [(b"authorization", f"Bearer {w.key}".encode())] + [(name.encode(), value) for name, value in extra]
    response = send(relay, "GET", url, headers=headers)
    reached = sane(relay, sandbox, response, "GET")
    if variant is None or variant in ("video", "thumbnail", "spritesheet"):
        assert reached, (variant, response.status_code, response.text[:300])
    else:
        assert response.status_code == 400 and not reached, (variant, response.status_code, response.text[:300])
        assert_envelope(response, code="invalid_variant")


# -- body size ------------------------------------------------------------------------------------------


def small_world(make_relay: Any, sandbox: Sandbox) -> World:
    existing = getattr(make_relay, "_hostile_small", None)
    if existing is None:
        existing = World(make_relay(max_body_bytes=1024), sandbox)
        make_relay._hostile_small = existing
    clear_requests(sandbox)
    return existing  # type: ignore[no-any-return]


@FEW
@given(
    route_index=st.integers(0, 6),
    size=st.integers(1025, 300_000),
    content_type=JSON_TYPES | OTHER_TYPES,
    chunked=st.booleans(),
    authed=st.just(True) | st.booleans(),
)
def test_oversized_bodies_are_413_and_never_reach_the_upstream(
    make_relay: Any, sandbox: Sandbox, route_index: int, size: int, content_type: str | None, chunked: bool, authed: bool
) -> None:
    w = small_world(make_relay, sandbox)
    vid = w.video()
    clear_requests(sandbox)
    body = (b'{"prompt": "' + b"x" * size)[:size]
    headers: dict[str, Any] = bearer(w.key) if authed else {}
    if content_type is not None:
        headers["content-type"] = content_type.encode("utf-8")
    content: Any = iter([body[i : i + 4096] for i in range(0, len(body), 4096)]) if chunked else body
    path = post_routes(vid)[route_index]
    response = send(w.relay, "POST", path, headers=headers, content=content)
    assert upstream_requests(sandbox) == [], "an oversized body reached the upstream"
    if authed:
        assert response.status_code == 413, (path, response.status_code, response.text[:300])
        assert_envelope(response, code="request_too_large")
    else:
        assert response.status_code == 401, response.text[:300]
        assert_envelope(response, code="invalid_api_key")
    assert_pool_healthy(w.relay)


@pytest.mark.parametrize("chunked", [False, True])
def test_body_at_the_limit_is_accepted(make_relay: Any, sandbox: Sandbox, chunked: bool) -> None:
    w = small_world(make_relay, sandbox)
    body = json.dumps({**CREATE, "pad": ""}).encode()
    body = body[:-2] + b" " * (1024 - len(body)) + body[-2:]
    assert len(body) == 1024
    content: Any = iter([body[:500], body[500:]]) if chunked else body
    response = send(w.relay, "POST", "/openai/v1/videos", headers={**bearer(w.key), "content-type": "application/json"}, content=content)
    assert response.status_code == 200, response.text[:300]
    assert len(upstream_requests(sandbox)) == 1


# -- keys ---------------------------------------------------------------------------------------------


def test_no_key_and_bad_keys_on_every_route(relay: Relay, sandbox: Sandbox) -> None:
    w = world(relay, sandbox)
    vid = w.video()
    expired = relay.issue_key("expired", expires_at=time.time() - 1)
    revoked = relay.issue_key("revoked")
    relay.state.store.revoke_key("revoked", time.time())
    forbidden = relay.issue_key("forbidden")
    run_sql(relay.state.store, "UPDATE keys SET permissions = '[\"anthropic\"]' WHERE name = 'forbidden'")
    relay.state.reload()
    relay.state.keys.clear()
    clear_requests(sandbox)
    credentials: list[tuple[str, list[tuple[str, str]], int]] = [
        ("none", [], 401),
        ("empty bearer", [("authorization", "Bearer ")], 401),
        ("no scheme", [("authorization", w.key)], 401),
        ("basic", [("authorization", f"Basic {w.key}")], 401),
        ("malformed", [("authorization", "Bearer not-a-relay-key")], 401),
        ("unknown id", [("authorization", "Bearer rk-0123456789abcdef-" + "A" * 43)], 401),
        ("wrong secret", [("authorization", f"Bearer {w.key[:20]}{'A' * 43}")], 401),
        ("uppercase id", [("authorization", f"Bearer {w.key[:3]}{w.key[3:19].upper()}{w.key[19:]}")], 401),
        ("bad x-api-key", [("x-api-key", w.key + "x")], 401),
        ("bearer shadows x-api-key", [("authorization", "Bearer rk-0123456789abcdef-nope"), ("x-api-key", w.key)], 401),
        ("expired", [("authorization", f"Bearer {expired}")], 401),
        ("revoked", [("x-api-key", revoked)], 401),
        ("forbidden", [("authorization", f"Bearer {forbidden}")], 403),
    ]
    routes = [
        ("POST", "/openai/v1/videos"),
        ("GET", "/openai/v1/videos"),
        ("GET", f"/openai/v1/videos/{vid}"),
        ("GET", f"/openai/v1/videos/{vid}/content"),
        ("DELETE", f"/openai/v1/videos/{vid}"),
        ("POST", f"/openai/v1/videos/{vid}/remix"),
        ("POST", "/openai/v1/videos/edits"),
        ("POST", "/openai/v1/videos/extensions"),
        ("POST", "/openai/v1/videos/characters"),
        ("GET", "/openai/v1/videos/characters/char_1"),
        ("HEAD", "/openai/videos"),
    ]
    failures = []
    for label, headers, status in credentials:
        for method, path in routes:
            body = json.dumps({**CREATE, "video": {"id": vid}}).encode() if method == "POST" else None
            response = send(relay, method, path, headers=[*headers, ("content-type", "application/json")], content=body)
            try:
                assert response.status_code == status, response.text[:200]
                assert_envelope(response, method=method, code="invalid_api_key" if status == 401 else "insufficient_permissions")
            except AssertionError as error:
                failures.append((label, method, path, str(error)))
    assert failures == []
    assert upstream_requests(sandbox) == [], "a refused request reached the upstream"
    assert_pool_healthy(relay)


# -- findings -------------------------------------------------------------------------------------------
# The tests below pin bugs these properties found; they fail until the relay is fixed.


@pytest.mark.parametrize(
    "path, field",
    [
        ("/openai/v1/videos", "session_id"),
        ("/openai/videos/characters", "session_id"),
        ("/openai/v1/videos/edits", "session_id"),
        ("/openai/v1/videos/edits", "video.id"),
        ("/openai/v1/videos/extensions", "video.id"),
        # Fields the relay does not read go upstream as they are: one that cannot encode them crashed (a 500).
        ("/openai/v1/videos", "prompt"),
        ("/openai/v1/videos", "metadata"),
        ("/openai/v1/videos/edits", "\\udfff key"),
    ],
)
def test_json_lone_surrogate_escapes(relay: Relay, sandbox: Sandbox, path: str, field: str) -> None:
    """`"\\ud800"` is grammatical JSON that decodes to a string UTF-8 cannot encode."""
    w = world(relay, sandbox)
    value = '"\\ud800"'
    body = {
        "video.id": f'{{"prompt": "x", "video": {{"id": {value}}}}}',
        "prompt": '{"prompt": "a \\ud83d\\ude00 cat, then \\ud800 alone", "model": "sora-2"}',
        "metadata": f'{{"prompt": "x", "metadata": {{"tags": ["ok", {value}]}}}}',
        "session_id": f'{{"prompt": "x", "session_id": {value}}}',
    }.get(field, f'{{"prompt": "x", "{field}": 1}}')
    response = send(relay, "POST", path, headers={**bearer(w.key), "content-type": "application/json"}, content=body.encode())
    sane(relay, sandbox, response, "POST")
    # No id or session can hold a lone surrogate: the relay says so instead of guessing.
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"


def test_json_surrogate_pairs_are_characters(relay: Relay, sandbox: Sandbox) -> None:
    """An escaped pair is one character beyond the BMP (an emoji): forwarded as sent."""
    w = world(relay, sandbox)
    body = b'{"prompt": "a \\ud83d\\ude00 cat", "model": "sora-2"}'
    response = send(relay, "POST", "/openai/v1/videos", headers={**bearer(w.key), "content-type": "application/json"}, content=body)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "method, suffix",
    [("POST", "%2Fremix"), ("POST", "%2fremix"), ("GET", "%2Fcontent"), ("DELETE", "%2Fcontent"), ("GET", "%2F")],
)
def test_an_encoded_slash_is_no_path_separator(relay: Relay, sandbox: Sandbox, method: str, suffix: str) -> None:
    """`POST /videos/{id}%2Fremix` started a paid remix: the route table matched the decoded path,
    while a front proxy's rules see a path no route has."""
    w = world(relay, sandbox)
    own = w.video()
    clear_requests(sandbox)
    body = json.dumps({"prompt": "again"}).encode() if method == "POST" else None
    headers = {**bearer(w.key), "content-type": "application/json"}
    response = send(relay, method, f"/openai/v1/videos/{own}{suffix}", headers=headers, content=body)
    assert (response.status_code, response.json()["error"]["code"]) == (404, "not_found")
    assert upstream_requests(sandbox) == []


@pytest.mark.parametrize(
    "headers",
    [
        [("authorization", "Bearer {bad}"), ("authorization", "Bearer {key}")],
        [("authorization", "Bearer {key}"), ("authorization", "Bearer {key}")],
        [("x-api-key", "{bad}"), ("x-api-key", "{key}")],
    ],
)
def test_the_key_is_sent_once(relay: Relay, sandbox: Sandbox, headers: list[tuple[str, str]]) -> None:
    """With two, the relay read the last while a front proxy checking the first saw another caller."""
    w = world(relay, sandbox)
    sent = [(name, value.format(key=w.key, bad="rk-nope")) for name, value in headers]
    response = send(relay, "GET", "/openai/v1/videos", headers=sent)
    assert (response.status_code, response.json()["error"]["code"]) == (401, "invalid_api_key")
    assert "more than one" in response.json()["error"]["message"]
    assert w.key not in response.text
    # One of each is still fine: the Authorization header first, x-api-key otherwise.
    both = [("authorization", f"Bearer {w.key}"), ("x-api-key", "rk-nope")]
    assert send(relay, "GET", "/openai/v1/videos", headers=both).status_code == 200


@pytest.mark.parametrize("name", ["user-agent", "accept", "content-type", "idempotency-key", "openai-project"])
def test_trailing_whitespace_in_forwarded_headers(relay: Relay, sandbox: Sandbox, name: str) -> None:
    """uvicorn's default parser (httptools) hands `User-Agent: sdk/1.0 ` over with the trailing space.

    The relay forwards such a value byte for byte and httpx/h11 refuses to send it: the client gets
    a 502 "upstream unreachable" although the upstream was never contacted, and three such requests
    rest the account for RELAY_SERVER_ERROR_COOLDOWN_SECONDS, so every other caller gets 503s.
    """
    w = world(relay, sandbox)
    value = {"content-type": b"application/json "}.get(name, b"value-1 ")
    statuses = []
    for _ in range(3):
        headers = [(b"authorization", f"Bearer {w.key}".encode()), (b"content-type", b"application/json"), (name.encode(), value)]
        if name == "content-type":
            headers = [headers[0], headers[2]]
        if name == "idempotency-key":
            headers[-1] = (name.encode(), f"idem-{time.perf_counter_ns()} ".encode())
        statuses.append(send(relay, "POST", "/openai/v1/videos", headers=headers, content=json.dumps(CREATE).encode()).status_code)
    clean = relay.client.post("/openai/v1/videos", json=CREATE, headers=bearer(w.key)).status_code
    state = relay.state.store.account(ACCOUNT).state
    reached = len(upstream_requests(sandbox))
    assert (statuses, clean, state) == ([200, 200, 200], 200, "active"), (
        f"three requests with {name}: {value!r} got {statuses} (upstream saw {reached} requests in all); "
        f"then a clean create got {clean} and the account is {state!r}"
    )


def test_upstream_echo_of_a_lone_surrogate_model(relay: Relay, sandbox: Sandbox) -> None:
    """An upstream answers a create with a model "\\ud800" (escaped) in its 200.

    The relay refuses such a model from a client (400, see test_json_lone_surrogate_escapes), but an
    upstream may still send one. The relay must not fail after the upstream has started a paid job
    it then cannot track. (A fault rule plays the upstream.)
    """
    w = world(relay, sandbox)
    resource = (
        '{"id": "video_surrogate", "object": "video", "model": "\\ud800", "status": "queued", "progress": 0, '
        '"created_at": 1, "seconds": "4", "size": "720x1280"}'
    )
    sandbox.fault(status=200, raw_body=resource, content_type="application/json", times=1)
    response = send(
        relay,
        "POST",
        "/openai/v1/videos",
        headers={**bearer(w.key), "content-type": "application/json"},
        content=b'{"prompt": "x", "model": "sora-2"}',
    )
    assert response.status_code == 200, response.text[:300]
    assert relay.client.get("/openai/v1/videos/video_surrogate", headers=bearer(w.key)).status_code < 500


def test_another_keys_video_cannot_be_smuggled_into_an_edit(relay: Relay, sandbox: Sandbox) -> None:
    w = world(relay, sandbox)
    own = w.video()
    bob = relay.issue_key("bob")
    theirs = relay.client.post(
        "/openai/v1/videos", json={**CREATE, "model": "sora-2-pro", "size": "1792x1024"}, headers=bearer(bob)
    ).json()["id"]
    clear_requests(sandbox)

    def edit(parts: list[bytes]) -> httpx.Response:
        body = b"".join(b"--B\r\nContent-Disposition: " + part + b"\r\n" for part in parts) + b"--B--\r\n"
        return relay.client.post(
            "/openai/v1/videos/edits", content=body, headers={**bearer(w.key), "content-type": "multipart/form-data; boundary=B"}
        )

    prompt = b'form-data; name="prompt"\r\n\r\nx'
    repeated = edit(
        [prompt, b'form-data; name="video[id]"\r\n\r\n' + own.encode(), b'form-data; name="video[id]"\r\n\r\n' + theirs.encode()]
    )
    assert repeated.status_code == 400 and assert_envelope(repeated, code="duplicate_field")
    # Read quote-aware, this is the field video[id] (not a file), so ownership is checked.
    disguised = edit([prompt, b'form-data; name="video[id]"; x="; filename=z"\r\n\r\n' + theirs.encode()])
    assert disguised.status_code == 404 and assert_envelope(disguised, code="video_not_found")
    as_json = relay.client.post("/openai/v1/videos/edits", json={"prompt": "x", "video": theirs}, headers=bearer(w.key))
    assert as_json.status_code == 400 and assert_envelope(as_json, code="invalid_value")
    assert upstream_requests(sandbox) == []


def test_two_content_types_are_refused(relay: Relay, sandbox: Sandbox) -> None:
    # The relay would read the first and an upstream might read the last.
    w = world(relay, sandbox)
    headers = [
        ("authorization", f"Bearer {w.key}"),
        ("content-type", "application/json"),
        ("content-type", "multipart/form-data; boundary=B"),
    ]
    response = relay.client.post("/openai/v1/videos", content=b'{"prompt": "x", "model": "sora-2"}', headers=headers)
    assert response.status_code == 400 and assert_envelope(response, code="invalid_request_headers")
    assert upstream_requests(sandbox) == []


@pytest.mark.parametrize(
    "content, content_type",
    [
        (b'{"name": "Mossy", "video": "video_1"}', "application/json"),
        (b'--B\r\nContent-Disposition: form-data; name="video"\r\n\r\nvideo_1\r\n--B--\r\n', "multipart/form-data; boundary=B"),
    ],
)
def test_a_character_is_not_told_to_name_a_source_video(relay: Relay, sandbox: Sandbox, content: bytes, content_type: str) -> None:
    """Characters take an uploaded video only: guidance about `video[id]` sent their callers astray."""
    w = world(relay, sandbox)
    response = send(relay, "POST", "/openai/v1/videos/characters", headers={**bearer(w.key), "content-type": content_type}, content=content)
    assert response.status_code == 400
    assert "video[id]" not in response.text and '{"id"' not in response.text
