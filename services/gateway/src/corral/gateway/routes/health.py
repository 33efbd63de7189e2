"""``GET /health`` (no auth): the gateway and every service it depends on, asked over the bus."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import JSONResponse

from corral.contracts.rpc import Health
from corral.contracts.subjects import SERVICES
from corral.gateway.state import gateway_state

router = APIRouter(tags=["health"])


@router.get("/health", response_model=None)
async def health(request: Request) -> JSONResponse:
    """200 when every service answered ``ok`` or ``degraded``; 503 naming the ones that did not."""
    state = gateway_state(request)
    answers: list[Health | BaseException | None]
    if state.backends is None:
        answers = [None] * len(SERVICES)
    else:
        probe, timeout_s = state.backends.probe, state.settings.health_timeout_s
        answers = await asyncio.gather(
            *(probe.check(service, timeout_s=timeout_s) for service in SERVICES), return_exceptions=True
        )
    services: dict[str, str] = {"gateway": "ok"}
    for service, answer in zip(SERVICES, answers, strict=True):
        services[service] = answer.status if isinstance(answer, Health) else "unavailable"
    if any(status == "unavailable" for status in services.values()):
        overall, code = "unavailable", 503
    elif any(status == "degraded" for status in services.values()):
        overall, code = "degraded", 200
    else:
        overall, code = "ok", 200
    return JSONResponse({"status": overall, "services": services}, status_code=code)
