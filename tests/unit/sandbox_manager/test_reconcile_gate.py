"""A call that needs a sandbox waits for start-up reconciliation, so a call re-sent the moment a
restarted manager is back finds its session's running sandbox (adopted, workspace intact) instead
of getting a second one beside it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import pytest

from corral.sandbox_manager.channel import AgentChannel
from corral.sandbox_manager.engine import SandboxUnavailable
from corral.sandbox_manager.sandboxes import Sandbox
from corral.sandbox_manager.sessions import Sessions


class FakeEngine:
    def __init__(self, message: str | None = None) -> None:
        self.message = message

    async def available(self) -> None:
        if self.message is not None:
            raise SandboxUnavailable(self.message)


class FakeChannel:
    closed = False

    def on_lost(self, callback: Callable[[], None]) -> None:
        pass


def sessions(engine: FakeEngine) -> Sessions:
    # nothing but the engine is reachable: provisioning a new sandbox here would fail the test
    nothing = cast(Any, None)
    return Sessions(
        nothing, nothing, nothing, cast(Any, engine), nothing, images=nothing, egress=nothing, repositories=nothing
    )


async def test_a_call_waits_for_reconciliation_and_gets_the_adopted_sandbox() -> None:
    live = sessions(FakeEngine())
    asking = asyncio.create_task(live.ensure("sesn_1", "env_1", {}))
    await asyncio.wait({asking}, timeout=0.05)
    assert not asking.done(), "nothing is provisioned before the previous run's sandboxes are adopted"

    adopted = Sandbox("c1", "corral-c1", "h", cast(AgentChannel, FakeChannel()), ready_ms=0.0)
    live.adopt("sesn_1", adopted)
    live.reconciled()

    async with asyncio.timeout(5):
        got = await asking
    assert got.sandbox is adopted


async def test_without_an_engine_a_call_is_told_at_once_rather_than_waiting() -> None:
    live = sessions(FakeEngine("no Docker engine answers"))

    async with asyncio.timeout(5):
        with pytest.raises(SandboxUnavailable, match="no Docker engine"):
            await live.ensure("sesn_1", "env_1", {})


async def test_a_call_waits_for_a_provisioning_that_adopted_its_sandbox_but_has_not_finished() -> None:
    # A sandbox is adopted before its session's repositories are cloned into it: a call arriving in
    # between must wait for the clone (seen in CI: the command ran first, and the clone's failure
    # went to nobody).
    live = sessions(FakeEngine())
    live.reconciled()
    sandbox = Sandbox("c1", "corral-c1", "h", cast(AgentChannel, FakeChannel()), ready_ms=0.0)
    adopted, cloned = asyncio.Event(), asyncio.Event()

    async def provision(session_id: str, *_: Any) -> Sandbox:
        live.adopt(session_id, sandbox)
        adopted.set()
        await cloned.wait()
        return sandbox

    live._provision = provision  # type: ignore[method-assign]  # noqa: SLF001 (the step under test's stand-in)
    first = asyncio.create_task(live.ensure("sesn_1", "env_1", {}))
    async with asyncio.timeout(5):
        await adopted.wait()
    second = asyncio.create_task(live.ensure("sesn_1", "env_1", {}))
    await asyncio.wait({second}, timeout=0.05)
    assert not second.done(), "a call ran in a sandbox whose provisioning had not finished"

    cloned.set()
    async with asyncio.timeout(5):
        assert (await first).sandbox is sandbox
        assert (await second).sandbox is sandbox
