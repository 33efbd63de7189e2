"""Settings, read from ``CORRAL_GATEWAY_*`` (plus the shared ``CORRAL_NATS_*`` and ``CORRAL_LOG_*``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings import LogSettings, MetricsSettings, NatsSettings


class GatewayMetricsSettings(MetricsSettings):
    """Its metrics endpoint: ``CORRAL_GATEWAY_METRICS_PORT`` and ``CORRAL_GATEWAY_METRICS_HOST``."""

    model_config = SettingsConfigDict(
        env_prefix="CORRAL_GATEWAY_METRICS_", frozen=True, extra="ignore", env_ignore_empty=True
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CORRAL_GATEWAY_", env_ignore_empty=True, frozen=True, extra="ignore")

    host: str = Field(default="127.0.0.1", description="address the public API listens on")
    port: int = Field(default=8080, ge=0, le=65535, description="port of the public API")
    max_body_bytes: int = Field(
        default=32 * 1024 * 1024, ge=1, description="Largest request body accepted (413 above); any size is stored"
    )
    sse_heartbeat_s: float = Field(default=15.0, gt=0, description="Idle time after which a stream sends a ping")
    auth_cache_ttl_s: float = Field(default=30.0, ge=0, description="How long a resolved API key is trusted")
    store_timeout_s: float = Field(default=10.0, gt=0, description="Deadline of each session-store request")
    health_timeout_s: float = Field(default=1.0, gt=0, description="Deadline of each service's /health probe")
    startup_timeout_s: float = Field(default=30.0, gt=0, description="How long start-up waits for NATS")
    shutdown_grace_s: int = Field(default=5, ge=0, description="Seconds shutdown waits for open requests")
    rate_limit_rps: float = Field(
        default=100.0, ge=0, description="Requests a second per API key, sustained (0 = no limit)"
    )
    rate_limit_burst: int = Field(default=500, ge=1, description="Requests a key may make at once above the rate")
    header_timeout_s: float = Field(
        default=10.0, gt=0, description="Time a connection has to send a request's headers (then it is closed)"
    )
    max_connections_per_client: int = Field(
        default=256, ge=0, description="Open connections per peer address (0 = no limit); more are closed at once"
    )
    keep_alive_s: int = Field(default=5, ge=1, description="Idle seconds after which a keep-alive connection is closed")
    idempotency_ttl_s: float = Field(
        default=24 * 3600.0, gt=0, description="How long a response is kept for replay per Idempotency-Key"
    )
    jaeger_url: str | None = Field(
        default=None,
        description="Jaeger's web UI (http://jaeger.example:16686), which the console links traces to; unset: no link",
    )
    nats: NatsSettings = Field(default_factory=NatsSettings)
    log: LogSettings = Field(default_factory=LogSettings)
    metrics: GatewayMetricsSettings = Field(default_factory=GatewayMetricsSettings)
