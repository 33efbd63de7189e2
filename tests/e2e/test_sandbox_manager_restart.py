"""A sandbox-manager is only reported ready once it can serve: a provision sent the moment the stack
says it is healthy again after a restart gets a sandbox, not "not checked yet".

Before, the manager answered health (``degraded``, which ``GET /health`` counts as up) and provision
requests before it had first looked for its Docker engine, so a request right after a restart was
refused with ``sandbox_unavailable: not checked yet`` (``bench/sandbox.py`` failed on its first
attempt that way). Here the manager reaches its real engine through a relay that holds each new
connection for a moment, as a loaded engine does, so the first check is reliably slower than the
stack's health poll.

And a manager whose first check found no engine (the probe timed out on an engine slow to answer,
so health says ``degraded``, which the stack's start counts as up) checks again when a call comes,
instead of refusing every call until its next retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts.rpc import RpcReply
from corral.contracts.sandbox import Provision, Release, SandboxOp, sandbox_rpc
from corral.devstack.stack import Stack

pytestmark = pytest.mark.e2e

MANAGER = "sandbox-manager"
ISOLATED = {"type": "cloud", "networking": {"type": "limited", "allowed_hosts": []}}
#: How long the relay holds each new connection to the engine: longer than the stack's health poll,
#: well inside the engine probe's 2 s (the first check makes several connections).
HOLD_S = 0.3
#: The second test's probe timeout, and the relay's: the connections of the manager's first check
#: (made within ``SLOW_FOR_S`` of the first) are held longer than the probe waits; later ones are not.
PROBE_S = 0.5
FIRST_HOLD_S = 1.5
SLOW_FOR_S = 0.3


async def call(bus: Bus, op: str, body: bytes) -> RpcReply:
    return RpcReply.model_validate_json(await bus.request(sandbox_rpc(op), body, timeout=60))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@contextlib.asynccontextmanager
async def slow_relay(engine: str, path: Path, *, slow_first_check: bool = False) -> AsyncIterator[str]:
    """A unix socket at ``path`` relaying to the engine's, holding each new connection ``HOLD_S``;
    with ``slow_first_check``, only those of the first ``SLOW_FOR_S``, for ``FIRST_HOLD_S``."""
    target = engine.removeprefix("unix://")
    loop = asyncio.get_running_loop()
    first: list[float] = []

    async def relay(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        first.append(first[0] if first else loop.time())
        hold = HOLD_S
        if slow_first_check:
            hold = FIRST_HOLD_S if loop.time() - first[0] < SLOW_FOR_S else 0.0
        await asyncio.sleep(hold)  # the slow engine this test stands in for, not synchronisation
        engine_reader, engine_writer = await asyncio.open_unix_connection(target)
        await asyncio.gather(
            _pipe(client_reader, engine_writer), _pipe(engine_reader, client_writer), return_exceptions=True
        )

    server = await asyncio.start_unix_server(relay, path=str(path))
    async with server:
        yield f"unix://{path}"


async def test_a_provision_right_after_a_restart_is_served(stack: Stack, bus: Bus, tmp_path: Path) -> None:
    assert stack.docker_host is not None and stack.docker_host.startswith("unix://")
    before = dict(stack.service_env.get(MANAGER, {}))
    async with slow_relay(stack.docker_host, tmp_path / "engine.sock") as relayed:
        stack.service_env[MANAGER] = {**before, "CORRAL_DOCKER_HOST": relayed}
        try:
            await asyncio.to_thread(stack.restart_service, MANAGER)
            session_id = f"sesn_{uuid.uuid4().hex}"
            request = Provision(session_id=session_id, environment_id="env_restart", environment_config=ISOLATED)
            reply = await call(bus, SandboxOp.PROVISION, request.model_dump_json().encode())
            release = Release(session_id=session_id, reason="test").model_dump_json().encode()
            await call(bus, SandboxOp.RELEASE, release)
            assert reply.ok, reply.error
        finally:
            stack.service_env[MANAGER] = before
            await asyncio.to_thread(stack.restart_service, MANAGER)


async def test_a_first_check_that_timed_out_is_retried_when_a_call_comes(
    stack: Stack, bus: Bus, tmp_path: Path
) -> None:
    assert stack.docker_host is not None and stack.docker_host.startswith("unix://")
    before = dict(stack.service_env.get(MANAGER, {}))
    async with slow_relay(stack.docker_host, tmp_path / "engine.sock", slow_first_check=True) as relayed:
        stack.service_env[MANAGER] = {
            **before,
            "CORRAL_DOCKER_HOST": relayed,
            "CORRAL_SANDBOX_HEALTH_PROBE_TIMEOUT_S": str(PROBE_S),
            "CORRAL_SANDBOX_ENGINE_RETRY_S": "300",  # no retry of its own within the test
        }
        try:
            await asyncio.to_thread(stack.restart_service, MANAGER)
            session_id = f"sesn_{uuid.uuid4().hex}"
            request = Provision(session_id=session_id, environment_id="env_restart", environment_config=ISOLATED)
            reply = await call(bus, SandboxOp.PROVISION, request.model_dump_json().encode())
            release = Release(session_id=session_id, reason="test").model_dump_json().encode()
            await call(bus, SandboxOp.RELEASE, release)
            assert reply.ok, reply.error
        finally:
            stack.service_env[MANAGER] = before
            await asyncio.to_thread(stack.restart_service, MANAGER)
