"""Webhook targets: only public addresses (unless the operator allows private ones), checked
once and pinned, so the relay cannot be pointed at its own network."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import time
from typing import Any

import pytest
from hypothesis import given, strategies as st

from relay.webhooks.targets import (
    MAX_URL_LENGTH,
    UnresolvableTarget,
    UnsafeTarget,
    check_url,
    is_public,
    resolve_target,
)

NOT_PUBLIC = [
    "127.0.0.1",
    "127.255.0.9",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",
    "100.64.0.1",
    "100.127.255.254",
    "0.0.0.0",
    "224.0.0.1",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "192.0.2.10",
    "198.18.0.1",
    "[::1]",
    "[::]",
    "[fe80::1]",
    "[fc00::1]",
    "[fd12:3456::1]",
    "[fec0::1]",
    "[ff02::1]",
    "[ff0e::1]",
    "[2001:db8::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:169.254.169.254]",
    "[::7f00:1]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::1]",
    "[64:ff9b::a00:1]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b:1::a00:1]",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "[2606:4700:4700::1111]", "[::ffff:8.8.8.8]", "[2002:808:808::1]", "[64:ff9b::808:808]"]


def run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


@pytest.mark.parametrize("host", NOT_PUBLIC)
def test_a_literal_address_that_is_not_public_is_refused(host: str) -> None:
    with pytest.raises(UnsafeTarget, match="not a public internet address"):
        check_url(f"https://{host}/hook", allow_private=False)
    with pytest.raises(UnsafeTarget, match="not a public internet address"):
        run(resolve_target(f"https://{host}/hook", allow_private=False))


@pytest.mark.parametrize("host", NOT_PUBLIC)
def test_the_operator_may_allow_private_addresses(host: str) -> None:
    assert check_url(f"http://{host}/hook", allow_private=True).address == ipaddress.ip_address(host.strip("[]"))


@pytest.mark.parametrize("host", PUBLIC)
def test_a_public_literal_passes_and_is_pinned_as_given(host: str) -> None:
    pinned = run(resolve_target(f"https://{host}:8443/hook?a=1", allow_private=False))
    address = ipaddress.ip_address(host.strip("[]"))
    assert pinned.address == str(address)
    assert pinned.url == (f"https://[{address}]:8443/hook?a=1" if address.version == 6 else f"https://{address}:8443/hook?a=1")
    assert pinned.host_header == f"{host}:8443" and pinned.sni_hostname == host.strip("[]")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://8.8.8.8/hook", "https://"),
        ("ftp://8.8.8.8/hook", "https://"),
        ("/hook", "https://"),
        ("https:///hook", "https://"),
        ("hooks.example.com/hook", "https://"),
        ("https://user:pw@hooks.example.com/hook", "user name or password"),
        ("https://token@hooks.example.com/hook", "user name or password"),
        ("https://hooks.example.com:99999/hook", "port"),
        ("https://[::1/hook", "cannot be read"),
        ("https://hooks.example.com/" + "a" * MAX_URL_LENGTH, "longer than"),
    ],
)
def test_a_url_that_is_not_an_absolute_https_url_is_refused(url: str, message: str) -> None:
    with pytest.raises(UnsafeTarget, match=message):
        check_url(url, allow_private=False)


def test_http_is_allowed_only_with_private_targets_allowed() -> None:
    assert check_url("http://hooks.example.com/x", allow_private=True).port == 80
    with pytest.raises(UnsafeTarget):
        check_url("http://hooks.example.com/x", allow_private=False)
    with pytest.raises(UnsafeTarget):
        check_url("ftp://hooks.example.com/x", allow_private=True)


def test_a_host_name_is_checked_without_dns_until_it_is_resolved() -> None:
    checked = check_url("https://Hooks.Example.com/a/b?c=d", allow_private=False)
    assert checked.host == "hooks.example.com" and checked.port == 443 and checked.address is None


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "127.1", "2130706433"])
def test_names_that_resolve_to_loopback_are_refused(host: str) -> None:
    check_url(f"https://{host}/hook", allow_private=False)
    with pytest.raises(UnsafeTarget, match="not a public internet address"):
        run(resolve_target(f"https://{host}/hook", allow_private=False))


def test_allowed_private_names_are_pinned_with_the_name_as_host_and_sni() -> None:
    pinned = run(resolve_target("http://localhost:8080/hook?x=1", allow_private=True))
    assert pinned.address in ("127.0.0.1", "::1")
    address = f"[{pinned.address}]" if ":" in pinned.address else pinned.address
    assert pinned.url == f"http://{address}:8080/hook?x=1"
    assert pinned.host_header == "localhost:8080" and pinned.sni_hostname == "localhost"
    default_port = run(resolve_target("http://localhost/hook", allow_private=True))
    assert default_port.host_header == "localhost"


def fake_dns(monkeypatch: pytest.MonkeyPatch, answers: list[str]) -> None:
    def getaddrinfo(host: str, port: int, *args: Any, **kwargs: Any) -> list[Any]:
        return [(socket.AF_INET6 if ":" in answer else socket.AF_INET, socket.SOCK_STREAM, 6, "", (answer, port)) for answer in answers]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def test_one_private_answer_among_public_ones_is_enough_to_refuse(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["93.184.216.34", "10.0.0.7"])
    with pytest.raises(UnsafeTarget) as refused:
        run(resolve_target("https://hooks.example.com/x", allow_private=False))
    # The operator's addresses are not shown to the key holder.
    assert "10.0.0.7" not in str(refused.value) and "hooks.example.com" in str(refused.value)


def test_a_name_with_only_public_answers_is_pinned_to_the_first(monkeypatch: pytest.MonkeyPatch) -> None:
    fake_dns(monkeypatch, ["2606:2800:220:1::1", "93.184.216.34"])
    pinned = run(resolve_target("https://hooks.example.com/x", allow_private=False))
    assert pinned.url == "https://[2606:2800:220:1::1]/x"
    assert pinned.host_header == "hooks.example.com" and pinned.sni_hostname == "hooks.example.com"


def test_a_name_that_does_not_resolve_is_unresolvable(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(UnresolvableTarget, match="cannot be resolved"):
        run(resolve_target("https://hooks.example.com/x", allow_private=False))


def test_slow_dns_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    def getaddrinfo(*args: Any, **kwargs: Any) -> list[Any]:
        time.sleep(0.3)
        return []

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    with pytest.raises(UnresolvableTarget, match="in time"):
        run(resolve_target("https://hooks.example.com/x", allow_private=False, timeout=0.05))


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_ipv6_forms_of_an_ipv4_address_are_judged_as_the_ipv4_address(value: int) -> None:
    v4 = ipaddress.IPv4Address(value)
    mapped = ipaddress.IPv6Address(f"::ffff:{v4}")
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (value << 80))
    nat64 = ipaddress.IPv6Address(int(ipaddress.IPv6Address("64:ff9b::")) | value)
    assert is_public(mapped) == is_public(sixtofour) == is_public(nat64) == is_public(v4)
