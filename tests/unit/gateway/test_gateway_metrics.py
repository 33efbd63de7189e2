"""The gateway's request metrics: one count per answered request, labelled by route template (never the
ids in a path), with unknown paths folded into ``unmatched``."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI

from corral.gateway import metrics
from corral.gateway.metrics import RequestMetrics
from corral.telemetry.metrics import REGISTRY


def count(route: str, method: str, status: str) -> float:
    labels = {"route": route, "method": method, "status": status}
    return REGISTRY.get_sample_value("corral_gateway_requests_total", labels) or 0.0


def timed(route: str, method: str) -> float:
    labels = {"route": route, "method": method}
    return REGISTRY.get_sample_value("corral_gateway_request_duration_seconds_count", labels) or 0.0


async def test_requests_are_counted_by_route_template_method_and_status() -> None:
    app = FastAPI()

    @app.post("/v1/things/{thing_id}/events")
    async def post(thing_id: str) -> dict[str, str]:
        return {"id": thing_id}

    app.add_middleware(RequestMetrics)
    route = "/v1/things/{thing_id}/events"
    before, before_unmatched, before_timed = (
        count(route, "POST", "200"),
        count("unmatched", "GET", "404"),
        timed(route, "POST"),
    )
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        for thing in ("a1", "b2"):
            assert (await client.post(f"/v1/things/{thing}/events")).status_code == 200
        assert (await client.get("/nowhere/sk-secret")).status_code == 404
    assert count(route, "POST", "200") == before + 2
    assert count("unmatched", "GET", "404") == before_unmatched + 1
    assert timed(route, "POST") == before_timed + 2
    assert "a1" not in str(metrics.REQUESTS.collect()) and "sk-secret" not in str(metrics.REQUESTS.collect())


def test_rate_limited_requests_are_counted() -> None:
    from corral.gateway.ratelimit import RateLimited, RateLimiter

    limiter = RateLimiter(rate=1.0, burst=1, clock=lambda: 0.0)
    before = REGISTRY.get_sample_value("corral_gateway_rate_limited_total") or 0.0
    limiter.check("key")
    with pytest.raises(RateLimited):
        limiter.check("key")
    assert REGISTRY.get_sample_value("corral_gateway_rate_limited_total") == before + 1
