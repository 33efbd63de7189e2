"""The sandbox-manager adapter: requests on ``corral.rpc.sandbox.<op>``, failures as ``SandboxError``."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any, cast

import pytest

from corral.bus import Bus, BusError, NoResponders
from corral.contracts import sandbox
from corral.contracts.rpc import RpcReply
from corral.harness.sandbox import BusSandbox, ManagerWait, SandboxError

EXECUTE = sandbox.Execute(
    session_id="sesn_1",
    tool_use_id="sevt_1",
    name="bash",
    input={"command": "ls"},
    environment_id="env_1",
    environment_config={"type": "cloud"},
)


class FakeBus:
    def __init__(self, answer: bytes | Exception) -> None:
        self.answer = answer
        self.requests: list[tuple[str, dict[str, Any], float | None]] = []
        self.listened: list[str] = []

    @contextlib.asynccontextmanager
    async def listen(self, subject: str, callback: Callable[[bytes], None]) -> AsyncIterator[None]:
        self.listened.append(subject)
        yield

    call = Bus.call  # the real typed call, over the scripted ``request``

    async def bind_key_value(self, spec: object) -> None:
        return None  # no sandbox host advertises itself: calls go to the queue group

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        self.requests.append((subject, json.loads(data), timeout))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def adapter(answer: bytes | Exception, *, wait_s: float = 0.0) -> tuple[BusSandbox, FakeBus]:
    bus = FakeBus(answer)
    return BusSandbox(cast(Bus, bus), control_timeout_s=3.0, manager_wait=ManagerWait(wait_s, 0.01, 0.05)), bus


def ok(result: Any) -> bytes:
    return RpcReply(ok=True, result=result).model_dump_json().encode()


async def test_execute_sends_the_request_and_reads_the_outcome() -> None:
    outcome = {"content": [{"type": "text", "text": "a.py"}], "is_error": False, "executed": True, "duration_ms": 2.5}
    box, bus = adapter(ok(outcome))

    result = await box.execute(EXECUTE, timeout_s=150.0)

    assert result == sandbox.ToolOutcome.model_validate(outcome)
    [(subject, body, timeout)] = bus.requests
    assert subject == "corral.rpc.sandbox.execute"
    assert body == EXECUTE.model_dump(mode="json")
    assert timeout == 150.0


async def test_provision_and_cancel_use_their_subjects_and_the_control_timeout() -> None:
    box, bus = adapter(ok({"container_id": "c", "ready_ms": 1.0, "from_pool": True, "network": "none"}))
    provisioned = await box.provision(sandbox.Provision(session_id="sesn_1", environment_id="env_1"))
    assert provisioned.container_id == "c"

    bus.answer = ok({"cancelled": True})
    cancelled = await box.cancel(sandbox.Cancel(session_id="sesn_1", tool_use_id="sevt_1"))
    assert cancelled.cancelled

    assert [(s, t) for s, _, t in bus.requests] == [
        ("corral.rpc.sandbox.provision", 3.0),
        ("corral.rpc.sandbox.cancel", 3.0),
    ]


@pytest.mark.parametrize(
    ("answer", "code", "words"),
    [
        (NoResponders("corral.rpc.sandbox.execute"), "sandbox_unavailable", "no sandbox-manager is running"),
        (TimeoutError(), "sandbox_timeout", "did not answer within 150 s"),
        (BusError("closed"), None, "could not be reached"),
        (
            RpcReply(
                ok=False,
                error={
                    "type": "api_error",
                    "message": "no Docker engine answers",
                    "details": {"error_code": "sandbox_unavailable"},
                },
            )
            .model_dump_json()
            .encode(),
            "sandbox_unavailable",
            "no Docker engine answers",
        ),
        (b'{"ok": true, "result": {"content": "nope"}}', None, "unreadable reply"),
    ],
)
async def test_failures_become_sandbox_errors_with_a_message_for_the_model(
    answer: bytes | Exception, code: str | None, words: str
) -> None:
    box, _ = adapter(answer)

    with pytest.raises(SandboxError) as raised:
        await box.execute(EXECUTE, timeout_s=150.0)

    assert raised.value.code == code
    assert words in raised.value.message


class ComingBack(FakeBus):
    """No responders for the first ``absent`` requests, then ``answer``."""

    def __init__(self, answer: bytes, absent: int) -> None:
        super().__init__(answer)
        self.absent = absent

    async def request(self, subject: str, data: bytes, *, timeout: float | None = None, spill: bool = True) -> bytes:
        if len(self.requests) < self.absent:
            self.requests.append((subject, json.loads(data), timeout))
            raise NoResponders(subject)
        return await super().request(subject, data, timeout=timeout, spill=spill)


async def test_a_provision_no_manager_answers_waits_for_one_to_come_back() -> None:
    provisioned = {"container_id": "c", "ready_ms": 1.0, "from_pool": True, "network": "none"}
    bus = ComingBack(ok(provisioned), absent=3)
    box = BusSandbox(cast(Bus, bus), manager_wait=ManagerWait(wait_s=5, first_retry_s=0.01, max_retry_s=0.02))

    result = await box.provision(sandbox.Provision(session_id="sesn_1", environment_id="env_1"))

    assert result.container_id == "c"
    assert [s for s, _, _ in bus.requests] == ["corral.rpc.sandbox.provision"] * 4


async def test_no_manager_back_within_the_wait_says_the_tool_did_not_run_and_what_to_do() -> None:
    box, bus = adapter(NoResponders("corral.rpc.sandbox.execute"), wait_s=0.2)

    with pytest.raises(SandboxError) as raised:
        await box.execute(EXECUTE, timeout_s=150.0)

    assert raised.value.code == "sandbox_unavailable"
    assert "none came back within 0.2 s, so the tool did not run" in raised.value.message
    assert "Try the tool call again" in raised.value.message
    assert len(bus.requests) > 2, "asked again while waiting"
