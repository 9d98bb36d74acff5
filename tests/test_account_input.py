"""What an operator gives for an account (base_api, proxy, priority, a piped token) is checked
before anything is written, and rows stored before those checks are listed without their
passwords and without crashing (issue 18)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import TOKEN

from relay.accounts import AccountInputError, add_account, redact_proxy, set_base_api, set_priority, validate_base_api, validate_proxy
from relay.config import Settings
from relay.crypto import SecretBox, generate_key
from relay.opening import open_store
from relay.store import Store
from relay.store.location import parse_location
from relay.upstream import shown_url

PASSWORD = "hunter2-pw"

BAD_BASE_APIS = [
    f"http://user:{PASSWORD}@127.0.0.1:8090/v1",
    f"http://{PASSWORD}@127.0.0.1:8090/v1",
    "http://127.0.0.1:99999/v1",
    "http://127.0.0.1:0/v1",
    "http://127.0.0.1:/v1",
    "http://127.0.0.1:80a/v1",
    "http://[::1",
    f"http://u:{PASSWORD}@[::1",
    "http://[not-an-address]/v1",
    "ftp://127.0.0.1/v1",
    "localhost:8091/v1",
    "http:///v1",
    "http://127.0.0.1/v1?x=1",
    "http://127.0.0.1/v1#top",
    "http://h\u00fcst/v1",
    "http://host /v1",
    "http://host/v1\n",
    "",
]

GOOD_BASE_APIS = [
    ("http://127.0.0.1:8090/v1", "http://127.0.0.1:8090/v1"),
    ("https://api.openai.com/v1/", "https://api.openai.com/v1"),
    ("http://[::1]:8090/v1", "http://[::1]:8090/v1"),
    ("http://localhost:65535", "http://localhost:65535"),
    ("https://gateway.example", "https://gateway.example"),
]

BAD_PROXIES = [
    f"http://u:{PASSWORD}@[::1",
    f"http://u:{PASSWORD}@proxy.local:99999",
    f"socks5://u:{PASSWORD}@proxy.local:1080/path",
    "ftp://proxy.local:21",
    "proxy.local:3128",
    "http://:3128",
    "",
]

GOOD_PROXIES = [
    "http://proxy.local:3128",
    f"http://user:{PASSWORD}@proxy.local:3128",
    "https://proxy.local:443/",
    f"socks5://ops:{PASSWORD}@127.0.0.1:1080",
    "socks5h://127.0.0.1:1080",
    "http://[::1]:3128",
]


# -- the library --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", BAD_BASE_APIS)
def test_a_base_api_the_relay_cannot_send_to_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(AccountInputError) as refused:
        validate_base_api(url)
    message = str(refused.value)
    assert message.startswith("base_api ") and "\n" not in message
    assert PASSWORD not in message and (not url or url not in message)


@pytest.mark.parametrize(("url", "stored"), GOOD_BASE_APIS)
def test_a_usable_base_api_is_accepted(url: str, stored: str) -> None:
    assert validate_base_api(url) == stored


@pytest.mark.parametrize("url", BAD_PROXIES)
def test_a_proxy_the_relay_cannot_use_is_refused_without_repeating_it(url: str) -> None:
    with pytest.raises(AccountInputError) as refused:
        validate_proxy(url)
    assert str(refused.value).startswith("the proxy ") and PASSWORD not in str(refused.value)


@pytest.mark.parametrize("url", GOOD_PROXIES)
def test_a_usable_proxy_is_accepted(url: str) -> None:
    assert validate_proxy(url) == url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://h:1/v1", "http://h:1/v1"),
        (f"http://user:{PASSWORD}@h/v1", "http://***@h/v1"),
        (f"http://{PASSWORD}@h/v1", "http://***@h/v1"),
        # A password holding '/' or '#' ends at the last '@', even where a URL parser would stop earlier.
        (f"http://u:pa/ss{PASSWORD}@host/v1", "http://***@host/v1"),
        (f"http://u:pa#{PASSWORD}@[::1", "http://***@[::1"),
        (f"{PASSWORD}@nowhere", "***@nowhere"),
        # Refused as input now, a query or fragment may sit in a legacy row: a key in it is a secret too.
        (f"http://h:1/v1?key={PASSWORD}", "http://h:1/v1?***"),
        (f"http://h/v1#{PASSWORD}", "http://h/v1#***"),
        (f"http://u:{PASSWORD}@h/v1?key={PASSWORD}#x", "http://***@h/v1?***"),
        (f"https://h/v1?a=1#{PASSWORD}", "https://h/v1?***"),
        ("", ""),
        (None, None),
    ],
)
def test_shown_urls_never_carry_a_password(url: str | None, shown: str | None) -> None:
    assert shown_url(url) == redact_proxy(url) == shown


@pytest.fixture
def store(tmp_path: Path) -> tuple[Store, SecretBox]:
    return open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=generate_key()))


def test_add_account_writes_nothing_for_bad_input(store: tuple[Store, SecretBox]) -> None:
    db, box = store
    for options in (
        {"base_api": BAD_BASE_APIS[0]},
        {"base_api": "http://127.0.0.1:99999/v1"},
        {"proxy": BAD_PROXIES[0]},
        {"priority": 10**20},
        {"priority": -1_000_001},
    ):
        with pytest.raises(AccountInputError):
            add_account(db, box, name="a", type="openai-responses", credential="tok", **options)
    assert db.list_accounts() == []
    add_account(db, box, name="a", type="openai-responses", credential="tok", priority=-1_000_000)
    add_account(db, box, name="b", type="openai-responses", credential="tok", priority=1_000_000)
    assert [a.priority for a in db.list_accounts()] == [-1_000_000, 1_000_000]


def test_set_priority_and_set_base_api_check_their_input(store: tuple[Store, SecretBox]) -> None:
    db, box = store
    add_account(db, box, name="a", type="openai-responses", credential="tok", base_api="http://127.0.0.1:8090/v1")
    with pytest.raises(AccountInputError):
        set_priority(db, "a", -99999999999999999999)
    with pytest.raises(AccountInputError):
        set_base_api(db, "a", BAD_BASE_APIS[0])
    assert set_base_api(db, "a", "http://127.0.0.1:8091/v1/") == "http://127.0.0.1:8091/v1"
    [account] = db.list_accounts()
    assert account.priority == 100 and account.base_api == "http://127.0.0.1:8091/v1"


# -- relayctl -----------------------------------------------------------------------------------


def accounts(cli: Any) -> list[dict[str, Any]]:
    return json.loads(cli("accounts", "list", "--json").output)  # type: ignore[no-any-return]


def add(cli: Any, *options: str, code: int = 0, input: str | None = None) -> Any:
    token = ("--token-stdin",) if input is not None else ("--token", TOKEN)
    return cli("accounts", "add", "a", "--type", "openai-responses", *token, *options, input=input, code=code)


@pytest.mark.parametrize(
    "options",
    [
        ("--base-api", BAD_BASE_APIS[0]),
        ("--base-api", "http://127.0.0.1:99999/v1"),
        ("--base-api", "http://[::1"),
        ("--proxy", BAD_PROXIES[0]),
        ("--proxy", f"socks5://u:{PASSWORD}@h:70000"),
    ],
)
def test_relayctl_refuses_a_bad_url_in_one_line_and_writes_nothing(cli: Any, tmp_path: Path, options: tuple[str, str]) -> None:
    result = add(cli, *options, code=1)
    assert result.output.startswith("Error: ") and result.output.count("\n") == 1, result.output
    assert PASSWORD not in result.output and "Traceback" not in result.output
    assert not (tmp_path / "relay.db").exists()


def test_relayctl_priorities_are_bounded(cli: Any) -> None:
    result = add(cli, "--priority", "-99999999999999999999", code=2)
    assert "-1000000<=x<=1000000" in result.output and "Traceback" not in result.output
    add(cli, "--base-api", "http://127.0.0.1:8090/v1", "--priority", "-5")
    for priority in ("-99999999999999999999", "1000001", "99999999999999999999999999"):
        result = cli("accounts", "priority", "a", "--", priority, code=2)
        assert "is not in the range" in result.output
    cli("accounts", "priority", "a", "--", "-1000000")
    assert accounts(cli)[0]["priority"] == -1_000_000


def test_relayctl_token_stdin_takes_one_line(cli: Any, tmp_path: Path) -> None:
    result = add(cli, input=f"{TOKEN}\nsecond-token\n", code=2)
    assert "2 non-empty lines" in result.output and "second-token" not in result.output
    assert not (tmp_path / "relay.db").exists()
    add(cli, "--base-api", "http://127.0.0.1:8090/v1", input=f"\n{TOKEN}\n\n")
    result = cli("accounts", "rotate", "a", "--token-stdin", input=f"{TOKEN}-new\n{TOKEN}-other\n", code=2)
    assert "non-empty lines" in result.output
    store, box = open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=os.environ["RELAY_SECRET_KEY"]))
    assert box.decrypt(store.account("a").credential_encrypted) == TOKEN


def test_relayctl_base_api_changes_the_url(cli: Any) -> None:
    add(cli, "--base-api", "http://127.0.0.1:8090/v1")
    result = cli("accounts", "base-api", "a", BAD_BASE_APIS[0], code=1)
    assert PASSWORD not in result.output
    assert json.loads(cli("accounts", "base-api", "a", "http://127.0.0.1:8091/v1/", "--json").output) == {
        "name": "a",
        "base_api": "http://127.0.0.1:8091/v1",
    }
    assert accounts(cli)[0]["base_api"] == "http://127.0.0.1:8091/v1"
    cli("accounts", "base-api", "nobody", "http://127.0.0.1:8091/v1", code=1)


LEGACY = {
    "userinfo": f"http://user:{PASSWORD}@127.0.0.1:1/v1",
    "port": "http://127.0.0.1:99999/v1",
    "broken": f"http://u:{PASSWORD}@[::1",
    "slash": f"http://u:pa/ss{PASSWORD}@127.0.0.1:1/v1",
}


def test_rows_stored_before_the_checks_are_listed_masked_and_doctor_fails_them(cli: Any, tmp_path: Path) -> None:
    add(cli, "--base-api", "http://127.0.0.1:1/v1")
    store, box = open_store(Settings(database=parse_location(tmp_path / "relay.db"), secret_key=os.environ["RELAY_SECRET_KEY"]))
    for name, url in LEGACY.items():
        # As an older relayctl wrote them: straight into the table.
        store.insert_account(name=name, type="openai-responses", credential_encrypted=box.encrypt(TOKEN), base_api=url, priority=100, now=0)
    store.set_account_proxy("port", box.encrypt(f"http://u:{PASSWORD}@[::1"))
    outputs = [
        cli("accounts", "list").output,
        cli("accounts", "list", "--json").output,
        *(cli("accounts", "show", name, *flag).output for name in LEGACY for flag in ((), ("--json",))),
    ]
    for output in outputs:
        assert PASSWORD not in output and "***" in output
    shown = {row["name"]: row["base_api"] for row in accounts(cli)}
    assert shown["userinfo"] == "http://***@127.0.0.1:1/v1" and shown["port"] == LEGACY["port"]
    assert json.loads(cli("accounts", "show", "port", "--json").output)["proxy"] == "http://***@[::1"

    doctor = cli("doctor", "--json", code=1)
    assert PASSWORD not in doctor.output
    checks = {check["check"]: check for check in json.loads(doctor.output)}
    for name in LEGACY:
        assert checks[f"reach {name}"]["status"] == "fail"
        assert checks[f"reach {name}"]["fix"] == f"relayctl accounts base-api {name} URL"
    assert "port that is not a number from 1 to 65535" in checks["reach port"]["detail"]
    assert checks["accounts"]["detail"].startswith("1 of 5 usable")
    assert PASSWORD not in cli("doctor", code=1).output

    cli("accounts", "base-api", "userinfo", "http://127.0.0.1:1/v1")
    after = {check["check"]: check for check in json.loads(cli("doctor", "--json", code=1).output)}
    assert "base_api" not in after["reach userinfo"]["detail"]


@pytest.mark.parametrize("cap", ["1e300", "inf", "nan", "-1", "1000000001"])
def test_daily_cap_out_of_range_is_one_line_and_writes_nothing(cli: Any, cap: str) -> None:
    cli("accounts", "add", "main", "--type", "openai-responses", "--token", "t")
    result = cli("accounts", "limits", "main", "--max-video-seconds-per-day", cap, code=1)
    assert "daily cap" in result.output and "Traceback" not in result.output
    assert json.loads(cli("accounts", "limits", "main", "--json").output)["max_video_seconds_per_day"] is None
