"""Which credential-proxy a sandbox-manager asks for egress: its machine's (``CORRAL_SANDBOX_EGRESS_HOST``)
alone, never another's when that one is down; any (the queue group) when none is configured."""

from __future__ import annotations

from typing import Any, cast

import pytest

from corral.bus import NoResponders
from corral.contracts.egress import EGRESS_SOCKET_NAME, EgressOpened, EgressPolicy, egress_host_rpc, egress_rpc
from corral.contracts.operation import Operation
from corral.sandbox_manager.egress import BusEgress, EgressUnavailable
from corral.sandbox_manager.settings import SandboxSettings

SESSION = "sesn_01JD3ABCDEFGHJKMNPQRSTVWXY"


class RecordingBus:
    """The part of ``Bus`` that ``BusEgress`` uses: answers ``open`` on ``serving`` subjects only."""

    def __init__(self, *serving: str) -> None:
        self.serving = set(serving)
        self.asked: list[tuple[str, str]] = []

    async def call(self, op: Operation[Any, Any], request: Any, *, timeout: float) -> Any:
        self.asked.append((op.subject, op.queue))
        if op.subject not in self.serving:
            raise NoResponders(op.subject)
        if op.name == "open":
            return EgressOpened(session_id=SESSION, directory=f"/run/egress/{SESSION}", socket_name=EGRESS_SOCKET_NAME)
        return None


def egress(bus: RecordingBus, host: str | None) -> BusEgress:
    return BusEgress(cast(Any, bus), host=host)


async def test_with_an_egress_host_open_and_close_go_to_that_hosts_credential_proxy() -> None:
    bus = RecordingBus(egress_host_rpc("node-1", "open"), egress_host_rpc("node-1", "close"))
    mount = await egress(bus, "node-1").open(SESSION, EgressPolicy())
    await egress(bus, "node-1").close(SESSION)
    assert mount.host_directory == f"/run/egress/{SESSION}"
    assert bus.asked == [
        (egress_host_rpc("node-1", "open"), "credential-proxy.node-1"),
        (egress_host_rpc("node-1", "close"), "credential-proxy.node-1"),
    ]


async def test_without_one_any_credential_proxy_is_asked() -> None:
    bus = RecordingBus(egress_rpc("open"))
    await egress(bus, None).open(SESSION, EgressPolicy())
    assert bus.asked == [(egress_rpc("open"), "credential-proxy")]


async def test_when_its_hosts_credential_proxy_is_down_there_is_no_egress_rather_than_another_machines() -> None:
    bus = RecordingBus(egress_rpc("open"), egress_host_rpc("node-2", "open"))  # others serve; node-1's does not
    with pytest.raises(EgressUnavailable, match="CORRAL_CREDENTIAL_PROXY_HOST_ID=node-1"):
        await egress(bus, "node-1").open(SESSION, EgressPolicy())
    assert bus.asked == [(egress_host_rpc("node-1", "open"), "credential-proxy.node-1")]


def test_the_egress_host_setting_is_empty_or_made_a_host_id(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CORRAL_SANDBOX_EGRESS_HOST", raising=False)
    assert SandboxSettings().egress_host == ""
    monkeypatch.setenv("CORRAL_SANDBOX_EGRESS_HOST", "node.1")
    assert SandboxSettings().egress_host == "node-1"
    monkeypatch.setenv("CORRAL_SANDBOX_EGRESS_HOST", "..")
    with pytest.raises(ValueError, match="not a host id"):
        SandboxSettings()
