"""The address floor under every session's policy, on this machine's real interfaces: a server listening
on all of them is never reached through a session's proxy, unless the operator lists its addresses.

Its own module, hence its own nats-server: the credential-proxies started here with their own settings
must be the only ones answering ``open``.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts.egress import EgressPolicy
from corral.credential_proxy.interfaces import read_interface_addresses
from tests.host_canary import serving_canary
from tests.integration.credential_proxy.conftest import OpenBaoServer, running
from tests.integration.credential_proxy.test_egress_proxy import opened, raw, socket_of

pytestmark = pytest.mark.integration


async def test_this_machines_own_addresses_are_refused_unless_the_operator_allows_them(
    bus: Bus, nats_url: str, socket_dir: Path, vault: OpenBaoServer
) -> None:
    """A server on every address of this machine; a session with unrestricted networking is refused it
    on each of this machine's addresses (but link-local, which needs a zone), and reaches it on those
    the operator lists."""
    own = sorted((a for a in read_interface_addresses() if not a.is_link_local), key=lambda a: (a.version, int(a)))
    assert any(not a.is_loopback for a in own), "this test needs an interface address besides loopback"

    def request(address: IPv4Address | IPv6Address, port: int) -> bytes:
        authority = f"[{address}]" if address.version == 6 else str(address)
        return f"GET http://{authority}:{port}/ HTTP/1.1\r\n\r\n".encode()

    with serving_canary() as canary:
        ports = [80, 443, canary.port]
        async with running(bus, nats_url, socket_dir / "floor", vault, ports=ports) as proxy:
            egress = await opened(proxy, EgressPolicy(allowed_hosts=None))
            for address in own:
                status, text = await raw(socket_of(egress), request(address, canary.port))
                assert canary.canary not in text, address
                assert status == 403 and "an address of this machine" in text, (address, text)
                assert "CORRAL_CREDENTIAL_PROXY_EGRESS_ALLOW_ADDRESSES" in text
        allowed = [str(a) for a in own]
        async with running(bus, nats_url, socket_dir / "floor", vault, ports=ports, allow_addresses=allowed) as proxy:
            egress = await opened(proxy, EgressPolicy(allowed_hosts=None))
            for address in own:
                status, text = await raw(socket_of(egress), request(address, canary.port))
                assert status == 200 and text == canary.canary, (address, text)
