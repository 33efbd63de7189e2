"""Request-reply: the ``SandboxOps`` operations (``corral.rpc.sandbox.<op>``, queue group
``sandbox-manager``, and this host's own ``corral.rpc.sandbox.host.<host_id>.<op>``, queue group
``sandbox-manager.<host_id>``), served by ``corral.bus.Operations``; plus ``corral.health.sandbox-manager``.

While an ``execute`` is handled, an ``ExecuteHeartbeat`` naming this instance goes out on
``execute_heartbeat(session_id, tool_use_id)`` at once and then every
``EXECUTE_HEARTBEAT_INTERVAL_S`` until the reply: its caller re-dispatches the call when they stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel

from corral.bus import Bus, Operations, serve_health
from corral.contracts.api.errors import ApiError, ErrorDetail
from corral.contracts.health import Health
from corral.contracts.sandbox import (
    EXECUTE_HEARTBEAT_INTERVAL_S,
    MANAGER_STOPPING,
    Cancel,
    Cancelled,
    Execute,
    ExecuteHeartbeat,
    Provision,
    Provisioned,
    Release,
    Released,
    SandboxOps,
    ToolOutcome,
    execute_heartbeat,
    on_host,
)
from corral.sandbox_manager.egress import vaults_of
from corral.sandbox_manager.engine import EngineWatch, SandboxUnavailable
from corral.sandbox_manager.environments import UnsupportedEnvironment
from corral.sandbox_manager.executions import Executions, ShuttingDown
from corral.sandbox_manager.packages import PackagesNotInstalled
from corral.sandbox_manager.pool import Pool
from corral.sandbox_manager.sessions import Sessions

logger = logging.getLogger(__name__)

_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")

Publish = Callable[[str, bytes], Awaitable[None]]
"""Fire-and-forget publish of a core NATS message (``Bus.publish_core``)."""


async def _publish_nowhere(_subject: str, _data: bytes) -> None:
    return None


@dataclass(frozen=True)
class Service:
    instance: str
    sessions: Sessions
    executions: Executions
    pool: Pool
    engine: EngineWatch
    publish: Publish = field(default=_publish_nowhere)
    heartbeat_interval_s: float = EXECUTE_HEARTBEAT_INTERVAL_S
    #: This sandbox host's id (``CORRAL_SANDBOX_HOST_ID``): its operations are served on its own subjects too.
    host: str | None = None


def _check_id(kind: str, value: str) -> None:
    if not _ID.fullmatch(value):
        raise ApiError("invalid_request_error", f"{kind} must be 1-128 letters, digits, '_' or '-'")


async def provision(service: Service, request: Provision) -> Provisioned:
    _check_id("session_id", request.session_id)
    got = await service.sessions.ensure(
        request.session_id,
        request.environment_id,
        request.environment_config,
        request.repositories,
        vaults=vaults_of(request),
    )
    sandbox = got.sandbox
    return Provisioned(
        container_id=sandbox.container_id,
        ready_ms=got.ready_ms,
        from_pool=sandbox.from_pool,
        network=sandbox.network,
        notices=list(sandbox.notices),
        repository_failures=list(sandbox.repository_failures),
    )


async def execute(service: Service, request: Execute) -> ToolOutcome:
    _check_id("session_id", request.session_id)
    _check_id("tool_use_id", request.tool_use_id)
    # a task rather than a TaskGroup: the call's own exceptions must reach ``_answer`` unwrapped
    beating = asyncio.create_task(_heartbeats(service, request), name=f"heartbeats:{request.tool_use_id}")
    try:
        return await service.executions.execute(request)
    finally:
        beating.cancel()
        await asyncio.gather(beating, return_exceptions=True)


async def _heartbeats(service: Service, request: Execute) -> None:
    """Tell the caller this instance is still at ``request``, until cancelled (a lost beat is only logged)."""
    subject = execute_heartbeat(request.session_id, request.tool_use_id)
    beat = (
        ExecuteHeartbeat(session_id=request.session_id, tool_use_id=request.tool_use_id, instance=service.instance)
        .model_dump_json()
        .encode()
    )
    while True:
        try:
            await service.publish(subject, beat)
        except Exception as exc:  # the bus is reconnecting: the next beat tries again
            logger.debug("heartbeat not sent: %s", exc)
        await asyncio.sleep(service.heartbeat_interval_s)


async def cancel(service: Service, request: Cancel) -> Cancelled:
    return Cancelled(cancelled=await service.executions.cancel(request.session_id, request.tool_use_id))


async def release(service: Service, request: Release) -> Released:
    _check_id("session_id", request.session_id)
    removed = await service.sessions.release(request.session_id)
    logger.info("session released", extra={"fields": {"session_id": request.session_id, "reason": request.reason}})
    return Released(container_id=removed)


def _translate(exc: Exception) -> ErrorDetail | None:
    if isinstance(exc, SandboxUnavailable):
        return ErrorDetail(type="api_error", message=str(exc), details={"error_code": "sandbox_unavailable"})
    if isinstance(exc, ShuttingDown):
        return ErrorDetail(type="overloaded_error", message=str(exc), details={"error_code": MANAGER_STOPPING})
    if isinstance(exc, PackagesNotInstalled):
        # The harness turns this into the tool call's error result, so the model reads why.
        return ErrorDetail(type=exc.error_type, message=str(exc), details={"error_code": exc.error_code})
    if isinstance(exc, UnsupportedEnvironment):
        return ErrorDetail(
            type="invalid_request_error", message=str(exc), details={"error_code": "environment_not_supported"}
        )
    return None


def _describe(request: BaseModel, result: Any, span: trace.Span) -> None:
    if result is None:
        for name in ("session_id", "tool_use_id", "name"):
            value = getattr(request, name, None)
            if isinstance(value, str):
                span.set_attribute("corral.tool_name" if name == "name" else f"corral.{name}", value)
    elif isinstance(result, ToolOutcome):
        span.set_attribute("corral.tool_is_error", result.is_error)
        span.set_attribute("corral.tool_executed", result.executed)


def operations(service: Service) -> Operations:
    """Every ``SandboxOps`` operation, on its subject in the queue group ``sandbox-manager``, and on
    this host's own subject (``on_host``) when the service has a host id."""
    ops = Operations(service="sandbox-manager", translate=_translate, describe=_describe)
    hosts = [None] if service.host is None else [None, service.host]
    for host in hosts:

        def at(op: Any, host: str | None = host) -> Any:
            return op if host is None else on_host(op, host)

        (
            ops.handle(at(SandboxOps.PROVISION), functools.partial(provision, service))
            .handle(at(SandboxOps.EXECUTE), functools.partial(execute, service))
            .handle(at(SandboxOps.CANCEL), functools.partial(cancel, service))
            .handle(at(SandboxOps.RELEASE), functools.partial(release, service))
        )
    return ops


def health(service: Service) -> Health:
    status = service.engine.status
    pools = ",".join(f"{h}:{n}/{service.pool.size}" for h, n in sorted(service.pool.sizes().items()))
    details = {
        "docker": status.version or "unavailable",
        "image": f"{status.image} ({'present' if status.image_present else 'missing'})",
        "pools": pools or "none",
        "network": "none; sessions whose environment allows network access reach it through their egress proxy",
        "sessions": str(service.sessions.count()),
        "message": status.message,
    }
    docker = "ok" if status.version else f"unavailable: {status.message or 'no answer from the engine'}"
    image = "ok" if status.image_present else f"missing: {status.image} (tool calls fail until it is built)"
    dependencies = {"docker": docker, "sandbox_image": image}
    return Health(
        service="sandbox-manager",
        instance=service.instance,
        status="ok" if status.ok and all(s == "ok" for s in dependencies.values()) else "degraded",
        details=details,
        dependencies=dependencies,
    )


@contextlib.asynccontextmanager
async def serve_all(bus: Bus, service: Service) -> AsyncIterator[None]:
    """Serve every operation and the health check while the block runs."""
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(operations(service).serve(bus))

        async def report() -> Health:
            return health(service)

        await stack.enter_async_context(serve_health(bus, "sandbox-manager", report))
        yield
