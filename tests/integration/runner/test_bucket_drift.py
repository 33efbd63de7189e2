"""A service whose KV bucket settings are not the ones its bucket was made with (by the bucket's
owner, or an earlier instance with other settings) refuses to start like every other service: exit
status 2 and one line naming the difference, no traceback (not a gateway that logs uvicorn's
failed lifespan and exits 0, nor a harness renewing leases at another pace than they expire)."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from corral.bus import Bus
from corral.contracts.subjects import KeyValueSpec, idempotency_spec, lease_spec
from corral.settings import NatsSettings
from tests.integration.runner.refusal import refusal

pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class Drift:
    service: str
    made: KeyValueSpec
    """The bucket as it was made before the service starts."""
    env: dict[str, str]
    """The service's settings, asking for another bucket."""
    named: tuple[str, str]
    """The bucket and the difference the refusal names."""


DRIFTS = [
    Drift(
        "gateway",
        idempotency_spec(86400.0),
        {"CORRAL_GATEWAY_PORT": "0", "CORRAL_GATEWAY_IDEMPOTENCY_TTL_S": "60"},
        ("corral_idempotency", "ttl_s is 86400.0, expected 60.0"),
    ),
    Drift(
        "harness",
        lease_spec(10.0),
        {"CORRAL_MODEL_BASE_URL": "http://127.0.0.1:1", "CORRAL_HARNESS_LEASE_TTL_S": "3"},
        ("corral_leases", "ttl_s is 10.0, expected 3.0"),
    ),
]


@pytest.mark.parametrize("drift", DRIFTS, ids=[d.service for d in DRIFTS])
async def test_a_service_whose_bucket_was_made_otherwise_refuses_to_start(nats_url: str, drift: Drift) -> None:
    async with Bus.connect(NatsSettings(url=nats_url), name="the bucket's maker") as bus:
        await bus.ensure_key_value(drift.made)
    refused, output = refusal(drift.service, nats_url, drift.env)
    bucket, difference = drift.named
    assert bucket in refused and difference in refused, output
