"""The MCP client's destination rules: the egress address floor, and the operator's admitted host:port."""

from __future__ import annotations

import asyncio
import ipaddress

import pytest

from corral.credential_proxy.hosts import IPAddress
from corral.credential_proxy.mcp_destinations import (
    BadDestinationEntry,
    DestinationRefused,
    Rules,
    parse_destinations,
    parse_url,
)
from corral.credential_proxy.settings import DestinationSettings

PUBLIC = ipaddress.ip_address("93.184.215.14")
LOOPBACK = ipaddress.ip_address("127.0.0.1")


def rules(answer: list[IPAddress], admitted: str = "") -> Rules:
    async def resolve(host: str, port: int) -> list[IPAddress]:
        return answer

    return Rules(own_addresses=frozenset, admitted=parse_destinations(admitted.split(",")), resolve=resolve)


def test_a_public_name_is_vetted_to_its_addresses() -> None:
    assert asyncio.run(rules([PUBLIC]).vet("mcp.example.com", 443)) == (PUBLIC,)


@pytest.mark.parametrize("address", ["127.0.0.1", "10.1.2.3", "169.254.169.254", "192.0.2.5", "::1", "fd00::1"])
def test_names_resolving_to_refused_addresses_are_refused_naming_the_setting(address: str) -> None:
    with pytest.raises(DestinationRefused) as err:
        asyncio.run(rules([PUBLIC, ipaddress.ip_address(address)]).vet("mcp.example.com", 443))
    assert "CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS" in str(err.value) and address in str(err.value)


def test_only_the_exact_admitted_host_and_port_pass() -> None:
    admitted = rules([LOOPBACK], "127.0.0.1:8080,mcp.internal:9000")
    assert asyncio.run(admitted.vet(LOOPBACK, 8080)) == (LOOPBACK,)
    assert asyncio.run(admitted.vet("mcp.internal", 9000)) == (LOOPBACK,)
    for host, port in ((LOOPBACK, 8081), ("localhost", 8080), ("mcp.internal", 9001)):
        with pytest.raises(DestinationRefused):
            asyncio.run(admitted.vet(host, port))


def test_server_urls_must_be_http_with_a_host_and_no_user() -> None:
    assert parse_url("https://mcp.example.com/mcp").port == 443
    assert parse_url("http://127.0.0.1:8080/mcp").host == LOOPBACK
    for bad in ("ftp://x/mcp", "https:///mcp", "https://user:pw@mcp.example.com/", "http://[::1/mcp"):
        with pytest.raises(DestinationRefused):
            parse_url(bad)


def test_the_setting_takes_comma_separated_host_port_and_refuses_anything_else(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CORRAL_CREDENTIAL_PROXY_ALLOW_DESTINATIONS", "127.0.0.1:8080, [::1]:9000,mcp.internal:443")
    assert DestinationSettings().admitted == {
        (LOOPBACK, 8080),
        (ipaddress.ip_address("::1"), 9000),
        ("mcp.internal", 443),
    }
    for bad in ("127.0.0.1", "::1:9000", "host:99999", "bad host:80"):
        with pytest.raises(BadDestinationEntry):
            parse_destinations([bad])
