"""Finding session ids in opaque bodies without changing or fully parsing them."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, strategies as st

from relay.body import body_fields
from relay.errors import RelayError
from relay.sessions import session_hash, session_id

NAMES = frozenset({"session_id", "model"})


def multipart(parts: list[tuple[str, bytes, str | None]], boundary: str = "XyZ123") -> tuple[bytes, str]:
    chunks = []
    for name, value, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        chunks.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode() + value + b"\r\n")
    return b"".join(chunks) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_json_fields() -> None:
    body = json.dumps({"prompt": "p", "session_id": "abc", "model": "sora-2", "seconds": 8}).encode()
    assert body_fields(body, "application/json; charset=utf-8", NAMES) == {"session_id": "abc", "model": "sora-2"}


def test_json_non_object_and_non_string_values() -> None:
    assert body_fields(b"[1, 2]", "application/json", NAMES) == {}
    assert body_fields(b'{"session_id": {"x": 1}}', "application/json", NAMES) == {}
    assert body_fields(b'{"session_id": 42}', "application/json", NAMES) == {"session_id": "42"}


def test_invalid_json_is_a_400() -> None:
    with pytest.raises(RelayError) as raised:
        body_fields(b"{not json", "application/json", NAMES)
    assert raised.value.status == 400 and raised.value.code == "invalid_json"


def test_multipart_fields_skip_files() -> None:
    body, content_type = multipart(
        [
            ("input_reference", b"\x00\x01binary--XyZ12 not a boundary\r\n", "ref.png"),
            ("session_id", b"sess-42", None),
            ("model", b"sora-2-pro", None),
        ]
    )
    assert body_fields(body, content_type, NAMES) == {"session_id": "sess-42", "model": "sora-2-pro"}


def test_multipart_file_named_like_a_field_is_ignored() -> None:
    body, content_type = multipart([("session_id", b"from-a-file", "s.txt")])
    assert body_fields(body, content_type, NAMES) == {}


def test_multipart_quoted_boundary() -> None:
    body, _ = multipart([("session_id", b"q", None)], boundary="a b")
    assert body_fields(body, 'multipart/form-data; boundary="a b"', NAMES) == {"session_id": "q"}


def test_multipart_without_boundary_is_a_400() -> None:
    with pytest.raises(RelayError) as raised:
        body_fields(b"--x\r\n", "multipart/form-data", NAMES)
    assert raised.value.status == 400


def test_other_content_types_are_not_inspected() -> None:
    assert body_fields(b"session_id=abc", "application/x-www-form-urlencoded", NAMES) == {}


@given(st.binary(max_size=300), st.sampled_from(["application/json", "multipart/form-data; boundary=b", "text/plain", "", "multipart/form-data"]))
def test_body_fields_only_raises_relay_errors(body: bytes, content_type: str) -> None:
    try:
        fields = body_fields(body, content_type, NAMES)
    except RelayError as error:
        assert error.status == 400
    else:
        assert set(fields) <= NAMES


def test_session_id_sources_and_order() -> None:
    assert session_id({"session_id": "body"}, {"session-id": "header"}) == "body"
    assert session_id({}, {"session-id": "a"}) == "a"
    assert session_id({}, {"x-session-id": "b"}) == "b"
    assert session_id({}, {"session_id": "c"}) == "c"
    assert session_id({"session_id": "  "}, {}) is None
    assert session_id({}, {"session-id": "x" * 600}) is None


def test_session_hash_is_stable_and_not_the_id() -> None:
    assert session_hash("abc") == session_hash("abc") != session_hash("abd")
    assert "abc" not in session_hash("abc")
