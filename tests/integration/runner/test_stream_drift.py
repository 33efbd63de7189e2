"""A service that finds one of Corral's streams made otherwise than it requires (another number of
replicas than its ``CORRAL_NATS_REPLICAS``, or a limit that would drop records) refuses to start:
exit status 2 and one line naming the stream, the difference and what to do, no traceback. Run on a
single server: the check is on the stream's configuration, before anything is created."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import nats
import pytest
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from corral.bus import Bus
from corral.contracts import subjects
from corral.settings import NatsSettings
from tests.integration.runner.refusal import refusal

pytestmark = pytest.mark.integration

Maker = Callable[[str], Awaitable[None]]


async def _made_with_one_replica(nats_url: str) -> None:
    async with Bus.connect(NatsSettings(url=nats_url, replicas=1), name="the stream's maker") as bus:
        for spec in (subjects.SESSIONS_SPEC, subjects.CATALOG_SPEC, subjects.WAKE_SPEC):
            await bus.ensure_stream(spec)


async def _sessions_kept_for_a_day(nats_url: str) -> None:
    """The session log as an operator might have "tidied" it: records older than a day dropped."""
    async with _jetstream(nats_url) as js:
        spec = subjects.SESSIONS_SPEC
        await js.add_stream(
            name=spec.name,
            subjects=list(spec.subjects),
            duplicate_window=spec.duplicate_window_s,
            allow_direct=True,
            deny_delete=True,
            max_age=86400.0,
        )


@dataclass(frozen=True)
class Drift:
    id: str
    service: str
    made: Maker
    env: dict[str, str]
    named: tuple[str, ...]
    """What the refusal must say: the stream, the difference, what to do."""


NO_POSTGRES = {"CORRAL_POSTGRES_URL": "postgresql://corral@127.0.0.1:1/corral"}  # streams are checked first
DRIFTS = [
    Drift(
        "session-store-replicas",
        "session_store",
        _made_with_one_replica,
        {**NO_POSTGRES, "CORRAL_NATS_REPLICAS": "3"},
        (
            "stream CORRAL_SESSIONS",
            "replicas is 1, expected 3",
            "nats stream edit CORRAL_SESSIONS --replicas 3",
            "CORRAL_NATS_REPLICAS=1 for every service",
        ),
    ),
    Drift(
        "session-store-max-age",
        "session_store",
        _sessions_kept_for_a_day,
        NO_POSTGRES,
        ("stream CORRAL_SESSIONS", "max_age is 86400.0, expected 0.0", "fix or remove the stream"),
    ),
    Drift(
        "harness-replicas",
        "harness",
        _made_with_one_replica,
        {"CORRAL_MODEL_BASE_URL": "http://127.0.0.1:1", "CORRAL_NATS_REPLICAS": "3"},
        ("stream CORRAL_WAKE", "replicas is 1, expected 3", "CORRAL_NATS_REPLICAS"),
    ),
]


@contextlib.asynccontextmanager
async def _jetstream(nats_url: str) -> AsyncIterator[JetStreamContext]:
    nc = await nats.connect(nats_url)
    try:
        yield nc.jetstream()
    finally:
        await nc.close()


async def _no_streams(nats_url: str) -> None:
    async with _jetstream(nats_url) as js:
        for name in (subjects.SESSIONS_STREAM, subjects.CATALOG_STREAM, subjects.WAKE_STREAM):
            with contextlib.suppress(NotFoundError):
                await js.delete_stream(name)


@pytest.mark.parametrize("drift", DRIFTS, ids=[d.id for d in DRIFTS])
async def test_a_service_refuses_a_stream_that_drifted_from_what_it_requires(nats_url: str, drift: Drift) -> None:
    await _no_streams(nats_url)
    await drift.made(nats_url)
    refused, output = refusal(drift.service, nats_url, drift.env)
    for part in drift.named:
        assert part in refused, output
    assert "Traceback" not in output, output


async def test_the_same_replicas_are_accepted(nats_url: str) -> None:
    """The check refuses only a difference: a stream made with the replicas asked for is taken as is."""
    await _no_streams(nats_url)
    await _made_with_one_replica(nats_url)
    await _made_with_one_replica(nats_url)
