"""A restarted credential-proxy serves again every session whose grant is on the bus.

This module has its own nats-server, so the grants in ``corral_egress`` are only its own.
"""

from __future__ import annotations

import asyncio
import json
import time
from urllib.parse import urlsplit

import pytest

from corral.bus import Bus
from corral.contracts.egress import EGRESS_BUCKET, EgressOpened, EgressPolicy
from tests.integration.credential_proxy.conftest import new_session, running
from tests.integration.credential_proxy.test_egress_proxy import raw

pytestmark = pytest.mark.integration


async def test_a_restart_binds_every_grant_again_and_drops_one_whose_address_is_gone(bus: Bus, nats_url: str) -> None:
    session_id, gone_id = new_session(), new_session()
    grants = await bus.key_value(EGRESS_BUCKET, ttl_s=3600)
    async with running(bus, nats_url) as proxy:
        reply = await proxy.open(session_id, EgressPolicy(allowed_hosts=["pypi.org"]))
        assert reply.ok, reply.error
        egress = EgressOpened.model_validate(reply.result)
        where = urlsplit(egress.proxy_url)
        # a grant for a network that no longer exists on this host (as after a reboot)
        stale = {
            "session_id": gone_id,
            "listen_host": "192.0.2.1",
            "port": 3128,
            "policy": {"allowed_hosts": None, "allow_package_managers": False},
            "at": time.time(),
        }
        await grants.put(gone_id, json.dumps(stale).encode())

    with pytest.raises(ConnectionRefusedError):  # stopped: nothing listens there
        await asyncio.open_connection(where.hostname, where.port)

    async with running(bus, nats_url) as proxy:
        assert (await proxy.health()).details["egress_listeners"] == "1"
        status, text = await raw(egress.proxy_url, b"CONNECT example.com:443 HTTP/1.1\r\n\r\n")
        assert status == 403 and "example.com" in text, "the restored proxy applies the granted policy"
        assert await grants.get(gone_id) is None, "a grant whose address is gone is dropped"
        assert await grants.get(session_id) is not None
        again = await proxy.open(session_id, EgressPolicy(allowed_hosts=["pypi.org"]))
        assert again.ok and EgressOpened.model_validate(again.result).proxy_url == egress.proxy_url
        closed = await proxy.close(session_id)
        assert closed.ok

    async with running(bus, nats_url) as proxy:
        assert (await proxy.health()).details["egress_listeners"] == "0", "a closed session is not restored"
