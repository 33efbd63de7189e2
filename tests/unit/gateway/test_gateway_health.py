"""``GET /health`` reports every service, and the gateway answers health requests for itself."""

from __future__ import annotations

from typing import Literal

from gateway_fakes import FakeProbe, FakeStore, client_for

from corral.contracts.health import Health
from corral.contracts.subjects import SERVICES
from corral.gateway.probe import gateway_health


def healthy(service: str, status: Literal["ok", "degraded"] = "ok") -> Health:
    return Health(service=service, instance="host:1", status=status)


async def test_health_is_200_when_every_service_answers() -> None:
    probe = FakeProbe(answers={s: healthy(s) for s in SERVICES})
    async with client_for(FakeStore(), probe=probe, api_key=None) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "services": {"gateway": "ok", **dict.fromkeys(SERVICES, "ok")},
        "dependencies": {"gateway": {"nats": "ok"}, **{s: {} for s in SERVICES}},
    }


async def test_health_is_503_naming_the_services_that_did_not_answer() -> None:
    probe = FakeProbe(answers={"session-store": healthy("session-store", "degraded")})
    async with client_for(FakeStore(), probe=probe, api_key=None) as client:
        response = await client.get("/health")
    assert response.status_code == 503
    services = response.json()["services"]
    assert services["gateway"] == "ok"
    assert services["session-store"] == "degraded"
    assert services["harness"] == "unavailable"


async def test_a_degraded_service_keeps_health_at_200() -> None:
    probe = FakeProbe(answers={s: healthy(s, "degraded" if s == "harness" else "ok") for s in SERVICES})
    async with client_for(FakeStore(), probe=probe, api_key=None) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"


def test_the_gateway_reports_itself_ok_with_its_instance_and_its_nats_connection() -> None:
    assert gateway_health("h:42", bus_connected=True) == Health(
        service="gateway", instance="h:42", status="ok", dependencies={"nats": "ok"}
    )
    down = gateway_health("h:42", bus_connected=False)
    assert down.status == "degraded" and down.dependencies["nats"].startswith("disconnected")


async def test_health_names_each_failing_dependency_without_its_reason() -> None:
    """The public answer says which dependency fails, never the reason (addresses, errors, versions)."""
    store = Health(
        service="session-store",
        instance="secret-host:7",
        status="degraded",
        details={"projection_last_error": "password authentication failed for user corral"},
        dependencies={"postgres": "unreachable: ConnectionRefusedError 10.0.0.5:5432", "nats": "ok"},
    )
    probe = FakeProbe(answers={**{s: healthy(s) for s in SERVICES}, "session-store": store}, bus_connected=False)
    async with client_for(FakeStore(), probe=probe, api_key=None) as client:
        response = await client.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["services"]["gateway"] == "degraded" and body["services"]["session-store"] == "degraded"
    assert body["dependencies"]["session-store"] == {"nats": "ok", "postgres": "failing"}
    assert body["dependencies"]["gateway"] == {"nats": "failing"}
    for secret in ("secret-host", "10.0.0.5", "password", "ConnectionRefused"):
        assert secret not in response.text
