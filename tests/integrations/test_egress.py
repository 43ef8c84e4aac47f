"""The egress guard against a real HTTPS endpoint on loopback (trustme), with the allow-list empty
unless a test sets one: addresses that are not public are refused before and after DNS."""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from integrations.egress import AllowList, Egress
from integrations.errors import EgressFailed, EgressRefused, EgressTimeout
from tests.fakes.customer import NAME, Answer

KIB = 1024


def fake_dns(table: dict[str, list[str]]) -> Any:
    """A resolver answering from ``table`` (a public-looking name mapped where a test wants)."""

    async def lookup(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"no such host {host}")
        return table[host]

    return lookup


def guard(ca: Any, allow: tuple[str, ...] = (), **kw: Any) -> Egress:
    return Egress(allow, ca_file=ca.pem_path, **kw)


async def send(egress: Egress, url: str, **kw: Any) -> Any:
    return await egress.request(
        "POST", url, headers={}, body=b"{}", timeout_s=kw.pop("timeout_s", 5), max_bytes=16 * KIB
    )


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "10.0.0.5", "169.254.169.254", "[::1]", "[::ffff:127.0.0.1]", "[fd00::1]"]
)
async def test_addresses_that_are_not_public_are_refused(
    customer: Any, tool_ca: Any, host: str
) -> None:
    customer.script()
    url = f"https://{host}:{customer.port}/hook"
    with pytest.raises(EgressRefused):
        await send(guard(tool_ca), url)
    assert customer.requests() == []


async def test_names_resolving_to_loopback_or_private_addresses_are_refused(
    customer: Any, tool_ca: Any
) -> None:
    customer.script()
    with pytest.raises(EgressRefused):  # the system's resolver: localhost is loopback
        await send(guard(tool_ca), customer.url(host="localhost"))
    dns = fake_dns({NAME: ["10.0.0.5"], "metadata.test": ["169.254.169.254"]})
    for name in (NAME, "metadata.test"):
        with pytest.raises(EgressRefused):
            await send(guard(tool_ca, lookup=dns), customer.url(host=name))
    # One private address among public ones is enough to refuse the name.
    mixed = fake_dns({NAME: ["93.184.215.14", "127.0.0.1"]})
    with pytest.raises(EgressRefused):
        await send(guard(tool_ca, lookup=mixed), customer.url(host=NAME))
    assert customer.requests() == []


async def test_the_allow_list_permits_a_network_or_a_name_and_tls_checks_the_name(
    customer: Any, tool_ca: Any
) -> None:
    customer.script(Answer.json({"n": 1}), Answer.json({"n": 2}), Answer.json({"n": 3}))
    dns = fake_dns({NAME: ["127.0.0.1"]})
    by_network = guard(tool_ca, ("127.0.0.0/8",), lookup=dns)
    got = await send(by_network, customer.url(host=NAME))
    assert got.status == 200 and got.body == b'{"n": 1}'
    assert customer.requests()[0].headers["host"].startswith(NAME)
    # A name allowed reaches loopback only through a network allowed as well.
    by_name = guard(tool_ca, ("localhost", "127.0.0.0/8", "::1/128"))
    assert (await send(by_name, customer.url(host="localhost"))).status == 200
    with pytest.raises(EgressRefused):
        await send(guard(tool_ca, ("localhost",)), customer.url(host="localhost"))
    # The name allowed, but not another: 127.0.0.1 is still refused for it.
    other = guard(tool_ca, ("localhost",), lookup=fake_dns({NAME: ["127.0.0.1"]}))
    with pytest.raises(EgressRefused):
        await send(other, customer.url(host=NAME))
    # A certificate the platform does not trust: no connection.
    untrusted = Egress(("127.0.0.1",))
    with pytest.raises(EgressFailed):
        await send(untrusted, customer.url())
    assert len(customer.requests()) == 2


async def test_http_is_refused_outside_development(customer: Any, tool_ca: Any) -> None:
    with pytest.raises(EgressRefused, match="https"):
        guard(tool_ca, ("127.0.0.1",)).check_url(f"http://127.0.0.1:{customer.port}/hook")
    guard(tool_ca, ("127.0.0.1",), https_only=False).check_url(
        f"http://127.0.0.1:{customer.port}/hook"
    )
    with pytest.raises(EgressRefused):
        guard(tool_ca).check_url("https://user:pw@example.com/hook")


async def test_a_redirect_is_not_followed(customer: Any, tool_ca: Any) -> None:
    customer.script(Answer.redirect(customer.url("/elsewhere")))
    got = await send(guard(tool_ca, ("127.0.0.1",)), customer.url())
    assert got.status == 302
    assert [r.path for r in customer.requests()] == ["/hook"]


async def test_a_slow_endpoint_times_out(customer: Any, tool_ca: Any) -> None:
    customer.script(Answer(delay_s=3))
    with pytest.raises(EgressTimeout):
        await send(guard(tool_ca, ("127.0.0.1",)), customer.url(), timeout_s=0.5)


async def test_a_large_answer_is_cut_at_the_cap(customer: Any, tool_ca: Any) -> None:
    customer.script(Answer(body=b"x" * (200 * KIB), content_type="text/plain"))
    got = await send(guard(tool_ca, ("127.0.0.1",)), customer.url())
    assert got.truncated and len(got.body) == 16 * KIB


@pytest.mark.parametrize(
    ("address", "by_name"),
    [
        ("10.20.0.7", True),  # private: what a name on the allow-list is for
        ("fd12::7", True),
        ("169.254.169.254", False),  # link-local, cloud metadata: never by name
        ("169.254.10.1", False),
        ("fe80::1", False),
        ("fd00:ec2::254", False),
        ("::ffff:169.254.169.254", False),
        ("127.0.0.1", False),  # loopback: only through an allowed network
        ("::1", False),
        ("0.0.0.0", False),
    ],
)
def test_an_allowed_name_never_reaches_metadata_or_loopback(address: str, by_name: bool) -> None:
    ip = ipaddress.ip_address(address)
    assert AllowList.parse(["crm.internal"]).permits("crm.internal", ip) is by_name
    assert not AllowList.parse(["crm.internal"]).permits("other.internal", ip)
    # An allowed network holding the address permits it, for any name: as the operator said.
    plain = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip
    network = ipaddress.ip_network(plain)
    assert AllowList.parse([str(network), "crm.internal"]).permits("crm.internal", ip)


async def test_an_allowed_name_resolving_to_metadata_is_refused(
    customer: Any, tool_ca: Any
) -> None:
    customer.script()
    dns = fake_dns({NAME: ["169.254.169.254"]})
    with pytest.raises(EgressRefused):
        await send(guard(tool_ca, (NAME,), lookup=dns), customer.url(host=NAME))
    assert customer.requests() == []
