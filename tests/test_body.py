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


def refused(body: bytes, content_type: str | None, names: frozenset[str] = NAMES) -> str:
    with pytest.raises(RelayError) as raised:
        body_fields(body, content_type, names)
    assert raised.value.status == 400
    return raised.value.code


def test_multipart_file_named_like_a_field_is_refused() -> None:
    body, content_type = multipart([("session_id", b"from-a-file", "s.txt")])
    assert refused(body, content_type) == "invalid_multipart"


# The relay decides on these fields and the upstream parses the body again: whatever two
# parsers could read differently is refused, or a key could slip past its allow-list or
# edit a video it does not own.
def test_repeated_fields_are_refused() -> None:
    body, content_type = multipart([("model", b"sora-2", None), ("prompt", b"x", None), ("model", b"sora-2-pro", None)])
    assert refused(body, content_type) == "duplicate_field"
    assert refused(b'{"model": "sora-2", "model": "sora-2-pro"}', "application/json") == "duplicate_field"
    assert refused(b'{"video": {"id": "mine", "id": "theirs"}}', "application/json", frozenset({"video[id]"})) == "duplicate_field"


def test_a_source_video_is_named_one_way_only() -> None:
    names = frozenset({"video[id]"})
    assert body_fields(b'{"video": {"id": "video_1"}}', "application/json", names) == {"video[id]": "video_1"}
    assert refused(b'{"video": "video_1"}', "application/json", names) == "invalid_value"
    body, content_type = multipart([("video", b"video_1", None)])
    assert refused(body, content_type, names) == "invalid_multipart"
    uploaded, content_type = multipart([("video", b"\x00mp4", "clip.mp4")])
    assert body_fields(uploaded, content_type, names) == {}
    # Both an id and a file: the relay would pick the id's account, the upstream might edit the file.
    for parts in (
        [("video[id]", b"video_1", None), ("video", b"\x00mp4", "clip.mp4")],
        [("video", b"\x00mp4", "clip.mp4"), ("video[id]", b"video_1", None)],
    ):
        both, content_type = multipart(parts)
        assert refused(both, content_type, names) == "invalid_multipart"


@pytest.mark.parametrize(
    "disposition",
    [
        b'form-data; name="model"; x="; filename=z"',  # a quoted ';' must not start a parameter
        b'form-data; name="model"; filename="a"; filename="b"',
        b'form-data; name="model"; name="prompt"',
        b"form-data; name*=UTF-8''model",
        b'form-data; name="model',
    ],
)
def test_ambiguous_dispositions(disposition: bytes) -> None:
    body = b"--B\r\nContent-Disposition: " + disposition + b"\r\n\r\nsora-2-pro\r\n--B--\r\n"
    try:
        fields = body_fields(body, "multipart/form-data; boundary=B", NAMES)
    except RelayError as error:
        assert error.status == 400
    else:
        # Read quote-aware, the first one is the field `model`, so it is seen and checked.
        assert fields == {"model": "sora-2-pro"}


def test_bare_line_feeds_and_repeated_dispositions_are_refused() -> None:
    bare_lf = (
        b'--B\nContent-Disposition: form-data; name="model"\n\nsora-2-pro\r\n'
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n\r\nx\r\n--B--\r\n'
    )
    assert refused(bare_lf, "multipart/form-data; boundary=B") == "invalid_multipart"
    twice = (
        b'--B\r\nContent-Disposition: form-data; name="prompt"\r\n'
        b'Content-Disposition: form-data; name="model"\r\n\r\nsora-2-pro\r\n--B--\r\n'
    )
    assert refused(twice, "multipart/form-data; boundary=B") == "invalid_multipart"


def test_multipart_quoted_boundary() -> None:
    body, _ = multipart([("session_id", b"q", None)], boundary="a b")
    assert body_fields(body, 'multipart/form-data; boundary="a b"', NAMES) == {"session_id": "q"}


def test_multipart_without_boundary_is_a_400() -> None:
    with pytest.raises(RelayError) as raised:
        body_fields(b"--x\r\n", "multipart/form-data", NAMES)
    assert raised.value.status == 400


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", "", None])
def test_other_content_types_are_refused(content_type: str | None) -> None:
    # The relay could not see the model in them, but an upstream might read them as JSON anyway.
    assert refused(b'{"model": "sora-2-pro"}', content_type) == "unsupported_content_type"
    assert body_fields(b"", content_type, NAMES) == {}


@given(
    st.binary(max_size=300),
    st.sampled_from(["application/json", "multipart/form-data; boundary=b", "text/plain", "", "multipart/form-data"]),
)
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


def form(parts: list[bytes], boundary: bytes = b"BB") -> bytes:
    return b"".join(b"--" + boundary + b"\r\n" + part + b"\r\n" for part in parts) + b"--" + boundary + b"--\r\n"


MODEL_PART = b'Content-Disposition: form-data; name="model"\r\n\r\nsora-2-pro'


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        # RFC 2231 continuations join into `model` in some parsers.
        (form([b'Content-Disposition: form-data; name*0="mod"; name*1="el"\r\n\r\nsora-2-pro']), "multipart/form-data; boundary=BB"),
        # Two boundaries: parsers keep the first or the last.
        (form([MODEL_PART]), "multipart/form-data; boundary=AA; boundary=BB"),
        # `--BBX` is neither a delimiter nor content (RFC 2046 forbids the delimiter inside parts).
        (form([MODEL_PART + b"\r\n--BBX"]), "multipart/form-data; boundary=BB"),
        # No closing delimiter.
        (b"--BB\r\n" + MODEL_PART + b"\r\n", "multipart/form-data; boundary=BB"),
        # A folded header line, joined to the one before by some parsers.
        (form([b'Content-Disposition: form-data\r\n ; name="model"\r\n\r\nsora-2-pro']), "multipart/form-data; boundary=BB"),
        (form([b'Content-Disposition: form-data\r\n\t; name="model"\r\n\r\nsora-2-pro']), "multipart/form-data; boundary=BB"),
        # A lone CR, a line break to some parsers.
        (form([b'X-A: b\rContent-Disposition: form-data; name="model"\r\n\r\nsora-2-pro']), "multipart/form-data; boundary=BB"),
        # Backslashes in quoted values: parsers disagree on what they escape.
        (form([MODEL_PART], boundary=b"AA"), 'multipart/form-data; boundary="\\AA"'),
        (form([b'Content-Disposition: form-data; x="\\\\"; name="model"\r\n\r\nsora-2-pro']), "multipart/form-data; boundary=BB"),
    ],
)
def test_forms_that_two_parsers_could_frame_differently_are_refused(body: bytes, content_type: str) -> None:
    assert refused(body, content_type) == "invalid_multipart"


def test_a_quoted_boundary() -> None:
    assert body_fields(form([MODEL_PART], boundary=b"B;B"), 'multipart/form-data; boundary="B;B"', NAMES) == {"model": "sora-2-pro"}


@pytest.mark.parametrize("preamble", [b"preamble text\r\n", b"x--BB--\r\n"])
def test_a_preamble_is_skipped_as_rfc_2046_says(preamble: bytes) -> None:
    # Even one holding a fake closing delimiter: it does not start a line, so the parts after it count.
    assert body_fields(preamble + form([MODEL_PART]), "multipart/form-data; boundary=BB", NAMES) == {"model": "sora-2-pro"}
