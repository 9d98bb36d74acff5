"""Numbers a client or an upstream writes are read as ASCII digits only, and a client's value is
never echoed back whole in an error."""

from __future__ import annotations

import pytest
from conftest import Relay, Sandbox

from relay.errors import shown
from relay.quota import _count


@pytest.fixture
def keyed(relay: Relay, sandbox: Sandbox) -> tuple[Relay, dict[str, str]]:
    relay.add_account("a", sandbox.base_api())
    return relay, {"Authorization": f"Bearer {relay.issue_key()}"}


@pytest.mark.parametrize("limit", ["1_0", "\u0661\u0660", "\uff11\uff10", "+10", " 10", "10 ", "0x10", "1e1", "10.0", "\u00b9"])
def test_list_limit_takes_ascii_digits_only(keyed: tuple[Relay, dict[str, str]], limit: str) -> None:
    relay, headers = keyed
    response = relay.client.get("/openai/v1/videos", params={"limit": limit}, headers=headers)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_limit"


def test_list_limit_in_ascii_digits_still_works(keyed: tuple[Relay, dict[str, str]]) -> None:
    relay, headers = keyed
    assert relay.client.get("/openai/v1/videos", params={"limit": "10"}, headers=headers).status_code == 200
    assert relay.client.get("/openai/v1/videos", params={"limit": "007"}, headers=headers).status_code == 200


def test_list_limit_zero_asks_only_whether_any_exist(keyed: tuple[Relay, dict[str, str]]) -> None:
    """The contract's `limit` goes from 0 to 100."""
    relay, headers = keyed
    empty = relay.client.get("/openai/v1/videos", params={"limit": "0"}, headers=headers).json()
    assert (empty["data"], empty["has_more"]) == ([], False)
    assert relay.client.post("/openai/v1/videos", json={"prompt": "p"}, headers=headers).status_code == 200
    page = relay.client.get("/openai/v1/videos", params={"limit": "0"}, headers=headers).json()
    assert (page["data"], page["first_id"], page["has_more"]) == ([], None, True)


@pytest.mark.parametrize(
    ("path", "param"),
    [
        ("/openai/v1/videos", "limit"),
        ("/openai/v1/videos", "order"),
        ("/openai/v1/videos", "after"),
    ],
)
def test_long_values_are_not_echoed_whole(keyed: tuple[Relay, dict[str, str]], path: str, param: str) -> None:
    relay, headers = keyed
    value = "9" * 5000
    response = relay.client.get(path, params={param: value}, headers=headers)
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert value not in message
    assert len(message) < 300
    assert "5000 characters" in message


def test_long_video_id_is_not_echoed_whole(keyed: tuple[Relay, dict[str, str]]) -> None:
    relay, headers = keyed
    video_id = "video_" + "x" * 5000
    response = relay.client.get(f"/openai/v1/videos/{video_id}", headers=headers)
    assert response.status_code == 404
    assert len(response.json()["error"]["message"]) < 300


def test_content_length_in_other_digits_is_refused(keyed: tuple[Relay, dict[str, str]]) -> None:
    import anyio

    from relay.body import read_body
    from relay.errors import RelayError

    async def chunks():  # type: ignore[no-untyped-def]
        yield b"{}"

    for declared in ("1_0", "\u0661\u0660", "+2", "-1"):
        with pytest.raises(RelayError) as caught:
            anyio.run(lambda declared=declared: read_body(chunks(), declared_length=declared, limit=100))
        assert caught.value.code == "invalid_content_length"


def test_upstream_counts_in_other_digits_are_ignored() -> None:
    # isdigit() is true for these, and int() refuses or misreads them.
    assert _count("\u00b2") is None
    assert _count("\u0661\u0660") is None
    assert _count(" 42 ") == 42


def test_shown_keeps_short_values_and_cuts_long_ones() -> None:
    assert shown("desc") == "desc"
    cut = shown("a" * 1000)
    assert cut.startswith("a" * 64) and "1000 characters" in cut and len(cut) < 100
