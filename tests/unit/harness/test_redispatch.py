"""The harness notices a lost sandbox-manager by its heartbeats and sends the same call again.

A fake bus plays the managers: each ``request`` on ``execute`` is served by the next scripted
manager, which may beat and answer, beat and then die (never answer), be absent (no responders) or
say it is stopping. Silence windows are a fraction of a second, so every test ends in well under one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import pytest

from corral.bus import Bus, NoResponders
from corral.contracts import sandbox
from corral.contracts.rpc import RpcReply
from corral.harness.interrupts import Stop, unless_interrupted
from corral.harness.redispatch import OUTCOME_UNKNOWN, RedispatchPolicy
from corral.harness.sandbox import BusSandbox, ManagerWait, SandboxError

EXECUTE = sandbox.Execute(
    session_id="sesn_1",
    tool_use_id="sevt_1",
    name="bash",
    input={"command": "sleep 30; echo done"},
    environment_id="env_1",
)
OUTCOME = {"content": [{"type": "text", "text": "done"}], "is_error": False, "executed": True, "duration_ms": 1.0}
POLICY = RedispatchPolicy(silence_s=0.2, wait_s=0.5, max_redispatches=3, retry_every_s=0.02)

Manager = Callable[["FakeManagers"], Awaitable[bytes]]


def ok(result: Any) -> bytes:
    return RpcReply(ok=True, result=result).model_dump_json().encode()


def beat(instance: str) -> bytes:
    return (
        sandbox.ExecuteHeartbeat(session_id="sesn_1", tool_use_id="sevt_1", instance=instance)
        .model_dump_json()
        .encode()
    )


class FakeManagers:
    """Serves each ``execute`` request with the next of ``managers`` (the last one serves the rest)."""

    def __init__(self, *managers: Manager) -> None:
        self.managers = list(managers)
        self.requests: list[dict[str, Any]] = []
        self.listeners: dict[str, Callable[[bytes], None]] = {}

    async def bind_key_value(self, spec: object) -> None:
        return None  # no sandbox host advertises itself: calls go to the queue group

    @contextlib.asynccontextmanager
    async def listen(self, subject: str, callback: Callable[[bytes], None]) -> AsyncIterator[None]:
        self.listeners[subject] = callback
        try:
            yield
        finally:
            del self.listeners[subject]

    def heartbeat(self, instance: str) -> None:
        listener = self.listeners.get(sandbox.execute_heartbeat("sesn_1", "sevt_1"))
        if listener is not None:  # core NATS: a beat nobody listens to is lost
            listener(beat(instance))

    call = Bus.call  # the real typed call, over the scripted ``request``

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        assert subject == "corral.rpc.sandbox.execute"
        self.requests.append(json.loads(data))
        manager = self.managers[min(len(self.requests), len(self.managers)) - 1]
        return await manager(self)


def answers(reply: bytes, *, beats: int = 1, instance: str = "sm-b") -> Manager:
    """A live manager: ``beats`` heartbeats a tenth of the silence window apart, then ``reply``."""

    async def serve(bus: FakeManagers) -> bytes:
        for _ in range(beats):
            bus.heartbeat(instance)
            await asyncio.sleep(POLICY.silence_s / 10)
        return reply

    return serve


async def dies(bus: FakeManagers) -> bytes:
    """Acknowledges the call with a heartbeat, then is killed: no more beats, no reply, ever."""
    bus.heartbeat("sm-a")
    await asyncio.Event().wait()
    raise AssertionError("unreachable")


async def absent(bus: FakeManagers) -> bytes:
    raise NoResponders("corral.rpc.sandbox.execute")


async def stopping(bus: FakeManagers) -> bytes:
    error = {"type": "overloaded_error", "message": "stopping", "details": {"error_code": sandbox.MANAGER_STOPPING}}
    return RpcReply(ok=False, error=error).model_dump_json().encode()


#: No manager at all: no waiting unless a test asks for it.
NO_WAIT = ManagerWait(wait_s=0)


def box(bus: FakeManagers, policy: RedispatchPolicy = POLICY, wait: ManagerWait = NO_WAIT) -> BusSandbox:
    return BusSandbox(cast(Bus, bus), redispatch=policy, manager_wait=wait)


async def test_a_manager_that_goes_silent_mid_call_is_replaced_by_a_re_dispatch_of_the_same_call() -> None:
    bus = FakeManagers(dies, answers(ok(OUTCOME)))

    async with asyncio.timeout(5):  # the reply timeout (630 s) is not what ends the wait
        outcome = await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert outcome == sandbox.ToolOutcome.model_validate(OUTCOME)
    assert bus.requests == [EXECUTE.model_dump(mode="json")] * 2, "the same key, sent again"
    assert bus.listeners == {}, "the heartbeat subscription ends with the call"


async def test_heartbeats_keep_a_long_call_waiting_for_its_reply() -> None:
    # 30 beats a tenth of the window apart: three whole silence windows pass while the call runs
    bus = FakeManagers(answers(ok(OUTCOME), beats=30))

    outcome = await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert outcome.content[0].text == "done"
    assert len(bus.requests) == 1, "a manager that keeps beating is never given up on"


async def test_a_request_nobody_acknowledges_counts_as_lost() -> None:
    async def swallowed(bus: FakeManagers) -> bytes:  # received by a manager that died before its first beat
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    bus = FakeManagers(swallowed, answers(ok(OUTCOME)))

    await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert len(bus.requests) == 2


async def test_a_re_dispatch_waits_for_a_manager_to_come_back() -> None:
    bus = FakeManagers(dies, absent, absent, absent, answers(ok(OUTCOME)))

    outcome = await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert outcome.executed
    assert len(bus.requests) == 5


async def test_no_manager_back_in_time_ends_the_call_as_outcome_unknown() -> None:
    bus = FakeManagers(dies, absent)

    with pytest.raises(SandboxError) as raised:
        await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert raised.value.code == OUTCOME_UNKNOWN
    assert "outcome is unknown" in raised.value.message
    assert "none was back within 0.5 s" in raised.value.message


async def test_a_manager_that_is_stopping_is_treated_as_lost() -> None:
    bus = FakeManagers(stopping, answers(ok(OUTCOME)))

    outcome = await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert outcome.content[0].text == "done"
    assert len(bus.requests) == 2


async def test_a_call_that_keeps_losing_its_manager_ends_as_outcome_unknown() -> None:
    bus = FakeManagers(dies)

    with pytest.raises(SandboxError) as raised:
        await box(bus, RedispatchPolicy(silence_s=0.1, wait_s=1, max_redispatches=2, retry_every_s=0.01)).execute(
            EXECUTE, timeout_s=630.0
        )

    assert raised.value.code == OUTCOME_UNKNOWN
    assert "stopped 3 times" in raised.value.message
    assert len(bus.requests) == 3


async def test_no_manager_at_the_first_dispatch_is_not_re_dispatched() -> None:
    # nothing was ever sent to a manager, so nothing can have run: without a wait, "unavailable" at once
    bus = FakeManagers(absent)

    with pytest.raises(SandboxError) as raised:
        await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert raised.value.code == "sandbox_unavailable"
    assert len(bus.requests) == 1


async def test_no_manager_at_the_first_dispatch_waits_for_one_without_counting_a_loss() -> None:
    # absent for longer than the silence window (0.2 s): the wait is not a lost manager (none is allowed)
    bus = FakeManagers(*[absent] * 6, answers(ok(OUTCOME)))
    policy = RedispatchPolicy(silence_s=0.2, wait_s=0.5, max_redispatches=0, retry_every_s=0.02)

    outcome = await box(bus, policy, ManagerWait(wait_s=10, first_retry_s=0.05, max_retry_s=0.1)).execute(
        EXECUTE, timeout_s=630.0
    )

    assert outcome.executed
    assert len(bus.requests) == 7


async def test_an_interrupt_stops_the_wait_for_a_manager() -> None:
    interrupted = asyncio.Event()

    async def absent_then_interrupted(bus: FakeManagers) -> bytes:
        if len(bus.requests) >= 3:  # the call is waiting: the user interrupts
            interrupted.set()
        raise NoResponders("corral.rpc.sandbox.execute")

    bus = FakeManagers(absent_then_interrupted)
    call = box(bus, wait=ManagerWait(wait_s=30, first_retry_s=0.01, max_retry_s=0.02)).execute(EXECUTE, timeout_s=630.0)

    async with asyncio.timeout(5):  # not the 30 s wait
        assert await unless_interrupted(call, interrupted) is Stop.INTERRUPTED
    assert bus.listeners == {}, "nothing of the call is left running"


async def test_a_tool_error_from_a_live_manager_is_the_call_s_outcome() -> None:
    failed = {**OUTCOME, "is_error": True, "content": [{"type": "text", "text": "exit 1"}]}
    bus = FakeManagers(answers(ok(failed)))

    outcome = await box(bus).execute(EXECUTE, timeout_s=630.0)

    assert outcome.is_error
    assert len(bus.requests) == 1
