"""What ``corral.health.session-store`` answers: Postgres reachable, the projection running, and how far
it is behind each stream.

The store keeps accepting appends while Postgres is down (the log is the database), so a lost
Postgres is ``degraded``, never silent: reads of the projection fall back to the log or wait, and the
projection catches up when Postgres is back. ``lag_<stream>`` is how many stream sequences the
projection has not applied yet.
"""

from __future__ import annotations

import asyncio

import asyncpg

from corral.bus import Bus
from corral.contracts import subjects
from corral.contracts.health import Health
from corral.session_store import metrics
from corral.session_store.projector import Projector

#: How long the health answer waits for Postgres to answer ``SELECT 1``.
PROBE_TIMEOUT_S = 0.5  # under the gateway's 1 s health deadline
STREAMS = {"sessions": subjects.SESSIONS_STREAM, "catalog": subjects.CATALOG_STREAM}
#: How often the projection's lag metric is sampled.
LAG_SAMPLE_S = 5.0


async def report(bus: Bus, pool: asyncpg.Pool, projector: Projector, *, instance: str) -> Health:
    postgres, behind = await asyncio.gather(probe_postgres(pool), probe_lags(bus, projector))
    if projector.failing:
        projection = "stopped: its last attempt failed; retrying with backoff (appends go on)"
    else:
        projection = "ok"
    details: dict[str, str] = {"projection_errors": str(projector.errors)}
    if projector.last_error:
        details["projection_last_error"] = projector.last_error
    for name, lag in (behind or {}).items():
        details[f"lag_{name}"] = str(lag)
    details["projection"] = projection
    details["projection_role"] = "projecting" if projector.projecting else "following the store that projects"
    if not bus.connected:
        nats = "disconnected; reconnecting"
    elif behind is None:
        nats = f"JetStream did not answer within {PROBE_TIMEOUT_S:g} s (a stream electing its leader; appends wait)"
    else:
        nats = "ok"
    dependencies = {"nats": nats, "postgres": postgres}
    healthy = projection == "ok" and all(state == "ok" for state in dependencies.values())
    return Health(
        service="session-store",
        instance=instance,
        status="ok" if healthy else "degraded",
        details=details,
        dependencies=dependencies,
    )


async def lags(bus: Bus, projector: Projector) -> dict[str, int]:
    """How many stream sequences the projection has not applied yet, per stream (``STREAMS``' names)."""
    return {
        name: max(0, await bus.stream_last_seq(stream) - projector.position(stream)) for name, stream in STREAMS.items()
    }


async def probe_lags(bus: Bus, projector: Projector) -> dict[str, int] | None:
    """``lags``, or ``None`` when JetStream does not answer within ``PROBE_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            return await lags(bus, projector)
    except TimeoutError:  # ours, or the client's own (nats' TimeoutError is one)
        return None


async def sample_lags(bus: Bus, projector: Projector) -> None:
    """Set ``corral_session_store_projection_lag_records`` (every ``LAG_SAMPLE_S`` by the composition root)."""
    for name, lag in (await lags(bus, projector)).items():
        metrics.PROJECTION_LAG.labels(stream=name).set(lag)


async def probe_postgres(pool: asyncpg.Pool) -> str:
    """``ok``, or why Postgres did not answer ``SELECT 1`` within ``PROBE_TIMEOUT_S``."""
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except TimeoutError:
        return f"unreachable: no answer within {PROBE_TIMEOUT_S:g} s (appends go on; the projection waits)"
    except Exception as exc:  # whatever it is, health answers with it rather than not at all
        return f"unreachable: {type(exc).__name__} (appends go on; the projection waits)"
    return "ok"
