"""Which URLs the relay posts webhooks to, and the address it connects to.

A key holder names the URL, and the relay posts from inside the operator's network, so a URL
must not reach anything that is not on the public internet: the metadata service, the
database, an admin port on localhost. Every address the host resolves to must be public (one
private answer is enough to refuse: DNS answers are the name owner's to choose), and the
delivery connects to the address that was checked, never resolving the name a second time
(which a rebinding DNS server could answer differently). The name still travels as the Host
header and the TLS SNI, so virtual hosting and certificate checks work as for any client.

settings.webhook_allow_private (development and tests) allows http:// and private targets.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass

import httpx

MAX_URL_LENGTH = 2048
# A name that does not resolve within this long is not worth waiting for: the attempt is retried.
RESOLVE_TIMEOUT_SECONDS = 5.0

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeTarget(ValueError):
    """A webhook URL the relay does not post to; the message says why and can be shown to its owner."""


class UnresolvableTarget(UnsafeTarget):
    """The URL's host has no address just now (DNS failed or was too slow): refused at creation,
    a connection error (retried later) at delivery."""


@dataclass(frozen=True)
class CheckedUrl:
    """A URL that is well formed for a webhook; `address` is set when its host is an IP literal."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host name, or the IP literal without brackets
    port: int
    address: Address | None


@dataclass(frozen=True)
class PinnedTarget:
    """Where one delivery goes: `url` has the checked address in place of the host name."""

    url: str
    host_header: str
    sni_hostname: str
    address: str


def is_public(address: Address) -> bool:
    """Whether an address is on the public internet, looking through IPv6 forms that carry an IPv4 address."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            return is_public(embedded)
        if address.is_site_local:
            return False
    elif address in _CGNAT:
        return False
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    # IPv4-mapped (::ffff:a.b.c.d), 6to4 (2002:aabb:ccdd::) and NAT64 (64:ff9b::a.b.c.d) all reach
    # the IPv4 address inside them. Older forms (IPv4-compatible ::a.b.c.d, Teredo, local-use
    # NAT64) are reserved or private in ipaddress's tables, so they are refused outright.
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def check_url(url: str, *, allow_private: bool) -> CheckedUrl:
    """The URL's parts if it is an absolute http(s) URL the relay may post to, without looking up its host."""
    if len(url) > MAX_URL_LENGTH:
        raise UnsafeTarget(f"The webhook URL is longer than {MAX_URL_LENGTH} characters.")
    try:
        parsed = httpx.URL(url)
        host = parsed.raw_host.decode("ascii").lower()
    except (httpx.InvalidURL, UnicodeError, ValueError):
        raise UnsafeTarget("The webhook URL cannot be read as a URL.") from None
    schemes = ("https", "http") if allow_private else ("https",)
    if parsed.scheme not in schemes or not host:
        raise UnsafeTarget(
            "The webhook URL must be an absolute https:// URL." if not allow_private else "The webhook URL must be an absolute http(s) URL."
        )
    if parsed.userinfo:
        raise UnsafeTarget("The webhook URL must not carry a user name or password.")
    port = parsed.port if parsed.port is not None else (443 if parsed.scheme == "https" else 80)
    if not 0 < port < 65536:
        raise UnsafeTarget("The webhook URL's port is out of range.")
    address = _ip_literal(host)
    if address is not None and not allow_private and not is_public(address):
        raise UnsafeTarget(f"The webhook URL's address {address} is not a public internet address.")
    return CheckedUrl(url=parsed, host=host, port=port, address=address)


def _ip_literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


async def resolve_target(url: str, *, allow_private: bool, timeout: float = RESOLVE_TIMEOUT_SECONDS) -> PinnedTarget:
    """Check the URL, resolve its host, check every address, and pin the delivery to the first one."""
    checked = check_url(url, allow_private=allow_private)
    addresses = [checked.address] if checked.address is not None else await _resolve(checked.host, checked.port, timeout)
    if not allow_private and not all(is_public(address) for address in addresses):
        # The addresses themselves are not shown: they would tell a key holder about the operator's network.
        raise UnsafeTarget(f"The webhook URL's host {checked.host} resolves to an address that is not a public internet address.")
    chosen = addresses[0]
    try:
        pinned = checked.url.copy_with(host=str(chosen))
    except (httpx.InvalidURL, ValueError):
        raise UnsafeTarget(f"The webhook URL's host {checked.host} resolves to an address the relay cannot connect to.") from None
    host_text = f"[{checked.host}]" if ":" in checked.host else checked.host
    host_header = host_text if checked.url.port is None else f"{host_text}:{checked.port}"
    return PinnedTarget(url=str(pinned), host_header=host_header, sni_hostname=checked.host, address=str(chosen))


async def _resolve(host: str, port: int, timeout: float) -> list[Address]:
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(timeout):
            answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except TimeoutError:
        raise UnresolvableTarget(f"The webhook URL's host {host} could not be resolved in time.") from None
    except (OSError, UnicodeError):
        raise UnresolvableTarget(f"The webhook URL's host {host} cannot be resolved.") from None
    addresses: list[Address] = []
    for _family, _type, _proto, _name, sockaddr in answers:
        try:
            if not isinstance(sockaddr[0], str):
                raise ValueError(sockaddr[0])
            address = ipaddress.ip_address(sockaddr[0])
        except ValueError:
            # Not an IP answer (cannot happen for INET/INET6): treat it as unsafe, not as absent.
            raise UnsafeTarget(f"The webhook URL's host {host} resolves to something that is not an IP address.") from None
        if address not in addresses:
            addresses.append(address)
    if not addresses:
        raise UnresolvableTarget(f"The webhook URL's host {host} has no address.")
    return addresses
