"""``GET /health`` (no auth): the gateway and every service it depends on, asked over the bus.

Anyone can ask, so the answer says only whether each service and each of its dependencies is ``ok``
(``failing`` otherwise): no instance names, versions, addresses or error messages. The reasons are in
each service's ``corral.health.<service>`` answer on the bus, for operators, and in its logs."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts.health import Health
from corral.contracts.subjects import SERVICES
from corral.gateway.probe import gateway_health
from corral.gateway.state import gateway_state

router = APIRouter(tags=["health"])


@router.get("/health", response_model=None)
async def health(request: Request) -> JSONResponse:
    """200 when every service answered ``ok`` or ``degraded``; 503 naming the ones that did not."""
    state = gateway_state(request)
    own = gateway_health("", bus_connected=state.backends is not None and state.backends.probe.bus_connected)
    answers: list[Health | BaseException | None]
    if state.backends is None:
        answers = [None] * len(SERVICES)
    else:
        probe, timeout_s = state.backends.probe, state.settings.health_timeout_s
        answers = await asyncio.gather(
            *(probe.check(service, timeout_s=timeout_s) for service in SERVICES), return_exceptions=True
        )
    services: dict[str, str] = {"gateway": own.status}
    dependencies: dict[str, dict[str, str]] = {"gateway": _public(own)}
    for service, answer in zip(SERVICES, answers, strict=True):
        services[service] = answer.status if isinstance(answer, Health) else "unavailable"
        if isinstance(answer, Health):
            dependencies[service] = _public(answer)
    if any(status == "unavailable" for status in services.values()):
        overall, code = "unavailable", 503
    elif any(status == "degraded" for status in services.values()):
        overall, code = "degraded", 200
    else:
        overall, code = "ok", 200
    return JSONResponse({"status": overall, "services": services, "dependencies": dependencies}, status_code=code)


def _public(answer: Health) -> dict[str, str]:
    """Each dependency as ``ok`` or ``failing``: the reason stays on the bus."""
    return {name: "ok" if state == "ok" else "failing" for name, state in sorted(answer.dependencies.items())}
