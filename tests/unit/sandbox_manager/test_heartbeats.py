"""The manager serving an ``execute`` beats on the call's heartbeat subject until it replies, and a
manager that is stopping says so with an ``error_code`` its caller re-dispatches on."""

from __future__ import annotations

import asyncio
import json
from typing import Any, cast

from corral.contracts import sandbox
from corral.contracts.rpc import RpcReply
from corral.sandbox_manager import rpc
from corral.sandbox_manager.executions import Executions, ShuttingDown

EXECUTE = sandbox.Execute(
    session_id="sesn_1", tool_use_id="sevt_1", name="bash", input={"command": "true"}, environment_id="env_1"
)
OUTCOME = sandbox.ToolOutcome(content=[sandbox.TextBlock(text="ok")], is_error=False, executed=True, duration_ms=1.0)


class HeldExecutions:
    """Runs a call until ``release`` is set, or raises ``error``."""

    def __init__(self, error: Exception | None = None) -> None:
        self.release = asyncio.Event()
        self.error = error

    async def execute(self, request: sandbox.Execute) -> sandbox.ToolOutcome:
        if self.error is not None:
            raise self.error
        await self.release.wait()
        return OUTCOME


def service(executions: HeldExecutions, beats: list[tuple[str, dict[str, Any]]], enough: asyncio.Event) -> rpc.Service:
    async def publish(subject: str, data: bytes) -> None:
        beats.append((subject, json.loads(data)))
        if len(beats) >= 3:
            enough.set()

    return rpc.Service(
        instance="sm-1",
        sessions=cast(Any, None),
        executions=cast(Executions, executions),
        pool=cast(Any, None),
        engine=cast(Any, None),
        publish=publish,
        heartbeat_interval_s=0.01,
    )


async def test_an_execute_beats_until_its_reply_and_not_after() -> None:
    beats: list[tuple[str, dict[str, Any]]] = []
    enough = asyncio.Event()
    executions = HeldExecutions()
    answering = asyncio.create_task(
        rpc.operations(service(executions, beats, enough)).answer(
            sandbox.SandboxOps.EXECUTE, EXECUTE.model_dump_json().encode(), {}
        )
    )
    async with asyncio.timeout(5):
        await enough.wait()
    executions.release.set()
    reply = RpcReply.model_validate_json(await answering)
    sent = len(beats)

    assert reply.ok and reply.result == OUTCOME.model_dump(mode="json")
    assert {subject for subject, _ in beats} == {"corral.sandbox.heartbeats.sesn_1.sevt_1"}
    assert beats[0][1] == {"session_id": "sesn_1", "tool_use_id": "sevt_1", "instance": "sm-1"}
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("heartbeats:")], "beating stopped"
    assert len(beats) == sent


async def test_a_manager_stopping_mid_call_says_so_with_an_error_code() -> None:
    beats: list[tuple[str, dict[str, Any]]] = []
    executions = HeldExecutions(error=ShuttingDown("the sandbox-manager is stopping"))

    raw = await rpc.operations(service(executions, beats, asyncio.Event())).answer(
        sandbox.SandboxOps.EXECUTE, EXECUTE.model_dump_json().encode(), {}
    )
    reply = RpcReply.model_validate_json(raw)

    assert not reply.ok and reply.error is not None
    assert (reply.error.details or {}).get("error_code") == sandbox.MANAGER_STOPPING
