"""What one gateway app holds: its settings, the key cache, the open streams and the backends."""

from __future__ import annotations

from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from corral.gateway.auth import KeyCache
from corral.gateway.errors import Unavailable
from corral.gateway.feed import SessionFeed
from corral.gateway.idempotency import ReplayBucket
from corral.gateway.keydirectory import KeyDirectory
from corral.gateway.probe import HealthProbe
from corral.gateway.ratelimit import RateLimiter
from corral.gateway.repositories import RepositoryTokens
from corral.gateway.settings import Settings
from corral.gateway.sse import StreamRegistry
from corral.gateway.store import Store


@dataclass(frozen=True)
class Backends:
    """The gateway's ports; the bus adapters in production, fakes in unit tests."""

    store: Store
    feed: SessionFeed
    probe: HealthProbe
    replies: ReplayBucket | None = None
    """Responses per ``Idempotency-Key``; without it the header is ignored (unit tests)."""
    repositories: RepositoryTokens | None = None
    """Where repository tokens go (the credential-proxy); without it, repositories are refused."""
    directory: KeyDirectory | None = None
    """The API keys followed live from the catalog; without it every key is asked of the store."""


@dataclass
class GatewayState:
    settings: Settings
    keys: KeyCache
    streams: StreamRegistry = field(default_factory=StreamRegistry)
    backends: Backends | None = None
    limiter: RateLimiter | None = None

    def request_stop(self) -> None:
        """A stop signal arrived: end the open streams (uvicorn then waits for the other requests)."""
        self.streams.close_all()

    def max_body_bytes(self) -> int:
        """The largest request body accepted (the bus carries and stores records of any size)."""
        return self.settings.max_body_bytes

    def ready(self) -> Backends:
        if self.backends is None:
            raise Unavailable("api_error", "the gateway is not connected to the bus yet; retry shortly")
        return self.backends


def gateway_state(conn: HTTPConnection) -> GatewayState:
    return state_of(conn.app)


def state_of(app: Starlette) -> GatewayState:
    state = app.state.gateway
    assert isinstance(state, GatewayState)
    return state
