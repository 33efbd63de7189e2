"""The settings several services share, one fragment per dependency: the bus (``CORRAL_NATS_*``), the
projection database (``CORRAL_POSTGRES_*``), logging (``CORRAL_LOG_*``), telemetry (``OTEL_*``), and the
shape of each service's metrics endpoint (``CORRAL_<SERVICE>_METRICS_*``, a subclass per service)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from corral.settings.renames import renamed


class NatsSettings(BaseSettings):
    """``CORRAL_NATS_URL`` (default ``nats://127.0.0.1:4222``; a cluster's servers comma-separated,
    ``nats://a:4222,nats://b:4222,nats://c:4222``, every one tried and reconnected to),
    ``CORRAL_NATS_REPLICAS`` (how many servers keep a copy of each stream and bucket Corral makes: 1 on
    a single server, 3 on a three-node cluster), ``CORRAL_NATS_CONNECT_TIMEOUT_S``,
    ``CORRAL_NATS_REQUEST_TIMEOUT_S``, ``CORRAL_NATS_RECORD_CHUNK_BYTES`` (a stored record larger than
    this is stored in parts of at most this many bytes; ``0``, the default, means the server's
    ``max_payload`` less 64 KiB for headers), and the service's own NATS user: ``CORRAL_NATS_USER`` and
    ``CORRAL_NATS_PASSWORD`` (unset: connect without credentials, which a server with users refuses).

    ``make up`` gives each service its own user, allowed to publish and subscribe only on the
    subjects that service uses (see ``corral.devstack.nats_users``).
    """

    model_config = SettingsConfigDict(env_prefix="CORRAL_NATS_", frozen=True, extra="ignore")

    url: str = Field(
        default="nats://127.0.0.1:4222",
        description="the NATS server, or a cluster's servers comma-separated "
        "(nats://10.0.0.1:4222,nats://10.0.0.2:4222,nats://10.0.0.3:4222): the client connects to any "
        "and moves to another when it goes down",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=5,
        description="servers that keep a copy of each stream and key-value bucket Corral makes (1: a single "
        "server; 3 on a three-node cluster: an acknowledged write is on two servers and survives the loss of "
        "any one). Every service must have the same value: one finding a stream made with other replicas "
        "refuses to start",
    )
    user: str | None = Field(default=None, description="this service's NATS user (`make up` gives each its own)")
    password: SecretStr | None = Field(default=None, description="that user's password")
    connect_timeout_s: float = Field(default=5.0, gt=0, description="longest wait for each connection attempt")
    request_timeout_s: float = Field(default=10.0, gt=0, description="deadline of a bus request without its own")
    record_chunk_bytes: int = Field(
        default=0,
        ge=0,
        description="a stored record larger than this is stored in parts of at most this size "
        "(0: the server's max_payload less 64 KiB)",
    )

    @field_validator("url")
    @classmethod
    def _server_list(cls, value: str) -> str:
        servers = [part.strip() for part in value.split(",")]
        if not all(servers):
            raise ValueError(f"{value!r} has an empty server address: list them comma-separated, nats://host:port,...")
        return ",".join(servers)

    @property
    def servers(self) -> list[str]:
        """The server addresses of ``url``, in the order given."""
        return self.url.split(",")


class PostgresSettings(BaseSettings):
    """``CORRAL_POSTGRES_URL``: the asyncpg DSN of the projection database (required by whoever nests
    this fragment; the old ``CORRAL_DATABASE_URL`` still works for one release, with a warning)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_POSTGRES_", frozen=True, extra="ignore", populate_by_name=True)

    url: str = Field(
        validation_alias=renamed("CORRAL_POSTGRES_URL", "CORRAL_DATABASE_URL"),
        description="asyncpg DSN of the projection database (postgresql://user:password@host:port/database)",
    )


class LogSettings(BaseSettings):
    """``CORRAL_LOG_LEVEL`` (default ``INFO``), ``CORRAL_LOG_FORMAT`` (``json`` or ``text``)."""

    model_config = SettingsConfigDict(env_prefix="CORRAL_LOG_", frozen=True, extra="ignore")

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="the least severe records logged"
    )
    format: Literal["json", "text"] = Field(default="json", description="JSON lines, or text for a terminal")


class TelemetrySettings(BaseSettings):
    """OpenTelemetry export: the standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` (unset = no export)."""

    model_config = SettingsConfigDict(frozen=True, extra="ignore", populate_by_name=True)

    otlp_endpoint: str | None = Field(
        default=None,
        validation_alias="OTEL_EXPORTER_OTLP_ENDPOINT",
        description="export traces over OTLP/HTTP to this endpoint (e.g. Jaeger's); unset: no export",
    )


class MetricsSettings(BaseSettings):
    """Where a service serves its Prometheus metrics: ``<prefix>PORT`` (unset: not served; ``0``: a port
    the system picks, logged at start) and ``<prefix>HOST`` (default ``127.0.0.1``).

    Each service nests its own subclass with its own prefix (``CORRAL_GATEWAY_METRICS_``...), so every
    process of a machine can be given its own port (``make up`` does; see ``corral.telemetry.metrics``).
    """

    model_config = SettingsConfigDict(frozen=True, extra="ignore", env_ignore_empty=True)

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="port of the Prometheus metrics endpoint (GET /metrics); unset: no endpoint; 0: any free port",
    )
    host: str = Field(default="127.0.0.1", description="address the metrics endpoint listens on")
