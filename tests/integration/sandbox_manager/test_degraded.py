"""Without a Docker engine, or without the sandbox image, the manager stays up, says what is
missing and what to do, and refuses provisioning with a retryable error (nothing is recorded)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from corral.bus import Bus
from corral.contracts.sandbox import SandboxOp
from tests.integration.sandbox_manager.conftest import Engine, remove_scope, running_manager, sandbox_settings

pytestmark = pytest.mark.integration


async def test_without_an_engine_health_is_degraded_and_provisioning_is_refused(
    nats_url: str, bus: Bus, engine: Engine, tmp_path: Path
) -> None:
    box = sandbox_settings(engine)
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    async with running_manager(nats_url, bus, engine, box, docker_host=nowhere) as manager:
        status = await manager.health()
        assert status.status == "degraded"
        assert status.details["docker"] == "unavailable"
        assert status.details["message"] == (
            f"no Docker engine answers at {nowhere}; start dockerd or set CORRAL_DOCKER_HOST"
        )
        reply = await manager.rpc(
            SandboxOp.PROVISION, {"session_id": "sesn_x", "environment_id": "env_x", "environment_config": {}}
        )
        assert not reply.ok and reply.error is not None
        assert reply.error.details == {"error_code": "sandbox_unavailable"}
        assert "no Docker engine answers" in reply.error.message


async def test_without_the_image_health_says_how_to_get_it_and_execute_records_nothing(
    nats_url: str, bus: Bus, engine: Engine
) -> None:
    box = sandbox_settings(engine, image="corral-sandbox:not-built")
    sid, key = f"sesn_{uuid.uuid4().hex}", f"toolu_{uuid.uuid4().hex}"
    try:
        async with running_manager(nats_url, bus, engine, box, docker_host=engine.host) as manager:
            status = await manager.health()
            assert status.status == "degraded"
            assert status.details["image"] == "corral-sandbox:not-built (missing)"
            assert "CORRAL_SANDBOX_IMAGE" in status.details["message"]
            body = {
                "session_id": sid,
                "tool_use_id": key,
                "name": "bash",
                "input": {"command": "echo hi"},
                "environment_id": "env_x",
            }
            reply = await manager.rpc(SandboxOp.EXECUTE, body)
            assert not reply.ok and reply.error is not None
            assert reply.error.details == {"error_code": "sandbox_unavailable"}
        # the same call, retried against a manager that has its image, runs
        async with running_manager(nats_url, bus, engine, sandbox_settings(engine, scope=box.scope)) as healthy:
            assert (await healthy.health()).status == "ok"
            outcome = await healthy.execute(sid, "bash", {"command": "echo hi"}, tool_use_id=key)
            assert outcome.executed and outcome.content[-1].text == "hi\n"
    finally:
        remove_scope(engine, box.scope)
