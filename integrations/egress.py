"""Requests to customers' systems, guarded against server-side request forgery.

A URL's host is resolved once, by the connection's own resolver: every address it resolves to
must be public (not loopback, private, link-local and cloud metadata, CGNAT, multicast,
unspecified or reserved, nor an IPv6 form embedding one of those), unless the operator's
allow-list names a network holding the address, or the host (a name never permits link-local,
metadata or loopback addresses: only a network does). The connection goes to those
checked addresses only, and TLS still verifies the host name. Plain http only in development;
no redirect is followed; an answer is read up to a cap; each request has a timeout.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult

from integrations.errors import EgressFailed, EgressRefused, EgressTimeout

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
#: A host name's addresses as text (tests inject a fake DNS); the default asks the system.
Lookup = Callable[[str, int], Awaitable[list[str]]]
#: Networks that are never public, besides what :mod:`ipaddress` flags (CGNAT, benchmarking,
#: documentation, IETF protocol assignments, 6to4 relays' anycast, discard-only).
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8",
        "100.64.0.0/10",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "240.0.0.0/4",
        "100::/64",
        "2001:db8::/32",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
#: Never reached through an allowed host name, only through an allowed network holding them:
#: link-local (cloud metadata at 169.254.169.254, AWS's fd00:ec2::254) and loopback.
_NEVER_BY_NAME = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "127.0.0.0/8", "::1/128")
)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, 6to4, Teredo, NAT64, compatible)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or (int(ip) >> 32 == 0 and int(ip) > 1):
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    """Whether ``ip`` is an address of the public Internet (and so is any address it embeds)."""
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_v4(ip)
        if inner is not None and not is_public(inner):
            return False
    flagged = (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_unspecified
        or ip.is_reserved
        or not ip.is_global
    )
    return not flagged and not any(ip in n for n in _NOT_PUBLIC if n.version == ip.version)


@dataclass(frozen=True)
class AllowList:
    """The operator's exceptions: networks (CIDR) and host names a request may reach."""

    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    hosts: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        """From the setting's entries: each a CIDR, an address or a host name."""
        networks, hosts = [], set()
        for raw in entries:
            entry = raw.strip()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def permits(self, host: str, ip: IPAddress) -> bool:
        """Whether ``ip`` (an address of ``host``) may be reached.

        An allowed network permits what it holds; an allowed host name permits its addresses
        except link-local, metadata and loopback ones (and unspecified: it reaches this host).
        """
        plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
        if any(plain in n for n in self.networks if n.version == plain.version):
            return True
        if is_public(ip):
            return True
        if host.lower().rstrip(".") not in self.hosts:
            return False
        inner = _embedded_v4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
        return not any(
            a.is_unspecified or any(a in n for n in _NEVER_BY_NAME if n.version == a.version)
            for a in (ip, inner or ip)
        )


async def system_lookup(host: str, port: int) -> list[str]:
    """``host``'s addresses from the system's resolver."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


class _GuardedResolver(AbstractResolver):
    """aiohttp's resolver for one request: resolves, checks every address, returns them."""

    def __init__(self, lookup: Lookup, allow: AllowList) -> None:
        self._lookup = lookup
        self._allow = allow

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            found = await self._lookup(host, port)
        except OSError as e:
            raise EgressFailed(f"the host name does not resolve ({type(e).__name__})") from e
        out: list[ResolveResult] = []
        for text in dict.fromkeys(found):
            ip = ipaddress.ip_address(text.split("%", 1)[0])
            if not self._allow.permits(host, ip):
                raise EgressRefused("the host resolves to an address that is not public")
            af = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
            if family not in (socket.AF_UNSPEC, af):
                continue
            out.append(
                ResolveResult(hostname=host, host=str(ip), port=port, family=af, proto=0, flags=0)
            )
        if not out:
            raise EgressFailed("the host name has no address")
        return out

    async def close(self) -> None:
        return None


@dataclass(frozen=True)
class Answer:
    """What a customer's system answered (the body cut at the cap)."""

    status: int
    body: bytes
    truncated: bool
    content_type: str


class Egress:
    """Sends requests to customers' systems under the rules of this module."""

    def __init__(
        self,
        allow: Iterable[str] = (),
        *,
        https_only: bool = True,
        ca_file: Path | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        """``allow``: the operator's CIDRs and host names; ``https_only`` outside development."""
        self.allow = AllowList.parse(allow)
        self.https_only = https_only
        self._lookup = lookup or system_lookup
        self._ssl = ssl.create_default_context()
        if ca_file is not None:
            self._ssl.load_verify_locations(cafile=str(ca_file))

    def check_url(self, url: str) -> None:
        """Refuse a URL whose scheme, host or literal address may not be reached.

        Raises:
            EgressRefused: why (never the URL itself: it may hold a customer's token).
        """
        try:
            parts = urlsplit(url)
            host, _ = parts.hostname, parts.port
        except ValueError as e:
            raise EgressRefused("the URL is not valid (host or port)") from e
        allowed = ("https",) if self.https_only else ("https", "http")
        if parts.scheme not in allowed:
            raise EgressRefused(f"only {' or '.join(allowed)} URLs may be called")
        if not host or parts.username or parts.password:
            raise EgressRefused("the URL needs a host and no user information")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return  # a name: checked when it is resolved, by the connection itself
        if not self.allow.permits(host, ip):
            raise EgressRefused("the URL's address is not public")

    async def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | None = None,
        timeout_s: float,
        max_bytes: int,
    ) -> Answer:
        """Send one request; the answer, whatever its status (a 3xx is not followed).

        Raises:
            EgressRefused: the URL or an address of its host may not be reached.
            EgressFailed: no connection, TLS refused, or no answer within ``timeout_s``.
        """
        self.check_url(url)
        connector = aiohttp.TCPConnector(
            resolver=_GuardedResolver(self._lookup, self.allow),
            use_dns_cache=False,
            ssl=self._ssl,
            force_close=True,
        )
        timeout = aiohttp.ClientTimeout(total=timeout_s)
        try:
            async with (
                aiohttp.ClientSession(
                    connector=connector, timeout=timeout, trust_env=False, auto_decompress=True
                ) as session,
                session.request(
                    method,
                    url,
                    headers=dict(headers),
                    data=body,
                    allow_redirects=False,
                ) as r,
            ):
                return await _read(r, max_bytes)
        except (EgressRefused, EgressFailed):
            raise
        except TimeoutError as e:
            raise EgressTimeout(f"no answer within {timeout_s:g} s") from e
        except aiohttp.ClientSSLError as e:
            raise EgressFailed("the TLS handshake failed (certificate not trusted?)") from e
        except (aiohttp.ClientError, OSError, ValueError) as e:
            raise EgressFailed(f"the request failed ({type(e).__name__})") from e


async def _read(r: aiohttp.ClientResponse, max_bytes: int) -> Answer:
    """The answer's first ``max_bytes`` bytes; the rest is not read."""
    chunks: list[bytes] = []
    size = 0
    truncated = False
    async for chunk in r.content.iter_chunked(8192):
        chunks.append(chunk)
        size += len(chunk)
        if size > max_bytes:
            truncated = True
            break
    body = b"".join(chunks)[:max_bytes]
    return Answer(r.status, body, truncated, r.headers.get("Content-Type", ""))


def describe(e: Any) -> str:
    """A short reason for a failed request, safe to log (no URL, no payload)."""
    return str(e) if isinstance(e, EgressRefused | EgressFailed) else type(e).__name__
